using System.Runtime.Intrinsics.X86;
using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>Which of ONNX Runtime's CPU kernels quantized convolutions are written for. The weights hold the
/// same values either way; only their encoding differs.</summary>
public enum ConvKernel
{
    /// <summary>The target's choice (<see cref="QuantTargets.ConvKernelFor"/>): <see cref="Gemm"/> for AMX-INT8, else <see cref="Symmetric"/>.</summary>
    Auto,
    /// <summary>Symmetric int8 weights stored as q - 1 with zero point -1. ONNX Runtime's QLinearConv takes its
    /// symmetric (indirect, AVX-512 VNNI) convolution only when every weight zero point is 0; any other zero point
    /// sends it to im2col and its QGEMM, which runs on AMX tiles where the CPU has them.</summary>
    Gemm,
    /// <summary>Symmetric int8 weights with zero point 0: ONNX Runtime's symmetric convolution kernel.</summary>
    Symmetric,
}

/// <summary>The choice of <see cref="ConvKernel"/> and the weights it re-encodes.</summary>
public static class ConvKernels
{
    /// <summary>Whether this CPU has AMX-TILE and AMX-INT8 (CPUID leaf 7 EDX bits 24 and 25) and, on Linux, the
    /// kernel enables them (it lists amx_int8 in /proc/cpuinfo only then): ONNX Runtime's MLAS then runs its
    /// u8 x s8 QGEMM on AMX.</summary>
    public static bool CpuHasAmxInt8 { get; } = DetectAmx();

    static bool DetectAmx()
    {
        if (!X86Base.IsSupported) return false;
        var (_, _, _, edx) = X86Base.CpuId(7, 0);
        if ((edx & (1 << 24)) == 0 || (edx & (1 << 25)) == 0) return false;
        if (!OperatingSystem.IsLinux()) return true;
        try { return File.ReadAllText("/proc/cpuinfo").Contains(" amx_int8", StringComparison.Ordinal); }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }

    /// <summary>Auto resolved for a target.</summary>
    public static ConvKernel Resolve(ConvKernel kernel, QuantTarget target) =>
        kernel != ConvKernel.Auto ? kernel : QuantTargets.ConvKernelFor(target);

    /// <summary>Whether the weights of this node are re-encoded for the GEMM path: a Conv of group 1 with
    /// symmetric full-range int8 weights (depthwise and grouped convolutions keep ONNX Runtime's direct kernels;
    /// reduce-range weights are for CPUs without VNNI, so without AMX, and must keep their 7-bit codes).</summary>
    public static bool ShiftsWeights(NodeProto node, QuantizationOptions options) =>
        Resolve(options.ConvKernel, options.Target) == ConvKernel.Gemm && Shiftable(node, options);

    /// <summary>Whether the weights of this node are the kind <see cref="ConvKernel.Gemm"/> re-encodes (whichever
    /// kernel is chosen): the pair check makes them safe in both encodings, so both hold the same values.</summary>
    public static bool Shiftable(NodeProto node, QuantizationOptions options) =>
        node.OpType == "Conv" && options.Weights is { Type: QuantType.Int8, Symmetric: true, ReduceRange: false }
        && node.IntAttr("group", 1) == 1;

    /// <summary>q - 1 with zero point -1: the same dequantized values. Symmetric int8 codes are in [-127, 127],
    /// so q - 1 fits; left as it is if a code is already -128 or a zero point is not 0.</summary>
    public static bool ShiftToMinusOne(int[] values, int[] zeroPoints)
    {
        if (zeroPoints.Any(z => z != 0) || values.Any(v => v == -128)) return false;
        for (int i = 0; i < values.Length; i++) values[i] -= 1;
        Array.Fill(zeroPoints, -1);
        return true;
    }

    public const string Reason = "; zero point -1 for ONNX Runtime's QGEMM (AMX) convolution path (-ConvKernel Gemm)";
}
