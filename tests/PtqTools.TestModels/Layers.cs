namespace PtqTools.TestModels;

/// <summary>The layer blocks the image models are made of (weights as initializers, random and seeded).</summary>
internal static class Layers
{
    public static string Conv(this OnnxBuilder b, Weights w, string x, int cin, int cout, int k, (int H, int W) stride, int group = 1, bool bias = true, double gain = 1, int kw = 0)
    {
        kw = kw == 0 ? k : kw;
        int fanIn = cin / group * k * kw;
        var wn = b.Init(b.Fresh("conv_w"), w.He(cout * (cin / group) * k * kw, fanIn, gain), cout, cin / group, k, kw);
        var inputs = new List<string> { x, wn };
        if (bias) inputs.Add(b.Init(b.Fresh("conv_b"), w.Normals(cout, 0.05), cout));
        return b.Node("Conv", inputs.ToArray(), null, ("kernel_shape", new long[] { k, kw }), ("strides", new long[] { stride.H, stride.W }),
            ("pads", new long[] { k / 2, kw / 2, k / 2, kw / 2 }), ("group", (long)group));
    }

    public static string BatchNorm(this OnnxBuilder b, Weights w, string x, int c)
    {
        var gamma = b.Init(b.Fresh("bn_gamma"), w.Uniform(c, 0.7f, 1.3f), c);
        var beta = b.Init(b.Fresh("bn_beta"), w.Normals(c, 0.1), c);
        var mean = b.Init(b.Fresh("bn_mean"), w.Normals(c, 0.1), c);
        var var = b.Init(b.Fresh("bn_var"), w.Uniform(c, 0.6f, 1.6f), c);
        return b.Node("BatchNormalization", new[] { x, gamma, beta, mean, var }, null, ("epsilon", 1e-5f));
    }

    public static string HardSwish(this OnnxBuilder b, string x) => b.Node("HardSwish", new[] { x });

    public static string HardSigmoid(this OnnxBuilder b, string x) => b.Node("HardSigmoid", new[] { x }, null, ("alpha", 1f / 6), ("beta", 0.5f));

    public static string Relu(this OnnxBuilder b, string x) => b.Node("Relu", new[] { x });

    /// <summary>Conv, BatchNormalization, HardSwish.</summary>
    public static string ConvBnHs(this OnnxBuilder b, Weights w, string x, int cin, int cout, int k, (int, int) stride, int group = 1)
        => b.HardSwish(b.BatchNorm(w, b.Conv(w, x, cin, cout, k, stride, group, bias: false), cout));

    /// <summary>Squeeze-excitation: GlobalAveragePool, 1x1 conv, Relu, 1x1 conv, HardSigmoid, Mul.</summary>
    public static string SqueezeExcite(this OnnxBuilder b, Weights w, string x, int c)
    {
        using var scope = b.Scope("se");
        var g = b.Node("GlobalAveragePool", new[] { x });
        var s = b.Relu(b.Conv(w, g, c, c / 4, 1, (1, 1)));
        var e = b.HardSigmoid(b.Conv(w, s, c / 4, c, 1, (1, 1), gain: 0.5));
        return b.Node("Mul", new[] { x, e });
    }

    /// <summary>Depthwise-separable block: depthwise 3x3 (stride), BN, HardSwish, [SE], pointwise 1x1, BN, HardSwish.</summary>
    public static string DepthwiseSeparable(this OnnxBuilder b, Weights w, string x, int cin, int cout, (int, int) stride, bool se)
    {
        string d;
        using (b.Scope("dw")) d = b.ConvBnHs(w, x, cin, cin, 3, stride, group: cin);
        if (se) d = b.SqueezeExcite(w, d, cin);
        using (b.Scope("pw")) return b.ConvBnHs(w, d, cin, cout, 1, (1, 1));
    }
}
