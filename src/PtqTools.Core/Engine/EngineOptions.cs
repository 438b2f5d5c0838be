using Onnx;
using PtqTools.Core.Kernels;
using PtqTools.Core.Quantization;

namespace PtqTools.Core.Engine;

/// <summary>How an <see cref="IntegerEngine"/> computes: the product arithmetic of its u8 x s8 GEMMs and
/// convolutions (QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger, QGemm and the forms QDQ fusion produces).</summary>
public sealed record EngineOptions
{
    /// <summary>Exact int32 sums: what VNNI, AMX and ARM64 machines compute.</summary>
    public static EngineOptions Default { get; } = new();

    public ProductArithmetic Arithmetic { get; init; } = ProductArithmetic.Exact;

    /// <summary>How the engine's kernels run (path, threads, AMX): this engine's own value, nothing process-wide.</summary>
    public KernelContext Kernels { get; init; } = KernelContext.Default;

    /// <summary>ONNX Runtime's intra-op threads for the nodes the engine hands to it (<see cref="OrtNodeFallback"/>).</summary>
    public int FallbackThreads { get; init; } = 1;

    /// <summary>The options that reproduce ONNX Runtime's int8 results on the given CPU class (Host: this
    /// machine's). Portable is not a CPU: it is refused.</summary>
    public static EngineOptions Emulating(QuantTarget cpu) => QuantTargets.Resolve(cpu) switch
    {
        QuantTarget.Portable => throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument,
            "Portable is a way of writing a model, not a CPU class to emulate: name a class (Avx2, Avx512, Vnni, Amx, Arm64) or Host.", cpu),
        var c when QuantTargets.SaturatesPairs(c) => new EngineOptions { Arithmetic = ProductArithmetic.SaturatingPairs },
        _ => Default,
    };
}

/// <summary>A CPU class whose ONNX Runtime int8 results an evaluation reproduces with the engine: the name it goes by
/// in reports (the cmdlets' -Target value) and the engine options that emulate it.</summary>
public sealed record EngineTarget(string Name, EngineOptions Options)
{
    public EngineTarget(QuantTarget cpu) : this(QuantTargets.Resolve(cpu).ToString(), EngineOptions.Emulating(cpu)) { }
}

/// <summary>The per-engine state the ops receive: the packed-weight cache, the arithmetic to compute with and the
/// kernels' context.</summary>
internal sealed class EngineState : Dictionary<NodeProto, object>
{
    public EngineState(ProductArithmetic arithmetic, KernelContext kernels) { Arithmetic = arithmetic; Kernels = kernels; }
    public ProductArithmetic Arithmetic { get; }
    public KernelContext Kernels { get; }
}
