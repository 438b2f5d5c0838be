using PtqTools.Core.Quantization;
using System.Diagnostics;
using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;

namespace PtqTools.Benchmarks;

/// <summary>
/// `emulation MODEL [RUNS] [THREADS]`: the engine's exact arithmetic against its emulation of ONNX Runtime on a CPU
/// without VNNI (<see cref="QuantTarget.Avx2"/>, saturating pairs), run for run interleaved, with the time per op
/// type of each. The input is test_data_set_0/input_0.pb beside the model when there is one (the ground-truth
/// layout), else a random 1x3x224x224 float tensor. Medians and minima, since the machine may be shared.
/// </summary>
internal static class EmulationCost
{
    public static void Run(string[] args)
    {
        var path = args[0];
        int runs = args.Length > 1 ? int.Parse(args[1]) : 30, threads = args.Length > 2 ? int.Parse(args[2]) : 1;
        var kernels = KernelContext.Default.WithThreads(threads);
        var model = OnnxModelIO.Load(path);
        using var exact = new IntegerEngine(model, EngineOptions.Default with { Kernels = kernels }, Path.GetFileName(path));
        using var emulated = new IntegerEngine(model, EngineOptions.Emulating(QuantTarget.Avx2) with { Kernels = kernels }, Path.GetFileName(path));
        var pb = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "test_data_set_0", "input_0.pb");
        EngineTensor input;
        if (File.Exists(pb)) input = EngineTensor.FromProto(TensorProtoFile.Read(pb));
        else
        {
            var r = new Random(1);
            var x = new float[3 * 224 * 224];
            for (int i = 0; i < x.Length; i++) x[i] = (float)(r.NextDouble() * 200 - 100);
            input = EngineTensor.Float(x, 1, 3, 224, 224);
        }
        var feed = new Dictionary<string, EngineTensor> { [exact.Inputs[0]] = input };
        for (int i = 0; i < 3; i++) { exact.Run(feed); emulated.Run(feed); }
        var times = new[] { new List<double>(), new List<double>() };
        var perOp = new[] { new Dictionary<string, List<double>>(), new Dictionary<string, List<double>>() };
        var engines = new[] { exact, emulated };
        for (int i = 0; i < runs; i++)
            for (int e = 0; e < 2; e++)
            {
                engines[e].Profile = new();
                long t0 = Stopwatch.GetTimestamp();
                engines[e].Run(feed);
                times[e].Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
                foreach (var kv in engines[e].Profile!)
                {
                    if (!perOp[e].TryGetValue(kv.Key, out var list)) perOp[e][kv.Key] = list = new();
                    list.Add(kv.Value.Milliseconds);
                }
            }
        static double Median(List<double> l) { var s = l.OrderBy(v => v).ToList(); return s[s.Count / 2]; }
        Console.WriteLine($"{Path.GetFileName(path)} [{string.Join("x", input.Dims)}], {threads} thread(s), {runs} interleaved runs, kernel path {KernelDispatch.Best}" +
                          $" (native conv: {NativeKernels.HasConv}, AMX GEMM: {NativeKernels.HasAmx})");
        Console.WriteLine($"  exact            median {Median(times[0]),8:F2} ms  min {times[0].Min(),8:F2} ms");
        Console.WriteLine($"  SaturatingPairs  median {Median(times[1]),8:F2} ms  min {times[1].Min(),8:F2} ms");
        Console.WriteLine($"  emulated / exact {Median(times[1]) / Median(times[0]):F2}x (medians), {times[1].Min() / times[0].Min():F2}x (minima)");
        foreach (var op in perOp[1].Keys.Union(perOp[0].Keys).OrderByDescending(k => perOp[1].TryGetValue(k, out var l) ? Median(l) : 0))
            Console.WriteLine($"    {op,-26} exact {(perOp[0].TryGetValue(op, out var a) ? Median(a) : 0),8:F2} ms   emulated {(perOp[1].TryGetValue(op, out var b) ? Median(b) : 0),8:F2} ms");
    }
}

/// <summary>`satgemm M N K [RUNS]`: the saturating GEMM alone (one thread), against the exact managed GEMM.</summary>
internal static class SaturatingGemmProbe
{
    public static void Run(string[] args)
    {
        int m = int.Parse(args[0]), n = int.Parse(args[1]), k = int.Parse(args[2]), runs = args.Length > 3 ? int.Parse(args[3]) : 20;
        var one = KernelContext.Default.WithThreads(1);
        var r = new Random(1);
        var a = new byte[m * k]; r.NextBytes(a);
        var b = new sbyte[k * n]; for (int i = 0; i < b.Length; i++) b[i] = (sbyte)r.Next(-128, 128);
        var sat = SaturatingPackedWeights.Pack(b, k, n, new[] { 0 });
        var exact = PackedWeights.Pack(b, k, n, new[] { 0 });
        var c = new int[m * n];
        double Time(Action f) { f(); var best = double.MaxValue; for (int i = 0; i < runs; i++) { long t0 = Stopwatch.GetTimestamp(); f(); best = Math.Min(best, Stopwatch.GetElapsedTime(t0).TotalMilliseconds); } return best; }
        double ops = 2.0 * m * n * k;
        double ts = Time(() => SaturatingGemm.Multiply(one, a, 0, m, sat, c));
        double te = Time(() => QGemm.Multiply(one, a, 0, m, exact, c));
        Console.WriteLine($"{m}x{n}x{k}: saturating {ts:F2} ms ({ops / ts / 1e6:F1} GOPS), exact ({KernelDispatch.Best}) {te:F2} ms ({ops / te / 1e6:F1} GOPS)");
    }
}

/// <summary>`satconv C H W OC K STRIDE [RUNS]`: the saturating convolution alone (one thread), against the exact QConv.</summary>
internal static class SaturatingConvProbe
{
    public static void Run(string[] args)
    {
        int c = int.Parse(args[0]), h = int.Parse(args[1]), wd = int.Parse(args[2]), oc = int.Parse(args[3]), k = int.Parse(args[4]), s = int.Parse(args[5]);
        int runs = args.Length > 6 ? int.Parse(args[6]) : 20;
        var one = KernelContext.Default.WithThreads(1);
        var g = new ConvGeometry(1, c, h, wd, oc, k, k, s, s, k / 2, k / 2, k / 2, k / 2);
        var r = new Random(1);
        var x = new byte[c * h * wd]; r.NextBytes(x);
        var w = new sbyte[oc * g.PatchSize]; for (int i = 0; i < w.Length; i++) w[i] = (sbyte)r.Next(-127, 128);
        var sat = SaturatingConvWeights.Pack(w, new[] { 0 }, g, c % 4 == 0 ? ConvPairing.PerKernelPosition : ConvPairing.FlatK);
        var exact = PackedConvWeights.Pack<sbyte>(w, new[] { 0 }, g);
        var y = new int[oc * g.OutH * g.OutW];
        double Time(Action f) { f(); var best = double.MaxValue; for (int i = 0; i < runs; i++) { long t0 = Stopwatch.GetTimestamp(); f(); best = Math.Min(best, Stopwatch.GetElapsedTime(t0).TotalMilliseconds); } return best; }
        double ops = 2.0 * oc * g.OutH * g.OutW * g.PatchSize;

        double ts = Time(() => SaturatingConv.Run(one, x, 0, sat, y));
        double te = Time(() => QConv.Run<byte>(one, x, 0, exact, y));
        Console.WriteLine($"conv {c}x{h}x{wd} -> {oc} k{k} s{s}: saturating {ts:F2} ms ({ops / ts / 1e6:F1} GOPS), exact {te:F2} ms ({ops / te / 1e6:F1} GOPS)");
    }
}
