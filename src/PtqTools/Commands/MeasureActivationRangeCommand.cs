using System.Management.Automation;
using PtqTools.Core;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Commands;

[Cmdlet(VerbsDiagnostic.Measure, "ActivationRange", DefaultParameterSetName = "Layer", HelpUri = HelpLinks.Docs + "Measure-ActivationRange.md")]
[OutputType(typeof(TensorStatistics))]
public sealed class MeasureActivationRangeCommand : PtqCmdlet
{
    /// <summary>Layers from Get-ModelLayer: the tensors these layers need are calibrated. Model files piped in
    /// (FileInfo from Get-Item or Get-ChildItem, summaries from Get-OnnxModel) are calibrated whole, their paths
    /// taken literally.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Layer", ValueFromPipeline = true)]
    public PSObject[] InputObject { get; set; } = Array.Empty<PSObject>();

    /// <summary>Models (wildcards): every quantizable layer is calibrated.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Path")]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = Array.Empty<string>();

    /// <summary>Models, exactly as typed (no wildcards): every quantizable layer is calibrated.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "LiteralPath")]
    [Alias("PSPath", "LP")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = Array.Empty<string>();

    /// <summary>Representative data, from New-PtqDataSet.</summary>
    [Parameter(Mandatory = true)]
    [ValidateNotNull]
    public PSObject DataSet { get; set; } = null!;

    /// <summary>The method whose range becomes RangeMin/RangeMax (every method's range is computed in the same pass
    /// and kept in Ranges).</summary>
    [Parameter]
    [ValidateSet("MinMax", "MovingAverageMinMax", "Percentile", "Entropy", "Mse", "Auto")]
    public string Method { get; set; } = "MinMax";

    /// <summary>Ranges symmetric around zero.</summary>
    [Parameter]
    public SwitchParameter Symmetric { get; set; }

    /// <summary>The share of values (in percent) the Percentile method's range holds.</summary>
    [Parameter]
    [ValidateRange(50.0001, 100.0)]
    public double Percentile { get; set; } = 99.99;

    /// <summary>Skips (and counts) samples the model rejects or whose activations are not finite, instead of stopping.</summary>
    [Parameter]
    public SwitchParameter SkipInvalid { get; set; }

    /// <summary>ONNX Runtime threads for the float model.</summary>
    [Parameter]
    [ValidateRange(1, 1024)]
    public int ThreadCount { get; set; } = Environment.ProcessorCount;

    readonly LayerCollector _layers = new();
    readonly List<string> _files = new();

    protected override void ProcessRecord()
    {
        if (ParameterSetName != "Layer") return;
        foreach (var o in InputObject)
            Try(() =>
            {
                if (_layers.Add(o)) return;
                if (LiteralPathOf(o) is { } file) _files.Add(file);
                else WriteError(PipelineObjects.Unexpected(o, "layers from Get-ModelLayer, or model files"));
            }, o);
    }

    protected override void EndProcessing()
    {
        PtqDataSet data = null!;
        if (!Try(() => data = PipelineObjects.To<PtqDataSet>(DataSet), DataSet)) return;
        var groups = ParameterSetName switch
        {
            "Path" => ResolveExisting(Path, literal: false).Select(p => new LayerGroup(p, null, null)).ToList(),
            "LiteralPath" => ResolveExisting(LiteralPath, literal: true).Select(p => new LayerGroup(p, null, null)).ToList(),
            _ => _layers.Groups.Concat(ResolveExisting(_files, literal: true).Select(p => new LayerGroup(p, null, null))).ToList(),
        };
        foreach (var group in groups)
        {
            Try(() =>
            {
                var prepared = group.Prepare();
                var plan = QuantizationPlan.Create(prepared, group.Selected);
                foreach (var t in plan.Activations) WriteVerbose($"Observing '{t.Key}' for {string.Join(", ", t.Value)}.");
                const string activity = "Measuring activation ranges";
                var options = new CalibrationOptions(ActivationRangeStore.ParseMethod(Method), Symmetric.IsPresent, Percentile);
                int skipped = 0;
                Action<PtqException>? onInvalid = SkipInvalid ? ex => { skipped++; WriteVerbose($"Skipped: {ex.Message}"); } : null;
                var progress = Progress(1, $"{activity} of {System.IO.Path.GetFileName(prepared.SourcePath)}");
                List<TensorStatistics> stats;
                int total = data.Count;
                if (data.Kind == "Script")
                {
                    // The script runs here, on the pipeline thread; each sample it writes goes straight into the run.
                    using var session = new CalibrationSession(prepared, plan.Activations, data, ThreadCount, options, onInvalid, progress, Cancel);
                    total = ScriptDataSources.Run(this, data, session.Add, onInvalid, Cancel);
                    stats = session.Finish();
                }
                else
                {
                    // Every 10th sample is held out of calibration for the fidelity check of the quantized model.
                    stats = Core.Pipeline.CalibrateStep.Calibrate(prepared, plan.Activations, data, ThreadCount, options, onInvalid, progress, Cancel).Statistics;
                }
                if (skipped > 0) WriteWarning($"{skipped} of {total} samples were skipped as invalid (-Verbose names them).");
                CompleteProgress(1, activity);
                WriteObject(stats, enumerateCollection: true);
            }, group.ModelPath);
        }
    }
}

/// <summary>A model and the layers of it that reached the cmdlet (null: all of them).</summary>
internal sealed record LayerGroup(string ModelPath, string? Sha256, HashSet<string>? Selected)
{
    public PreparedModel Prepare()
    {
        var prepared = ModelPreparer.Prepare(ModelPath);
        if (Sha256 is not null && !string.Equals(prepared.SourceSha256, Sha256, StringComparison.OrdinalIgnoreCase))
            throw new PtqException("ModelChanged", PtqErrorKind.InvalidData,
                $"'{ModelPath}' changed since its layers were listed (SHA-256 {Sha256} then, {prepared.SourceSha256} now). List them again.", ModelPath);
        return prepared;
    }
}

/// <summary>Collects layer objects from the pipeline, grouped by model.</summary>
internal sealed class LayerCollector
{
    readonly Dictionary<string, (string Sha, HashSet<string> Names)> _byModel = new(StringComparer.Ordinal);

    public bool Add(PSObject o)
    {
        if (!PipelineObjects.Has(o, "ModelPath", "ModelSha256", "Name", "OpType"))
            return false;
        var layer = PipelineObjects.To<ModelLayer>(o);
        if (!_byModel.TryGetValue(layer.ModelPath, out var entry))
            _byModel[layer.ModelPath] = entry = (layer.ModelSha256, new HashSet<string>(StringComparer.Ordinal));
        entry.Names.Add(layer.Name);
        return true;
    }

    public int Count => _byModel.Count;

    public List<LayerGroup> Groups => _byModel.Select(kv => new LayerGroup(kv.Key, kv.Value.Sha, kv.Value.Names)).ToList();
}
