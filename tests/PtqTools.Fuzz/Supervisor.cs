using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace PtqTools.Fuzz;

/// <summary>What a campaign found.</summary>
public sealed class FuzzSummary
{
    public int Seed { get; set; }
    public int Cases { get; set; }
    public double ResNetShare { get; set; }
    public double SyntheticShare { get; set; }
    public int Valid { get; set; }
    public int Refused { get; set; }
    public int Unexpected { get; set; }
    /// <summary>The worker process died (a crash inside ONNX Runtime or the runtime itself).</summary>
    public int Crashes { get; set; }
    public int Hangs { get; set; }
    /// <summary>The worker's resident memory passed the limit and it was stopped.</summary>
    public int MemoryBlowups { get; set; }
    public int WorkerStarts { get; set; }
    public double Seconds { get; set; }
    /// <summary>Cases per outcome kind, "stage: ErrorId" for refusals.</summary>
    public SortedDictionary<string, int> ByOutcome { get; set; } = new(StringComparer.Ordinal);
    public SortedDictionary<string, int> ByMutation { get; set; } = new(StringComparer.Ordinal);
    /// <summary>Cases per seed family: the conformance corpus, each synthetic model, ResNet18.</summary>
    public SortedDictionary<string, int> BySeed { get; set; } = new(StringComparer.Ordinal);
    public List<string> Findings { get; set; } = new();

    public bool Clean => Unexpected == 0 && Crashes == 0 && Hangs == 0 && MemoryBlowups == 0;
}

/// <summary>
/// Runs cases in a child worker process, one at a time, and restarts it when it dies, hangs or grows past the
/// memory limit; the input of every such case (and of every Unexpected one) is saved under findings/.
/// </summary>
public sealed class Supervisor
{
    public required string WorkerFile { get; init; }
    public required string[] WorkerArguments { get; init; }
    public required string OutputFolder { get; init; }
    public TimeSpan CaseTimeout { get; init; } = TimeSpan.FromSeconds(120);
    public long MemoryLimitBytes { get; init; } = 6L << 30;
    public Action<string>? Log { get; init; }

    Process? _worker;
    readonly Queue<string> _stderr = new();

    public FuzzSummary Run(int seed, int cases, IReadOnlyList<Seed> seeds, Seed? resnet, double resnetShare, int firstCase = 0, double syntheticShare = 0) =>
        Run(seed, Enumerable.Range(firstCase, cases).ToList(), seeds, resnet, resnetShare, syntheticShare);

    /// <summary>Runs the cases of these indexes (a campaign, or the findings of one replayed).</summary>
    public FuzzSummary Run(int seed, IReadOnlyList<int> indexes, IReadOnlyList<Seed> seeds, Seed? resnet, double resnetShare, double syntheticShare = 0)
    {
        var summary = new FuzzSummary { Seed = seed, Cases = indexes.Count, ResNetShare = resnet is null ? 0 : resnetShare, SyntheticShare = syntheticShare };
        var work = Path.Combine(OutputFolder, "work");
        var findings = Path.Combine(OutputFolder, "findings");
        var clock = Stopwatch.StartNew();
        try
        {
            for (int n = 0; n < indexes.Count; n++)
            {
                int i = indexes[n];
                var c = Mutator.Create(seed, i, seeds, resnet, resnetShare, syntheticShare);
                var folder = Path.Combine(work, "case");
                c.WriteTo(folder);
                foreach (var m in c.Mutations) Count(summary.ByMutation, m.Split(' ')[0]);
                Count(summary.BySeed, c.Seed == "resnet18" || c.Seed.StartsWith("synthetic/", StringComparison.Ordinal) ? c.Seed : "corpus");
                var (kind, stage, detail) = RunOne(folder, c, summary);
                string key;
                switch (kind)
                {
                    // A valid case names the last stage it reached (ort-quantized: the whole pipeline ran).
                    case "Valid": summary.Valid++; key = $"Valid {stage}"; break;
                    case "Refused": summary.Refused++; key = $"Refused {stage}: {detail}"; break;
                    case "Unexpected": summary.Unexpected++; key = $"Unexpected {stage}: {detail}"; break;
                    case "Crash": summary.Crashes++; key = $"Crash: {detail}"; break;
                    case "Hang": summary.Hangs++; key = "Hang"; break;
                    default: summary.MemoryBlowups++; key = "MemoryBlowup"; break;
                }
                Count(summary.ByOutcome, key.Length > 160 ? key[..160] : key);
                if (kind is not ("Valid" or "Refused"))
                {
                    var saved = Path.Combine(findings, $"{seed}-{i}");
                    c.WriteTo(saved);
                    File.AppendAllText(Path.Combine(saved, "case.txt"), $"outcome={kind} {stage}: {detail}\nstderr:\n{string.Join("\n", _stderr)}\n");
                    summary.Findings.Add($"case {i} ({c.Seed}; {string.Join(" | ", c.Mutations)}): {kind} {stage}: {detail}");
                    Log?.Invoke($"FINDING case {i}: {kind} {stage}: {detail} [{c.Seed}; {string.Join(" | ", c.Mutations)}]");
                }
                if ((n + 1) % 500 == 0)
                    Log?.Invoke($"{n + 1} cases, {clock.Elapsed.TotalSeconds:F0} s: {summary.Valid} valid, {summary.Refused} refused, {summary.Unexpected} unexpected, {summary.Crashes} crashes, {summary.Hangs} hangs, {summary.MemoryBlowups} memory");
            }
        }
        finally
        {
            StopWorker();
            if (Directory.Exists(work)) Directory.Delete(work, true);
        }
        summary.Seconds = Math.Round(clock.Elapsed.TotalSeconds, 1);
        Directory.CreateDirectory(OutputFolder);
        File.WriteAllText(Path.Combine(OutputFolder, $"summary-{seed}.json"), JsonSerializer.Serialize(summary, new JsonSerializerOptions { WriteIndented = true }));
        return summary;
    }

    static void Count(SortedDictionary<string, int> d, string key) => d[key] = d.GetValueOrDefault(key) + 1;

    (string Kind, string Stage, string Detail) RunOne(string folder, FuzzCase c, FuzzSummary summary)
    {
        if (_worker is null || _worker.HasExited) StartWorker(summary);
        var worker = _worker!;
        worker.StandardInput.WriteLine($"{folder}\t{c.TensorProtoData ?? "-"}\t{c.Index}");
        worker.StandardInput.Flush();
        var read = worker.StandardOutput.ReadLineAsync();
        var deadline = Stopwatch.StartNew();
        while (!read.Wait(50))
        {
            if (worker.HasExited) break;
            if (deadline.Elapsed > CaseTimeout) { StopWorker(); return ("Hang", "", $"no answer in {CaseTimeout.TotalSeconds} s"); }
            if (Rss(worker) > MemoryLimitBytes) { StopWorker(); return ("Memory", "", $"resident memory above {MemoryLimitBytes >> 20} MiB"); }
        }
        string? line = null;
        if (read.IsCompleted) line = read.Result;
        while (line is not null && !line.StartsWith("@@RESULT\t", StringComparison.Ordinal))
        {
            // Anything else the worker printed; the answer follows.
            var next = worker.StandardOutput.ReadLineAsync();
            line = next.Wait(CaseTimeout) ? next.Result : null;
        }
        if (line is null)
        {
            worker.WaitForExit(5000);
            var code = worker.HasExited ? worker.ExitCode : -1;
            StopWorker();
            return ("Crash", "", $"worker exited with code {code}{(code > 128 ? $" (signal {code - 128})" : "")}");
        }
        var parts = line.Split('\t', 4);
        return (parts[1], parts[2], parts[3]);
    }

    static long Rss(Process p)
    {
        try
        {
            foreach (var l in File.ReadLines($"/proc/{p.Id}/status"))
                if (l.StartsWith("VmRSS:", StringComparison.Ordinal))
                    return long.Parse(l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { }
        return 0;
    }

    void StartWorker(FuzzSummary summary)
    {
        StopWorker();
        var psi = new ProcessStartInfo(WorkerFile)
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
        };
        foreach (var a in WorkerArguments) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_gcServer"] = "0";
        _worker = Process.Start(psi)!;
        _worker.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (_stderr) { _stderr.Enqueue(e.Data); while (_stderr.Count > 40) _stderr.Dequeue(); }
        };
        _worker.BeginErrorReadLine();
        summary.WorkerStarts++;
    }

    void StopWorker()
    {
        if (_worker is null) return;
        try
        {
            if (!_worker.HasExited)
            {
                _worker.StandardInput.Close();
                if (!_worker.WaitForExit(2000)) _worker.Kill(entireProcessTree: true);
                _worker.WaitForExit();
            }
        }
        catch (InvalidOperationException) { }
        catch (IOException) { try { _worker.Kill(true); } catch (InvalidOperationException) { } }
        _worker.Dispose();
        _worker = null;
    }
}
