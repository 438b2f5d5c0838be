using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;

namespace PtqTools.Benchmarks;

/// <summary>
/// `engine MODEL [RUNS] [THREADS]`: a quantized model (1x3x224x224 float input) on the PtqTools engine and on ONNX
/// Runtime in one process, run for run interleaved, with the engine's time per op type (where the time goes).
/// Medians and minima, since the machine may be shared.
/// </summary>
internal static class EngineProfile
{
    public static void Run(string[] args)
    {
        var path = args[0];
        int runs = args.Length > 1 ? int.Parse(args[1]) : 50, threads = args.Length > 2 ? int.Parse(args[2]) : 1;
        using var engine = new IntegerEngine(OnnxModelIO.Load(path), EngineOptions.Default with { Kernels = KernelContext.Default.WithThreads(threads) }, Path.GetFileName(path));
        var r = new Random(1);
        var x = new float[3 * 224 * 224];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(r.NextDouble() * 200 - 100);
        var feed = new Dictionary<string, EngineTensor> { [engine.Inputs[0]] = EngineTensor.Float(x, 1, 3, 224, 224) };
        using var options = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        // ONNX Runtime's pool threads would otherwise spin on the second core while the engine's run follows.
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        using var session = new InferenceSession(path, options);
        using var input = OrtValue.CreateTensorValueFromMemory(x, new long[] { 1, 3, 224, 224 });
        using var run = new RunOptions();
        string inName = session.InputMetadata.Keys.First(), outName = session.OutputMetadata.Keys.First();
        void Ort() { using var _ = session.Run(run, new[] { inName }, new[] { input }, new[] { outName }); }
        for (int i = 0; i < 5; i++) { engine.Run(feed); Ort(); }
        var own = new List<double>(); var ort = new List<double>();
        var perOp = new Dictionary<string, List<double>>();
        for (int i = 0; i < runs; i++)
        {
            engine.Profile = new();
            long t0 = Stopwatch.GetTimestamp();
            engine.Run(feed);
            own.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            foreach (var kv in engine.Profile)
            {
                if (!perOp.TryGetValue(kv.Key, out var list)) perOp[kv.Key] = list = new();
                list.Add(kv.Value.Milliseconds);
            }
            t0 = Stopwatch.GetTimestamp();
            Ort();
            ort.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        }
        static double Median(List<double> l) { var s = l.OrderBy(v => v).ToList(); return s[s.Count / 2]; }
        Console.WriteLine($"{Path.GetFileName(path)}, {threads} thread(s), {runs} interleaved runs, kernel path {KernelDispatch.Best}" +
                          $" (AMX GEMM: {NativeKernels.HasAmx}, native conv: {NativeKernels.HasConv})");
        Console.WriteLine($"  PtqTools engine  median {Median(own),7:F2} ms  min {own.Min(),7:F2} ms");
        Console.WriteLine($"  ONNX Runtime     median {Median(ort),7:F2} ms  min {ort.Min(),7:F2} ms");
        Console.WriteLine($"  engine / ORT     {Median(own) / Median(ort):F2}x (medians), {own.Min() / ort.Min():F2}x (minima)");
        foreach (var kv in perOp.OrderByDescending(k => Median(k.Value)))
            Console.WriteLine($"    {kv.Key,-26} median {Median(kv.Value),7:F2} ms  min {kv.Value.Min(),7:F2} ms");
    }
}
