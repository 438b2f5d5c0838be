using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using PtqTools.Core.Engine;

namespace PtqTools;

/// <summary>
/// -Target of the evaluation cmdlets (Test-QuantizedModel, Invoke-ModelInference, Measure-LayerError): the CPU class
/// whose ONNX Runtime int8 arithmetic the PtqTools engine emulates.
/// MERGE NOTE: this is the ONE place that maps a -Target name to the engine. When PtqTools.Core.Quantization.QuantTarget
/// replaces OrtCpuClass, map QuantTarget here, and replace <see cref="HostClass"/> with the shared host detection.
/// </summary>
internal static class EmulationTargets
{
    /// <summary>The names -Target takes (keep the cmdlets' ValidateSet in step).</summary>
    public static readonly string[] Names = { "Avx2", "Avx512", "Vnni", "Amx", "Arm64", "Host" };

    /// <summary>The engine target for a -Target name; null for none (empty).</summary>
    public static EngineTarget? Resolve(string? name)
    {
        if (string.IsNullOrEmpty(name)) return null;
        var cpu = name.ToLowerInvariant() switch
        {
            "avx2" => OrtCpuClass.Avx2,
            "avx512" => OrtCpuClass.Avx512BW,
            "vnni" => OrtCpuClass.Vnni,
            "amx" => OrtCpuClass.Amx,
            "arm64" => OrtCpuClass.Arm64,
            "host" => HostClass(),
            _ => throw new Core.PtqException("InvalidOption", Core.PtqErrorKind.InvalidArgument,
                $"'{name}' is not a target; use one of {string.Join(", ", Names)}.", name),
        };
        // The report names the class as the user gave it ("Host" stays "Host").
        var canonical = Names.First(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase));
        return new EngineTarget(canonical, EngineOptions.Emulating(cpu));
    }

    /// <summary>
    /// The class of this machine, as ONNX Runtime's MLAS picks its u8 x s8 kernels on it: AVX-512 VNNI or AVX-VNNI give
    /// exact sums; otherwise AVX-512BW or AVX2 use vpmaddubsw (saturating pairs); ARM64 and older x86 are exact.
    /// TEMPORARY (rewire at merge to the shared host detection).
    /// </summary>
    internal static OrtCpuClass HostClass()
    {
        if (RuntimeInformation.ProcessArchitecture == Architecture.Arm64) return OrtCpuClass.Arm64;
        if (!X86Base.IsSupported) return OrtCpuClass.Vnni;
        // CPUID leaf 7 sub-leaf 0, ECX bit 11: AVX512_VNNI (usable when the OS enables AVX-512 state, as Avx512BW shows).
        bool avx512Vnni = Avx512BW.IsSupported && (X86Base.CpuId(7, 0).Ecx & (1 << 11)) != 0;
        if (avx512Vnni || AvxVnni.IsSupported) return OrtCpuClass.Vnni;
        if (Avx512BW.IsSupported) return OrtCpuClass.Avx512BW;
        if (Avx2.IsSupported) return OrtCpuClass.Avx2;
        return OrtCpuClass.Vnni;   // SSE-only x86: MLAS widens to int16 and sums exactly.
    }
}
