using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace PtqTools.Core.Quantization;

/// <summary>The class of CPU, as ONNX Runtime's MLAS kernels see it, that a quantized model is written for. The
/// classes differ in how MLAS multiplies uint8 activations by int8 weights, and so in what a model computes.</summary>
public enum QuantTarget
{
    /// <summary>Right on every class below: weights written so that no u8 x s8 pair sum can leave int16 (as for
    /// <see cref="Avx2"/>), convolutions encoded for ONNX Runtime's symmetric kernel.</summary>
    Portable,
    /// <summary>x86-64 with AVX2, no AVX-512 and no VNNI: MLAS multiplies u8 x s8 with vpmaddubsw, which adds two
    /// adjacent products and saturates the sum at int16.</summary>
    Avx2,
    /// <summary>AVX-512BW without VNNI: the same saturating vpmaddubsw, on 512-bit registers.</summary>
    Avx512,
    /// <summary>AVX-VNNI or AVX-512 VNNI: vpdpbusd, exact sums.</summary>
    Vnni,
    /// <summary>AMX-INT8 (with AVX-512 VNNI): exact sums; MLAS's QGEMM runs on the tiles, so convolutions are encoded
    /// for it (<see cref="ConvKernel.Gemm"/>).</summary>
    Amx,
    /// <summary>ARM64 (with the SDOT/UDOT dot-product instructions where the CPU has them): exact sums.</summary>
    Arm64,
    /// <summary>The class of the machine that quantizes, resolved at once; the resolved class is what is recorded.</summary>
    Host,
}

/// <summary>What each <see cref="QuantTarget"/> means for the written model, and which class this host is.</summary>
public static class QuantTargets
{
    /// <summary>The environment variable that overrides host detection (tests force each class with it).</summary>
    public const string HostOverrideVariable = "PTQTOOLS_CPU_CLASS";

    /// <summary>This machine's class as detected from the CPU (<see cref="HostOverrideVariable"/> set to a class
    /// name overrides it).</summary>
    public static QuantTarget HostClass => Environment.GetEnvironmentVariable(HostOverrideVariable) is { Length: > 0 } forced
        ? ParseHostOverride(forced) : s_detected;

    static readonly QuantTarget s_detected = Detect();

    static QuantTarget ParseHostOverride(string value) =>
        Enum.TryParse<QuantTarget>(value, ignoreCase: true, out var t) && t is not (QuantTarget.Host or QuantTarget.Portable) && Enum.IsDefined(t)
            ? t
            : throw new PtqException("InvalidCpuClass", PtqErrorKind.InvalidArgument,
                $"{HostOverrideVariable}='{value}' is not a CPU class; use one of {string.Join(", ", Classes)}.", value);

    /// <summary>The concrete classes (every value but Portable and Host).</summary>
    public static IReadOnlyList<QuantTarget> Classes { get; } =
        new[] { QuantTarget.Avx2, QuantTarget.Avx512, QuantTarget.Vnni, QuantTarget.Amx, QuantTarget.Arm64 };

    /// <summary>Host resolved to this machine's class; any other value is itself.</summary>
    public static QuantTarget Resolve(QuantTarget target) => target == QuantTarget.Host ? HostClass : target;

    /// <summary>Whether the model must keep every u8 x s8 pair sum inside int16: the classes whose kernels saturate
    /// there, and Portable, which must be right on them.</summary>
    public static bool NeedsPairSafeWeights(QuantTarget target) => Resolve(target) is QuantTarget.Portable or QuantTarget.Avx2 or QuantTarget.Avx512;

    /// <summary>Whether ONNX Runtime on this class computes u8 x s8 pair sums saturated at int16 (Portable is not a
    /// CPU and is not asked).</summary>
    public static bool SaturatesPairs(QuantTarget cpuClass) => Resolve(cpuClass) is QuantTarget.Avx2 or QuantTarget.Avx512;

    /// <summary>The convolution encoding ConvKernel Auto means on a target: the QGEMM path where it runs on AMX
    /// tiles, ONNX Runtime's symmetric convolution everywhere else.</summary>
    public static ConvKernel ConvKernelFor(QuantTarget target) => Resolve(target) == QuantTarget.Amx ? ConvKernel.Gemm : ConvKernel.Symmetric;

    /// <summary>A short description of a class for messages and help.</summary>
    public static string Describe(QuantTarget target) => Resolve(target) switch
    {
        QuantTarget.Portable => "portable (right on every CPU class)",
        QuantTarget.Avx2 => "x86-64 AVX2 without VNNI",
        QuantTarget.Avx512 => "x86-64 AVX-512 without VNNI",
        QuantTarget.Vnni => "x86-64 AVX-VNNI or AVX-512 VNNI",
        QuantTarget.Amx => "x86-64 AMX-INT8",
        QuantTarget.Arm64 => "ARM64",
        var t => t.ToString(),
    };

    /// <summary>The class of a CPU from its features, as MLAS picks its u8 x s8 kernels (platform.cpp: AVX2, then
    /// AVX-VNNI, AVX-512BW ("Core"), AVX-512 VNNI, AMX, each replacing the one before). A CPU below AVX2 is given the
    /// saturating AVX2 class: pair-safe weights are right everywhere.</summary>
    public static QuantTarget Classify(bool arm64, bool avx2, bool avx512bw, bool avx512Vnni, bool avxVnni, bool amxInt8)
    {
        if (arm64) return QuantTarget.Arm64;
        if (amxInt8) return QuantTarget.Amx;
        if (avx512Vnni || avxVnni) return QuantTarget.Vnni;
        if (avx512bw) return QuantTarget.Avx512;
        return QuantTarget.Avx2;
    }

    static QuantTarget Detect()
    {
        if (RuntimeInformation.ProcessArchitecture == Architecture.Arm64) return QuantTarget.Arm64;
        if (!X86Base.IsSupported) return QuantTarget.Avx2;
        // CPUID rather than .NET's IsSupported: MLAS reads CPUID, and a DOTNET_EnableAVX512F=0 setting must not
        // change the class a model is written for.
        var (_, ebx7, ecx7, _) = X86Base.CpuId(7, 0);
        var (eax71, _, _, _) = X86Base.CpuId(7, 1);
        bool avx2 = (ebx7 & (1 << 5)) != 0;
        bool avx512bw = (ebx7 & (1 << 30)) != 0 && (ebx7 & (1 << 16)) != 0;
        bool avx512Vnni = avx512bw && (ecx7 & (1 << 11)) != 0;
        bool avxVnni = avx2 && (eax71 & (1 << 4)) != 0;
        return Classify(false, avx2, avx512bw, avx512Vnni, avxVnni, ConvKernels.CpuHasAmxInt8);
    }
}
