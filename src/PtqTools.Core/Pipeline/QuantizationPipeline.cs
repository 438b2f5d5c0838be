using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Pipeline;

/// <summary>What the steps share while one model is quantized: the float model as the steps rewrite it, the
/// statistics, the plan, the written model and the result.</summary>
public sealed class PipelineContext
{
    internal PipelineContext(PipelineRequest request, PreparedModel prepared, IPipelineReporter reporter, CancellationToken cancel)
    {
        Request = request;
        Prepared = prepared;
        Model = prepared.Model;
        Statistics = request.Statistics;
        Reporter = reporter;
        Cancel = cancel;
    }

    public PipelineRequest Request { get; }
    public QuantizationOptions Options => Request.Options;
    public IPipelineReporter Reporter { get; }
    public CancellationToken Cancel { get; }

    /// <summary>The prepared model; after equalization, with the equalized model (what is calibrated and written).</summary>
    public PreparedModel Prepared { get; set; }

    /// <summary>The float model the weight-mode steps rewrite (SmoothQuant, the outlier split) and quantize.</summary>
    public ModelProto Model { get; set; }

    public IReadOnlyCollection<TensorStatistics>? Statistics { get; set; }

    /// <summary>Samples held out of calibration for the fidelity check.</summary>
    public PtqDataSet? HeldOut { get; set; }

    public QuantizationPlan? Plan { get; set; }
    public Dictionary<string, TensorRange>? Ranges { get; set; }
    public Dictionary<string, double[]>? Hessians { get; set; }

    /// <summary>The quantized model before it is written.</summary>
    public ModelProto? Quantized { get; set; }

    /// <summary>Set when the rules keep every layer of the pipeline in float (int8 would lose the task or run slower
    /// than float): the float model is written, with every layer's reason, and this says so.</summary>
    public string? KeptFloatByRules { get; set; }

    public QuantizationResult? Result { get; set; }

    /// <summary>ONNX Runtime runs over the calibration data made for the statistics of the steps.</summary>
    public int DataPasses { get; set; }

    /// <summary>The steps that ran, in order.</summary>
    public List<string> Steps { get; } = new();
}

/// <summary>One step of the quantization of a model: it says when it applies, which statistics of the float model
/// it needs (gathered for it by the pipeline's collector, in one run with the needs of the steps around it that
/// observe the same graph), and applies itself.</summary>
public interface IPipelineStep
{
    string Name { get; }

    bool Applies(PipelineContext context);

    /// <summary>The statistics the step needs, of the float model as it is when the step is reached.</summary>
    IReadOnlyList<ITensorConsumer> Needs(PipelineContext context);

    /// <summary>The progress text of the run that gathers its statistics (null: none of its own).</summary>
    string? Activity { get; }

    /// <summary>Whether the step rewrites the float graph: a later step's statistics then need a run of their own.</summary>
    bool RewritesGraph { get; }

    void Apply(PipelineContext context);
}

/// <summary>
/// The one path from a prepared model (and its statistics or data) to a written quantized model and its checks.
/// <see cref="Validate"/> checks the whole request before any work; <see cref="Run"/> then runs the steps in order:
/// equalization, calibration, the plan, SmoothQuant, the outlier split, GPTQ's Hessians, the writers (QDQ, whose
/// weights carry the bias correction and the target's pair fix, then the QOperator lowering; or the weight-mode
/// writer), the save, and the fidelity and host checks. The statistics of the steps are gathered by
/// <see cref="TensorTap.Collect"/>: the needs of consecutive steps with no graph rewrite between them go into one
/// run over the data.
/// </summary>
public sealed class QuantizationPipeline
{
    readonly PipelineRequest _request;
    readonly IPipelineReporter _reporter;

    public QuantizationPipeline(PipelineRequest request, IPipelineReporter? reporter = null)
    {
        _request = request;
        _reporter = reporter ?? SilentReporter.Instance;
    }

    /// <summary>The steps, in order; each applies or not for the request.</summary>
    public static IReadOnlyList<IPipelineStep> Steps() => new IPipelineStep[]
    {
        new EqualizeStep(), new CalibrateStep(), new StaticPlanStep(), new WeightPlanStep(),
        new SmoothQuantStep(), new OutlierSplitStep(), new GptqStep(),
        new AccuracySearchStep(), new QdqWriteStep(), new QOperatorStep(), new WeightWriteStep(), new SaveStep(),
        new FidelityStep(), new HostCheckStep(),
    };

    /// <summary>The checks of options and data that hold for every model of a call (a command makes them once,
    /// before the commands before it in the pipeline start their work).</summary>
    public static void ValidateCall(QuantizationOptions options, bool hasData, SearchRequest? search)
    {
        options.Validate();
        if (options.WeightMethod == WeightMethod.Gptq && !hasData)
            throw new PtqException("DataSetRequired", PtqErrorKind.InvalidArgument,
                "-WeightMethod GPTQ needs -DataSet: it feeds each row's rounding error back through the Hessian of the MatMul's calibration inputs.", null);
        if (search is null) return;
        if (search.Evaluation is null)
            throw new PtqException("EvaluationDataSetRequired", PtqErrorKind.InvalidArgument, "-MaxAccuracyDrop needs -EvaluationDataSet: labelled data to measure the drop on.", null);
        if (options.Mode != QuantMode.Static)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument, $"-MaxAccuracyDrop searches over calibrated static models; it cannot be used with -Mode {options.Mode}.", options.Mode.ToString());
        if (search.Budget <= TimeSpan.Zero)
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"-TimeBudget must be positive, not {search.Budget}.", search.Budget);
    }

    /// <summary>Static mode calibrates a model that came without statistics: it needs data.</summary>
    public static void ValidateCalibration(QuantizationOptions options, bool withoutStatistics, bool hasData)
    {
        if (options.Mode == QuantMode.Static && withoutStatistics && !hasData)
            throw new PtqException("DataSetRequired", PtqErrorKind.InvalidArgument,
                "Layers or a model path came in without statistics: give -DataSet to calibrate them, or pipe in the output of Measure-ActivationRange.", null);
    }

    /// <summary>Everything that can be checked before the model is prepared: the call's checks, the output, and
    /// what the options need from the data.</summary>
    public void Validate()
    {
        if (_validated) return;
        var r = _request;
        var options = r.Options;
        ValidateCall(options, r.Data is not null, r.Search);
        if (r.CheckOutput)
        {
            var target = r.OutputPath;
            if (PlatformPaths.Same(Path.GetFullPath(r.SourcePath), Path.GetFullPath(target)))
                throw new PtqException("OutputIsSource", PtqErrorKind.InvalidArgument, $"The output path '{target}' is the source model; the source is never overwritten.", target);
            if (File.Exists(target) && !r.Force)
                throw new PtqException("OutputExists", PtqErrorKind.ResourceExists, $"'{target}' exists; use -Force to overwrite it.", target);
            if (!Directory.Exists(Path.GetDirectoryName(Path.GetFullPath(target))))
                throw new PtqException("OutputFolderNotFound", PtqErrorKind.ObjectNotFound, $"The folder of '{target}' does not exist.", target);
        }
        if (options.Mode == QuantMode.Static)
        {
            ValidateCalibration(options, r.Statistics is null, r.Data is not null);
            if (r.Statistics is not null && options.Equalize && !r.StatisticsOfEqualizedModel)
                throw new PtqException("EqualizeNeedsCalibration", PtqErrorKind.InvalidArgument,
                    "-Equalize changes the weights and so the activations between the equalized layers; statistics measured on the model as it was do not apply. Pipe in layers (or use -Path) with -DataSet, and the equalized model is calibrated.", r.SourcePath);
            _validated = true;
            return;
        }
        string? needsData = options.SmoothQuantAlpha is not null ? "-SmoothQuant" : options.OutlierThreshold is not null ? "-OutlierThreshold" : null;
        if (r.Data is null && needsData is not null)
            throw new PtqException("DataSetRequired", PtqErrorKind.InvalidArgument, $"{needsData} needs -DataSet: the activations' channel maxima come from calibration data.", r.SourcePath);
        _validated = true;
    }

    bool _validated;

    /// <summary>The checks that need the prepared model, before any work on it.</summary>
    void ValidateModel(PipelineContext context)
    {
        var (prepared, options) = (context.Prepared, context.Options);
        foreach (var opType in options.CheckExclude(prepared.Model, prepared.SourcePath))
            _reporter.Warning($"The -Exclude op type '{opType}' matches no layer of '{prepared.SourcePath}': it has no {opType} node.");
        Quantizer.CheckOpset(prepared, options);
        if (options.Mode != QuantMode.Static && _request.Data is not null && options.SmoothQuantAlpha is null && options.OutlierThreshold is null && options.WeightMethod != WeightMethod.Gptq)
            _reporter.Warning($"-DataSet is not used in {options.Mode} mode: it needs no calibration.");
    }

    /// <summary>Validates and runs every step that applies; returns the context (the result, the plan, the data
    /// passes made).</summary>
    public PipelineContext Run(CancellationToken cancel)
    {
        Validate();
        var prepared = _request.Prepared ?? _request.Prepare?.Invoke()
            ?? throw new InvalidOperationException("A pipeline request needs the prepared model or a way to prepare it.");
        var context = new PipelineContext(_request, prepared, _reporter, cancel);
        ValidateModel(context);
        var steps = Steps();
        var gathered = new Dictionary<IPipelineStep, bool>();
        for (int i = 0; i < steps.Count; i++)
        {
            var step = steps[i];
            if (!step.Applies(context)) continue;
            if (!gathered.ContainsKey(step) && step.Needs(context).Count > 0) Gather(steps, i, context, gathered);
            cancel.ThrowIfCancellationRequested();
            step.Apply(context);
            context.Steps.Add(step.Name);
        }
        return context;
    }

    /// <summary>One run over the data for the needs of step <paramref name="first"/> and of the steps after it up to
    /// the first that rewrites the graph.</summary>
    static void Gather(IReadOnlyList<IPipelineStep> steps, int first, PipelineContext context, Dictionary<IPipelineStep, bool> gathered)
    {
        var group = new List<IPipelineStep>();
        for (int j = first; j < steps.Count; j++)
        {
            if (!steps[j].Applies(context)) continue;
            if (steps[j].Needs(context).Count > 0) group.Add(steps[j]);
            if (steps[j].RewritesGraph) break;
        }
        var consumers = group.SelectMany(s => s.Needs(context)).ToList();
        var activity = group.Select(s => s.Activity).FirstOrDefault(a => a is not null);
        var progress = activity is null ? null : context.Reporter.Progress(1, activity);
        TensorTap.Collect(context.Model, context.Prepared.SourcePath, context.Request.Data!, context.Request.Threads, consumers, progress, context.Cancel);
        context.DataPasses++;
        if (activity is not null) context.Reporter.Complete(1, activity);
        foreach (var s in group) gathered[s] = true;
    }

    /// <summary>Runs a check of a written model; a stop before it completes removes the model (like a stop during
    /// the quantization, it leaves no output).</summary>
    internal static T RemoveOutputIfStopped<T>(string output, CancellationToken cancel, Func<T> check)
    {
        try { return check(); }
        catch when (cancel.IsCancellationRequested)
        {
            foreach (var file in new[] { output, output + ".data" })
                if (File.Exists(file)) File.Delete(file);
            throw;
        }
    }

    /// <summary>Static quantization from statistics measured on <paramref name="prepared"/> as it is (equalized
    /// already when the options say -Equalize: <see cref="Quantizer.ForOptions"/>); no checks after writing. The steps are this
    /// pipeline's.</summary>
    public static QuantizationResult Run(PreparedModel prepared, IReadOnlyCollection<TensorStatistics> statistics, QuantizationOptions options,
        string outputPath, CancellationToken cancel) =>
        new QuantizationPipeline(new PipelineRequest
        {
            Prepared = prepared, Options = options, OutputPath = outputPath, Statistics = statistics, StatisticsOfEqualizedModel = true,
        }).Run(cancel).Result!;

    /// <summary>Dynamic and weight-only quantization: no calibration statistics; <paramref name="selected"/> (null
    /// for all) names the layers that came through the pipeline. The steps are this pipeline's;
    /// <paramref name="progress"/> follows the weights,
    /// <paramref name="calibrationProgress"/> the run over <paramref name="data"/>.</summary>
    public static QuantizationResult RunWithoutCalibration(PreparedModel prepared, IReadOnlySet<string>? selected, QuantizationOptions options,
        string outputPath, CancellationToken cancel, IProgress<RunProgress>? progress = null, PtqDataSet? data = null, int threads = 1,
        IProgress<RunProgress>? calibrationProgress = null)
    {
        if (options.Mode == QuantMode.Static)
            throw new PtqException("StatisticsRequired", PtqErrorKind.InvalidArgument, "Static quantization needs calibration statistics.", prepared.SourcePath);
        return new QuantizationPipeline(new PipelineRequest
        {
            Prepared = prepared, Options = options, OutputPath = outputPath, Selected = selected, Data = data, Threads = threads,
        }, new ProgressOnly(progress, calibrationProgress)).Run(cancel).Result!;
    }

    sealed class ProgressOnly(IProgress<RunProgress>? weights, IProgress<RunProgress>? data) : IPipelineReporter
    {
        public IProgress<RunProgress>? Progress(int id, string activity, string unit = "samples") => id == 2 ? weights : id == 1 ? data : null;
        public void Complete(int id, string activity) { }
        public void Verbose(string message) { }
        public void Warning(string message) { }
    }
}

/// <summary>A step with no statistics of its own and no graph rewrite.</summary>
public abstract class PipelineStep : IPipelineStep
{
    public abstract string Name { get; }
    public abstract bool Applies(PipelineContext context);
    public virtual IReadOnlyList<ITensorConsumer> Needs(PipelineContext context) => Array.Empty<ITensorConsumer>();
    public virtual string? Activity => null;
    public virtual bool RewritesGraph => false;
    public abstract void Apply(PipelineContext context);
    protected static bool Static(PipelineContext c) => c.Options.Mode == QuantMode.Static;
}

/// <summary>Cross-layer equalization (<see cref="CrossLayerEqualization"/>) of the model that is then calibrated
/// and quantized. Statistics that came in were measured on the model as it was: the request is refused then,
/// unless they were measured on the equalized model (<see cref="Quantizer.ForOptions"/>).</summary>
public sealed class EqualizeStep : PipelineStep
{
    public override string Name => "Equalize";
    public override bool RewritesGraph => true;
    public override bool Applies(PipelineContext c) => Static(c) && c.Options.Equalize && !c.Request.StatisticsOfEqualizedModel;

    public override void Apply(PipelineContext c)
    {
        var (model, pairs) = CrossLayerEqualization.Apply(c.Prepared.Model);
        c.Prepared = c.Prepared with { Model = model };
        c.Model = model;
        foreach (var pair in pairs) c.Reporter.Verbose($"Equalized {pair}");
    }
}

/// <summary>Static calibration of the planned activations (<see cref="CalibrationSession"/>: batched runs over the
/// data, every method's range in one pass); every 10th sample is held out for the fidelity check.</summary>
public sealed class CalibrateStep : PipelineStep
{
    const string Activity_ = "Calibrating";
    public override string Name => "Calibrate";
    public override bool Applies(PipelineContext c) => Static(c) && c.Statistics is null;

    public override void Apply(PipelineContext c)
    {
        var data = c.Request.Data!;
        var plan = QuantizationPlan.Create(new GraphView(c.Prepared.Model.Graph), c.Request.Selected, c.Options.FloatReason);
        TensorOverrides.Check(plan, c.Options);   // before the calibration run
        (c.Statistics, c.HeldOut) = Calibrate(c.Prepared, plan.Activations, data, c.Request.Threads, new CalibrationOptions(), null,
            c.Reporter.Progress(1, Activity_), c.Cancel);
        c.DataPasses++;
        c.Reporter.Complete(1, Activity_);
    }

    /// <summary>Calibration of stored samples as every command does it: every 10th sample held out of the run for
    /// the fidelity check (<see cref="FidelityGuard.CalibrationPart"/>); the statistics carry the held-out part.</summary>
    public static (List<TensorStatistics> Statistics, PtqDataSet? HeldOut) Calibrate(PreparedModel prepared, IReadOnlyDictionary<string, List<string>> tensors,
        PtqDataSet data, int threads, CalibrationOptions options, Action<PtqException>? onInvalid, IProgress<RunProgress>? progress, CancellationToken cancel)
    {
        var stats = ActivationCalibrator.Run(prepared, tensors, FidelityGuard.CalibrationPart(data), threads, options, onInvalid, progress, cancel);
        var heldOut = FidelityGuard.HeldOutPart(data);
        foreach (var s in stats) s.HeldOut = heldOut;
        return (stats, heldOut);
    }
}

/// <summary>The static plan from the statistics (<see cref="Quantizer.Plan"/>: the statistics belong to the model,
/// are finite and cover the plan; the statistics rule), and the Conv kernel encoding's reasons.</summary>
public sealed class StaticPlanStep : PipelineStep
{
    public override string Name => "Plan";
    public override bool Applies(PipelineContext c) => Static(c);

    public override void Apply(PipelineContext c)
    {
        var (prepared, options) = (c.Prepared, c.Options);
        if (c.Statistics is null)
            throw new PtqException("StatisticsRequired", PtqErrorKind.InvalidArgument, "Static quantization needs calibration statistics.", prepared.SourcePath);
        if (c.HeldOut is null && c.Request.Statistics is not null)
            c.HeldOut = c.Statistics.Select(s => s.HeldOut).FirstOrDefault(h => h is not null) ?? (c.Request.Data is null ? null : FidelityGuard.HeldOutPart(c.Request.Data));
        var (plan, ranges) = Quantizer.Plan(prepared, c.Statistics, options);
        if (plan.QuantizedLayers.Count == 0)
        {
            var rules = plan.Decisions.Where(d => d.Reason.StartsWith("kept in float (rule ", StringComparison.Ordinal))
                .Select(d => d.Reason["kept in float (rule ".Length..d.Reason.IndexOf(')')]).Distinct().ToList();
            if (rules.Count == 0 || c.Request.Search is not null)
                throw new PtqException("NothingToQuantize", PtqErrorKind.InvalidArgument, $"None of the layers in the pipeline can be quantized in '{prepared.SourcePath}'"
                    + (rules.Count > 0 ? $": the architecture rules {string.Join(", ", rules)} keep them in float (-SkipRule quantizes them anyway)." : "."), prepared.SourcePath);
            // The rules keep every layer in float: int8 would lose the task or run slower. The float model is written
            // with each layer's reason, and the result says so.
            c.KeptFloatByRules = $"FLOAT MODEL WRITTEN: the rules {string.Join(", ", rules)} keep every layer of the pipeline in float (each layer's decision says why: int8 would lose the model's task there or run slower than float); -SkipRule quantizes them anyway.";
        }
        foreach (var d in plan.Decisions.Where(d => d.Quantized && d.OpType == "Conv"))
            if (OpsetUpgrader.AllNodes(prepared.Model.Graph).FirstOrDefault(n => n.OpType == "Conv" && (d.Layer == n.Name || d.Layer.EndsWith("/" + n.Name, StringComparison.Ordinal))) is { } conv
                && ConvKernels.ShiftsWeights(conv, options))
                d.Reason += ConvKernels.Reason;
        (c.Plan, c.Ranges) = (plan, ranges);
    }
}

/// <summary>The plan of the weight modes (<see cref="WeightQuantizer.Plan"/>); statistics that came in only say
/// which layers were selected.</summary>
public sealed class WeightPlanStep : PipelineStep
{
    public override string Name => "Plan";
    public override bool Applies(PipelineContext c) => !Static(c);

    public override void Apply(PipelineContext c)
    {
        var (prepared, options) = (c.Prepared, c.Options);
        var selected = c.Statistics is not null ? c.Statistics.SelectMany(s => s.Layers).ToHashSet(StringComparer.Ordinal) : c.Request.Selected;
        var plan = WeightQuantizer.Plan(new GraphView(prepared.Model.Graph), selected, options, options.ExcludeReason);
        if (plan.QuantizedLayers.Count == 0)
            throw new PtqException("NothingToQuantize", PtqErrorKind.InvalidArgument,
                $"None of the layers in the pipeline can be quantized in {options.Mode} mode in '{prepared.SourcePath}' (it quantizes MatMul layers with a constant 2-D weight, Gather from a constant table and LSTM/GRU weights).", prepared.SourcePath);
        c.Plan = plan;
    }
}

/// <summary>The quantized MatMul layers of the plan, as nodes of the current float model.</summary>
static class PlannedMatMuls
{
    public static List<string> Of(PipelineContext c) =>
        c.Plan!.QuantizedLayers.Where(l => c.Model.Graph.Node.First(n => n.Name == l).OpType == "MatMul").ToList();
}

/// <summary>SmoothQuant (<see cref="SmoothQuant"/>): needs the channel maxima of the MatMul inputs.</summary>
public sealed class SmoothQuantStep : PipelineStep
{
    SmoothQuant.MaximaConsumer? _maxima;
    List<string>? _matmuls;
    public override string Name => "SmoothQuant";
    public override bool RewritesGraph => true;
    public override bool Applies(PipelineContext c) => c.Options.Mode == QuantMode.Dynamic && c.Options.SmoothQuantAlpha is not null;

    public override IReadOnlyList<ITensorConsumer> Needs(PipelineContext c)
    {
        _matmuls ??= PlannedMatMuls.Of(c);
        return new ITensorConsumer[] { _maxima ??= new SmoothQuant.MaximaConsumer(c.Model, _matmuls) };
    }

    public override void Apply(PipelineContext c)
    {
        float alpha = c.Options.SmoothQuantAlpha!.Value;
        var (source, _) = SmoothQuant.Apply(c.Model, _matmuls!, _maxima!.Maxima, alpha);
        var inputs = source.Graph.Node.Where(n => n.OpType == "Mul" && n.Name.EndsWith("_SmoothQuant", StringComparison.Ordinal)).ToDictionary(n => n.Output[0], n => n.Input[0], StringComparer.Ordinal);
        foreach (var d in c.Plan!.Decisions.Where(d => d.Quantized && d.OpType == "MatMul"))
        {
            var node = source.Graph.Node.First(n => n.Name == d.Layer);
            if (inputs.ContainsKey(node.Input[0])) d.Reason += FormattableString.Invariant($"; SmoothQuant alpha {alpha}");
        }
        c.Model = source;
    }
}

/// <summary>The outlier split (<see cref="OutlierSplit"/>): needs the channel maxima of the MatMul inputs of the
/// model as SmoothQuant left it.</summary>
public sealed class OutlierSplitStep : PipelineStep
{
    SmoothQuant.MaximaConsumer? _maxima;
    List<string>? _matmuls;
    public override string Name => "OutlierSplit";
    public override bool RewritesGraph => true;
    public override bool Applies(PipelineContext c) => c.Options.Mode == QuantMode.Dynamic && c.Options.OutlierThreshold is not null;

    public override IReadOnlyList<ITensorConsumer> Needs(PipelineContext c)
    {
        _matmuls ??= PlannedMatMuls.Of(c);
        return new ITensorConsumer[] { _maxima ??= new SmoothQuant.MaximaConsumer(c.Model, _matmuls) };
    }

    public override void Apply(PipelineContext c)
    {
        var (source, split) = OutlierSplit.Apply(c.Model, _matmuls!, _maxima!.Maxima, c.Options.OutlierThreshold!.Value);
        foreach (var d in c.Plan!.Decisions.Where(d => d.Quantized && split.ContainsKey(d.Layer)))
            d.Reason += OutlierSplit.Reason(split[d.Layer]);
        c.Model = source;
    }
}

/// <summary>GPTQ (<see cref="Gptq"/>): needs the Hessians of the MatMul inputs; the weight writer uses them.</summary>
public sealed class GptqStep : PipelineStep
{
    Gptq.HessianConsumer? _hessians;
    public override string Name => "GPTQ";
    public override string? Activity => "Collecting the MatMul inputs' Hessians (GPTQ)";
    public override bool Applies(PipelineContext c) => !Static(c) && c.Options.WeightMethod == WeightMethod.Gptq;

    public override IReadOnlyList<ITensorConsumer> Needs(PipelineContext c) =>
        new ITensorConsumer[] { _hessians ??= new Gptq.HessianConsumer(c.Model, c.Plan!.QuantizedLayers, c.Request.Threads) };

    public override void Apply(PipelineContext c) => c.Hessians = _hessians!.Finish(c.Request.Data!);
}

/// <summary>Accuracy-aware quantization (<see cref="AccuracyAwareSearch"/>): writes the best model it finds in
/// place of the plain write.</summary>
public sealed class AccuracySearchStep : PipelineStep
{
    const string Activity_ = "Accuracy-aware quantization";
    public override string Name => "AccuracySearch";
    public override bool Applies(PipelineContext c) => Static(c) && c.Request.Search is not null;

    public override void Apply(PipelineContext c)
    {
        var s = c.Request.Search!;
        var result = AccuracyAwareSearch.Run(c.Prepared, c.Statistics!, c.Options, c.Request.OutputPath, s.Evaluation!, s.Metric, s.MaxDrop, s.Budget,
            c.Request.Threads, c.Reporter.Progress(4, Activity_), c.Cancel);
        c.Reporter.Complete(4, Activity_);
        // The search always writes its summary; the fallback only keeps a missing one from becoming an empty message.
        var summary = result.SearchSummary ?? $"The accuracy-aware search {(result.GoalMet == true ? "met" : "did not meet")} its goal.";
        if (result.GoalMet == true) c.Reporter.Verbose(summary); else c.Reporter.Warning(summary);
        c.Result = result;
    }
}

/// <summary>The QDQ writer (<see cref="QdqQuantizer"/>): Q/DQ on the planned activations, int8 weights made
/// pair-safe for the target (<see cref="PairSaturation"/>), int32 biases with the bias correction
/// (<see cref="BiasCorrection"/>, from the calibrated means).</summary>
public sealed class QdqWriteStep : PipelineStep
{
    public override string Name => "QDQ";
    public override bool Applies(PipelineContext c) => Static(c) && c.Request.Search is null;
    public override void Apply(PipelineContext c) => c.Quantized = c.KeptFloatByRules is null
        ? QdqQuantizer.Quantize(c.Prepared.Model, c.Plan!, c.Ranges!, c.Options, c.Cancel)
        : c.Prepared.Model.Clone();
}

/// <summary>The QOperator lowering of the QDQ model (<see cref="QOperatorConverter"/>).</summary>
public sealed class QOperatorStep : PipelineStep
{
    public override string Name => "QOperator";
    public override bool Applies(PipelineContext c) => Static(c) && c.Request.Search is null && c.Options.Format == QuantFormat.QOperator && c.KeptFloatByRules is null;
    public override void Apply(PipelineContext c) => c.Quantized = QOperatorConverter.Convert(c.Quantized!, c.Cancel);
}

/// <summary>The writer of the dynamic and weight-only modes (<see cref="WeightQuantizer"/>).</summary>
public sealed class WeightWriteStep : PipelineStep
{
    const string Activity_ = "Quantizing weights";
    public override string Name => "Weights";
    public override bool Applies(PipelineContext c) => !Static(c);

    public override void Apply(PipelineContext c)
    {
        c.Quantized = WeightQuantizer.Quantize(c.Model, c.Plan!, c.Options, c.Cancel, c.Reporter.Progress(2, Activity_, "layers"), c.Hessians, c.Request.Threads);
        c.Reporter.Complete(2, Activity_);
    }
}

/// <summary>Writes the quantized model with its metadata, atomically (<see cref="Quantizer.Write"/>).</summary>
public sealed class SaveStep : PipelineStep
{
    public override string Name => "Save";
    public override bool Applies(PipelineContext c) => c.Quantized is not null || c.Request.Search is null;

    public override void Apply(PipelineContext c)
    {
        c.Result = Quantizer.Write(c.Prepared, c.Quantized!, c.Plan!, c.Options, c.Request.OutputPath, c.Cancel);
        if (c.KeptFloatByRules is { } summary)
            c.Result.Fidelity = new FidelityCheck
            {
                Status = "KeptFloat", Summary = summary, Cosine = 1, FinalCosine = 1, SqnrDb = double.PositiveInfinity, FinalSqnrDb = double.PositiveInfinity,
                Speedup = 1, SizeRatio = c.Result.SizeRatio, MinCosine = c.Request.Fidelity?.MinCosine ?? FidelityGuard.DefaultMinCosine,
                MinAgreement = FidelityGuard.DefaultMinAgreement, SampleSource = "none needed: the float model itself is written",
                KeptInFloat = new(c.Plan!.Decisions.Where(d => d.Reason.StartsWith("kept in float (rule ", StringComparison.Ordinal)).Select(d => d.Layer)),
            };
    }
}

/// <summary>The fidelity check of a written static model on held-out samples, and the search below the threshold
/// (<see cref="FidelityGuard"/>).</summary>
public sealed class FidelityStep : PipelineStep
{
    const string Activity_ = "Checking the written model against float";
    public override string Name => "Fidelity";
    public override bool Applies(PipelineContext c) => Static(c) && c.Request.Search is null && c.Request.Fidelity is not null && c.KeptFloatByRules is null;

    public override void Apply(PipelineContext c)
    {
        var f = c.Request.Fidelity!;
        var written = c.Result!;
        c.Result = QuantizationPipeline.RemoveOutputIfStopped(written.OutputPath, c.Cancel, () => FidelityGuard.Run(c.Prepared, c.Statistics!, c.Options, written, c.HeldOut,
            c.HeldOut is null ? c.Request.Data : null, f.MinCosine, f.Budget, c.Request.Threads, c.Reporter.Progress(4, Activity_), c.Cancel));
        c.Reporter.Complete(4, Activity_);
    }
}

/// <summary>The host check (<see cref="HostGuard"/>) of a written model that has integer products.</summary>
public sealed class HostCheckStep : PipelineStep
{
    const string Activity_ = "Checking the written model on this host";
    public override string Name => "HostCheck";
    public override bool Applies(PipelineContext c) => c.Request.HostCheck && c.Options.Mode != QuantMode.WeightOnly;

    public override void Apply(PipelineContext c)
    {
        var result = c.Result!;
        var stats = Static(c) ? c.Statistics : null;
        var progress = c.Reporter.Progress(5, Activity_);
        progress?.Report(new RunProgress(0, HostGuard.DefaultSamples, 0, result.OutputPath));
        QuantizationPipeline.RemoveOutputIfStopped(result.OutputPath, c.Cancel, () =>
        {
            var (samples, source) = HostGuard.Samples(result.OutputPath, c.Request.Data, stats, c.Cancel);
            result.HostCheck = samples is null
                ? new HostCheck { Status = "NotChecked", HostClass = QuantTargets.HostClass.ToString(), Summary = $"Host check not run: {source}." }
                : HostGuard.Run(result.OutputPath, samples, source, c.Cancel);
            c.Cancel.ThrowIfCancellationRequested();
            return result;
        });
        c.Reporter.Complete(5, Activity_);
    }
}
