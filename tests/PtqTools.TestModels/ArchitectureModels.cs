using Onnx;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Runtime;

namespace PtqTools.TestModels;

/// <summary>The figures of a model against the float model on the architecture models' evaluation samples. The
/// metric that applies to the model's kind is set; the others are null.</summary>
public sealed record ArchitectureFigures
{
    public required string Kind { get; init; }
    public int Samples { get; init; }
    /// <summary>bert11: mean (and minimum) cosine of the attention-masked mean-pooled embeddings against float.</summary>
    public double? EmbeddingCosine { get; init; }
    public double? EmbeddingCosineMin { get; init; }
    /// <summary>bert11: Spearman of all pairwise embedding similarities against float's.</summary>
    public double? Spearman { get; init; }
    /// <summary>crnn: character error rate of the CTC greedy decode against the float model's decode.</summary>
    public double? CharacterErrorRate { get; init; }
    /// <summary>crnn: characters the float model decodes on the evaluation lines, and its mean max-softmax.</summary>
    public int? FloatCharacters { get; init; }
    public double? FloatConfidence { get; init; }
    /// <summary>textdir: top-1 agreement with float; vad: per-frame decision agreement (at 0.5) with float.</summary>
    public double? Agreement { get; init; }
    /// <summary>textdir: the float model's accuracy on the true direction (odd evaluation samples are rotated 180 degrees).</summary>
    public double? FloatAccuracy { get; init; }
    /// <summary>vad: AUC of this model's per-frame probabilities against float's decisions; the share of speech frames by float.</summary>
    public double? Auc { get; init; }
    public double? FloatSpeechShare { get; init; }
    /// <summary>dbnet: mean IoU of the maps binarized at 0.3 against float's; float's share of pixels above 0.3.</summary>
    public double? MapIoU { get; init; }
    public double? FloatMapShare { get; init; }
    /// <summary>Output cosine against float over every output value (all outputs of all samples, concatenated per sample;
    /// per-token outputs at the tokens whose attention mask is non-zero, TokenMask).</summary>
    public double OutputCosine { get; init; }
    public double OutputCosineMin { get; init; }
    public long FloatBytes { get; init; }
    public long ModelBytes { get; init; }
    public double SizeRatio => FloatBytes == 0 ? double.NaN : ModelBytes / (double)FloatBytes;
    /// <summary>Median latency at one ONNX Runtime thread, the two models timed in alternation on the first evaluation
    /// sample (informative, never asserted: tiny models on a shared machine vary by tens of percent), and float / this:
    /// above 1 is faster.</summary>
    public double FloatMs { get; init; }
    public double ModelMs { get; init; }
    public double SpeedRatio => ModelMs == 0 ? double.NaN : FloatMs / ModelMs;

    public string Summary()
    {
        string Metric() => Kind switch
        {
            "bert11" => $"embedding cosine {EmbeddingCosine:F4} (min {EmbeddingCosineMin:F4}), Spearman {Spearman:F4}",
            "crnn" => $"CER vs float {CharacterErrorRate:F4} ({FloatCharacters} float chars, float confidence {FloatConfidence:F3})",
            "textdir" => $"top-1 agreement {Agreement:F4} (float accuracy on the true direction {FloatAccuracy:F2})",
            "vad" => $"decision agreement {Agreement:F4}, AUC {Auc:F4} (float speech share {FloatSpeechShare:F2})",
            "dbnet" => $"map IoU {MapIoU:F4} (float share above 0.3: {FloatMapShare:F2})",
            _ => "",
        };
        return $"{Kind}: {Metric()}; output cosine {OutputCosine:F4} (min {OutputCosineMin:F4}); size {ModelBytes:N0}/{FloatBytes:N0} = {SizeRatio:F3}; " +
               $"latency {ModelMs:F2} ms vs float {FloatMs:F2} ms = {SpeedRatio:F2}x speed ({Samples} samples)";
    }
}

/// <summary>Evaluates a model (usually the int8 one) against the float model it came from, on the evaluation samples
/// that <see cref="ArchitectureModelSet"/> wrote beside the float model, with the task metric of its kind.</summary>
public static class ArchitectureModels
{
    public static string KindOf(string floatModelPath) =>
        File.ReadAllText(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(floatModelPath))!, "kind.txt")).Split(' ', '\n')[0].Trim();

    public static string EvaluationFolder(string floatModelPath) => Path.Combine(Path.GetDirectoryName(Path.GetFullPath(floatModelPath))!, "evaluation");
    public static string CalibrationFolder(string floatModelPath) => Path.Combine(Path.GetDirectoryName(Path.GetFullPath(floatModelPath))!, "calibration");

    public static ArchitectureFigures Evaluate(string modelPath, string quantizedPath, int latencyRuns = 20)
    {
        var kind = KindOf(modelPath);
        var samples = SampleFiles.Sets(EvaluationFolder(modelPath)).Select(SampleFiles.Read).ToList();
        using var f = OrtModel.FromFile(modelPath);
        using var q = OrtModel.FromFile(quantizedPath);
        List<float[][]> fo, qo;
        if (kind == "vad") { fo = RunStreams(f, samples); qo = RunStreams(q, samples); }
        else { fo = samples.Select(f.Run).ToList(); qo = samples.Select(q.Run).ToList(); }
        // Per-token outputs of a model with an attention mask (bert11) at the real tokens only, as the guard and
        // Test-QuantizedModel compare them (TokenMask).
        var mask = TokenMask.Find(ModelProto.Parser.ParseFrom(File.ReadAllBytes(modelPath)));
        float[][] Kept(float[][] o, int i) => mask is null ? o
            : mask.Keep(o, mask.Read(new PtqTools.Core.Data.Sample(i, "", Array.Empty<float>(), Array.Empty<int>(), -1) { Inputs = samples[i] }));
        var cos = fo.Select((o, i) => Cosine(Kept(o, i).SelectMany(v => v).ToArray(), Kept(qo[i], i).SelectMany(v => v).ToArray())).ToArray();
        var figures = new ArchitectureFigures
        {
            Kind = kind,
            Samples = samples.Count,
            OutputCosine = cos.Average(),
            OutputCosineMin = cos.Min(),
            FloatBytes = new FileInfo(modelPath).Length,
            ModelBytes = new FileInfo(quantizedPath).Length,
        };
        if (latencyRuns > 0)
        {
            var (fm, qm) = OrtModel.Latencies(f, q, samples[0], latencyRuns);
            figures = figures with { FloatMs = fm, ModelMs = qm };
        }
        switch (kind)
        {
            case "bert11":
            {
                var masks = samples.Select(s => OrtModel.ReadInt64(s.First(t => t.Name == "attention_mask"))).ToList();
                int hidden = Array.IndexOf(f.OutputNames, "last_hidden_state") is var h and >= 0 ? h : 0;
                var fe = fo.Select((o, i) => TaskMetrics.MaskedMeanPooled(o[hidden], masks[i], o[hidden].Length / masks[i].Length)).ToArray();
                var qe = qo.Select((o, i) => TaskMetrics.MaskedMeanPooled(o[hidden], masks[i], o[hidden].Length / masks[i].Length)).ToArray();
                var c = TaskMetrics.CosineToReference(qe, fe);
                return figures with { EmbeddingCosine = c.Average(), EmbeddingCosineMin = c.Min(), Spearman = TaskMetrics.PairwiseSpearman(qe, fe) };
            }
            case "crnn":
            {
                int C = ImageModels.CrnnClasses;
                var fd = fo.Select(o => TaskMetrics.CtcGreedyDecode(o[0], C)).ToArray();
                var qd = qo.Select(o => TaskMetrics.CtcGreedyDecode(o[0], C)).ToArray();
                double conf = fo.Average(o => Enumerable.Range(0, o[0].Length / C).Average(t => o[0].AsSpan(t * C, C).ToArray().Max()));
                return figures with { CharacterErrorRate = TaskMetrics.CharacterErrorRate(qd, fd), FloatCharacters = fd.Sum(d => d.Length), FloatConfidence = conf };
            }
            case "textdir":
                return figures with
                {
                    Agreement = fo.Select((o, i) => ArgMax(o[0]) == ArgMax(qo[i][0]) ? 1.0 : 0).Average(),
                    FloatAccuracy = fo.Select((o, i) => ArgMax(o[0]) == i % 2 ? 1.0 : 0).Average(),
                };
            case "vad":
            {
                var fp = fo.SelectMany(o => o[0]).ToArray();
                var qp = qo.SelectMany(o => o[0]).ToArray();
                var decisions = fp.Select(v => v >= 0.5f).ToArray();
                return figures with
                {
                    Agreement = TaskMetrics.DecisionAgreement(qp, fp, 0.5f),
                    Auc = TaskMetrics.Auc(qp.Select(v => (double)v).ToArray(), decisions),
                    FloatSpeechShare = decisions.Average(d => d ? 1.0 : 0),
                };
            }
            case "dbnet":
                return figures with
                {
                    MapIoU = fo.Select((o, i) => TaskMetrics.MapIoU(qo[i][0], o[0], 0.3f)).Average(),
                    FloatMapShare = fo.Average(o => o[0].Average(v => v >= 0.3f ? 1.0 : 0)),
                };
            default:
                throw new InvalidOperationException($"Unknown model kind '{kind}'.");
        }
    }

    /// <summary>Runs the VAD's evaluation streams chunk by chunk, each model carrying its own state (hn, cn) from one
    /// chunk to the next; the first chunk of a stream takes the state stored in its sample (zeros).</summary>
    static List<float[][]> RunStreams(OrtModel model, List<List<TensorProto>> samples)
    {
        var outputs = new List<float[][]>();
        float[]? h = null, c = null;
        for (int i = 0; i < samples.Count; i++)
        {
            var inputs = samples[i];
            if (i % ArchitectureModelSet.VadChunksPerStream != 0 && h is not null)
                inputs = inputs.Select(t => t.Name == "h" ? SampleFiles.Floats("h", h, 1, 1, VadModel.Hidden) : t.Name == "c" ? SampleFiles.Floats("c", c!, 1, 1, VadModel.Hidden) : t).ToList();
            var o = model.Run(inputs);
            outputs.Add(o);
            h = o[1]; c = o[2];
        }
        return outputs;
    }

    static int ArgMax(float[] v) { int b = 0; for (int i = 1; i < v.Length; i++) if (v[i] > v[b]) b = i; return b; }

    static double Cosine(float[] a, float[] b)
    {
        double ab = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Length; i++) { ab += (double)a[i] * b[i]; aa += (double)a[i] * a[i]; bb += (double)b[i] * b[i]; }
        return aa == 0 || bb == 0 ? (aa == bb ? 1 : 0) : ab / Math.Sqrt(aa * bb);
    }
}
