using System.Management.Automation;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;

namespace PtqTools.Commands;

[Cmdlet(VerbsDiagnostic.Test, "QuantizedModel", HelpUri = HelpLinks.Docs + "Test-QuantizedModel.md")]
[OutputType(typeof(AccuracyReport))]
public sealed class TestQuantizedModelCommand : PtqCmdlet
{
    /// <summary>The float model (SourcePath of a quantization result binds here).</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("SourcePath")]
    [ValidateNotNullOrEmpty]
    public string FloatModel { get; set; } = "";

    /// <summary>The quantized model (OutputPath of a quantization result binds here).</summary>
    [Parameter(Mandatory = true, Position = 1, ValueFromPipelineByPropertyName = true)]
    [Alias("OutputPath")]
    [ValidateNotNullOrEmpty]
    public string QuantizedModel { get; set; } = "";

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
        var paths = ResolveExisting(new[] { FloatModel, QuantizedModel }, literal: true);
        if (paths.Count != 2) return;
        Try(() =>
        {
            var data = PipelineObjects.To<PtqDataSet>(DataSet);
            var from = Core.Onnx.ModelInspector.Summarize(paths[1]).QuantizedFrom;
            if (from is not null && !string.Equals(from, Core.Onnx.OnnxModelIO.Sha256(paths[0]), StringComparison.OrdinalIgnoreCase))
                WriteWarning($"'{paths[1]}' was quantized from a model with SHA-256 {from}, not from '{paths[0]}'.");
            const string activity = "Comparing the quantized model with the float model";
            var report = ModelComparer.Compare(paths[0], paths[1], data, ThreadCount, LatencyRuns, ClassScores ? true : null, Progress(2, activity), Cancel,
                Metric is null ? null : ScriptMetric.From(Metric, MetricName), MetricName, EmulationTargets.Resolve(Target));
            CompleteProgress(2, activity);
            WriteObject(report);
        }, paths[1]);
    }
}
