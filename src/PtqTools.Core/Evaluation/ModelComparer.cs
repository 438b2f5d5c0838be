using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Evaluation;

/// <summary>Runs a float and a quantized model on the same samples and measures how far apart they are,
/// how accurate each is when labels are known, and how fast each runs in ONNX Runtime. With a target, the quantized
/// model's outputs come from the PtqTools engine emulating that CPU class's ONNX Runtime int8 arithmetic (the float
/// model and every latency stay ONNX Runtime's on this host).</summary>
public static class ModelComparer
{
    /// <param name="classScores">Whether the first output holds class scores; null decides from the data set: an
    /// output with one value per labelled class is read as scores.</param>
    /// <param name="target">The CPU class to emulate for the quantized model's outputs (the engine runs it); null runs it
    /// in ONNX Runtime on this host.</param>
    public static AccuracyReport Compare(string floatPath, string quantizedPath, PtqDataSet data, int threads, int latencyRuns,
        bool? classScores, IProgress<RunProgress>? progress, CancellationToken cancel, TaskMetric? metric = null, string metricName = "Metric",
        EngineTarget? target = null)
    {
        using var floatRunner = OrtRunner.FromFile(floatPath, threads);
        using var quantRunner = OrtRunner.FromFile(quantizedPath, threads);
        if (!floatRunner.OutputNames.SequenceEqual(quantRunner.OutputNames))
            throw new PtqException("OutputsDiffer", PtqErrorKind.InvalidData,
                $"The models' outputs differ: [{string.Join(", ", floatRunner.OutputNames)}] vs [{string.Join(", ", quantRunner.OutputNames)}].", quantizedPath);
        // With a target the engine computes the quantized outputs; ONNX Runtime's session stays for the latency.
        // (Not disposed here: IntegerEngine holds nothing to release; once it is IDisposable this becomes a using.)
        using var engine = target is null ? null : new IntegerEngine(OnnxModelIO.Load(quantizedPath), target.Options, Path.GetFileName(quantizedPath));
        if (engine is not null && quantRunner.OutputNames.FirstOrDefault(o => !engine.Outputs.Contains(o)) is { } missing)
            throw new PtqException("OutputsDiffer", PtqErrorKind.InvalidData, $"The engine does not produce the output '{missing}' of '{Path.GetFileName(quantizedPath)}'.", missing);
        float[][] RunQuantized(Sample sample)
        {
            if (engine is null) return quantRunner.Run(sample, cancel);
            var result = engine.Run(EngineParity.Feed(engine, sample), cancel);
            return quantRunner.OutputNames.Select(o => result[o].ToFloats()).ToArray();
        }
        int outputs = floatRunner.OutputNames.Length;
        var mask = floatRunner.TokenMask;
        var stats = Enumerable.Range(0, outputs).Select(_ => new OutputStats()).ToArray();
        int floatCorrect = 0, quantCorrect = 0, labelled = 0, n = 0;
        // Per-sample correctness (paired intervals) and, for a task metric, every sample's first output and label.
        List<double> f1 = new(), q1 = new(), f5 = new(), q5 = new();
        List<float[]> floatRows = new(), quantRows = new();
        List<int> labels = new();
        bool? scores = null;
        int classes = 0;
        Sample? first = null;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using (var reader = new SampleReader(data))
        {
            foreach (var sample in reader.Read(cancel))
            {
                first ??= sample;
                // Per-token outputs of a model with an attention mask: only the tokens that count (TokenMask).
                var m = mask?.Read(sample);
                var f = floatRunner.Run(sample, cancel);
                var q = RunQuantized(sample);
                if (mask is not null) { f = mask.Keep(f, m); q = mask.Keep(q, m); }
                for (int k = 0; k < outputs; k++) stats[k].Add(f[k], q[k]);
                scores ??= classScores ?? (data.ClassCount > 1 && f[0].Length == data.ClassCount);
                classes = f[0].Length;
                if (scores.Value && sample.Label >= 0)
                {
                    labelled++;
                    if (ArgMax(f[0]) == sample.Label) floatCorrect++;
                    if (ArgMax(q[0]) == sample.Label) quantCorrect++;
                    f1.Add(ArgMax(f[0]) == sample.Label ? 1 : 0);
                    q1.Add(ArgMax(q[0]) == sample.Label ? 1 : 0);
                    f5.Add(TaskMetrics.InTopK(f[0], sample.Label, 5) ? 1 : 0);
                    q5.Add(TaskMetrics.InTopK(q[0], sample.Label, 5) ? 1 : 0);
                }
                if (metric is not null)
                {
                    floatRows.Add(f[0]);
                    quantRows.Add(q[0]);
                    labels.Add(sample.Label);
                }
                n++;
                progress?.Report(new RunProgress(n, data.Count, n / Math.Max(1e-9, clock.Elapsed.TotalSeconds), sample.Id));
            }
        }
        if (first is null)
            throw new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, $"The data set '{data.Name}' has no samples.", data.Name);
        var comparisons = floatRunner.OutputNames.Select((name, k) => stats[k].Result(name, k == 0 && scores == true)).ToArray();

        var (floatMs, _) = latencyRuns > 0 ? floatRunner.MeasureLatency(first, latencyRuns, Math.Min(5, latencyRuns), cancel) : (0, 0);
        var (quantMs, _) = latencyRuns > 0 ? quantRunner.MeasureLatency(first, latencyRuns, Math.Min(5, latencyRuns), cancel) : (0, 0);
        long floatSize = new FileInfo(floatPath).Length, quantSize = new FileInfo(quantizedPath).Length;
        // Top-5 means something only with more than 5 classes: otherwise every label is in the top 5.
        bool top5 = labelled > 0 && classes > 5;
        PairedDifference? metricDrop = null;
        if (metric is not null)
        {
            var labelArray = labels.ToArray();
            var fm = metric(floatRows.ToArray(), labelArray);
            cancel.ThrowIfCancellationRequested();
            var qm = metric(quantRows.ToArray(), labelArray);
            if (fm.Length != qm.Length || (fm.Length != n && fm.Length != 1))
                throw new PtqException("MetricLengthMismatch", PtqErrorKind.InvalidData,
                    $"The metric '{metricName}' must give one value per sample ({n}) or a single value; it gave {fm.Length} for the float model and {qm.Length} for the quantized one.", metricName);
            metricDrop = PairedStatistics.Compare(metricName, fm, qm);
        }
        return new AccuracyReport
        {
            FloatModel = Path.GetFullPath(floatPath),
            QuantizedModel = Path.GetFullPath(quantizedPath),
            Target = target?.Name ?? "",
            DataSet = data.Name,
            SampleCount = n,
            Cosine = comparisons[0].Cosine,
            SqnrDb = comparisons[0].SqnrDb,
            MaxAbsError = comparisons[0].MaxAbsError,
            Top1Agreement = comparisons[0].Top1Agreement,
            Outputs = comparisons,
            FloatAccuracy = labelled > 0 ? Math.Round((double)floatCorrect / labelled, 6) : null,
            QuantizedAccuracy = labelled > 0 ? Math.Round((double)quantCorrect / labelled, 6) : null,
            FloatTop5Accuracy = top5 ? Math.Round(f5.Average(), 6) : null,
            QuantizedTop5Accuracy = top5 ? Math.Round(q5.Average(), 6) : null,
            AccuracyDrop = labelled > 0 ? PairedStatistics.Compare("Top1Accuracy", f1, q1) : null,
            MetricName = metric is null ? null : metricName,
            FloatMetric = metricDrop?.Float,
            QuantizedMetric = metricDrop?.Quantized,
            MetricDrop = metricDrop,
            Threads = threads,
            FloatLatencyMs = Math.Round(floatMs, 3),
            QuantizedLatencyMs = Math.Round(quantMs, 3),
            Speedup = quantMs > 0 ? Math.Round(floatMs / quantMs, 3) : 0,
            FloatSizeBytes = floatSize,
            QuantizedSizeBytes = quantSize,
            SizeRatio = Math.Round((double)quantSize / floatSize, 4),
            PaddingExcluded = mask?.Text ?? "",
        };
    }

    internal static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    /// <summary>Running error figures of one output over all samples.</summary>
    internal sealed class OutputStats
    {
        double _cosineSum, _minCosine = 1, _signal, _noise, _absSum, _maxAbs;
        long _elements;
        int _samples, _agree;

        public void Add(ReadOnlySpan<float> reference, ReadOnlySpan<float> test)
        {
            if (reference.Length != test.Length)
                throw new PtqException("OutputsDiffer", PtqErrorKind.InvalidData, $"Output sizes differ ({reference.Length} vs {test.Length}).", null);
            double dot = 0, rr = 0, tt = 0;
            for (int i = 0; i < reference.Length; i++)
            {
                double r = reference[i], t = test[i], e = r - t;
                dot += r * t; rr += r * r; tt += t * t;
                _signal += r * r; _noise += e * e;
                double a = Math.Abs(e);
                _absSum += a;
                if (a > _maxAbs) _maxAbs = a;
            }
            double cosine = rr == 0 && tt == 0 ? 1 : rr == 0 || tt == 0 ? 0 : dot / Math.Sqrt(rr * tt);
            _cosineSum += cosine;
            _minCosine = Math.Min(_minCosine, cosine);
            _elements += reference.Length;
            _samples++;
            if (reference.Length > 1 && ArgMax(reference) == ArgMax(test)) _agree++;
        }

        public OutputComparison Result(string name, bool scores) => new()
        {
            Output = name,
            Cosine = Math.Round(_cosineSum / Math.Max(1, _samples), 6),
            MinCosine = Math.Round(_minCosine, 6),
            SqnrDb = Math.Round(_noise == 0 ? double.PositiveInfinity : 10 * Math.Log10(_signal / _noise), 3),
            MaxAbsError = _maxAbs,
            MeanAbsError = _absSum / Math.Max(1, _elements),
            Mse = _noise / Math.Max(1, _elements),
            Top1Agreement = scores ? Math.Round((double)_agree / Math.Max(1, _samples), 6) : null,
        };
    }
}
