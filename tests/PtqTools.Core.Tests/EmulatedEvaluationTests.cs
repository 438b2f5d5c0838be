using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>
/// Evaluation with a target CPU class (-Target): the quantized model computed by the engine emulating that class's
/// ONNX Runtime int8 arithmetic. A conv whose full-range int8 weights are large and of one sign in many adjacent
/// pairs, fed activations up to 255, saturates the int16 pair sums of AVX2/AVX-512BW (vpmaddubsw); with reduced-range
/// (7-bit) weights no pair can (2 x 255 x 64 = 32640). Nothing here depends on the CPU the tests run on: both
/// arithmetics are the engine's, on any host.
/// </summary>
public class EmulatedEvaluationTests
{
    readonly ITestOutputHelper _out;
    public EmulatedEvaluationTests(ITestOutputHelper output) { _out = output; }

    static readonly long[] Shape = { 1, 16, 8, 8 };

    /// <summary>x[1,16,8,8] in [0, 1] -> Conv 3x3 (8 filters, weights of magnitude 0.7 to 1 and random sign) -> Relu ->
    /// GlobalAveragePool -> Flatten -> Gemm -> y[1,10].</summary>
    internal static ModelBuilder SaturatingCnn()
    {
        var r = new Random(11);
        var w = Enumerable.Range(0, 8 * 16 * 9).Select(_ => (float)((0.7 + 0.3 * r.NextDouble()) * (r.Next(2) == 0 ? -1 : 1))).ToArray();
        return new ModelBuilder(13, 7, "saturating")
            .Input("x", Shape)
            .Init("w", w, 8, 16, 3, 3).RandomInit(r, "b", 0.2f, 8)
            .RandomInit(r, "wg", 0.5f, 8, 10).RandomInit(r, "bg", 0.2f, 10)
            .Node("Conv", new[] { "x", "w", "b" }, new[] { "c" }, "conv", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Relu", new[] { "c" }, new[] { "r" }, "relu")
            .Node("GlobalAveragePool", new[] { "r" }, new[] { "g" }, "gap")
            .Node("Flatten", new[] { "g" }, new[] { "f" }, "flatten")
            .Node("Gemm", new[] { "f", "wg", "bg" }, new[] { "y" }, "gemm")
            .Output("y", 1, 10);
    }

    static float[] Input(Random random) => Enumerable.Range(0, 16 * 64).Select(_ => (float)random.NextDouble()).ToArray();

    static (PreparedModel Prepared, List<TensorStatistics> Stats, PtqDataSet Evaluation) Setup(TempDir dir)
    {
        TestPaths.UseTempCache();
        var prepared = ModelPreparer.Prepare(SaturatingCnn().Save(dir.File("m.onnx")));
        var random = new Random(5);
        var samples = Enumerable.Range(0, 20).Select(_ => Input(random)).ToArray();
        var calibration = DataSetReader.FromArrays(samples[..8], new[] { 16, 8, 8 }, null, new PtqDataSet());
        var evaluation = DataSetReader.FromArrays(samples[8..], new[] { 16, 8, 8 }, null, new PtqDataSet());
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, calibration, 1, null, default);
        return (prepared, stats, evaluation);
    }

    static readonly EngineTarget Avx2 = new(QuantTarget.Avx2), Vnni = new(QuantTarget.Vnni);

    /// <summary>Full-range weights (written for an exact class), whose pairs saturate on AVX2; the default target
    /// (Portable) writes weights whose pairs never do.</summary>
    static QuantizationOptions FullRange => new() { Target = QuantTarget.Vnni, SkipRules = TinyModel.SpeedRules };

    [Fact]
    public void Comparer_Avx2TargetLosesCosineToSaturation_AndMatchesVnniWithReducedRangeWeights()
    {
        using var dir = new TempDir();
        var (prepared, stats, eval) = Setup(dir);
        var full = QuantizationPipeline.Run(prepared, stats, FullRange, dir.File("q8.onnx"), default).OutputPath;
        var reduced = QuantizationPipeline.Run(prepared, stats, new QuantizationOptions { SkipRules = TinyModel.SpeedRules, ReduceRange = true }, dir.File("q7.onnx"), default).OutputPath;
        AccuracyReport Compare(string q, EngineTarget? target) => ModelComparer.Compare(prepared.SourcePath, q, eval, 1, 0, null, null, default, target: target);

        var vnni = Compare(full, Vnni);
        var avx2 = Compare(full, Avx2);
        _out.WriteLine($"full range: Vnni cosine {vnni.Cosine} SQNR {vnni.SqnrDb} dB; Avx2 cosine {avx2.Cosine} SQNR {avx2.SqnrDb} dB");
        Assert.Equal("Vnni", vnni.Target);
        Assert.Equal("Avx2", avx2.Target);
        Assert.True(avx2.Cosine < vnni.Cosine - 1e-4, $"Avx2 {avx2.Cosine} vs Vnni {vnni.Cosine}");
        Assert.True(avx2.SqnrDb < vnni.SqnrDb - 3, $"Avx2 {avx2.SqnrDb} dB vs Vnni {vnni.SqnrDb} dB");

        var vnni7 = Compare(reduced, Vnni);
        var avx27 = Compare(reduced, Avx2);
        _out.WriteLine($"reduced range: Vnni cosine {vnni7.Cosine} SQNR {vnni7.SqnrDb} dB; Avx2 cosine {avx27.Cosine} SQNR {avx27.SqnrDb} dB");
        Assert.Equal(vnni7.Cosine, avx27.Cosine);
        Assert.Equal(vnni7.SqnrDb, avx27.SqnrDb);
        Assert.Equal(vnni7.Outputs[0].MaxAbsError, avx27.Outputs[0].MaxAbsError);

        // Without a target ONNX Runtime computes the quantized outputs on this host: the report says so with "".
        Assert.Equal("", Compare(full, null).Target);
    }

    [Fact]
    public void Comparer_TheEngineReadsOutputsInOnnxRuntimesOrder()
    {
        // Exact engine sums against ONNX Runtime's own run of the reduced-range model (no pair saturates, so every
        // host's ONNX Runtime computes the same int32 sums): the figures agree closely.
        using var dir = new TempDir();
        var (prepared, stats, eval) = Setup(dir);
        var reduced = QuantizationPipeline.Run(prepared, stats, new QuantizationOptions { SkipRules = TinyModel.SpeedRules, ReduceRange = true }, dir.File("q7.onnx"), default).OutputPath;
        var ort = ModelComparer.Compare(prepared.SourcePath, reduced, eval, 1, 0, null, null, default);
        var engine = ModelComparer.Compare(prepared.SourcePath, reduced, eval, 1, 0, null, null, default, target: Vnni);
        _out.WriteLine($"ONNX Runtime cosine {ort.Cosine} SQNR {ort.SqnrDb}; engine (Vnni) cosine {engine.Cosine} SQNR {engine.SqnrDb}");
        Assert.Equal(ort.Outputs.Select(o => o.Output), engine.Outputs.Select(o => o.Output));
        Assert.Equal(ort.Cosine, engine.Cosine, 3);
        Assert.InRange(engine.SqnrDb, ort.SqnrDb - 1, ort.SqnrDb + 1);
    }

    [Fact]
    public void LayerError_Avx2TargetNamesTheSaturatingConvWorse()
    {
        using var dir = new TempDir();
        var (prepared, stats, eval) = Setup(dir);
        List<LayerError> Run(EngineTarget? target, QuantizationOptions? options = null) =>
            LayerErrorAnalyzer.Run(prepared, stats, options ?? FullRange, eval, 1, null, default, target);
        var vnni = Run(Vnni).ToDictionary(e => e.Layer);
        var avx2 = Run(Avx2).ToDictionary(e => e.Layer);
        var ort = Run(null).ToDictionary(e => e.Layer);
        foreach (var e in avx2.Values.OrderBy(e => e.Rank))
            _out.WriteLine($"{e.Layer} ({e.Tensor}): isolated Avx2 {e.IsolatedSqnrDb} / Vnni {vnni[e.Layer].IsolatedSqnrDb} / ORT {ort[e.Layer].IsolatedSqnrDb} dB; " +
                $"accumulated {e.AccumulatedSqnrDb} / {vnni[e.Layer].AccumulatedSqnrDb} / {ort[e.Layer].AccumulatedSqnrDb}; at output {e.IsolatedOutputSqnrDb} / {vnni[e.Layer].IsolatedOutputSqnrDb} / {ort[e.Layer].IsolatedOutputSqnrDb}");
        Assert.Equal(ort.Keys.OrderBy(k => k), avx2.Keys.OrderBy(k => k));
        Assert.All(avx2.Values, e => Assert.Equal("Avx2", e.Target));
        Assert.All(vnni.Values, e => Assert.Equal("Vnni", e.Target));
        Assert.All(ort.Values, e => Assert.Equal("", e.Target));

        // The conv saturates: worse by itself, in the whole model, and at the model's output; the first in the ranking.
        Assert.True(avx2["conv"].IsolatedSqnrDb < vnni["conv"].IsolatedSqnrDb - 3, $"conv isolated {avx2["conv"].IsolatedSqnrDb} vs {vnni["conv"].IsolatedSqnrDb}");
        Assert.True(avx2["conv"].AccumulatedSqnrDb < vnni["conv"].AccumulatedSqnrDb - 3);
        Assert.True(avx2["conv"].IsolatedOutputSqnrDb < vnni["conv"].IsolatedOutputSqnrDb - 3);
        Assert.Equal("conv", avx2.Values.Single(e => e.Rank == 1).Layer);
        // Layers without products compute the same on both, and with only themselves quantized see float inputs.
        foreach (var name in new[] { "gap", "flatten" })
        {
            Assert.Equal(vnni[name].IsolatedSqnrDb, avx2[name].IsolatedSqnrDb);
            Assert.Equal(vnni[name].IsolatedOutputSqnrDb, avx2[name].IsolatedOutputSqnrDb);
        }
        // Layers with products are compared at the op's own output (before the folded Relu and output rounding), as on
        // ONNX Runtime; without a saturating pair they compute what ONNX Runtime's unfused QDQ graph computes.
        Assert.Equal("c", avx2["conv"].Tensor);
        Assert.Equal("c", ort["conv"].Tensor);
        Assert.Equal("y", avx2["gemm"].Tensor);
        // The exact target means what ONNX Runtime's path (an unfused QDQ graph, float ops: the same on every host)
        // means, figure for figure: the same tensors, compared before output rounding where that path is.
        foreach (var (name, e) in vnni)
        {
            Assert.Equal(ort[name].Tensor, e.Tensor);
            Assert.Equal(ort[name].IsolatedSqnrDb, e.IsolatedSqnrDb, 1);
            Assert.Equal(ort[name].AccumulatedSqnrDb, e.AccumulatedSqnrDb, 1);
            Assert.Equal(ort[name].IsolatedOutputSqnrDb, e.IsolatedOutputSqnrDb, 1);
        }
        // gemm writes the model's output (renamed in the QDQ graph): both views compare its dequantized value.
        Assert.Equal(avx2["gemm"].IsolatedSqnrDb, avx2["gemm"].IsolatedOutputSqnrDb, 3);
        // The weight and activation errors do not depend on the arithmetic.
        Assert.Equal(ort["conv"].WeightSqnrDb, avx2["conv"].WeightSqnrDb);
        Assert.Equal(ort["conv"].ActivationSqnrDb, avx2["conv"].ActivationSqnrDb);

        // Reduced-range weights never saturate: both targets give the same figures for every layer.
        var options7 = new QuantizationOptions { SkipRules = TinyModel.SpeedRules, ReduceRange = true };
        var vnni7 = Run(Vnni, options7).ToDictionary(e => e.Layer);
        var avx27 = Run(Avx2, options7).ToDictionary(e => e.Layer);
        foreach (var (name, e) in avx27)
        {
            Assert.Equal(vnni7[name].IsolatedSqnrDb, e.IsolatedSqnrDb);
            Assert.Equal(vnni7[name].AccumulatedSqnrDb, e.AccumulatedSqnrDb);
            Assert.Equal(vnni7[name].IsolatedOutputSqnrDb, e.IsolatedOutputSqnrDb);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LayerError_ExactTargetGivesOnnxRuntimesFigures_OnAResidualCnn(bool damaged)
    {
        // relu1's output feeds conv2 and the residual add: with only add quantized, conv2 (float) reads the quantized
        // copy too, so add's inputs are not the float model's. Both views must see the one-layer model's values.
        using var dir = new TempDir();
        TestPaths.UseTempCache();
        var builder = damaged ? LayerErrorTests.DamagedCnn() : TinyModels.ResidualCnn(3);
        var prepared = ModelPreparer.Prepare(builder.Save(dir.File("m.onnx")));
        var random = new Random(8);
        var samples = Enumerable.Range(0, 12).Select(_ => TinyModels.RandomInput(random)).ToArray();
        var calibration = DataSetReader.FromArrays(samples[..8], new[] { 3, 8, 8 }, null, new PtqDataSet());
        var evaluation = DataSetReader.FromArrays(samples[8..], new[] { 3, 8, 8 }, null, new PtqDataSet());
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, calibration, 1, null, default);
        var ort = LayerErrorAnalyzer.Run(prepared, stats, TinyModel.Options(), evaluation, 1, null, default).ToDictionary(e => e.Layer);
        var vnni = LayerErrorAnalyzer.Run(prepared, stats, TinyModel.Options(), evaluation, 1, null, default, Vnni);
        foreach (var e in vnni)
        {
            var o = ort[e.Layer];
            _out.WriteLine($"{e.Layer} ({e.Tensor}): isolated {e.IsolatedSqnrDb} / {o.IsolatedSqnrDb}, at output {e.IsolatedOutputSqnrDb} / {o.IsolatedOutputSqnrDb}, accumulated {e.AccumulatedSqnrDb} / {o.AccumulatedSqnrDb}");
            Assert.Equal(o.Tensor, e.Tensor);
            Assert.Equal(o.Rank, e.Rank);
            Assert.Equal(o.IsolatedSqnrDb, e.IsolatedSqnrDb, 1);
            Assert.Equal(o.IsolatedOutputSqnrDb, e.IsolatedOutputSqnrDb, 1);
            Assert.InRange(e.AccumulatedSqnrDb, o.AccumulatedSqnrDb - 0.5, o.AccumulatedSqnrDb + 0.5);
        }
    }

    [Fact]
    public void Inference_TargetGoesWithThePtqToolsEngineOnly()
    {
        using var dir = new TempDir();
        var (prepared, stats, eval) = Setup(dir);
        var full = QuantizationPipeline.Run(prepared, stats, FullRange, dir.File("q8.onnx"), default).OutputPath;
        // Refused at the call, before any sample is read.
        Check.Throws("InvalidOptionCombination", () => ModelInference.Run(full, eval, InferenceEngine.OnnxRuntime, 1, null, default, Avx2));
        var exact = ModelInference.Run(full, eval, InferenceEngine.PtqTools, 1, null, default).ToList();
        var vnni = ModelInference.Run(full, eval, InferenceEngine.PtqTools, 1, null, default, Vnni).ToList();
        var avx2 = ModelInference.Run(full, eval, InferenceEngine.PtqTools, 1, null, default, Avx2).ToList();
        Assert.All(exact, r => Assert.Equal("", r.Target));
        Assert.All(avx2, r => Assert.Equal("Avx2", r.Target));
        Assert.Equal(exact.SelectMany(r => r.Outputs[0]), vnni.SelectMany(r => r.Outputs[0]));
        Assert.NotEqual(exact.SelectMany(r => r.Outputs[0]), avx2.SelectMany(r => r.Outputs[0]));
        // The same outputs as the engine itself computes with those options.
        var engine = new IntegerEngine(OnnxModelIO.Load(full), Avx2.Options);
        using var reader = new SampleReader(eval);
        var direct = reader.Read(default).Select(s => engine.Run(EngineParity.Feed(engine, s))["y"].ToFloats()).ToList();
        Assert.Equal(direct.SelectMany(v => v), avx2.SelectMany(r => r.Outputs[0]));
    }
}
