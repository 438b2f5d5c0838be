namespace PtqTools.Core.Calibration;

/// <summary>
/// A histogram of one tensor's values accumulated online in constant memory. Bin k covers [k*w, (k+1)*w): the bins
/// are anchored at zero and the width w is a power of two, the smallest one for which the observed [min, max], widened
/// to hold zero (as every quantization range is), spans at most <see cref="MaxBins"/> bins. When a value falls outside, the width doubles and pairs of bins merge: since
/// every edge at width 2w is an edge at width w, the counts stay exact (as if the data had been binned at 2w from the
/// start). The final width depends only on the overall min and max, so shards of a data set binned separately merge
/// into exactly the histogram of one run over all of it.
/// </summary>
public sealed class StreamingHistogram
{
    /// <summary>Bins spanned at most. The used range widened to hold zero fills more than half of them (over 4,096 bins).</summary>
    public const int MaxBins = 8192;
    const int MinExponent = -60;

    long[] _counts = new long[MaxBins];
    /// <summary>Bin index (k) held in _counts[0].</summary>
    long _origin;
    int _exponent = int.MinValue;
    long _kLo = long.MaxValue, _kHi = long.MinValue;

    public double Width => _exponent == int.MinValue ? 0 : Math.ScaleB(1.0, _exponent);
    public int Exponent => _exponent;
    public long Total { get; private set; }

    /// <summary>Smallest power-of-two exponent whose bins over [min, max] number at most MaxBins.</summary>
    internal static int ExponentFor(double min, double max, int atLeast = MinExponent)
    {
        int e = atLeast;
        double span = max - min;
        if (span > 0)
            e = Math.Max(e, (int)Math.Floor(Math.Log2(span / MaxBins)) - 1);
        while (Span(min, max, e) > MaxBins) e++;
        return e;
    }

    static long Span(double min, double max, int e) => Bin(max, e) - Bin(min, e) + 1;

    static long Bin(double v, int e) => (long)Math.Floor(Math.ScaleB(v, -e));

    /// <summary>Adds values whose minimum and maximum the caller has found (all finite).</summary>
    public void Add(ReadOnlySpan<float> values, float min, float max)
    {
        if (values.Length == 0) return;
        Cover(min, max);
        ObserverKernels.Bin(values, Math.ScaleB(1.0, -_exponent), _origin, _counts, min, max);
        Total += values.Length;
    }

    /// <summary>Grows the bins (exactly) so that [min, max] is covered.</summary>
    void Cover(double min, double max)
    {
        double lo = Math.Min(min, _kLo == long.MaxValue ? min : _kLo * Width);
        double hi = Math.Max(max, _kHi == long.MinValue ? max : (_kHi + 1) * Width - Width / 2);
        // The width is chosen for the range widened to hold zero, as every quantization range is: bins are anchored at
        // zero, and the methods that fold the histogram at zero (|x|) must not span 2^60 bins for a constant tensor.
        int e = ExponentFor(Math.Min(lo, 0), Math.Max(hi, 0), _exponent == int.MinValue ? MinExponent : _exponent);
        Rebin(e);
        long kLo = Bin(lo, _exponent), kHi = Bin(hi, _exponent);
        if (kLo < _origin || kHi >= _origin + MaxBins) Shift(kLo);
        _kLo = Math.Min(_kLo, kLo);
        _kHi = Math.Max(_kHi, kHi);
    }

    /// <summary>Moves to a coarser width: bin k at width 2^old is in bin floor(k / 2^(e-old)) at 2^e.</summary>
    void Rebin(int e)
    {
        if (_exponent == int.MinValue) { _exponent = e; _origin = 0; return; }
        if (e == _exponent) return;
        int shift = e - _exponent;
        var next = new long[MaxBins];
        long newOrigin = _kLo == long.MaxValue ? 0 : _kLo >> shift;
        for (long k = _kLo; k <= _kHi && _kLo != long.MaxValue; k++)
        {
            long c = _counts[k - _origin];
            if (c != 0) next[(k >> shift) - newOrigin] += c;
        }
        if (_kLo != long.MaxValue) { _kLo >>= shift; _kHi >>= shift; }
        _counts = next;
        _origin = newOrigin;
        _exponent = e;
    }

    void Shift(long newOrigin)
    {
        var next = new long[MaxBins];
        if (_kLo != long.MaxValue)
            for (long k = _kLo; k <= _kHi; k++) next[k - newOrigin] = _counts[k - _origin];
        _counts = next;
        _origin = newOrigin;
    }

    /// <summary>The used bins: the index of the first (k) and their counts.</summary>
    public (long Start, long[] Counts) Snapshot()
    {
        if (_kLo == long.MaxValue) return (0, Array.Empty<long>());
        return (_kLo, _counts.AsSpan((int)(_kLo - _origin), (int)(_kHi - _kLo + 1)).ToArray());
    }

    /// <summary>Rebuilds a histogram from a snapshot (for merging saved statistics).</summary>
    public static StreamingHistogram FromSnapshot(int exponent, long start, long[] counts)
    {
        var h = new StreamingHistogram();
        if (counts.Length == 0) return h;
        if (counts.Length > MaxBins)
            throw new PtqException("HistogramInvalid", PtqErrorKind.InvalidData, $"A histogram of {counts.Length} bins exceeds {MaxBins}.", counts.Length);
        if (counts.Any(c => c < 0))
            throw new PtqException("HistogramInvalid", PtqErrorKind.InvalidData, "A histogram holds a negative count.", counts);
        h._exponent = exponent;
        h._origin = start;
        h._kLo = start;
        h._kHi = start + counts.Length - 1;
        counts.CopyTo(h._counts, 0);
        h.Total = counts.Sum();
        return h;
    }

    /// <summary>Adds another histogram's counts (exact: both move to the coarser of the two widths first).</summary>
    public void Merge(StreamingHistogram other)
    {
        if (other._kLo == long.MaxValue) return;
        if (_exponent == int.MinValue)
        {
            _exponent = other._exponent; _origin = other._origin; _kLo = other._kLo; _kHi = other._kHi;
            _counts = (long[])other._counts.Clone(); Total = other.Total;
            return;
        }
        var o = other;
        if (other._exponent < _exponent) { o = FromSnapshot(other._exponent, other._kLo, other.Snapshot().Counts); o.Rebin(_exponent); }
        else if (other._exponent > _exponent) Rebin(other._exponent);
        // Now at the same width; cover the union (may coarsen again), then add bin by bin.
        double lo = Math.Min(_kLo, o._kLo) * Width, hi = (Math.Max(_kHi, o._kHi) + 0.5) * Width;
        int e = ExponentFor(Math.Min(lo, 0), Math.Max(hi, 0), _exponent);
        if (e != _exponent)
        {
            Rebin(e);
            if (o == other) o = FromSnapshot(other._exponent, other._kLo, other.Snapshot().Counts);
            o.Rebin(e);
        }
        long kLo = Math.Min(_kLo, o._kLo), kHi = Math.Max(_kHi, o._kHi);
        if (kLo < _origin || kHi >= _origin + MaxBins) Shift(kLo);
        _kLo = kLo; _kHi = kHi;
        for (long k = o._kLo; k <= o._kHi; k++) _counts[k - _origin] += o._counts[k - o._origin];
        Total += other.Total;
    }
}
