using Google.Protobuf;
using Onnx;
using PtqTools.Core.Data;
using PtqTools.Core.Onnx;
using PtqTools.Core.Pipeline;
using PtqTools.Core.Quantization;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using Xunit;

namespace PtqTools.Core.Tests;

public class PairedStatisticsTests
{
    [Fact]
    public void McNemarExactMatchesTheBinomialTail()
    {
        // b = 10, c = 2: p = 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096.
        Assert.Equal(2.0 * 79 / 4096, PairedStatistics.McNemarExact(10, 2), 12);
        Assert.Equal(PairedStatistics.McNemarExact(2, 10), PairedStatistics.McNemarExact(10, 2), 12);
        Assert.Equal(1.0, PairedStatistics.McNemarExact(0, 0));
        Assert.Equal(1.0, PairedStatistics.McNemarExact(5, 5));
        // Large counts do not overflow: a balanced split stays near 1, a lopsided one near 0.
        Assert.InRange(PairedStatistics.McNemarExact(3000, 3010), 0.9, 1.0);
        Assert.InRange(PairedStatistics.McNemarExact(3000, 2000), 0, 1e-20);
    }

    [Fact]
    public void BootstrapIntervalAgreesWithTheNormalIntervalOfPairedDifferences()
    {
        var random = new Random(3);
        int n = 4000;
        var f = new double[n];
        var q = new double[n];
        for (int i = 0; i < n; i++)
        {
            f[i] = random.NextDouble() < 0.9 ? 1 : 0;
            // The quantized model flips 3% of the answers: 2% right -> wrong, 1% wrong -> right.
            double u = random.NextDouble();
            q[i] = f[i] == 1 && u < 0.02 ? 0 : f[i] == 0 && u < 0.1 ? 1 : f[i];
        }
        var d = PairedStatistics.Compare("Top1Accuracy", f, q);
        var diffs = f.Zip(q, (a, b) => a - b).ToArray();
        double mean = diffs.Average(), sd = Math.Sqrt(diffs.Sum(x => (x - mean) * (x - mean)) / (n - 1)), se = sd / Math.Sqrt(n);
        Assert.Equal(mean, d.Drop, 12);
        Assert.Equal(f.Average(), d.Float, 12);
        Assert.InRange(d.DropLow!.Value, mean - 1.96 * se - 0.2 * se, mean - 1.96 * se + 0.2 * se);
        Assert.InRange(d.DropHigh!.Value, mean + 1.96 * se - 0.2 * se, mean + 1.96 * se + 0.2 * se);
        Assert.Equal(f.Zip(q).Count(p => p.First == 1 && p.Second == 0), d.FloatOnly);
        Assert.Equal(f.Zip(q).Count(p => p.First == 0 && p.Second == 1), d.QuantizedOnly);
        Assert.NotNull(d.McNemarPValue);
    }

    [Fact]
    public void IdenticalScoresGiveAZeroDropThatIsNotSignificant()
    {
        var s = Enumerable.Range(0, 100).Select(i => (double)(i % 3 == 0 ? 0 : 1)).ToArray();
        var d = PairedStatistics.Compare("x", s, s);
        Assert.Equal(0, d.Drop);
        Assert.Equal(0, d.DropLow);
        Assert.Equal(0, d.DropHigh);
        Assert.False(d.Significant);
        Assert.Equal(1.0, d.McNemarPValue);
    }

    [Fact]
    public void NonBinaryScoresGetAnIntervalButNoMcNemar()
    {
        var f = new[] { 0.5, 0.7, 0.9, 0.4 };
        var q = new[] { 0.4, 0.6, 0.9, 0.1 };
        var d = PairedStatistics.Compare("score", f, q);
        Assert.Null(d.McNemarPValue);
        Assert.True(d.DropLow <= d.Drop && d.Drop <= d.DropHigh);
        Check.Throws("MetricLengthMismatch", () => PairedStatistics.Compare("score", f, q[..3]));
        Check.Throws("MetricNotFinite", () => PairedStatistics.Compare("score", new[] { double.NaN }, new[] { 1.0 }));
    }
}

public class TaskMetricsTests
{
    [Fact]
    public void KnnMatchesTheScalarReference()
    {
        var random = new Random(5);
        int n = 120, dim = 19;
        var labels = Enumerable.Range(0, n).Select(i => i % 4).ToArray();
        labels[7] = -1;
        // Clusters per label plus noise, so that the answer is neither all right nor all wrong.
        var centers = Enumerable.Range(0, 4).Select(_ => Check.RandomFloats(random, dim)).ToArray();
        var x = labels.Select(l => centers[Math.Max(0, l)].Zip(Check.RandomFloats(random, dim, 2.5f), (c, e) => c + e).ToArray()).ToArray();
        foreach (var k in new[] { 1, 4, 5 })
        {
            var fast = TaskMetrics.KnnCorrect(x, labels, k);
            var reference = TaskMetrics.KnnCorrectReference(x, labels, k);
            Assert.Equal(reference, fast);
            Assert.InRange(fast.Average(), 0.3, 0.99);
            Assert.Equal(0, fast[7]);
        }
        Check.Throws("InvalidOption", () => TaskMetrics.KnnCorrect(x, labels, 0));
        Check.Throws("MetricLengthMismatch", () => TaskMetrics.KnnCorrect(x, labels[..5], 3));
    }

    [Fact]
    public void EmbeddingMetricsMatchDirectComputations()
    {
        // Two samples of 3 and 2 tokens of width 2.
        var hidden = new[] { new float[] { 1, 2, 3, 4, 5, 6 }, new float[] { -1, 0, 1, 2 } };
        var pooled = TaskMetrics.MeanPooled(hidden, 2);
        Assert.Equal(new float[] { 3, 4 }, pooled[0]);
        Assert.Equal(new float[] { 0, 1 }, pooled[1]);
        Check.Throws("MetricLengthMismatch", () => TaskMetrics.MeanPooled(new[] { new float[] { 1, 2, 3 } }, 2));
        // Cosine to a reference: (3,4) vs (4,3) is 24/25; (0,1) vs (0,2) is 1.
        var cos = TaskMetrics.CosineToReference(hidden, new[] { new float[] { 4, 3 }, new float[] { 0, 2 } }, 2);
        Assert.Equal(24.0 / 25, cos[0], 6);
        Assert.Equal(1.0, cos[1], 6);

        var random = new Random(5);
        var a = Enumerable.Range(0, 12).Select(_ => Enumerable.Range(0, 8).Select(_ => (float)random.NextDouble() - 0.5f).ToArray()).ToArray();
        var noisy = a.Select(r => r.Select(v => v + (float)(random.NextDouble() - 0.5) * 0.3f).ToArray()).ToArray();
        // Same embeddings, and embeddings scaled per sample (cosines unchanged): the same order of all pairs.
        Assert.Equal(1.0, TaskMetrics.PairwiseSpearman(a, a), 9);
        Assert.Equal(1.0, TaskMetrics.PairwiseSpearman(a.Select((r, i) => r.Select(v => v * (i + 1)).ToArray()).ToArray(), a), 9);
        // Against the textbook formula 1 - 6 sum d^2 / (n (n^2 - 1)), exact without ties.
        static double[] Sims(float[][] e)
        {
            var list = new List<double>();
            for (int i = 0; i < e.Length; i++)
                for (int j = i + 1; j < e.Length; j++)
                {
                    double dot = 0, x = 0, y = 0;
                    for (int k = 0; k < e[i].Length; k++) { dot += e[i][k] * e[j][k]; x += e[i][k] * e[i][k]; y += e[j][k] * e[j][k]; }
                    list.Add(dot / Math.Sqrt(x * y));
                }
            return list.ToArray();
        }
        var sa = Sims(noisy); var sb = Sims(a);
        var ra = sa.Select(v => sa.Count(w => w < v) + 1.0).ToArray();
        var rb = sb.Select(v => sb.Count(w => w < v) + 1.0).ToArray();
        double n = sa.Length, d2 = ra.Zip(rb, (x, y) => (x - y) * (x - y)).Sum();
        double expected = 1 - 6 * d2 / (n * (n * n - 1));
        Assert.Equal(expected, TaskMetrics.PairwiseSpearman(noisy, a), 3);
        Assert.InRange(expected, 0.3, 0.999);
    }

    [Fact]
    public void TopKCountsTiesAgainstTheLabel()
    {
        var scores = new[] { new[] { 0.1f, 0.9f, 0.5f, 0.3f }, new[] { 1f, 1f, 0f, 0f } };
        Assert.Equal(new double[] { 1, 0 }, TaskMetrics.TopKCorrect(scores, new[] { 1, 1 }, 1));
        Assert.Equal(new double[] { 1, 1 }, TaskMetrics.TopKCorrect(scores, new[] { 2, 1 }, 2));
        Assert.Equal(new double[] { 0, 0 }, TaskMetrics.TopKCorrect(scores, new[] { 0, -1 }, 2));
    }
}

public class ModelComparerTests
{
    [Fact]
    public void ReportsTopKAgreementPairedDropAndATaskMetric()
    {
        using var dir = new TempDir();
        // Two variants of the tiny CNN without class bias (so the answer depends on the input), the second with
        // noise on the classifier weights: the "quantized" model then disagrees on some samples.
        string Variant(string file, float noise)
        {
            var model = TinyModels.ResidualCnn(1).Model;
            var noiseRandom = new Random(4);
            foreach (var name in new[] { "wg", "bg" })
            {
                var t = model.Graph.Initializer.First(i => i.Name == name);
                var values = TensorData.ReadFloats(t);
                for (int i = 0; i < values.Length; i++)
                    values[i] = name == "bg" ? 0 : values[i] + noise * (float)(noiseRandom.NextDouble() * 2 - 1);
                model.Graph.Initializer.Remove(t);
                model.Graph.Initializer.Add(TensorData.FromFloats(name, values, t.Dims.ToArray()));
            }
            File.WriteAllBytes(dir.File(file), model.ToByteArray());
            return dir.File(file);
        }
        var floatPath = Variant("f.onnx", 0);
        var otherPath = Variant("q.onnx", 0.3f);

        var random = new Random(9);
        int n = 60;
        var samples = Enumerable.Range(0, n).Select(_ => TinyModels.RandomInput(random)).ToArray();
        var labels = Enumerable.Range(0, n).Select(i => i % TinyModels.Classes).ToArray();
        var data = DataSetReader.FromArrays(samples, new[] { 3, 8, 8 }, labels, new PtqDataSet());
        float[][]? seenFloat = null;
        int calls = 0;
        TaskMetric metric = (outputs, l) =>
        {
            calls++;
            seenFloat ??= outputs;
            Assert.Equal(labels, l);
            return TaskMetrics.TopKCorrect(outputs, l, 3);
        };
        var report = ModelComparer.Compare(floatPath, otherPath, data, 1, 0, null, null, default, metric, "top3");

        // Independent figures from ONNX Runtime directly.
        var f = samples.Select(s => Ort.Run(File.ReadAllBytes(floatPath), TinyModels.Input, s, TinyModels.InputShape)["y"]).ToArray();
        var q = samples.Select(s => Ort.Run(File.ReadAllBytes(otherPath), TinyModels.Input, s, TinyModels.InputShape)["y"]).ToArray();
        double Top(float[][] o, int k) => o.Select((row, i) => RankOf(row, labels[i]) < k ? 1.0 : 0).Average();
        Assert.Equal(2, calls);
        Assert.Equal(n, seenFloat!.Length);
        Assert.Equal(Math.Round(Top(f, 1), 6), report.FloatAccuracy!.Value, 5);
        Assert.Equal(Math.Round(Top(q, 1), 6), report.QuantizedAccuracy!.Value, 5);
        Assert.Equal(Math.Round(Top(f, 5), 6), report.FloatTop5Accuracy!.Value, 5);
        Assert.Equal(Math.Round(Top(q, 5), 6), report.QuantizedTop5Accuracy!.Value, 5);
        Assert.Equal(Top(f, 1) - Top(q, 1), report.AccuracyDrop!.Drop, 5);
        Assert.Equal("top3", report.MetricName);
        Assert.Equal(Top(f, 3), report.FloatMetric!.Value, 5);
        Assert.Equal(Top(q, 3), report.QuantizedMetric!.Value, 5);
        Assert.True(report.MetricDrop!.DropLow <= report.MetricDrop.Drop && report.MetricDrop.Drop <= report.MetricDrop.DropHigh);
        double agree = f.Zip(q, (a, b) => ArgMax(a) == ArgMax(b) ? 1.0 : 0).Average();
        Assert.Equal(Math.Round(agree, 6), report.Top1Agreement!.Value, 5);
        Assert.InRange(agree, 0.05, 0.95);
        double mse = f.Zip(q, (a, b) => a.Zip(b, (x, y) => (double)(x - y) * (x - y)).Sum()).Sum() / (n * TinyModels.Classes);
        Assert.Equal(mse, report.Outputs[0].Mse, 4);
    }

    [Fact]
    public void AMetricOfTheWrongLengthIsRefused()
    {
        using var dir = new TempDir();
        var path = TinyModels.ResidualCnn(1).Save(dir.File("f.onnx"));
        var random = new Random(1);
        var data = DataSetReader.FromArrays(Enumerable.Range(0, 4).Select(_ => TinyModels.RandomInput(random)).ToArray(), new[] { 3, 8, 8 }, null, new PtqDataSet());
        Check.Throws("MetricLengthMismatch", () => ModelComparer.Compare(path, path, data, 1, 0, null, null, default, (o, l) => new double[3], "bad"));
        var single = ModelComparer.Compare(path, path, data, 1, 0, null, null, default, (o, l) => new[] { 0.5 }, "one");
        Assert.Equal(0, single.MetricDrop!.Drop);
        Assert.Null(single.MetricDrop.DropLow);
        Assert.Null(single.AccuracyDrop);
    }

    static int ArgMax(float[] v) => Array.IndexOf(v, v.Max());

    static int RankOf(float[] row, int label) => row.Where((v, i) => i != label && (v > row[label] || (v == row[label] && i < label))).Count();
}

public class LayerErrorTests
{
    /// <summary>The residual CNN with conv2 damaged: conv1's channel 0 is always 0 (zero weights, bias -1, Relu), and
    /// conv2 gives that dead channel weights of 1000. They change nothing in float, but they set conv2's per-channel
    /// weight scales so high that all its real weights round to zero in int8.</summary>
    internal static ModelBuilder DamagedCnn()
    {
        var b = TinyModels.ResidualCnn(1);
        var graph = b.Model.Graph;
        void Edit(string name, Action<float[], long[]> edit)
        {
            var t = graph.Initializer.First(i => i.Name == name);
            var values = TensorData.ReadFloats(t);
            var dims = t.Dims.ToArray();
            edit(values, dims);
            graph.Initializer.Remove(t);
            graph.Initializer.Add(TensorData.FromFloats(name, values, dims));
        }
        Edit("w1", (v, d) => { for (int i = 0; i < 27; i++) v[i] = 0; });
        Edit("b1", (v, d) => v[0] = -1);
        Edit("w2", (v, d) => { for (int o = 0; o < 8; o++) for (int k = 0; k < 9; k++) v[o * 72 + k] = 1000; });
        return b;
    }

    static (PreparedModel, List<TensorStatistics>, PtqDataSet) Setup(TempDir dir, ModelBuilder builder)
    {
        TestPaths.UseTempCache();
        var path = builder.Save(dir.File("m.onnx"));
        var prepared = ModelPreparer.Prepare(path);
        var random = new Random(2);
        var samples = Enumerable.Range(0, 12).Select(_ => TinyModels.RandomInput(random)).ToArray();
        var calibration = DataSetReader.FromArrays(samples[..8], new[] { 3, 8, 8 }, null, new PtqDataSet());
        var evaluation = DataSetReader.FromArrays(samples[8..], new[] { 3, 8, 8 }, null, new PtqDataSet());
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var stats = Calibration.ActivationCalibrator.Run(prepared, plan.Activations, calibration, 1, null, default);
        return (prepared, stats, evaluation);
    }

    [Fact]
    public void RanksTheDamagedLayerFirst()
    {
        using var dir = new TempDir();
        var (prepared, stats, eval) = Setup(dir, DamagedCnn());
        var errors = LayerErrorAnalyzer.Run(prepared, stats, TinyModel.Options(), eval, 1, null, default);
        Assert.Equal(new[] { "conv1", "conv2", "add", "gap", "flatten", "gemm" }.OrderBy(n => n), errors.Select(e => e.Layer).OrderBy(n => n));
        Assert.Equal("conv2", errors[0].Layer);
        Assert.Equal(1, errors[0].Rank);
        Assert.True(errors[0].IsolatedSqnrDb < 3, $"conv2 isolated SQNR {errors[0].IsolatedSqnrDb}");
        foreach (var e in errors.Skip(1)) Assert.True(e.IsolatedSqnrDb > 25, $"{e.Layer} isolated SQNR {e.IsolatedSqnrDb}");
        // The classifier is fine by itself but inherits conv2's damage in the whole quantized model.
        var gemm = errors.Single(e => e.Layer == "gemm");
        Assert.True(gemm.AccumulatedSqnrDb < gemm.IsolatedSqnrDb - 15, $"gemm {gemm.AccumulatedSqnrDb} vs {gemm.IsolatedSqnrDb}");
        // The weight SQNR alone misses it (the 1000s are exact and dominate the weight's energy): why isolated matters.
        Assert.True(errors[0].WeightSqnrDb > 30);
        Assert.Null(errors.Single(e => e.Layer == "add").WeightSqnrDb);
        Assert.All(errors, e => Assert.NotNull(e.ActivationSqnrDb));
        Assert.Equal(Enumerable.Range(1, errors.Count), errors.Select(e => e.Rank));
        // What conv2 alone costs the model's output is also the worst: the order the accuracy-aware search uses.
        Assert.Equal("conv2", errors.OrderBy(e => e.IsolatedOutputSqnrDb).First().Layer);
        Assert.True(errors[0].IsolatedOutputSqnrDb < 10, $"conv2 alone at the output: {errors[0].IsolatedOutputSqnrDb} dB");
        foreach (var e in errors.Skip(1)) Assert.True(e.IsolatedOutputSqnrDb > errors[0].IsolatedOutputSqnrDb + 15, $"{e.Layer} alone at the output: {e.IsolatedOutputSqnrDb} dB");
        // gemm's output is the model's output: both views compare the same tensor.
        var g = errors.Single(e => e.Layer == "gemm");
        Assert.Equal(g.IsolatedSqnrDb, g.IsolatedOutputSqnrDb, 6);
    }

    [Fact]
    public void AFloatConvBetweenQuantizedNeighboursStaysFloatInAnOptimizedSession()
    {
        // conv2 kept in float between quantized conv1 and add: ONNX Runtime's WeightBiasQuantization would quantize its
        // weight per tensor (which zeroes its real weights here) if it read the shared per-tensor DequantizeLinear.
        using var dir = new TempDir();
        var (prepared, stats, eval) = Setup(dir, DamagedCnn());
        var withoutConv2 = stats.Select(s => { s.Layers = s.Layers.Where(l => l != "conv2").ToArray(); return s; }).Where(s => s.Layers.Length > 0).ToList();
        var result = QuantizationPipeline.Run(prepared, withoutConv2, TinyModel.Options(), dir.File("q.onnx"), default);
        Assert.DoesNotContain("conv2", result.QuantizedLayers);
        Assert.Contains("conv1", result.QuantizedLayers);
        Assert.Contains("add", result.QuantizedLayers);
        var bytes = File.ReadAllBytes(result.OutputPath);
        var floatBytes = File.ReadAllBytes(prepared.PreparedPath);
        using var reader = new SampleReader(eval);
        foreach (var sample in reader.Read(default))
        {
            var asWritten = Ort.Run(bytes, TinyModels.Input, sample.Data, TinyModels.InputShape)["y"];
            var optimized = Ort.Run(bytes, TinyModels.Input, sample.Data, TinyModels.InputShape, Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_ALL)["y"];
            var fp32 = Ort.Run(floatBytes, TinyModels.Input, sample.Data, TinyModels.InputShape)["y"];
            // The optimized session computes what the ONNX semantics of the file say, and stays close to float.
            Assert.True(Check.Cosine(asWritten, optimized) > 0.9999, $"optimized vs as written: {Check.Cosine(asWritten, optimized)}");
            Assert.True(Check.Cosine(fp32, optimized) > 0.99, $"optimized vs float: {Check.Cosine(fp32, optimized)}");
        }
    }

    [Fact]
    public void WeightAndActivationErrorsMatchAScalarRoundTrip()
    {
        using var dir = new TempDir();
        var (prepared, stats, eval) = Setup(dir, TinyModels.ResidualCnn(1));
        var errors = LayerErrorAnalyzer.Run(prepared, stats, new QuantizationOptions { SkipRules = TinyModel.SpeedRules, PerChannel = false }, eval, 1, null, default);
        // gemm's weight wg [8, 10], per tensor: scale = max|w| / 127, round half to even.
        var wg = TensorData.ReadFloats(prepared.Model.Graph.Initializer.First(t => t.Name == "wg"));
        double scale = wg.Max(Math.Abs) / 127.0, signal = 0, noise = 0;
        foreach (var w in wg)
        {
            double dq = Math.Round(w / (float)scale, MidpointRounding.ToEven) * (float)scale;
            signal += (double)w * w;
            noise += (w - dq) * (w - dq);
        }
        Assert.Equal(10 * Math.Log10(signal / noise), errors.Single(e => e.Layer == "gemm").WeightSqnrDb!.Value, 1);
        // Quantizing nothing but a pass-through layer changes nothing but its input's rounding: SQNR stays finite and high.
        Assert.InRange(errors.Single(e => e.Layer == "flatten").IsolatedSqnrDb, 20, 200);
        Assert.All(errors, e => Assert.True(e.AccumulatedSqnrDb <= e.IsolatedSqnrDb + 6, $"{e.Layer}: {e.AccumulatedSqnrDb} vs {e.IsolatedSqnrDb}"));
    }
}

public class AccuracyAwareSearchTests
{
    /// <summary>The damaged CNN, calibration data, and evaluation data labelled with the float model's own answers
    /// (so float accuracy is 100% and every drop is the quantization's).</summary>
    static (PreparedModel, List<TensorStatistics>, PtqDataSet) Setup(TempDir dir)
    {
        TestPaths.UseTempCache();
        // Without the class bias the answer depends on the input, so damage shows in the accuracy.
        var builder = LayerErrorTests.DamagedCnn();
        var bg = builder.Graph.Initializer.First(t => t.Name == "bg");
        builder.Graph.Initializer.Remove(bg);
        builder.Init("bg", new float[TinyModels.Classes], TinyModels.Classes);
        var path = builder.Save(dir.File("m.onnx"));
        var prepared = ModelPreparer.Prepare(path);
        var random = new Random(7);
        var samples = Enumerable.Range(0, 48).Select(_ => TinyModels.RandomInput(random)).ToArray();
        var bytes = File.ReadAllBytes(path);
        var labels = samples[8..].Select(s => { var y = Ort.Run(bytes, TinyModels.Input, s, TinyModels.InputShape)["y"]; return Array.IndexOf(y, y.Max()); }).ToArray();
        var calibration = DataSetReader.FromArrays(samples[..8], new[] { 3, 8, 8 }, null, new PtqDataSet());
        var evaluation = DataSetReader.FromArrays(samples[8..], new[] { 3, 8, 8 }, labels, new PtqDataSet());
        evaluation.ClassCount = TinyModels.Classes;
        var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
        var stats = Calibration.ActivationCalibrator.Run(prepared, plan.Activations, calibration, 1, null, default);
        return (prepared, stats, evaluation);
    }

    [Fact]
    public void KeepsTheDamagedLayerInFloatUntilTheGoalIsMet()
    {
        using var dir = new TempDir();
        var (prepared, stats, eval) = Setup(dir);
        var output = dir.File("out.onnx");
        var plain = ModelComparer.Compare(prepared.SourcePath, QuantizationPipeline.Run(prepared, stats, TinyModel.Options(), dir.File("plain.onnx"), default).OutputPath,
            eval, 1, 0, null, null, default);
        Assert.True(plain.AccuracyDrop!.Drop > 0.05, $"the plain int8 model should miss the goal: drop {plain.AccuracyDrop.Drop}");

        var result = AccuracyAwareSearch.Run(prepared, stats, TinyModel.Options(), output, eval, null, 0.05, TimeSpan.FromMinutes(5), 1, null, default);
        Assert.True(result.GoalMet, result.SearchSummary);
        Assert.Contains("conv2", result.KeptInFloat);
        Assert.True(result.KeptInFloat.Length < 6, string.Join(",", result.KeptInFloat) + " / " + string.Join("; ", result.Candidates.Select(c => c.ToString() + " " + string.Join(",", c.KeptInFloat))));
        Assert.True(result.QuantizedLayerCount > 0);
        Assert.StartsWith("Goal met", result.SearchSummary);
        // The written model really meets the goal, measured independently of the search.
        var check = ModelComparer.Compare(prepared.SourcePath, output, eval, 1, 0, null, null, default);
        Assert.True(check.AccuracyDrop!.Drop <= 0.05, $"drop {check.AccuracyDrop.Drop}");
        Assert.Equal(result.AccuracyDrop!.Drop, check.AccuracyDrop.Drop, 6);
        Assert.DoesNotContain(result.KeptInFloat, l => result.QuantizedLayers.Contains(l));
        // Every candidate is on record; the chosen one is among those that meet the goal, and none of those that meet it
        // keeps fewer layers in float unless it was measured slower.
        Assert.Equal(result.CandidatesTried, result.Candidates.Length);
        Assert.False(result.Candidates[0].MeetsGoal);
        Assert.Empty(result.Candidates[0].KeptInFloat);
        var chosen = result.Candidates.Single(c => c.MeetsGoal && c.KeptInFloat.SequenceEqual(result.KeptInFloat));
        Assert.All(result.Candidates.Where(c => c.MeetsGoal && c.FloatLayerCount < chosen.FloatLayerCount), c => Assert.True(c.LatencyMs > chosen.LatencyMs));
        Assert.All(result.Candidates, c => Assert.Null(c.Error));
        Assert.Equal(5 * 60, result.TimeBudgetSeconds);
    }

    [Fact]
    public void ACandidateThatFailsIsRecordedAndTheSearchGoesOn()
    {
        using var dir = new TempDir();
        var (prepared, stats, eval) = Setup(dir);
        // Calls: 1 the float model, 2 the fully quantized one, 3 the first candidate (conv2 in float), which fails.
        int calls = 0;
        TaskMetric failingOnce = (outputs, labels) => ++calls == 3 ? throw new InvalidOperationException("metric broke") : TaskMetrics.TopKCorrect(outputs, labels, 1);
        var result = AccuracyAwareSearch.Run(prepared, stats, TinyModel.Options(), dir.File("a.onnx"), eval, failingOnce, 0.05, TimeSpan.FromMinutes(5), 1, null, default);
        Assert.True(result.GoalMet, result.SearchSummary);
        Assert.Contains("failed: metric broke", result.Candidates[1].Error);
        Assert.Null(result.Candidates[1].Drop);
        Assert.Equal(2, result.KeptInFloat.Length);
        Assert.Equal("conv2", result.KeptInFloat[0]);

        // Every quantized candidate after the fully quantized one fails: only the float model itself (every layer in
        // float, drop 0 by definition, no metric call) meets the goal, and it is what is written, unchanged.
        calls = 0;
        TaskMetric failingAfterTwo = (outputs, labels) => ++calls > 2 ? throw new InvalidOperationException("metric broke") : TaskMetrics.TopKCorrect(outputs, labels, 1);
        var output = dir.File("b.onnx");
        var floatOnly = AccuracyAwareSearch.Run(prepared, stats, TinyModel.Options(), output, eval, failingAfterTwo, 0.05, TimeSpan.FromMinutes(5), 1, null, default);
        Assert.True(floatOnly.GoalMet, floatOnly.SearchSummary);
        Assert.Equal(6, floatOnly.KeptInFloat.Length);
        Assert.Equal("Float", floatOnly.Mode);
        Assert.Equal(File.ReadAllBytes(prepared.SourcePath), File.ReadAllBytes(output));
        Assert.Equal(0, floatOnly.AccuracyDrop!.Drop);
        Assert.All(floatOnly.Candidates.Skip(1).Where(c => c.FloatLayerCount < 6), c => Assert.StartsWith("failed", c.Error));
    }

    [Fact]
    public void AGoalThatCannotBeMetInTimeReturnsTheBestModelAndSaysSo()
    {
        using var dir = new TempDir();
        var (prepared, stats, eval) = Setup(dir);
        var output = dir.File("out.onnx");
        // A budget already spent: the fully quantized model is the only candidate.
        var result = AccuracyAwareSearch.Run(prepared, stats, TinyModel.Options(), output, eval, null, 0.0, TimeSpan.FromTicks(1), 1, null, default);
        Assert.False(result.GoalMet);
        Assert.StartsWith("GOAL MISSED", result.SearchSummary);
        Assert.Contains("time budget", result.SearchSummary);
        Assert.True(File.Exists(output));
        Assert.Equal(1, result.CandidatesTried);
        Check.Throws("InvalidOption", () => AccuracyAwareSearch.Run(prepared, stats, TinyModel.Options(), output, eval, null, double.NaN, TimeSpan.FromMinutes(1), 1, null, default));
        var unlabelled = eval.Clone();
        unlabelled.Labels = null;
        unlabelled.HasLabels = false;
        unlabelled.ClassCount = 0;
        Check.Throws("MetricRequired", () => AccuracyAwareSearch.Run(prepared, stats, TinyModel.Options(), output, unlabelled, null, 0.01, TimeSpan.FromMinutes(1), 1, null, default));
    }
}
