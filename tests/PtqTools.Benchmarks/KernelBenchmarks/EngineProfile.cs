using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;

namespace PtqTools.Benchmarks;

/// <summary>
/// `engine MODEL [RUNS] [THREADS] [--path KERNELPATH] [--fp32 FLOATMODEL|minilm]`: a quantized model on the PtqTools
/// engine, on ONNX Runtime (the same model) and, with --fp32, on ONNX Runtime's float model, in one process, run for
/// run interleaved; then, in separate profiled runs, the engine's time per op type (where the time goes; op types
/// outside the engine's table marked "ort", the regions of them it runs as one ONNX Runtime session each as
/// "(ONNX Runtime region)"), with calls and microseconds per call. Inputs: the model folder's
/// test_data_set_0/input_*.pb where present (MiniLM's token ids and masks), else a random 1x3x224x224 image.
/// Medians and minima, since the machine may be shared.
/// </summary>
internal static class EngineProfile
{
    public static void Run(string[] args)
    {
        string? Option(string name) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : null; }
        var positional = args.Where((a, i) => !a.StartsWith("--", StringComparison.Ordinal) && (i == 0 || !args[i - 1].StartsWith("--", StringComparison.Ordinal))).ToArray();
        var path = positional[0];
        int runs = positional.Length > 1 ? int.Parse(positional[1]) : 50, threads = positional.Length > 2 ? int.Parse(positional[2]) : 1;
        var kernels = KernelContext.Default.WithThreads(threads);
        if (Option("--path") is { } kp) kernels = kernels.WithPath(Enum.Parse<KernelPath>(kp, ignoreCase: true));
        var fp32Path = Option("--fp32") is "minilm" ? PtqTools.TestModels.MiniLmSource.ModelPath : Option("--fp32");
        using var engine = new IntegerEngine(OnnxModelIO.Load(path), EngineOptions.Default with { Kernels = kernels }, Path.GetFileName(path));
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
        var inputs = feed.ToDictionary(kv => kv.Key, kv => ToOrt(kv.Value));
        using var run = new RunOptions();
        Action OrtRun(InferenceSession s)
        {
            // By name where the model's inputs share the quantized model's names, else in order.
            var names = s.InputNames.ToArray();
            var values = names.Select((n, i) => inputs.TryGetValue(n, out var v) ? v : inputs.Values.ElementAt(Math.Min(i, inputs.Count - 1))).ToArray();
            var outs = s.OutputNames.ToArray();
            return () => { using var _ = s.Run(run, names, values, outs); };
        }
        using var session = new InferenceSession(path, options);
        using var fp32 = fp32Path is null ? null : new InferenceSession(fp32Path, options);
        var columns = new List<(string Name, Action Run, List<double> Times)>
        {
            ("PtqTools engine", () => engine.Run(feed), new()),
            ("ONNX Runtime int8", OrtRun(session), new()),
        };
        if (fp32 is not null) columns.Add(("ONNX Runtime fp32", OrtRun(fp32), new()));
        if (Environment.GetEnvironmentVariable("PTQ_PROFILE_NODES") == "1")
            foreach (var n in engine.Nodes) Console.WriteLine($"{(OrtNodeFallback.Handles(n) ? "O" : "E")} {n.OpType} {string.Join(",", n.Input)} -> {string.Join(",", n.Output)}");
        for (int i = 0; i < 5; i++) foreach (var c in columns) c.Run();
        for (int i = 0; i < runs; i++)
            foreach (var c in columns)
            {
                long t0 = Stopwatch.GetTimestamp();
                c.Run();
                c.Times.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            }
        var perOp = new Dictionary<string, List<double>>();
        var calls = new Dictionary<string, int>();
        for (int i = 0; i < runs; i++)
        {
            engine.Profile = new();
            engine.Run(feed);
            foreach (var kv in engine.Profile)
            {
                if (!perOp.TryGetValue(kv.Key, out var list)) perOp[kv.Key] = list = new();
                list.Add(kv.Value.Milliseconds);
                calls[kv.Key] = kv.Value.Count;
            }
        }
        engine.Profile = null;
        static double Median(List<double> l) { var s = l.OrderBy(v => v).ToList(); return s[s.Count / 2]; }
        Console.WriteLine($"{Path.GetFileName(path)}, {threads} thread(s), {runs} interleaved runs, kernel path {kernels.Path}" +
                          $" (AMX GEMM: {NativeKernels.HasAmx}, native conv: {NativeKernels.HasConv})");
        foreach (var (name, _, times) in columns)
            Console.WriteLine($"  {name,-18} median {Median(times),7:F2} ms  min {times.Min(),7:F2} ms");
        var own = columns[0].Times;
        foreach (var (name, _, times) in columns.Skip(1))
            Console.WriteLine($"  engine / {name[13..],-5}    {Median(own) / Median(times):F2}x (medians), {own.Min() / times.Min():F2}x (minima)");
        Console.WriteLine($"  profiled runs (a timestamp per unit), per op type:");
        var inOrt = new HashSet<string>(engine.OpsInOnnxRuntime);
        foreach (var kv in perOp.OrderByDescending(k => Median(k.Value)))
            Console.WriteLine($"    {kv.Key,-26} {(inOrt.Contains(kv.Key) ? "ort" : "   ")} {calls[kv.Key],4} calls  median {Median(kv.Value),7:F2} ms  min {kv.Value.Min(),7:F2} ms  ({1000 * Median(kv.Value) / calls[kv.Key],7:F1} us/call)");
        foreach (var v in inputs.Values) v.Dispose();
    }

    static OrtValue ToOrt(EngineTensor e)
    {
        var v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, (Microsoft.ML.OnnxRuntime.Tensors.TensorElementType)(int)e.Type, e.Dims);
        e.RawBytes.CopyTo(v.GetTensorMutableRawData());
        return v;
    }
}
