using Google.Protobuf;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using PtqTools.Core.Model;
using PtqTools.TestModels;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>The five architecture models of issue 17, written once per test run.</summary>
public sealed class ArchitectureModelFixture : IDisposable
{
    readonly TempDir _dir = new();
    readonly Dictionary<string, Lazy<string>> _paths;

    public ArchitectureModelFixture()
    {
        _paths = ArchitectureModelSet.Kinds.ToDictionary(k => k, k => new Lazy<string>(() => ArchitectureModelSet.Write(k, _dir.File(k))));
    }

    public string Model(string kind) => _paths[kind].Value;
    public string Folder => _dir.Path;
    public void Dispose() => _dir.Dispose();
}

/// <summary>Helpers over the architecture models: the default static pipeline (what Get-ModelLayer |
/// Measure-ActivationRange -DataSet | Invoke-Quantization does, with its defaults) and a deliberately broken copy.</summary>
public static class ArchitectureModelPipeline
{
    /// <summary>What Get-ModelLayer | Measure-ActivationRange -DataSet | Invoke-Quantization does with its defaults
    /// (static QDQ, u8 activations, s8 per-channel weights, Target Portable): every 10th calibration sample held out,
    /// the architecture rules, and the fidelity guard on the held-out samples (with its search). With
    /// <paramref name="asBefore"/>, what it did before issue 17: every sample calibrates, no rule, no guard.</summary>
    public static QuantizationResult QuantizeDefault(string modelPath, string outputPath, QuantizationOptions? options = null, bool asBefore = false)
    {
        options ??= new QuantizationOptions();
        if (asBefore) options.SkipRules = new[] { "*" };
        options.Target = QuantTargets.Resolve(options.Target);
        var data = DataSetReader.FromTensorProto(new[] { ArchitectureModels.CalibrationFolder(modelPath) }, new PtqDataSet());
        var prepared = Quantizer.ForOptions(ModelPreparer.Prepare(modelPath), options, out _);
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null, options.FloatReason);
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, asBefore ? data : FidelityGuard.CalibrationPart(data), 2, null, CancellationToken.None);
        var result = QuantizationPipeline.Run(prepared, stats, options, outputPath, CancellationToken.None);
        // The pipeline's fidelity step does not run when the rules kept every layer in float (the float model is written).
        return asBefore || result.Fidelity is { Status: "KeptFloat" } ? result : FidelityGuard.Run(prepared, stats, options, result, FidelityGuard.HeldOutPart(data), data,
            FidelityGuard.DefaultMinCosine, FidelityGuard.DefaultTimeBudget, 2, null, CancellationToken.None);
    }

    /// <summary>A copy with noise of <paramref name="strength"/> times each weight tensor's RMS added to every float
    /// initializer and Constant (also inside If branches) of 16 or more values.</summary>
    public static string Broken(string modelPath, string outputPath, double strength = 1.0, int seed = 5)
    {
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(modelPath));
        var r = new Random(seed);
        // BatchNormalization variances stay as they are (noise could make them negative: NaN, not a bad model).
        var variances = OnnxGraphs(model.Graph).SelectMany(g => g.Node).Where(n => n.OpType == "BatchNormalization").Select(n => n.Input[4]).ToHashSet(StringComparer.Ordinal);
        TensorProto Noisy(TensorProto t)
        {
            if (variances.Contains(t.Name) || t.DataType != (int)OnnxDataType.Float || TensorData.ElementCount(t.Dims) < 16) return t;
            var v = TensorData.ReadFloats(t);
            double rms = Math.Sqrt(v.Average(x => (double)x * x));
            for (int i = 0; i < v.Length; i++) v[i] += (float)((r.NextDouble() * 2 - 1) * Math.Sqrt(3) * strength * rms);
            return TensorData.FromFloats(t.Name, v, t.Dims.ToArray());
        }
        void Walk(GraphProto g)
        {
            for (int i = 0; i < g.Initializer.Count; i++) g.Initializer[i] = Noisy(g.Initializer[i]);
            foreach (var n in g.Node)
                foreach (var a in n.Attribute)
                {
                    if (n.OpType == "Constant" && a.Name == "value" && a.T is not null) a.T = Noisy(a.T);
                    if (a.G is not null) Walk(a.G);
                }
        }
        Walk(model.Graph);
        File.WriteAllBytes(outputPath, model.ToByteArray());
        return outputPath;
    }

    static IEnumerable<GraphProto> OnnxGraphs(GraphProto g) =>
        new[] { g }.Concat(g.Node.SelectMany(n => n.Attribute).Where(a => a.G is not null).SelectMany(a => OnnxGraphs(a.G)));
}

public class ArchitectureModelTests : IClassFixture<ArchitectureModelFixture>
{
    readonly ArchitectureModelFixture fixture;
    readonly ITestOutputHelper output;

    public ArchitectureModelTests(ArchitectureModelFixture fixture, ITestOutputHelper output)
    {
        this.fixture = fixture;
        this.output = output;
        TestPaths.UseTempCache();
    }

    [Fact]
    public void Bert11_IsMiniLmAtOpset11_WithTheSameOutputs()
    {
        var path = fixture.Model("bert11");
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        Assert.Equal(11, model.OpsetImport.Single(o => o.Domain == "").Version);
        Assert.All(model.Graph.Node.Where(n => n.OpType == "Unsqueeze"), n => Assert.Single(n.Input));
        var ops = model.Graph.Node.Select(n => n.OpType).ToHashSet();
        Assert.Superset(new HashSet<string> { "Erf", "ReduceMean", "Pow", "Sqrt", "Div", "Softmax" }, ops);
        using var original = new OrtModel(File.ReadAllBytes(MiniLm.ModelPath));
        using var rewritten = OrtModel.FromFile(path);
        foreach (var set in SampleFiles.Sets(ArchitectureModels.EvaluationFolder(path)).Take(10))
        {
            var inputs = SampleFiles.Read(set);
            var a = original.Run(inputs)[0];
            var b = rewritten.Run(inputs)[0];
            Assert.True(Check.Cosine(a, b) > 0.9999, $"{set}: cosine {Check.Cosine(a, b)}");
        }
        // Padded as users batch text: the last tokens have attention_mask 0.
        var mask = OrtModel.ReadInt64(SampleFiles.Read(SampleFiles.Sets(ArchitectureModels.EvaluationFolder(path))[0]).Single(t => t.Name == "attention_mask"));
        Assert.Equal(ArchitectureModelSet.BertTokens, mask.Length);
        Assert.Contains(0L, mask);
    }

    [Fact]
    public void Bert11_Dynamic_RaisesToOpset13ForItsPerColumnTables_AndOnnxRuntimeRunsIt()
    {
        // Before: the embedding tables' DequantizeLinear had an axis at opset 11, which ONNX Runtime refuses
        // ("Unrecognized attribute: axis for operator DequantizeLinear").
        var path = fixture.Model("bert11");
        using var dir = new TempDir();
        var options = new QuantizationOptions { Mode = QuantMode.Dynamic };
        var result = QuantizationPipeline.RunWithoutCalibration(ModelPreparer.Prepare(path), null, options, dir.File("dyn.onnx"), default);
        Assert.Contains(result.Decisions, d => d.Quantized && d.OpType == "Gather" && d.Reason.Contains("per column"));
        var written = ModelProto.Parser.ParseFrom(File.ReadAllBytes(result.OutputPath));
        Assert.Equal(13, written.OpsetImport.Single(o => o.Domain == "").Version);
        Assert.Contains(written.Graph.Node, n => n.OpType == "DequantizeLinear" && n.Attribute.Any(a => a.Name == "axis"));
        using var quantized = OrtModel.FromFile(result.OutputPath);
        using var original = OrtModel.FromFile(path);
        foreach (var set in SampleFiles.Sets(ArchitectureModels.EvaluationFolder(path)).Take(3))
        {
            var inputs = SampleFiles.Read(set);
            double cosine = Check.Cosine(original.Run(inputs)[0], quantized.Run(inputs)[0]);
            Assert.True(cosine > 0.9, $"{set}: cosine {cosine}");
        }
    }

    [Theory]
    [InlineData("bert11")]
    [InlineData("crnn")]
    [InlineData("textdir")]
    [InlineData("vad")]
    [InlineData("dbnet")]
    public void Model_Loads_IsSmall_AndItsMetricIsPerfectAgainstItself_AndBadOnABrokenCopy(string kind)
    {
        var path = fixture.Model(kind);
        Assert.True(Directory.GetDirectories(ArchitectureModels.CalibrationFolder(path), "test_data_set_*").Length >= 50);
        Assert.True(Directory.GetDirectories(ArchitectureModels.EvaluationFolder(path), "test_data_set_*").Length >= 100);
        if (kind != "bert11") Assert.True(new FileInfo(path).Length < 5_000_000);
        // The same data set the cmdlets read (New-PtqDataSet on the folder).
        var data = DataSetReader.FromTensorProto(new[] { ArchitectureModels.CalibrationFolder(path) }, new PtqDataSet());
        Assert.Equal(50, data.Count);

        var self = ArchitectureModels.Evaluate(path, path, latencyRuns: 5);
        output.WriteLine("float vs float: " + self.Summary());
        Assert.Equal(1.0, self.OutputCosine, 6);
        if (kind != "bert11") Assert.True(self.FloatMs < 50, $"{self.FloatMs} ms per sample");   // MiniLM is the real model
        using var dir = new TempDir();
        var broken = ArchitectureModelPipeline.Broken(path, dir.File("broken.onnx"), kind == "bert11" ? 0.5 : 1.0);
        var bad = ArchitectureModels.Evaluate(path, broken, latencyRuns: 0);
        output.WriteLine("broken vs float: " + bad.Summary());
        switch (kind)
        {
            case "bert11":
                Assert.Equal(1.0, self.EmbeddingCosine!.Value, 6); Assert.Equal(1.0, self.Spearman!.Value, 6);
                Assert.True(bad.EmbeddingCosine < 0.98 || bad.Spearman < 0.98, bad.Summary());
                break;
            case "crnn":
                Assert.Equal(0.0, self.CharacterErrorRate!.Value);
                Assert.True(self.FloatConfidence > 0.9, self.Summary());   // confident as a trained head
                Assert.True(self.FloatCharacters > 100, self.Summary());
                Assert.True(bad.CharacterErrorRate > 0.1, bad.Summary());
                break;
            case "textdir":
                Assert.Equal(1.0, self.Agreement!.Value);
                Assert.True(bad.Agreement < 0.99, bad.Summary());
                break;
            case "vad":
                Assert.Equal(1.0, self.Agreement!.Value); Assert.Equal(1.0, self.Auc!.Value, 6);
                Assert.InRange(self.FloatSpeechShare!.Value, 0.2, 0.8);   // both decisions occur
                Assert.True(bad.Agreement < 0.98, bad.Summary());
                break;
            case "dbnet":
                Assert.Equal(1.0, self.MapIoU!.Value);
                Assert.InRange(self.FloatMapShare!.Value, 0.05, 0.6);
                Assert.True(bad.MapIoU < 0.9, bad.Summary());
                break;
        }
    }

    /// <summary>Issue 17's bars on each class, with today's defaults (the rules and the fidelity guard).</summary>
    [Theory]
    [InlineData("bert11")]
    [InlineData("crnn")]
    [InlineData("textdir")]
    [InlineData("vad")]
    [InlineData("dbnet")]
    public void Default_KeepsTheTask(string kind)
    {
        var path = fixture.Model(kind);
        using var dir = new TempDir();
        var quantized = dir.File("model.int8.onnx");
        var result = ArchitectureModelPipeline.QuantizeDefault(path, quantized);
        var figures = ArchitectureModels.Evaluate(path, quantized, latencyRuns: 30);
        output.WriteLine($"DEFAULT {figures.Summary()}; {result.QuantizedLayerCount} layers int8, {result.FloatLayerCount} float; fidelity {result.Fidelity?.Summary}");
        foreach (var d in result.Decisions.Where(d => !d.Quantized)) output.WriteLine($"  {d}");
        // Never larger than float, and never a silent success: the guard checked it, and what it did is said.
        Assert.True(figures.SizeRatio <= 1, figures.Summary());
        Assert.NotNull(result.Fidelity);
        Assert.Contains(result.Fidelity!.Status, new[] { "Passed", "Searched", "KeptFloat" });
        if (result.Fidelity.Samples == 0)
        {
            // Nothing to check: the rules kept every layer in float (int8 would lose the task or run slower), and
            // the float model was written with each layer's reason.
            Assert.Equal("KeptFloat", result.Fidelity.Status);
            Assert.StartsWith("FLOAT MODEL WRITTEN: the rules", result.Fidelity.Summary);
            Assert.All(result.Decisions, d => Assert.False(d.Quantized));
        }
        else
            Assert.Equal(result.Fidelity.Status == "Passed",
                result.Fidelity.Cosine >= FidelityGuard.DefaultMinCosine && !(result.Fidelity.Agreement < FidelityGuard.DefaultMinAgreement));
        if (result.Fidelity.Status == "KeptFloat") Assert.Equal(0, result.QuantizedLayerCount);
        // Issue 17's bars where the defaults meet them today (docs/real-models.md has the whole table).
        switch (kind)
        {
            case "bert11":
                Assert.True(figures.EmbeddingCosine >= 0.98 && figures.Spearman >= 0.98, figures.Summary());
                break;
            case "dbnet":
                Assert.True(figures.MapIoU >= 0.9, figures.Summary());
                break;
            case "textdir":
                // A 38 KB model on small maps: its stem and depthwise convs, and every int8 region left, would run
                // slower than float, so the speed rules keep them in float (and the float model is written).
                Assert.Contains(result.Decisions, d => d.Reason.Contains("(rule ShallowConv)"));
                Assert.Contains(result.Decisions, d => d.Reason.Contains("(rule SlowRegion)"));
                Assert.True(figures.Agreement >= 0.99, figures.Summary());
                break;
            case "vad":
                // Its layers all sit inside If branches, and the search ranks them (SubgraphTests). Its filterbank convs
                // (one per branch, few frames) would run slower in int8 (SlowRegion) and hold most of its weights, so
                // the int8 model that keeps the decisions is larger than float: the float model is written.
                Assert.Contains(result.Decisions, d => d.Layer.StartsWith("If_1/", StringComparison.Ordinal) && d.Reason.Contains("(rule SlowRegion)"));
                Assert.True(figures.Agreement >= 0.98, figures.Summary());
                if (result.Fidelity.Status == "Searched") Assert.All(result.Fidelity.KeptInFloat, l => Assert.StartsWith("If_1/", l));
                break;
        }
    }

}
