using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>Weight types and granularity (uint8, asymmetric, reduce-range), 16-bit activations and per-tensor
/// overrides: the scalar reference of the weight codes, the written graphs in ONNX Runtime, and the refusals.</summary>
public sealed class QuantTypeTests
{
    readonly ITestOutputHelper _out;
    public QuantTypeTests(ITestOutputHelper output) => _out = output;

    static readonly WeightSpec[] Specs =
    {
        new(QuantType.Int8, true, false), new(QuantType.UInt8, true, false), new(QuantType.Int8, false, false),
        new(QuantType.UInt8, false, false), new(QuantType.Int8, true, true), new(QuantType.UInt8, false, true),
    };

    [Fact]
    public void WeightCodesStayInTheirLimits_AndRoundTripWithinHalfAStep()
    {
        var r = new Random(4);
        var w = Check.RandomFloats(r, 6 * 20, 0.5f);
        for (int c = 0; c < 6; c++) w[c * 20] += c * 0.3f;   // channels with different ranges, some lopsided
        var dims = new long[] { 6, 20 };
        foreach (var spec in Specs)
        {
            var (q, scales, zps) = QuantMath.QuantizeWeights(w, dims, 0, spec);
            var (qmin, qmax) = spec.Limits;
            Assert.All(q, v => Assert.InRange(v, qmin, qmax));
            for (int i = 0; i < w.Length; i++)
            {
                int c = i / 20;
                float back = (q[i] - zps[c]) * scales[c];
                Assert.True(Math.Abs(back - w[i]) <= scales[c] * 0.5001f, $"{spec}: w[{i}] = {w[i]} came back as {back}");
            }
            if (spec.Symmetric) Assert.All(zps, z => Assert.Equal(spec.Type == QuantType.UInt8 ? (qmin + qmax + 1) / 2 : 0, z));
            else
                for (int c = 0; c < 6; c++)
                {
                    // Asymmetric: the channel's min and max (widened to include 0) land on the ends of the range.
                    var slice = q.Skip(c * 20).Take(20).ToArray();
                    Assert.True(slice.Min() <= qmin + 1 && slice.Max() >= qmax - 1, $"{spec} channel {c}: codes {slice.Min()}..{slice.Max()}");
                }
        }
        Assert.Equal((-64, 64), new WeightSpec(QuantType.Int8, true, true).Limits);
        Assert.Equal((0, 127), new WeightSpec(QuantType.UInt8, true, true).Limits);
        // The old int8 symmetric entry point is the Int8 symmetric spec.
        var (old, oldScales) = QuantMath.QuantizeWeights(w, dims, 0);
        var (spec8, specScales, _) = QuantMath.QuantizeWeights(w, dims, 0, new WeightSpec(QuantType.Int8, true, false));
        Assert.Equal(old.Select(v => (int)v), spec8);
        Assert.Equal(oldScales, specScales);
    }

    static (ModelProto Model, QuantizationPlan Plan, Dictionary<string, TensorRange> Ranges) Tiny()
    {
        var model = TinyModels.ResidualCnn().Model;
        var plan = QuantizationPlan.Create(new GraphView(model.Graph), null);
        var ranges = plan.Activations.Keys.ToDictionary(k => k, k => k == "x" ? new TensorRange(-2f, 2f) : new TensorRange(k == "r1" ? 0f : -4f, 4f));
        return (model, plan, ranges);
    }

    static double Sqnr(float[] reference, float[] actual)
    {
        double s = 0, e = 0;
        for (int i = 0; i < reference.Length; i++) { s += (double)reference[i] * reference[i]; e += Math.Pow(reference[i] - actual[i], 2); }
        return 10 * Math.Log10(s / e);
    }

    [Theory]
    [InlineData(QuantType.UInt8, QuantType.UInt8, true, true, false, QuantFormat.QDQ)]
    [InlineData(QuantType.UInt8, QuantType.UInt8, true, true, false, QuantFormat.QOperator)]
    [InlineData(QuantType.UInt8, QuantType.Int8, false, true, false, QuantFormat.QOperator)]
    [InlineData(QuantType.UInt8, QuantType.UInt8, false, false, false, QuantFormat.QDQ)]
    [InlineData(QuantType.Int8, QuantType.Int8, false, true, false, QuantFormat.QOperator)]
    [InlineData(QuantType.UInt8, QuantType.Int8, true, true, true, QuantFormat.QOperator)]
    [InlineData(QuantType.UInt8, QuantType.UInt8, false, true, true, QuantFormat.QDQ)]
    public void WeightVariants_AreWrittenAsAsked_AndRunInOrt(QuantType act, QuantType weight, bool symmetric, bool perChannel, bool reduce, QuantFormat format)
    {
        var (model, plan, ranges) = Tiny();
        var options = new QuantizationOptions { ActivationType = act, WeightType = weight, WeightSymmetric = symmetric, PerChannel = perChannel, ReduceRange = reduce, Format = format };
        var qdq = QdqQuantizer.Quantize(model, plan, ranges, options);
        var g = new QdqGraph(qdq);
        var wdq = g.Dequantizer(g.Node("conv2").Input[1])!;
        var values = g.Init(wdq.Input[0]);
        Assert.Equal((int)(weight == QuantType.UInt8 ? OnnxDataType.UInt8 : OnnxDataType.Int8), values.DataType);
        Assert.Equal(perChannel ? 8 : 1, g.Floats(wdq.Input[1]).Length);
        var codes = g.Floats(wdq.Input[0]);
        var (qmin, qmax) = options.Weights.Limits;
        Assert.All(codes, c => Assert.InRange(c, qmin, qmax));
        // The default target (Portable) narrows the channels whose u8 x s8 pairs could saturate: then no pair may be at risk.
        if (plan.Decisions.Single(d => d.Layer == "conv2").Pairs is { Fixed: true })
            Assert.Empty(WeightPairs.AtRiskLayers(qdq));
        else
            Assert.True(codes.Min() <= qmin + 2 || codes.Max() >= qmax - 2, $"codes {codes.Min()}..{codes.Max()} do not use the range [{qmin}, {qmax}]");
        var zps = g.Floats(wdq.Input[2]);
        if (symmetric) Assert.Single(zps.Distinct());
        else Assert.True(!perChannel || zps.Distinct().Count() > 1, "asymmetric per-channel zero points should differ");

        var written = format == QuantFormat.QOperator ? QOperatorConverter.Convert(qdq) : qdq;
        if (format == QuantFormat.QOperator) Assert.Contains(written.Graph.Node, n => n.OpType == "QLinearConv");
        var x = TinyModels.RandomInput(new Random(12));
        var exact = Ort.Run(model, "x", x, TinyModels.InputShape)["y"];
        var reference = Ort.Run(qdq, "x", x, TinyModels.InputShape, GraphOptimizationLevel.ORT_DISABLE_ALL)["y"];
        var fused = Ort.Run(written, "x", x, TinyModels.InputShape, GraphOptimizationLevel.ORT_ENABLE_ALL)["y"];
        double sqnr = Sqnr(exact, fused);
        _out.WriteLine($"{options}: SQNR vs float {sqnr:F1} dB");
        Assert.True(sqnr > 20, $"SQNR {sqnr} dB");
        Check.Close(reference, fused, 0.15, "fused vs unfused QDQ");
    }

    [Fact]
    public void SixteenBitActivations_AreComMicrosoftQdq_AndCloserToFloat()
    {
        var (model, plan, ranges) = Tiny();
        var x = TinyModels.RandomInput(new Random(13));
        var exact = Ort.Run(model, "x", x, TinyModels.InputShape)["y"];
        double Run(QuantizationOptions o, OnnxDataType zpType, string domain)
        {
            var q = QdqQuantizer.Quantize(model, plan, ranges, o);
            var activationQ = q.Graph.Node.Where(n => n.OpType == "QuantizeLinear").ToList();
            Assert.NotEmpty(activationQ);
            var g = new QdqGraph(q);
            Assert.All(activationQ, n => { Assert.Equal(domain, n.Domain); Assert.Equal((int)zpType, g.Init(n.Input[2]).DataType); });
            if (domain.Length > 0) Assert.Contains(q.OpsetImport, i => i.Domain == domain);
            // Weights stay int8 in ai.onnx DequantizeLinear.
            Assert.Equal((int)OnnxDataType.Int8, g.Init(g.Dequantizer(g.Node("conv1").Input[1])!.Input[0]).DataType);
            return Sqnr(exact, Ort.Run(q, "x", x, TinyModels.InputShape, GraphOptimizationLevel.ORT_ENABLE_ALL)["y"]);
        }
        // The same int8 weights in all three: full range (an exact target), since the pair-safe weights of the
        // default target round differently (on this random model 7 dB better by chance: 37.3 against 30.2).
        double u8 = Run(new QuantizationOptions { Target = QuantTarget.Vnni }, OnnxDataType.UInt8, "");
        double u16 = Run(new QuantizationOptions { ActivationType = QuantType.UInt16 }, OnnxDataType.UInt16, "com.microsoft");
        double s16 = Run(new QuantizationOptions { ActivationType = QuantType.Int16, ActivationSymmetric = true }, OnnxDataType.Int16, "com.microsoft");
        _out.WriteLine($"SQNR vs float: uint8 {u8:F1} dB, uint16 {u16:F1} dB, int16 symmetric {s16:F1} dB");
        // The int8 weights stay, so the gain is bounded by their error; the activations' own error all but vanishes.
        Assert.True(u16 > u8 + 3 && s16 > u8 + 3, $"16-bit activations should be closer to float: {u8}, {u16}, {s16}");
        Assert.Equal((0, 65535), QuantMath.Limits(QuantType.UInt16));
        Assert.Equal((-32767, 32767), QuantMath.Limits(QuantType.Int16, symmetric: true));
        Assert.Equal(new QuantParams(4f / 65535, 32768), QuantMath.FromRange(-2f, 2f, QuantType.UInt16, symmetric: false));
    }

    [Fact]
    public void Overrides_SetTypeRangeOrScale_OfNamedTensors()
    {
        var (model, plan, ranges) = Tiny();
        var options = new QuantizationOptions
        {
            Overrides =
            {
                ["r1"] = new TensorOverride { Min = 0f, Max = 6f },
                ["c2"] = new TensorOverride { Scale = 0.05f, ZeroPoint = 100 },
                ["x"] = new TensorOverride { Type = QuantType.UInt16 },
            },
        };
        ranges.Remove("c2");   // a tensor with its own scale needs no calibrated range
        var q = QdqQuantizer.Quantize(model, plan, ranges, options);
        var g = new QdqGraph(q);
        QuantParams Of(string t)
        {
            var n = q.Graph.Node.Single(n => n.OpType == "QuantizeLinear" && n.Input[0] == t);
            return new QuantParams(g.Floats(n.Input[1])[0], (int)g.Floats(n.Input[2])[0]);
        }
        Assert.Equal(QuantMath.FromRange(0f, 6f, QuantType.UInt8, false), Of("r1"));
        Assert.Equal(new QuantParams(0.05f, 100), Of("c2"));
        Assert.Equal(QuantMath.FromRange(-2f, 2f, QuantType.UInt16, false), Of("x"));
        Assert.Equal("com.microsoft", q.Graph.Node.Single(n => n.OpType == "QuantizeLinear" && n.Input[0] == "x").Domain);
        Assert.Equal("", q.Graph.Node.Single(n => n.OpType == "QuantizeLinear" && n.Input[0] == "r1").Domain);
        Assert.Contains("overrides=c2:{scale=0.05,zero_point=100},r1:{range=[0,6]},x:{type=uint16}", options.ToString());
        var x = TinyModels.RandomInput(new Random(14));
        var y = Ort.Run(q, "x", x, TinyModels.InputShape, GraphOptimizationLevel.ORT_ENABLE_ALL)["y"];
        Assert.True(Sqnr(Ort.Run(model, "x", x, TinyModels.InputShape)["y"], y) > 15);

        // Without a calibrated range and without its own scale, a tensor is still refused.
        ranges.Remove("a");
        Check.Throws("MissingActivationRange", () => QdqQuantizer.Quantize(model, plan, ranges, options));
    }

    [Fact]
    public void Overrides_OfTensorsThePlanDoesNotQuantize_AreRefusedBeforeAnyWork()
    {
        var (model, plan, ranges) = Tiny();
        var unknown = Check.Throws("OverrideTensorNotQuantized", () => QdqQuantizer.Quantize(model, plan, ranges,
            new QuantizationOptions { Overrides = { ["c1"] = new TensorOverride { Min = 0, Max = 1 } } }));   // c1 feeds the folded Relu
        Assert.Equal("c1", unknown.Target);
        var shared = Check.Throws("InvalidTensorOverride", () => QdqQuantizer.Quantize(model, plan, ranges,
            new QuantizationOptions { Overrides = { ["f"] = new TensorOverride { Min = 0, Max = 1 } } }));   // Flatten passes g's scale through
        Assert.Contains("'g'", shared.Message);
    }

    public static TheoryData<string, QuantizationOptions> Refused => new()
    {
        { "InvalidOptionCombination", new() { Format = QuantFormat.QOperator, ActivationType = QuantType.UInt16 } },
        { "InvalidOptionCombination", new() { ActivationType = QuantType.UInt16, ActivationSymmetric = true } },
        { "InvalidOptionCombination", new() { Format = QuantFormat.QOperator, ActivationType = QuantType.Int8, WeightType = QuantType.UInt8 } },
        { "InvalidOption", new() { WeightType = QuantType.Int16 } },
        { "InvalidOptionCombination", new() { Mode = QuantMode.WeightOnly, WeightBits = 4, WeightType = QuantType.UInt8 } },
        { "InvalidOptionCombination", new() { Mode = QuantMode.WeightOnly, WeightBits = 4, ReduceRange = true } },
        { "InvalidOptionCombination", new() { Mode = QuantMode.Dynamic, Overrides = { ["x"] = new TensorOverride { Min = 0, Max = 1 } } } },
        { "InvalidOptionCombination", new() { Mode = QuantMode.Dynamic, ActivationType = QuantType.Int16 } },
        { "InvalidTensorOverride", new() { Overrides = { ["x"] = new TensorOverride() } } },
        { "InvalidTensorOverride", new() { Overrides = { ["x"] = new TensorOverride { Min = 0 } } } },
        { "InvalidTensorOverride", new() { Overrides = { ["x"] = new TensorOverride { Min = 2, Max = 1 } } } },
        { "InvalidTensorOverride", new() { Overrides = { ["x"] = new TensorOverride { Min = 0, Max = 1, Scale = 0.1f } } } },
        { "InvalidTensorOverride", new() { Overrides = { ["x"] = new TensorOverride { Scale = 0 } } } },
        { "InvalidTensorOverride", new() { Overrides = { ["x"] = new TensorOverride { ZeroPoint = 3 } } } },
        { "InvalidTensorOverride", new() { Overrides = { ["x"] = new TensorOverride { Scale = 0.1f, ZeroPoint = 300 } } } },
        { "InvalidTensorOverride", new() { Format = QuantFormat.QOperator, Overrides = { ["x"] = new TensorOverride { Type = QuantType.Int16 } } } },
    };

    [Theory]
    [MemberData(nameof(Refused))]
    public void CombinationsOrtCannotRun_AreRefusedWithTheReason(string errorId, QuantizationOptions options)
    {
        var ex = Check.Throws(errorId, options.Validate);
        _out.WriteLine(ex.Message);
        Assert.True(ex.Message.Length > 30, ex.Message);
    }

    [Theory]
    [InlineData(QuantType.UInt8, true)]
    [InlineData(QuantType.Int8, false)]
    [InlineData(QuantType.UInt8, false)]
    public void DynamicAndWeightOnly_TakeEveryWeightSpec(QuantType weight, bool symmetric)
    {
        const int k = 64, n = 16;
        var r = new Random(15);
        var model = new ModelBuilder(13, 7, "matmul").Input("x", 2, 5, k).RandomInit(r, "w", 0.2f, k, n)
            .Node("MatMul", new[] { "x", "w" }, new[] { "y" }, "matmul").Output("y", 2, 5, n).Model;
        var x = Check.RandomFloats(new Random(16), 10 * k, 1f);
        var exact = Ort.Run(model, "x", x, new long[] { 2, 5, k })["y"];
        foreach (var mode in new[] { QuantMode.Dynamic, QuantMode.WeightOnly })
            foreach (var reduce in new[] { false, true })
            {
                var o = new QuantizationOptions { Mode = mode, WeightType = weight, WeightSymmetric = symmetric, ReduceRange = reduce };
                var plan = WeightQuantizer.Plan(new GraphView(model.Graph), null, o);
                var q = WeightQuantizer.Quantize(model, plan, o);
                var values = q.Graph.Initializer.Single(t => t.Dims.Count == 2);
                Assert.Equal((int)(weight == QuantType.UInt8 ? OnnxDataType.UInt8 : OnnxDataType.Int8), values.DataType);
                var y = Ort.Run(q, "x", x, new long[] { 2, 5, k }, GraphOptimizationLevel.ORT_ENABLE_ALL)["y"];
                double sqnr = Sqnr(exact, y);
                _out.WriteLine($"{o}: SQNR {sqnr:F1} dB");
                Assert.True(sqnr > (reduce ? 22 : 28), $"{o}: SQNR {sqnr} dB");
            }
    }

    [Fact]
    public void SymmetricInt4Blocks_HaveNoZeroPoints_AndRunAsTheirReference()
    {
        const int k = 128, n = 8, block = 32;
        var r = new Random(17);
        var model = new ModelBuilder(13, 7, "matmul").Input("x", 2, 5, k).RandomInit(r, "w", 0.2f, k, n)
            .Node("MatMul", new[] { "x", "w" }, new[] { "y" }, "matmul").Output("y", 2, 5, n).Model;
        var w = TensorData.ReadFloats(model.Graph.Initializer[0]);
        foreach (var hqq in new[] { false, true })
        {
            var o = new QuantizationOptions { Mode = QuantMode.WeightOnly, WeightBits = 4, BlockSize = block, WeightSymmetric = true, WeightMethod = hqq ? WeightMethod.Hqq : WeightMethod.Rtn };
            var q = WeightQuantizer.Quantize(model, WeightQuantizer.Plan(new GraphView(model.Graph), null, o), o);
            var node = q.Graph.Node.Single(x => x.OpType == "MatMulNBits");
            Assert.Equal(3, node.Input.Count);
            var init = q.Graph.Initializer.ToDictionary(t => t.Name);
            var codes = init[node.Input[1]].RawData.ToByteArray();
            var scales = TensorData.ReadFloats(init[node.Input[2]]);
            var wRef = QuantMath.DequantizeBlockwise(codes, scales, null, k, n, 4, block);
            double err = 0;
            for (int i = 0; i < w.Length; i++)
            {
                float step = Math.Abs(scales[(i % n) * (k / block) + (i / n) / block]);
                err += Math.Pow(w[i] - wRef[i], 2);
                // The peak maps to code 0 (-8 steps); only values past 7.5 steps on the other side clip, by at most a step.
                if (!hqq) Assert.True(Math.Abs(w[i] - wRef[i]) <= (Math.Abs(w[i]) <= 7.5f * step ? step / 2 : step) + 1e-6f, $"w[{i}] {w[i]} vs {wRef[i]}");
            }
            _out.WriteLine($"symmetric int4 {(hqq ? "HQQ" : "RTN")}: squared error {err:E3}");
            var x = Check.RandomFloats(new Random(8), 10 * k, 1f);
            var expected = new float[10 * n];
            for (int i = 0; i < 10; i++) for (int j = 0; j < n; j++) { double s = 0; for (int t = 0; t < k; t++) s += (double)x[i * k + t] * wRef[t * n + j]; expected[i * n + j] = (float)s; }
            Check.Close(expected, Ort.Run(q, "x", x, new long[] { 2, 5, k }, GraphOptimizationLevel.ORT_ENABLE_ALL)["y"], 2e-4, "symmetric MatMulNBits");
        }
    }
}
