using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>-ConvKernel: the same weight values, encoded for ONNX Runtime's symmetric convolution (zero point 0) or
/// for its im2col + QGEMM path (codes q - 1, zero point -1), and what Auto picks.</summary>
public sealed class ConvKernelTests
{
    /// <summary>x[1,3,8,8] -> depthwise conv (group 3) -> Relu -> conv (group 1, bias) -> y: one conv of each kind.</summary>
    static ModelProto GroupedCnn()
    {
        var r = new Random(21);
        return new ModelBuilder(13, 7, "grouped")
            .Input(TinyModels.Input, TinyModels.InputShape)
            .RandomInit(r, "wd", 0.5f, 3, 1, 3, 3)
            .RandomInit(r, "w", 0.3f, 8, 3, 3, 3).RandomInit(r, "b", 0.2f, 8)
            .Node("Conv", new[] { TinyModels.Input, "wd" }, new[] { "d" }, "depthwise", ("pads", new long[] { 1, 1, 1, 1 }), ("group", 3L))
            .Node("Relu", new[] { "d" }, new[] { "r" }, "relu")
            .Node("Conv", new[] { "r", "w", "b" }, new[] { "y" }, "conv", ("pads", new long[] { 1, 1, 1, 1 }))
            .Output("y", 1, 8, 8, 8).Model;
    }

    static ModelProto Quantize(ModelProto model, QuantizationOptions options)
    {
        var plan = QuantizationPlan.Create(new GraphView(model.Graph), null);
        var ranges = plan.Activations.Keys.ToDictionary(k => k, k => k switch { "x" => new TensorRange(-4f, 4f), "y" => new TensorRange(-8f, 8f), _ => new TensorRange(0f, 3f) });
        var qdq = QdqQuantizer.Quantize(model, plan, ranges, options);
        return options.Format == QuantFormat.QOperator ? QOperatorConverter.Convert(qdq) : qdq;
    }

    static (float[] Codes, float[] Scales, float[] ZeroPoints) Weights(ModelProto qdq, string conv)
    {
        var g = new QdqGraph(qdq);
        var dq = g.Dequantizer(g.Node(conv).Input[1])!;
        return (g.Floats(dq.Input[0]), g.Floats(dq.Input[1]), g.Floats(dq.Input[2]));
    }

    [Fact]
    public void GemmEncoding_HoldsTheSameWeightValues_OnlyForConvsOfGroupOne()
    {
        var model = GroupedCnn();
        // Written for AMX (exact sums): full-range codes, so that the shift reaches -128.
        var gemm = Quantize(model, new QuantizationOptions { ConvKernel = ConvKernel.Gemm, Target = QuantTarget.Amx });
        var sym = Quantize(model, new QuantizationOptions { ConvKernel = ConvKernel.Symmetric, Target = QuantTarget.Amx });
        var (gc, gs, gz) = Weights(gemm, "conv");
        var (sc, ss, sz) = Weights(sym, "conv");
        Assert.All(gz, z => Assert.Equal(-1, z));
        Assert.All(sz, z => Assert.Equal(0, z));
        Assert.Equal(ss, gs);
        int inner = gc.Length / gs.Length;
        for (int i = 0; i < gc.Length; i++)
            Assert.Equal(sc[i] - sz[i / inner], gc[i] - gz[i / inner]);
        Assert.Contains(gc, c => c == -128);   // the shifted codes use the bottom of int8, so they really moved
        // The depthwise conv keeps zero point 0 in both: MLAS's symmetric depthwise kernel is the fast one.
        Assert.All(Weights(gemm, "depthwise").ZeroPoints, z => Assert.Equal(0, z));
        // Asymmetric and uint8 weights are not touched (their zero points already take the GEMM path).
        var asym = new QuantizationOptions { ConvKernel = ConvKernel.Gemm, WeightSymmetric = false };
        Assert.Equal(Weights(Quantize(model, new QuantizationOptions { ConvKernel = ConvKernel.Symmetric, WeightSymmetric = false }), "conv").Codes,
            Weights(Quantize(model, asym), "conv").Codes);
        Assert.DoesNotContain("conv-kernel", new QuantizationOptions { WeightType = QuantType.UInt8 }.ToString());
        Assert.Contains("conv-kernel=gemm", new QuantizationOptions { ConvKernel = ConvKernel.Gemm }.ToString());
        // Reduce-range weights keep their 7-bit codes (they are for CPUs without VNNI, which have no AMX either).
        Assert.All(Weights(Quantize(model, new QuantizationOptions { ConvKernel = ConvKernel.Gemm, ReduceRange = true }), "conv").ZeroPoints, z => Assert.Equal(0, z));
    }

    [Theory]
    [InlineData(QuantFormat.QDQ)]
    [InlineData(QuantFormat.QOperator)]
    public void BothEncodings_GiveIdenticalOutputs_InOnnxRuntimeAndOnTheEngine(QuantFormat format)
    {
        var model = GroupedCnn();
        var gemm = Quantize(model, new QuantizationOptions { ConvKernel = ConvKernel.Gemm, Format = format });
        var sym = Quantize(model, new QuantizationOptions { ConvKernel = ConvKernel.Symmetric, Format = format });
        var x = TinyModels.RandomInput(new Random(5));
        var ortGemm = Ort.Run(gemm, "x", x, TinyModels.InputShape, GraphOptimizationLevel.ORT_ENABLE_ALL)["y"];
        var ortSym = Ort.Run(sym, "x", x, TinyModels.InputShape, GraphOptimizationLevel.ORT_ENABLE_ALL)["y"];
        Assert.Equal(ortSym, ortGemm);
        Assert.True(Check.Cosine(Ort.Run(model, "x", x, TinyModels.InputShape)["y"], ortGemm) > 0.98);
        if (format == QuantFormat.QOperator)
        {
            var feed = new Dictionary<string, EngineTensor> { ["x"] = new EngineTensor(OnnxDataType.Float, TinyModels.InputShape, x) };
            using var gemmEngine = new IntegerEngine(gemm, "gemm");
            using var symEngine = new IntegerEngine(sym, "sym");
            var engineGemm = gemmEngine.Run(feed)["y"].ToFloats();
            var engineSym = symEngine.Run(feed)["y"].ToFloats();
            Assert.Equal(engineSym, engineGemm);
            Assert.Equal(ortSym, engineGemm);
        }
    }

    [Fact]
    public void Auto_IsGemmExactlyForTheAmxTarget_AndTheHostDetectionAgreesWithTheCpu()
    {
        foreach (var target in QuantTargets.Classes.Append(QuantTarget.Portable))
        {
            Assert.Equal(target == QuantTarget.Amx ? ConvKernel.Gemm : ConvKernel.Symmetric, ConvKernels.Resolve(ConvKernel.Auto, target));
            Assert.Equal(ConvKernel.Gemm, ConvKernels.Resolve(ConvKernel.Gemm, target));
            Assert.Equal(ConvKernel.Symmetric, ConvKernels.Resolve(ConvKernel.Symmetric, target));
            Assert.Equal(target == QuantTarget.Amx,
                Quantize(GroupedCnn(), new QuantizationOptions { Target = target }) is var q && Weights(q, "conv").ZeroPoints.All(z => z == -1));
        }
        // The native kernels ask the OS for the tile state themselves; where they got it, the CPU has AMX-INT8.
        if (NativeKernels.HasAmx) Assert.True(ConvKernels.CpuHasAmxInt8);
        if (OperatingSystem.IsLinux())
            Assert.Equal(File.ReadAllText("/proc/cpuinfo").Contains(" amx_int8", StringComparison.Ordinal), ConvKernels.CpuHasAmxInt8);
        if (Environment.GetEnvironmentVariable(QuantTargets.HostOverrideVariable) is not { Length: > 0 })
            Assert.Equal(ConvKernels.CpuHasAmxInt8, QuantTargets.HostClass == QuantTarget.Amx);
    }
}
