using System.Runtime.Intrinsics.X86;

namespace PtqTools.Core.Kernels;

/// <summary>The code paths a kernel can take, in order of preference (slowest first): <see cref="KernelDispatch.Best"/>
/// is the last one this machine runs (ArmDot, the ARM64 SDOT kernels of <see cref="ArmKernels"/>, is never offered
/// beside an x86 path), and <see cref="KernelDispatch.Clamp"/> steps down this list to one it runs.</summary>
public enum KernelPath { Scalar, Vector128, Avx2, Avx512BW, NativeVnni, ArmDot }

/// <summary>Read-only runtime detection: which paths this CPU (and the native library, when present) can run. What a
/// kernel call actually takes is the <see cref="KernelContext"/> it is given.</summary>
public static class KernelDispatch
{
    /// <summary>Whether this machine runs the path: one line per path.</summary>
    public static bool CanRun(KernelPath path) => path switch
    {
        KernelPath.Scalar => true,
        KernelPath.Vector128 => System.Runtime.Intrinsics.Vector128.IsHardwareAccelerated,
        KernelPath.Avx2 => Avx2.IsSupported,
        KernelPath.Avx512BW => Avx512BW.IsSupported,
        KernelPath.NativeVnni => NativeKernels.Available && NativeKernels.HasVnni,
        KernelPath.ArmDot => ArmKernels.Supported,
        _ => false,
    };

    // Detected once: Clamp runs on every kernel call and must not allocate.
    static readonly KernelPath[] s_supported = Enum.GetValues<KernelPath>().Where(CanRun).ToArray();
    static readonly IReadOnlyList<KernelPath> s_supportedView = Array.AsReadOnly(s_supported);

    /// <summary>The best path the CPU can run.</summary>
    public static KernelPath Best => s_supported[^1];

    /// <summary>The paths this machine can run, slowest first (for tests and benchmarks).</summary>
    public static IReadOnlyList<KernelPath> Supported() => s_supportedView;

    /// <summary>The requested path, or the nearest slower one this machine runs.</summary>
    public static KernelPath Clamp(KernelPath requested)
    {
        if ((int)requested > (int)s_supported[^1]) requested = s_supported[^1];
        while (Array.IndexOf(s_supported, requested) < 0) requested--;
        return requested;
    }
}

/// <summary>
/// How the kernels of one call (or one engine) run: the path, the threads and the size from which a call splits over
/// them, and whether AMX tiles may be used. An immutable value passed to every kernel entry point, so runs with
/// different settings can share a process (two runspaces, a test holding each path to the scalar reference) without
/// seeing each other's. <c>default(KernelContext)</c> is the scalar reference on one thread.
/// </summary>
public readonly record struct KernelContext
{
    /// <summary>Work (multiply-adds) below which a kernel stays on one thread, unless a context says otherwise.</summary>
    public const long DefaultParallelThreshold = 1L << 20;

    readonly int _maxThreads;
    readonly long _parallelThreshold;

    /// <summary>The path asked for; the kernels take <see cref="EffectivePath"/> (this one or the nearest slower one
    /// the machine runs).</summary>
    public KernelPath Path { get; init; }

    /// <summary>Threads a kernel call may use (at least 1).</summary>
    public int MaxThreads
    {
        get => Math.Max(1, _maxThreads);
        init => _maxThreads = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(MaxThreads), value, "A kernel needs at least one thread.");
    }

    /// <summary>Work (multiply-adds) below which a kernel call stays on one thread.</summary>
    public long ParallelThreshold
    {
        get => _parallelThreshold;
        init => _parallelThreshold = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(ParallelThreshold), value, "The threshold cannot be negative.");
    }

    /// <summary>Whether the native kernels may use AMX-INT8 tiles where the CPU and the library have them
    /// (<see cref="NativeKernels.HasAmx"/>); off, the VNNI kernels run instead.</summary>
    public bool AllowAmx { get; init; }

    /// <summary>What this host runs by default: the best path, all cores, AMX unless the environment variable
    /// PTQTOOLS_AMX is "0" (read when the default is made, once per process).</summary>
    public static KernelContext Default { get; } = ForHost();

    /// <summary>A context for this host: <see cref="KernelDispatch.Best"/>, <paramref name="threads"/> (all cores when
    /// null), the default threshold, and AMX unless PTQTOOLS_AMX is "0" now.</summary>
    public static KernelContext ForHost(int? threads = null) => new()
    {
        Path = KernelDispatch.Best,
        MaxThreads = threads ?? Environment.ProcessorCount,
        ParallelThreshold = DefaultParallelThreshold,
        AllowAmx = Environment.GetEnvironmentVariable("PTQTOOLS_AMX") != "0",
    };

    /// <summary>The path the kernels take: <see cref="Path"/> clamped to what this machine runs.</summary>
    public KernelPath EffectivePath => KernelDispatch.Clamp(Path);

    /// <summary>Whether the native GEMM and convolution take AMX tiles under this context.</summary>
    public bool UsesAmx => AllowAmx && EffectivePath == KernelPath.NativeVnni && NativeKernels.HasAmx;

    /// <summary>This context on another path.</summary>
    public KernelContext WithPath(KernelPath path) => this with { Path = path };

    /// <summary>This context with another thread count.</summary>
    public KernelContext WithThreads(int threads) => this with { MaxThreads = threads };

    /// <summary>Threads for a call of <paramref name="work"/> multiply-adds: one below the threshold, then one per half
    /// threshold of work, at most <see cref="MaxThreads"/>.</summary>
    internal int ThreadsFor(long work)
    {
        if (work < ParallelThreshold || MaxThreads == 1) return 1;
        long perThread = Math.Max(1, ParallelThreshold / 2);
        return (int)Math.Max(1, Math.Min(MaxThreads, work / perThread));
    }

    public override string ToString() => $"{EffectivePath}, {MaxThreads} thread(s){(UsesAmx ? ", AMX" : "")}";
}
