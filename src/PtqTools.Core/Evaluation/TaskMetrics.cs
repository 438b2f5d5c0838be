using System.Numerics;

namespace PtqTools.Core.Evaluation;

/// <summary>A task metric over a model's first output on every evaluation sample: returns one score per sample
/// (paired intervals are then possible), or a single value.</summary>
public delegate double[] TaskMetric(float[][] outputs, int[] labels);

/// <summary>Task metrics usable from a -Metric script block (they are fast where PowerShell would not be).</summary>
public static class TaskMetrics
{
    /// <summary>
    /// Leave-one-out k-nearest-neighbour classification of embeddings by cosine similarity: each sample is classified
    /// by the majority label of its k most similar other samples (ties go to the label of the nearest among the tied).
    /// Returns 1 for each sample classified right, else 0. Samples with a negative label score 0 and never vote.
    /// </summary>
    public static double[] KnnCorrect(float[][] embeddings, int[] labels, int k = 5)
    {
        int n = embeddings.Length;
        if (labels.Length != n)
            throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidArgument, $"{labels.Length} labels for {n} embeddings.", labels);
        if (k < 1 || k >= n)
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"k must be between 1 and {n - 1} for {n} samples, not {k}.", k);
        var unit = Normalize(embeddings);
        var correct = new double[n];
        Parallel.For(0, n, i =>
        {
            if (labels[i] < 0) return;
            var best = new (double Sim, int Index)[k];
            for (int j = 0; j < k; j++) best[j] = (double.NegativeInfinity, -1);
            for (int j = 0; j < n; j++)
            {
                if (j == i || labels[j] < 0) continue;
                double s = Dot(unit[i], unit[j]);
                if (s <= best[k - 1].Sim) continue;
                int p = k - 1;
                while (p > 0 && best[p - 1].Sim < s) { best[p] = best[p - 1]; p--; }
                best[p] = (s, j);
            }
            correct[i] = Vote(best, labels) == labels[i] ? 1 : 0;
        });
        return correct;
    }

    /// <summary>The scalar reference of <see cref="KnnCorrect"/>: full sort of all similarities per sample.</summary>
    internal static double[] KnnCorrectReference(float[][] embeddings, int[] labels, int k)
    {
        int n = embeddings.Length;
        var correct = new double[n];
        for (int i = 0; i < n; i++)
        {
            if (labels[i] < 0) continue;
            var sims = new List<(double Sim, int Index)>();
            for (int j = 0; j < n; j++)
            {
                if (j == i || labels[j] < 0) continue;
                double dot = 0, a = 0, b = 0;
                for (int t = 0; t < embeddings[i].Length; t++)
                {
                    dot += (double)embeddings[i][t] * embeddings[j][t];
                    a += (double)embeddings[i][t] * embeddings[i][t];
                    b += (double)embeddings[j][t] * embeddings[j][t];
                }
                sims.Add((a == 0 || b == 0 ? 0 : dot / Math.Sqrt(a * b), j));
            }
            var best = sims.OrderByDescending(s => s.Sim).ThenBy(s => s.Index).Take(k).ToArray();
            correct[i] = Vote(best, labels) == labels[i] ? 1 : 0;
        }
        return correct;
    }

    static int Vote((double Sim, int Index)[] neighbours, int[] labels)
    {
        var counts = new Dictionary<int, int>();
        foreach (var (_, j) in neighbours) if (j >= 0) counts[labels[j]] = counts.GetValueOrDefault(labels[j]) + 1;
        if (counts.Count == 0) return -1;
        int top = counts.Values.Max();
        // Neighbours are ordered nearest first: the first whose label has the top count wins a tie.
        foreach (var (_, j) in neighbours) if (j >= 0 && counts[labels[j]] == top) return labels[j];
        return -1;
    }

    static float[][] Normalize(float[][] rows) => rows.Select(r =>
    {
        double norm = 0;
        foreach (var v in r) norm += (double)v * v;
        float inv = norm == 0 ? 0 : (float)(1 / Math.Sqrt(norm));
        return r.Select(v => v * inv).ToArray();
    }).ToArray();

    static double Dot(float[] a, float[] b)
    {
        if (a.Length != b.Length)
            throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidArgument, $"Embeddings of different sizes ({a.Length} and {b.Length}).", null);
        var acc = Vector<float>.Zero;
        int i = 0, w = Vector<float>.Count;
        for (; i <= a.Length - w; i += w) acc += new Vector<float>(a, i) * new Vector<float>(b, i);
        double sum = Vector.Sum(acc);
        for (; i < a.Length; i++) sum += a[i] * b[i];
        return sum;
    }

    /// <summary>1 for each sample whose class scores rank its label first (k = 1) or among the first k.</summary>
    public static double[] TopKCorrect(float[][] scores, int[] labels, int k = 1)
    {
        var result = new double[scores.Length];
        for (int i = 0; i < scores.Length; i++) result[i] = labels[i] >= 0 && InTopK(scores[i], labels[i], k) ? 1 : 0;
        return result;
    }

    internal static bool InTopK(ReadOnlySpan<float> scores, int label, int k)
    {
        if (label < 0 || label >= scores.Length) return false;
        float v = scores[label];
        int higher = 0;
        // Ties count against: a label tied with others is not ranked above them.
        for (int i = 0; i < scores.Length; i++) if (i != label && (scores[i] > v || (scores[i] == v && i < label))) higher++;
        return higher < k;
    }
}
