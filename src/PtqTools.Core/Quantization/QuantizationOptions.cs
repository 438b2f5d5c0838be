using System.IO.Enumeration;
using Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>What is quantized ahead of time and what at run time.</summary>
public enum QuantMode { Static, Dynamic, WeightOnly }

/// <summary>How weight-only 4-bit codes are chosen: round-to-nearest, HQQ (per block, no data) or GPTQ (error
/// feedback through each MatMul's input Hessian from calibration data).</summary>
public enum WeightMethod { Rtn, Hqq, Gptq }

/// <summary>How a static model is written.</summary>
public enum QuantFormat { QDQ, QOperator }

/// <summary>Options of a static QDQ quantization, checked as a whole before any work starts.</summary>
public sealed class QuantizationOptions
{
    public QuantType ActivationType { get; set; } = QuantType.UInt8;
    public bool ActivationSymmetric { get; set; }
    public bool PerChannel { get; set; } = true;

    /// <summary>Static (calibrated activations, QDQ), Dynamic (int8 weights, activation ranges at run time) or
    /// WeightOnly (int8 per channel or int4 block-wise weights, float activations).</summary>
    public QuantMode Mode { get; set; } = QuantMode.Static;

    /// <summary>How a static model is written: QDQ pairs ONNX Runtime fuses, or its integer operators directly.</summary>
    public QuantFormat Format { get; set; } = QuantFormat.QDQ;

    /// <summary>Bits of a weight-only weight: 8 (per channel, DequantizeLinear) or 4 (block-wise, MatMulNBits).</summary>
    public int WeightBits { get; set; } = 8;

    /// <summary>How 4-bit codes are chosen: round-to-nearest of each block's range, HQQ (error-minimizing per block)
    /// or GPTQ (error-minimizing on the calibration inputs; needs a data set).</summary>
    public WeightMethod WeightMethod { get; set; } = WeightMethod.Rtn;

    /// <summary>Block size along K of int4 weight-only weights.</summary>
    public int BlockSize { get; set; } = 32;

    /// <summary>Type of 8-bit weights: Int8 (default) or UInt8.</summary>
    public QuantType WeightType { get; set; } = QuantType.Int8;

    /// <summary>Symmetric weights (zero point at the type's middle) or asymmetric (each slice's [min, max]); null
    /// is the mode's default: symmetric 8-bit weights, asymmetric 4-bit blocks (symmetric 4-bit blocks are written
    /// without zero points).</summary>
    public bool? WeightSymmetric { get; set; }

    /// <summary>7-bit weights ([-64, 64] int8, [0, 127] uint8), as ONNX Runtime's reduce_range, for CPUs without
    /// VNNI whose u8 x s8 pair sums saturate in 16 bits.</summary>
    public bool ReduceRange { get; set; }

    /// <summary>Per-tensor overrides of activation tensors (Static mode): type, range, or scale and zero point.</summary>
    public Dictionary<string, TensorOverride> Overrides { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Bias correction (<see cref="Quantization.BiasCorrection"/>): the expected output shift of the rounded
    /// weights, from the calibrated input mean, is added to each Conv/Gemm bias before it is quantized.</summary>
    public bool BiasCorrection { get; set; }

    /// <summary>Cross-layer equalization of Conv → Relu → Conv chains (<see cref="CrossLayerEqualization"/>) before
    /// calibration; statistics measured on the model as it was do not apply.</summary>
    public bool Equalize { get; set; }

    /// <summary>SmoothQuant's migration strength alpha (0..1] for the MatMuls of Dynamic mode, or null for none;
    /// it needs calibration data for the activations' channel maxima.</summary>
    public float? SmoothQuantAlpha { get; set; }

    /// <summary>Which ONNX Runtime kernel the quantized convolutions are written for (<see cref="Quantization.ConvKernel"/>):
    /// the same weight values, encoded for its symmetric convolution or for its im2col + QGEMM path.</summary>
    public ConvKernel ConvKernel { get; set; } = ConvKernel.Auto;

    /// <summary>The CPU class the model is written for (<see cref="QuantTarget"/>): Portable by default, right on every
    /// class; Host is resolved to this machine's class when the options are used.</summary>
    public QuantTarget Target { get; set; } = QuantTarget.Portable;

    /// <summary>What is done to a layer whose u8 x s8 pair sums could leave int16 on a target whose kernels
    /// saturate there (<see cref="Quantization.OverflowFix"/>).</summary>
    public OverflowFix OverflowFix { get; set; } = OverflowFix.Channels;

    /// <summary>Mixed-precision split of dynamic MatMuls (<see cref="OutlierSplit"/>): input channels whose calibrated
    /// maximum is above this many times the median channel maximum are computed in float; null for none.</summary>
    public float? OutlierThreshold { get; set; }

    /// <summary>How 8-bit weights are quantized.</summary>
    public WeightSpec Weights => new(WeightType, WeightSymmetric ?? true, ReduceRange);

    /// <summary>Whether 4-bit blocks are symmetric (no zero points, MatMulNBits' default 8).</summary>
    public bool Int4Symmetric => WeightSymmetric ?? false;

    /// <summary>The activation type of one tensor, after its override.</summary>
    public QuantType TypeOf(string tensor) => Overrides.TryGetValue(tensor, out var o) && o.Type is { } t ? t : ActivationType;

    /// <summary>Layers kept in float whatever the pipeline says: layer names, wildcard patterns (* and ?) over
    /// names, or op types (Conv, MatMul, ...), matched case-sensitively like ONNX names.</summary>
    public string[] Exclude { get; set; } = Array.Empty<string>();

    /// <summary>Why -Exclude keeps this layer in float, or null when it does not.</summary>
    public string? ExcludeReason(NodeProto node)
    {
        foreach (var pattern in Exclude)
        {
            if (pattern == node.OpType) return $"excluded (-Exclude op type '{pattern}'): kept in float";
            if (pattern == node.Name) return $"excluded (-Exclude '{pattern}'): kept in float";
            if (pattern.IndexOfAny(new[] { '*', '?' }) >= 0 && FileSystemName.MatchesSimpleExpression(pattern, node.Name, ignoreCase: false))
                return $"excluded (-Exclude pattern '{pattern}'): kept in float";
        }
        return null;
    }

    /// <summary>Architecture rules (<see cref="ArchitectureRules"/>) not applied: their layers are quantized like any
    /// other. "*" skips them all. Static mode only; the other modes apply none.</summary>
    public string[] SkipRules { get; set; } = Array.Empty<string>();

    /// <summary>Whether the architecture rules apply at all (Static mode, not all skipped).</summary>
    public bool RulesApply => Mode == QuantMode.Static && !SkipRules.Contains("*");

    /// <summary>Why this layer stays in float whatever the pipeline says: -Exclude first, then the architecture rules
    /// (Static mode), or null when neither keeps it.</summary>
    public string? FloatReason(NodeProto node, PtqTools.Core.Onnx.GraphView graph) =>
        ExcludeReason(node) ?? (RulesApply ? ArchitectureRules.Reason(node, graph, SkipRules) : null);

    /// <summary><see cref="CheckExclude(ModelProto, string?)"/> on a prepared model (the cmdlets reference no ONNX type).</summary>
    public IReadOnlyList<string> CheckExclude(PtqTools.Core.Onnx.PreparedModel prepared, string? modelPath = null) => CheckExclude(prepared.Model, modelPath);

    /// <summary>Checks the -Exclude entries against a model's layers (every graph, subgraphs included, by node name as
    /// <see cref="ExcludeReason"/> matches them) before any work: an entry that matches no layer name, no name pattern
    /// and no op type of the model is refused (ExcludeMatchesNothing), with the name that matches it case-insensitively
    /// when there is one. An entry that is an op type the quantizer knows (Conv, MatMul, Relu, ...) but this model
    /// lacks is allowed: it is returned, for a warning.</summary>
    public IReadOnlyList<string> CheckExclude(ModelProto model, string? modelPath = null)
    {
        if (Exclude.Length == 0) return Array.Empty<string>();
        var nodes = PtqTools.Core.Onnx.OpsetUpgrader.AllNodes(model.Graph).ToList();
        var absentOpTypes = new List<string>();
        foreach (var entry in Exclude)
        {
            if (nodes.Any(n => ExcludeMatch(entry, n, ignoreCase: false))) continue;
            if (OpHandlers.OpTypes.Contains(entry) || OpHandlers.FoldedActivations.Contains(entry))
            {
                absentOpTypes.Add(entry);
                continue;
            }
            var near = nodes.FirstOrDefault(n => ExcludeMatch(entry, n, ignoreCase: true));
            var hint = near is null ? "" : HasWildcard(entry)
                ? $" (-Exclude is case-sensitive: did you mean a pattern that matches '{near.Name}'?)"
                : $" (-Exclude is case-sensitive: did you mean '{(string.Equals(entry, near.OpType, StringComparison.OrdinalIgnoreCase) ? near.OpType : near.Name)}'?)";
            throw new PtqException("ExcludeMatchesNothing", PtqErrorKind.InvalidArgument,
                $"The -Exclude entry '{entry}' matches no layer name, name pattern or op type of {(modelPath is null ? "the model" : $"'{modelPath}'")}{hint}; Get-ModelLayer lists the layers.", entry);
        }
        return absentOpTypes;
    }

    static bool HasWildcard(string pattern) => pattern.IndexOfAny(new[] { '*', '?' }) >= 0;

    static bool ExcludeMatch(string pattern, NodeProto node, bool ignoreCase)
    {
        var comparison = ignoreCase ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal;
        return string.Equals(pattern, node.OpType, comparison) || string.Equals(pattern, node.Name, comparison)
            || HasWildcard(pattern) && FileSystemName.MatchesSimpleExpression(pattern, node.Name, ignoreCase);
    }

    public void Validate()
    {
        if (Exclude.Any(string.IsNullOrWhiteSpace))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, "An -Exclude entry is empty.", Exclude);
        if (!Enum.IsDefined(Mode))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Mode {Mode} is not supported.", Mode);
        if (!Enum.IsDefined(Format))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Format {Format} is not supported.", Format);
        if (Format == QuantFormat.QOperator && Mode != QuantMode.Static)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                $"-Format QOperator writes QLinear operators with calibrated output scales, which only Static mode has; {Mode} mode writes its own operators (MatMulInteger or MatMulNBits).", Format);
        if (Mode == QuantMode.Dynamic && ActivationType != QuantType.UInt8)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                "Dynamic mode quantizes activations with DynamicQuantizeLinear, which ONNX Runtime defines for uint8 only: use -ActivationType UInt8.", ActivationType);
        if (Mode == QuantMode.Dynamic && ActivationSymmetric)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                "Dynamic mode computes an asymmetric uint8 range at run time; -SymmetricActivation does not apply.", ActivationSymmetric);
        if (WeightBits is not (4 or 8))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Weights can have 8 or 4 bits, not {WeightBits}.", WeightBits);
        if (WeightBits == 4 && Mode != QuantMode.WeightOnly)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                "4-bit weights are written as com.microsoft MatMulNBits, which only -Mode WeightOnly produces; ONNX Runtime has no int4 kernel for static or dynamic activations.", WeightBits);
        if (WeightBits == 4 && BlockSize is not (16 or 32 or 64 or 128 or 256))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument,
                $"MatMulNBits needs a block size that is a power of two from 16 to 256 (32, 64 or 128 are usual), not {BlockSize}.", BlockSize);
        if (WeightMethod != WeightMethod.Rtn && !(Mode == QuantMode.WeightOnly && WeightBits == 4))
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                $"-WeightMethod {WeightMethod} chooses 4-bit block codes; it needs -Mode WeightOnly -WeightBits 4.", WeightMethod);
        if (WeightBits == 4 && !PerChannel)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                "4-bit weights are block-wise along K (one scale per block of each output column); -PerTensor does not apply.", PerChannel);
        if (!Enum.IsDefined(Target))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Target {Target} is not a CPU class.", Target);
        if (!Enum.IsDefined(OverflowFix))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Overflow fix {OverflowFix} is not supported.", OverflowFix);
        if (!Enum.IsDefined(ConvKernel))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Conv kernel {ConvKernel} is not supported.", ConvKernel);
        if (!Enum.IsDefined(ActivationType))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Activation type {ActivationType} is not supported.", ActivationType);
        if (ActivationSymmetric && ActivationType is QuantType.UInt8 or QuantType.UInt16)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                $"Symmetric activations need a signed type: use -ActivationType {(ActivationType == QuantType.UInt8 ? "Int8" : "Int16")} with -SymmetricActivation (unsigned activations are asymmetric).", ActivationType);
        if (QuantMath.Is16Bit(ActivationType) && Format == QuantFormat.QOperator)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                $"-ActivationType {ActivationType} has no QLinear operators in ONNX Runtime; 16-bit activations are written as QDQ (com.microsoft QuantizeLinear/DequantizeLinear): use -Format QDQ.", ActivationType);
        if (!Enum.IsDefined(WeightType) || QuantMath.Is16Bit(WeightType))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument,
                $"Weights can be Int8 or UInt8, not {WeightType}: ONNX Runtime's integer kernels take 8-bit weights (16-bit activations use int8 weights).", WeightType);
        if (WeightBits == 4 && WeightType != QuantType.Int8)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                "-WeightType applies to 8-bit weights; 4-bit blocks are MatMulNBits' own unsigned codes.", WeightType);
        if (WeightBits == 4 && ReduceRange)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                "-ReduceRange limits 8-bit weights to 7 bits; it does not apply to 4-bit blocks.", ReduceRange);
        if (Format == QuantFormat.QOperator && ActivationType == QuantType.Int8 && WeightType == QuantType.UInt8)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                "ONNX Runtime has no QLinearConv kernel for int8 activations with uint8 weights (the session fails with NotImplemented): use -WeightType Int8, or uint8 activations. (In QDQ such a model runs, but ONNX Runtime fuses nothing and it runs in float.)", WeightType);
        if ((BiasCorrection || Equalize) && Mode != QuantMode.Static)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                $"{(BiasCorrection ? "-BiasCorrection" : "-Equalize")} works on calibrated Conv layers, which only Static mode has.", Mode);
        if (SmoothQuantAlpha is { } alpha && !(alpha > 0 && alpha <= 1))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"SmoothQuant's alpha is in (0, 1], not {alpha}.", alpha);
        if (SmoothQuantAlpha is not null && Mode != QuantMode.Dynamic)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                "-SmoothQuant moves activation outliers of MatMul inputs into the weights for the run-time per-tensor activation ranges of -Mode Dynamic; it needs -Mode Dynamic.", SmoothQuantAlpha);
        if (OutlierThreshold is { } t && !(t > 1 && float.IsFinite(t)))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"The outlier threshold is a ratio to the median channel maximum above 1, not {t}.", t);
        if (OutlierThreshold is not null && Mode != QuantMode.Dynamic)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                "-OutlierThreshold splits the outlier input channels of MatMuls off the run-time per-tensor activation range of -Mode Dynamic; it needs -Mode Dynamic.", OutlierThreshold);
        if (Overrides.Count > 0 && Mode != QuantMode.Static)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                $"Tensor overrides set the type, range or scale of calibrated activations, which only Static mode has; {Mode} mode quantizes no activation ahead of time.", Overrides.Keys.First());
        foreach (var rule in SkipRules)
            if (rule != "*" && !ArchitectureRules.Names.Contains(rule, StringComparer.Ordinal))
                throw new PtqException("UnknownRule", PtqErrorKind.InvalidArgument,
                    $"There is no architecture rule '{rule}'; the rules are {string.Join(", ", ArchitectureRules.Names)} (or * for all).", rule);
        foreach (var (tensor, o) in Overrides)
        {
            if (string.IsNullOrWhiteSpace(tensor))
                throw new PtqException("InvalidTensorOverride", PtqErrorKind.InvalidArgument, "A tensor override has an empty tensor name.", tensor);
            o.Validate(tensor, this);
        }
    }

    public override string ToString() => ModeText() + TargetText() + (Equalize ? ";equalize=cle" : "") + (BiasCorrection ? ";bias-correction" : "")
        + (SmoothQuantAlpha is { } a ? FormattableString.Invariant($";smoothquant={a:R}") : "")
        + (OutlierThreshold is { } o ? FormattableString.Invariant($";outliers=>{o:R}x-median") : "")
        + (Exclude.Length > 0 ? ";exclude=" + string.Join(",", Exclude) : "")
        + (Mode == QuantMode.Static ? ";rules=" + ArchitectureRules.Version + (SkipRules.Length > 0 ? ",skip:" + string.Join(",", SkipRules.Order(StringComparer.Ordinal)) : "") : "")
        + (Overrides.Count > 0 ? ";overrides=" + string.Join(",", Overrides.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{kv.Key}:{{{kv.Value}}}")) : "");

    /// <summary>The resolved target, and the overflow fix where it matters (modes with integer products on a target
    /// that needs pair-safe weights): part of the recorded options, so a batch run re-quantizes when either changes.</summary>
    string TargetText()
    {
        var target = QuantTargets.Resolve(Target);
        bool integer = Mode != QuantMode.WeightOnly;
        return $";target={target.ToString().ToLowerInvariant()}"
            + (integer && QuantTargets.NeedsPairSafeWeights(target) ? $";overflow-fix={OverflowFix.ToString().ToLowerInvariant()}" : "");
    }

    string WeightText() =>
        $"weights={WeightType.ToString().ToLowerInvariant()},{(Weights.Symmetric ? "symmetric" : "asymmetric")},{(PerChannel ? "per-channel" : "per-tensor")}{(ReduceRange ? ",reduce-range" : "")}";

    string ModeText() => Mode switch
    {
        QuantMode.Dynamic => $"mode=dynamic;format=MatMulInteger;activations=uint8,asymmetric,runtime-range;{WeightText()}",
        QuantMode.WeightOnly when WeightBits == 4 => $"mode=weight-only;format=MatMulNBits;activations=float32;weights=int4,{(Int4Symmetric ? "symmetric" : "asymmetric")},block={BlockSize},{WeightMethod.ToString().ToLowerInvariant()}",
        QuantMode.WeightOnly => $"mode=weight-only;format=Cast+Mul;activations=float32;{WeightText()}",
        _ => StaticText(),
    };

    string StaticText() =>
        $"format={Format};activations={ActivationType.ToString().ToLowerInvariant()}{(ActivationSymmetric ? ",symmetric" : ",asymmetric")};{WeightText()};bias=int32{(Weights is { Type: QuantType.Int8, Symmetric: true, ReduceRange: false } ? ";conv-kernel=" + ConvKernels.Resolve(ConvKernel, Target).ToString().ToLowerInvariant() : "")}";
}
