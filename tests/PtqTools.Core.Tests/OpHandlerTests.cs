using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>The handlers added to the one table (ConvTranspose, Resize, Softmax, Gather, LSTM/GRU, Clip folded) and
/// the default for an op without a handler, on small models quantized from real calibration and run in ONNX Runtime
/// with every optimization on.</summary>
public sealed class OpHandlerTests
{
    readonly ITestOutputHelper _out;
    public OpHandlerTests(ITestOutputHelper output) => _out = output;

    /// <summary>x[1,3,8,8] -> conv1 -> Clip(0,6) -> ConvTranspose(stride 2) -> [1,4,16,16] -> Resize(nearest, 0.5) ->
    /// Sin (no handler) -> conv3 -> Softmax(axis 1) -> y[1,4,8,8].</summary>
    static ModelBuilder Mixed()
    {
        var r = new Random(31);
        return new ModelBuilder(13, 7, "mixed")
            .Input("x", 1, 3, 8, 8)
            .RandomInit(r, "w1", 0.4f, 8, 3, 3, 3).RandomInit(r, "b1", 0.2f, 8)
            .Init("lo", new[] { 0f }).Init("hi", new[] { 6f })
            .RandomInit(r, "wt", 0.3f, 8, 4, 2, 2).RandomInit(r, "bt", 0.2f, 4)
            .Init("scales", new[] { 1f, 1f, 0.5f, 0.5f }, 4)
            .RandomInit(r, "w3", 0.4f, 4, 4, 3, 3).RandomInit(r, "b3", 0.2f, 4)
            .Node("Conv", new[] { "x", "w1", "b1" }, new[] { "c1" }, "conv1", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Clip", new[] { "c1", "lo", "hi" }, new[] { "k1" }, "clip1")
            .Node("ConvTranspose", new[] { "k1", "wt", "bt" }, new[] { "t" }, "deconv", ("strides", new long[] { 2, 2 }))
            .Node("Resize", new[] { "t", "", "scales" }, new[] { "rs" }, "resize", ("mode", "nearest"))
            .Node("Sin", new[] { "rs" }, new[] { "s" }, "sin")
            .Node("Conv", new[] { "s", "w3", "b3" }, new[] { "c3" }, "conv3", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Softmax", new[] { "c3" }, new[] { "y" }, "softmax", ("axis", 1))
            .Output("y", 1, 4, 8, 8);
    }

    [Fact]
    public void NewHandlers_PlaceQdqWhereOrtFuses_AndTheModelsStayCloseToFloat()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var path = Mixed().Save(dir.File("mixed.onnx"));
        var prepared = ModelPreparer.Prepare(path);
        var view = new GraphView(prepared.Model.Graph);
        var plan = QuantizationPlan.Create(view, null);
        string Reason(string layer) => plan.Decisions.Single(d => d.Layer == layer).Reason;
        Assert.Equal(new[] { "conv1", "conv3", "deconv", "resize", "softmax" }, plan.QuantizedLayers.OrderBy(n => n, StringComparer.Ordinal));
        Assert.True(plan.Decisions.Single(d => d.Layer == "clip1").Folded, Reason("clip1"));
        Assert.Contains("k1", plan.Activations.Keys);       // the Clip's output, not the Conv's
        Assert.DoesNotContain("c1", plan.Activations.Keys);
        Assert.Equal("int8: weights per channel (axis 1), int32 bias", Reason("deconv"));
        Assert.Equal("int8: passes its input's scale through", Reason("resize"));
        Assert.Equal("no int8 handler for Sin: kept in float", Reason("sin"));

        var random = new Random(32);
        var samples = Enumerable.Range(0, 16).Select(_ => Check.RandomFloats(random, 3 * 8 * 8, 2f)).ToArray();
        var data = DataSetReader.FromArrays(samples, new[] { 3, 8, 8 }, null, new PtqDataSet());
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, data, 1, null, CancellationToken.None);
        var ranges = stats.ToDictionary(s => s.Tensor, s => new TensorRange(s.RangeMin, s.RangeMax));
        Assert.True(ranges["k1"].Max <= 6f && ranges["k1"].Min >= 0f);

        var qdq = QdqQuantizer.Quantize(prepared.Model, plan, ranges, new QuantizationOptions());
        var g = new QdqGraph(qdq);
        // The float Sin reads the dequantized Resize output and its output is quantized for conv3: Q/DQ on both sides.
        Assert.NotNull(g.Dequantizer(g.Node("sin").Input[0]));
        Assert.NotNull(g.Dequantizer(g.Node("conv3").Input[0]));
        Assert.NotNull(g.Dequantizer(g.Node("deconv").Input[1]));
        Assert.Equal(1, g.Dequantizer(g.Node("deconv").Input[1])!.Attribute.Single(a => a.Name == "axis").I);
        // Resize shares its input's scale and zero point.
        Assert.Equal(g.ActivationScale(g.Node("resize").Input[0]), g.ActivationScale(g.Node("sin").Input[0]));

        var qop = QOperatorConverter.Convert(qdq);
        var ops = qop.Graph.Node.Select(n => n.OpType).ToList();
        _out.WriteLine("QOperator: " + string.Join(", ", ops));
        Assert.Contains("QLinearSoftmax", ops);
        Assert.Equal(2, ops.Count(o => o == "QLinearConv"));
        Assert.DoesNotContain("Clip", ops);                  // saturation of conv1's output replaced it
        Assert.Contains(qop.Graph.Node, n => n.OpType == "Resize" && g.View.Initializers.ContainsKey("scales"));
        Assert.Contains("ConvTranspose", ops);               // no integer ConvTranspose on CPU: float between Q/DQ

        // ONNX Runtime's optimized QDQ graph: the Clip is gone, the convolutions are integer.
        var optimized = dir.File("mixed.qdq.opt.onnx");
        using (var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = optimized, IntraOpNumThreads = 1 })
        using (new InferenceSession(qdq.ToByteArray(), so)) { }
        var fused = OnnxModelIO.Load(optimized).Graph.Node.Select(n => n.OpType).ToList();
        _out.WriteLine("ORT optimized QDQ: " + string.Join(", ", fused));
        Assert.DoesNotContain("Clip", fused);
        Assert.Contains("QLinearConv", fused);

        foreach (var (name, model) in new[] { ("QDQ", qdq), ("QOperator", qop) })
        {
            double cos = 0;
            for (int i = 0; i < 4; i++)
            {
                var x = Check.RandomFloats(new Random(40 + i), 3 * 8 * 8, 2f);
                var expected = Ort.Run(prepared.Model, "x", x, new long[] { 1, 3, 8, 8 })["y"];
                var actual = Ort.Run(model, "x", x, new long[] { 1, 3, 8, 8 }, GraphOptimizationLevel.ORT_ENABLE_ALL)["y"];
                cos += Check.Cosine(expected, actual) / 4;
            }
            _out.WriteLine($"{name}: cosine vs float {cos:F5}");
            Assert.True(cos > 0.99, $"{name}: cosine {cos}");
        }
    }

    static ModelProto Embedding(int vocab, int dim, int seed)
    {
        var r = new Random(seed);
        var b = new ModelBuilder(13, 7, "embedding").RandomInit(r, "table", 1f, vocab, dim).RandomInit(r, "w", 0.3f, dim, 4)
            .Node("Gather", new[] { "table", "ids" }, new[] { "e" }, "embed")
            .Node("MatMul", new[] { "e", "w" }, new[] { "y" }, "proj").Output("y", 1, 5, 4).Output("e", 1, 5, dim);
        b.Graph.Input.Add(ModelBuilder.Value("ids", new long[] { 1, 5 }, (int)OnnxDataType.Int64));
        return b.Model;
    }

    static float[] RunIds(ModelProto model, long[] ids, string output)
    {
        using var so = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = 1 };
        using var session = new InferenceSession(model.ToByteArray(), so);
        using var value = OrtValue.CreateTensorValueFromMemory(ids, new long[] { 1, ids.Length });
        using var results = session.Run(new RunOptions(), new[] { "ids" }, new[] { value }, new[] { output });
        return results[0].GetTensorDataAsSpan<float>().ToArray();
    }

    [Fact]
    public void Gather_StoresTheTableIn8Bits_GathersIntegers_AndDequantizesOnlyTheRows()
    {
        const int vocab = 50, dim = 16;
        var model = Embedding(vocab, dim, 33);
        var ids = new long[] { 3, 0, 49, 7, 3 };
        var floatE = RunIds(model, ids, "e");
        var table = TensorData.ReadFloats(model.Graph.Initializer.Single(t => t.Name == "table"));
        foreach (var options in new[]
        {
            new QuantizationOptions { Mode = QuantMode.Dynamic },
            new QuantizationOptions { Mode = QuantMode.WeightOnly, PerChannel = false },
            new QuantizationOptions { Mode = QuantMode.WeightOnly, WeightBits = 4 },
        })
        {
            var plan = WeightQuantizer.Plan(new GraphView(model.Graph), null, options);
            Assert.Contains("embed", plan.QuantizedLayers);
            _out.WriteLine(plan.Decisions.Single(d => d.Layer == "embed").Reason);
            var q = WeightQuantizer.Quantize(model, plan, options);
            var gather = q.Graph.Node.Single(n => n.OpType == "Gather");
            Assert.Equal("embed", gather.Name);
            var qTable = q.Graph.Initializer.Single(t => t.Name == gather.Input[0]);
            Assert.Equal((int)OnnxDataType.Int8, qTable.DataType);
            Assert.DoesNotContain(q.Graph.Initializer, t => t.Name == "table");
            var dq = q.Graph.Node.Single(n => n.Input.Count > 0 && n.Input[0] == gather.Output[0]);
            Assert.Equal("DequantizeLinear", dq.OpType);
            Assert.Equal("e", dq.Output[0]);
            var scales = TensorData.ReadFloats(q.Graph.Initializer.Single(t => t.Name == dq.Input[1]));
            Assert.Equal(options.PerChannel ? dim : 1, scales.Length);
            // The gathered rows are the table's rows rounded to the nearest code.
            var e = RunIds(q, ids, "e");
            for (int i = 0; i < e.Length; i++)
            {
                float s = scales[options.PerChannel ? i % dim : 0];
                Assert.True(Math.Abs(e[i] - floatE[i]) <= s * 0.5001f, $"{options}: e[{i}] {e[i]} vs {floatE[i]} (step {s})");
                Assert.Equal(table[ids[i / dim] * dim + i % dim], floatE[i]);
            }
        }

        // Static: the same rewrite; the MatMul reads the dequantized rows through its own Q/DQ.
        var staticPlan = QuantizationPlan.Create(new GraphView(model.Graph), null);
        Assert.Equal(new[] { "embed", "proj" }, staticPlan.QuantizedLayers.OrderBy(n => n, StringComparer.Ordinal));
        Assert.DoesNotContain("table", staticPlan.Activations.Keys);
        Assert.StartsWith("8-bit table per column (axis 1)", staticPlan.Decisions.Single(d => d.Layer == "embed").Reason);
        var ranges = staticPlan.Activations.Keys.ToDictionary(k => k, k => new TensorRange(k == "e" ? table.Min() : -3f, k == "e" ? table.Max() : 3f));
        var staticModel = QdqQuantizer.Quantize(model, staticPlan, ranges, new QuantizationOptions());
        var y = RunIds(staticModel, ids, "y");
        Assert.True(Check.Cosine(RunIds(model, ids, "y"), y) > 0.995);
        Assert.Contains(staticModel.Graph.Node, n => n.OpType == "Gather" && n.Input[0] != "table");
    }

    [Fact]
    public void RecurrentOps_AndNonConstantClips_StayFloat_WithTheReason()
    {
        var r = new Random(34);
        var b = new ModelBuilder(13, 7, "rnn").Input("x", 4, 1, 3).Input("lo", 1).RandomInit(r, "W", 0.3f, 1, 8, 3).RandomInit(r, "R", 0.3f, 1, 8, 2)
            .RandomInit(r, "Wg", 0.3f, 1, 6, 3).RandomInit(r, "Rg", 0.3f, 1, 6, 2)
            .Node("LSTM", new[] { "x", "W", "R" }, new[] { "h" }, "lstm", ("hidden_size", 2))
            .Node("GRU", new[] { "x", "Wg", "Rg" }, new[] { "hg" }, "gru", ("hidden_size", 2))
            .Node("Clip", new[] { "x", "lo" }, new[] { "c" }, "clip")
            .Output("h").Output("hg").Output("c");
        var plan = QuantizationPlan.Create(new GraphView(b.Graph), null);
        Assert.Empty(plan.QuantizedLayers);
        Assert.Contains("DynamicQuantizeLSTM", plan.Decisions.Single(d => d.Layer == "lstm").Reason);
        Assert.StartsWith("kept in float: static mode: ONNX Runtime has no quantized GRU", plan.Decisions.Single(d => d.Layer == "gru").Reason);
        var clip = plan.Decisions.Single(d => d.Layer == "clip");
        Assert.False(clip.Folded);
        Assert.Contains("bounds are not constants", clip.Reason);
    }
}
