using System.Management.Automation;
using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Model;

namespace PtqTools.Commands;

[Cmdlet(VerbsLifecycle.Invoke, "ModelInference", DefaultParameterSetName = "Path", HelpUri = HelpLinks.Docs + "Invoke-ModelInference.md")]
[OutputType(typeof(InferenceResult))]
public sealed class InvokeModelInferenceCommand : ModelPathCmdlet
{
    // -Path and -LiteralPath (FileInfo from Get-ChildItem, the OutputPath of a quantization result) come from ModelPathCmdlet.

    /// <summary>The samples, from New-PtqDataSet.</summary>
    [Parameter(Mandatory = true, Position = 1)]
    [ValidateNotNull]
    public PSObject DataSet { get; set; } = null!;

    /// <summary>OnnxRuntime (default) or PtqTools, the module's own integer engine.</summary>
    [Parameter]
    [ValidateSet("OnnxRuntime", "PtqTools")]
    public string Engine { get; set; } = "OnnxRuntime";

    /// <summary>Threads: ONNX Runtime's intra-op threads, or the cores the PtqTools kernels may use.</summary>
    [Parameter]
    [ValidateRange(1, 1024)]
    public int ThreadCount { get; set; } = 1;

    /// <summary>With -Engine PtqTools: emulate this CPU class's ONNX Runtime int8 arithmetic (Host: this machine's
    /// class); without it the engine sums exactly. ONNX Runtime computes what this machine computes, so -Target with
    /// -Engine OnnxRuntime is an error.</summary>
    [Parameter]
    [ValidateSet("Avx2", "Avx512", "Vnni", "Amx", "Arm64", "Host")]
    public string? Target { get; set; }

    EngineTarget? _target;
    InferenceEngine _engine;

    protected override void Begin()
    {
        _engine = Enum.Parse<InferenceEngine>(Engine, ignoreCase: true);
        try
        {
            _target = EmulationTargets.Resolve(Target);
            ModelInference.CheckTarget(_engine, _target);
        }
        catch (Core.PtqException ex) { Fail(ex); }
    }

    protected override void ProcessRecord()
    {
        var files = ResolveModelPaths();
        foreach (var file in files)
        {
            const string activity = "Running the model";
            Try(() =>
            {
                var data = PipelineObjects.To<PtqDataSet>(DataSet);
                foreach (var result in ModelInference.Run(file, data, _engine, ThreadCount, Progress(3, activity), Cancel, _target))
                    WriteObject(result);
                CompleteProgress(3, activity);
            }, file);
        }
    }
}
