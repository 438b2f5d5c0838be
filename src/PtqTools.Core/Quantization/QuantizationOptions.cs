namespace PtqTools.Core.Quantization;

/// <summary>Options of a static QDQ quantization, checked as a whole before any work starts.</summary>
public sealed class QuantizationOptions
{
    public QuantType ActivationType { get; set; } = QuantType.UInt8;
    public bool ActivationSymmetric { get; set; }
    public bool PerChannel { get; set; } = true;

    public void Validate()
    {
        if (!Enum.IsDefined(ActivationType))
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"Activation type {ActivationType} is not supported.", ActivationType);
        if (ActivationSymmetric && ActivationType == QuantType.UInt8)
            throw new PtqException("InvalidOptionCombination", PtqErrorKind.InvalidArgument,
                "Symmetric activations need a signed type: use -ActivationType Int8 with -SymmetricActivation (uint8 activations are asymmetric).", ActivationType);
    }

    public override string ToString() =>
        $"format=QDQ;activations={ActivationType.ToString().ToLowerInvariant()}{(ActivationSymmetric ? ",symmetric" : ",asymmetric")};weights=int8,symmetric,{(PerChannel ? "per-channel" : "per-tensor")};bias=int32";
}
