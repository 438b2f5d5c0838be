using Onnx;

namespace PtqTools.TestModels;

/// <summary>How the last layer of a head is set so that the random model answers like a trained one: logits become
/// Scale * (logits + Shift[class]) (per class; one entry shifts every class).</summary>
public sealed record Head(float Scale, float[] Shift, float[]? Weight = null)
{
    public static readonly Head Raw = new(1, new[] { 0f });

    public float ShiftOf(int c) => Shift.Length == 1 ? Shift[0] : Shift[c];

    /// <summary>Applies the head to a weight [in, out] (out the fast axis) and a bias [out].</summary>
    public (float[] W, float[] B) Apply(float[] w, float[] bias, int outputs)
    {
        var w2 = (Weight ?? w).Select(v => v * Scale).ToArray();
        // A head given its weight (fitted to the features) has no bias but its shift.
        var b2 = bias.Select((v, c) => Scale * ((Weight is null ? v : 0) + ShiftOf(c % outputs))).ToArray();
        return (w2, b2);
    }
}

/// <summary>The image models of issue 17, in the form their exporters write.</summary>
public static class ImageModels
{
    public const int CrnnClasses = 40;   // blank (0) and 39 characters
    public const int CrnnFrames = 32;
    public const string CrnnCharset = "0123456789abcdefghijklmnopqrstuvwxyz.-:";

    /// <summary>CRNN text recognizer (PaddleOCR-like): x[1,3,32,128] -> depthwise-separable blocks with BN, HardSwish,
    /// squeeze-excitation (HardSigmoid gate) -> MaxPool over height -> [1,32,96] -> MatMul+HardSwish neck -> MatMul to
    /// 40 classes -> Softmax (or the logits, when <paramref name="head"/> is null, for setting the head).</summary>
    public static ModelProto Crnn(Head? head, int seed = 17)
    {
        var w = new Weights(seed);
        var b = new OnnxBuilder("crnn", 14);
        var x = b.Input("x", new long[] { 1, 3, 32, 128 });
        string h;
        using (b.Scope("stem")) h = b.ConvBnHs(w, x, 3, 16, 3, (2, 2));                     // 16 x 16 x 64
        using (b.Scope("block1")) h = b.DepthwiseSeparable(w, h, 16, 32, (1, 1), se: false);  // 32 x 16 x 64
        using (b.Scope("block2")) h = b.DepthwiseSeparable(w, h, 32, 48, (2, 2), se: true);   // 48 x 8 x 32
        using (b.Scope("block3")) h = b.DepthwiseSeparable(w, h, 48, 64, (2, 1), se: true);   // 64 x 4 x 32
        using (b.Scope("block4")) h = b.DepthwiseSeparable(w, h, 64, 96, (2, 1), se: false);  // 96 x 2 x 32
        using var headScope = b.Scope("head");
        h = b.Node("MaxPool", new[] { h }, null, ("kernel_shape", new long[] { 2, 1 }), ("strides", new long[] { 2, 1 }));   // 96 x 1 x 32
        h = b.Node("Squeeze", new[] { h, b.InitI64("squeeze_axes", new long[] { 2 }, 1) });   // [1,96,32]
        h = b.Node("Transpose", new[] { h }, null, ("perm", new long[] { 0, 2, 1 }));          // [1,32,96]
        var neck = b.Node("Add", new[] { b.Node("MatMul", new[] { h, b.Init("neck_w", w.He(96 * 64, 96), 96, 64) }), b.Init("neck_b", w.Normals(64, 0.05), 64) });
        neck = b.Node("HardSwish", new[] { neck }, "head_in");
        var (hw, hb) = (head ?? Head.Raw).Apply(w.He(64 * CrnnClasses, 64, 0.5), w.Normals(CrnnClasses, 0.05), CrnnClasses);
        var logits = b.Node("Add", new[] { b.Node("MatMul", new[] { neck, b.Init("head_w", hw, 64, CrnnClasses) }), b.Init("head_b", hb, CrnnClasses) },
            head is null ? "logits" : null);
        if (head is null) { b.Output("logits", new long[] { 1, CrnnFrames, CrnnClasses }); b.Output("head_in", null); return b.Model; }
        b.Node("Softmax", new[] { logits }, "probs", ("axis", -1L));
        b.Output("probs", new long[] { 1, CrnnFrames, CrnnClasses });
        return b.Model;
    }

    /// <summary>Text-direction classifier (0 or 180 degrees) of the same family: x[1,3,48,192] -> blocks with SE ->
    /// GlobalAveragePool -> Flatten -> Gemm 2 -> Softmax.</summary>
    public static ModelProto DirectionClassifier(Head? head, int seed = 23)
    {
        var w = new Weights(seed);
        var b = new OnnxBuilder("textdir", 14);
        var x = b.Input("x", new long[] { 1, 3, 48, 192 });
        string h;
        using (b.Scope("stem")) h = b.ConvBnHs(w, x, 3, 16, 3, (2, 2));                     // 16 x 24 x 96
        using (b.Scope("block1")) h = b.DepthwiseSeparable(w, h, 16, 32, (2, 2), se: true);   // 32 x 12 x 48
        using (b.Scope("block2")) h = b.DepthwiseSeparable(w, h, 32, 48, (2, 2), se: true);   // 48 x 6 x 24
        using (b.Scope("block3")) h = b.DepthwiseSeparable(w, h, 48, 64, (2, 2), se: false);  // 64 x 3 x 12
        using var headScope = b.Scope("head");
        h = b.Node("GlobalAveragePool", new[] { h });
        h = b.Node("Flatten", new[] { h }, "head_in");
        var (hw, hb) = (head ?? Head.Raw).Apply(w.He(64 * 2, 64, 1.0), w.Normals(2, 0.05), 2);
        var logits = b.Node("Gemm", new[] { h, b.Init("fc_w", hw, 64, 2), b.Init("fc_b", hb, 2) }, head is null ? "logits" : null);
        if (head is null) { b.Output("logits", new long[] { 1, 2 }); b.Output("head_in", null); return b.Model; }
        b.Node("Softmax", new[] { logits }, "probs", ("axis", -1L));
        b.Output("probs", new long[] { 1, 2 });
        return b.Model;
    }

    /// <summary>DBNet text detector: x[1,3,160,160] -> 4 strided conv stages -> FPN (1x1 laterals, Resize x2 and Add)
    /// -> 3x3 convs, Resize of each scale to 1/4 and Concat -> conv, BN, Relu -> ConvTranspose x2, BN, Relu ->
    /// ConvTranspose x2 -> Sigmoid: probability map [1,1,160,160] (logits when <paramref name="head"/> is null).</summary>
    public static ModelProto DbNet(Head? head, int seed = 29)
    {
        var w = new Weights(seed);
        var b = new OnnxBuilder("dbnet", 13);
        var x = b.Input("x", new long[] { 1, 3, 160, 160 });
        var backbone = b.Scope("backbone");
        var c2 = b.Relu(b.BatchNorm(w, b.Conv(w, x, 3, 16, 3, (2, 2), bias: false), 16));   // 16 x 80
        c2 = b.Relu(b.BatchNorm(w, b.Conv(w, c2, 16, 24, 3, (2, 2), bias: false), 24));     // 24 x 40
        var c3 = b.Relu(b.Conv(w, c2, 24, 32, 3, (2, 2)));                                  // 32 x 20
        var c4 = b.Relu(b.Conv(w, c3, 32, 48, 3, (2, 2)));                                  // 48 x 10
        var c5 = b.Relu(b.Conv(w, c4, 48, 64, 3, (2, 2)));                                  // 64 x 5
        var roi = b.Init("roi", Array.Empty<float>(), 0);
        string Up(string t, float s) => b.Node("Resize", new[] { t, roi, b.Init(b.Fresh("scales"), new[] { 1f, 1f, s, s }, 4) }, null, ("mode", "nearest"));
        backbone.Dispose();
        var neck = b.Scope("fpn");
        var in5 = b.Conv(w, c5, 64, 32, 1, (1, 1), bias: false);
        var in4 = b.Conv(w, c4, 48, 32, 1, (1, 1), bias: false);
        var in3 = b.Conv(w, c3, 32, 32, 1, (1, 1), bias: false);
        var in2 = b.Conv(w, c2, 24, 32, 1, (1, 1), bias: false);
        var p4 = b.Node("Add", new[] { in4, Up(in5, 2) });
        var p3 = b.Node("Add", new[] { in3, Up(p4, 2) });
        var p2 = b.Node("Add", new[] { in2, Up(p3, 2) });
        var o5 = Up(b.Conv(w, in5, 32, 8, 3, (1, 1), bias: false), 8);
        var o4 = Up(b.Conv(w, p4, 32, 8, 3, (1, 1), bias: false), 4);
        var o3 = Up(b.Conv(w, p3, 32, 8, 3, (1, 1), bias: false), 2);
        var o2 = b.Conv(w, p2, 32, 8, 3, (1, 1), bias: false);
        var fuse = b.Node("Concat", new[] { o5, o4, o3, o2 }, null, ("axis", 1L));          // 32 x 40
        neck.Dispose();
        using var headScope = b.Scope("head");
        var hd = b.Relu(b.BatchNorm(w, b.Conv(w, fuse, 32, 16, 3, (1, 1), bias: false), 16));
        var t1w = b.Init("up1_w", w.He(16 * 16 * 4, 16 * 4), 16, 16, 2, 2);
        var t1b = b.Init("up1_b", w.Normals(16, 0.05), 16);
        hd = b.Node("Relu", new[] { b.BatchNorm(w, b.Node("ConvTranspose", new[] { hd, t1w, t1b }, null, ("kernel_shape", new long[] { 2, 2 }), ("strides", new long[] { 2, 2 })), 16) }, "head_in");
        var (hw, hb) = (head ?? Head.Raw).Apply(w.He(16 * 4, 16 * 4, 0.5), w.Normals(1, 0.05), 1);
        var logits = b.Node("ConvTranspose", new[] { hd, b.Init("up2_w", hw, 16, 1, 2, 2), b.Init("up2_b", hb, 1) }, head is null ? "logits" : null,
            ("kernel_shape", new long[] { 2, 2 }), ("strides", new long[] { 2, 2 }));
        if (head is null) { b.Output("logits", new long[] { 1, 1, 160, 160 }); b.Output("head_in", null); return b.Model; }
        b.Node("Sigmoid", new[] { logits }, "maps");
        b.Output("maps", new long[] { 1, 1, 160, 160 });
        return b.Model;
    }
}
