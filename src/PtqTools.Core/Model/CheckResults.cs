namespace PtqTools.Core.Model;

/// <summary>The difference of one per-sample measure between the float and the quantized model on the same samples,
/// with a paired 95% confidence interval: whether a drop of a few tenths of a point is real or noise.</summary>
public sealed class PairedDifference
{
    /// <summary>What was measured: "Top1Accuracy", "Top5Accuracy" or the name of a task metric.</summary>
    public string Measure { get; set; } = "";
    public int SampleCount { get; set; }
    public double Float { get; set; }
    public double Quantized { get; set; }
    /// <summary>Float minus quantized: positive is a drop.</summary>
    public double Drop { get; set; }
    /// <summary>Bounds of the paired bootstrap 95% interval of the drop; null when the metric gave one value, not one per sample.</summary>
    public double? DropLow { get; set; }
    public double? DropHigh { get; set; }
    /// <summary>Exact McNemar p-value when the per-sample values are 0/1 (correct or not); null otherwise.</summary>
    public double? McNemarPValue { get; set; }
    /// <summary>Samples the float model gets right and the quantized one wrong, and the other way round (0/1 measures).</summary>
    public int? FloatOnly { get; set; }
    public int? QuantizedOnly { get; set; }
    public string Method { get; set; } = "";
    /// <summary>Whether the interval excludes zero (a real difference at 95%).</summary>
    public bool? Significant { get; set; }

    public override string ToString() => DropLow is null
        ? $"{Measure}: {Float:0.####} vs {Quantized:0.####} (drop {Drop:0.####})"
        : $"{Measure}: {Float:0.####} vs {Quantized:0.####} (drop {Drop:0.####}, 95% CI [{DropLow:0.####}, {DropHigh:0.####}])";
}

/// <summary>What the fidelity guard found for a written static model.</summary>
public sealed class FidelityCheck
{
    /// <summary>Passed; Searched (below a threshold, and the layer search met them by keeping layers in float);
    /// KeptFloat (the search did not meet them in its budget, or what it left in int8 was larger than float: the
    /// float model is written, with the figures and the layers that hurt most);
    /// NotChecked (no samples, with the reason in <see cref="Summary"/>).</summary>
    public string Status { get; set; } = "NotChecked";
    public bool Passed => Status is "Passed" or "Searched";
    /// <summary>The threshold: every output's mean cosine to the float model's must reach it.</summary>
    public double MinCosine { get; set; }
    /// <summary>Samples the check ran, and where they came from (held out of calibration, or the calibration data).</summary>
    public int Samples { get; set; }
    public string SampleSource { get; set; } = "";
    /// <summary>The threshold on decisions: outputs of probabilities (every float value in [0, 1]: softmax, sigmoid)
    /// must agree with float's on which values pass 0.5 (intersection over union of those sets).</summary>
    public double MinAgreement { get; set; }
    /// <summary>The lowest such agreement over the probability outputs of the model first written, and of the model
    /// finally written (null without probability outputs).</summary>
    public double? Agreement { get; set; }
    public double? FinalAgreement { get; set; }
    /// <summary>The lowest mean cosine and SQNR over the model's outputs, of the model first written.</summary>
    public double Cosine { get; set; }
    public double SqnrDb { get; set; }
    /// <summary>The same for the model finally written (after the search, when it ran).</summary>
    public double FinalCosine { get; set; }
    public double FinalSqnrDb { get; set; }
    /// <summary>Float latency over the written model's (the int8 one finally written; not measured again when the float
    /// model is written), 1 thread, ONNX Runtime on this host (above 1: faster).</summary>
    public double Speedup { get; set; }
    public double SizeRatio { get; set; }
    /// <summary>The layers the search ranked as hurting the output most, worst first (when it ran).</summary>
    public ValueList<string> WorstLayers { get; set; } = new();
    /// <summary>The layers the search kept in float.</summary>
    public ValueList<string> KeptInFloat { get; set; } = new();
    /// <summary>Per output, the written model against float.</summary>
    public ValueList<OutputComparison> Outputs { get; set; } = new();
    /// <summary>When the model has an attention mask (<see cref="Runtime.TokenMask"/>): which positions were left out
    /// of the figures of its per-token outputs; empty when every position counts.</summary>
    public string PaddingExcluded { get; set; } = "";
    public string Summary { get; set; } = "";

    public override string ToString() => $"{Status}: cosine {FinalCosine:0.####} (threshold {MinCosine})";
}

/// <summary>One model the accuracy-aware search measured.</summary>
public sealed class SearchCandidate
{
    /// <summary>Order in which it was measured (0 is the fully quantized model).</summary>
    public int Round { get; set; }
    public int FloatLayerCount { get; set; }
    public string[] KeptInFloat { get; set; } = Array.Empty<string>();
    /// <summary>Float metric minus this model's (null when the candidate could not be measured).</summary>
    public double? Drop { get; set; }
    public double? DropLow { get; set; }
    public double? DropHigh { get; set; }
    public bool MeetsGoal { get; set; }
    /// <summary>Median latency of one evaluation sample, measured when several candidates meet the goal.</summary>
    public double? LatencyMs { get; set; }
    /// <summary>Why the candidate has no measurement (it failed, or the time budget interrupted it).</summary>
    public string? Error { get; set; }

    public override string ToString() => $"{FloatLayerCount} in float: " + (Drop is double d ? $"drop {d:0.####}{(MeetsGoal ? " (meets the goal)" : "")}" : Error);
}

/// <summary>What the check after writing found: the written model run by this host's ONNX Runtime against the
/// exact integer result (the PtqTools engine with exact sums) on a few samples.</summary>
public sealed class HostCheck
{
    /// <summary>Passed, Failed, or NotChecked (with the reason in <see cref="Summary"/>).</summary>
    public string Status { get; set; } = "NotChecked";
    public bool Passed => Status == "Passed";
    public string HostClass { get; set; } = "";
    public int Samples { get; set; }
    /// <summary>Where the samples came from: the calibration data, or inputs drawn from the calibrated range.</summary>
    public string SampleSource { get; set; } = "";
    /// <summary>The lowest cosine of an output of ONNX Runtime against the exact result, over the samples.</summary>
    public double MinCosine { get; set; }
    /// <summary>The largest difference, in steps of the output's quantization scale (outputs that have one).</summary>
    public double MaxSteps { get; set; }
    /// <summary>The layers whose integer result this host's kernels change (found by emulating the host's class).</summary>
    public Model.ValueList<string> Layers { get; set; } = new();
    public string Summary { get; set; } = "";

    public override string ToString() => Summary.Length > 0 ? Summary : Status;

    /// <summary>At most five names, then how many more.</summary>
    public static string ListNames(IReadOnlyList<string> names) =>
        string.Join(", ", names.Take(5)) + (names.Count > 5 ? $" and {names.Count - 5} more" : "");
}

