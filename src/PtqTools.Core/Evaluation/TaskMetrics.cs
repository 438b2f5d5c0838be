using System.Numerics;
using PtqTools.Core.Runtime;

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

    /// <summary>Sentence embeddings from token states: each output (tokens x <paramref name="width"/> values, as
    /// last_hidden_state of a sample whose tokens are all attended) averaged over its tokens.</summary>
    public static float[][] MeanPooled(float[][] outputs, int width)
    {
        if (width < 1) throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"The embedding width must be at least 1, not {width}.", width);
        return outputs.Select((o, n) =>
        {
            if (o.Length == 0 || o.Length % width != 0)
                throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidArgument, $"Output {n} has {o.Length} values, not a whole number of tokens of {width}.", n);
            int tokens = o.Length / width;
            var e = new double[width];
            for (int t = 0; t < tokens; t++) for (int j = 0; j < width; j++) e[j] += o[t * width + j];
            return e.Select(v => (float)(v / tokens)).ToArray();
        }).ToArray();
    }

    /// <summary>Per sample, the cosine between this model's embedding (mean-pooled over tokens when
    /// <paramref name="width"/> is given) and a reference embedding, usually the float model's: 1 is a perfect copy.
    /// As a -Metric its drop (float minus quantized) is one minus the quantized model's mean cosine.</summary>
    public static double[] CosineToReference(float[][] outputs, float[][] reference, int width = 0)
    {
        if (outputs.Length != reference.Length)
            throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidArgument, $"{outputs.Length} outputs for {reference.Length} reference embeddings.", reference);
        var e = width > 0 ? MeanPooled(outputs, width) : outputs;
        var result = new double[e.Length];
        for (int i = 0; i < e.Length; i++)
        {
            double ab = Dot(e[i], reference[i]), aa = Dot(e[i], e[i]), bb = Dot(reference[i], reference[i]);
            result[i] = aa == 0 || bb == 0 ? 0 : Math.Clamp(ab / Math.Sqrt(aa * bb), -1, 1);
        }
        return result;
    }

    /// <summary>Spearman rank correlation between two models' cosine similarities over all pairs of samples: whether
    /// the quantized embeddings order sentence pairs as the reference does (1 is the same order).</summary>
    public static double PairwiseSpearman(float[][] embeddings, float[][] reference)
    {
        if (embeddings.Length != reference.Length || embeddings.Length < 3)
            throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidArgument, $"Pairwise similarities need the same 3 or more samples on both sides, not {embeddings.Length} and {reference.Length}.", reference);
        static double[] Similarities(float[][] rows)
        {
            var unit = Normalize(rows);
            var sims = new List<double>(rows.Length * (rows.Length - 1) / 2);
            for (int i = 0; i < unit.Length; i++) for (int j = i + 1; j < unit.Length; j++) sims.Add(Dot(unit[i], unit[j]));
            return sims.ToArray();
        }
        var a = Ranks(Similarities(embeddings));
        var b = Ranks(Similarities(reference));
        double ma = a.Average(), mb = b.Average(), num = 0, da = 0, db = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - ma) * (b[i] - mb); da += (a[i] - ma) * (a[i] - ma); db += (b[i] - mb) * (b[i] - mb); }
        return da == 0 || db == 0 ? 0 : num / Math.Sqrt(da * db);
    }

    /// <summary>Ranks from 1, ties given their mean rank.</summary>
    internal static double[] Ranks(double[] values)
    {
        var order = Enumerable.Range(0, values.Length).OrderBy(i => values[i]).ToArray();
        var ranks = new double[values.Length];
        for (int i = 0; i < order.Length;)
        {
            int j = i;
            while (j + 1 < order.Length && values[order[j + 1]] == values[order[i]]) j++;
            for (int k = i; k <= j; k++) ranks[order[k]] = (i + j) / 2.0 + 1;
            i = j + 1;
        }
        return ranks;
    }

    // ---- Metrics of issue 17: padded text, CTC recognizers, per-frame detectors, probability maps ----

    /// <summary>A sentence embedding from token states (tokens x <paramref name="width"/>) averaged over the tokens
    /// whose attention mask is non-zero only, as sentence-transformers pools padded batches. All-zero mask: zeros.</summary>
    public static float[] MaskedMeanPooled(float[] hidden, long[] mask, int width)
    {
        if (width < 1 || hidden.Length != mask.Length * width)
            throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidArgument, $"{hidden.Length} values are not {mask.Length} tokens of {width}.", width);
        // The tokens that count are TokenMask's (mask non-zero), as everywhere figures leave padding out.
        var kept = TokenMask.Keep(hidden, mask);
        int n = kept.Length / width;
        var e = new double[width];
        for (int t = 0; t < n; t++)
            for (int j = 0; j < width; j++) e[j] += kept[t * width + j];
        return e.Select(v => n == 0 ? 0f : (float)(v / n)).ToArray();
    }

    /// <summary>CTC greedy (best-path) decoding of per-frame class scores (frames x <paramref name="classes"/>): the
    /// top class of each frame, repeats collapsed, then blanks dropped.</summary>
    public static int[] CtcGreedyDecode(float[] scores, int classes, int blank = 0)
    {
        if (classes < 2 || scores.Length % classes != 0)
            throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidArgument, $"{scores.Length} scores are not a whole number of frames of {classes} classes.", classes);
        var result = new List<int>();
        int previous = -1;
        for (int f = 0; f < scores.Length / classes; f++)
        {
            int best = 0;
            for (int c = 1; c < classes; c++) if (scores[f * classes + c] > scores[f * classes + best]) best = c;
            if (best != previous && best != blank) result.Add(best);
            previous = best;
        }
        return result.ToArray();
    }

    /// <summary>Levenshtein distance (insertions, deletions and substitutions cost 1).</summary>
    public static int EditDistance(IReadOnlyList<int> a, IReadOnlyList<int> b)
    {
        var row = new int[b.Count + 1];
        for (int j = 0; j <= b.Count; j++) row[j] = j;
        for (int i = 1; i <= a.Count; i++)
        {
            int diagonal = row[0];
            row[0] = i;
            for (int j = 1; j <= b.Count; j++)
            {
                int up = row[j];
                row[j] = Math.Min(Math.Min(row[j] + 1, row[j - 1] + 1), diagonal + (a[i - 1] == b[j - 1] ? 0 : 1));
                diagonal = up;
            }
        }
        return row[b.Count];
    }

    /// <summary>Character error rate of decoded sequences against references (usually the float model's decode):
    /// the sum of edit distances over the sum of reference lengths (0 when both are empty everywhere).</summary>
    public static double CharacterErrorRate(IReadOnlyList<int[]> decoded, IReadOnlyList<int[]> reference)
    {
        if (decoded.Count != reference.Count)
            throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidArgument, $"{decoded.Count} decodes for {reference.Count} references.", reference);
        long edits = 0, length = 0;
        for (int i = 0; i < decoded.Count; i++) { edits += EditDistance(decoded[i], reference[i]); length += reference[i].Length; }
        return length == 0 ? (edits == 0 ? 0 : 1) : edits / (double)length;
    }

    /// <summary>Area under the ROC curve of scores against binary labels (the probability that a random positive
    /// scores above a random negative, ties counting half), by ranks in O(n log n). NaN without both classes.</summary>
    public static double Auc(IReadOnlyList<double> scores, IReadOnlyList<bool> positive)
    {
        if (scores.Count != positive.Count)
            throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidArgument, $"{scores.Count} scores for {positive.Count} labels.", positive);
        long p = positive.Count(x => x), n = positive.Count - p;
        if (p == 0 || n == 0) return double.NaN;
        var ranks = Ranks(scores.ToArray());
        double sum = 0;
        for (int i = 0; i < ranks.Length; i++) if (positive[i]) sum += ranks[i];
        return (sum - p * (p + 1) / 2.0) / ((double)p * n);
    }

    /// <summary>The scalar reference of <see cref="Auc"/>: every positive-negative pair compared.</summary>
    internal static double AucReference(IReadOnlyList<double> scores, IReadOnlyList<bool> positive)
    {
        double wins = 0;
        long pairs = 0;
        for (int i = 0; i < scores.Count; i++)
            for (int j = 0; j < scores.Count; j++)
            {
                if (!positive[i] || positive[j]) continue;
                pairs++;
                wins += scores[i] > scores[j] ? 1 : scores[i] == scores[j] ? 0.5 : 0;
            }
        return pairs == 0 ? double.NaN : wins / pairs;
    }

    /// <summary>The share of values on the same side of <paramref name="threshold"/> in both (per-frame decisions).</summary>
    public static double DecisionAgreement(IReadOnlyList<float> values, IReadOnlyList<float> reference, float threshold = 0.5f)
    {
        if (values.Count != reference.Count || values.Count == 0)
            throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidArgument, $"{values.Count} decisions for {reference.Count} reference decisions.", reference);
        int same = 0;
        for (int i = 0; i < values.Count; i++) if (values[i] >= threshold == reference[i] >= threshold) same++;
        return same / (double)values.Count;
    }

    /// <summary>Intersection over union of two probability maps binarized at <paramref name="threshold"/> (value at
    /// or above it is in): 1 when both are empty.</summary>
    public static double MapIoU(IReadOnlyList<float> map, IReadOnlyList<float> reference, float threshold = 0.3f)
    {
        if (map.Count != reference.Count)
            throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidArgument, $"A map of {map.Count} values against one of {reference.Count}.", reference);
        long both = 0, either = 0;
        for (int i = 0; i < map.Count; i++)
        {
            bool a = map[i] >= threshold, b = reference[i] >= threshold;
            if (a && b) both++;
            if (a || b) either++;
        }
        return either == 0 ? 1 : both / (double)either;
    }
}
