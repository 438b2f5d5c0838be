using PtqTools.Core.Model;

namespace PtqTools.Core.Calibration;

/// <summary>
/// Everything every calibration method needs of one tensor, accumulated in one pass and constant memory: exact
/// min/max, sums, the per-sample extremes, and a <see cref="StreamingHistogram"/>. Turns into (and back from) a
/// <see cref="TensorStatistics"/>, which is how shards are saved and merged.
/// </summary>
public sealed class TensorObserver
{
    readonly MinMaxObserver _minMax = new();
    StreamingHistogram _histogram = new();
    double _sampleMinSum, _sampleMaxSum;
    // Merged state (from statistics) that the MinMaxObserver cannot take back.
    float _min = float.PositiveInfinity, _max = float.NegativeInfinity;
    double _sum, _sumSquares;
    long _count;
    int _samples;

    /// <summary>Adds one sample's values; returns false (and adds nothing) if any is NaN or infinite.</summary>
    public bool Observe(ReadOnlySpan<float> values)
    {
        var m = ObserverKernels.Moments(values);
        if (!m.Finite) return false;
        Add(values, m);
        return true;
    }

    /// <summary>Adds one sample's values whose moments the caller has found (all finite): this lets a caller check
    /// every tensor of a sample before any observer takes one.</summary>
    public void Add(ReadOnlySpan<float> values, in TensorMoments m)
    {
        // No values (an If branch the sample did not take) is not a sample of this tensor.
        if (values.Length == 0) return;
        _minMax.Add(m);
        if (values.Length > 0)
        {
            _histogram.Add(values, m.Min, m.Max);
            _sampleMinSum += m.Min;
            _sampleMaxSum += m.Max;
        }
    }

    float Min => Math.Min(_min, _minMax.Min);
    float Max => Math.Max(_max, _minMax.Max);
    long Count => _count + _minMax.Count;
    int Samples => _samples + _minMax.Samples;

    public TensorSummary Summary()
    {
        var (start, counts) = _histogram.Snapshot();
        return new TensorSummary
        {
            Min = Count == 0 ? 0 : Min, Max = Count == 0 ? 0 : Max, SampleMinSum = _sampleMinSum, SampleMaxSum = _sampleMaxSum,
            Samples = Samples, Width = _histogram.Width, Start = start, Counts = counts,
        };
    }

    /// <summary>The statistics with the range of every method, and the one <paramref name="options"/> chooses.</summary>
    public TensorStatistics ToStatistics(string modelPath, string modelSha256, string tensor, string[] layers, CalibrationOptions options)
    {
        options.Validate();
        var s = Summary();
        var ranges = new List<MethodRange>();
        foreach (var m in RangeMethods.Concrete)
        {
            var (lo, hi) = RangeMethods.Create(m).Compute(s, options);
            ranges.Add(new MethodRange { Method = m.ToString(), RangeMin = lo, RangeMax = hi, Error = RangeMethods.SimulatedError(s, lo, hi, options.Symmetric) });
        }
        // Auto: the lowest simulated error (ties go to the earlier method); the same choice AutoRange makes.
        var auto = ranges.Aggregate((a, b) => b.Error < a.Error ? b : a);
        ranges.Add(new MethodRange { Method = nameof(CalibrationMethod.Auto), RangeMin = auto.RangeMin, RangeMax = auto.RangeMax, Error = auto.Error });
        var chosen = ranges.First(r => r.Method == options.Method.ToString());
        double mean = Count == 0 ? 0 : (_sum + _minMax.Sum) / Count;
        double meanSquares = Count == 0 ? 0 : (_sumSquares + _minMax.SumSquares) / Count;
        return new TensorStatistics
        {
            ModelPath = modelPath, ModelSha256 = modelSha256, Tensor = tensor, Layers = layers,
            Method = options.Method.ToString(), Symmetric = options.Symmetric, Percentile = options.Percentile,
            SelectedMethod = options.Method == CalibrationMethod.Auto ? auto.Method : options.Method.ToString(),
            Min = s.Min, Max = s.Max, Mean = mean, Std = Math.Sqrt(Math.Max(0, meanSquares - mean * mean)),
            SampleCount = Samples, ElementCount = Count, RangeMin = chosen.RangeMin, RangeMax = chosen.RangeMax,
            Ranges = ranges.ToArray(), Sum = _sum + _minMax.Sum, SumSquares = _sumSquares + _minMax.SumSquares,
            SampleMinSum = _sampleMinSum, SampleMaxSum = _sampleMaxSum,
            HistogramExponent = _histogram.Exponent == int.MinValue ? 0 : _histogram.Exponent, HistogramStart = s.Start, Histogram = s.Counts,
        };
    }

    /// <summary>Adds saved statistics of the same tensor (a shard) to this observer.</summary>
    public void Merge(TensorStatistics t)
    {
        if (t.ElementCount == 0) { _samples += t.SampleCount; return; }
        if (t.Histogram.Count == 0 || t.Histogram.Sum() != t.ElementCount)
            throw new PtqException("HistogramInvalid", PtqErrorKind.InvalidData,
                $"The statistics of tensor '{t.Tensor}' have a histogram of {t.Histogram.Sum()} values for {t.ElementCount} elements: they cannot be merged (were they made by an older PtqTools?).", t.Tensor);
        _histogram.Merge(StreamingHistogram.FromSnapshot(t.HistogramExponent, t.HistogramStart, t.Histogram.ToArray()));
        _min = Math.Min(_min, t.Min);
        _max = Math.Max(_max, t.Max);
        _sum += t.Sum; _sumSquares += t.SumSquares; _count += t.ElementCount; _samples += t.SampleCount;
        _sampleMinSum += t.SampleMinSum; _sampleMaxSum += t.SampleMaxSum;
    }
}
