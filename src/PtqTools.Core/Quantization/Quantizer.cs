using Google.Protobuf;
using Onnx;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>Static quantization of one model from its calibration statistics, written to a file.</summary>
public static class Quantizer
{
    public static readonly string ToolVersion = typeof(Quantizer).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    /// <summary>The default-domain opset the quantized model needs, and no more: per-channel QuantizeLinear and
    /// DequantizeLinear need 13, per-tensor ones 10, DynamicQuantizeLinear 11; MatMulNBits (int4) lives in
    /// com.microsoft and needs no raise.</summary>
    public static int RequiredOpset(QuantizationOptions options) => options.Mode switch
    {
        QuantMode.Dynamic => 11,
        QuantMode.WeightOnly when options.WeightBits == 4 => 1,
        _ => options.PerChannel ? 13 : 10,
    };

    /// <summary>Refuses, before any work, a model whose opset cannot be raised as far as these options need.</summary>
    internal static void CheckOpset(PreparedModel prepared, QuantizationOptions? options)
    {
        if (OpsetUpgrader.RaiseBlocked(prepared.Model, RequiredOpset(options ?? new QuantizationOptions())) is { } blocked)
            throw new PtqException("OpsetUpgradeBlocked", PtqErrorKind.NotSupported, blocked, prepared.SourcePath);
    }

    /// <summary>Checks everything that can be checked before work starts: the statistics belong to this model,
    /// are finite, and cover every tensor the selected layers need.</summary>
    /// <param name="speedRules">Whether the speed rules (<see cref="RegionCost"/>) apply: to what is written, yes;
    /// to Measure-LayerError's per-layer figures, no.</param>
    public static (QuantizationPlan Plan, Dictionary<string, TensorRange> Ranges) Plan(PreparedModel prepared, IReadOnlyCollection<TensorStatistics> statistics,
        QuantizationOptions? options = null, bool speedRules = true)
    {
        CheckOpset(prepared, options);
        var foreign = statistics.FirstOrDefault(s => !string.Equals(s.ModelSha256, prepared.SourceSha256, StringComparison.OrdinalIgnoreCase));
        if (foreign is not null)
            throw new PtqException("StatisticsModelMismatch", PtqErrorKind.InvalidData,
                $"The statistics of tensor '{foreign.Tensor}' were measured on a model with SHA-256 {foreign.ModelSha256}, not on '{prepared.SourcePath}' ({prepared.SourceSha256}).", foreign.Tensor);
        var ranges = new Dictionary<string, TensorRange>(StringComparer.Ordinal);
        foreach (var s in statistics)
        {
            if (!float.IsFinite(s.RangeMin) || !float.IsFinite(s.RangeMax) || s.RangeMin > s.RangeMax)
                throw new PtqException("RangeNotFinite", PtqErrorKind.InvalidData, $"Tensor '{s.Tensor}' has an unusable range [{s.RangeMin}, {s.RangeMax}].", s.Tensor);
            ranges[s.Tensor] = new TensorRange(s.RangeMin, s.RangeMax, (float)s.Mean, (float)s.Std);
        }
        var selected = statistics.SelectMany(s => s.Layers).ToHashSet(StringComparer.Ordinal);
        var graph = new GraphView(prepared.Model.Graph);
        Func<NodeProto, GraphView, string?>? floatReason = options is null ? null : options.FloatReason;
        var plan = QuantizationPlan.Create(graph, selected, floatReason, perChannel: options?.PerChannel ?? true);
        // The statistics rule: the layers that need a range set by one far-off value stay in float; then the speed rules
        // (RegionCost): Convs too shallow for int8 to pay, and int8 regions that would run slower than float.
        if (options is { RulesApply: true })
        {
            var byLayer = new Dictionary<string, string>(StringComparer.Ordinal);
            QuantizationPlan Replan() => QuantizationPlan.Create(graph, selected,
                (node, g) => options.FloatReason(node, g) ?? byLayer.GetValueOrDefault(QuantizationPlan.LayerName(g, node)), options.PerChannel);
            if (!options.SkipRules.Contains(ArchitectureRules.RangeRule))
            {
                foreach (var s in statistics)
                    if (plan.Activations.TryGetValue(s.Tensor, out var layers) && ArchitectureRules.DominatedRange(s) is { } why)
                        foreach (var layer in layers)
                            byLayer.TryAdd(layer, $"kept in float (rule {ArchitectureRules.RangeRule}): tensor '{s.Tensor}': {why}");
                if (byLayer.Count > 0) plan = Replan();
            }
            if (speedRules && !options.SkipRules.Contains(RegionCost.ShallowRule) && RegionCost.ShallowLayers(graph, plan) is { Count: > 0 } shallow)
            {
                foreach (var (layer, why) in shallow) byLayer.TryAdd(layer, why);
                plan = Replan();
            }
            if (speedRules && !options.SkipRules.Contains(RegionCost.Rule) && RegionCost.SlowLayers(graph, plan, statistics) is { Count: > 0 } slow)
            {
                foreach (var (layer, why) in slow) byLayer.TryAdd(layer, why);
                plan = Replan();
            }
        }
        return (plan, ranges);
    }

    /// <summary>The model that is calibrated and quantized under these options: the prepared one, equalized with
    /// -Equalize (<see cref="CrossLayerEqualization"/>). Calibrate this model, then quantize it.</summary>
    public static PreparedModel ForOptions(PreparedModel prepared, QuantizationOptions options, out IReadOnlyList<string> equalized)
    {
        equalized = Array.Empty<string>();
        if (!options.Equalize) return prepared;
        var (model, pairs) = CrossLayerEqualization.Apply(prepared.Model);
        equalized = pairs;
        return prepared with { Model = model };
    }

    /// <summary>Writes the prepared float model with the metadata of a quantized one (source, options, target), every
    /// layer the plan would quantize kept in float with <paramref name="reason"/>: what is written when quantizing
    /// would not pay.</summary>
    public static QuantizationResult WriteFloat(PreparedModel prepared, QuantizationPlan plan, QuantizationOptions options, string outputPath,
        string reason, CancellationToken cancel)
    {
        foreach (var d in plan.Decisions.Where(d => d.Quantized))
        {
            d.Quantized = false;
            d.Reason = reason;
        }
        foreach (var d in plan.Decisions.Where(d => d.Folded)) { d.Folded = false; d.Reason = "kept in float: its producer is not quantized"; }
        plan.QuantizedLayers.Clear();
        return Write(prepared, prepared.Model.Clone(), plan, options, outputPath, cancel);
    }

    internal static QuantizationResult Write(PreparedModel prepared, ModelProto model, QuantizationPlan plan, QuantizationOptions options, string outputPath, CancellationToken cancel)
    {
        SetMetadata(model, "ptq.source_sha256", prepared.SourceSha256);
        SetMetadata(model, "ptq.options", options.ToString());
        SetMetadata(model, "ptq.tool", $"PtqTools {ToolVersion}");
        var target = QuantTargets.Resolve(options.Target);
        SetMetadata(model, "ptq.target", target.ToString());
        model.ProducerName = "PtqTools";
        model.ProducerVersion = ToolVersion;
        cancel.ThrowIfCancellationRequested();
        var sideFile = ExternalData.RealPath(Path.GetFullPath(outputPath) + ".data");
        if (File.Exists(sideFile) && OnnxModelIO.SideFiles(prepared.SourcePath, File.ReadAllBytes(prepared.SourcePath)).Any(f => PlatformPaths.Same(f.File, sideFile)))
            throw new PtqException("OutputIsSource", PtqErrorKind.InvalidArgument,
                $"Writing '{outputPath}' would replace '{sideFile}', which holds the source model's tensors; choose another output name.", outputPath);
        // A model whose weights came in side files (above 2 GB) is written with external data too.
        OnnxModelIO.Save(model, outputPath, externalData: ExternalData.HasDeferred(prepared.Model), cancel);
        var sourceSize = OnnxModelIO.SizeOnDisk(prepared.SourcePath);
        var outputSize = OnnxModelIO.SizeOnDisk(outputPath);
        return new QuantizationResult
        {
            SourcePath = Path.GetFullPath(prepared.SourcePath),
            SourceSha256 = prepared.SourceSha256,
            OutputPath = Path.GetFullPath(outputPath),
            OutputSha256 = OnnxModelIO.Sha256(outputPath),
            Mode = options.Mode.ToString(),
            Format = options.Mode switch
            {
                QuantMode.Dynamic => "MatMulInteger",
                QuantMode.WeightOnly when options.WeightBits == 4 => "MatMulNBits",
                QuantMode.WeightOnly => "Cast+Mul",
                _ => options.Format.ToString(),
            },
            Options = options.ToString(),
            SourceSizeBytes = sourceSize,
            OutputSizeBytes = outputSize,
            SizeRatio = Math.Round((double)outputSize / sourceSize, 4),
            QuantizedLayerCount = plan.QuantizedLayers.Count,
            FoldedLayerCount = plan.Decisions.Count(d => d.Folded),
            FloatLayerCount = plan.Decisions.Count(d => !d.Quantized && !d.Folded),
            QuantizedLayers = plan.Decisions.Where(d => d.Quantized).Select(d => d.Layer).ToArray(),
            Decisions = new(plan.Decisions.Select(d => new QuantizationDecision { Layer = d.Layer, OpType = d.OpType, Quantized = d.Quantized, Folded = d.Folded, Reason = d.Reason })),
            Target = target.ToString(),
            HostClass = QuantTargets.HostClass.ToString(),
            OverflowFix = plan.Decisions.Any(d => d.Pairs is not null) ? options.OverflowFix.ToString() : "",
            PairSafeLayers = plan.Decisions.Where(d => d.Pairs is { Fixed: true }).Select(d => d.Layer).ToArray(),
            OverflowLayers = plan.Decisions.Where(d => d.Pairs is { Overflows: true }).Select(d => d.Layer).ToArray(),
        };
    }

    static void SetMetadata(ModelProto model, string key, string value)
    {
        var entry = model.MetadataProps.FirstOrDefault(p => p.Key == key);
        if (entry is null) model.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        else entry.Value = value;
    }
}
