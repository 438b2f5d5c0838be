using System.Diagnostics;
using System.Globalization;
using System.Text;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Benchmarks;

/// <summary>
/// `hardware [--out DIR] [--resnet-int8 P] [--resnet-fp32 P] [--minilm-int8 P] [--minilm-fp32 P] [--quick]`
/// (build.ps1 -Task Bench -BenchSet Engine): in one run, one thread, (1) this core's attainable int8 and fp32
/// throughput (<see cref="PeakProbe"/>); (2) the int8 GEMMs of MiniLM and of ResNet18's convolutions (as GEMMs, and
/// as the engine's convolutions) on the managed Avx2 path and on the best path, ONNX Runtime MatMulInteger and fp32
/// MatMul on the same shapes, each as GOPS and as a fraction of the same run's peak; (3) the engine's ResNet18 and
/// MiniLM latency (Avx2 and best path) against ONNX Runtime int8 (the same model) and fp32 (the float model), runs
/// interleaved; (4) the engine's peak memory growth per model and path, each in a fresh process as
/// Measure-ModelPerformance -Engine PtqTools measures it. Writes a Markdown section (DIR/engine-bench.md) that
/// docs/benchmarks.md takes as is, named by the host class (<see cref="QuantTargets.HostClass"/>).
/// </summary>
internal static class HostBench
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static void Run(string[] args)
    {
        string Arg(string name, string def) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : def; }
        bool quick = args.Contains("--quick");
        var repo = FindRepo();
        var gt = Path.GetFullPath(Path.Combine(repo, "..", "shared", "ground-truth", "ort-1.31.1-avx2"));
        var nuget = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } np ? np
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var outDir = Path.GetFullPath(Arg("--out", Path.Combine(repo, "out", "bench", "engine")));
        var resnetInt8 = Arg("--resnet-int8", Path.Combine(gt, "resnet18_int8_default", "model.onnx"));
        var resnetFp32 = Arg("--resnet-fp32", Path.Combine(nuget, "microsoft.ml.dnnimagefeaturizer.resnet18", "0.23.1", "tools", "DnnImageModels", "ResNet18Onnx", "ResNet18.onnx"));
        var minilmInt8 = Arg("--minilm-int8", Path.Combine(gt, "minilm_dynamic", "model.onnx"));
        var minilmFp32 = Arg("--minilm-fp32", "");
        if (minilmFp32.Length == 0)
        {
            try { minilmFp32 = PtqTools.TestModels.MiniLmSource.ModelPath; }
            catch (InvalidOperationException e) { Console.WriteLine($"MiniLM fp32: {e.Message}"); }
        }
        Directory.CreateDirectory(outDir);
        var clock = Stopwatch.StartNew();
        var md = new StringBuilder();
        void Line(string s = "") { md.AppendLine(s); Console.WriteLine(s); }

        var host = QuantTargets.HostClass;
        var cpu = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() : null;
        var best = KernelDispatch.Best;
        Line($"### Host class {host}");
        Line();
        Line($"CPU: {cpu ?? System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString()}; best kernel path {best} (native library: {(NativeKernels.LoadedFrom is null ? "absent" : "present")}, " +
             $"native conv {NativeKernels.HasConv}, AMX {NativeKernels.HasAmx}); ONNX Runtime {OrtEnv.Instance().GetVersionString()}; 1 thread; {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC.");
        Line($"Command: `dotnet pwsh ./build.ps1 -Task Bench -BenchSet Engine` (or `dotnet run -c Release --project tests/PtqTools.Benchmarks/KernelBenchmarks -- hardware`).");
        Line();

        // (1) Peaks.
        var peaks = PeakProbe.Measure(Path.Combine(repo, "tests", "PtqTools.Benchmarks", "int8-peak.c"), Path.Combine(outDir, "probe"));
        double int8Peak = peaks.Where(p => p.Int8).Select(p => p.Gops).DefaultIfEmpty(double.NaN).Max();
        double fp32Peak = peaks.Where(p => !p.Int8).Select(p => p.Gops).DefaultIfEmpty(double.NaN).Max();
        double avx2Peak = peaks.Where(p => p.Instruction.StartsWith("vpmaddubsw", StringComparison.Ordinal) && p.Instruction.EndsWith("ymm", StringComparison.Ordinal)).Select(p => p.Gops).DefaultIfEmpty(double.NaN).Max();
        Line("Attainable throughput of one core (register-only loops in ~0.1 ms bursts, best of 400):");
        Line();
        Line("| instruction | type | GOPS | source |");
        Line("|---|---|---:|---|");
        foreach (var p in peaks) Line($"| {p.Instruction} | {(p.Int8 ? "int8" : "fp32")} | {F(p.Gops)} | {p.Source} |");
        Line();
        Line($"Peak int8 = {F(int8Peak)} GOPS (best instruction), peak of the AVX2 triple = {F(avx2Peak)} GOPS, peak fp32 = {F(fp32Peak)} GFLOPS. Fractions below: int8 kernels of the int8 peak " +
             "(the Avx2 path also of the AVX2 triple's), fp32 of the fp32 peak.");
        Line();

        // (2) Kernels.
        int budgetMs = quick ? 150 : 400;
        // The engine's paths side by side: the managed Avx2 path, the native AVX2 kernels (what a CPU without VNNI runs),
        // and this host's best path; the AVX2 ones also as a fraction of the AVX2 triple's peak.
        var paths = new[] { KernelPath.Avx2, KernelPath.NativeAvx2, best }.Where(p => KernelDispatch.Supported().Contains(p)).Distinct().ToArray();
        static bool Avx2Class(KernelPath p) => p is KernelPath.Avx2 or KernelPath.NativeAvx2;
        Line("| kernel | shape (M x N x K) | " + string.Join(" | ", paths.Select(p => $"PtqTools {p} GOPS (% int8 peak{(Avx2Class(p) ? ", % AVX2 peak" : "")})")) +
             " | ORT MatMulInteger GOPS (% int8 peak) | ORT fp32 MatMul GFLOPS (% fp32 peak) |");
        Line("|---|---|" + string.Concat(paths.Select(_ => "---:|")) + "---:|---:|");
        string Cells(double ops, double[] times) => string.Join(" | ", paths.Select((p, i) => Avx2Class(p) ? Cell(ops, times[i], int8Peak, avx2Peak) : Cell(ops, times[i], int8Peak)));
        var gemms = new (string Name, int M, int N, int K)[]
        {
            ("MiniLM Q/K/V/out", 128, 384, 384), ("MiniLM FFN up", 128, 1536, 384), ("MiniLM FFN down", 128, 384, 1536),
            ("ResNet18 stem 7x7 (GEMM)", 12544, 64, 147), ("ResNet18 layer1 3x3 (GEMM)", 3136, 64, 576), ("ResNet18 layer2 3x3 (GEMM)", 784, 128, 1152),
            ("ResNet18 layer3 3x3 (GEMM)", 196, 256, 2304), ("ResNet18 layer4 3x3 (GEMM)", 49, 512, 4608),
        };
        foreach (var (name, m, n, k) in gemms)
        {
            var (engine, ortInt8, ortFp32) = Gemm(m, n, k, budgetMs, paths);
            double ops = 2.0 * m * n * k;
            Line($"| {name} | {m}x{n}x{k} | {Cells(ops, engine)} | {Cell(ops, ortInt8, int8Peak)} | {Cell(ops, ortFp32, fp32Peak)} |");
        }
        var convs = new (string Name, ConvGeometry G)[]
        {
            ("ResNet18 stem 7x7 s2 (QConv)", new ConvGeometry(1, 3, 224, 224, 64, 7, 7, 2, 2, 3, 3, 3, 3)),
            ("ResNet18 layer1 3x3 (QConv)", new ConvGeometry(1, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1, 1, 1)),
            ("ResNet18 layer2 3x3 (QConv)", new ConvGeometry(1, 128, 28, 28, 128, 3, 3, 1, 1, 1, 1, 1, 1)),
            ("ResNet18 layer3 3x3 (QConv)", new ConvGeometry(1, 256, 14, 14, 256, 3, 3, 1, 1, 1, 1, 1, 1)),
            ("ResNet18 layer4 3x3 (QConv)", new ConvGeometry(1, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1, 1, 1)),
        };
        foreach (var (name, g) in convs)
        {
            var engine = Conv(g, budgetMs, paths);
            double ops = 2.0 * g.OutChannels * g.OutH * g.OutW * g.PatchSize;
            Line($"| {name} | {g.OutH * g.OutW}x{g.OutChannels}x{g.PatchSize} | {Cells(ops, engine)} | - | - |");
        }
        Line();

        // (3) Engine latency.
        int runs = quick ? 8 : 20;
        Line($"Model latency, 1 thread, {runs} runs interleaved (median / min, ms):");
        Line();
        Line("| model | " + string.Join(" | ", paths.Select(p => $"PtqTools {p}")) + " | ONNX Runtime int8 | ONNX Runtime fp32 |");
        Line("|---|" + string.Concat(paths.Select(_ => "---:|")) + "---:|---:|");
        foreach (var (name, int8, fp32) in new[] { ("ResNet18", resnetInt8, resnetFp32), ("MiniLM", minilmInt8, minilmFp32) })
        {
            if (!File.Exists(int8)) { Line($"| {name} | int8 model '{int8}' not found | | | |"); continue; }
            var times = Latency(int8, fp32, runs, paths);
            Line($"| {name} | {string.Join(" | ", times.Select(t => t is null ? "-" : $"{Median(t):F1} / {t.Min():F1}"))} |");
        }
        Line();

        // (4) Memory, each in a fresh process.
        Line("Peak memory growth of `Measure-ModelPerformance -Engine PtqTools` (load, engine, packing, 20 runs; VmHWM), fresh process per row:");
        Line();
        Line("| model | file MB | path | growth MB | growth / file size |");
        Line("|---|---:|---|---:|---:|");
        foreach (var (name, model) in new[] { ("ResNet18 int8", resnetInt8), ("MiniLM int8", minilmInt8) })
        {
            if (!File.Exists(model)) continue;
            double mb = new FileInfo(model).Length / 1048576.0;
            foreach (var path in paths)
            {
                var growth = MemoryInChild(model, path);
                Line($"| {name} | {mb:F1} | {EngineMemory.Clamp(path)} | {(growth is long g ? (g / 1048576.0).ToString("F1", Inv) : "failed")} | {(growth is long g2 ? (g2 / 1048576.0 / mb).ToString("F2", Inv) : "-")} |");
            }
        }
        Line();
        Line($"(benchmark took {clock.Elapsed.TotalMinutes:F1} min)");
        var file = Path.Combine(outDir, "engine-bench.md");
        File.WriteAllText(file, md.ToString());
        Console.WriteLine($"written: {file}");
    }

    static string F(double v) => double.IsNaN(v) ? "-" : v.ToString("F1", Inv);
    static double Median(List<double> l) { var s = l.OrderBy(v => v).ToList(); return s[s.Count / 2]; }

    static string Cell(double ops, double seconds, double peak, double second = double.NaN)
    {
        if (double.IsNaN(seconds)) return "-";
        double gops = ops / seconds / 1e9;
        var s = $"{gops.ToString("F1", Inv)} ({(100 * gops / peak).ToString("F0", Inv)}%";
        if (!double.IsNaN(second)) s += $", {(100 * gops / second).ToString("F0", Inv)}%";
        return s + ")";
    }

    /// <summary>Best time in seconds: at least 3 calls, then until the budget is spent (at most 200).</summary>
    static double Time(Action f, int budgetMs)
    {
        f();
        double best = double.MaxValue; var total = Stopwatch.StartNew();
        for (int i = 0; i < 200 && (i < 3 || total.ElapsedMilliseconds < budgetMs); i++)
        {
            long t0 = Stopwatch.GetTimestamp(); f();
            best = Math.Min(best, Stopwatch.GetElapsedTime(t0).TotalSeconds);
        }
        return best;
    }

    /// <summary>One thread on <paramref name="path"/>: the context every kernel figure of this benchmark runs with.</summary>
    static KernelContext OnPath(KernelPath path) => KernelContext.Default.WithThreads(1).WithPath(path);

    static (double[] Engine, double OrtInt8, double OrtFp32) Gemm(int m, int n, int k, int budgetMs, KernelPath[] paths)
    {
        var r = new Random(1);
        var a = new byte[m * k]; r.NextBytes(a);
        var b = new sbyte[k * n]; for (int i = 0; i < b.Length; i++) b[i] = (sbyte)r.Next(-128, 128);
        var c = new int[m * n];
        var p = PackedWeights.Pack(b, k, n, new[] { 0 });
        var engine = paths.Select(path => Time(() => QGemm.Multiply(OnPath(path), a, 128, m, p, c), budgetMs)).ToArray();

        var q = Models.MatMulInteger(b, m, k, n);
        double ortInt8;
        using (var s = Models.Session(q, 1)) using (var input = OrtValue.CreateTensorValueFromMemory(a, new long[] { m, k })) using (var run = new RunOptions())
            ortInt8 = Time(() => { using var o = s.Run(run, new[] { "A" }, new[] { input }, new[] { "C" }); }, budgetMs);

        var af = a.Select(v => v / 255f).ToArray(); var bf = b.Select(v => v / 127f).ToArray();
        var fnode = new NodeProto { OpType = "MatMul", Name = "mm" };
        fnode.Input.AddRange(new[] { "A", "B" }); fnode.Output.Add("C");
        var f = Models.Single(fnode, new[] { Models.Value("A", (int)OnnxDataType.Float, m, k) }, Models.Value("C", (int)OnnxDataType.Float, m, n), new[] { TensorData.FromFloats("B", bf, k, n) });
        double ortFp32;
        using (var s = Models.Session(f, 1)) using (var input = OrtValue.CreateTensorValueFromMemory(af, new long[] { m, k })) using (var run = new RunOptions())
            ortFp32 = Time(() => { using var o = s.Run(run, new[] { "A" }, new[] { input }, new[] { "C" }); }, budgetMs);
        return (engine, ortInt8, ortFp32);
    }

    static double[] Conv(ConvGeometry g, int budgetMs, KernelPath[] paths)
    {
        var r = new Random(2);
        var x = new byte[g.Channels * g.Height * g.Width]; r.NextBytes(x);
        var w = new sbyte[g.OutChannels * g.PatchSize]; for (int i = 0; i < w.Length; i++) w[i] = (sbyte)r.Next(-127, 128);
        var mult = Enumerable.Range(0, g.OutChannels).Select(i => 1e-4f + i * 1e-7f).ToArray();
        var y = new byte[g.OutChannels * g.OutH * g.OutW];
        double Run(KernelPath p) { var packed = PackedConvWeights.Pack(w, new[] { 0 }, g); return Time(() => QConv.RunRequantized<byte, byte>(OnPath(p), x, 128, packed, default, mult, 128, false, y), budgetMs); }
        return paths.Select(Run).ToArray();
    }

    /// <summary>Per column (the engine on each path, ORT int8, ORT fp32): the times of runs interleaved, or null.</summary>
    static List<double>?[] Latency(string int8Path, string fp32Path, int runs, KernelPath[] paths)
    {
        var dir = Path.GetDirectoryName(int8Path)!;
        var pbs = Enumerable.Range(0, 16).Select(i => Path.Combine(dir, "test_data_set_0", $"input_{i}.pb")).TakeWhile(File.Exists).ToList();
        var model = OnnxModelIO.Load(int8Path);
        var engines = paths.Select(p => new IntegerEngine(model, EngineOptions.Default with { Kernels = OnPath(p) }, Path.GetFileName(int8Path))).ToList();
        var engine = engines[0];
        var graphInputs = model.Graph.Input.Where(i => !model.Graph.Initializer.Any(t => t.Name == i.Name)).ToList();
        var tensors = pbs.Count > 0 ? pbs.Select(TensorProtoFile.Read).ToList() : new List<TensorProto> { RandomImage() };
        var feed = new Dictionary<string, EngineTensor>();
        for (int i = 0; i < engine.Inputs.Count && i < tensors.Count; i++) feed[engine.Inputs[i]] = EngineTensor.FromProto(tensors[i]);
        using var options = new SessionOptions { IntraOpNumThreads = 1, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        using var int8 = new InferenceSession(int8Path, options);
        using var fp32 = File.Exists(fp32Path) ? new InferenceSession(fp32Path, options) : null;
        var ortInputs = new List<(InferenceSession S, string[] Names, OrtValue[] Values)>();
        foreach (var s in new[] { int8, fp32 })
        {
            if (s is null) { ortInputs.Add((null!, Array.Empty<string>(), Array.Empty<OrtValue>())); continue; }
            var names = s.InputNames.ToArray();
            // By name where the float model's inputs share the quantized model's names, else in order.
            var values = names.Select((n, i) => ToOrt(tensors.FirstOrDefault(t => t.Name == n) ?? tensors[Math.Min(i, tensors.Count - 1)])).ToArray();
            ortInputs.Add((s, names, values));
        }
        var actions = new List<Action?>(engines.Select(e => (Action?)(() => e.Run(feed))));
        using var ro = new RunOptions();
        foreach (var (s, names, values) in ortInputs)
            actions.Add(s is null ? null : () => { using var o = s.Run(ro, names, values, s.OutputNames.ToArray()); });
        var times = actions.Select(a => a is null ? null : new List<double>()).ToArray();
        for (int warm = 0; warm < 2; warm++) foreach (var a in actions) a?.Invoke();
        for (int i = 0; i < runs; i++)
            for (int j = 0; j < actions.Count; j++)
            {
                if (actions[j] is not { } a) continue;
                long t0 = Stopwatch.GetTimestamp(); a();
                times[j]!.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
            }
        foreach (var (_, _, values) in ortInputs) foreach (var v in values) v.Dispose();
        foreach (var e in engines) e.Dispose();
        return times;
    }

    static TensorProto RandomImage()
    {
        var r = new Random(1);
        var x = new float[3 * 224 * 224];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(r.NextDouble() * 2 - 1);
        return TensorData.FromFloats("input", x, 1, 3, 224, 224);
    }

    static OrtValue ToOrt(TensorProto t)
    {
        var e = EngineTensor.FromProto(t);
        var v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, (Microsoft.ML.OnnxRuntime.Tensors.TensorElementType)(int)e.Type, e.Dims);
        e.RawBytes.CopyTo(v.GetTensorMutableRawData());
        return v;
    }

    /// <summary>`memory MODEL 20 PATH` in a fresh process (the growth it prints), or null when it failed.</summary>
    static long? MemoryInChild(string model, KernelPath path)
    {
        var dll = typeof(HostBench).Assembly.Location;
        var psi = new ProcessStartInfo(Environment.ProcessPath ?? "dotnet") { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(psi.FileName) == "dotnet") psi.ArgumentList.Add(dll);
        foreach (var a in new[] { "memory", model, "20", path.ToString(), "--bytes" }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        var line = output.Split('\n').FirstOrDefault(l => l.StartsWith("growth-bytes ", StringComparison.Ordinal));
        return p.ExitCode == 0 && line is not null ? long.Parse(line["growth-bytes ".Length..].Trim(), Inv) : null;
    }

    static string FindRepo()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "PtqPowerShell.sln"))) return d.FullName;
        return Directory.GetCurrentDirectory();
    }
}
