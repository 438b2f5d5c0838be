using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>The check after writing, held to what ONNX Runtime really computed on an AVX2-only CPU (the ground
/// truth stands in for "this host"), so that it is tested on every host class.</summary>
public sealed class HostGuardTests(ITestOutputHelper output)
{
    /// <summary>The ground-truth case's inputs as samples, and what ONNX Runtime on the AVX2 CPU gave for each.</summary>
    static (List<Sample> Samples, Func<Sample, float[][]> Avx2Ort) Case(string name)
    {
        var dir = Path.Combine(TestPaths.GroundTruth, name);
        var sets = Directory.GetDirectories(dir, "test_data_set_*").OrderBy(d => d, StringComparer.Ordinal).ToList();
        var samples = sets.Select((set, i) => new Sample(i, Path.GetFileName(set), Array.Empty<float>(), Array.Empty<int>(), -1)
            { Inputs = new[] { TensorProtoFile.Read(Path.Combine(set, "input_0.pb")) } }).ToList();
        return (samples, s => new[] { EngineTensor.FromProto(TensorProtoFile.Read(Path.Combine(sets[s.Index], "output_0.pb"))).ToFloats() });
    }

    [Fact]
    public void TheDefaultModelOfBefore_FailsOnTheAvx2Cpu_NamingTheLayersThatSaturate()
    {
        var (samples, avx2) = Case("resnet18_int8_default");
        var model = Path.Combine(TestPaths.GroundTruth, "resnet18_int8_default", "model.onnx");
        var check = HostGuard.Run(model, samples, "ground truth", CancellationToken.None, avx2, QuantTarget.Avx2);
        output.WriteLine(check.Summary);
        Assert.Equal("Failed", check.Status);
        Assert.True(check.MinCosine < 0.9, $"min cosine {check.MinCosine}");
        // Which layers saturate depends on the data as well as the weights: real activations seldom put 255 in both
        // channels of a pair, so fewer layers saturate than have pairs at risk.
        Assert.NotEmpty(check.Layers);
        Assert.Contains("-Target Avx2 or -Target Portable", check.Summary);
        // The layers it names are layers whose weights have pairs at risk.
        var atRisk = WeightPairs.AtRiskLayers(OnnxModelIO.Load(model));
        output.WriteLine($"{check.Layers.Length} layers saturate on these 8 images; {atRisk.Count} have weight pairs at risk");
        Assert.Subset(atRisk.ToHashSet(), check.Layers.ToHashSet());
    }

    [Fact]
    public void TheReduceRangeModel_PassesOnTheAvx2Cpu()
    {
        var (samples, avx2) = Case("resnet18_int8_reduce");
        var check = HostGuard.Run(Path.Combine(TestPaths.GroundTruth, "resnet18_int8_reduce", "model.onnx"), samples, "ground truth",
            CancellationToken.None, avx2, QuantTarget.Avx2);
        output.WriteLine(check.Summary);
        Assert.Equal("Passed", check.Status);
        Assert.Empty(check.Layers);
        Assert.Equal(1.0, check.MinCosine);
        Assert.Equal(0.0, check.MaxSteps);
    }

    [Fact]
    public void OnThisHost_TheEngineAndOnnxRuntimeAgree_OnTheReduceRangeModel()
    {
        // Its weights never saturate, so every class computes the same: the check passes whatever this CPU is.
        var (samples, _) = Case("resnet18_int8_reduce");
        var check = HostGuard.Run(Path.Combine(TestPaths.GroundTruth, "resnet18_int8_reduce", "model.onnx"), samples, "ground truth", CancellationToken.None);
        output.WriteLine(check.Summary);
        Assert.Equal("Passed", check.Status);
        Assert.Equal(QuantTargets.HostClass.ToString(), check.HostClass);
    }
}
