using PtqTools.Core.Model;

namespace PtqTools.Core.Evaluation;

/// <summary>Paired comparisons of per-sample scores: bootstrap intervals and McNemar's exact test.</summary>
public static class PairedStatistics
{
    public const int BootstrapResamples = 2000;

    /// <summary>Compares per-sample scores of the same samples; deterministic (fixed seed).</summary>
    public static PairedDifference Compare(string measure, IReadOnlyList<double> floatScores, IReadOnlyList<double> quantScores, int seed = 12345)
    {
        if (floatScores.Count != quantScores.Count)
            throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidData,
                $"The metric '{measure}' gave {floatScores.Count} values for the float model and {quantScores.Count} for the quantized one.", measure);
        int n = floatScores.Count;
        if (n == 0)
            throw new PtqException("MetricEmpty", PtqErrorKind.InvalidData, $"The metric '{measure}' gave no values.", measure);
        var d = new double[n];
        double fSum = 0, qSum = 0;
        for (int i = 0; i < n; i++)
        {
            if (!double.IsFinite(floatScores[i]) || !double.IsFinite(quantScores[i]))
                throw new PtqException("MetricNotFinite", PtqErrorKind.InvalidData, $"The metric '{measure}' gave a value that is not finite for sample {i}.", measure);
            fSum += floatScores[i];
            qSum += quantScores[i];
            d[i] = floatScores[i] - quantScores[i];
        }
        var result = new PairedDifference
        {
            Measure = measure, SampleCount = n, Float = fSum / n, Quantized = qSum / n, Drop = (fSum - qSum) / n,
        };
        if (n == 1)
        {
            result.Method = "single value: no interval";
            return result;
        }
        var (low, high) = BootstrapMeanInterval(d, 0.95, BootstrapResamples, seed);
        result.DropLow = low;
        result.DropHigh = high;
        result.Significant = low > 0 || high < 0;
        result.Method = $"paired bootstrap, {BootstrapResamples} resamples, 95%";
        bool binary = true;
        int b = 0, c = 0;
        for (int i = 0; i < n && binary; i++)
        {
            double f = floatScores[i], q = quantScores[i];
            binary = f is 0 or 1 && q is 0 or 1;
            if (f == 1 && q == 0) b++;
            else if (f == 0 && q == 1) c++;
        }
        if (binary)
        {
            result.FloatOnly = b;
            result.QuantizedOnly = c;
            result.McNemarPValue = McNemarExact(b, c);
            result.Method += "; exact McNemar test";
        }
        return result;
    }

    /// <summary>Percentile bootstrap interval of the mean of paired differences.</summary>
    public static (double Low, double High) BootstrapMeanInterval(IReadOnlyList<double> differences, double level, int resamples, int seed)
    {
        int n = differences.Count;
        var random = new Random(seed);
        var means = new double[resamples];
        for (int r = 0; r < resamples; r++)
        {
            double sum = 0;
            for (int i = 0; i < n; i++) sum += differences[random.Next(n)];
            means[r] = sum / n;
        }
        Array.Sort(means);
        double alpha = (1 - level) / 2;
        return (Quantile(means, alpha), Quantile(means, 1 - alpha));
    }

    /// <summary>Two-sided exact McNemar p-value: the discordant pairs b and c against Binomial(b + c, 1/2).</summary>
    public static double McNemarExact(int b, int c)
    {
        int n = b + c;
        if (n == 0) return 1;
        int k = Math.Min(b, c);
        // P(X <= k) for X ~ Binomial(n, 1/2), summed in log space so large n does not overflow.
        double logHalfN = n * Math.Log(0.5), cdf = 0, logC = 0;
        for (int i = 0; i <= k; i++)
        {
            if (i > 0) logC += Math.Log(n - i + 1) - Math.Log(i);
            cdf += Math.Exp(logC + logHalfN);
        }
        return Math.Min(1, 2 * cdf);
    }

    static double Quantile(double[] sorted, double q)
    {
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos), hi = (int)Math.Ceiling(pos);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }
}
