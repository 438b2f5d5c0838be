using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.TestModels;

/// <summary>A voice-activity detector in the form of Silero VAD: x[1,1,4096] audio, sr int64[1], h and c [1,1,32];
/// Equal(sr, 16000) picks an If branch, each branch with its own weights in Constant nodes: a conv filterbank over the
/// audio (kernel 256, stride 128: 31 frames), power, log, two 1-D convs with Relu, an LSTM whose state comes in as h, c
/// and goes out as hn, cn, a per-frame MatMul head and Sigmoid: speech probability [1,31] per frame.</summary>
public static class VadModel
{
    public const int Samples = 4096, Frames = 31, Hidden = 32, Bands = 24;

    /// <param name="heads">The head of the 16 kHz (then) and 8 kHz (else) branch; null: the branches give logits.</param>
    public static ModelProto Build(Head[]? heads, int seed = 31)
    {
        var b = new OnnxBuilder("vad", 13);
        b.Input("x", new long[] { 1, 1, Samples });
        b.Input("sr", new long[] { 1 }, (int)OnnxDataType.Int64);
        b.Input("h", new long[] { 1, 1, Hidden });
        b.Input("c", new long[] { 1, 1, Hidden });
        var rate = b.InitI64("rate16k", new long[] { 16000 }, 1);
        var cond = b.Node("Equal", new[] { "sr", rate }, "is16k");
        var then = Branch(b, "then_branch", new Weights(seed), 16000, heads?[0]);
        var els = Branch(b, "else_branch", new Weights(seed + 1), 8000, heads?[1]);
        b.NodeMulti("If", new[] { cond }, new[] { heads is null ? "logits" : "prob", "hn", "cn" }, ("then_branch", then), ("else_branch", els));
        b.Output(heads is null ? "logits" : "prob", new long[] { 1, Frames });
        b.Output("hn", new long[] { 1, 1, Hidden });
        b.Output("cn", new long[] { 1, 1, Hidden });
        return b.Model;
    }

    static GraphProto Branch(OnnxBuilder parent, string name, Weights w, int sampleRate, Head? head)
    {
        var b = parent.Subgraph(name);
        using var scope = b.Scope(sampleRate == 16000 ? "vad16k" : "vad8k");
        // Filterbank: Hann-windowed cosines at log-spaced frequencies (an STFT-like conv, as Silero's first layer).
        var fb = new float[Bands * 256];
        for (int k = 0; k < Bands; k++)
        {
            double f = 80 * Math.Pow(sampleRate / 2.0 / 80 * 0.9, k / (double)(Bands - 1)) / sampleRate;
            for (int t = 0; t < 256; t++)
                fb[k * 256 + t] = (float)(0.5 * (1 - Math.Cos(2 * Math.PI * t / 255)) * Math.Cos(2 * Math.PI * f * t) / 8);
        }
        var s = b.Node("Conv", new[] { "x", b.Constant(b.Fresh("filterbank"), fb, Bands, 1, 256) }, null, ("kernel_shape", new long[] { 256 }), ("strides", new long[] { 128 }));
        var power = b.Node("Mul", new[] { s, s });
        var logp = b.Node("Log", new[] { b.Node("Add", new[] { power, b.Constant(b.Fresh("eps"), new[] { 1e-4f }, 1) }) });
        string Conv1(string x, int cin, int cout, double gain) => b.Relu(b.Node("Conv",
            new[] { x, b.Constant(b.Fresh("conv_w"), w.He(cout * cin * 3, cin * 3, gain), cout, cin, 3), b.Constant(b.Fresh("conv_b"), w.Normals(cout, 0.1), cout) },
            null, ("kernel_shape", new long[] { 3 }), ("pads", new long[] { 1, 1 })));
        // The log-power features have a mean near -5: the first conv sees them centred by a BN-like affine.
        var norm = b.Node("Add", new[] { b.Node("Mul", new[] { logp, b.Constant(b.Fresh("feat_scale"), new[] { 0.3f }, 1) }), b.Constant(b.Fresh("feat_shift"), new[] { 1.5f }, 1) });
        var f1 = Conv1(norm, Bands, 32, 1.0);
        var f2 = Conv1(f1, 32, 32, 1.0);
        var seq = b.Node("Transpose", new[] { f2 }, null, ("perm", new long[] { 2, 0, 1 }));   // [31,1,32]
        var lw = b.Constant(b.Fresh("lstm_w"), w.Normals(4 * Hidden * 32, 1.0 / Math.Sqrt(32)), 1, 4 * Hidden, 32);
        var lr = b.Constant(b.Fresh("lstm_r"), w.Normals(4 * Hidden * Hidden, 0.8 / Math.Sqrt(Hidden)), 1, 4 * Hidden, Hidden);
        var lb = b.Constant(b.Fresh("lstm_b"), w.Normals(8 * Hidden, 0.1), 1, 8 * Hidden);
        var outs = b.NodeMulti("LSTM", new[] { seq, lw, lr, lb, "", "h", "c" }, new[] { b.Fresh("lstm_y"), b.Fresh("lstm_yh"), b.Fresh("lstm_yc") }, ("hidden_size", (long)Hidden));
        var y = b.Node("Reshape", new[] { outs[0], b.ConstantI64(b.Fresh("shape"), new long[] { Frames, Hidden }, 2) });
        var (hw, hb) = (head ?? Head.Raw).Apply(w.He(Hidden, Hidden, 1.0), w.Normals(1, 0.05), 1);
        var logit = b.Node("Add", new[] { b.Node("MatMul", new[] { y, b.Constant(b.Fresh("head_w"), hw, Hidden, 1) }), b.Constant(b.Fresh("head_b"), hb, 1) });
        var flat = b.Node("Reshape", new[] { logit, b.ConstantI64(b.Fresh("shape"), new long[] { 1, Frames }, 2) });
        var result = head is null ? flat : b.Node("Sigmoid", new[] { flat });
        b.Graph.Output.Add(OnnxBuilder.Value(result, new long[] { 1, Frames }));
        b.Graph.Output.Add(OnnxBuilder.Value(outs[1], new long[] { 1, 1, Hidden }));
        b.Graph.Output.Add(OnnxBuilder.Value(outs[2], new long[] { 1, 1, Hidden }));
        return b.Graph;
    }
}
