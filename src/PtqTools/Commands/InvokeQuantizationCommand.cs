using System.Management.Automation;
using PtqTools.Core;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Commands;

[Cmdlet(VerbsLifecycle.Invoke, "Quantization", DefaultParameterSetName = "Pipeline", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, HelpUri = HelpLinks.Docs + "Invoke-Quantization.md")]
[OutputType(typeof(QuantizationResult))]
public sealed class InvokeQuantizationCommand : QuantizationOptionsCmdlet
{
    /// <summary>Statistics from Measure-ActivationRange (or Import-Clixml), or layers from Get-ModelLayer with -DataSet.
    /// Model files piped in (FileInfo from Get-Item or Get-ChildItem, summaries from Get-OnnxModel) are quantized
    /// whole, their paths taken literally.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "Pipeline", ValueFromPipeline = true)]
    public PSObject[] InputObject { get; set; } = Array.Empty<PSObject>();

    /// <summary>Float models (wildcards) to calibrate (with -DataSet) and quantize whole.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = "Path")]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[] Path { get; set; } = Array.Empty<string>();

    /// <summary>Float models exactly as typed (no wildcards), to calibrate (with -DataSet) and quantize whole.</summary>
    [Parameter(Mandatory = true, ParameterSetName = "LiteralPath")]
    [Alias("PSPath", "LP")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = Array.Empty<string>();

    /// <summary>Calibration data, needed when layers or a model path (not statistics) come in.</summary>
    [Parameter(ParameterSetName = "Pipeline")]
    [Parameter(ParameterSetName = "Path")]
    [Parameter(ParameterSetName = "LiteralPath")]
    public PSObject? DataSet { get; set; }

    /// <summary>The quantized model file, or an existing folder when several models come in. Taken as typed: output
    /// paths are never wildcard patterns. Its folder must exist and take new files; that is checked before any work.</summary>
    [Parameter(Mandatory = true)]
    [ValidateNotNullOrEmpty]
    public string OutputPath { get; set; } = "";

    /// <summary>Skips the check after writing (this host's ONNX Runtime against the exact integer result).</summary>
    [Parameter]
    public SwitchParameter SkipHostCheck { get; set; }

    /// <summary>Skips the fidelity check after writing a static model (the written model against float on held-out
    /// samples, and the layer search when it falls below -MinCosine).</summary>
    [Parameter]
    public SwitchParameter SkipFidelityCheck { get; set; }

    /// <summary>The fidelity check's threshold: every output's mean cosine to the float model's on the held-out samples.</summary>
    [Parameter]
    [ValidateRange(0.0, 1.0)]
    public double MinCosine { get; set; } = Core.Pipeline.FidelityGuard.DefaultMinCosine;

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
    readonly List<string> _files = new();
    QuantizationOptions _options = null!;

    protected override void Begin()
    {
        try
        {
            _options = BuildOptions();
            Core.Pipeline.QuantizationPipeline.ValidateCall(_options, DataSet is not null, Search());
        }
        catch (PtqException ex) { Fail(ex); }
        if (!AccuracyAware && (EvaluationDataSet is not null || Metric is not null))
            WriteWarning("-EvaluationDataSet and -Metric are used only with -MaxAccuracyDrop; they are ignored.");
        // Here, before any work: BeginProcessing runs before the commands earlier in the pipeline calibrate
        // (Measure-ActivationRange measures in its EndProcessing), so a folder that cannot take the model stops them too.
        try
        {
            var output = ResolveOutput(OutputPath);
            if (Directory.Exists(output)) CheckOutputFolder(output, output);
            else CheckOutputFile(output);
        }
        catch (PtqException ex) { Fail(ex); }
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
            if (LiteralPathOf(o) is { } file) _files.Add(file);
            else WriteError(PipelineObjects.Unexpected(o, "statistics from Measure-ActivationRange, layers from Get-ModelLayer, or model files"));
        }
    }

    protected override void EndProcessing()
    {
        var work = new List<(LayerGroup Group, List<TensorStatistics>? Stats)>();
        var files = ParameterSetName switch
        {
            "Path" => ResolveExisting(Path, literal: false),
            "LiteralPath" => ResolveExisting(LiteralPath, literal: true),
            _ => ResolveExisting(_files, literal: true),
        };
        work.AddRange(files.Distinct(StringComparer.Ordinal).Select(p => (new LayerGroup(p, null, null), (List<TensorStatistics>?)null)));
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
        try { Core.Pipeline.QuantizationPipeline.ValidateCalibration(_options, work.Any(w => w.Stats is null), DataSet is not null); }
        catch (PtqException ex) { Fail(ex); }

        foreach (var (group, stats) in work)
        {
            var target = folder ? System.IO.Path.Combine(output, QuantizationOutputs.FileName(_options, group.ModelPath)) : output;
            Try(() => Quantize(group, stats, target), group.ModelPath);
        }
    }

    /// <summary>The accuracy-aware search of -MaxAccuracyDrop, or null.</summary>
    Core.Pipeline.SearchRequest? Search() => !AccuracyAware ? null : new(
        EvaluationDataSet is null ? null : PipelineObjects.To<PtqDataSet>(EvaluationDataSet),
        Metric is null ? null : ScriptMetric.From(Metric, "Metric"), MaxAccuracyDrop, TimeBudget);

    void Quantize(LayerGroup group, List<TensorStatistics>? stats, string target)
    {
        var request = new Core.Pipeline.PipelineRequest
        {
            Prepare = group.Prepare, ModelPath = group.ModelPath, Options = _options, OutputPath = target, Statistics = stats,
            Selected = group.Selected, Data = DataSet is null ? null : PipelineObjects.To<PtqDataSet>(DataSet), Threads = ThreadCount,
            Force = Force, CheckOutput = true, HostCheck = !SkipHostCheck, Search = Search(),
            Fidelity = SkipFidelityCheck ? null : new(MinCosine,
                MyInvocation.BoundParameters.ContainsKey(nameof(TimeBudget)) ? TimeBudget : Core.Pipeline.FidelityGuard.DefaultTimeBudget),
        };
        var pipeline = new Core.Pipeline.QuantizationPipeline(request, new Reporter(this));
        pipeline.Validate();
        var what = _options.Mode switch
        {
            QuantMode.Dynamic => "dynamic int8",
            QuantMode.WeightOnly => $"weight-only int{_options.WeightBits}",
            _ => $"int8 {_options.Format}",
        };
        if (!ShouldProcess(target, $"Write the {what} model quantized from '{group.ModelPath}'")) return;
        var result = pipeline.Run(Cancel).Result!;
        WriteVerbose($"{result.QuantizedLayerCount} layers quantized, {result.FloatLayerCount} kept in float; {result.OutputSizeBytes:N0} bytes ({result.SizeRatio:P1} of the source).");
        WarnAboutTarget(result);
        WriteObject(result);
    }

    /// <summary>The pipeline's progress, verbose and warning records, written by this command (the pipeline runs
    /// on the pipeline thread).</summary>
    sealed class Reporter(InvokeQuantizationCommand cmdlet) : Core.Pipeline.IPipelineReporter
    {
        public IProgress<RunProgress>? Progress(int id, string activity, string unit = "samples") => cmdlet.Progress(id, activity, unit);
        public void Complete(int id, string activity) => cmdlet.CompleteProgress(id, activity);
        public void Verbose(string message) => cmdlet.WriteVerbose(message);
        public void Warning(string message) => cmdlet.WriteWarning(message);
    }

    /// <summary>The target's figures in -Verbose, and a warning for each way the written model can compute other
    /// numbers than it should: pair sums left able to saturate on the target, and what the host check found.</summary>
    void WarnAboutTarget(QuantizationResult result)
    {
        WriteVerbose($"Target {result.Target} (this host: {result.HostClass}); {result.PairSafeLayers.Length} layers made pair-safe{(result.OverflowFix.Length > 0 ? $" (-OverflowFix {result.OverflowFix})" : "")}.");
        if (result.Fidelity is { } fidelity)
        {
            // Below the threshold (searched or not) or unchecked is a warning; a check passed is verbose.
            if (fidelity.Status == "Passed") WriteVerbose(fidelity.Summary);
            else WriteWarning(fidelity.Summary);
            if (fidelity.Samples > 0 && fidelity.Speedup < 1 && fidelity.Status != "KeptFloat")
                WriteWarning(FormattableString.Invariant($"The written model runs at {fidelity.Speedup:0.##}x the float model's speed on this host (ONNX Runtime, 1 thread): its Q/DQ cost more than its integer kernels save."));
        }
        if (result.SizeRatio > 1)
            WriteWarning(FormattableString.Invariant($"The written model is larger than the float model ({result.SizeRatio:P0} of its size)."));
        if (result.OverflowLayers.Length > 0)
            WriteWarning($"On {QuantTargets.Describe(Enum.Parse<QuantTarget>(result.Target))}, ONNX Runtime's u8 x s8 pair sums can leave int16 and saturate in {result.OverflowLayers.Length} layers ({Core.Model.HostCheck.ListNames(result.OverflowLayers)}), not fixed with -OverflowFix {result.OverflowFix}: use -OverflowFix Channels or ReduceRange.");
        // A check that could not run is a warning only where this host's kernels could saturate the sums.
        if (result.HostCheck is { Status: "Failed" } failed) WriteWarning(failed.Summary);
        else if (result.HostCheck is { Status: "NotChecked" } notRun && QuantTargets.SaturatesPairs(QuantTargets.HostClass) && result.OverflowFix.Length == 0)
            WriteWarning(notRun.Summary + $" This CPU ({QuantTargets.Describe(QuantTargets.HostClass)}) saturates u8 x s8 pair sums, and the model was written for {result.Target}.");
        else if (result.HostCheck is { } other) WriteVerbose(other.Summary);
    }
}
