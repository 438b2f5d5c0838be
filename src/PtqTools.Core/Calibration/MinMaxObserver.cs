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
        var m = ObserverKernels.Moments(values);
        if (!m.Finite) return false;
        Add(m);
        return true;
    }

    /// <summary>Adds one sample's moments (from <see cref="ObserverKernels.Moments"/>; all values finite).</summary>
    public void Add(in TensorMoments m)
    {
        LastMin = m.Min;
        LastMax = m.Max;
        if (m.Length > 0)
        {
            Min = MathF.Min(Min, m.Min);
            Max = MathF.Max(Max, m.Max);
        }
        _sum += m.Sum;
        _sumSquares += m.SumSquares;
        Count += m.Length;
        Samples++;
    }

    /// <summary>Sums for merging shards (Mean and Std derive from them).</summary>
    public double Sum => _sum;
    public double SumSquares => _sumSquares;

    public double Mean => Count == 0 ? 0 : _sum / Count;
    public double Std => Count == 0 ? 0 : Math.Sqrt(Math.Max(0, _sumSquares / Count - Mean * Mean));
}
