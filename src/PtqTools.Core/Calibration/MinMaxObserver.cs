namespace PtqTools.Core.Calibration;

/// <summary>Streaming min, max, mean and standard deviation of one tensor over all samples (constant memory).</summary>
public sealed class MinMaxObserver
{
    public float Min { get; private set; } = float.PositiveInfinity;
    public float Max { get; private set; } = float.NegativeInfinity;
    public long Count { get; private set; }
    public int Samples { get; private set; }
    /// <summary>The extremes of the last sample observed.</summary>
    public float LastMin { get; private set; }
    public float LastMax { get; private set; }
    double _sum, _sumSquares;

    /// <summary>Adds one sample's values; returns false (and adds nothing) if any is NaN or infinite.</summary>
    public bool Observe(ReadOnlySpan<float> values)
    {
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        double sum = 0, sumSquares = 0;
        foreach (var v in values)
        {
            if (!float.IsFinite(v)) return false;
            if (v < min) min = v;
            if (v > max) max = v;
            sum += v;
            sumSquares += (double)v * v;
        }
        LastMin = min;
        LastMax = max;
        if (values.Length > 0)
        {
            Min = Math.Min(Min, min);
            Max = Math.Max(Max, max);
        }
        _sum += sum;
        _sumSquares += sumSquares;
        Count += values.Length;
        Samples++;
        return true;
    }

    /// <summary>Sums for merging shards (Mean and Std derive from them).</summary>
    public double Sum => _sum;
    public double SumSquares => _sumSquares;

    public double Mean => Count == 0 ? 0 : _sum / Count;
    public double Std => Count == 0 ? 0 : Math.Sqrt(Math.Max(0, _sumSquares / Count - Mean * Mean));
}
