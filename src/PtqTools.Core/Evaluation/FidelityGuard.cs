using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Core.Evaluation;

/// <summary>What the fidelity guard found for a written static model.</summary>
public sealed class FidelityCheck
{
    /// <summary>Passed; Searched (below the threshold, and the layer search met it by keeping layers in float);
    /// BelowThreshold (the search did not meet it in its budget: the best model found is written, with a warning);
    /// NotChecked (no samples, with the reason in <see cref="Summary"/>).</summary>
    public string Status { get; set; } = "NotChecked";
    public bool Passed => Status is "Passed" or "Searched";
    /// <summary>The threshold: every output's mean cosine to the float model's must reach it.</summary>
    public double MinCosine { get; set; }
    /// <summary>Samples the check ran, and where they came from (held out of calibration, or the calibration data).</summary>
    public int Samples { get; set; }
    public string SampleSource { get; set; } = "";
    /// <summary>The lowest mean cosine and SQNR over the model's outputs, of the model first written.</summary>
    public double Cosine { get; set; }
    public double SqnrDb { get; set; }
    /// <summary>The same for the model finally written (after the search, when it ran).</summary>
    public double FinalCosine { get; set; }
    public double FinalSqnrDb { get; set; }
    /// <summary>Float latency over the written model's, 1 thread, ONNX Runtime on this host (above 1: faster).</summary>
    public double Speedup { get; set; }
    public double SizeRatio { get; set; }
    /// <summary>The layers the search ranked as hurting the output most, worst first (when it ran).</summary>
    public ValueList<string> WorstLayers { get; set; } = new();
    /// <summary>The layers the search kept in float.</summary>
    public ValueList<string> KeptInFloat { get; set; } = new();
    /// <summary>Per output, the written model against float.</summary>
    public ValueList<OutputComparison> Outputs { get; set; } = new();
    public string Summary { get; set; } = "";

    public override string ToString() => $"{Status}: cosine {FinalCosine:0.####} (threshold {MinCosine})";
}

/// <summary>
/// The fidelity guard every static quantization runs by default: the written model against the float model on
/// calibration samples held out of calibration (every <see cref="HoldOutEvery"/>-th sample of the data set), output by
/// output. Below the threshold it runs the layer search (<see cref="AccuracyAwareSearch"/>, with the output cosine to
/// float as its metric) within a time budget, and the result says what happened: the written model never looks like a
/// success it is not.
/// </summary>
public static class FidelityGuard
{
    /// <summary>The default threshold on every output's mean cosine to float.</summary>
    public const double DefaultMinCosine = 0.99;

    /// <summary>Every this-many-th sample (by index in the source) is held out of calibration.</summary>
    public const int HoldOutEvery = 10;

    /// <summary>Samples the check runs at most.</summary>
    public const int MaxSamples = 16;

    /// <summary>Latency runs of each model for the speed figure (after 2 warm-up runs).</summary>
    const int LatencyRuns = 10;

    /// <summary>The default time budget of the search when the check fails.</summary>
    public static readonly TimeSpan DefaultTimeBudget = TimeSpan.FromMinutes(2);

    /// <summary>The calibration part of a data set (the held-out samples removed), or the data set itself when it
    /// cannot be split (a script data set, or one too small to hold out from).</summary>
    public static PtqDataSet CalibrationPart(PtqDataSet data)
    {
        if (!CanHoldOut(data)) return data;
        var part = data.Clone();
        part.HoldOutEvery = HoldOutEvery;
        part.HeldOut = false;
        return part;
    }

    /// <summary>The held-out samples of a data set (at most <see cref="MaxSamples"/>), or null when it holds none out.</summary>
    public static PtqDataSet? HeldOutPart(PtqDataSet data)
    {
        if (!CanHoldOut(data)) return null;
        var part = data.Clone();
        part.HoldOutEvery = HoldOutEvery;
        part.HeldOut = true;
        return part;
    }

    /// <summary>A data set holds samples out when it is read from stored samples and has at least 2 x HoldOutEvery.</summary>
    static bool CanHoldOut(PtqDataSet data) => data.Kind != "Script" && data.HoldOutEvery == 0 && data.Count >= 2 * HoldOutEvery;

    /// <summary>Checks a written static model and, below the threshold, searches; returns the result of what is
    /// finally written (the search's, when it ran) with <see cref="QuantizationResult.Fidelity"/> set.</summary>
    /// <param name="heldOut">Samples held out of calibration; null to check on <paramref name="fallback"/> (the
    /// calibration data), or not at all when both are null.</param>
    public static QuantizationResult Run(PreparedModel prepared, IReadOnlyCollection<TensorStatistics> statistics, QuantizationOptions options,
        QuantizationResult written, PtqDataSet? heldOut, PtqDataSet? fallback, double minCosine, TimeSpan budget, int threads,
        IProgress<Calibration.RunProgress>? progress, CancellationToken cancel)
    {
        var check = new FidelityCheck { MinCosine = minCosine, SizeRatio = written.SizeRatio };
        written.Fidelity = check;
        var data = heldOut ?? fallback;
        if (data is null)
        {
            check.Summary = "Fidelity not checked: no samples (the statistics came without their data set: give -DataSet).";
            return written;
        }
        check.SampleSource = heldOut is not null ? $"{heldOut.Name}: every {HoldOutEvery}th sample, held out of calibration" : $"{data.Name}: calibration samples (too few to hold any out)";
        var sample = data.Clone();
        sample.Count = data.HoldOutEvery > 0 ? Math.Min(data.Count, MaxSamples * data.HoldOutEvery) : Math.Min(data.Count, MaxSamples);
        AccuracyReport report;
        try
        {
            report = ModelComparer.Compare(prepared.SourcePath, written.OutputPath, sample, 1, LatencyRuns, false, progress, cancel);
        }
        catch (PtqException ex)
        {
            check.Summary = $"Fidelity not checked: {ex.Message}";
            return written;
        }
        check.Samples = report.SampleCount;
        check.Outputs = report.Outputs;
        check.Cosine = check.FinalCosine = report.Outputs.Min(o => o.Cosine);
        check.SqnrDb = check.FinalSqnrDb = report.Outputs.Min(o => o.SqnrDb);
        check.Speedup = report.Speedup;
        if (check.Cosine >= minCosine)
        {
            check.Status = "Passed";
            check.Summary = Figures(check, written) + ".";
            return written;
        }

        // Below the threshold: keep the layers that hurt the output most in float until it holds, within the budget.
        var reference = new List<float[]>();
        using (var runner = OrtRunner.FromFile(prepared.PreparedPath, threads))
        using (var reader = new SampleReader(sample))
            foreach (var s in reader.Read(cancel)) reference.Add(runner.Run(s, cancel)[0]);
        var floatOutputs = reference.ToArray();
        TaskMetric metric = (outputs, _) => TaskMetrics.CosineToReference(outputs, floatOutputs);
        var searched = AccuracyAwareSearch.Run(prepared, statistics, options, written.OutputPath, sample, metric, 1 - minCosine, budget, threads, progress, cancel);
        searched.Fidelity = check;
        check.KeptInFloat = searched.KeptInFloat;
        check.WorstLayers = new(searched.Candidates.OrderByDescending(c => c.FloatLayerCount).FirstOrDefault()?.KeptInFloat ?? Enumerable.Empty<string>());
        check.SizeRatio = searched.SizeRatio;
        if (searched.AccuracyDrop is { } drop) check.FinalCosine = 1 - drop.Drop;
        check.Status = searched.GoalMet == true ? "Searched" : "BelowThreshold";
        check.Summary = check.Status == "Searched"
            ? FormattableString.Invariant($"Output cosine {check.Cosine:0.####} to float was below {minCosine} on {check.Samples} held-out samples; {check.KeptInFloat.Length} layer(s) kept in float bring it to {check.FinalCosine:0.####} ({HostCheck.ListNames(check.KeptInFloat)}).")
            : FormattableString.Invariant($"FIDELITY BELOW THRESHOLD: output cosine {check.Cosine:0.####} to float (SQNR {check.SqnrDb:0.#} dB) on {check.Samples} samples, threshold {minCosine}; the search ({searched.SearchSummary}) wrote its best model, cosine {check.FinalCosine:0.####}.") + (check.WorstLayers.Count > 0 ? $" Layers that hurt most: {HostCheck.ListNames(check.WorstLayers)}." : "");
        return searched;
    }

    static string Figures(FidelityCheck c, QuantizationResult r) => FormattableString.Invariant(
        $"Output cosine {c.Cosine:0.####} to float (SQNR {c.SqnrDb:0.#} dB) on {c.Samples} samples ({c.SampleSource}), threshold {c.MinCosine}; {c.Speedup:0.##}x float's speed on this host, {r.SizeRatio:P0} of its size");
}
