using System.Management.Automation;
using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;

namespace PtqTools.Commands;

[Cmdlet(VerbsDiagnostic.Measure, "ModelPerformance", DefaultParameterSetName = "Path", HelpUri = HelpLinks.Docs + "Measure-ModelPerformance.md")]
[OutputType(typeof(ModelPerformance))]
public sealed class MeasureModelPerformanceCommand : ModelPathCmdlet
{
    // -Path and -LiteralPath (FileInfo from Get-ChildItem, the OutputPath of a quantization result) come from ModelPathCmdlet.

    /// <summary>Data whose first sample is fed; without it, seeded random values of the model's input shape.</summary>
    [Parameter]
    public PSObject? DataSet { get; set; }

    /// <summary>OnnxRuntime, or the PtqTools integer engine (quantized QDQ/QOperator models with one float input).</summary>
    [Parameter]
    [ValidateSet("OnnxRuntime", "PtqTools")]
    public string Engine { get; set; } = "OnnxRuntime";

    [Parameter]
    [ValidateRange(1, 1024)]
    public int ThreadCount { get; set; } = 1;

    [Parameter]
    [ValidateRange(1, 4096)]
    public int BatchSize { get; set; } = 1;

    [Parameter]
    [ValidateRange(0, 100000)]
    public int WarmupRuns { get; set; } = 10;

    [Parameter]
    [ValidateRange(1, 1000000)]
    public int Runs { get; set; } = 100;

    protected override void ProcessRecord()
    {
        PtqDataSet? data = null;
        if (DataSet is not null && !Try(() => data = PipelineObjects.To<PtqDataSet>(DataSet), DataSet)) return;
        foreach (var path in ResolveModelPaths())
            Try(() =>
            {
                var activity = $"Timing {System.IO.Path.GetFileName(path)} on {Engine}";
                var result = PerformanceMeter.Measure(path, data, Enum.Parse<InferenceEngine>(Engine, ignoreCase: true), ThreadCount, BatchSize, WarmupRuns, Runs, Progress(5, activity), Cancel);
                CompleteProgress(5, activity);
                WriteObject(result);
            }, path);
    }
}
