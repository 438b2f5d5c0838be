using System.Management.Automation;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;

namespace PtqTools.Commands;

// LiteralPath is the default set: the binder tries the default set's parameters first, and a result piped in must
// bind SourcePath to -FloatModel together with OutputPath to -LiteralPath (with Path as the default, -FloatModel bound
// alone kept the binder in that set, and -Path then took the whole object as a string). Positional quantized models
// bind to -Path; -Path takes no pipeline input (a piped string would meet the default set first and bind nowhere).
[Cmdlet(VerbsDiagnostic.Test, "QuantizedModel", DefaultParameterSetName = "LiteralPath", HelpUri = HelpLinks.Docs + "Test-QuantizedModel.md")]
[OutputType(typeof(AccuracyReport))]
public sealed class TestQuantizedModelCommand : PtqCmdlet
{
    /// <summary>The float model the quantized ones are compared with (SourcePath of a quantization result binds here).
    /// It follows the command's choice: a pattern that must match one file with -Path, taken as typed with -LiteralPath.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("SourcePath")]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string FloatModel { get; set; } = "";

    /// <summary>The quantized models (wildcards); each is compared with the float model.</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = "Path")]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = Array.Empty<string>();

    /// <summary>The quantized models exactly as typed (OutputPath of a quantization result, QuantizedModel of a report,
    /// and files from Get-ChildItem bind here); the float model is then taken as typed too. -QuantizedModel, this
    /// parameter's name before -Path came, is an alias: it keeps its literal meaning.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "LiteralPath", ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "LP", "FullName", "OutputPath", "QuantizedModel")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = Array.Empty<string>();

    /// <summary>Evaluation data, from New-PtqDataSet; keep it apart from the calibration data.</summary>
    [Parameter(Mandatory = true)]
    [ValidateNotNull]
    public PSObject DataSet { get; set; } = null!;

    /// <summary>ONNX Runtime intra-op threads for both models (latency is measured with these).</summary>
    [Parameter]
    [ValidateRange(1, 1024)]
    public int ThreadCount { get; set; } = 1;

    /// <summary>Timed runs per model for latency (after warm-up); 0 skips timing.</summary>
    [Parameter]
    [ValidateRange(0, 100000)]
    public int LatencyRuns { get; set; } = 30;

    /// <summary>Read the first output as class scores (top-1 agreement, and accuracy with labels) whatever its size;
    /// by default it is when it has one value per class of the data set's labels.</summary>
    [Parameter]
    public SwitchParameter ClassScores { get; set; }

    /// <summary>A task metric: called once per model with the first output of every sample (float[][]) and the labels
    /// (int[], -1 where unknown); returns one score per sample (for a paired interval) or a single value.</summary>
    [Parameter]
    public ScriptBlock? Metric { get; set; }

    /// <summary>The name the report gives the task metric.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string MetricName { get; set; } = "Metric";

    /// <summary>Compute the quantized model's outputs with the PtqTools engine emulating this CPU class's ONNX Runtime
    /// int8 arithmetic, instead of with ONNX Runtime on this machine (the float model and all latencies stay ONNX Runtime's
    /// on this machine). Host: this machine's class.</summary>
    [Parameter]
    [ValidateSet("Avx2", "Avx512", "Vnni", "Amx", "Arm64", "Host")]
    public string? Target { get; set; }

    protected override void ProcessRecord()
    {
        bool literal = ParameterSetName == "LiteralPath";
        string floatModel = "";
        if (!Try(() => floatModel = ResolveOneExisting(FloatModel, literal), FloatModel)) return;
        foreach (var quantized in ResolveExisting(literal ? LiteralPath : Path, literal))
            Try(() =>
            {
                var data = PipelineObjects.To<PtqDataSet>(DataSet);
                var from = Core.Quantization.ModelInspector.Summarize(quantized).QuantizedFrom;
                if (from is not null && !string.Equals(from, Core.Onnx.OnnxModelIO.Sha256(floatModel), StringComparison.OrdinalIgnoreCase))
                    WriteWarning($"'{quantized}' was quantized from a model with SHA-256 {from}, not from '{floatModel}'.");
                const string activity = "Comparing the quantized model with the float model";
                var report = ModelComparer.Compare(floatModel, quantized, data, ThreadCount, LatencyRuns, ClassScores ? true : null, Progress(2, activity), Cancel,
                    Metric is null ? null : ScriptMetric.From(Metric, MetricName), MetricName, EmulationTargets.Resolve(Target));
                CompleteProgress(2, activity);
                WriteObject(report);
            }, quantized);
    }
}
