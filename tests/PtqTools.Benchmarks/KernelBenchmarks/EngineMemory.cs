using PtqTools.Core.Engine;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Kernels;

namespace PtqTools.Benchmarks;

/// <summary>
/// `memory MODEL [RUNS] [PATH...]`: the peak resident memory growth of the PtqTools engine on a model (load, engine
/// construction, weight packing and RUNS runs, 1 thread), measured as Measure-ModelPerformance -Engine PtqTools
/// measures it (<see cref="PerformanceMeter"/>: Linux VmHWM, reset first), once per kernel path named (default: the
/// managed Avx2 path and the best path).
/// </summary>
internal static class EngineMemory
{
    public static void Run(string[] args)
    {
        var path = args[0];
        int runs = args.Length > 1 ? int.Parse(args[1]) : 20;
        bool bytes = args.Contains("--bytes");
        args = args.Where(a => a != "--bytes").ToArray();
        var paths = args.Length > 2 ? args[2..].Select(Enum.Parse<KernelPath>).ToArray() : new[] { KernelPath.Avx2, KernelDispatch.Best };
        long size = new FileInfo(path).Length;
        if (bytes)
        {
            // One path, machine-readable (HostBench runs each path in a fresh process).
            foreach (var (row, growth) in Measure(path, runs, paths.Take(1))) { Console.WriteLine(row); Console.WriteLine($"growth-bytes {growth}"); }
            return;
        }
        if (Environment.GetEnvironmentVariable("PTQ_MEMORY_PHASES") == "1") { Phases(path, runs, paths[0]); return; }
        foreach (var (row, _) in Measure(path, runs, paths)) Console.WriteLine(row);
        Console.WriteLine($"(model file {size / 1048576.0:F1} MB; goal: growth <= {2 * size / 1048576.0:F1} MB)");
    }

    /// <summary>One line per path, and the growth in bytes: Measure-ModelPerformance's own measurement
    /// (<see cref="PerformanceMeter"/>) for models with one float input; for others (MiniLM's three int64 inputs, which
    /// it refuses) the same method here, fed test_data_set_0 beside the model.</summary>
    public static IEnumerable<(string Row, long Growth)> Measure(string path, int runs, IEnumerable<KernelPath> paths)
    {
        {
            foreach (var p in paths.Distinct())
            {
                var kernels = KernelContext.Default.WithThreads(1).WithPath(p);
                GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
                var feed = TestInputs(path);
                long growth; double p50; string method;
                if (feed is null)
                {
                    var perf = PerformanceMeter.Measure(path, null, InferenceEngine.PtqTools, 1, 1, 2, runs, null, CancellationToken.None, kernels);
                    (growth, p50, method) = (perf.MemoryGrowthBytes, perf.P50Ms, $"{perf.PeakMemoryMethod}, PerformanceMeter");
                }
                else (growth, p50, method) = Growth(path, feed, runs, kernels);
                yield return ($"{Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(path)))}/{Path.GetFileName(path)} path {Clamp(p),-10} peak growth {growth / 1048576.0,7:F1} MB ({method}), p50 {p50:F1} ms, {runs} runs",
                    growth);
            }
        }
    }

    /// <summary>test_data_set_0/input_*.pb beside a model with more than one input or a non-float one; null otherwise.</summary>
    static List<Onnx.TensorProto>? TestInputs(string path)
    {
        var dir = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "test_data_set_0");
        var files = Enumerable.Range(0, 16).Select(i => Path.Combine(dir, $"input_{i}.pb")).TakeWhile(File.Exists).ToList();
        if (files.Count == 0) return null;
        var tensors = files.Select(PtqTools.Core.Onnx.TensorProtoFile.Read).ToList();
        return tensors.Count == 1 && tensors[0].DataType == (int)PtqTools.Core.Onnx.OnnxDataType.Float ? null : tensors;
    }

    /// <summary>As <see cref="PerformanceMeter"/>: the kernel's high-water mark reset ("5" into clear_refs), then
    /// load, engine, 2 warm-up runs and the timed runs; growth = VmHWM - the resident size before loading.</summary>
    static (long Growth, double P50, string Method) Growth(string path, List<Onnx.TensorProto> inputs, int runs, KernelContext kernels)
    {
        File.WriteAllText("/proc/self/clear_refs", "5");
        long baseline = PerformanceMeterAccess.Resident();
        using var engine = IntegerEngine.Load(path, EngineOptions.Default with { Kernels = kernels });
        var feed = new Dictionary<string, EngineTensor>();
        for (int i = 0; i < engine.Inputs.Count && i < inputs.Count; i++) feed[engine.Inputs[i]] = EngineTensor.FromProto(inputs[i]);
        for (int i = 0; i < 2; i++) engine.Run(feed);
        var times = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            engine.Run(feed);
            times[i] = System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
        Array.Sort(times);
        return (Math.Max(0, PerformanceMeterAccess.Peak() - baseline), times[runs / 2], "VmHWM, test_data_set_0");
    }

    /// <summary>Resident and managed memory after each phase (load, engine, first run, all runs) on one path.</summary>
    static void Phases(string path, int runs, KernelPath p)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string Now() => $"{clock.Elapsed.TotalMilliseconds,7:F0} ms: rss {PerformanceMeterAccess.Resident() / 1048576.0,7:F1} MB, hwm {PerformanceMeterAccess.Peak() / 1048576.0,7:F1} MB, managed {GC.GetTotalMemory(false) / 1048576.0,7:F1} MB (committed {GC.GetGCMemoryInfo().TotalCommittedBytes / 1048576.0,6:F1} MB), allocated {GC.GetTotalAllocatedBytes() / 1048576.0,8:F1} MB, gen0/1/2 {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)}";
        // As Measure: the protobuf and ONNX types loaded first (the test inputs read), then the peak reset.
        _ = TestInputs(path);
        if (OperatingSystem.IsLinux()) File.WriteAllText("/proc/self/clear_refs", "5");
        Console.WriteLine($"start        {Now()}");
        if (Environment.GetEnvironmentVariable("PTQ_MEMORY_PARSE_ONLY") == "1")
        {
            var parsed = PtqTools.Core.Onnx.OnnxModelIO.Load(path);
            Console.WriteLine($"parsed       {Now()}");
            GC.KeepAlive(parsed);
            return;
        }
        // As Measure-ModelPerformance: the engine parses and owns the model (IntegerEngine.Load).
        using var engine = IntegerEngine.Load(path, EngineOptions.Default with { Kernels = KernelContext.Default.WithThreads(1).WithPath(p) });
        Console.WriteLine($"loaded+engine {Now()}");
        var r = new Random(1);
        var x = new float[3 * 224 * 224];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(r.NextDouble() * 2 - 1);
        var feed = new Dictionary<string, EngineTensor> { [engine.Inputs[0]] = EngineTensor.Float(x, 1, 3, 224, 224) };
        if (TestInputs(path) is { } inputs)
            for (int i = 0; i < engine.Inputs.Count && i < inputs.Count; i++) feed[engine.Inputs[i]] = EngineTensor.FromProto(inputs[i]);
        engine.Run(feed);
        Console.WriteLine($"first run    {Now()}");
        long before = GC.GetTotalAllocatedBytes();
        for (int i = 0; i < runs; i++) engine.Run(feed);
        Console.WriteLine($"{runs} runs      {Now()}; {(GC.GetTotalAllocatedBytes() - before) / runs / 1048576.0:F2} MB allocated per run");
        var trace = engine.MemoryTrace = new EngineMemoryTrace();
        engine.Run(feed);
        Console.WriteLine($"engine: ops in ONNX Runtime {string.Join(",", engine.OpsInOnnxRuntime)} ({engine.FallbackSessions.Nodes} node sessions, {engine.FallbackSessions.Sessions} distinct); recycled {engine.RecycledBytes / 1048576.0:F2} MB; constants held {engine.ConstantBytes / 1048576.0:F1} MB, released after packing {engine.ReleasedWeightBytes / 1048576.0:F1} MB, packed weights {engine.PackedWeightBytes / 1048576.0:F1} MB, peak held values {trace.PeakHeldBytes / 1048576.0:F2} MB, largest node {trace.LargestNodeBytes / 1048576.0:F2} MB, scratch {trace.ScratchBytes / 1048576.0:F2} MB");
    }

    /// <summary>The path the kernels take when asked for <paramref name="p"/> (the best supported at or below it).</summary>
    public static KernelPath Clamp(KernelPath p)
    {
        while (!KernelDispatch.Supported().Contains(p)) p--;
        return p;
    }
}

static class PerformanceMeterAccess
{
    public static long Resident() => Status("VmRSS:");
    public static long Peak() => Status("VmHWM:");
    static long Status(string key)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key, StringComparison.Ordinal)) return long.Parse(line[key.Length..].Trim().Split(' ')[0]) * 1024;
        return 0;
    }
}
