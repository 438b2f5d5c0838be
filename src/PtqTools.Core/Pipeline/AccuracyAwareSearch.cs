using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Pipeline;

/// <summary>
/// Accuracy-aware quantization: quantizes everything, and when the task metric drops by more than the goal, keeps the
/// layers that hurt most by themselves (LayerErrorAnalyzer's ranking) in float, more of them each round (1, 2, 4, ...
/// then a bisection back down), until the goal is met or the time budget is spent. Of the candidates that meet the
/// goal it returns the fastest (measured, when there are several; without timeCandidates the one with the fewest layers
/// in float, so that the same inputs give the same file), else the best one found with GoalMet false and the
/// reason. Every candidate is measured in ONNX Runtime with all optimizations, as it will be deployed, and the model
/// written is the very file that was measured.
/// The float model and the fully quantized one are always measured (nothing can be said without them); every later
/// step runs under the time budget and is interrupted when it runs out, so the search ends at the budget plus the
/// copy of the chosen file. A candidate that fails is recorded and skipped: the search itself never fails at the end.
/// </summary>
public static class AccuracyAwareSearch
{
    /// <summary>Samples of the evaluation set used for the layer ranking (the ranking runs one model per layer).</summary>
    public const int RankingSamples = 16;

    /// <summary>Latency runs per candidate when several meet the goal (after 3 warm-up runs).</summary>
    const int LatencyRuns = 30;

    /// <summary>How much faster (a fraction) a candidate with more layers in float must be to be preferred.</summary>
    const double ClearlyFaster = 0.10;

    public static QuantizationResult Run(PreparedModel prepared, IReadOnlyCollection<TensorStatistics> statistics, QuantizationOptions options,
        string outputPath, PtqDataSet evaluation, TaskMetric? metric, double maxDrop, TimeSpan timeBudget, int threads,
        IProgress<RunProgress>? progress, CancellationToken cancel, bool timeCandidates = true)
    {
        options.Validate();
        if (!(maxDrop >= 0) || double.IsInfinity(maxDrop))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"The maximum accuracy drop must be a finite number >= 0, not {maxDrop}.", maxDrop);
        if (timeBudget <= TimeSpan.Zero)
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"The time budget must be positive, not {timeBudget}.", timeBudget);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        // The budget as a token: it interrupts a ranking or a candidate midway, not only between steps.
        using var budget = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        budget.CancelAfter(timeBudget > TimeSpan.FromDays(24) ? TimeSpan.FromDays(24) : timeBudget);
        var (plan, _) = Quantizer.Plan(prepared, statistics, options);
        if (plan.QuantizedLayers.Count == 0)
            throw new PtqException("NothingToQuantize", PtqErrorKind.InvalidArgument, $"None of the layers in the pipeline can be quantized in '{prepared.SourcePath}'.", prepared.SourcePath);
        bool subgraphLayers = plan.QuantizedNodes(new GraphView(prepared.Model.Graph)).Any(l => l.View.Scope.Length > 0);
        string rankedBy = "";

        var samples = new List<Sample>();
        using (var reader = new SampleReader(evaluation))
            foreach (var s in reader.Read(cancel)) samples.Add(s);
        if (samples.Count == 0)
            throw new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, $"The evaluation data set '{evaluation.Name}' has no samples.", evaluation.Name);
        var labels = samples.Select(s => s.Label).ToArray();
        float[][] floatOutputs;
        // A model with an attention mask: the metric sees its first output at the tokens that count only (TokenMask),
        // the float model's and every candidate's alike.
        TokenMask? mask;
        long[]?[] masks;
        using (var runner = new OrtRunner(File.ReadAllBytes(prepared.PreparedPath), prepared.SourcePath, threads))
        {
            mask = runner.TokenMask;
            masks = samples.Select(s => mask?.Read(s)).ToArray();
            floatOutputs = samples.Select((s, i) => Masked(runner.Run(s, cancel)[0], i)).ToArray();
        }
        float[] Masked(float[] output, int i) => mask is null ? output : mask.Keep(output, 0, masks[i]);
        metric ??= DefaultMetric(evaluation, floatOutputs, labels);
        var floatScores = metric(floatOutputs, labels);

        var tempFolder = Path.Combine(Path.GetTempPath(), "ptq-search-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(tempFolder);
        try
        {
            var candidates = new List<SearchCandidate>();
            var drops = new Dictionary<SearchCandidate, PairedDifference>();
            // Files of the candidates still in the running: those that meet the goal, and the best miss so far.
            var files = new Dictionary<SearchCandidate, (string Path, QuantizationResult? Result)>();
            bool OutOfTime() => budget.IsCancellationRequested || clock.Elapsed >= timeBudget;
            bool Met(SearchCandidate c) => c.Drop is double d && d <= maxDrop;
            SearchCandidate? Evaluate(string[] kept, CancellationToken token)
            {
                var c = new SearchCandidate { Round = candidates.Count, FloatLayerCount = kept.Length, KeptInFloat = kept };
                candidates.Add(c);
                var path = Path.Combine(tempFolder, $"candidate-{c.Round}.onnx");
                QuantizationResult? result = null;
                try
                {
                    PairedDifference d;
                    if (kept.Length >= plan.QuantizedLayers.Count)
                    {
                        // Nothing left to quantize: the float model itself, whose drop is zero by definition.
                        File.Copy(prepared.SourcePath, path);
                        d = PairedStatistics.Compare("metric", floatScores, floatScores);
                    }
                    else
                    {
                        result = QuantizationPipeline.Run(prepared, Without(statistics, kept), options, path, token);
                        float[][] q;
                        using (var runner = OrtRunner.FromFile(path, threads))
                            q = samples.Select((s, i) => Masked(runner.Run(s, token)[0], i)).ToArray();
                        d = PairedStatistics.Compare("metric", floatScores, metric(q, labels));
                    }
                    c.Drop = d.Drop; c.DropLow = d.DropLow; c.DropHigh = d.DropHigh;
                    c.MeetsGoal = Met(c);
                    files[c] = (path, result);
                    // Keep every file that meets the goal (the fastest is chosen at the end) and the best miss only.
                    foreach (var loser in files.Keys.Where(o => !o.MeetsGoal && o != Best(files.Keys)).ToList())
                    {
                        File.Delete(files[loser].Path);
                        files.Remove(loser);
                    }
                    progress?.Report(new RunProgress(candidates.Count, 0, 0, $"{kept.Length} layer(s) in float: drop {d.Drop:0.####}"));
                    drops[c] = d;
                    return c;
                }
                catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
                {
                    c.Error = "interrupted by the time budget";
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    c.Error = $"failed: {ex.Message}";
                }
                try { File.Delete(path); } catch (IOException) { }
                return null;
            }

            string? stopReason = null;
            // The fully quantized model is measured whatever the budget: without it nothing can be said.
            var plain = Evaluate(Array.Empty<string>(), cancel);
            if (plain is null) stopReason = "the fully quantized model could not be measured (" + candidates[0].Error + ")";
            if (plain is null || !Met(plain))
            {
                string[]? ranking = null;
                if (OutOfTime()) stopReason ??= "the time budget was spent on the fully quantized model";
                else
                {
                    try
                    {
                        // A model with layers inside If/Loop/Scan subgraphs: each layer by what it costs the metric when
                        // it alone is quantized (the models the layer analysis runs anyway), then by the SQNR at the
                        // model's output. A branch layer runs on some samples only, and a metric of decisions (a
                        // detector's per-frame speech/non-speech) flips on errors that the SQNR ranks as small: on the
                        // VAD of issue 17 the SQNR order put the layers that flip decisions last. Other models keep the
                        // SQNR order (the same inputs write the same file as before).
                        var ranked = Subset(evaluation, samples.Count);
                        var layerDrops = subgraphLayers ? new Dictionary<string, double>(StringComparer.Ordinal) : null;
                        string? metricFailed = null;
                        void Score(string layer, float[][] outputs)
                        {
                            if (layerDrops is null || metricFailed is not null) return;
                            try
                            {
                                // Samples past those ranked (at most RankingSamples) count as float's.
                                var all = Enumerable.Range(0, samples.Count).Select(i => i < outputs.Length ? Masked(outputs[i], i) : floatOutputs[i]).ToArray();
                                layerDrops[layer] = floatScores.Average() - metric!(all, labels).Average();
                            }
                            catch (Exception ex) when (ex is not OperationCanceledException) { metricFailed = ex.Message; }
                        }
                        var errors = LayerErrorAnalyzer.Run(prepared, statistics, options, ranked, threads, null, budget.Token, null, layerDrops is null ? null : Score);
                        if (metricFailed is not null) layerDrops = null;
                        // The layer analysis plans without the speed rules: the layers they keep in float are not candidates.
                        ranking = errors.Where(e => plan.QuantizedLayers.Contains(e.Layer))
                            .OrderByDescending(e => layerDrops is null ? 0 : Math.Round(layerDrops.GetValueOrDefault(e.Layer), 9))
                            .ThenBy(e => e.IsolatedOutputSqnrDb).ThenBy(e => e.Rank).Select(e => e.Layer).ToArray();
                        rankedBy = layerDrops is not null ? " Layers ranked by the metric's drop with each alone in int8 (the model has layers inside subgraphs)."
                            : metricFailed is not null ? $" Layers ranked by SQNR at the output: the metric failed on a model with one layer in int8 ({metricFailed})." : "";
                    }
                    catch (OperationCanceledException) when (!cancel.IsCancellationRequested) { stopReason = "the time budget ran out during the layer ranking"; }
                    catch (Exception ex) when (ex is not OperationCanceledException) { stopReason = $"the layer ranking failed: {ex.Message}"; }
                }
                if (ranking is not null)
                {
                    // Grow the float set 1, 2, 4, ... until the goal is met, then bisect between the last miss and the hit.
                    int miss = 0, hit = -1;
                    for (int k = Math.Min(1, ranking.Length); k > 0 && hit < 0; k = Math.Min(k * 2, ranking.Length))
                    {
                        if (OutOfTime()) { stopReason = "the time budget ran out"; break; }
                        var c = Evaluate(ranking[..k], budget.Token);
                        if (c is not null && Met(c)) hit = k; else miss = k;
                        if (k == ranking.Length) break;
                    }
                    while (hit > 0 && hit - miss > 1)
                    {
                        if (OutOfTime()) { stopReason = "the time budget ran out during the bisection"; break; }
                        int k = (miss + hit) / 2;
                        var c = Evaluate(ranking[..k], budget.Token);
                        if (c is not null && Met(c)) hit = k; else miss = k;
                    }
                    if (hit < 0 && stopReason is null)
                        stopReason = candidates.Any(c => c.Error is not null)
                            ? "candidates failed: " + string.Join("; ", candidates.Where(c => c.Error is not null).Select(c => c.ToString()))
                            : "even with every ranked layer in float the drop exceeds the goal";
                }
            }

            var meeting = files.Keys.Where(c => c.MeetsGoal).OrderBy(c => c.FloatLayerCount).ToList();
            SearchCandidate? best;
            string choice = "";
            if (meeting.Count > 1 && timeCandidates && !OutOfTime())
            {
                // Fewest layers in float is usually the fastest, but not always (a lone int8 layer among float ones
                // pays for its Q/DQ): time them, interleaved, and keep the fastest.
                try
                {
                    var runners = meeting.Select(c => OrtRunner.FromFile(files[c].Path, threads)).ToList();
                    try
                    {
                        var times = meeting.Select(_ => new List<double>()).ToList();
                        for (int round = 0; round < 3; round++)
                            for (int i = 0; i < meeting.Count; i++)
                                times[i].Add(runners[i].MeasureLatency(samples[0], LatencyRuns / 3 + 1, round == 0 ? 3 : 0, budget.Token).Median);
                        for (int i = 0; i < meeting.Count; i++) meeting[i].LatencyMs = Math.Round(times[i].OrderBy(t => t).ElementAt(1), 3);
                    }
                    finally { foreach (var r in runners) r.Dispose(); }
                    // Timings on a shared machine are noisy: another candidate replaces the one with the fewest layers in
                    // float only when it is clearly (more than 10%) faster.
                    var fewest = meeting[0];
                    var fastest = meeting.OrderBy(c => c.LatencyMs).First();
                    best = fastest.LatencyMs < fewest.LatencyMs * (1 - ClearlyFaster) ? fastest : fewest;
                    choice = $" (of the {meeting.Count} that meet it, {(best == fewest ? "the one with the fewest layers in float" : "the fastest")}: {best.LatencyMs:0.###} ms per sample, measured)";
                }
                catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
                {
                    foreach (var c in meeting) c.LatencyMs = null;
                    best = meeting[0];
                    choice = " (the time budget ran out before the candidates could be timed: the one with the fewest layers in float)";
                }
            }
            else best = meeting.FirstOrDefault() ?? Best(files.Keys);
            bool goalMet = meeting.Count > 0;

            QuantizationResult result;
            if (best is null)
            {
                // Nothing could be measured: the fully quantized model, written without a measurement, says so.
                result = QuantizationPipeline.Run(prepared, statistics, options, outputPath, cancel);
                result.KeptInFloat = Array.Empty<string>();
            }
            else
            {
                var (path, measured) = files[best];
                OnnxModelIO.WriteAtomically(outputPath, File.ReadAllBytes(path));
                result = measured ?? new QuantizationResult
                {
                    SourcePath = Path.GetFullPath(prepared.SourcePath), SourceSha256 = prepared.SourceSha256, OutputSha256 = prepared.SourceSha256,
                    Mode = "Float", SizeRatio = 1, SourceSizeBytes = new FileInfo(prepared.SourcePath).Length, OutputSizeBytes = new FileInfo(prepared.SourcePath).Length,
                };
                result.OutputPath = Path.GetFullPath(outputPath);
                result.KeptInFloat = best.KeptInFloat;
                result.AccuracyDrop = drops[best];
            }
            result.MaxAccuracyDrop = maxDrop;
            result.GoalMet = goalMet;
            result.CandidatesTried = candidates.Count;
            result.Candidates = candidates.ToArray();
            result.SearchSeconds = Math.Round(clock.Elapsed.TotalSeconds, 1);
            result.TimeBudgetSeconds = Math.Round(timeBudget.TotalSeconds, 1);
            var drop = result.AccuracyDrop;
            string figures = drop is null ? "no candidate could be measured" :
                $"drop {drop.Drop:0.####} (float {drop.Float:0.####}, quantized {drop.Quantized:0.####}" +
                (drop.DropLow is null ? ")" : $", 95% CI of the drop [{drop.DropLow:0.####}, {drop.DropHigh:0.####}])");
            string tail = $"{candidates.Count} candidate(s) in {clock.Elapsed.TotalSeconds:0.#} s of a {timeBudget.TotalSeconds:0.#} s budget.{rankedBy}";
            if (mask is not null && mask.PerToken[0]) tail += $" Padding excluded from the metric: tokens whose '{mask.Input}' is 0.";
            result.SearchSummary = goalMet
                ? $"Goal met: {figures} <= {maxDrop:0.####} with {result.KeptInFloat.Length} layer(s) kept in float{choice}; {tail}"
                : $"GOAL MISSED: {stopReason}. The best model found: {figures}, goal {maxDrop:0.####}, with {result.KeptInFloat.Length} layer(s) kept in float; {tail}";
            return result;
        }
        finally
        {
            try { Directory.Delete(tempFolder, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>The measured candidate with the smallest drop (fewest layers in float among equals).</summary>
    static SearchCandidate? Best(IEnumerable<SearchCandidate> measured) =>
        measured.Where(c => c.Drop is not null).OrderBy(c => c.Drop).ThenBy(c => c.FloatLayerCount).FirstOrDefault();

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
        // Held-out samples (the fidelity guard's) are at most 16 already; Count there counts the whole source.
        if (data.HoldOutEvery > 0) return data;
        var copy = data.Clone();
        copy.Count = Math.Min(RankingSamples, available);
        return copy;
    }
}
