using Google.Protobuf;
using Microsoft.ML.Tokenizers;
using Onnx;

namespace PtqTools.TestModels;

/// <summary>Writes the five architecture models of issue 17, each in its own folder: model.onnx, calibration/ and
/// evaluation/ (ONNX test layout: test_data_set_N/input_K.pb), and kind.txt (what Evaluate reads).</summary>
public static class ArchitectureModelSet
{
    public static readonly string[] Kinds = { "bert11", "crnn", "textdir", "vad", "dbnet" };

    public const int BertTokens = 64;
    public const int VadChunksPerStream = 5;

    static readonly float[] Half = { 0.5f, 0.5f, 0.5f };
    static readonly float[] ImageNetMean = { 0.485f, 0.456f, 0.406f }, ImageNetStd = { 0.229f, 0.224f, 0.225f };

    /// <summary>Writes every model (or those named) under <paramref name="outDir"/>; returns the model paths.</summary>
    public static Dictionary<string, string> WriteAll(string outDir, int calibration = 50, int evaluation = 100, IEnumerable<string>? kinds = null)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var kind in kinds ?? Kinds) result[kind] = Write(kind, Path.Combine(outDir, kind), calibration, evaluation);
        return result;
    }

    public static string Write(string kind, string folder, int calibration = 50, int evaluation = 100)
    {
        Directory.CreateDirectory(folder);
        var calib = Path.Combine(folder, "calibration");
        var eval = Path.Combine(folder, "evaluation");
        foreach (var d in new[] { calib, eval }) if (Directory.Exists(d)) Directory.Delete(d, true);
        ModelProto model = kind switch
        {
            "bert11" => Bert(calib, eval, calibration, evaluation),
            "crnn" => Crnn(calib, eval, calibration, evaluation),
            "textdir" => TextDir(calib, eval, calibration, evaluation),
            "vad" => Vad(calib, eval, calibration, evaluation),
            "dbnet" => DbNet(calib, eval, calibration, evaluation),
            _ => throw new ArgumentException($"Unknown model kind '{kind}'; one of {string.Join(", ", Kinds)}.", nameof(kind)),
        };
        var path = Path.Combine(folder, "model.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        File.WriteAllText(Path.Combine(folder, "kind.txt"), kind == "vad" ? $"vad {VadChunksPerStream}\n" : kind + "\n");
        return path;
    }

    // ---- BERT at opset 11, on padded text ----

    static ModelProto Bert(string calib, string eval, int nc, int ne)
    {
        var source = ModelProto.Parser.ParseFrom(File.ReadAllBytes(MiniLmSource.ModelPath));
        var model = BertOpset11.Rewrite(source);
        var tokenizer = BertTokenizer.Create(MiniLmSource.VocabPath, new BertOptions { LowerCaseBeforeTokenization = true });
        var sentences = MiniLmSource.Sentences(nc + ne);
        for (int i = 0; i < nc + ne; i++)
        {
            var ids = tokenizer.EncodeToIds(sentences[i], addSpecialTokens: false);
            int n = Math.Min(ids.Count, BertTokens - 2);
            var input = new long[BertTokens];
            var mask = new long[BertTokens];
            input[0] = tokenizer.ClassificationTokenId;
            for (int t = 0; t < n; t++) input[t + 1] = ids[t];
            input[n + 1] = tokenizer.SeparatorTokenId;
            for (int t = 0; t < n + 2; t++) mask[t] = 1;   // the rest is [PAD] (id 0) with attention_mask 0
            SampleFiles.Write(i < nc ? calib : eval, i < nc ? i : i - nc,
                SampleFiles.Int64s("input_ids", input, 1, BertTokens), SampleFiles.Int64s("attention_mask", mask, 1, BertTokens),
                SampleFiles.Int64s("token_type_ids", new long[BertTokens], 1, BertTokens));
        }
        return model;
    }

    // ---- CRNN ----

    static List<float[]> TextLines(int seed, int count, int width, int height, Func<TextRenderer, int, (string, float, float, float)[]> layout, Func<int, bool>? rotate, float[] mean, float[] std)
    {
        var renderer = new TextRenderer(seed);
        var list = new List<float[]>();
        for (int i = 0; i < count; i++)
            list.Add(TextRenderer.Normalize(renderer.Render(width, height, layout(renderer, i), rotate?.Invoke(i) ?? false), width, height, mean, std));
        return list;
    }

    static readonly Lazy<List<string>> Sentences = new(() => MiniLmSource.Sentences(400));

    static (string, float, float, float)[] Line(TextRenderer r, int width, int height)
    {
        float size = height * (0.5f + (float)r.Random.NextDouble() * 0.3f);
        var text = r.Snippet(Sentences.Value, 5, (int)(width / (size * 0.55f)), charsetOnly: true);
        return new[] { (text, (float)r.Random.Next(1, 8), height * 0.5f + size * 0.35f + r.Random.Next(-2, 3), size) };
    }

    static ModelProto Crnn(string calib, string eval, int nc, int ne)
    {
        var images = TextLines(101, nc + ne, 128, 32, (r, _) => Line(r, 128, 32), null, Half, Half);
        // Set the head as training would: per-class logits centred over the calibration frames, the blank class
        // first on about half of the frames, and confident (mean max-softmax about 0.95).
        var rawModel = ImageModels.Crnn(null);
        BatchNormFit.Fit(rawModel, images.Take(20).Select(x => new[] { SampleFiles.Floats("x", x, 1, 3, 32, 128) }).ToList());
        int C = ImageModels.CrnnClasses;
        using (var raw = new OrtModel(rawModel))
        {
            var feats = images.Take(nc).Select(x => raw.Run(new[] { SampleFiles.Floats("x", x, 1, 3, 32, 128) })[1])
                .SelectMany(f => Enumerable.Range(0, f.Length / 64).Select(t => f.AsSpan(t * 64, 64).ToArray())).ToList();
            // The head reads the features' principal directions, as a trained one does.
            var weight = Pca.HeadWeight(feats, C, 16, 171);
            var frames = feats.Select(f => Project(f, weight, C)).ToList();
            var mean = Enumerable.Range(0, C).Select(c => frames.Average(f => f[c])).ToArray();
            var centred = frames.Select(f => f.Select((v, c) => v - (float)mean[c]).ToArray()).ToList();
            float delta = Bisect(-50, 50, d => centred.Count(f => f[0] + d >= f.Skip(1).Max()) / (double)centred.Count, 0.55);
            var shift = Enumerable.Range(0, C).Select(c => (float)-mean[c] + (c == 0 ? delta : 0)).ToArray();
            var shifted = centred.Select(f => f.Select((v, c) => v + (c == 0 ? delta : 0)).ToArray()).ToList();
            float scale = Bisect(0.01f, 200, s => shifted.Average(f => MaxSoftmax(f, s)), 0.95);
            var head = new Head(scale, shift, weight);
            WriteImages(calib, eval, nc, images, 32, 128);
            return BatchNormFit.CopyStatistics(rawModel, ImageModels.Crnn(head));
        }
    }

    static ModelProto TextDir(string calib, string eval, int nc, int ne)
    {
        var images = TextLines(202, nc + ne, 192, 48, (r, _) => Line(r, 192, 48), i => i % 2 == 1, Half, Half);
        var rawModel = ImageModels.DirectionClassifier(null);
        BatchNormFit.Fit(rawModel, images.Take(20).Select(x => new[] { SampleFiles.Floats("x", x, 1, 3, 48, 192) }).ToList());
        using var raw = new OrtModel(rawModel);
        var feats = images.Take(nc).Select(x => raw.Run(new[] { SampleFiles.Floats("x", x, 1, 3, 48, 192) })[1]).ToList();
        // Trained as a classifier is: the direction that separates upright from rotated lines on the calibration
        // images (Fisher's linear discriminant of the pooled features), so that the margins are bimodal.
        var labels = Enumerable.Range(0, nc).Select(i => i % 2 == 1).ToArray();
        var direction = Fisher(feats, labels);
        var weight = new float[64 * 2];
        for (int i = 0; i < 64; i++) { weight[i * 2] = (float)(-direction[i] / 2); weight[i * 2 + 1] = (float)(direction[i] / 2); }
        var d = feats.Select(f => Project(f, weight, 2)).Select(l => l[1] - l[0]).ToArray();
        double m0 = d.Where((_, i) => !labels[i]).Average(), m1 = d.Where((_, i) => labels[i]).Average();
        float median = (float)((m0 + m1) / 2);
        var centred = d.Select(v => v - median).ToArray();
        float scale = Bisect(0.01f, 1000, s => centred.Average(v => 1 / (1 + Math.Exp(-Math.Abs(s * v)))), 0.97);
        WriteImages(calib, eval, nc, images, 48, 192);
        return BatchNormFit.CopyStatistics(rawModel, ImageModels.DirectionClassifier(new Head(scale, new[] { median / 2, -median / 2 }, weight)));
    }

    static ModelProto DbNet(string calib, string eval, int nc, int ne)
    {
        var images = TextLines(303, nc + ne, 160, 160, (r, _) =>
            Enumerable.Range(0, r.Random.Next(3, 7)).Select(_ =>
            {
                float size = 10 + (float)r.Random.NextDouble() * 14;
                return (r.Snippet(Sentences.Value, 3, (int)(140 / (size * 0.55f)), false), (float)r.Random.Next(0, 60), (float)r.Random.Next(16, 158), size);
            }).ToArray(), null, ImageNetMean, ImageNetStd);
        var rawModel = ImageModels.DbNet(null);
        BatchNormFit.Fit(rawModel, images.Take(20).Select(x => new[] { SampleFiles.Floats("x", x, 1, 3, 160, 160) }).ToList());
        using var raw = new OrtModel(rawModel);
        var feats = new List<float[]>();
        foreach (var x in images.Take(Math.Min(nc, 20)))
        {
            var f = raw.Run(new[] { SampleFiles.Floats("x", x, 1, 3, 160, 160) })[1];   // [1,16,80,80]
            int hw = f.Length / 16;
            for (int p = 0; p < hw; p += 3) feats.Add(Enumerable.Range(0, 16).Select(c => f[c * hw + p]).ToArray());
        }
        var weight = Pca.HeadWeight(feats, 4, 3, 373);   // ConvTranspose [16,1,2,2]: channel-major, then the 2x2 taps
        var z = feats.SelectMany(f => Project(f, weight, 4)).OrderBy(v => v).ToArray();
        float q75 = z[(int)(z.Length * 0.75)];
        double m = z.Average(), std = Math.Sqrt(z.Average(v => (v - m) * (v - m)));
        float scale = (float)(4 / std);
        // 25 % of the pixels above probability 0.3 (logit -0.847), the map sharp as DBNet's are.
        WriteImages(calib, eval, nc, images, 160, 160);
        return BatchNormFit.CopyStatistics(rawModel, ImageModels.DbNet(new Head(scale, new[] { -0.847f / scale - q75 }, weight)));
    }

    static void WriteImages(string calib, string eval, int nc, List<float[]> images, int h, int w)
    {
        for (int i = 0; i < images.Count; i++)
            SampleFiles.Write(i < nc ? calib : eval, i < nc ? i : i - nc, SampleFiles.Floats("x", images[i], 1, 3, h, w));
    }

    /// <summary>Fisher's discriminant: (covariance + ridge)^-1 (mean of positives - mean of negatives).</summary>
    static double[] Fisher(IReadOnlyList<float[]> x, bool[] positive)
    {
        int d = x[0].Length;
        var m1 = new double[d]; var m0 = new double[d];
        int n1 = positive.Count(p => p), n0 = positive.Length - n1;
        for (int i = 0; i < x.Count; i++) for (int j = 0; j < d; j++) { if (positive[i]) m1[j] += x[i][j] / n1; else m0[j] += x[i][j] / n0; }
        var a = new double[d, d + 1];
        for (int i = 0; i < x.Count; i++)
        {
            var m = positive[i] ? m1 : m0;
            for (int j = 0; j < d; j++) for (int k = 0; k < d; k++) a[j, k] += (x[i][j] - m[j]) * (x[i][k] - m[k]) / x.Count;
        }
        double trace = Enumerable.Range(0, d).Sum(j => a[j, j]) / d;
        for (int j = 0; j < d; j++) { a[j, j] += 0.1 * trace + 1e-9; a[j, d] = m1[j] - m0[j]; }
        for (int c = 0; c < d; c++)   // Gauss-Jordan on the symmetric positive definite system
        {
            double pivot = a[c, c];
            for (int k = c; k <= d; k++) a[c, k] /= pivot;
            for (int r = 0; r < d; r++)
            {
                if (r == c) continue;
                double f = a[r, c];
                if (f != 0) for (int k = c; k <= d; k++) a[r, k] -= f * a[c, k];
            }
        }
        var w = Enumerable.Range(0, d).Select(j => a[j, d]).ToArray();
        double norm = Math.Sqrt(w.Sum(v => v * v));
        return w.Select(v => v / norm).ToArray();
    }

    static float[] Project(float[] f, float[] w, int outputs)
    {
        var z = new float[outputs];
        for (int i = 0; i < f.Length; i++) for (int o = 0; o < outputs; o++) z[o] += f[i] * w[i * outputs + o];
        return z;
    }

    static double MaxSoftmax(float[] logits, float scale)
    {
        double max = logits.Max() * scale, sum = 0;
        foreach (var v in logits) sum += Math.Exp(v * scale - max);
        return 1 / sum;
    }

    /// <summary>The x in [lo, hi] where the increasing f(x) reaches target.</summary>
    static float Bisect(float lo, float hi, Func<float, double> f, double target)
    {
        for (int i = 0; i < 60; i++)
        {
            float mid = (lo + hi) / 2;
            if (f(mid) < target) lo = mid; else hi = mid;
        }
        return (lo + hi) / 2;
    }

    // ---- VAD ----

    static ModelProto Vad(string calib, string eval, int nc, int ne)
    {
        int streams = (nc + ne) / VadChunksPerStream;
        var r = new Random(404);
        var chunks = new List<(float[] X, long Sr)>();
        for (int s = 0; s < streams; s++)
        {
            long sr = s % 4 == 3 ? 8000 : 16000;   // most streams at 16 kHz, every fourth at 8 kHz: both branches run
            var audio = Audio.Stream(r, VadModel.Samples * VadChunksPerStream, (int)sr);
            for (int k = 0; k < VadChunksPerStream; k++) chunks.Add((audio[(k * VadModel.Samples)..((k + 1) * VadModel.Samples)], sr));
        }
        // The state fed with each chunk: the float model's after the previous chunk of its stream (zeros first).
        // The LSTM state does not depend on the head, so the raw model gives it.
        var states = new List<(float[] H, float[] C)>();
        var logits = new List<(float[] Z, long Sr)>();
        using (var raw = new OrtModel(VadModel.Build(null)))
        {
            float[] h = new float[VadModel.Hidden], c = new float[VadModel.Hidden];
            for (int i = 0; i < chunks.Count; i++)
            {
                if (i % VadChunksPerStream == 0) { h = new float[VadModel.Hidden]; c = new float[VadModel.Hidden]; }
                states.Add((h, c));
                var o = raw.Run(VadInputs(chunks[i].X, chunks[i].Sr, h, c));
                if (i < nc) logits.Add((o[0], chunks[i].Sr));
                h = o[1]; c = o[2];
            }
        }
        var heads = new[] { 16000L, 8000L }.Select(sr =>
        {
            var z = logits.Where(l => l.Sr == sr).SelectMany(l => l.Z).OrderBy(v => v).ToArray();
            float median = z[z.Length / 2];
            double m = z.Average(), std = Math.Sqrt(z.Average(v => (v - m) * (v - m)));
            return new Head((float)(3 / std), new[] { -median });
        }).ToArray();
        for (int i = 0; i < chunks.Count; i++)
            SampleFiles.Write(i < nc ? calib : eval, i < nc ? i : i - nc, VadInputs(chunks[i].X, chunks[i].Sr, states[i].H, states[i].C).ToArray());
        return VadModel.Build(heads);
    }

    public static List<TensorProto> VadInputs(float[] x, long sr, float[] h, float[] c) => new()
    {
        SampleFiles.Floats("x", x, 1, 1, VadModel.Samples),
        SampleFiles.Int64s("sr", new[] { sr }, 1),
        SampleFiles.Floats("h", h, 1, 1, VadModel.Hidden),
        SampleFiles.Floats("c", c, 1, 1, VadModel.Hidden),
    };
}
