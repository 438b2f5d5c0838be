using System.Management.Automation;
using PtqTools.Core;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Commands;

[Cmdlet(VerbsLifecycle.Invoke, "Quantization", DefaultParameterSetName = "Pipeline", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(QuantizationResult))]
public sealed class InvokeQuantizationCommand : PtqCmdlet
{
    /// <summary>Statistics from Measure-ActivationRange (or Import-Clixml), or layers from Get-ModelLayer with -DataSet.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Pipeline", ValueFromPipeline = true)]
    public PSObject[] InputObject { get; set; } = Array.Empty<PSObject>();

    /// <summary>A float model to calibrate (with -DataSet) and quantize whole.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Path")]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    /// <summary>Calibration data, needed when layers or a model path (not statistics) come in.</summary>
    [Parameter(ParameterSetName = "Pipeline")]
    [Parameter(Mandatory = true, ParameterSetName = "Path")]
    public PSObject? DataSet { get; set; }

    /// <summary>The quantized model file, or an existing folder when several models come in.</summary>
    [Parameter(Mandatory = true)]
    [ValidateNotNullOrEmpty]
    public string OutputPath { get; set; } = "";

    [Parameter]
    [ValidateSet("UInt8", "Int8")]
    public string ActivationType { get; set; } = "UInt8";

    [Parameter]
    public SwitchParameter SymmetricActivation { get; set; }

    /// <summary>One weight scale per tensor instead of per output channel.</summary>
    [Parameter]
    public SwitchParameter PerTensor { get; set; }

    /// <summary>ONNX Runtime threads for the calibration run when layers or a model path come in.</summary>
    [Parameter]
    [ValidateRange(1, 1024)]
    public int ThreadCount { get; set; } = Environment.ProcessorCount;

    /// <summary>Accuracy-aware quantization: the largest drop of the metric (float minus quantized, in the metric's
    /// units: 0.01 is one point of accuracy) on -EvaluationDataSet; the most sensitive layers are kept in float until it holds.</summary>
    [Parameter]
    [ValidateRange(0.0, 1e300)]
    public double MaxAccuracyDrop { get; set; }

    bool AccuracyAware => MyInvocation.BoundParameters.ContainsKey(nameof(MaxAccuracyDrop));

    /// <summary>Labelled evaluation data for -MaxAccuracyDrop, apart from the calibration data.</summary>
    [Parameter]
    public PSObject? EvaluationDataSet { get; set; }

    /// <summary>The task metric for -MaxAccuracyDrop, as for Test-QuantizedModel -Metric; top-1 accuracy by default.</summary>
    [Parameter]
    public ScriptBlock? Metric { get; set; }

    /// <summary>How long the accuracy-aware search may take; the best model found by then is returned.</summary>
    [Parameter]
    public TimeSpan TimeBudget { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Overwrite an existing output file.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    readonly Dictionary<string, List<TensorStatistics>> _stats = new(StringComparer.Ordinal);
    readonly LayerCollector _layers = new();
    QuantizationOptions _options = null!;

    protected override void BeginProcessing()
    {
        _options = new QuantizationOptions
        {
            ActivationType = Enum.Parse<QuantType>(ActivationType, ignoreCase: true),
            ActivationSymmetric = SymmetricActivation,
            PerChannel = !PerTensor,
        };
        try { _options.Validate(); }
        catch (PtqException ex) { Fail(ex); }
        if (AccuracyAware && EvaluationDataSet is null)
            Fail(new PtqException("EvaluationDataSetRequired", PtqErrorKind.InvalidArgument, "-MaxAccuracyDrop needs -EvaluationDataSet: labelled data to measure the drop on.", null));
        if (!AccuracyAware && (EvaluationDataSet is not null || Metric is not null))
            WriteWarning("-EvaluationDataSet and -Metric are used only with -MaxAccuracyDrop; they are ignored.");
        if (TimeBudget <= TimeSpan.Zero)
            Fail(new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"-TimeBudget must be positive, not {TimeBudget}.", TimeBudget));
    }

    protected override void ProcessRecord()
    {
        if (ParameterSetName != "Pipeline") return;
        foreach (var o in InputObject) Try(() => Collect(o), o);
    }

    void Collect(PSObject o)
    {
        if (PipelineObjects.Has(o, "Tensor", "RangeMin", "RangeMax", "ModelPath"))
        {
            var s = PipelineObjects.To<TensorStatistics>(o);
            if (!_stats.TryGetValue(s.ModelPath, out var list)) _stats[s.ModelPath] = list = new List<TensorStatistics>();
            list.Add(s);
        }
        else if (!_layers.Add(o))
        {
            WriteError(PipelineObjects.Unexpected(o, "statistics from Measure-ActivationRange or layers from Get-ModelLayer"));
        }
    }

    protected override void EndProcessing()
    {
        var work = new List<(LayerGroup Group, List<TensorStatistics>? Stats)>();
        if (ParameterSetName == "Path")
            work.AddRange(ResolveExisting(new[] { Path }, literal: false).Select(p => (new LayerGroup(p, null, null), (List<TensorStatistics>?)null)));
        work.AddRange(_stats.Select(kv => (new LayerGroup(kv.Key, kv.Value[0].ModelSha256, null), (List<TensorStatistics>?)kv.Value)));
        foreach (var g in _layers.Groups)
        {
            if (_stats.ContainsKey(g.ModelPath))
                WriteWarning($"Both statistics and layers of '{g.ModelPath}' came in; the statistics decide what is quantized and the layers are ignored.");
            else
                work.Add((g, null));
        }
        if (work.Count == 0) return;

        var output = ResolveOutput(OutputPath);
        bool folder = Directory.Exists(output);
        if (work.Count > 1 && !folder)
            Fail(new PtqException("OutputPathNotFolder", PtqErrorKind.InvalidArgument,
                $"{work.Count} models came in; -OutputPath must then be an existing folder, and '{output}' is not.", output));
        if (work.Any(w => w.Stats is null) && DataSet is null)
            Fail(new PtqException("DataSetRequired", PtqErrorKind.InvalidArgument,
                "Layers or a model path came in without statistics: give -DataSet to calibrate them, or pipe in the output of Measure-ActivationRange.", null));

        foreach (var (group, stats) in work)
        {
            var target = folder ? System.IO.Path.Combine(output, System.IO.Path.GetFileNameWithoutExtension(group.ModelPath) + ".int8.onnx") : output;
            Try(() => Quantize(group, stats, target), group.ModelPath);
        }
    }

    void Quantize(LayerGroup group, List<TensorStatistics>? stats, string target)
    {
        if (string.Equals(System.IO.Path.GetFullPath(group.ModelPath), System.IO.Path.GetFullPath(target), StringComparison.Ordinal))
            throw new PtqException("OutputIsSource", PtqErrorKind.InvalidArgument, $"The output path '{target}' is the source model; the source is never overwritten.", target);
        if (File.Exists(target) && !Force)
            throw new PtqException("OutputExists", PtqErrorKind.ResourceExists, $"'{target}' exists; use -Force to overwrite it.", target);
        if (!Directory.Exists(System.IO.Path.GetDirectoryName(target)))
            throw new PtqException("OutputFolderNotFound", PtqErrorKind.ObjectNotFound, $"The folder of '{target}' does not exist.", target);
        if (!ShouldProcess(target, $"Write the int8 QDQ model quantized from '{group.ModelPath}'")) return;
        var prepared = group.Prepare();
        if (stats is null)
        {
            var data = PipelineObjects.To<PtqDataSet>(DataSet!);
            var plan = QuantizationPlan.Create(new GraphView(prepared.Model.Graph), group.Selected);
            const string activity = "Calibrating";
            stats = ActivationCalibrator.Run(prepared, plan.Activations, data, ThreadCount, Progress(1, activity), Cancel);
            CompleteProgress(1, activity);
        }
        QuantizationResult result;
        if (AccuracyAware)
        {
            double maxDrop = MaxAccuracyDrop;
            var evaluation = PipelineObjects.To<PtqDataSet>(EvaluationDataSet!);
            const string search = "Accuracy-aware quantization";
            result = Core.Evaluation.AccuracyAwareSearch.Run(prepared, stats, _options, target, evaluation,
                Metric is null ? null : ScriptMetric.From(Metric, "Metric"), maxDrop, TimeBudget, ThreadCount, Progress(4, search), Cancel);
            CompleteProgress(4, search);
            if (result.GoalMet == true) WriteVerbose(result.SearchSummary); else WriteWarning(result.SearchSummary);
        }
        else
        {
            result = Quantizer.Run(prepared, stats, _options, target, Cancel);
        }
        WriteVerbose($"{result.QuantizedLayerCount} layers quantized, {result.FloatLayerCount} kept in float; {result.OutputSizeBytes:N0} bytes ({result.SizeRatio:P1} of the source).");
        WriteObject(result);
    }
}
