using System.Diagnostics;
using PtqTools.Core.Kernels;
namespace PtqTools.Benchmarks;
/// <summary>
/// `threads`: whether a split kernel call really runs on two threads. Two 250 µs spin parts through Parallel.For (how
/// often they land on two threads), then the 512x1024x1024 GEMM at 1 and 2 threads, call for call in turn, best of 200,
/// and what a GEMM call allocates.
/// </summary>
internal static class Probe
{
    public static void Run(string[] args)
    {
        int m = 512, n = 1024, k = 1024;
        var r = new Random(1);
        var a = new byte[m * k]; r.NextBytes(a);
        var b = new sbyte[k * n]; for (int i = 0; i < b.Length; i++) b[i] = (sbyte)r.Next(-128, 128);
        var packed = PackedWeights.Pack(b, k, n, new[] { 0 });
        var c = new int[m * n];
        double b1 = 1e30, b2 = 1e30;
        for (int it = 0; it < 200; it++)
        {
            long t = Stopwatch.GetTimestamp(); QGemm.Multiply(KernelContext.Default.WithThreads(1), a, 128, m, packed, c); b1 = Math.Min(b1, Stopwatch.GetElapsedTime(t).TotalMicroseconds);
            t = Stopwatch.GetTimestamp(); QGemm.Multiply(KernelContext.Default.WithThreads(2), a, 128, m, packed, c); b2 = Math.Min(b2, Stopwatch.GetElapsedTime(t).TotalMicroseconds);
        }
        double p1 = 1e30, p2 = 1e30; var ids = new int[2]; int distinct = 0;
        static void Spin() { long t0 = Stopwatch.GetTimestamp(); while (Stopwatch.GetElapsedTime(t0).TotalMicroseconds < 250) { } }
        for (int it = 0; it < 200; it++)
        {
            long t = Stopwatch.GetTimestamp(); Spin(); Spin(); p1 = Math.Min(p1, Stopwatch.GetElapsedTime(t).TotalMicroseconds);
            t = Stopwatch.GetTimestamp();
            Parallel.For(0, 2, new ParallelOptions { MaxDegreeOfParallelism = 2 }, i => { ids[i] = Environment.CurrentManagedThreadId; Spin(); });
            p2 = Math.Min(p2, Stopwatch.GetElapsedTime(t).TotalMicroseconds);
            if (ids[0] != ids[1]) distinct++;
        }
        Console.WriteLine($"spin 2x250us: serial {p1:F1}, Parallel.For {p2:F1}, on two threads {distinct}/200");
        Console.WriteLine($"512x1024x1024 best of 200: 1 thread {b1:F1} us, 2 threads {b2:F1} us");
        foreach (int threads in new[] { 1, 2 })
        {
            var context = KernelContext.Default.WithThreads(threads);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 100; i++) QGemm.Multiply(context, a, 128, m, packed, c);
            Console.WriteLine($"allocated on the calling thread per call, {threads} thread(s): {(GC.GetAllocatedBytesForCurrentThread() - before) / 100.0:F0} bytes");
        }
    }
}
