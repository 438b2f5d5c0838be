namespace PtqTools.Core.Evaluation;

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

