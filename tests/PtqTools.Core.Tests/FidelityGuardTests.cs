using Google.Protobuf;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using PtqTools.Core.Runtime;
using PtqTools.TestModels;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The fidelity guard's size rule: a written model that keeps the outputs but is larger than float is replaced
/// by the float model, with the reason in every decision (issue 17: never larger by default).</summary>
public class FidelityGuardTests
{
    [Fact]
    public void AModelThatKeepsTheOutputsButIsLargerThanFloat_IsReplacedByTheFloatModel()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var source = dir.File("float.onnx");
        new ModelBuilder().Input("x", 1, 4).RandomInit(new Random(1), "w", 0.5f, 4, 4).Node("MatMul", new[] { "x", "w" }, new[] { "y" }, "mm").Output("y", 1, 4).Save(source);
        var data = DataSetReader.FromArrays(Enumerable.Range(0, 40).Select(i => new float[] { i % 7, 1, 2, 3 - i % 3 }).ToArray(), new[] { 4 }, null, new PtqDataSet());
        var options = TinyModel.Options();
        var prepared = ModelPreparer.Prepare(source);
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null, options.FloatReason);
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, FidelityGuard.CalibrationPart(data), 1, null, CancellationToken.None);
        // The "written model" computes the float model's outputs exactly, but is (as its result says) 5 % larger.
        var path = dir.File("written.onnx");
        File.Copy(source, path);
        var written = new QuantizationResult { OutputPath = path, SizeRatio = 1.05 };
        var result = FidelityGuard.Run(prepared, stats, options, written, FidelityGuard.HeldOutPart(data), data, FidelityGuard.DefaultMinCosine,
            TimeSpan.FromSeconds(30), 1, null, CancellationToken.None);
        Assert.Equal("KeptFloat", result.Fidelity!.Status);
        Assert.Contains("larger than float (105", result.Fidelity.Summary);
        Assert.Equal(0, result.QuantizedLayerCount);
        Assert.Contains(result.Decisions, d => d.Layer == "mm" && d.Reason.Contains("larger than float"));
        Assert.Equal(new[] { "mm" }, result.Fidelity.KeptInFloat);
        // Written smaller, the same model passes.
        File.Copy(source, path, overwrite: true);
        var passed = FidelityGuard.Run(prepared, stats, options, new QuantizationResult { OutputPath = path, SizeRatio = 0.9 }, FidelityGuard.HeldOutPart(data), data,
            FidelityGuard.DefaultMinCosine, TimeSpan.FromSeconds(30), 1, null, CancellationToken.None);
        Assert.Equal("Passed", passed.Fidelity!.Status);
    }
}
