using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Core.Evaluation;

/// <summary>
/// Accuracy-aware quantization: quantizes everything, and when the task metric drops by more than the goal, keeps the
/// layers that hurt most by themselves (LayerErrorAnalyzer's ranking) in float, more of them each round (1, 2, 4, ...
/// then a bisection back down), until the goal is met or the time budget is spent. Returns the model that meets the
/// goal with the fewest layers in float (the fastest), or else the best one found with GoalMet false and the reason.
/// Every candidate is measured in ONNX Runtime with all optimizations, as it will be deployed.
/// </summary>
public static class AccuracyAwareSearch
{
    /// <summary>Samples of the evaluation set used for the layer ranking (the ranking runs one model per layer).</summary>
    public const int RankingSamples = 16;

    public static QuantizationResult Run(PreparedModel prepared, IReadOnlyCollection<TensorStatistics> statistics, QuantizationOptions options,
        string outputPath, PtqDataSet evaluation, TaskMetric? metric, double maxDrop, TimeSpan timeBudget, int threads,
        IProgress<RunProgress>? progress, CancellationToken cancel)
    {
        options.Validate();
        if (!(maxDrop >= 0) || double.IsInfinity(maxDrop))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"The maximum accuracy drop must be a finite number >= 0, not {maxDrop}.", maxDrop);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (plan, _) = Quantizer.Plan(prepared, statistics, options);
        if (plan.QuantizedLayers.Count == 0)
            throw new PtqException("NothingToQuantize", PtqErrorKind.InvalidArgument, $"None of the layers in the pipeline can be quantized in '{prepared.SourcePath}'.", prepared.SourcePath);

        var samples = new List<Sample>();
        using (var reader = new SampleReader(evaluation))
            foreach (var s in reader.Read(cancel)) samples.Add(s);
        if (samples.Count == 0)
            throw new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, $"The evaluation data set '{evaluation.Name}' has no samples.", evaluation.Name);
        var labels = samples.Select(s => s.Label).ToArray();
        float[][] floatOutputs;
        using (var runner = new OrtRunner(File.ReadAllBytes(prepared.PreparedPath), prepared.SourcePath, threads))
            floatOutputs = samples.Select(s => runner.Run(s, cancel)[0]).ToArray();
        metric ??= DefaultMetric(evaluation, floatOutputs, labels);
        var floatScores = metric(floatOutputs, labels);

        var tempFolder = Path.Combine(Path.GetTempPath(), "ptq-search-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(tempFolder);
        try
        {
            var tried = new Dictionary<int, (PairedDifference Drop, string[] Kept)>();
            int round = 0;
            PairedDifference Evaluate(string[] kept)
            {
                cancel.ThrowIfCancellationRequested();
                var path = Path.Combine(tempFolder, $"candidate-{round++}.onnx");
                Quantizer.Run(prepared, Without(statistics, kept), options, path, cancel);
                float[][] q;
                using (var runner = OrtRunner.FromFile(path, threads))
                    q = samples.Select(s => runner.Run(s, cancel)[0]).ToArray();
                File.Delete(path);
                var d = PairedStatistics.Compare("metric", floatScores, metric(q, labels));
                progress?.Report(new RunProgress(round, 0, 0, $"{kept.Length} layer(s) in float: drop {d.Drop:0.####}"));
                return d;
            }
            bool Met(PairedDifference d) => d.Drop <= maxDrop;
            bool OutOfTime() => clock.Elapsed >= timeBudget;

            tried[0] = (Evaluate(Array.Empty<string>()), Array.Empty<string>());
            string[] ranking = Array.Empty<string>();
            string? stopReason = null;
            if (!Met(tried[0].Drop))
            {
                if (OutOfTime()) stopReason = "the time budget was spent on the fully quantized model";
                else
                {
                    var rankingData = Subset(evaluation, samples.Count);
                    ranking = LayerErrorAnalyzer.Run(prepared, statistics, options, rankingData, threads, null, cancel).Select(e => e.Layer).ToArray();
                    // Grow the float set 1, 2, 4, ... until the goal is met, then bisect between the last miss and the hit.
                    int miss = 0, hit = -1;
                    for (int k = 1; hit < 0; k = Math.Min(k * 2, ranking.Length))
                    {
                        if (OutOfTime()) { stopReason = "the time budget ran out"; break; }
                        var kept = ranking[..k];
                        tried[k] = (Evaluate(kept), kept);
                        if (Met(tried[k].Drop)) hit = k;
                        else miss = k;
                        if (k == ranking.Length) break;
                    }
                    while (hit > 0 && hit - miss > 1)
                    {
                        if (OutOfTime()) { stopReason = "the time budget ran out during the bisection"; break; }
                        int k = (miss + hit) / 2;
                        tried[k] = (Evaluate(ranking[..k]), ranking[..k]);
                        if (Met(tried[k].Drop)) hit = k; else miss = k;
                    }
                    if (hit < 0 && stopReason is null) stopReason = "even with every ranked layer in float the drop exceeds the goal";
                }
            }

            var meeting = tried.Where(t => Met(t.Value.Drop)).OrderBy(t => t.Key).ToList();
            var best = meeting.Count > 0 ? meeting[0] : tried.OrderBy(t => t.Value.Drop.Drop).ThenBy(t => t.Key).First();
            bool goalMet = meeting.Count > 0;
            QuantizationResult result;
            if (best.Value.Kept.Length == plan.QuantizedLayers.Count)
            {
                // Nothing left to quantize: the float model is the answer; write it as it is.
                OnnxModelIO.WriteAtomically(outputPath, File.ReadAllBytes(prepared.SourcePath));
                result = new QuantizationResult { SourcePath = Path.GetFullPath(prepared.SourcePath), SourceSha256 = prepared.SourceSha256, OutputPath = Path.GetFullPath(outputPath), OutputSha256 = prepared.SourceSha256, Mode = "Float", SizeRatio = 1 };
            }
            else
            {
                result = Quantizer.Run(prepared, Without(statistics, best.Value.Kept), options, outputPath, cancel);
            }
            var drop = best.Value.Drop;
            result.MaxAccuracyDrop = maxDrop;
            result.AccuracyDrop = drop;
            result.GoalMet = goalMet;
            result.KeptInFloat = best.Value.Kept;
            result.CandidatesTried = tried.Count;
            result.SearchSeconds = Math.Round(clock.Elapsed.TotalSeconds, 1);
            result.SearchSummary = goalMet
                ? $"Goal met: drop {drop.Drop:0.####} <= {maxDrop:0.####} (float {drop.Float:0.####}, quantized {drop.Quantized:0.####}, 95% CI of the drop [{drop.DropLow:0.####}, {drop.DropHigh:0.####}]) with {best.Value.Kept.Length} layer(s) kept in float; {tried.Count} candidate(s) in {clock.Elapsed.TotalSeconds:0.#} s."
                : $"GOAL MISSED: {stopReason}. The best model found drops {drop.Drop:0.####} (goal {maxDrop:0.####}; float {drop.Float:0.####}, quantized {drop.Quantized:0.####}) with {best.Value.Kept.Length} layer(s) kept in float; {tried.Count} candidate(s) in {clock.Elapsed.TotalSeconds:0.#} s.";
            return result;
        }
        finally
        {
            try { Directory.Delete(tempFolder, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>Top-1 accuracy against the labels when the first output holds one score per class.</summary>
    static TaskMetric DefaultMetric(PtqDataSet data, float[][] floatOutputs, int[] labels)
    {
        if (!labels.Any(l => l >= 0) || data.ClassCount < 2 || floatOutputs[0].Length != data.ClassCount)
            throw new PtqException("MetricRequired", PtqErrorKind.InvalidArgument,
                $"The evaluation data has no labels or the model's first output ({floatOutputs[0].Length} values) is not one score per class ({data.ClassCount}): give a metric (-Metric).", data.Name);
        return (outputs, l) => TaskMetrics.TopKCorrect(outputs, l, 1);
    }

    static List<TensorStatistics> Without(IReadOnlyCollection<TensorStatistics> statistics, string[] kept)
    {
        var keep = new HashSet<string>(kept, StringComparer.Ordinal);
        return statistics.Select(s => new TensorStatistics
        {
            ModelPath = s.ModelPath, ModelSha256 = s.ModelSha256, Tensor = s.Tensor, Layers = s.Layers.Where(l => !keep.Contains(l)).ToArray(),
            Method = s.Method, Min = s.Min, Max = s.Max, Mean = s.Mean, Std = s.Std, SampleCount = s.SampleCount, ElementCount = s.ElementCount,
            RangeMin = s.RangeMin, RangeMax = s.RangeMax,
        }).Where(s => s.Layers.Length > 0).ToList();
    }

    static PtqDataSet Subset(PtqDataSet data, int available)
    {
        var copy = data.Clone();
        copy.Count = Math.Min(RankingSamples, available);
        return copy;
    }
}
