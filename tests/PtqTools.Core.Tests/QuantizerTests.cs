using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The residual CNN prepared, calibrated on random samples and quantized once for the whole class.</summary>
public sealed class SyntheticModelFixture : IDisposable
{
    public SyntheticModelFixture()
    {
        TestPaths.UseTempCache();
        Dir = new TempDir();
        try
        {
            FloatPath = TinyModels.ResidualCnn().Save(Dir.File("residual.onnx"));
            Prepared = ModelPreparer.Prepare(FloatPath);
            Plan = QuantizationPlan.Create(new GraphView(Prepared.Model.Graph), null);
            var random = new Random(100);
            Calibration = DataSetReader.FromArrays(Enumerable.Range(0, 24).Select(_ => TinyModels.RandomInput(random)).ToArray(), new[] { 3, 8, 8 }, null, new PtqDataSet());
            Evaluation = DataSetReader.FromArrays(Enumerable.Range(0, 24).Select(_ => TinyModels.RandomInput(random)).ToArray(), new[] { 3, 8, 8 }, null, new PtqDataSet());
            Statistics = ActivationCalibrator.Run(Prepared, Plan.Activations, Calibration, 1, null, CancellationToken.None);
            QuantizedPath = Dir.File("residual.int8.onnx");
            Result = QuantizationPipeline.Run(Prepared, Statistics, Options, QuantizedPath, CancellationToken.None);
            Quantized = OnnxModelIO.Load(QuantizedPath);
        }
        catch
        {
            Dir.Dispose();   // xunit does not dispose a fixture whose constructor throws
            throw;
        }
    }

    public TempDir Dir { get; }
    public string FloatPath { get; }
    public PreparedModel Prepared { get; }
    public QuantizationPlan Plan { get; }
    public PtqDataSet Calibration { get; }
    public PtqDataSet Evaluation { get; }
    public List<TensorStatistics> Statistics { get; }
    public QuantizationOptions Options { get; } = TinyModel.Options();
    public string QuantizedPath { get; }
    public QuantizationResult Result { get; }
    public ModelProto Quantized { get; }

    public void Dispose() => Dir.Dispose();
}

/// <summary>Lookups over a quantized graph.</summary>
sealed class QdqGraph
{
    public QdqGraph(ModelProto model)
    {
        Model = model;
        View = new GraphView(model.Graph);
    }

    public ModelProto Model { get; }
    public GraphView View { get; }

    public NodeProto Node(string name) => Model.Graph.Node.Single(n => n.Name == name);

    /// <summary>The DequantizeLinear node producing a tensor, or null when something else (or nothing) does.</summary>
    public NodeProto? Dequantizer(string tensor) =>
        View.Producers.TryGetValue(tensor, out var p) && p.OpType == "DequantizeLinear" ? p : null;

    public TensorProto Init(string name) => View.Initializers[name];

    public float[] Floats(string name) => TensorData.ReadFloats(Init(name));

    /// <summary>Scale of the activation feeding a node input: the DQ in front of it.</summary>
    public float ActivationScale(string tensor)
    {
        var dq = Dequantizer(tensor) ?? throw new Xunit.Sdk.XunitException($"'{tensor}' is not dequantized.");
        var scale = Floats(dq.Input[1]);
        Assert.Single(scale);
        return scale[0];
    }
}

public class QuantizerTests : IClassFixture<SyntheticModelFixture>
{
    readonly SyntheticModelFixture _f;
    readonly Xunit.Abstractions.ITestOutputHelper _out;

    public QuantizerTests(SyntheticModelFixture fixture, Xunit.Abstractions.ITestOutputHelper output)
    {
        _f = fixture;
        _out = output;
    }

    [Fact]
    public void Preparation_KeepsTheModelAndCachesIt()
    {
        Assert.Equal(OnnxModelIO.Sha256(_f.FloatPath), _f.Prepared.SourceSha256);
        Assert.StartsWith(ModelPreparer.CacheFolder, _f.Prepared.PreparedPath);
        Assert.True(File.Exists(_f.Prepared.PreparedPath));
        Assert.Equal(13, OpsetUpgrader.DefaultOpset(_f.Prepared.Model));
        var again = ModelPreparer.Prepare(_f.FloatPath);
        Assert.Equal(_f.Prepared.PreparedPath, again.PreparedPath);
        Assert.Equal(_f.Prepared.Model, again.Model);
    }

    [Fact]
    public void Plan_FoldsTheReluIntoConvOutputRange()
    {
        // conv1's output is observed after the Relu that is its only consumer; conv2's output has no Relu.
        Assert.Contains("r1", _f.Plan.Activations.Keys);
        Assert.DoesNotContain("c1", _f.Plan.Activations.Keys);
        Assert.Contains("c2", _f.Plan.Activations.Keys);
        Assert.Equal(new[] { "add", "conv1", "conv2", "flatten", "gap", "gemm" }, _f.Plan.QuantizedLayers.OrderBy(n => n, StringComparer.Ordinal));
        var stat = _f.Statistics.Single(s => s.Tensor == "r1");
        Assert.True(stat.RangeMin >= 0, "a Relu output cannot be negative");
        Assert.Equal(24, stat.SampleCount);
        Assert.Equal(24L * 8 * 8 * 8, stat.ElementCount);
        Assert.All(_f.Statistics, s => Assert.Equal(_f.Prepared.SourceSha256, s.ModelSha256));
    }

    [Fact]
    public void QuantizedModel_HasQdq_RunsInOrt_AndStaysCloseToTheFloatModel()
    {
        var g = new QdqGraph(_f.Quantized);
        var ops = _f.Quantized.Graph.Node.Select(n => n.OpType).ToList();
        Assert.Contains("QuantizeLinear", ops);
        Assert.Contains("DequantizeLinear", ops);
        Assert.Equal(13, OpsetUpgrader.DefaultOpset(_f.Quantized));
        // Every planned activation gets a Q/DQ pair, and each reader of it reads the dequantized copy.
        foreach (var tensor in _f.Plan.Activations.Keys)
        {
            Assert.Contains(_f.Quantized.Graph.Node, n => n.OpType == "QuantizeLinear" && (n.Input[0] == tensor || n.Input[0] == tensor + "_float"));
            foreach (var reader in g.View.ConsumersOf(tensor))
                Assert.Equal("QuantizeLinear", reader.OpType);
        }
        Assert.Equal(new[] { "y" }, _f.Quantized.Graph.Output.Select(o => o.Name));
        Assert.Equal(_f.Prepared.SourceSha256, _f.Quantized.MetadataProps.Single(p => p.Key == "ptq.source_sha256").Value);

        var report = ModelComparer.Compare(_f.FloatPath, _f.QuantizedPath, _f.Evaluation, 1, 0, null, null, CancellationToken.None);
        _out.WriteLine($"all layers: cosine {report.Cosine} (min {report.Outputs[0].MinCosine}), SQNR {report.SqnrDb} dB");
        Assert.Equal(24, report.SampleCount);
        Assert.True(report.Cosine > 0.99, $"cosine {report.Cosine}, SQNR {report.SqnrDb} dB");
        Assert.True(report.MaxAbsError > 0, "the quantized model gives exactly the float outputs: nothing was quantized");
        Assert.Equal(_f.Result.OutputSizeBytes, new FileInfo(_f.QuantizedPath).Length);
        Assert.Equal(_f.Result.OutputSha256, OnnxModelIO.Sha256(_f.QuantizedPath));
    }

    [Theory]
    [InlineData("conv1", 8, 0)]
    [InlineData("conv2", 8, 0)]
    [InlineData("gemm", TinyModels.Classes, 1)]
    public void Weights_AreInt8PerChannel_AndBiasIsInt32AtInputTimesWeightScale(string layer, int channels, int axis)
    {
        var g = new QdqGraph(_f.Quantized);
        var prepared = new QdqGraph(_f.Prepared.Model);
        var original = prepared.Node(layer);
        var node = g.Node(layer);

        // Weight: int8 initializer -> DequantizeLinear(axis) with one scale per output channel, zero points 0 (-1 for
        // a Conv where -ConvKernel Auto writes for ONNX Runtime's GEMM path: the same values, see ConvKernelTests).
        var wdq = g.Dequantizer(node.Input[1]) ?? throw new Xunit.Sdk.XunitException($"{layer} weight is not dequantized");
        var wq = g.Init(wdq.Input[0]);
        Assert.Equal((int)OnnxDataType.Int8, wq.DataType);
        var floatWeight = prepared.Init(original.Input[1]);
        Assert.Equal(floatWeight.Dims, wq.Dims);
        Assert.DoesNotContain(_f.Quantized.Graph.Initializer, t => t.Name == original.Input[1]);   // the float copy is gone
        var wScales = g.Floats(wdq.Input[1]);
        Assert.Equal(channels, wScales.Length);
        Assert.Equal(axis, wdq.Attribute.Single(a => a.Name == "axis").I);
        var zp = g.Init(wdq.Input[2]);
        Assert.Equal((int)OnnxDataType.Int8, zp.DataType);
        float zero = node.OpType == "Conv" && ConvKernels.Resolve(ConvKernel.Auto, QuantTarget.Portable) == ConvKernel.Gemm ? -1f : 0f;
        Assert.All(g.Floats(wdq.Input[2]), v => Assert.Equal(zero, v));
        var q = g.Floats(wdq.Input[0]).Select(v => v - zero).ToArray();
        var w = TensorData.ReadFloats(floatWeight);
        var dims = floatWeight.Dims.ToArray();
        long inner = dims.Skip(axis + 1).Aggregate(1L, (a, d) => a * d);
        var peak = new float[channels];
        for (int i = 0; i < w.Length; i++)
        {
            int c = (int)(i / inner % channels);
            Assert.True(Math.Abs(q[i] * wScales[c] - w[i]) <= wScales[c] * 0.5001, $"{layer} weight {i}: {q[i]} x {wScales[c]} vs {w[i]}");
            peak[c] = Math.Max(peak[c], Math.Abs(q[i]));
        }
        // Symmetric, each channel's largest weight at the end of the range, unless the default target (Portable)
        // narrowed the channel so that no u8 x s8 pair can saturate (never below the 7-bit range).
        var pairs = _f.Result.Decisions.Single(d => d.Layer == layer);
        if (pairs.Reason.Contains("rescaled", StringComparison.Ordinal)) Assert.All(peak, p => Assert.InRange(p, 62f, 127f));
        else Assert.All(peak, p => Assert.Equal(127f, p));
        Assert.Empty(WeightPairs.AtRiskLayers(_f.Quantized));
        Assert.True(wScales.Distinct().Count() > 1, "per-channel scales should differ between channels");

        // Bias: int32 initializer -> DequantizeLinear with scale = input scale x weight scale.
        var bdq = g.Dequantizer(node.Input[2]) ?? throw new Xunit.Sdk.XunitException($"{layer} bias is not dequantized");
        var bq = g.Init(bdq.Input[0]);
        Assert.Equal((int)OnnxDataType.Int32, bq.DataType);
        var bScales = g.Floats(bdq.Input[1]);
        float inputScale = g.ActivationScale(node.Input[0]);
        var b = prepared.Floats(original.Input[2]);
        var bValues = g.Floats(bdq.Input[0]);
        for (int c = 0; c < channels; c++)
        {
            double expectedScale = (double)inputScale * wScales[c];
            Assert.True(Math.Abs(bScales[c] - expectedScale) <= 1e-6 * expectedScale, $"{layer} bias scale {c}: {bScales[c]} vs {expectedScale}");
            Assert.Equal(Math.Round(b[c] / (double)bScales[c], MidpointRounding.ToEven), bValues[c]);
        }
    }

    [Fact]
    public void ActivationScales_ComeFromTheCalibratedRanges()
    {
        var g = new QdqGraph(_f.Quantized);
        var (qmin, qmax) = QuantMath.Limits(QuantType.UInt8);
        foreach (var s in _f.Statistics.Where(s => !_f.Plan.SharedOutputs.ContainsKey(s.Tensor)))
        {
            var qNode = _f.Quantized.Graph.Node.Single(n => n.OpType == "QuantizeLinear" && (n.Input[0] == s.Tensor || n.Input[0] == s.Tensor + "_float"));
            float scale = g.Floats(qNode.Input[1])[0];
            var zpTensor = g.Init(qNode.Input[2]);
            Assert.Equal((int)OnnxDataType.UInt8, zpTensor.DataType);
            int zp = (int)g.Floats(qNode.Input[2])[0];
            double lo = Math.Min(s.RangeMin, 0), hi = Math.Max(s.RangeMax, 0);
            Assert.True(Math.Abs(scale - (hi - lo) / (qmax - qmin)) <= 1e-6 * scale, $"{s.Tensor}: scale {scale} for range [{lo},{hi}]");
            Assert.True(Math.Abs(zp - (qmin - lo / scale)) <= 0.5 + 1e-3, $"{s.Tensor}: zero point {zp} for range [{lo},{hi}]");
        }
        // Flatten passes its input's parameters through: the same scale on both sides.
        Assert.Equal(g.ActivationScale(g.Node("flatten").Input[0]), g.ActivationScale(g.Node("gemm").Input[0]));
    }

    [Fact]
    public void QuantizingTwice_GivesIdenticalBytes()
    {
        // Calibration again on the same data gives the same statistics, and quantization the same file.
        var stats = ActivationCalibrator.Run(_f.Prepared, _f.Plan.Activations, _f.Calibration, 1, null, CancellationToken.None);
        Assert.Equal(_f.Statistics.Select(s => (s.Tensor, s.RangeMin, s.RangeMax)), stats.Select(s => (s.Tensor, s.RangeMin, s.RangeMax)));
        var again = _f.Dir.File("again.int8.onnx");
        var prepared = ModelPreparer.Prepare(_f.FloatPath);
        var result = QuantizationPipeline.Run(prepared, stats, TinyModel.Options(), again, CancellationToken.None);
        Assert.Equal(File.ReadAllBytes(_f.QuantizedPath), File.ReadAllBytes(again));
        Assert.Equal(_f.Result.OutputSha256, result.OutputSha256);
    }

    [Fact]
    public void SelectedSubset_LeavesTheOtherLayersInFloat()
    {
        var plan = QuantizationPlan.Create(new GraphView(_f.Prepared.Model.Graph), new HashSet<string> { "conv1" });
        Assert.Equal(new[] { "conv1" }, plan.QuantizedLayers);
        Assert.Equal(new[] { "r1", "x" }, plan.Activations.Keys.OrderBy(k => k, StringComparer.Ordinal));
        var stats = ActivationCalibrator.Run(_f.Prepared, plan.Activations, _f.Calibration, 1, null, CancellationToken.None);
        var path = _f.Dir.File("subset.int8.onnx");
        var result = QuantizationPipeline.Run(_f.Prepared, stats, _f.Options, path, CancellationToken.None);
        Assert.Equal(new[] { "conv1" }, result.QuantizedLayers);

        var g = new QdqGraph(OnnxModelIO.Load(path));
        Assert.NotNull(g.Dequantizer(g.Node("conv1").Input[1]));
        Assert.Equal("w2", g.Node("conv2").Input[1]);
        Assert.Equal("b2", g.Node("conv2").Input[2]);
        Assert.Equal("wg", g.Node("gemm").Input[1]);
        Assert.Equal((int)OnnxDataType.Float, g.Init("w2").DataType);
        Assert.Equal((int)OnnxDataType.Float, g.Init("wg").DataType);
        // Only the weight and bias of conv1 are dequantized constants.
        var constantDqs = g.Model.Graph.Node.Where(n => n.OpType == "DequantizeLinear" && g.View.IsInitializer(n.Input[0])).ToList();
        Assert.Equal(2, constantDqs.Count);
        Assert.Contains(result.Decisions, d => d.Layer == "conv2" && d.Reason.StartsWith("not in the pipeline", StringComparison.Ordinal));

        var report = ModelComparer.Compare(_f.FloatPath, path, _f.Evaluation, 1, 0, null, null, CancellationToken.None);
        _out.WriteLine($"conv1 only: cosine {report.Cosine} (min {report.Outputs[0].MinCosine}), SQNR {report.SqnrDb} dB");
        Assert.True(report.Cosine > 0.99, $"cosine {report.Cosine}");
    }

    [Fact]
    public void Int8SymmetricActivations_AndPerTensorWeights()
    {
        var options = new QuantizationOptions { SkipRules = TinyModel.SpeedRules, ActivationType = QuantType.Int8, ActivationSymmetric = true, PerChannel = false };
        var path = _f.Dir.File("sym.int8.onnx");
        QuantizationPipeline.Run(_f.Prepared, _f.Statistics, options, path, CancellationToken.None);
        var g = new QdqGraph(OnnxModelIO.Load(path));
        var wdq = g.Dequantizer(g.Node("conv2").Input[1])!;
        Assert.Single(g.Floats(wdq.Input[1]));
        Assert.DoesNotContain(wdq.Attribute, a => a.Name == "axis");
        foreach (var qn in g.Model.Graph.Node.Where(n => n.OpType == "QuantizeLinear"))
        {
            Assert.Equal((int)OnnxDataType.Int8, g.Init(qn.Input[2]).DataType);
            Assert.Equal(0f, g.Floats(qn.Input[2])[0]);
        }
        var report = ModelComparer.Compare(_f.FloatPath, path, _f.Evaluation, 1, 0, null, null, CancellationToken.None);
        _out.WriteLine($"int8 symmetric, per-tensor: cosine {report.Cosine} (min {report.Outputs[0].MinCosine}), SQNR {report.SqnrDb} dB");
        Assert.True(report.Cosine > 0.98, $"cosine {report.Cosine}");

        Check.Throws("InvalidOptionCombination", () => QuantizationPipeline.Run(_f.Prepared, _f.Statistics,
            new QuantizationOptions { SkipRules = TinyModel.SpeedRules, ActivationType = QuantType.UInt8, ActivationSymmetric = true }, _f.Dir.File("never.onnx"), CancellationToken.None));
        Assert.False(File.Exists(_f.Dir.File("never.onnx")));
    }

    static TensorStatistics Copy(TensorStatistics s) => new()
    {
        ModelPath = s.ModelPath, ModelSha256 = s.ModelSha256, Tensor = s.Tensor, Layers = s.Layers, Method = s.Method, Min = s.Min,
        Max = s.Max, Mean = s.Mean, Std = s.Std, SampleCount = s.SampleCount, ElementCount = s.ElementCount, RangeMin = s.RangeMin, RangeMax = s.RangeMax,
    };

    [Fact]
    public void StatisticsOfAnotherModel_AreRefused()
    {
        var stats = _f.Statistics.Select(Copy).ToList();
        stats[1].ModelSha256 = new string('A', 64);
        var path = _f.Dir.File("mismatch.onnx");
        var ex = Check.Throws("StatisticsModelMismatch", () => QuantizationPipeline.Run(_f.Prepared, stats, _f.Options, path, CancellationToken.None));
        Assert.Equal(stats[1].Tensor, ex.Target);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void MissingRange_IsRefused()
    {
        // Drop the statistics of a tensor whose layers are still selected through other statistics.
        var dropped = _f.Statistics.First(s => s.Layers.All(l => _f.Statistics.Any(o => o != s && o.Layers.Contains(l))));
        var stats = _f.Statistics.Where(s => s != dropped).ToList();
        var path = _f.Dir.File("missing.onnx");
        var ex = Check.Throws("MissingActivationRange", () => QuantizationPipeline.Run(_f.Prepared, stats, _f.Options, path, CancellationToken.None));
        Assert.Equal(dropped.Tensor, ex.Target);
        Assert.False(File.Exists(path));

        var nonFinite = _f.Statistics.Select(Copy).ToList();
        nonFinite[0].RangeMax = float.NaN;
        Check.Throws("RangeNotFinite", () => QuantizationPipeline.Run(_f.Prepared, nonFinite, _f.Options, path, CancellationToken.None));
    }

    [Fact]
    public void BatchNormalization_IsFoldedByPreparation()
    {
        var path = TinyModels.ConvBatchNorm().Save(_f.Dir.File("convbn.onnx"));
        var original = OnnxModelIO.Load(path);
        var prepared = ModelPreparer.Prepare(path);
        Assert.Contains(original.Graph.Node, n => n.OpType == "BatchNormalization");
        Assert.DoesNotContain(prepared.Model.Graph.Node, n => n.OpType == "BatchNormalization");
        Assert.Contains(prepared.Model.Graph.Node, n => n.OpType == "Conv" && n.Input.Count == 3);   // the BN shift became the bias
        var random = new Random(200);
        for (int i = 0; i < 4; i++)
        {
            var x = TinyModels.RandomInput(random);
            var expected = Ort.Run(original, TinyModels.Input, x, TinyModels.InputShape)["y"];
            var actual = Ort.Run(prepared.Model, TinyModels.Input, x, TinyModels.InputShape)["y"];
            Assert.Contains(expected, v => v > 0);
            Check.Close(expected, actual, 1e-4, "BatchNormalization folded");
        }
    }
}
