using Microsoft.ML.Tokenizers;
using Onnx;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Data;

/// <summary>
/// Text samples for transformer models: one sentence per non-empty line of UTF-8 text files, tokenized with BERT
/// WordPiece (Microsoft.ML.Tokenizers' BertTokenizer, lower-cased as uncased BERT vocabularies expect) into the
/// int64 inputs BERT-style models take: input_ids ([CLS] tokens [SEP]), attention_mask (ones) and token_type_ids
/// (zeros), each [1, tokens]. Inputs are matched to the model's inputs by these names.
/// </summary>
public static class TextDataSet
{
    public const int DefaultMaxSequenceLength = 128;

    public static PtqDataSet FromText(IReadOnlyList<string> files, string vocabPath, PtqDataSet options)
    {
        if (!File.Exists(vocabPath))
            throw new PtqException("VocabNotFound", PtqErrorKind.ObjectNotFound, $"The vocabulary file '{vocabPath}' does not exist.", vocabPath);
        int lines = 0;
        foreach (var f in files)
        {
            if (!File.Exists(f)) throw new PtqException("DataSetNotFound", PtqErrorKind.ObjectNotFound, $"The file '{f}' does not exist.", f);
            lines += Lines(f).Count();
        }
        var ds = new PtqDataSet
        {
            Kind = "Text", Name = Path.GetFileName(files[0]), Paths = files.Select(Path.GetFullPath).ToArray(), VocabPath = Path.GetFullPath(vocabPath),
            MaxSequenceLength = options.MaxSequenceLength > 0 ? options.MaxSequenceLength : DefaultMaxSequenceLength, Skip = options.Skip, Count = options.Count,
            Shuffle = options.Shuffle, Seed = options.Seed, BatchSize = options.BatchSize, SourceCount = lines,
        };
        if (ds.BatchSize < 1) throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, $"BatchSize must be at least 1, not {ds.BatchSize}.", ds.BatchSize);
        if (ds.MaxSequenceLength < 3)
            throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, "MaxSequenceLength must be at least 3 ([CLS], one token, [SEP]).", ds.MaxSequenceLength);
        var tokenizer = CreateTokenizer(ds.VocabPath);
        if (ds.Skip < 0) throw new PtqException("InvalidOption", PtqErrorKind.InvalidArgument, "Skip cannot be negative.", ds.Skip);
        int available = Math.Max(0, lines - ds.Skip);
        ds.Count = ds.Count > 0 ? Math.Min(ds.Count, available) : available;
        if (ds.Count == 0)
            throw new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, $"The text data set '{ds.Name}' has no sentences (found {lines}, skipping {ds.Skip}).", ds.Name);
        var first = Tokenize(tokenizer, ds.Paths.SelectMany(Lines).Skip(DataSetReader.Indices(ds)[0]).First(), ds.MaxSequenceLength);
        ds.SampleShape = new[] { 1, first.Length };
        return ds;
    }

    /// <summary>The non-empty lines of a text file, trimmed.</summary>
    internal static IEnumerable<string> Lines(string path) =>
        File.ReadLines(path).Select(l => l.Trim()).Where(l => l.Length > 0);

    internal static BertTokenizer CreateTokenizer(string vocabPath)
    {
        try
        {
            return BertTokenizer.Create(vocabPath, new BertOptions { LowerCaseBeforeTokenization = true });
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or FormatException or IOException)
        {
            throw new PtqException("VocabNotReadable", PtqErrorKind.InvalidData, $"'{vocabPath}' is not a BERT WordPiece vocabulary (one token a line, with [CLS], [SEP] and [UNK]): {ex.Message}", vocabPath, ex);
        }
    }

    /// <summary>[CLS] tokens [SEP], truncated to <paramref name="max"/> ids.</summary>
    internal static long[] Tokenize(BertTokenizer tokenizer, string text, int max)
    {
        var ids = tokenizer.EncodeToIds(text, addSpecialTokens: false);
        int n = Math.Min(ids.Count, max - 2);
        var result = new long[n + 2];
        result[0] = tokenizer.ClassificationTokenId;
        for (int i = 0; i < n; i++) result[i + 1] = ids[i];
        result[^1] = tokenizer.SeparatorTokenId;
        return result;
    }

    /// <summary>The sentences of the data set as model inputs, one sample each, in the order of
    /// <paramref name="indices"/> (sentence numbers over all files; read as a stream when in order, or all sentences
    /// held when shuffled).</summary>
    internal static IEnumerable<Sample> Read(PtqDataSet ds, IReadOnlyList<int> indices, CancellationToken cancel)
    {
        var tokenizer = CreateTokenizer(ds.VocabPath!);
        var sentences = ds.Paths.SelectMany(f => Lines(f).Select(line => (File: f, Line: line)));
        IEnumerable<(int Index, string File, string Line)> chosen;
        if (ds.Shuffle)
        {
            var all = sentences.ToList();
            chosen = indices.Select(i => (i, all[i].File, all[i].Line));
        }
        else
            chosen = sentences.Select((s, i) => (i, s.File, s.Line)).Skip(ds.Skip).Take(ds.Count)
                .Where(c => ds.HoldOutEvery <= 0 || (c.i % ds.HoldOutEvery == ds.HoldOutEvery - 1) == ds.HeldOut);
        foreach (var (index, file, line) in chosen)
        {
            cancel.ThrowIfCancellationRequested();
            var ids = Tokenize(tokenizer, line, ds.MaxSequenceLength);
            yield return new Sample(index, $"{Path.GetFileName(file)}: {(line.Length > 60 ? line[..60] + "…" : line)}", Array.Empty<float>(), new[] { 1, ids.Length }, -1)
            {
                Inputs = new[] { Int64("input_ids", ids), Int64("attention_mask", Enumerable.Repeat(1L, ids.Length)), Int64("token_type_ids", new long[ids.Length]) },
            };
        }
    }

    static TensorProto Int64(string name, IEnumerable<long> values)
    {
        var t = new TensorProto { Name = name, DataType = (int)OnnxDataType.Int64 };
        t.Int64Data.AddRange(values);
        t.Dims.Add(1);
        t.Dims.Add(t.Int64Data.Count);
        return t;
    }
}
