using PtqTools.Core.Quantization;

namespace PtqTools.Core.Calibration;

/// <summary>How a tensor's quantization range is chosen from its calibration statistics.</summary>
public enum CalibrationMethod
{
    /// <summary>The smallest and largest value seen.</summary>
    MinMax,
    /// <summary>The average over samples of each sample's minimum and maximum.</summary>
    MovingAverageMinMax,
    /// <summary>The range holding the given percentile of the values.</summary>
    Percentile,
    /// <summary>The threshold minimizing the KL divergence between the value distribution and its quantized form.</summary>
    Entropy,
    /// <summary>The range minimizing the expected squared quantization error (rounding inside, clipping outside).</summary>
    Mse,
    /// <summary>Per tensor, the range of the method above whose simulated quantization error on the histogram is lowest.</summary>
    Auto,
}

/// <summary>Options of the range methods, kept with the statistics so that merged shards are recomputed the same way.</summary>
public sealed record CalibrationOptions(CalibrationMethod Method = CalibrationMethod.MinMax, bool Symmetric = false, double Percentile = 99.99)
{
    public void Validate()
    {
        if (!(Percentile > 50 && Percentile <= 100))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Percentile must be above 50 and at most 100, not {Percentile}.", Percentile);
    }
}

/// <summary>What the range methods see of one tensor: the exact extremes, the per-sample extremes' sums and the
/// zero-anchored histogram.</summary>
public sealed class TensorSummary
{
    public float Min, Max;
    public double SampleMinSum, SampleMaxSum;
    public int Samples;
    public double Width;
    public long Start;
    public long[] Counts = Array.Empty<long>();

    public double Center(int i) => (Start + i + 0.5) * Width;
}

/// <summary>A range method: one class per method, created by <see cref="RangeMethods.Create"/>.</summary>
public interface IRangeMethod
{
    CalibrationMethod Method { get; }
    (float Min, float Max) Compute(TensorSummary s, CalibrationOptions o);
}

/// <summary>The factory of range methods, keyed by <see cref="CalibrationMethod"/>.</summary>
public static class RangeMethods
{
    /// <summary>Every method that computes a range on its own (all but Auto), in the order Auto breaks ties.</summary>
    public static readonly CalibrationMethod[] Concrete =
        { CalibrationMethod.MinMax, CalibrationMethod.MovingAverageMinMax, CalibrationMethod.Percentile, CalibrationMethod.Entropy, CalibrationMethod.Mse };

    public static IRangeMethod Create(CalibrationMethod method) => method switch
    {
        CalibrationMethod.MinMax => new MinMaxRange(),
        CalibrationMethod.MovingAverageMinMax => new MovingAverageRange(),
        CalibrationMethod.Percentile => new PercentileRange(),
        CalibrationMethod.Entropy => new EntropyRange(),
        CalibrationMethod.Mse => new MseRange(),
        CalibrationMethod.Auto => new AutoRange(),
        _ => throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Unknown calibration method '{method}'.", method),
    };

    /// <summary>A symmetric range [-T, T], or [lo, hi] widened to hold zero.</summary>
    internal static (float, float) Finish(double lo, double hi, CalibrationOptions o)
    {
        lo = Math.Min(lo, 0); hi = Math.Max(hi, 0);
        if (o.Symmetric) { double t = Math.Max(-lo, hi); return ((float)-t, (float)t); }
        return ((float)lo, (float)hi);
    }

    /// <summary>The histogram folded on |x|: abs bin j covers [j*w, (j+1)*w) of |x| exactly (bins are anchored at zero).</summary>
    internal const long MaxAbsBins = 1 << 24;

    internal static double[] AbsHistogram(TensorSummary s)
    {
        long n = 0;
        for (int i = 0; i < s.Counts.Length; i++) { long k = s.Start + i; n = Math.Max(n, k >= 0 ? k + 1 : -k); }
        // Bins sit at most 8,192 apart from Start, but Start itself is unbounded: values far from zero with a tiny
        // spread (found by the fuzz harness) would ask for an array beyond what memory holds.
        if (n > MaxAbsBins)
            throw new PtqException("HistogramTooWide", PtqErrorKind.InvalidData,
                $"An activation holds values in [{s.Min}, {s.Max}], far from zero for their spread: its |x| histogram would need {n:N0} bins of width {s.Width}. Exclude the layer, or use -Method MinMax.", s);
        var abs = new double[n];
        for (int i = 0; i < s.Counts.Length; i++) { long k = s.Start + i; abs[k >= 0 ? k : -k - 1] += s.Counts[i]; }
        return abs;
    }

    /// <summary>Expected squared error of quantizing the histogram to [lo, hi]: the exact quantize-dequantize of each
    /// bin's centre with the parameters the quantizer would use (uint8 asymmetric, or int8 symmetric), times its count.</summary>
    public static double SimulatedError(TensorSummary s, float lo, float hi, bool symmetric)
    {
        var type = symmetric ? QuantType.Int8 : QuantType.UInt8;
        var p = QuantMath.FromRange(lo, hi, type, symmetric);
        var (qmin, qmax) = QuantMath.Limits(type, symmetric);
        double err = 0;
        for (int i = 0; i < s.Counts.Length; i++)
        {
            if (s.Counts[i] == 0) continue;
            float x = (float)Math.Clamp(s.Center(i), s.Min, s.Max);
            double d = x - QuantMath.Dequantize(QuantMath.Quantize(x, p, qmin, qmax), p);
            err += s.Counts[i] * d * d;
        }
        long total = s.Counts.Sum();
        return total == 0 ? 0 : err / total;
    }
}

sealed class MinMaxRange : IRangeMethod
{
    public CalibrationMethod Method => CalibrationMethod.MinMax;
    public (float Min, float Max) Compute(TensorSummary s, CalibrationOptions o) => RangeMethods.Finish(s.Min, s.Max, o);
}

sealed class MovingAverageRange : IRangeMethod
{
    public CalibrationMethod Method => CalibrationMethod.MovingAverageMinMax;
    public (float Min, float Max) Compute(TensorSummary s, CalibrationOptions o) =>
        s.Samples == 0 ? (0, 0) : RangeMethods.Finish(s.SampleMinSum / s.Samples, s.SampleMaxSum / s.Samples, o);
}

sealed class PercentileRange : IRangeMethod
{
    public CalibrationMethod Method => CalibrationMethod.Percentile;

    public (float Min, float Max) Compute(TensorSummary s, CalibrationOptions o)
    {
        double total = s.Counts.Sum();
        if (total == 0) return (0, 0);
        double keep = o.Percentile / 100;
        if (o.Symmetric)
        {
            var abs = RangeMethods.AbsHistogram(s);
            double cum = 0, t = Math.Max(-s.Min, s.Max);
            for (int j = 0; j < abs.Length; j++)
            {
                cum += abs[j];
                if (cum >= keep * total) { t = Math.Min(t, (j + 1) * s.Width); break; }
            }
            return RangeMethods.Finish(-t, t, o);
        }
        // Asymmetric: cut half of the (1 - p) share from each tail.
        double tail = (1 - keep) / 2 * total, c = 0;
        double lo = s.Min, hi = s.Max;
        for (int i = 0; i < s.Counts.Length; i++)
        {
            c += s.Counts[i];
            if (c > tail) { lo = Math.Max(s.Min, (s.Start + i) * s.Width); break; }
        }
        c = 0;
        for (int i = s.Counts.Length - 1; i >= 0; i--)
        {
            c += s.Counts[i];
            if (c > tail) { hi = Math.Min(s.Max, (s.Start + i + 1) * s.Width); break; }
        }
        return RangeMethods.Finish(lo, hi, o);
    }
}

/// <summary>
/// KL-divergence threshold search (the TensorRT algorithm) on the |x| histogram, or on the positive side alone for a
/// non-negative tensor calibrated asymmetrically (which then has 255 levels instead of 127). The histogram is coarsened
/// by powers of two to at most 4,096 bins (never fewer than 2,048 when it had more), and every bin edge from the
/// number of levels up is a candidate threshold.
/// </summary>
sealed class EntropyRange : IRangeMethod
{
    public CalibrationMethod Method => CalibrationMethod.Entropy;
    const int MaxSearchBins = 4096;

    public (float Min, float Max) Compute(TensorSummary s, CalibrationOptions o)
    {
        bool positiveOnly = !o.Symmetric && s.Min >= 0, negativeOnly = !o.Symmetric && s.Max <= 0;
        int levels = positiveOnly || negativeOnly ? 255 : 127;
        var abs = RangeMethods.AbsHistogram(s);
        // The bin at zero is left out: zero is exact on the quantized grid, and ReLU outputs pile half their values
        // there, a spike that would make every chunk holding it look badly quantized and drive the threshold down.
        if (abs.Length > 0) abs[0] = 0;
        double width = s.Width;
        while (abs.Length > MaxSearchBins)
        {
            var coarse = new double[(abs.Length + 1) / 2];
            for (int j = 0; j < abs.Length; j++) coarse[j / 2] += abs[j];
            abs = coarse;
            width *= 2;
        }
        double maxAbs = Math.Max(-s.Min, s.Max);
        double t = abs.Length <= levels ? maxAbs : Math.Min(maxAbs, Search(abs, levels) * width);
        if (positiveOnly) return RangeMethods.Finish(0, t, o);
        if (negativeOnly) return RangeMethods.Finish(-t, 0, o);
        if (o.Symmetric) return RangeMethods.Finish(-t, t, o);
        return RangeMethods.Finish(Math.Max(s.Min, -t), Math.Min(s.Max, t), o);
    }

    /// <summary>The number of bins i (threshold i*width) minimizing KL(P || Q), P the first i bins with the tail
    /// folded into the last, Q those bins merged into <paramref name="levels"/> and spread back over their non-empty bins.</summary>
    internal static int Search(double[] hist, int levels)
    {
        // KL(P||Q) = sum_j p_j/T (log p_j - log T - log q_j), T the total count. Inside a chunk every non-empty bin
        // has the same q, so prefix sums of h and h log h make each chunk O(1) and each candidate O(levels); only the
        // last bin, which holds the folded tail, is corrected on its own. SearchReference is the direct form.
        int n = hist.Length;
        var sums = new double[n + 1];
        var hLogH = new double[n + 1];
        var nonZero = new int[n + 1];
        for (int j = 0; j < n; j++)
        {
            double h = hist[j];
            sums[j + 1] = sums[j] + h;
            hLogH[j + 1] = hLogH[j] + (h > 0 ? h * Math.Log(h) : 0);
            nonZero[j + 1] = nonZero[j] + (h != 0 ? 1 : 0);
        }
        double total = sums[n], logTotal = Math.Log(total);
        int best = n;
        double bestKl = double.PositiveInfinity;
        for (int i = levels; i <= n; i++)
        {
            double qSum = sums[i];
            if (qSum == 0) continue;
            double kl = 0, logQLast = 0;
            for (int b = 0; b < levels; b++)
            {
                int start = (int)((long)b * i / levels), end = (int)((long)(b + 1) * i / levels);
                int nz = nonZero[end] - nonZero[start];
                if (nz == 0) continue;
                double chunk = sums[end] - sums[start];
                double logQ = Math.Log(chunk / nz / qSum);
                kl += (hLogH[end] - hLogH[start]) - chunk * (logTotal + logQ);
                if (end == i) logQLast = logQ;
            }
            // The last bin: replace its plain term with that of the bin holding the folded tail.
            double last = hist[i - 1], tail = total - sums[i];
            if (tail > 0)
            {
                if (last > 0) kl -= last * (Math.Log(last) - logTotal - logQLast);
                double p = last + tail;
                double logQ = last > 0 ? logQLast : Math.Log(1e-4 / qSum);
                kl += p * (Math.Log(p) - logTotal - logQ);
            }
            kl /= total;
            if (kl < bestKl) { bestKl = kl; best = i; }
        }
        return best;
    }

    /// <summary>The direct O(i) per candidate form of <see cref="Search"/> (the scalar reference it is tested against).</summary>
    internal static int SearchReference(double[] hist, int levels)
    {
        int n = hist.Length;
        // Prefix sums of the counts and of the non-empty bins make each chunk's share O(1).
        var sums = new double[n + 1];
        var nonZero = new int[n + 1];
        for (int j = 0; j < n; j++) { sums[j + 1] = sums[j] + hist[j]; nonZero[j + 1] = nonZero[j] + (hist[j] != 0 ? 1 : 0); }
        double total = sums[n];
        int best = n;
        double bestKl = double.PositiveInfinity;
        for (int i = levels; i <= n; i++)
        {
            double qSum = sums[i];   // every chunk spreads all of its count over its non-empty bins
            if (qSum == 0) continue;
            double kl = 0;
            for (int b = 0; b < levels; b++)
            {
                int start = (int)((long)b * i / levels), end = (int)((long)(b + 1) * i / levels);
                int nz = nonZero[end] - nonZero[start];
                double q = nz == 0 ? 0 : (sums[end] - sums[start]) / nz / qSum;
                for (int j = start; j < end; j++)
                {
                    double pj = hist[j] + (j == i - 1 ? total - sums[i] : 0);
                    if (pj == 0) continue;
                    pj /= total;
                    // A bin P has and Q lacks (only the folded last bin can be one) gets a small smoothing mass.
                    double qj = hist[j] != 0 ? q : 1e-4 / qSum;
                    kl += pj * Math.Log(pj / qj);
                }
            }
            if (kl < bestKl) { bestKl = kl; best = i; }
        }
        return best;
    }
}

/// <summary>
/// The range minimizing the expected squared error: values inside [lo, hi] cost step^2/12 (uniform rounding), values
/// outside cost their squared distance to the nearer end. Candidates scale the observed range [min, max] (widened to
/// hold zero; |x| max for symmetric) by a/2048, a = 1..2048; prefix sums make each candidate O(1).
/// </summary>
sealed class MseRange : IRangeMethod
{
    public CalibrationMethod Method => CalibrationMethod.Mse;
    const int Candidates = 2048;

    public (float Min, float Max) Compute(TensorSummary s, CalibrationOptions o)
    {
        int n = s.Counts.Length;
        if (n == 0) return (0, 0);
        var c0 = new double[n + 1]; var c1 = new double[n + 1]; var c2 = new double[n + 1];
        for (int i = 0; i < n; i++)
        {
            double x = Math.Clamp(s.Center(i), s.Min, s.Max), c = s.Counts[i];
            c0[i + 1] = c0[i] + c; c1[i + 1] = c1[i] + c * x; c2[i + 1] = c2[i] + c * x * x;
        }
        double lo0 = Math.Min(s.Min, 0), hi0 = Math.Max(s.Max, 0);
        if (o.Symmetric) { double m = Math.Max(-lo0, hi0); lo0 = s.Min < 0 ? -m : 0; hi0 = s.Max > 0 ? m : 0; }
        int steps = o.Symmetric ? 254 : 255;
        double best = double.PositiveInfinity, bestLo = lo0, bestHi = hi0;
        for (int a = 1; a <= Candidates; a++)
        {
            double f = (double)a / Candidates, lo = lo0 * f, hi = hi0 * f;
            double step = o.Symmetric ? 2 * Math.Max(-lo, hi) / steps : (hi - lo) / steps;
            // Bins whose centre is below lo: [0, iLo); above hi: [iHi, n).
            int iLo = (int)Math.Clamp(Math.Ceiling(lo / s.Width - 0.5 - s.Start), 0, n);
            int iHi = (int)Math.Clamp(Math.Floor(hi / s.Width - 0.5 - s.Start) + 1, iLo, n);
            double below = c2[iLo] - 2 * lo * c1[iLo] + lo * lo * c0[iLo];
            double aboveC0 = c0[n] - c0[iHi], aboveC1 = c1[n] - c1[iHi], aboveC2 = c2[n] - c2[iHi];
            double above = aboveC2 - 2 * hi * aboveC1 + hi * hi * aboveC0;
            double inside = (c0[iHi] - c0[iLo]) * step * step / 12;
            double err = below + above + inside;
            if (err < best) { best = err; bestLo = lo; bestHi = hi; }
        }
        return RangeMethods.Finish(bestLo, bestHi, o);
    }
}

sealed class AutoRange : IRangeMethod
{
    public CalibrationMethod Method => CalibrationMethod.Auto;

    public (float Min, float Max) Compute(TensorSummary s, CalibrationOptions o) => Choose(s, o).Range;

    /// <summary>The concrete method whose range has the lowest simulated error (ties go to the earlier method).</summary>
    public static (CalibrationMethod Method, (float Min, float Max) Range) Choose(TensorSummary s, CalibrationOptions o)
    {
        (CalibrationMethod, (float, float)) best = default;
        double bestErr = double.PositiveInfinity;
        foreach (var m in RangeMethods.Concrete)
        {
            var r = RangeMethods.Create(m).Compute(s, o);
            double err = RangeMethods.SimulatedError(s, r.Item1, r.Item2, o.Symmetric);
            if (err < bestErr) { bestErr = err; best = (m, r); }
        }
        return best;
    }
}
