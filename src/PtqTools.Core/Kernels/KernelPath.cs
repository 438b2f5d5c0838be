using System.Runtime.Intrinsics.X86;

namespace PtqTools.Core.Kernels;

/// <summary>The code paths a kernel can take, slowest first.</summary>
public enum KernelPath { Scalar, Vector128, Avx2, Avx512BW, NativeAvx2, NativeVnni }

/// <summary>Runtime dispatch: which path this CPU (and the native library, when present) can run.</summary>
public static class KernelDispatch
{
    /// <summary>The best path the CPU can run.</summary>
    public static KernelPath Best { get; } = Detect();

    /// <summary>The path the kernels take; tests set it to hold every path to the scalar reference.</summary>
    public static KernelPath Current { get; set; } = Best;

    /// <summary>Work (multiply-adds) below which a kernel stays on one thread.</summary>
    public static long ParallelThreshold { get; set; } = 1L << 20;

    /// <summary>Threads the kernels may use (all cores by default).</summary>
    public static int MaxThreads { get; set; } = Environment.ProcessorCount;

    static KernelPath Detect()
    {
        if (NativeKernels.Available && NativeKernels.HasVnni) return KernelPath.NativeVnni;
        if (NativeKernels.Available && NativeKernels.HasAvx2) return KernelPath.NativeAvx2;
        if (Avx512BW.IsSupported) return KernelPath.Avx512BW;
        if (Avx2.IsSupported) return KernelPath.Avx2;
        if (System.Runtime.Intrinsics.Vector128.IsHardwareAccelerated) return KernelPath.Vector128;
        return KernelPath.Scalar;
    }

    // Detected once: Clamp runs on every kernel call and must not allocate.
    static readonly KernelPath[] s_supported = Detected();
    static readonly IReadOnlyList<KernelPath> s_supportedView = Array.AsReadOnly(s_supported);

    /// <summary>The paths this machine can run (for tests and benchmarks).</summary>
    public static IReadOnlyList<KernelPath> Supported() => s_supportedView;

    static KernelPath[] Detected()
    {
        var list = new List<KernelPath> { KernelPath.Scalar };
        if (System.Runtime.Intrinsics.Vector128.IsHardwareAccelerated) list.Add(KernelPath.Vector128);
        if (Avx2.IsSupported) list.Add(KernelPath.Avx2);
        if (Avx512BW.IsSupported) list.Add(KernelPath.Avx512BW);
        if (NativeKernels.Available && NativeKernels.HasAvx2) list.Add(KernelPath.NativeAvx2);
        if (NativeKernels.Available && NativeKernels.HasVnni) list.Add(KernelPath.NativeVnni);
        return list.ToArray();
    }

    internal static KernelPath Clamp(KernelPath requested)
    {
        while (Array.IndexOf(s_supported, requested) < 0) requested--;
        return requested;
    }

    internal static int ThreadsFor(long work) =>
        work < ParallelThreshold ? 1 : Math.Max(1, Math.Min(MaxThreads, (int)(work / (ParallelThreshold / 2))));
}
