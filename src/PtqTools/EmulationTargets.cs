using PtqTools.Core.Engine;
using PtqTools.Core.Quantization;

namespace PtqTools;

/// <summary>-Target of the evaluation cmdlets (Test-QuantizedModel, Invoke-ModelInference, Measure-LayerError): the
/// CPU class whose ONNX Runtime int8 arithmetic the PtqTools engine emulates (Host: this machine's, resolved).</summary>
internal static class EmulationTargets
{
    /// <summary>The engine target for a -Target name; null for none (empty).</summary>
    public static EngineTarget? Resolve(string? name) =>
        string.IsNullOrEmpty(name) ? null : new EngineTarget(Enum.Parse<QuantTarget>(name, ignoreCase: true));
}
