using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Quantization;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Pipeline;

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

    /// <summary>The default threshold on the decisions of probability outputs (agreement at 0.5 with float's).</summary>
    public const double DefaultMinAgreement = 0.98;

    /// <summary>Every this-many-th sample (by index in the source) is held out of calibration.</summary>
    public const int HoldOutEvery = 10;

    /// <summary>Samples the check runs at most.</summary>
    public const int MaxSamples = 16;

    /// <summary>Rounds of the speed figure: in each, a few runs of the float model then of the written one, on one
    /// sample, 1 thread; the figure is the median over rounds of float's median over the written one's, so that a
    /// burst of other work on the machine moves both.</summary>
    const int SpeedRounds = 5, RunsPerRound = 5;

    static double Speedup(string floatPath, string quantizedPath, PtqDataSet data, CancellationToken cancel)
    {
        Sample first;
        using (var reader = new SampleReader(data)) first = reader.Read(cancel).First();
        using var f = OrtRunner.FromFile(floatPath, 1);
        using var q = OrtRunner.FromFile(quantizedPath, 1);
        var ratios = new double[SpeedRounds];
        for (int round = 0; round < SpeedRounds; round++)
        {
            int warmup = round == 0 ? 3 : 0;
            var (fm, _) = f.MeasureLatency(first, RunsPerRound, warmup, cancel);
            var (qm, _) = q.MeasureLatency(first, RunsPerRound, warmup, cancel);
            ratios[round] = qm > 0 ? fm / qm : 0;
        }
        Array.Sort(ratios);
        return Math.Round(ratios[SpeedRounds / 2], 3);
    }

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
        IProgress<Model.RunProgress>? progress, CancellationToken cancel)
    {
        var check = new FidelityCheck { MinCosine = minCosine, MinAgreement = DefaultMinAgreement, SizeRatio = written.SizeRatio };
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
        // One run of each model over the samples: the float model's outputs (all of them) are the reference of the
        // cosines, of the decisions and of the search's metric.
        List<float[][]> reference, written0;
        string[] names;
        // A model with an attention mask: its per-token outputs are compared at the tokens that count only (TokenMask).
        TokenMask? mask;
        try
        {
            (reference, names, mask) = RunAll(prepared.PreparedPath, sample, threads, cancel, null, ownMask: true);
            (written0, var writtenNames, _) = RunAll(written.OutputPath, sample, threads, cancel, mask);
            if (reference.Count == 0)
                throw new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, $"The data set '{sample.Name}' has no samples.", sample.Name);
            if (!names.SequenceEqual(writtenNames))
                throw new PtqException("OutputsDiffer", PtqErrorKind.InvalidData,
                    $"The models' outputs differ: [{string.Join(", ", names)}] vs [{string.Join(", ", writtenNames)}].", written.OutputPath);
        }
        catch (PtqException ex)
        {
            check.Summary = $"Fidelity not checked: {ex.Message}";
            return written;
        }
        check.Samples = reference.Count;
        check.PaddingExcluded = mask?.Text ?? "";
        check.Outputs = new(Compare(names, reference, written0));
        check.Cosine = check.FinalCosine = check.Outputs.Min(o => o.Cosine);
        check.SqnrDb = check.FinalSqnrDb = check.Outputs.Min(o => o.SqnrDb);
        check.Speedup = Speedup(prepared.SourcePath, written.OutputPath, sample, cancel);
        var probability = Enumerable.Range(0, reference[0].Length).Where(k => reference.All(r => IsDecisions(r[k]))).ToArray();
        check.Agreement = check.FinalAgreement = probability.Length == 0 ? null
            : probability.Min(k => Agreement(reference.Select(r => r[k]), written0.Select(w => w[k])));
        if (check.Cosine >= minCosine && !(check.Agreement < check.MinAgreement) && written.SizeRatio > 1)
        {
            // It keeps the outputs but is larger than float (its Q/DQ cost more bytes than its int8 weights save).
            const string larger = "kept in float: the int8 model was larger than float, so the float model is written";
            var size = written.SizeRatio;
            return KeepFloat(prepared, statistics, options, written, check, larger, cancel,
                FormattableString.Invariant($"FLOAT MODEL WRITTEN: output cosine {check.Cosine:0.####}{AgreementText(check.Agreement)} to float held the thresholds on {check.Samples} samples, but the int8 model was larger than float ({size:P1}).") + Padding(check));
        }
        if (check.Cosine >= minCosine && !(check.Agreement < check.MinAgreement))
        {
            check.Status = "Passed";
            check.Summary = Figures(check, written) + "." + Padding(check);
            return written;
        }

        // Below a threshold: keep the layers that hurt the first output most in float until both hold, within the
        // budget. The search's metric per sample is how far it is from the thresholds, in units of their margins
        // (1 for float; the goal allows one margin): min of (cosine - 1) / (1 - MinCosine) and, for a probability
        // output, (agreement - 1) / (1 - MinAgreement), plus 1.
        var floatOutputs = reference.Select(r => r[0]).ToArray();
        bool decisions = probability.Contains(0);
        TaskMetric metric = (outputs, _) =>
        {
            var cosine = TaskMetrics.CosineToReference(outputs, floatOutputs);
            double margin = Math.Max(1 - minCosine, 1e-6);   // -MinCosine 1 asks for float's outputs exactly
            return cosine.Select((c, i) => 1 + Math.Min((c - 1) / margin,
                decisions ? (Agreement(new[] { floatOutputs[i] }, new[] { outputs[i] }) - 1) / (1 - DefaultMinAgreement) : 0)).ToArray();
        };
        // Candidates are not timed: the one with the fewest layers in float is taken, the same on every run.
        var searched = AccuracyAwareSearch.Run(prepared, statistics, options, written.OutputPath, sample, metric, 1, budget, threads, progress, cancel,
            timeCandidates: false);
        check.WorstLayers = new(searched.Candidates.OrderByDescending(c => c.FloatLayerCount).FirstOrDefault()?.KeptInFloat ?? Enumerable.Empty<string>());
        string worst = check.WorstLayers.Count > 0 ? $" Layers that hurt most: {HostCheck.ListNames(check.WorstLayers)}." : "";
        // A search that met the goal only by keeping every layer in float wrote the float model: said as such below.
        bool allFloat = searched.GoalMet == true && searched.QuantizedLayerCount == 0;
        if (searched.GoalMet == true && searched.SizeRatio <= 1 && !allFloat)
        {
            // The model the search wrote, measured as the first one was.
            searched.Fidelity = check;
            check.Status = "Searched";
            check.KeptInFloat = searched.KeptInFloat;
            check.SizeRatio = searched.SizeRatio;
            var (after, _, _) = RunAll(searched.OutputPath, sample, threads, cancel, mask);
            var final = Compare(names, reference, after);
            check.FinalCosine = final.Min(o => o.Cosine);
            check.FinalSqnrDb = final.Min(o => o.SqnrDb);
            check.Speedup = Speedup(prepared.SourcePath, searched.OutputPath, sample, cancel);
            if (probability.Length > 0)
                check.FinalAgreement = probability.Min(k => Agreement(reference.Select(r => r[k]), after.Select(w => w[k])));
            check.Summary = FormattableString.Invariant($"Output cosine {check.Cosine:0.####}{AgreementText(check.Agreement)} to float was below the thresholds ({minCosine}, {check.MinAgreement}) on {check.Samples} held-out samples; {check.KeptInFloat.Length} layer(s) kept in float bring it to {check.FinalCosine:0.####}{AgreementText(check.FinalAgreement)} ({HostCheck.ListNames(check.KeptInFloat)})")
                + (check.FinalCosine < minCosine || check.FinalAgreement < check.MinAgreement
                    ? "; still below the thresholds on these samples (the search's goal allows one margin per sample on average)." : ".")
                + Padding(check);
            return searched;
        }

        // No int8 model that keeps the outputs was found in the budget, or the one found is larger than float (its
        // Q/DQ pairs cost more bytes than its int8 weights save): the float model is written, and says why.
        string why = allFloat
            ? "kept in float: the fidelity check's search kept every layer in float to keep the float model's outputs, so the float model is written"
            : searched.GoalMet == true
            ? "kept in float: with the layers the fidelity check allows in int8 the model was larger than float, so the float model is written"
            : "kept in float: no int8 model the fidelity check's search found in its budget kept the float model's outputs, so the float model is written";
        return KeepFloat(prepared, statistics, options, written, check, why, cancel,
            FormattableString.Invariant($"FLOAT MODEL WRITTEN: output cosine {check.Cosine:0.####}{AgreementText(check.Agreement)} to float (SQNR {check.SqnrDb:0.#} dB) was below the thresholds ({minCosine}, {check.MinAgreement}) on {check.Samples} samples, and ")
            + (allFloat ? "only with every layer in float did the search meet them."
                : searched.GoalMet == true
                ? FormattableString.Invariant($"the int8 model that meets them was larger than float ({searched.SizeRatio:P1}).")
                : $"the search did not meet them ({searched.SearchSummary}).")
            + worst + Padding(check) + " -SkipFidelityCheck writes the int8 model anyway; -MinCosine sets the threshold.");
    }

    /// <summary>Writes the float model in place of the written one, every layer the plan would quantize kept in float
    /// with <paramref name="why"/>; the check says KeptFloat with <paramref name="summary"/>.</summary>
    static QuantizationResult KeepFloat(PreparedModel prepared, IReadOnlyCollection<TensorStatistics> statistics, QuantizationOptions options,
        QuantizationResult written, FidelityCheck check, string why, CancellationToken cancel, string summary)
    {
        var (plan, _) = Quantizer.Plan(prepared, statistics, options);
        var kept = Quantizer.WriteFloat(prepared, plan, options, written.OutputPath, why, cancel);
        kept.Fidelity = check;
        check.Status = "KeptFloat";
        check.KeptInFloat = new(plan.Decisions.Where(d => d.Reason == why).Select(d => d.Layer));
        check.FinalCosine = 1;
        check.FinalSqnrDb = double.PositiveInfinity;
        if (check.Agreement is not null) check.FinalAgreement = 1;
        check.SizeRatio = kept.SizeRatio;
        check.Summary = summary;
        return kept;
    }

    /// <summary>Every output of a model on every sample (per-token outputs at the tokens that count), the output names,
    /// and the token mask: with <paramref name="ownMask"/> this model's own (the float model's), else
    /// <paramref name="mask"/> (the float model's, for the models compared with it: the same positions on both sides).</summary>
    static (List<float[][]> Outputs, string[] Names, TokenMask? Mask) RunAll(string modelPath, PtqDataSet data, int threads, CancellationToken cancel,
        TokenMask? mask, bool ownMask = false)
    {
        var outputs = new List<float[][]>();
        using var runner = OrtRunner.FromFile(modelPath, threads);
        if (ownMask) mask = runner.TokenMask;
        using var reader = new SampleReader(data);
        foreach (var s in reader.Read(cancel))
        {
            var o = runner.Run(s, cancel);
            outputs.Add(mask is null ? o : mask.Keep(o, mask.Read(s)));
        }
        return (outputs, runner.OutputNames, mask);
    }

    /// <summary>Each output of one model against the reference's, over the samples (ModelComparer's figures).</summary>
    static OutputComparison[] Compare(string[] names, List<float[][]> reference, List<float[][]> other)
    {
        var stats = names.Select(_ => new ModelComparer.OutputStats()).ToArray();
        for (int i = 0; i < reference.Count; i++)
            for (int k = 0; k < names.Length; k++) stats[k].Add(reference[i][k], other[i][k]);
        return names.Select((name, k) => stats[k].Result(name, false)).ToArray();
    }

    /// <summary>The sentence that says padded tokens were left out of the figures; empty for a model without a token mask.</summary>
    static string Padding(FidelityCheck c) => c.PaddingExcluded.Length == 0 ? "" : $" {char.ToUpperInvariant(c.PaddingExcluded[0])}{c.PaddingExcluded[1..]}.";

    static string AgreementText(double? agreement) => agreement is double a ? FormattableString.Invariant($", decisions {a:0.####}") : "";

    /// <summary>Outputs of at most this many values per sample that hold probabilities are decisions (class scores,
    /// per-frame probabilities); larger ones (probability maps) are judged by their cosine.</summary>
    public const int MaxDecisionValues = 4096;

    /// <summary>Whether an output holds decisions: probabilities (every value in [0, 1]), at most
    /// <see cref="MaxDecisionValues"/> of them.</summary>
    static bool IsDecisions(float[] values) => values.Length > 0 && values.Length <= MaxDecisionValues && values.All(v => v >= 0 && v <= 1);

    /// <summary>How far two models' decisions agree: of the values either puts above 0.5, the share both do
    /// (intersection over union; 1 when neither puts any).</summary>
    public static double Agreement(IEnumerable<float[]> reference, IEnumerable<float[]> other)
    {
        long both = 0, either = 0;
        foreach (var (f, q) in reference.Zip(other))
            for (int i = 0; i < f.Length; i++)
            {
                bool a = f[i] > 0.5f, b = q[i] > 0.5f;
                if (a && b) both++;
                if (a || b) either++;
            }
        return either == 0 ? 1 : (double)both / either;
    }

    static string Figures(FidelityCheck c, QuantizationResult r) => FormattableString.Invariant(
        $"Output cosine {c.Cosine:0.####}{AgreementText(c.Agreement)} to float (SQNR {c.SqnrDb:0.#} dB) on {c.Samples} samples ({c.SampleSource}), threshold {c.MinCosine}; {c.Speedup:0.##}x float's speed on this host, {r.SizeRatio:P0} of its size");
}
