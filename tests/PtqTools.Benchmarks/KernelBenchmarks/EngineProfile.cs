using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;

namespace PtqTools.Benchmarks;

/// <summary>
/// `engine MODEL [RUNS] [THREADS]`: a quantized model on the PtqTools engine and on ONNX Runtime in one process, run
/// for run interleaved, with the engine's time per op type (where the time goes; ops run in ONNX Runtime marked
/// "ort", with the ms per call). Inputs: the model folder's test_data_set_0/input_*.pb where present (MiniLM's
/// token ids and masks), else a random 1x3x224x224 image. Medians and minima, since the machine may be shared.
/// </summary>
internal static class EngineProfile
{
    public static void Run(string[] args)
    {
        var path = args[0];
        int runs = args.Length > 1 ? int.Parse(args[1]) : 50, threads = args.Length > 2 ? int.Parse(args[2]) : 1;
        using var engine = new IntegerEngine(OnnxModelIO.Load(path), EngineOptions.Default with { Kernels = KernelContext.Default.WithThreads(threads) }, Path.GetFileName(path));
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var pbs = Enumerable.Range(0, 16).Select(i => Path.Combine(dir, "test_data_set_0", $"input_{i}.pb")).TakeWhile(File.Exists).ToList();
        var feed = new Dictionary<string, EngineTensor>();
        if (pbs.Count > 0)
            for (int i = 0; i < engine.Inputs.Count && i < pbs.Count; i++) feed[engine.Inputs[i]] = EngineTensor.FromProto(TensorProtoFile.Read(pbs[i]));
        else
        {
            var r = new Random(1);
            var x = new float[3 * 224 * 224];
            for (int i = 0; i < x.Length; i++) x[i] = (float)(r.NextDouble() * 200 - 100);
            feed[engine.Inputs[0]] = EngineTensor.Float(x, 1, 3, 224, 224);
        }
        using var options = new SessionOptions { IntraOpNumThreads = threads, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        // ONNX Runtime's pool threads would otherwise spin on the second core while the engine's run follows.
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        using var session = new InferenceSession(path, options);
        var inNames = engine.Inputs.ToArray();
        var inputs = inNames.Select(n => ToOrt(feed[n])).ToArray();
        using var run = new RunOptions();
        var outNames = session.OutputMetadata.Keys.ToArray();
        void Ort() { using var _ = session.Run(run, inNames, inputs, outNames); }
        if (Environment.GetEnvironmentVariable("PTQ_PROFILE_NODES") == "1")
            foreach (var n in engine.Nodes) Console.WriteLine($"{(OrtNodeFallback.Handles(n) ? "O" : "E")} {n.OpType} {string.Join(",", n.Input)} -> {string.Join(",", n.Output)}");
        for (int i = 0; i < 5; i++) { engine.Run(feed); Ort(); }
        var own = new List<double>(); var ort = new List<double>();
        var perOp = new Dictionary<string, List<double>>();
        var calls = new Dictionary<string, int>();
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
                calls[kv.Key] = kv.Value.Count;
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
        var inOrt = new HashSet<string>(engine.OpsInOnnxRuntime);
        foreach (var kv in perOp.OrderByDescending(k => Median(k.Value)))
            Console.WriteLine($"    {kv.Key,-26} {(inOrt.Contains(kv.Key) ? "ort" : "   ")} {calls[kv.Key],4} calls  median {Median(kv.Value),7:F2} ms  min {kv.Value.Min(),7:F2} ms  ({1000 * Median(kv.Value) / calls[kv.Key],7:F1} us/call)");
        double Sum(bool ort) => perOp.Where(k => inOrt.Contains(k.Key) == ort).Sum(k => Median(k.Value));
        Console.WriteLine($"  in the engine's kernels {Sum(false),7:F2} ms, in ONNX Runtime {Sum(true),7:F2} ms ({perOp.Where(k => inOrt.Contains(k.Key)).Sum(k => calls[k.Key])} calls)");
        foreach (var v in inputs) v.Dispose();
    }

    static OrtValue ToOrt(EngineTensor e)
    {
        var v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, (Microsoft.ML.OnnxRuntime.Tensors.TensorElementType)(int)e.Type, e.Dims);
        e.RawBytes.CopyTo(v.GetTensorMutableRawData());
        return v;
    }
}
