using Onnx;
using PtqTools.Core.Kernels;

namespace PtqTools.Core.Engine;

/// <summary>CPU classes whose ONNX Runtime (MLAS) int8 arithmetic the engine can reproduce.</summary>
public enum OrtCpuClass
{
    /// <summary>x86-64 with AVX-512 VNNI or AVX-VNNI (<c>vpdpbusd</c>): exact int32 sums.</summary>
    Vnni,
    /// <summary>x86-64 with AMX-INT8: exact int32 sums.</summary>
    Amx,
    /// <summary>ARM64 (NEON/dot-product kernels): exact int32 sums.</summary>
    Arm64,
    /// <summary>x86-64 with AVX2 and no VNNI: u8 x s8 products through <c>vpmaddubsw</c>, pair sums saturated to int16.</summary>
    Avx2,
    /// <summary>x86-64 with AVX-512BW and no VNNI (MLAS's Avx512Core kernels): the same <c>vpmaddubsw</c> saturation.</summary>
    Avx512BW,
}

/// <summary>How an <see cref="IntegerEngine"/> computes: the product arithmetic of its u8 x s8 GEMMs and
/// convolutions (QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger, QGemm and the forms QDQ fusion produces).</summary>
public sealed record EngineOptions
{
    /// <summary>Exact int32 sums: what VNNI, AMX and ARM64 machines compute.</summary>
    public static EngineOptions Default { get; } = new();

    public ProductArithmetic Arithmetic { get; init; } = ProductArithmetic.Exact;

    /// <summary>The options that reproduce ONNX Runtime's int8 results on the given CPU class.</summary>
    public static EngineOptions Emulating(OrtCpuClass cpu) => cpu switch
    {
        OrtCpuClass.Avx2 or OrtCpuClass.Avx512BW => new EngineOptions { Arithmetic = ProductArithmetic.SaturatingPairs },
        _ => Default,
    };
}

/// <summary>A CPU class whose ONNX Runtime int8 results an evaluation reproduces with the engine: the name it goes by
/// in reports (the cmdlets' -Target value) and the engine options that emulate it.</summary>
public sealed record EngineTarget(string Name, EngineOptions Options)
{
    public EngineTarget(OrtCpuClass cpu) : this(cpu.ToString(), EngineOptions.Emulating(cpu)) { }
}

/// <summary>The per-engine state the ops receive: the packed-weight cache, and the arithmetic to compute with.</summary>
internal sealed class EngineState : Dictionary<NodeProto, object>
{
    public EngineState(ProductArithmetic arithmetic) { Arithmetic = arithmetic; }
    public ProductArithmetic Arithmetic { get; }
}
