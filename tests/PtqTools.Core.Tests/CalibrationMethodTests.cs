using PtqTools.Core.Calibration;
using PtqTools.Core.Model;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The streaming histogram against a scalar reference, shard merging against one run, and each range
/// method against the error it claims to reduce, measured on the raw values.</summary>
public sealed class CalibrationMethodTests
{
    /// <summary>Samples whose range grows (so the histogram must coarsen several times), with outliers.</summary>
    static List<float[]> GrowingSamples(int seed, int count = 24, int size = 3000, bool relu = false)
    {
        var random = new Random(seed);
        var samples = new List<float[]>();
        for (int s = 0; s < count; s++)
        {
            double scale = 0.01 * Math.Pow(1.6, s);
            var v = new float[size];
            for (int i = 0; i < size; i++)
            {
                double g = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
                double x = g * scale + 0.3 * scale;
                if (i % 997 == 0) x *= 40;   // rare outliers
                v[i] = (float)(relu ? Math.Max(0, x) : x);
            }
            samples.Add(v);
        }
        return samples;
    }

    /// <summary>Reference: every value binned directly at the width the final min/max call for.</summary>
    static (long Start, long[] Counts, int Exponent) ReferenceHistogram(IEnumerable<float[]> samples)
    {
        var all = samples.SelectMany(s => s).ToArray();
        float min = all.Min(), max = all.Max();
        int e = StreamingHistogram.ExponentFor(min, max);
        double w = Math.ScaleB(1.0, e);
        long kLo = (long)Math.Floor(min / w), kHi = (long)Math.Floor(max / w);
        var counts = new long[kHi - kLo + 1];
        foreach (var v in all) counts[(long)Math.Floor(v / w) - kLo]++;
        return (kLo, counts, e);
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(2, true)]
    public void HistogramGrowthIsExact(int seed, bool relu)
    {
        var samples = GrowingSamples(seed, relu: relu);
        var observer = new TensorObserver();
        foreach (var s in samples) Assert.True(observer.Observe(s));
        var stats = observer.ToStatistics("m", "AB", "t", Array.Empty<string>(), new CalibrationOptions());
        var reference = ReferenceHistogram(samples);
        Assert.Equal(reference.Exponent, stats.HistogramExponent);
        Assert.Equal(reference.Start, stats.HistogramStart);
        Assert.Equal(reference.Counts, stats.Histogram);
        Assert.Equal(samples.Sum(s => (long)s.Length), stats.Histogram.Sum());
        // Fine enough for threshold searches: the used range spans more than half of the bins.
        Assert.True(stats.Histogram.Length > StreamingHistogram.MaxBins / 2, $"{stats.Histogram.Length} bins");
    }

    [Theory]
    [InlineData(CalibrationMethod.MinMax, false)]
    [InlineData(CalibrationMethod.Entropy, false)]
    [InlineData(CalibrationMethod.Percentile, true)]
    [InlineData(CalibrationMethod.Mse, false)]
    [InlineData(CalibrationMethod.Auto, true)]
    public void FourShardsMergeIntoOneRun(CalibrationMethod method, bool symmetric)
    {
        var samples = GrowingSamples(3);
        var options = new CalibrationOptions(method, symmetric);
        var single = new TensorObserver();
        foreach (var s in samples) single.Observe(s);
        var one = single.ToStatistics("m", "AB", "t", new[] { "L" }, options);
        // Interleaved shards, so that each shard sees a different range growth.
        var shards = Enumerable.Range(0, 4).Select(k =>
        {
            var o = new TensorObserver();
            for (int i = k; i < samples.Count; i += 4) o.Observe(samples[i]);
            return o.ToStatistics("m", "AB", "t", new[] { "L" }, options);
        }).ToList();
        Assert.NotEqual(shards[0].HistogramExponent, shards[3].HistogramExponent - 100);
        var merged = Assert.Single(ActivationRangeStore.Merge(shards));
        Assert.Equal(one.Min, merged.Min);
        Assert.Equal(one.Max, merged.Max);
        Assert.Equal(one.HistogramExponent, merged.HistogramExponent);
        Assert.Equal(one.HistogramStart, merged.HistogramStart);
        Assert.Equal(one.Histogram, merged.Histogram);
        Assert.Equal(one.SampleCount, merged.SampleCount);
        Assert.Equal(one.ElementCount, merged.ElementCount);
        Assert.Equal(one.RangeMin, merged.RangeMin);
        Assert.Equal(one.RangeMax, merged.RangeMax);
        foreach (var r in one.Ranges.Where(r => r.Method != nameof(CalibrationMethod.MovingAverageMinMax)))
        {
            var m = merged.Ranges.Single(x => x.Method == r.Method);
            Assert.Equal(r.RangeMin, m.RangeMin);
            Assert.Equal(r.RangeMax, m.RangeMax);
        }
        // The moving average sums samples in another order: equal up to rounding.
        var ma1 = one.Ranges.Single(r => r.Method == "MovingAverageMinMax");
        var ma2 = merged.Ranges.Single(r => r.Method == "MovingAverageMinMax");
        Assert.Equal(ma1.RangeMax, ma2.RangeMax, 4);
        Assert.Equal(one.Mean, merged.Mean, 9);
    }

    /// <summary>Mean squared error of quantize-dequantize of the raw values to [lo, hi] (uint8 asymmetric).</summary>
    static double RawError(float[] values, float lo, float hi)
    {
        var p = QuantMath.FromRange(lo, hi, QuantType.UInt8, false);
        double err = 0;
        foreach (var v in values)
        {
            double d = v - QuantMath.Dequantize(QuantMath.Quantize(v, p, 0, 255), p);
            err += d * d;
        }
        return err / values.Length;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ClippingMethodsBeatMinMaxOnHeavyTails(bool relu)
    {
        var samples = GrowingSamples(4, count: 6, size: 20000, relu: relu);
        var all = samples.SelectMany(s => s).ToArray();
        var observer = new TensorObserver();
        foreach (var s in samples) observer.Observe(s);
        var stats = observer.ToStatistics("m", "AB", "t", Array.Empty<string>(), new CalibrationOptions(CalibrationMethod.Auto));
        MethodRange R(string m) => stats.Ranges.Single(r => r.Method == m);
        var minMax = R("MinMax");
        Assert.Equal(Math.Min(0, all.Min()), minMax.RangeMin);
        Assert.Equal(all.Max(), minMax.RangeMax);
        double minMaxError = RawError(all, minMax.RangeMin, minMax.RangeMax);
        // Entropy minimizes KL divergence, not squared error: it must clip, and keep the bulk of the values.
        var entropy = R("Entropy");
        Assert.True(entropy.RangeMax < minMax.RangeMax, $"Entropy {entropy} did not clip (MinMax {minMax})");
        Assert.True(all.Count(v => v >= entropy.RangeMin && v <= entropy.RangeMax) > 0.95 * all.Length, $"Entropy {entropy} clips the bulk");
        foreach (var m in new[] { "Mse", "Auto" })
        {
            var r = R(m);
            Assert.True(r.RangeMax < minMax.RangeMax, $"{m} {r} did not clip (MinMax {minMax})");
            double e = RawError(all, r.RangeMin, r.RangeMax);
            Assert.True(e < minMaxError, $"{m}: error {e} on the raw values, MinMax {minMaxError}");
        }
        // Auto takes the lowest simulated error of all methods.
        Assert.Equal(stats.Ranges.Where(r => r.Method != "Auto").Min(r => r.Error), R("Auto").Error);
        Assert.Equal(stats.SelectedMethod, stats.Ranges.First(r => r.Method != "Auto" && r.Error == R("Auto").Error).Method);
        // Percentile: the share of raw values inside the range is at least the percentile, and not far above.
        var pr = R("Percentile");
        double inside = all.Count(v => v >= pr.RangeMin && v <= pr.RangeMax) / (double)all.Length;
        Assert.InRange(inside, 0.9999 - 1e-9, 1.0);
        Assert.True(pr.RangeMax < minMax.RangeMax);
    }

    [Fact]
    public void MseSearchMatchesBruteForceOnRawValues()
    {
        var samples = GrowingSamples(5, count: 4, size: 20000, relu: true);
        var all = samples.SelectMany(s => s).ToArray();
        var observer = new TensorObserver();
        foreach (var s in samples) observer.Observe(s);
        var stats = observer.ToStatistics("m", "AB", "t", Array.Empty<string>(), new CalibrationOptions(CalibrationMethod.Mse));
        double chosen = RawError(all, stats.RangeMin, stats.RangeMax);
        // Scalar reference: the best of 200 thresholds on the raw values.
        double best = Enumerable.Range(1, 200).Min(a => RawError(all, 0, all.Max() * a / 200f));
        Assert.True(chosen <= best * 1.05, $"MSE range error {chosen}, brute force {best}");
    }

    [Fact]
    public void EntropyFindsTheThresholdOfAKnownDistribution()
    {
        // Laplace(0, 1), 400k values (|x| max near 13): the KL threshold for 127 levels cuts the sparse tails well
        // inside the range (near 10), not at the maximum (the collapse to MinMax) nor in the bulk. A ReLU'd normal
        // calibrated asymmetrically (255 levels on the positive side, the spike at zero left out) is cut near 4 sigma.
        var random = new Random(6);
        var laplace = new float[400000];
        var relu = new float[400000];
        for (int i = 0; i < laplace.Length; i++)
        {
            laplace[i] = (float)(-Math.Log(1 - random.NextDouble()) * (random.Next(2) == 0 ? 1 : -1));
            relu[i] = (float)Math.Max(0, Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        }
        var observer = new TensorObserver();
        observer.Observe(laplace);
        var stats = observer.ToStatistics("m", "AB", "t", Array.Empty<string>(), new CalibrationOptions(CalibrationMethod.Entropy, Symmetric: true));
        float maxAbs = laplace.Max(Math.Abs);
        Assert.Equal(-stats.RangeMin, stats.RangeMax);
        Assert.InRange(stats.RangeMax, 7f, maxAbs * 0.85f);
        observer = new TensorObserver();
        observer.Observe(relu);
        stats = observer.ToStatistics("m", "AB", "t", Array.Empty<string>(), new CalibrationOptions(CalibrationMethod.Entropy));
        Assert.Equal(0f, stats.RangeMin);
        Assert.InRange(stats.RangeMax, 3f, relu.Max() * 0.99f);
    }

    [Fact]
    public void NonFiniteValuesAreRefused()
    {
        var observer = new TensorObserver();
        Assert.False(observer.Observe(new[] { 1f, float.NaN }));
        Assert.True(observer.Observe(new[] { 1f, 2f }));
        Assert.Equal(2, observer.ToStatistics("m", "AB", "t", Array.Empty<string>(), new CalibrationOptions()).ElementCount);
    }

    [Fact]
    public void ExportImportRoundTripsAndChecksTheModel()
    {
        using var dir = new TempDir();
        var model = dir.File("model.onnx");
        File.WriteAllBytes(model, new byte[] { 1, 2, 3 });
        var sha = PtqTools.Core.Onnx.OnnxModelIO.Sha256(model);
        var observer = new TensorObserver();
        foreach (var s in GrowingSamples(7, count: 5)) observer.Observe(s);
        var stats = new List<TensorStatistics> { observer.ToStatistics(model, sha, "t", new[] { "L" }, new CalibrationOptions(CalibrationMethod.Entropy)) };
        var file = dir.File("ranges.json");
        ActivationRangeStore.Save(stats, file);
        var (back, modelChecked) = ActivationRangeStore.Load(file, null);
        Assert.True(modelChecked);
        var b = Assert.Single(back);
        Assert.Equal(stats[0].Histogram, b.Histogram);
        Assert.Equal(stats[0].RangeMax, b.RangeMax);
        Assert.Equal(stats[0].Ranges.Select(r => (r.Method, r.RangeMin, r.RangeMax)), b.Ranges.Select(r => (r.Method, r.RangeMin, r.RangeMax)));
        // Another model: a clear error naming both hashes.
        var other = dir.File("other.onnx");
        File.WriteAllBytes(other, new byte[] { 9 });
        var ex = Assert.Throws<PtqException>(() => ActivationRangeStore.Load(file, other));
        Assert.Equal("ModelMismatch", ex.ErrorId);
        Assert.Contains(sha, ex.Message);
        // A file of another schema version.
        File.WriteAllText(dir.File("v9.json"), File.ReadAllText(file).Replace("\"Version\":1", "\"Version\":9"));
        Assert.Equal("ActivationRangeVersionUnsupported", Assert.Throws<PtqException>(() => ActivationRangeStore.Load(dir.File("v9.json"), null)).ErrorId);
        File.WriteAllText(dir.File("bad.json"), "{ not json");
        Assert.Equal("ActivationRangeFileInvalid", Assert.Throws<PtqException>(() => ActivationRangeStore.Load(dir.File("bad.json"), null)).ErrorId);
    }
}

public sealed class EntropySearchTests
{
    [Theory]
    [InlineData(1, 300)]
    [InlineData(2, 1000)]
    [InlineData(3, 4096)]
    public void FastSearchMatchesTheDirectForm(int seed, int bins)
    {
        var random = new Random(seed);
        // A decaying distribution with empty bins and a sparse tail.
        var hist = new double[bins];
        for (int j = 0; j < bins; j++)
            hist[j] = random.NextDouble() < 0.1 ? 0 : Math.Floor(1e5 * Math.Exp(-j * 8.0 / bins) * random.NextDouble());
        int fast = EntropyRange.Search(hist, 127), direct = EntropyRange.SearchReference(hist, 127);
        Assert.Equal(direct, fast);
        Assert.InRange(fast, 127, bins - 1);
    }
}

public sealed class SkipInvalidTests
{
    [Fact]
    public void SamplesWithNonFiniteActivationsAreSkippedAndCountedOnlyWhenAsked()
    {
        TestPaths.UseTempCache();
        using var dir = new TempDir();
        var path = TinyModels.ResidualCnn().Save(dir.File("residual.onnx"));
        var prepared = PtqTools.Core.Onnx.ModelPreparer.Prepare(path);
        var plan = QuantizationPlan.Create(new PtqTools.Core.Onnx.GraphView(prepared.Model.Graph), null);
        var random = new Random(3);
        var huge = Enumerable.Repeat(float.MaxValue, 3 * 8 * 8).ToArray();   // overflows in the convolutions
        var samples = new[] { TinyModels.RandomInput(random), huge, TinyModels.RandomInput(random) };
        var data = PtqTools.Core.Data.DataSetReader.FromArrays(samples, new[] { 3, 8, 8 }, null, new PtqTools.Core.Model.PtqDataSet());
        Check.Throws("ActivationNotFinite", () => ActivationCalibrator.Run(prepared, plan.Activations, data, 1, null, CancellationToken.None));
        var skipped = new List<PtqException>();
        var stats = ActivationCalibrator.Run(prepared, plan.Activations, data, 1, new CalibrationOptions(), skipped.Add, null, CancellationToken.None);
        Assert.Equal("ActivationNotFinite", Assert.Single(skipped).ErrorId);
        Assert.All(stats, s => Assert.Equal(2, s.SampleCount));
        // The skipped sample left no trace: the statistics equal those of the two good samples alone.
        var good = PtqTools.Core.Data.DataSetReader.FromArrays(new[] { samples[0], samples[2] }, new[] { 3, 8, 8 }, null, new PtqTools.Core.Model.PtqDataSet());
        var reference = ActivationCalibrator.Run(prepared, plan.Activations, good, 1, null, CancellationToken.None);
        for (int i = 0; i < stats.Count; i++)
        {
            Assert.Equal(reference[i].Histogram, stats[i].Histogram);
            Assert.Equal(reference[i].Max, stats[i].Max);
        }
    }
}

public class ConstantTensorHistogramTests
{
    /// <summary>A tensor holding one non-zero value everywhere (a constant input, a window function) once made the
    /// |x| fold of the histogram ask for 2^60 bins; every method's range must come out and hold the value.</summary>
    [Theory]
    [InlineData(1f)]
    [InlineData(-3.5f)]
    [InlineData(1e-30f)]
    public void ConstantNonZeroTensor_GivesEveryMethodsRange(float value)
    {
        var observer = new TensorObserver();
        for (int s = 0; s < 3; s++) Assert.True(observer.Observe(Enumerable.Repeat(value, 64).ToArray()));
        var stats = observer.ToStatistics("m", "AB", "t", Array.Empty<string>(), new CalibrationOptions());
        Assert.NotEmpty(stats.Ranges);
        Assert.True(stats.Histogram.Length <= StreamingHistogram.MaxBins, $"{stats.Histogram.Length} bins");
        Assert.True(stats.RangeMin <= Math.Min(0, value) && stats.RangeMax >= Math.Max(0, value), $"[{stats.RangeMin}, {stats.RangeMax}] for {value}");
    }
}
