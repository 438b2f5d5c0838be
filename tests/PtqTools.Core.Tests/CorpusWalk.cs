using System.Text;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using Xunit;
using PtqTools.Core.Quantization;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Tests;

/// <summary>What happened to one conformance model.</summary>
public sealed record CorpusOutcome(string Suite, string Test, string Status, string Detail, int Layers)
{
    public int Opset { get; init; }
    public long Ir { get; init; }
    /// <summary>What quantization would do to the opset (OpsetUpgrader.RaiseKind), per channel (13) and per tensor (10).</summary>
    public string RaisePerChannel { get; init; } = "";
    public string RaisePerTensor { get; init; } = "";
    public string Blockers { get; init; } = "";

    /// <summary>Loaded, listed and saved; and where ONNX Runtime runs the original, the copy's outputs are identical.</summary>
    public bool RoundTripped => Status is "Identical" or "SavedNotRun";
}

/// <summary>
/// Walks Debian's libonnx-testdata conformance corpus: every model is loaded and validated by the engine, its layers
/// listed (as Get-ModelLayer does), saved through the engine's writer and read back; where ONNX Runtime runs the
/// original on the test's own test_data_set_0/input_K.pb, the saved copy must give bit-identical outputs.
/// </summary>
public static class CorpusWalk
{
    public static string Root => global::PtqTools.Fuzz.Seeds.CorpusRoot;
    public static readonly string[] Suites = { "node", "pytorch-converted", "pytorch-operator", "simple" };

    public static List<string> Models()
    {
        if (!Directory.Exists(Root))
            throw new InvalidOperationException($"'{Root}' does not exist: install Debian's libonnx-testdata (.ci/run does).");
        return Suites.SelectMany(s => Directory.Exists(Path.Combine(Root, s))
                ? Directory.GetDirectories(Path.Combine(Root, s), "test_*").Select(d => Path.Combine(d, "model.onnx")).Where(File.Exists)
                : Enumerable.Empty<string>())
            .OrderBy(p => p, StringComparer.Ordinal).ToList();
    }

    public static CorpusOutcome Walk(string modelPath, string tempFolder)
    {
        var testDir = Path.GetDirectoryName(modelPath)!;
        string suite = Path.GetFileName(Path.GetDirectoryName(testDir)!), test = Path.GetFileName(testDir);
        int opset = 0; long ir = 0; string r13 = "", r10 = "", blockers = "";
        CorpusOutcome Result(string status, string detail, int layers = -1) =>
            new(suite, test, status, detail, layers) { Opset = opset, Ir = ir, RaisePerChannel = r13, RaisePerTensor = r10, Blockers = blockers };

        ModelProto model;
        byte[] original = File.ReadAllBytes(modelPath);
        try { model = OnnxModelIO.Parse(original, modelPath); }
        catch (PtqException ex) { return Result("Refused", $"{ex.ErrorId}: {ex.Message}"); }
        (opset, ir) = (OpsetUpgrader.DefaultOpset(model), model.IrVersion);
        (r13, r10) = (OpsetUpgrader.RaiseKind(model, 13), OpsetUpgrader.RaiseKind(model, 10));
        if (r13 == "blocked") blockers = string.Join(", ", OpsetUpgrader.Blockers(model).Select(b => b.Split(' ')[0]));

        // The layers, as Get-ModelLayer lists them (the prepared graph), else the stored graph's nodes.
        int layers;
        string? layerNote = null;
        try
        {
            var prepared = ModelPreparer.PrepareModel(model, modelPath, out _);
            layers = ModelInspector.Layers(new PreparedModel(modelPath, "", "", prepared, false)).Count;
        }
        catch (PtqException ex)
        {
            layerNote = $"{ex.ErrorId}: {FirstLine(ex.Message)}";
            layers = -1;
        }

        var copy = Path.Combine(tempFolder, $"{suite}-{test}.onnx");
        try
        {
            OnnxModelIO.Save(model, copy);
            var reread = OnnxModelIO.Load(copy);
            if (!reread.Equals(model)) return Result("Changed", "the saved copy does not parse to the same model", layers);
            var copyBytes = File.ReadAllBytes(copy);

            string[] first;
            try { first = Run(original, model, testDir); }
            catch (Exception ex) when (ex is OnnxRuntimeException or PtqException or NotSupportedException)
            {
                return Result("SavedNotRun", $"ONNX Runtime does not run the original: {FirstLine(ex.Message)}" + (layerNote is null ? "" : $" (layers: {layerNote})"), layers);
            }
            if (layerNote is not null) return Result("LayersNotListed", layerNote, layers);
            var second = Run(copyBytes, reread, testDir);
            if (first.SequenceEqual(second)) return Result("Identical", "", layers);
            var again = Run(original, model, testDir);
            return again.SequenceEqual(first)
                ? Result("Different", "the saved copy's outputs differ from the original's", layers)
                : Result("SavedNotRun", "the original's outputs differ between two runs (random op)", layers);
        }
        finally
        {
            try { File.Delete(copy); } catch (IOException) { }
        }
    }

    /// <summary>Fingerprints of every output, running the model on test_data_set_0's inputs.</summary>
    static string[] Run(byte[] bytes, ModelProto model, string testDir)
    {
        var inits = model.Graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var graphInputs = model.Graph.Input.Where(i => !inits.Contains(i.Name)).ToList();
        var dataDir = Path.Combine(testDir, "test_data_set_0");
        var files = Directory.Exists(dataDir)
            ? Directory.GetFiles(dataDir, "input_*.pb").OrderBy(f => int.Parse(Path.GetFileNameWithoutExtension(f)[6..])).ToList()
            : new List<string>();
        using var options = new SessionOptions { IntraOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
        using var session = new InferenceSession(bytes, options);
        var names = new List<string>();
        var values = new List<OrtValue>();
        try
        {
            for (int k = 0; k < files.Count && k < graphInputs.Count; k++)
            {
                var type = graphInputs[k].Type;
                var bytesK = File.ReadAllBytes(files[k]);
                OrtValue value;
                if (type?.TensorType is not null) value = OrtTensors.FromTensorProto(TensorProtoFile.Read(files[k]));
                else if (type?.SequenceType is not null) value = OrtTensors.FromValue(TensorProtoFile.ReadContainer(bytesK, files[k], optional: false)!);
                else if (type?.OptionalType is not null)
                {
                    // ONNX Runtime takes an optional input as its element, and an absent one by leaving it out.
                    if (TensorProtoFile.ReadContainer(bytesK, files[k], optional: true) is not { } element) continue;
                    value = OrtTensors.FromValue(element);
                }
                else throw new NotSupportedException($"input '{graphInputs[k].Name}' is a {type?.ValueCase.ToString() ?? "untyped value"}, not a tensor, sequence or optional");
                names.Add(graphInputs[k].Name);
                values.Add(value);
            }
            var outputs = session.OutputNames.ToArray();
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, names, values, outputs);
            return results.Select(OrtTensors.Fingerprint).ToArray();
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    static string FirstLine(string s)
    {
        var line = s.Split('\n')[0].Trim();
        return line.Length > 220 ? line[..220] + "…" : line;
    }

    /// <summary>The figures as Markdown.</summary>
    public static string Report(IReadOnlyList<CorpusOutcome> outcomes, TimeSpan elapsed)
    {
        var sb = new StringBuilder();
        int total = outcomes.Count, ok = outcomes.Count(o => o.RoundTripped);
        sb.AppendLine("# Conformance corpus").AppendLine();
        sb.AppendLine("Every model of Debian's `libonnx-testdata` (`/usr/share/libonnx-testdata/data/{node,pytorch-converted,pytorch-operator,simple}/test_*/model.onnx`)");
        sb.AppendLine("is loaded and validated by the engine, its layers are listed as `Get-ModelLayer` lists them (the prepared graph), and it is");
        sb.AppendLine("saved through the engine's writer and read back. Where ONNX Runtime runs the original on the test's own");
        sb.AppendLine("`test_data_set_0/input_K.pb`, the saved copy is run too and every output must be bit-identical (SHA-256 of type, shape and bytes).");
        sb.AppendLine().AppendLine("Reproduce: `dotnet pwsh ./build.ps1 -Task Corpus` (writes this page; the Test task walks the same corpus and fails below 99 % or on any failure).").AppendLine();
        sb.AppendLine($"Walked {total} models in {elapsed.TotalSeconds:F0} s (2 shared cores, noisy).").AppendLine();
        sb.AppendLine("| suite | models | loaded | layers listed | round-tripped | identical ORT outputs | saved, ORT does not run the original | refused | failed |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var g in outcomes.GroupBy(o => o.Suite).Append(outcomes.GroupBy(_ => "**all**").First()))
        {
            var list = g.ToList();
            sb.AppendLine($"| {g.Key} | {list.Count} | {list.Count(o => o.Status != "Refused")} | {list.Count(o => o.Layers >= 0)} | {list.Count(o => o.RoundTripped)} | " +
                          $"{list.Count(o => o.Status == "Identical")} | {list.Count(o => o.Status == "SavedNotRun")} | {list.Count(o => o.Status == "Refused")} | " +
                          $"{list.Count(o => !o.RoundTripped && o.Status != "Refused")} |");
        }
        sb.AppendLine().AppendLine($"Round-tripped: {ok} of {total} ({100.0 * ok / Math.Max(1, total):F1} %).").AppendLine();
        sb.AppendLine("## By opset and IR version").AppendLine();
        sb.AppendLine("What quantization would do to each loaded model's default opset (`OpsetUpgrader.RaiseKind`): *kept* (already at the");
        sb.AppendLine("opset it needs), *version* (only the version number changes: every op means the same there), *rewrite* (meaning-keeping");
        sb.AppendLine("rewrites to opset 13) or *blocked* (an op with no such rewrite; quantization refuses, naming it). Per-channel weights need");
        sb.AppendLine("opset 13, per-tensor ones 10. Listing layers and calibrating need no raise.").AppendLine();
        sb.AppendLine("| opset | models | IR versions | per channel: kept / version / rewrite / blocked | per tensor: kept / version / rewrite / blocked |");
        sb.AppendLine("|---|---|---|---|---|");
        string Kinds(IEnumerable<string> kinds) { var l = kinds.ToList(); return string.Join(" / ", new[] { "kept", "version", "rewrite", "blocked" }.Select(k => l.Count(x => x == k))); }
        foreach (var g in outcomes.Where(o => o.Status != "Refused").GroupBy(o => o.Opset).OrderBy(g => g.Key))
            sb.AppendLine($"| {g.Key} | {g.Count()} | {string.Join(", ", g.Select(o => o.Ir).Distinct().OrderBy(v => v))} | {Kinds(g.Select(o => o.RaisePerChannel))} | {Kinds(g.Select(o => o.RaisePerTensor))} |");
        var blocking = outcomes.Where(o => o.Blockers.Length > 0).SelectMany(o => o.Blockers.Split(", ")).GroupBy(b => b).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal);
        sb.AppendLine().AppendLine("Ops that block the raise to 13 (models): " + (blocking.Any() ? string.Join(", ", blocking.Select(g => $"{g.Key} ({g.Count()})")) : "none") + ".").AppendLine();
        void Section(string title, IEnumerable<CorpusOutcome> items)
        {
            var l = items.ToList();
            sb.AppendLine($"## {title} ({l.Count})").AppendLine();
            if (l.Count == 0) { sb.AppendLine("None.").AppendLine(); return; }
            foreach (var o in l) sb.AppendLine($"- `{o.Suite}/{o.Test}` ({o.Status}): {o.Detail.Replace("|", "\\|")}");
            sb.AppendLine();
        }
        Section("Refused (with the reason)", outcomes.Where(o => o.Status == "Refused"));
        Section("Failed", outcomes.Where(o => !o.RoundTripped && o.Status != "Refused"));
        Section("Saved, but ONNX Runtime does not run the original (or its layers are not listed)", outcomes.Where(o => o.Status == "SavedNotRun" || o.Layers < 0 && o.Status != "Refused"));
        return sb.ToString();
    }
}

public class CorpusWalkTests
{
    /// <summary>The whole corpus (about 20 s on 2 cores); PTQ_CORPUS_REPORT names a file for the figures
    /// (build.ps1 -Task Corpus writes docs/corpus.md through it).</summary>
    [OnnxTestDataFact]
    public void ConformanceModels_LoadListAndRoundTripWithIdenticalOutputs()
    {
        TestPaths.UseTempCache();
        var models = CorpusWalk.Models();
        Assert.True(models.Count > 1000, $"Only {models.Count} conformance models were found under {CorpusWalk.Root}.");
        using var temp = new TempDir();
        var start = System.Diagnostics.Stopwatch.StartNew();
        var outcomes = models.Select(m => CorpusWalk.Walk(m, temp.Path)).ToList();
        var report = CorpusWalk.Report(outcomes, start.Elapsed);
        if (Environment.GetEnvironmentVariable("PTQ_CORPUS_REPORT") is { Length: > 0 } reportPath) File.WriteAllText(reportPath, report);
        var failed = outcomes.Where(o => !o.RoundTripped && o.Status != "Refused").ToList();
        int ok = outcomes.Count(o => o.RoundTripped);
        Assert.True(failed.Count == 0 && ok >= 0.99 * outcomes.Count,
            $"{ok} of {outcomes.Count} round-tripped; failures:\n" + string.Join("\n", outcomes.Where(o => !o.RoundTripped).Select(o => $"{o.Suite}/{o.Test} {o.Status}: {o.Detail}")));
    }
}

/// <summary>Every conformance model with a layer that can be quantized, quantized statically on its own
/// test_data_set_0 (per channel and per tensor): the opset is raised only as far as needed, and ONNX Runtime runs
/// the result; a refusal must name the op that blocks the raise.</summary>
public class CorpusQuantizationTests
{
    readonly Xunit.Abstractions.ITestOutputHelper _out;
    public CorpusQuantizationTests(Xunit.Abstractions.ITestOutputHelper output) => _out = output;

    [OnnxTestDataFact]
    public void ConformanceModelsWithWeights_QuantizeAtTheOpsetTheyNeedAndRun()
    {
        TestPaths.UseTempCache();
        using var temp = new TempDir();
        var failures = new List<string>();
        var byOpset = new SortedDictionary<int, (int Models, int Quantized, int Blocked)>();
        foreach (var modelPath in CorpusWalk.Models())
        {
            var testDir = Path.GetDirectoryName(modelPath)!;
            var name = $"{Path.GetFileName(Path.GetDirectoryName(testDir))}/{Path.GetFileName(testDir)}";
            var data = Path.Combine(testDir, "test_data_set_0");
            if (!Directory.Exists(data)) continue;
            PreparedModel prepared;
            Quantization.QuantizationPlan plan;
            try
            {
                prepared = ModelPreparer.Prepare(modelPath);
                plan = Quantization.QuantizationPlan.Create(new GraphView(prepared.Model.Graph), null);
            }
            catch (PtqException) { continue; }
            if (plan.QuantizedLayers.Count == 0) continue;
            List<Model.TensorStatistics> stats;
            try
            {
                var ds = DataSetReader.FromTensorProto(new[] { data }, new PtqDataSet());
                stats = Calibration.ActivationCalibrator.Run(prepared, plan.Activations, ds, 1, null, CancellationToken.None);
            }
            catch (PtqException) { continue; }   // ORT cannot run it on its data, or the data is not tensors
            catch (Exception ex) when (ex is not PtqException)
            {
                failures.Add($"{name}: calibration failed: {ex.GetType().Name}: {ex.Message.Split('\n')[0]}");
                continue;
            }
            int opset = OpsetUpgrader.DefaultOpset(prepared.Model);
            var counts = byOpset.GetValueOrDefault(opset);
            counts.Models++;
            foreach (var perChannel in new[] { true, false })
            {
                var output = Path.Combine(temp.Path, $"{Path.GetFileName(testDir)}.{perChannel}.onnx");
                try
                {
                    // Every op the quantizer handles, at every opset: the architecture rules (which keep whole
                    // one-op models such as a lone Softmax in float) are held by ArchitectureRuleTests.
                    Pipeline.QuantizationPipeline.Run(prepared, stats, new Quantization.QuantizationOptions { PerChannel = perChannel, SkipRules = new[] { "*" } }, output, CancellationToken.None);
                    var quantized = OnnxModelIO.Load(output);
                    int expected = Math.Max(opset, perChannel ? 13 : 10);
                    if (OpsetUpgrader.DefaultOpset(quantized) != expected && OpsetUpgrader.RaiseKind(prepared.Model, perChannel ? 13 : 10) != "rewrite")
                        failures.Add($"{name}: opset {OpsetUpgrader.DefaultOpset(quantized)}, expected {expected}");
                    using var options = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL };
                    using var session = new InferenceSession(output, options);
                    if (perChannel) counts.Quantized++;
                }
                catch (PtqException ex) when (ex.ErrorId == "OpsetUpgradeBlocked")
                {
                    if (perChannel) counts.Blocked++;
                }
                catch (Exception ex)
                {
                    failures.Add($"{name} (per channel {perChannel}): {ex.GetType().Name}: {ex.Message.Split('\n')[0]} {(ex is PtqException or OnnxRuntimeException ? "" : ex.StackTrace?.Split('\n')[0])}");
                }
                finally { File.Delete(output); }
            }
            byOpset[opset] = counts;
        }
        foreach (var (opset, c) in byOpset) _out.WriteLine($"opset {opset}: {c.Models} models with quantizable layers, {c.Quantized} quantized (per channel), {c.Blocked} refused naming the op");
        Assert.True(byOpset.Values.Sum(c => c.Quantized) > 50, $"only {byOpset.Values.Sum(c => c.Quantized)} models quantized");
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }
}
