namespace PtqTools.TestModels;

/// <summary>Principal directions of feature vectors (subspace iteration on the covariance): a trained head reads the
/// directions in which its features vary most, so its logits are not amplified feature noise.</summary>
public static class Pca
{
    /// <summary>The top <paramref name="k"/> unit directions (each of length d) and their variances, largest first.</summary>
    public static (double[][] Directions, double[] Variances) Top(IReadOnlyList<float[]> rows, int k, int seed = 1)
    {
        int d = rows[0].Length;
        var mean = new double[d];
        foreach (var r in rows) for (int i = 0; i < d; i++) mean[i] += r[i] / (double)rows.Count;
        var cov = new double[d, d];
        foreach (var r in rows)
            for (int i = 0; i < d; i++)
            {
                double a = r[i] - mean[i];
                for (int j = 0; j < d; j++) cov[i, j] += a * (r[j] - mean[j]) / rows.Count;
            }
        var rnd = new Random(seed);
        var q = Enumerable.Range(0, k).Select(_ => Enumerable.Range(0, d).Select(_ => rnd.NextDouble() - 0.5).ToArray()).ToArray();
        for (int it = 0; it < 200; it++)
        {
            for (int c = 0; c < k; c++)
            {
                var v = new double[d];
                for (int i = 0; i < d; i++) for (int j = 0; j < d; j++) v[i] += cov[i, j] * q[c][j];
                q[c] = v;
            }
            // Gram-Schmidt keeps the order: the first column converges to the largest direction.
            for (int c = 0; c < k; c++)
            {
                for (int p = 0; p < c; p++) { double dot = Dot(q[c], q[p]); for (int i = 0; i < d; i++) q[c][i] -= dot * q[p][i]; }
                double n = Math.Sqrt(Dot(q[c], q[c]));
                for (int i = 0; i < d; i++) q[c][i] = n == 0 ? 0 : q[c][i] / n;
            }
        }
        var variances = q.Select(v => { double s = 0; for (int i = 0; i < d; i++) for (int j = 0; j < d; j++) s += v[i] * cov[i, j] * v[j]; return s; }).ToArray();
        return (q, variances);
    }

    static double Dot(double[] a, double[] b) { double s = 0; for (int i = 0; i < a.Length; i++) s += a[i] * b[i]; return s; }

    /// <summary>A head weight [d, outputs] (outputs the fast axis) whose columns are random mixtures of the top
    /// <paramref name="k"/> principal directions, each direction weighted by its standard deviation's inverse square root.</summary>
    public static float[] HeadWeight(IReadOnlyList<float[]> features, int outputs, int k, int seed)
    {
        int d = features[0].Length;
        var (dirs, vars) = Top(features, Math.Min(k, d), seed);
        var rnd = new Random(seed + 1);
        var w = new float[d * outputs];
        for (int o = 0; o < outputs; o++)
            for (int j = 0; j < dirs.Length; j++)
            {
                double g = (rnd.NextDouble() * 2 - 1) / Math.Sqrt(Math.Sqrt(Math.Max(vars[j], 1e-12)));
                for (int i = 0; i < d; i++) w[i * outputs + o] += (float)(g * dirs[j][i]);
            }
        return w;
    }
}
