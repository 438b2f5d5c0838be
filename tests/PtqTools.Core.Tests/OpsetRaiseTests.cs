using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>Opsets 7 to 21 and IR 3 to 10: listed and calibrated at their own opset, quantized with the opset raised
/// only as far as the options need.</summary>
public class OpsetRaiseTests
{
    /// <summary>x -> Conv(+bias) -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> y, ops whose meaning is the same
    /// from opset 7 on. IR 3 models also list their initializers as graph inputs, as exporters of that time did.</summary>
    static ModelProto Cnn(int opset, long ir)
    {
        var r = new Random(opset);
        var b = new ModelBuilder(opset, ir, $"cnn{opset}")
            .Input(TinyModels.Input, TinyModels.InputShape)
            .RandomInit(r, "w", 0.4f, 6, 3, 3, 3).RandomInit(r, "b", 0.2f, 6)
            .RandomInit(r, "wg", 0.5f, 6, 10).RandomInit(r, "bg", 0.2f, 10)
            .Node("Conv", new[] { TinyModels.Input, "w", "b" }, new[] { "c" }, "conv", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Relu", new[] { "c" }, new[] { "r" }, "relu")
            .Node("GlobalAveragePool", new[] { "r" }, new[] { "g" }, "gap")
            .Node("Flatten", new[] { "g" }, new[] { "f" }, "flatten")
            .Node("Gemm", new[] { "f", "wg", "bg" }, new[] { "y" }, "gemm")
            .Output("y", 1, 10);
        if (ir == 3)
            foreach (var t in b.Graph.Initializer) b.Graph.Input.Add(ModelBuilder.Value(t.Name, t.Dims.ToArray()));
        return b.Model;
    }

    [Theory]
    [InlineData(7, 3)] [InlineData(8, 3)] [InlineData(9, 4)] [InlineData(10, 5)] [InlineData(11, 6)] [InlineData(12, 7)]
    [InlineData(13, 7)] [InlineData(14, 7)] [InlineData(15, 8)] [InlineData(16, 8)] [InlineData(17, 8)] [InlineData(18, 8)]
    [InlineData(19, 9)] [InlineData(20, 9)] [InlineData(21, 10)]
    public void EachOpset_IsRaisedOnlyAsFarAsQuantizationNeeds(int opset, long ir)
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var model = Cnn(opset, ir);
        var path = dir.File($"cnn{opset}.onnx");
        File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(model));
        var prepared = ModelPreparer.Prepare(path);
        Assert.Equal(opset, OpsetUpgrader.DefaultOpset(prepared.Model));
        var layers = ModelInspector.Layers(prepared);
        Assert.True(layers.Single(l => l.Name == "conv").Quantizable, layers.Single(l => l.Name == "conv").Reason);
        Assert.True(layers.Single(l => l.Name == "gemm").Quantizable, layers.Single(l => l.Name == "gemm").Reason);

        var random = new Random(opset);
        var inputs = Enumerable.Range(0, 8).Select(_ => TinyModels.RandomInput(random)).ToArray();
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, DataSetReader.FromArrays(inputs, new[] { 3, 8, 8 }, null, new PtqDataSet()), 1, null, CancellationToken.None);
        foreach (var perChannel in new[] { true, false })
        {
            var output = dir.File($"cnn{opset}.{perChannel}.int8.onnx");
            var result = QuantizationPipeline.Run(prepared, stats, new QuantizationOptions { SkipRules = TinyModel.SpeedRules, PerChannel = perChannel }, output, CancellationToken.None);
            Assert.Contains("conv", result.QuantizedLayers);
            var quantized = OnnxModelIO.Load(output);
            Assert.Equal(Math.Max(opset, perChannel ? 13 : 10), OpsetUpgrader.DefaultOpset(quantized));
            Assert.True(quantized.IrVersion >= Math.Max(ir, perChannel ? 7 : 5), $"IR {quantized.IrVersion}");
            var expected = Ort.Run(model, TinyModels.Input, inputs[0], TinyModels.InputShape)["y"];
            var actual = Ort.Run(quantized, TinyModels.Input, inputs[0], TinyModels.InputShape)["y"];
            Assert.True(Check.Cosine(expected, actual) > 0.99, $"per channel {perChannel}: cosine {Check.Cosine(expected, actual)}");
        }
    }

    [Fact]
    public void BlockedModel_IsListedAndCalibrated_AndQuantizationNamesTheOp()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var r = new Random(4);
        // Upsample (opset 7 to 9, removed at 10) has no rewrite that keeps its meaning at 10 or 13.
        var b = new ModelBuilder(8, 3, "blocked").Input(TinyModels.Input, TinyModels.InputShape)
            .RandomInit(r, "w", 0.4f, 4, 3, 3, 3)
            .Node("Conv", new[] { TinyModels.Input, "w" }, new[] { "c" }, "conv", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Upsample", new[] { "c" }, new[] { "y" }, "up", ("scales", new[] { 1f, 1f, 2f, 2f }), ("mode", "nearest"))
            .Output("y");
        var prepared = ModelPreparer.Prepare(b.Save(dir.File("blocked.onnx")));
        var conv = ModelInspector.Layers(prepared).Single(l => l.Name == "conv");
        Assert.False(conv.Quantizable);
        Assert.Contains("Upsample", conv.Reason);

        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var inputs = Enumerable.Range(0, 4).Select(_ => TinyModels.RandomInput(r)).ToArray();
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, DataSetReader.FromArrays(inputs, new[] { 3, 8, 8 }, null, new PtqDataSet()), 1, null, CancellationToken.None);
        Assert.Contains(stats, s => s.Tensor == "c");
        foreach (var perChannel in new[] { true, false })
        {
            var output = dir.File($"blocked.{perChannel}.onnx");
            var ex = Check.Throws("OpsetUpgradeBlocked", () => QuantizationPipeline.Run(prepared, stats, new QuantizationOptions { SkipRules = TinyModel.SpeedRules, PerChannel = perChannel }, output, CancellationToken.None));
            Assert.Contains("Upsample", ex.Message);
            Assert.Contains(perChannel ? "opset 13" : "opset 10", ex.Message);
            Assert.False(File.Exists(output));
        }
    }
}
