using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PtqTools.Benchmarks;

/// <summary>One attainable-throughput figure of this core: an instruction's register-only loop.</summary>
internal sealed record Peak(string Instruction, bool Int8, double Gops, string Source);

/// <summary>
/// The host's attainable int8 and fp32 throughput on one core, measured in the same run as the kernels they judge:
/// register-only loops of 12 independent accumulator chains (10 where the AVX2 triple needs temporaries and only 16
/// registers may exist), timed in short bursts, best of 400. int8: vpmaddubsw + vpmaddwd + vpaddd (AVX2, AVX-512BW), vpdpbusd (AVX-VNNI
/// ymm from .NET; AVX-512 VNNI zmm and AMX tdpbusd from tests/PtqTools.Benchmarks/int8-peak.c, compiled with gcc
/// where present). fp32: vfmadd (FMA ymm, AVX-512F zmm; from .NET and from int8-peak.c). Ops count a multiply-add as
/// 2. The loops are compiled fully optimized at once (no tier-0 code timed); the peak is the best of all sources.
/// </summary>
internal static class PeakProbe
{
    // Short timed bursts (~0.1 ms), best of many: on a shared machine a long loop is always preempted somewhere,
    // while the kernels it is compared with are timed call by call, best of many, too.
    const long Iterations = 20_000;
    const int Runs = 400;

    public static List<Peak> Measure(string? nativeSource, string workDir)
    {
        var peaks = new List<Peak>();
        if (Avx2.IsSupported) peaks.Add(new("vpmaddubsw+vpmaddwd+vpaddd ymm", true, Best(TripleYmm, 10 * 32), "managed"));
        if (Avx512BW.IsSupported) peaks.Add(new("vpmaddubsw+vpmaddwd+vpaddd zmm", true, Best(TripleZmm, 12 * 64), "managed"));
        if (AvxVnni.IsSupported) peaks.Add(new("vpdpbusd ymm (AVX-VNNI)", true, Best(VnniYmm, 12 * 32), "managed"));
        if (Fma.IsSupported) peaks.Add(new("vfmadd231ps ymm", false, Best(FmaYmm, 12 * 8), "managed"));
        if (Avx512F.IsSupported) peaks.Add(new("vfmadd231ps zmm", false, Best(FmaZmm, 12 * 16), "managed"));
        peaks.AddRange(Native(nativeSource, workDir));
        return peaks;
    }

    static double Best(Func<long, int> loop, double macsPerIteration)
    {
        loop(1000); // compiled and warm
        double best = double.MaxValue;
        for (int r = 0; r < Runs; r++)
        {
            long t0 = Stopwatch.GetTimestamp();
            if (loop(Iterations) == 42) Console.Write("");
            best = Math.Min(best, Stopwatch.GetElapsedTime(t0).TotalSeconds);
        }
        return Iterations * macsPerIteration * 2 / best / 1e9;
    }

    /// <summary>The chains feed their own accumulator back as the u8 operand, so nothing is loop-invariant.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static int TripleYmm(long n)
    {
        var b = Vector256.Create((sbyte)3); var one = Vector256.Create((short)1);
        Vector256<int> c0 = Vector256.Create(1), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0;
        for (long i = 0; i < n; i++)
        {
            c0 = Avx2.Add(c0, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c0.AsByte(), b), one));
            c1 = Avx2.Add(c1, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c1.AsByte(), b), one));
            c2 = Avx2.Add(c2, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c2.AsByte(), b), one));
            c3 = Avx2.Add(c3, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c3.AsByte(), b), one));
            c4 = Avx2.Add(c4, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c4.AsByte(), b), one));
            c5 = Avx2.Add(c5, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c5.AsByte(), b), one));
            c6 = Avx2.Add(c6, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c6.AsByte(), b), one));
            c7 = Avx2.Add(c7, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c7.AsByte(), b), one));
            c8 = Avx2.Add(c8, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c8.AsByte(), b), one));
            c9 = Avx2.Add(c9, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(c9.AsByte(), b), one));
        }
        return (c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9).GetElement(0);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static int TripleZmm(long n)
    {
        var b = Vector512.Create((sbyte)3); var one = Vector512.Create((short)1);
        Vector512<int> c0 = Vector512.Create(1), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
        for (long i = 0; i < n; i++)
        {
            c0 = Avx512BW.Add(c0, Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c0.AsByte(), b), one));
            c1 = Avx512BW.Add(c1, Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c1.AsByte(), b), one));
            c2 = Avx512BW.Add(c2, Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c2.AsByte(), b), one));
            c3 = Avx512BW.Add(c3, Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c3.AsByte(), b), one));
            c4 = Avx512BW.Add(c4, Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c4.AsByte(), b), one));
            c5 = Avx512BW.Add(c5, Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c5.AsByte(), b), one));
            c6 = Avx512BW.Add(c6, Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c6.AsByte(), b), one));
            c7 = Avx512BW.Add(c7, Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c7.AsByte(), b), one));
            c8 = Avx512BW.Add(c8, Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c8.AsByte(), b), one));
            c9 = Avx512BW.Add(c9, Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c9.AsByte(), b), one));
            c10 = Avx512BW.Add(c10, Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c10.AsByte(), b), one));
            c11 = Avx512BW.Add(c11, Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(c11.AsByte(), b), one));
        }
        return (c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11).GetElement(0);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static int VnniYmm(long n)
    {
        var a = Vector256.Create((byte)1); var b = Vector256.Create((sbyte)2);
        Vector256<int> c0 = Vector256<int>.Zero, c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
        for (long i = 0; i < n; i++)
        {
            c0 = AvxVnni.MultiplyWideningAndAdd(c0, a, b); c1 = AvxVnni.MultiplyWideningAndAdd(c1, a, b);
            c2 = AvxVnni.MultiplyWideningAndAdd(c2, a, b); c3 = AvxVnni.MultiplyWideningAndAdd(c3, a, b);
            c4 = AvxVnni.MultiplyWideningAndAdd(c4, a, b); c5 = AvxVnni.MultiplyWideningAndAdd(c5, a, b);
            c6 = AvxVnni.MultiplyWideningAndAdd(c6, a, b); c7 = AvxVnni.MultiplyWideningAndAdd(c7, a, b);
            c8 = AvxVnni.MultiplyWideningAndAdd(c8, a, b); c9 = AvxVnni.MultiplyWideningAndAdd(c9, a, b);
            c10 = AvxVnni.MultiplyWideningAndAdd(c10, a, b); c11 = AvxVnni.MultiplyWideningAndAdd(c11, a, b);
        }
        return (c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11).GetElement(0);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static int FmaYmm(long n)
    {
        var a = Vector256.Create(0.999f); var b = Vector256.Create(1e-3f);
        Vector256<float> c0 = Vector256<float>.Zero, c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
        for (long i = 0; i < n; i++)
        {
            c0 = Fma.MultiplyAdd(c0, a, b); c1 = Fma.MultiplyAdd(c1, a, b); c2 = Fma.MultiplyAdd(c2, a, b); c3 = Fma.MultiplyAdd(c3, a, b);
            c4 = Fma.MultiplyAdd(c4, a, b); c5 = Fma.MultiplyAdd(c5, a, b); c6 = Fma.MultiplyAdd(c6, a, b); c7 = Fma.MultiplyAdd(c7, a, b);
            c8 = Fma.MultiplyAdd(c8, a, b); c9 = Fma.MultiplyAdd(c9, a, b); c10 = Fma.MultiplyAdd(c10, a, b); c11 = Fma.MultiplyAdd(c11, a, b);
        }
        return (int)(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11).GetElement(0);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static int FmaZmm(long n)
    {
        var a = Vector512.Create(0.999f); var b = Vector512.Create(1e-3f);
        Vector512<float> c0 = Vector512<float>.Zero, c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;
        for (long i = 0; i < n; i++)
        {
            c0 = Avx512F.FusedMultiplyAdd(c0, a, b); c1 = Avx512F.FusedMultiplyAdd(c1, a, b); c2 = Avx512F.FusedMultiplyAdd(c2, a, b);
            c3 = Avx512F.FusedMultiplyAdd(c3, a, b); c4 = Avx512F.FusedMultiplyAdd(c4, a, b); c5 = Avx512F.FusedMultiplyAdd(c5, a, b);
            c6 = Avx512F.FusedMultiplyAdd(c6, a, b); c7 = Avx512F.FusedMultiplyAdd(c7, a, b); c8 = Avx512F.FusedMultiplyAdd(c8, a, b);
            c9 = Avx512F.FusedMultiplyAdd(c9, a, b); c10 = Avx512F.FusedMultiplyAdd(c10, a, b); c11 = Avx512F.FusedMultiplyAdd(c11, a, b);
        }
        return (int)(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11).GetElement(0);
    }

    /// <summary>int8-peak.c compiled with gcc and run (nothing when gcc or the source is missing, or it fails).</summary>
    static IEnumerable<Peak> Native(string? source, string workDir)
    {
        if (source is null || !File.Exists(source) || !OperatingSystem.IsLinux()) return Array.Empty<Peak>();
        var exe = Path.Combine(workDir, "int8-peak");
        try
        {
            Directory.CreateDirectory(workDir);
            if (Run("gcc", $"-O2 -o \"{exe}\" \"{source}\"") is null) return Array.Empty<Peak>();
            var output = Run(exe, "");
            if (output is null) return Array.Empty<Peak>();
            return output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(l => l.Split(' ')).Where(p => p.Length == 2 && double.TryParse(p[1], System.Globalization.CultureInfo.InvariantCulture, out _))
                .Select(p => new Peak(p[0] switch
                {
                    "vpdpbusd-zmm" => "vpdpbusd zmm (AVX-512 VNNI)",
                    "vpdpbusd-ymm" => "vpdpbusd ymm (AVX-VNNI)",
                    "amx-tdpbusd" => "tdpbusd (AMX tiles)",
                    "vfmadd-ymm" => "vfmadd231ps ymm",
                    "vfmadd-zmm" => "vfmadd231ps zmm",
                    var n => n,
                }, !p[0].StartsWith("vfmadd", StringComparison.Ordinal), double.Parse(p[1], System.Globalization.CultureInfo.InvariantCulture), "int8-peak.c (gcc)")).ToList();
        }
        catch (System.ComponentModel.Win32Exception) { return Array.Empty<Peak>(); } // no gcc
    }

    static string? Run(string file, string args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false })!;
        string output = p.StandardOutput.ReadToEnd();
        p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode == 0 ? output : null;
    }
}
