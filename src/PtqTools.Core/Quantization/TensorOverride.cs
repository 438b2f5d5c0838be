namespace PtqTools.Core.Quantization;

/// <summary>
/// What one activation tensor gets instead of the options' defaults: its own type, its own range (instead of the
/// calibrated one), or its own scale and zero point. Only the properties that are set apply.
/// </summary>
public sealed class TensorOverride
{
    public QuantType? Type { get; set; }
    public float? Min { get; set; }
    public float? Max { get; set; }
    public float? Scale { get; set; }
    public int? ZeroPoint { get; set; }

    /// <summary>Refuses an override that cannot be written, naming the tensor and the reason.</summary>
    internal void Validate(string tensor, QuantizationOptions options)
    {
        PtqException Bad(string why) => new("InvalidTensorOverride", PtqErrorKind.InvalidArgument, $"The override of tensor '{tensor}' {why}", tensor);
        if (Type is { } t && !Enum.IsDefined(t)) throw Bad($"has an unknown type {t}.");
        if (Type is null && Min is null && Max is null && Scale is null && ZeroPoint is null) throw Bad("sets nothing: give Type, Min and Max, or Scale (and ZeroPoint).");
        if ((Min is null) != (Max is null)) throw Bad("needs both Min and Max.");
        if (Min is { } lo && Max is { } hi && (!float.IsFinite(lo) || !float.IsFinite(hi) || lo > hi)) throw Bad($"has an unusable range [{lo}, {hi}].");
        if (Min is not null && (Scale is not null || ZeroPoint is not null)) throw Bad("gives both a range and a scale; give one of them.");
        if (ZeroPoint is not null && Scale is null) throw Bad("gives a zero point without a scale.");
        if (Scale is { } s && !(float.IsFinite(s) && s > 0)) throw Bad($"has scale {s}; a scale is finite and positive.");
        var type = Type ?? options.ActivationType;
        var (qmin, qmax) = QuantMath.Limits(type, options.ActivationSymmetric);
        if (ZeroPoint is { } z && (z < qmin || z > qmax)) throw Bad($"has zero point {z}, outside {type}'s [{qmin}, {qmax}].");
        if (Type is { } ty && ty == QuantType.UInt8 && options.ActivationSymmetric && Scale is null)
            throw Bad("asks for uint8 with symmetric activations; symmetric activations need a signed type.");
        if (options.Format == QuantFormat.QOperator && Type == QuantType.Int8 && options.WeightType == QuantType.UInt8)
            throw Bad("asks for int8 with uint8 weights, which has no QLinearConv kernel in ONNX Runtime.");
        if (options.Format == QuantFormat.QOperator && Type is { } t16 && QuantMath.Is16Bit(t16))
            throw Bad($"asks for {t16}, which has no QLinear operator in ONNX Runtime; -Format QOperator needs 8-bit tensors.");
    }

    /// <summary>The parameters of the tensor: the override's scale (zero point by default the type's middle: 0 for a
    /// signed type), its range, or the calibrated range.</summary>
    internal QuantParams Params(TensorRange calibrated, QuantType type, bool symmetric)
    {
        if (Scale is { } s) return new QuantParams(s, ZeroPoint ?? QuantMath.SymmetricZero(type));
        return Min is { } lo && Max is { } hi ? QuantMath.FromRange(lo, hi, type, symmetric) : QuantMath.FromRange(calibrated.Min, calibrated.Max, type, symmetric);
    }

    /// <summary>Whether the tensor still needs a calibrated range.</summary>
    internal bool NeedsCalibration => Scale is null && Min is null;

    public override string ToString() =>
        string.Join(",", new[]
        {
            Type is { } t ? "type=" + t.ToString().ToLowerInvariant() : null,
            Min is { } lo ? FormattableString.Invariant($"range=[{lo:R},{Max:R}]") : null,
            Scale is { } s ? FormattableString.Invariant($"scale={s:R}") : null,
            ZeroPoint is { } z ? FormattableString.Invariant($"zero_point={z}") : null,
        }.Where(x => x is not null));
}

/// <summary>Checks of the overrides against a plan, before any work.</summary>
public static class TensorOverrides
{
    /// <summary>Refuses an override of a tensor that the plan does not quantize, or whose parameters are its input's.</summary>
    public static void Check(QuantizationPlan plan, QuantizationOptions options)
    {
        foreach (var tensor in options.Overrides.Keys.OrderBy(k => k, StringComparer.Ordinal))
        {
            if (plan.SharedOutputs.TryGetValue(tensor, out var input))
                throw new PtqException("InvalidTensorOverride", PtqErrorKind.InvalidArgument,
                    $"Tensor '{tensor}' passes the quantization of '{input}' through unchanged; override '{input}' instead.", tensor);
            if (!plan.Activations.ContainsKey(tensor))
                throw new PtqException("OverrideTensorNotQuantized", PtqErrorKind.InvalidArgument,
                    $"The override names tensor '{tensor}', which no quantized layer reads or writes as an activation (a Relu's output is quantized in place of its producer's).", tensor);
        }
    }
}
