using System.Management.Automation;
using PtqTools.Core;
using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Quantization;

namespace PtqTools.Commands;

[Cmdlet(VerbsDiagnostic.Measure, "LayerError", HelpUri = HelpLinks.Docs + "Measure-LayerError.md")]
[OutputType(typeof(LayerError))]
public sealed class MeasureLayerErrorCommand : PtqCmdlet
{
    /// <summary>Statistics from Measure-ActivationRange (or Import-Clixml): their layers are the ones quantized.</summary>
    [Parameter(Mandatory = true, ValueFromPipeline = true)]
    public PSObject[] InputObject { get; set; } = Array.Empty<PSObject>();

    /// <summary>Evaluation data, from New-PtqDataSet (a few dozen samples are enough).</summary>
    [Parameter(Mandatory = true)]
    [ValidateNotNull]
    public PSObject DataSet { get; set; } = null!;

    [Parameter]
    [ValidateSet("UInt8", "Int8")]
    public string ActivationType { get; set; } = "UInt8";

    [Parameter]
    public SwitchParameter SymmetricActivation { get; set; }

    [Parameter]
    public SwitchParameter PerTensor { get; set; }

    [Parameter]
    [ValidateRange(1, 1024)]
    public int ThreadCount { get; set; } = Environment.ProcessorCount;

    /// <summary>Run the quantized layers in the PtqTools engine emulating this CPU class's ONNX Runtime int8 arithmetic
    /// (Host: this machine's class) instead of in ONNX Runtime; the float reference stays ONNX Runtime's.</summary>
    [Parameter]
    [ValidateSet("Avx2", "Avx512", "Vnni", "Amx", "Arm64", "Host")]
    public string? Target { get; set; }

    EngineTarget? _target;

    readonly Dictionary<string, List<TensorStatistics>> _stats = new(StringComparer.Ordinal);
    QuantizationOptions _options = null!;

    protected override void Begin()
    {
        _options = new QuantizationOptions
        {
            ActivationType = Enum.Parse<QuantType>(ActivationType, ignoreCase: true),
            ActivationSymmetric = SymmetricActivation,
            PerChannel = !PerTensor,
        };
        try
        {
            _options.Validate();
            _target = EmulationTargets.Resolve(Target);
        }
        catch (PtqException ex) { Fail(ex); }
    }

    protected override void ProcessRecord()
    {
        foreach (var o in InputObject)
            Try(() =>
            {
                if (!PipelineObjects.Has(o, "Tensor", "RangeMin", "RangeMax", "ModelPath"))
                {
                    WriteError(PipelineObjects.Unexpected(o, "statistics from Measure-ActivationRange"));
                    return;
                }
                var s = PipelineObjects.To<TensorStatistics>(o);
                if (!_stats.TryGetValue(s.ModelPath, out var list)) _stats[s.ModelPath] = list = new List<TensorStatistics>();
                list.Add(s);
            }, o);
    }

    protected override void EndProcessing()
    {
        PtqDataSet data = null!;
        if (_stats.Count == 0 || !Try(() => data = PipelineObjects.To<PtqDataSet>(DataSet), DataSet)) return;
        foreach (var (path, stats) in _stats)
            Try(() =>
            {
                var prepared = new LayerGroup(path, stats[0].ModelSha256, null).Prepare();
                var activity = $"Measuring the error of each quantized layer of {System.IO.Path.GetFileName(path)}";
                var errors = LayerErrorAnalyzer.Run(prepared, stats, _options, data, ThreadCount, Progress(3, activity), Cancel, _target);
                CompleteProgress(3, activity);
                WriteObject(errors, enumerateCollection: true);
            }, path);
    }
}
