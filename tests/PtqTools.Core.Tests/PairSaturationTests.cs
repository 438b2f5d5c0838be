using Onnx;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>Targets and the u8 x s8 pair check: which weights can saturate vpmaddubsw, and the per-channel fix.</summary>
public sealed class PairSaturationTests
{
    // Not new WeightSpec(): a record struct's parameterless constructor ignores the primary constructor's defaults.
    static readonly WeightSpec Int8 = new(QuantType.Int8, Symmetric: true, ReduceRange: false);

    /// <summary>vpmaddubsw's pair sum for uint8 a and int8 w, saturated at int16: the instruction's definition.</summary>
    static int Sat16Pair(int a1, int w1, int a2, int w2) => Math.Clamp(a1 * w1 + a2 * w2, short.MinValue, short.MaxValue);

    [Fact]
    public void CanOverflow_IsExactlyWhetherSomeUInt8InputsSaturateThePair()
    {
        // The pair sum is linear in (a1, a2), so its extremes are at the corners of [0, 255]^2.
        int[] corners = { 0, 255 };
        for (int w1 = -128; w1 <= 127; w1++)
            for (int w2 = -128; w2 <= 127; w2++)
            {
                bool saturates = corners.Any(a1 => corners.Any(a2 => Sat16Pair(a1, w1, a2, w2) != a1 * w1 + a2 * w2));
                Assert.True(saturates == PairSaturation.CanOverflow(w1, w2), $"w = ({w1}, {w2})");
            }
    }

    [Fact]
    public void ConvLayout_PairsAdjacentChannelsPerPosition_AndTheFlatK_WhenTheChannelCountIsOdd()
    {
        // [M=2, C=3, 1, 2]: K per output channel is 3 channels x 2 positions; local k = c * 2 + p.
        var layout = PairLayout.Conv(new long[] { 2, 3, 1, 2 });
        Assert.Equal(2, layout.Orderings.Length);
        Assert.Equal(new[] { 0, 2, 4, -1, 1, 3, 5, -1 }, layout.Orderings[0]);   // (c0,c1) (c2,pad) at p0, then p1
        Assert.Equal(new[] { 0, 2, 4, 1, 3, 5 }, layout.Orderings[1]);           // flat (kh, kw, c): (c2 p0, c0 p1) straddles
        Assert.Equal(6 + 5, layout.Index(1, 5));
        Assert.Single(PairLayout.Conv(new long[] { 2, 4, 3, 3 }).Orderings);
        // MatMul B [K, N]: output channel n, k along rows.
        var mm = PairLayout.MatMul(4, 3);
        Assert.Equal(2 * 3 + 1, mm.Index(1, 2));
        // ConvTranspose [C_in=2, M=3, 1, 2]: channel m reads (ci, p) at (ci * 3 + m) * 2 + p.
        Assert.Equal((1 * 3 + 2) * 2 + 1, PairLayout.ConvTranspose(new long[] { 2, 3, 1, 2 }).Index(2, 1 * 2 + 1));
    }

    /// <summary>Weights [K, N] for a MatMul where column 0 has a pair of large same-sign weights (at risk at full
    /// range) and column 1 does not.</summary>
    static (float[] W, long[] Dims) RiskyMatMul(int k = 64)
    {
        var r = new Random(5);
        var w = new float[k * 2];
        for (int i = 0; i < k; i++)
        {
            w[i * 2] = (float)(r.NextDouble() * 0.2 - 0.1);
            w[i * 2 + 1] = (i % 2 == 0 ? 1f : -1f) * (float)(0.5 + r.NextDouble() * 0.5);   // alternating signs: safe
        }
        w[10 * 2] = 1.0f; w[11 * 2] = 0.9f;   // rows 10 and 11 pair: 127 + 114 codes
        return (w, new long[] { k, 2 });
    }

    [Fact]
    public void ChannelsFix_RescalesOnlyTheChannelsAtRisk_ByNoMoreThanReduceRange()
    {
        var (w, dims) = RiskyMatMul();
        var layout = PairLayout.MatMul(dims[0], dims[1]);
        var spec = Int8;
        var (plain, plainScales, _) = QuantMath.QuantizeWeights(w, dims, 1, spec);
        Assert.Equal(new[] { true, false }, PairSaturation.ChannelsAtRisk(plain, layout));

        var options = new QuantizationOptions { Target = QuantTarget.Avx2 };
        var (values, scales, zeroPoints, check) = PairSaturation.QuantizeWeights(w, dims, 1, spec, layout, options, firstLayer: false);
        Assert.NotNull(check);
        Assert.Equal((2, 1, 1), (check!.Channels, check.ChannelsAtRisk, check.ChannelsRescaled));
        Assert.False(check.Overflows);
        Assert.All(PairSaturation.ChannelsAtRisk(values, layout), r => Assert.False(r));
        // Column 1 keeps its codes and scale; column 0 has a larger scale, at most the 7-bit one.
        Assert.Equal(plainScales[1], scales[1]);
        for (int k = 0; k < dims[0]; k++) Assert.Equal(plain[k * 2 + 1], values[k * 2 + 1]);
        float reduceRangeScale = 1.0f / 64f;
        Assert.InRange(scales[0], plainScales[0] * 1.0001f, reduceRangeScale * 1.0001f);
        Assert.Equal(new[] { 0, 0 }, zeroPoints);
        Assert.Contains("1 of 2 output channels rescaled", PairSaturation.Reason(check, QuantTarget.Avx2, OverflowFix.Channels));

        // And it is no less faithful than 7-bit weights on the whole layer.
        var (rr, rrScales, _) = QuantMath.QuantizeWeights(w, dims, 1, spec with { ReduceRange = true });
        Assert.True(Error(w, values, scales) <= Error(w, rr, rrScales), "the channel fix lost more than reduce_range");
    }

    static double Error(float[] w, int[] q, float[] scales)
    {
        double e = 0;
        for (int i = 0; i < w.Length; i++) { double d = w[i] - q[i] * scales[i % scales.Length]; e += d * d; }
        return e;
    }

    [Theory]
    [InlineData(QuantTarget.Vnni)]
    [InlineData(QuantTarget.Amx)]
    [InlineData(QuantTarget.Arm64)]
    public void ExactTargets_WriteTheWeightsAsTheyQuantize(QuantTarget target)
    {
        var (w, dims) = RiskyMatMul();
        var (plain, _, _) = QuantMath.QuantizeWeights(w, dims, 1, Int8);
        var (values, _, _, check) = PairSaturation.QuantizeWeights(w, dims, 1, Int8, PairLayout.MatMul(dims[0], dims[1]),
            new QuantizationOptions { Target = target }, firstLayer: false);
        Assert.Null(check);
        Assert.Equal(plain, values);
    }

    [Fact]
    public void OtherFixes_ReduceRangeOnTheLayerAtRisk_FirstLayerOnly_OrNone()
    {
        var (w, dims) = RiskyMatMul();
        var layout = PairLayout.MatMul(dims[0], dims[1]);
        QuantizationOptions Fix(OverflowFix f) => new() { Target = QuantTarget.Avx512, OverflowFix = f };
        var (rr, _, _, rrCheck) = PairSaturation.QuantizeWeights(w, dims, 1, Int8, layout, Fix(OverflowFix.ReduceRange), false);
        Assert.True(rrCheck!.ReducedTo7Bits);
        Assert.All(rr, v => Assert.InRange(v, -64, 64));
        var (none, _, _, noneCheck) = PairSaturation.QuantizeWeights(w, dims, 1, Int8, layout, Fix(OverflowFix.None), false);
        Assert.True(noneCheck!.Overflows);
        Assert.Contains("WARNING", PairSaturation.Reason(noneCheck, QuantTarget.Avx512, OverflowFix.None));
        Assert.Contains(none, v => v == 127);
        var (_, _, _, notFirst) = PairSaturation.QuantizeWeights(w, dims, 1, Int8, layout, Fix(OverflowFix.FirstLayer), false);
        Assert.True(notFirst!.Overflows);
        var (first, _, _, firstCheck) = PairSaturation.QuantizeWeights(w, dims, 1, Int8, layout, Fix(OverflowFix.FirstLayer), true);
        Assert.True(firstCheck!.ReducedTo7Bits);
        Assert.All(first, v => Assert.InRange(v, -64, 64));
    }

    [Fact]
    public void PerTensorWeights_GetOneLargerScale_AndGemmEncodedCodesAreCheckedAsStored()
    {
        var (w, dims) = RiskyMatMul();
        var layout = PairLayout.MatMul(dims[0], dims[1]);
        var (values, scales, _, check) = PairSaturation.QuantizeWeights(w, dims, null, Int8, layout,
            new QuantizationOptions { Target = QuantTarget.Portable }, false);
        Assert.Single(scales);
        Assert.Equal(2, check!.ChannelsRescaled);
        Assert.All(PairSaturation.ChannelsAtRisk(values, layout), r => Assert.False(r));

        // Codes stored as q - 1 (zero point -1): -64 + -64 is safe as codes, -65 + -65 is not.
        var negative = new float[] { -1f, -1f, 0.5f, 0.5f };
        var negLayout = PairLayout.Rows(1, 4);
        var (q, _, _, shifted) = PairSaturation.QuantizeWeights(negative, new long[] { 1, 4 }, 0, Int8, negLayout,
            new QuantizationOptions { Target = QuantTarget.Avx2 }, false, offset: -1);
        Assert.True(shifted!.Fixed);
        Assert.All(PairSaturation.ChannelsAtRisk(q, negLayout, offset: -1), r => Assert.False(r));
    }

    [Fact]
    public void UInt8Weights_AreNeverAtRisk()
    {
        var (w, dims) = RiskyMatMul();
        var (_, _, _, check) = PairSaturation.QuantizeWeights(w, dims, 1, new WeightSpec(QuantType.UInt8), PairLayout.MatMul(dims[0], dims[1]),
            new QuantizationOptions { Target = QuantTarget.Avx2 }, false);
        Assert.Null(check);   // u8 x u8 kernels widen to int16 before they multiply: nothing to check
    }

    [Theory]
    [InlineData(false, true, false, false, false, false, QuantTarget.Avx2)]
    [InlineData(false, true, true, false, false, false, QuantTarget.Avx512)]
    [InlineData(false, true, false, false, true, false, QuantTarget.Vnni)]
    [InlineData(false, true, true, true, false, false, QuantTarget.Vnni)]
    [InlineData(false, true, true, true, false, true, QuantTarget.Amx)]
    [InlineData(true, false, false, false, false, false, QuantTarget.Arm64)]
    [InlineData(false, false, false, false, false, false, QuantTarget.Avx2)]
    public void Classify_FollowsMlasKernelChoice(bool arm64, bool avx2, bool avx512bw, bool avx512Vnni, bool avxVnni, bool amx, QuantTarget expected)
    {
        Assert.Equal(expected, QuantTargets.Classify(arm64, avx2, avx512bw, avx512Vnni, avxVnni, amx));
    }

    [Fact]
    public void TargetProperties_SaturationAndConvKernelPerClass()
    {
        Assert.True(QuantTargets.NeedsPairSafeWeights(QuantTarget.Portable));
        Assert.False(QuantTargets.SaturatesPairs(QuantTarget.Portable));
        foreach (var t in QuantTargets.Classes)
        {
            Assert.Equal(t is QuantTarget.Avx2 or QuantTarget.Avx512, QuantTargets.SaturatesPairs(t));
            Assert.Equal(QuantTargets.SaturatesPairs(t), QuantTargets.NeedsPairSafeWeights(t));
            Assert.Equal(t == QuantTarget.Amx ? ConvKernel.Gemm : ConvKernel.Symmetric, ConvKernels.Resolve(ConvKernel.Auto, t));
        }
        Assert.Equal(ConvKernel.Symmetric, ConvKernels.Resolve(ConvKernel.Auto, QuantTarget.Portable));
        Assert.Contains(QuantTargets.HostClass, QuantTargets.Classes);
        Assert.Contains(";target=portable;overflow-fix=channels", new QuantizationOptions().ToString());
        Assert.Contains(";target=vnni", new QuantizationOptions { Target = QuantTarget.Vnni }.ToString());
        Assert.DoesNotContain("overflow-fix", new QuantizationOptions { Target = QuantTarget.Amx }.ToString());
        Assert.Contains($";target={QuantTargets.HostClass.ToString().ToLowerInvariant()}", new QuantizationOptions { Target = QuantTarget.Host }.ToString());
    }
}

/// <summary>The layers of a written model whose stored int8 weights have a pair that can leave int16 against uint8
/// activations: QDQ Conv/Gemm/MatMul (weight through a DequantizeLinear), QLinearConv, QLinearMatMul and MatMulInteger.</summary>
public static class WeightPairs
{
    public static List<string> AtRiskLayers(ModelProto model)
    {
        var view = new GraphView(model.Graph);
        var producers = model.Graph.Node.Where(n => n.Output.Count > 0).ToDictionary(n => n.Output[0], StringComparer.Ordinal);
        var layers = new List<string>();
        foreach (var node in model.Graph.Node)
        {
            (string Weight, string Op)? w = node.OpType switch
            {
                "Conv" or "Gemm" or "MatMul" when producers.TryGetValue(node.Input[1], out var dq) && dq.OpType == "DequantizeLinear" => (dq.Input[0], node.OpType),
                "QLinearConv" => (node.Input[3], "Conv"),
                "QLinearMatMul" => (node.Input[3], "MatMul"),
                "MatMulInteger" => (node.Input[1], "MatMul"),
                _ => null,
            };
            if (w is not { } weight || !view.Initializers.TryGetValue(weight.Weight, out var init) || init.DataType != (int)OnnxDataType.Int8) continue;
            var dims = init.Dims.ToArray();
            var shaped = new NodeProto { OpType = weight.Op };
            shaped.Attribute.AddRange(node.Attribute);
            var layout = PairLayout.For(shaped, dims);
            if (layout is null) continue;
            var codes = TensorData.ReadFloats(init).Select(v => (int)v).ToArray();
            if (PairSaturation.ChannelsAtRisk(codes, layout).Any(r => r)) layers.Add(node.Name);
        }
        return layers;
    }
}

/// <summary>The models of the AVX2 ground truth (../shared/ground-truth): the default int8 ResNet18 that ONNX
/// Runtime corrupted there has weights whose pairs can saturate; its -ReduceRange twin has none.</summary>
public sealed class GroundTruthWeightTests
{
    [Fact]
    public void TheCorruptedDefaultModel_HasLayersAtRisk_AndTheReduceRangeModelNone()
    {
        var atRisk = WeightPairs.AtRiskLayers(OnnxModelIO.Load(Path.Combine(TestPaths.GroundTruth, "resnet18_int8_default", "model.onnx")));
        Assert.True(atRisk.Count >= 10, $"only {atRisk.Count} layers at risk: {string.Join(", ", atRisk)}");
        Assert.Empty(WeightPairs.AtRiskLayers(OnnxModelIO.Load(Path.Combine(TestPaths.GroundTruth, "resnet18_int8_reduce", "model.onnx"))));
        // The single-op cases at full weight range saturate there (the README's point).
        Assert.NotEmpty(WeightPairs.AtRiskLayers(OnnxModelIO.Load(Path.Combine(TestPaths.GroundTruth, "qlinearconv_3x3_c64", "model.onnx"))));
        Assert.NotEmpty(WeightPairs.AtRiskLayers(OnnxModelIO.Load(Path.Combine(TestPaths.GroundTruth, "matmulinteger_128x768x768", "model.onnx"))));
    }
}

public sealed class PairLayoutForTests
{
    static NodeProto Conv(long group) { var n = new NodeProto { OpType = "Conv" }; n.Attribute.Add(new AttributeProto { Name = "group", I = group, Type = AttributeProto.Types.AttributeType.Int }); return n; }

    [Fact]
    public void DepthwiseConvolutions_AreExact_OtherGroupedOnesArePairedPerGroup()
    {
        Assert.Null(PairLayout.For(Conv(8), new long[] { 8, 1, 3, 3 }));          // depthwise: MLAS widens first
        Assert.NotNull(PairLayout.For(Conv(4), new long[] { 8, 1, 3, 3 }));       // channel multiplier 2: im2col per group
        Assert.NotNull(PairLayout.For(Conv(1), new long[] { 8, 1, 3, 3 }));       // one input channel: flat K over positions
        Assert.Equal(2 * 9, PairLayout.For(Conv(4), new long[] { 8, 2, 3, 3 })!.K);
    }
}

/// <summary>The per-channel fix against ONNX Runtime's reduce_range on a real model's weights.</summary>
public sealed class PairFixOnResNet18Tests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Fact]
    public void EveryLayer_LosesNoMoreThanWithReduceRange_AndNoPairCanSaturate()
    {
        var model = OnnxModelIO.Load(TestPaths.ResNet18);
        var view = new GraphView(model.Graph);
        var spec = new WeightSpec(QuantType.Int8, Symmetric: true, ReduceRange: false);
        var options = new QuantizationOptions();   // Portable, -OverflowFix Channels
        int layers = 0, rescaled = 0, channels = 0;
        foreach (var conv in model.Graph.Node.Where(n => n.OpType == "Conv"))
        {
            var init = view.Initializers[conv.Input[1]];
            var dims = init.Dims.ToArray();
            var w = TensorData.ReadFloats(init);
            var layout = PairLayout.For(conv, dims)!;
            var (values, scales, _, check) = PairSaturation.QuantizeWeights(w, dims, 0, spec, layout, options, firstLayer: false, offset: -1);
            var (rr, rrScales, _) = QuantMath.QuantizeWeights(w, dims, 0, spec with { ReduceRange = true });
            double Sse(int[] q, float[] s) { double e = 0; long inner = w.Length / s.Length; for (int i = 0; i < w.Length; i++) { double d = w[i] - q[i] * (double)s[i / inner]; e += d * d; } return e; }
            double fixedError = Sse(values, scales), rrError = Sse(rr, rrScales);
            Assert.True(fixedError <= rrError, $"{conv.Name}: {fixedError} > reduce_range's {rrError}");
            Assert.DoesNotContain(true, PairSaturation.ChannelsAtRisk(values, layout, -1));
            output.WriteLine(FormattableString.Invariant($"{conv.Name}: {check!.ChannelsRescaled}/{check.Channels} channels rescaled (up to {check.LargestStepRatio:0.00}x), weight error {10 * Math.Log10(rrError / fixedError):0.00} dB below reduce_range's"));
            layers++; rescaled += check.ChannelsRescaled; channels += check.Channels;
        }
        output.WriteLine($"{layers} convolutions, {rescaled} of {channels} channels rescaled");
        Assert.Equal(22, layers);
    }
}
