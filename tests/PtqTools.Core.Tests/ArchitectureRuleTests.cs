using Onnx;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>Each architecture rule on a small model of its class: the layers it names stay in float with the rule in
/// their reason, the layers around them are still quantized, and skipping the rule quantizes them again.</summary>
public class ArchitectureRuleTests
{
    static QuantizationPlan Plan(ModelBuilder b, params string[] skip)
    {
        var options = new QuantizationOptions { SkipRules = skip };
        options.Validate();
        return QuantizationPlan.Create(new GraphView(b.Model.Graph), null, options.FloatReason);
    }

    static LayerDecision Decision(QuantizationPlan plan, string layer) => plan.Decisions.Single(d => d.Layer == layer);

    static void KeptBy(QuantizationPlan plan, string rule, params string[] layers)
    {
        foreach (var layer in layers)
        {
            var d = Decision(plan, layer);
            Assert.False(d.Quantized, $"{layer} should be kept in float by {rule}: {d.Reason}");
            Assert.Contains($"(rule {rule})", d.Reason);
        }
    }

    static void Quantized(QuantizationPlan plan, params string[] layers)
    {
        foreach (var layer in layers) Assert.True(Decision(plan, layer).Quantized, $"{layer}: {Decision(plan, layer).Reason}");
    }

    /// <summary>Attention with an additive mask as opset-11 BERT exports build it: (1 - float(mask)) * -10000, added to
    /// the scores before Softmax.</summary>
    static ModelBuilder Attention()
    {
        var r = new Random(3);
        var b = new ModelBuilder(11, 6, "attention")
            .Input("x", 1, 8, 16)
            .RandomInit(r, "wq", 0.3f, 16, 16).RandomInit(r, "wk", 0.3f, 16, 16).RandomInit(r, "wv", 0.3f, 16, 16)
            .Init("one", new[] { 1f }).Init("big", new[] { -10000f }).Init("scale", new[] { 0.25f });
        b.Graph.Input.Add(ModelBuilder.Value("mask", new long[] { 1, 8 }, (int)OnnxDataType.Int64));
        return b
            .Node("MatMul", new[] { "x", "wq" }, new[] { "q" }, "q_proj")
            .Node("MatMul", new[] { "x", "wk" }, new[] { "k" }, "k_proj")
            .Node("MatMul", new[] { "x", "wv" }, new[] { "v" }, "v_proj")
            .Node("Transpose", new[] { "k" }, new[] { "kt" }, "k_t", ("perm", new long[] { 0, 2, 1 }))
            .Node("MatMul", new[] { "q", "kt" }, new[] { "s" }, "scores")
            .Node("Mul", new[] { "s", "scale" }, new[] { "ss" }, "scale_scores")
            .Node("Cast", new[] { "mask" }, new[] { "mf" }, "mask_cast", ("to", (long)OnnxDataType.Float))
            .Node("Sub", new[] { "one", "mf" }, new[] { "inv" }, "mask_invert")
            .Node("Mul", new[] { "inv", "big" }, new[] { "madd" }, "mask_scale")
            .Node("Add", new[] { "ss", "madd" }, new[] { "masked" }, "mask_add")
            .Node("Softmax", new[] { "masked" }, new[] { "p" }, "softmax", ("axis", -1L))
            .Node("MatMul", new[] { "p", "v" }, new[] { "y" }, "context")
            .Output("y", 1, 8, 16);
    }

    [Fact]
    public void AttentionMask_AndSoftmax_StayFloat_ProjectionsAreQuantized()
    {
        var plan = Plan(Attention());
        KeptBy(plan, "AttentionMask", "mask_scale", "mask_add");
        KeptBy(plan, "Softmax", "softmax");
        Quantized(plan, "q_proj", "k_proj", "v_proj", "scores", "scale_scores", "context");
        var skipped = Plan(Attention(), "AttentionMask", "Softmax", "LargeConstant");
        Quantized(skipped, "mask_add", "softmax");
    }

    [Fact]
    public void Normalization_AndGelu_AsOpset11Exports_StayFloat_AndTheMatMulAfterGelu()
    {
        var r = new Random(4);
        var b = new ModelBuilder(11, 6, "ffn")
            .Input("x", 1, 4, 8)
            .RandomInit(r, "w1", 0.3f, 8, 32).RandomInit(r, "w2", 0.3f, 32, 8)
            .Init("two", new[] { 2f }).Init("eps", new[] { 1e-12f }).RandomInit(r, "gamma", 1f, 8).RandomInit(r, "beta", 0.2f, 8)
            .Init("sqrt2", new[] { 1.4142135f }).Init("one", new[] { 1f }).Init("half", new[] { 0.5f })
            .Node("ReduceMean", new[] { "x" }, new[] { "m" }, "ln_mean", ("axes", new long[] { -1 }))
            .Node("Sub", new[] { "x", "m" }, new[] { "d" }, "ln_sub")
            .Node("Pow", new[] { "d", "two" }, new[] { "d2" }, "ln_pow")
            .Node("ReduceMean", new[] { "d2" }, new[] { "var" }, "ln_var", ("axes", new long[] { -1 }))
            .Node("Add", new[] { "var", "eps" }, new[] { "ve" }, "ln_eps")
            .Node("Sqrt", new[] { "ve" }, new[] { "sd" }, "ln_sqrt")
            .Node("Div", new[] { "d", "sd" }, new[] { "n" }, "ln_div")
            .Node("Mul", new[] { "n", "gamma" }, new[] { "ng" }, "ln_scale")
            .Node("Add", new[] { "ng", "beta" }, new[] { "ln" }, "ln_shift")
            .Node("MatMul", new[] { "ln", "w1" }, new[] { "h" }, "ffn_up")
            .Node("Div", new[] { "h", "sqrt2" }, new[] { "hs" }, "gelu_div")
            .Node("Erf", new[] { "hs" }, new[] { "e" }, "gelu_erf")
            .Node("Add", new[] { "e", "one" }, new[] { "e1" }, "gelu_add")
            .Node("Mul", new[] { "h", "e1" }, new[] { "he" }, "gelu_mul")
            .Node("Mul", new[] { "he", "half" }, new[] { "g" }, "gelu_half")
            .Node("MatMul", new[] { "g", "w2" }, new[] { "y" }, "ffn_down")
            .Output("y", 1, 4, 8);
        var plan = Plan(b);
        KeptBy(plan, "Normalization", "ln_eps", "ln_scale", "ln_shift");
        KeptBy(plan, "Gelu", "gelu_add", "gelu_mul", "gelu_half");
        KeptBy(plan, "GeluOutput", "ffn_down");
        Quantized(plan, "ffn_up");
        Quantized(Plan(b, "*"), "ln_eps", "ln_scale", "gelu_mul", "ffn_down");
    }

    [Fact]
    public void SqueezeExcitation_AndHardSwishGate_StayFloat_TheFeatureConvsAreQuantized()
    {
        var r = new Random(5);
        var b = new ModelBuilder(13, 7, "se")
            .Input("x", 1, 8, 6, 6)
            .RandomInit(r, "w0", 0.3f, 8, 8, 3, 3).RandomInit(r, "w1", 0.3f, 2, 8, 1, 1).RandomInit(r, "b1", 0.1f, 2)
            .RandomInit(r, "w2", 0.3f, 8, 2, 1, 1).RandomInit(r, "b2", 0.1f, 8).RandomInit(r, "w3", 0.3f, 8, 8, 1, 1)
            .Node("Conv", new[] { "x", "w0" }, new[] { "c0" }, "conv0", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("HardSigmoid", new[] { "c0" }, new[] { "hs" }, "hswish_gate", ("alpha", 1f / 6), ("beta", 0.5f))
            .Node("Mul", new[] { "c0", "hs" }, new[] { "a0" }, "hswish_mul")
            .Node("GlobalAveragePool", new[] { "a0" }, new[] { "p" }, "se_pool")
            .Node("Conv", new[] { "p", "w1", "b1" }, new[] { "s1" }, "se_reduce")
            .Node("Relu", new[] { "s1" }, new[] { "s1r" }, "se_relu")
            .Node("Conv", new[] { "s1r", "w2", "b2" }, new[] { "s2" }, "se_expand")
            .Node("HardSigmoid", new[] { "s2" }, new[] { "gate" }, "se_gate", ("alpha", 0.2f), ("beta", 0.5f))
            .Node("Mul", new[] { "a0", "gate" }, new[] { "a1" }, "se_scale")
            .Node("Conv", new[] { "a1", "w3" }, new[] { "y" }, "conv1")
            .Output("y", 1, 8, 6, 6);
        var plan = Plan(b);
        KeptBy(plan, "SqueezeExcitation", "se_scale", "se_reduce", "se_expand");
        KeptBy(plan, "Gate", "hswish_mul");
        Quantized(plan, "conv0", "conv1");
        Quantized(Plan(b, "SqueezeExcitation", "Gate"), "se_scale", "se_reduce", "se_expand", "hswish_mul");
    }

    [Fact]
    public void RecurrentState_OpsOnTheStateStayFloat()
    {
        var r = new Random(6);
        var b = new ModelBuilder(13, 7, "lstm")
            .Input("x", 5, 1, 4).Input("h0", 1, 1, 3)
            .RandomInit(r, "W", 0.3f, 1, 12, 4).RandomInit(r, "R", 0.3f, 1, 12, 3).RandomInit(r, "wo", 0.3f, 3, 3)
            .Init("c0", new float[3], 1, 1, 3).Init("k", new[] { 0.5f })
            .Node("Mul", new[] { "h0", "k" }, new[] { "h0s" }, "state_in")
            .Node("LSTM", new[] { "x", "W", "R", "", "", "h0s", "c0" }, new[] { "Y", "Yh", "Yc" }, "lstm", ("hidden_size", 3L))
            .Node("Add", new[] { "Yh", "Yc" }, new[] { "hc" }, "state_out")
            .Node("Squeeze", new[] { "Y" }, new[] { "ys" }, "squeeze", ("axes", new long[] { 1 }))
            .Node("MatMul", new[] { "ys", "wo" }, new[] { "y" }, "head")
            .Output("y").Output("hc");
        var plan = Plan(b);
        KeptBy(plan, "RecurrentState", "state_in", "state_out");
        Quantized(plan, "head");
    }

    [Fact]
    public void LogDomain_PowerFeaturesBeforeLog_StayFloat()
    {
        var r = new Random(7);
        var b = new ModelBuilder(13, 7, "logpower")
            .Input("x", 1, 4, 16)
            .RandomInit(r, "w", 0.3f, 8, 4, 9).Init("eps", new[] { 1e-6f }).RandomInit(r, "w2", 0.3f, 8, 8, 5)
            .Node("Conv", new[] { "x", "w" }, new[] { "f" }, "filterbank", ("pads", new long[] { 4, 4 }))
            .Node("Mul", new[] { "f", "f" }, new[] { "p" }, "power")
            .Node("Add", new[] { "p", "eps" }, new[] { "pe" }, "power_eps")
            .Node("Log", new[] { "pe" }, new[] { "lp" }, "log")
            .Node("Conv", new[] { "lp", "w2" }, new[] { "y" }, "conv", ("pads", new long[] { 2, 2 }))
            .Output("y", 1, 8, 16);
        var plan = Plan(b);
        KeptBy(plan, "LogDomain", "power", "power_eps");
        Quantized(plan, "filterbank", "conv");
    }

    [Fact]
    public void ConstantDominatedRange_ReadsTheHistogram()
    {
        // Half the values at -10000 (a mask fill), the rest within a few bins near zero.
        var h = new long[2048];
        h[0] = 5000;
        for (int i = 2040; i < 2048; i++) h[i] = 600;
        var s = new TensorStatistics { Tensor = "t", Histogram = h, HistogramStart = -1250, HistogramExponent = 3, RangeMin = -10000, RangeMax = 4 };
        Assert.Contains("sit at the minimum", ArchitectureRules.DominatedRange(s));
        // Spread values: no rule.
        var flat = Enumerable.Repeat(10L, 2048).ToArray();
        Assert.Null(ArchitectureRules.DominatedRange(new TensorStatistics { Tensor = "u", Histogram = flat, RangeMin = -8, RangeMax = 8 }));
    }

    /// <summary>A mobile CNN: a 3x3 stem on an RGB image (27 products per output), a depthwise 3x3 (9), a 1x1
    /// pointwise on 8 channels, a 3x3 on 8 channels (72) and a 7x7 stem on RGB (147, ResNet's).</summary>
    [Fact]
    public void ShallowConv_KeepsDepthwiseAndRgbStemsFloat_NotPointwiseOrDeepConvs()
    {
        var r = new Random(9);
        var b = new ModelBuilder(13, 7, "mobile")
            .Input("x", 1, 3, 16, 16)
            .RandomInit(r, "ws", 0.3f, 8, 3, 3, 3).RandomInit(r, "wd", 0.3f, 8, 1, 3, 3).RandomInit(r, "wp", 0.3f, 8, 8, 1, 1)
            .RandomInit(r, "w3", 0.3f, 8, 8, 3, 3).RandomInit(r, "w7", 0.3f, 8, 3, 7, 7)
            .Node("Conv", new[] { "x", "ws" }, new[] { "s" }, "stem3x3", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Conv", new[] { "s", "wd" }, new[] { "d" }, "depthwise", ("pads", new long[] { 1, 1, 1, 1 }), ("group", 8L))
            .Node("Conv", new[] { "d", "wp" }, new[] { "p" }, "pointwise")
            .Node("Conv", new[] { "p", "w3" }, new[] { "c3" }, "conv3x3", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Conv", new[] { "x", "w7" }, new[] { "c7" }, "stem7x7", ("pads", new long[] { 3, 3, 3, 3 }))
            .Node("Add", new[] { "c3", "c7" }, new[] { "y" }, "sum")
            .Output("y", 1, 8, 16, 16);
        // A speed rule: it does not change what is calibrated (the graph rules' plan), only what is written.
        var plan = Plan(b);
        Quantized(plan, "stem3x3", "depthwise", "pointwise", "conv3x3", "stem7x7");
        var shallow = RegionCost.ShallowLayers(new GraphView(b.Model.Graph), plan);
        Assert.Equal(new[] { "depthwise", "stem3x3" }, shallow.Keys.Order(StringComparer.Ordinal));
        Assert.Contains("(rule ShallowConv): each output sums only 27 products", shallow["stem3x3"]);
        Assert.Contains("(rule ShallowConv): each output sums only 9 products", shallow["depthwise"]);
    }

    /// <summary>SlowRegion: a lone small 1x1 conv between float ops (its Q/DQ cost more than its products save), and a
    /// lone pool, stay float; a deep 3x3 conv on a larger map keeps int8; element counts come from the statistics.</summary>
    [Fact]
    public void SlowRegion_SmallIslandsStayFloat_DeepConvsKeepInt8()
    {
        var r = new Random(11);
        var b = new ModelBuilder(13, 7, "islands")
            .Input("x", 1, 16, 12, 12)
            .RandomInit(r, "wp", 0.3f, 16, 16, 1, 1).RandomInit(r, "wd", 0.3f, 64, 16, 3, 3)
            .Node("Conv", new[] { "x", "wp" }, new[] { "p" }, "pointwise")
            .Node("Sigmoid", new[] { "p" }, new[] { "ps" }, "act")
            .Node("Conv", new[] { "ps", "wd" }, new[] { "d" }, "deep", ("pads", new long[] { 1, 1, 1, 1 }))
            .Node("Tanh", new[] { "d" }, new[] { "dt" }, "act2")
            .Node("MaxPool", new[] { "dt" }, new[] { "y" }, "pool", ("kernel_shape", new long[] { 2, 2 }), ("strides", new long[] { 2, 2 }))
            .Output("y", 1, 64, 6, 6);
        var options = new QuantizationOptions();
        options.Validate();
        var graph = new GraphView(b.Model.Graph);
        var plan = QuantizationPlan.Create(graph, null, options.FloatReason);
        Quantized(plan, "pointwise", "deep", "pool");
        var elements = new Dictionary<string, long> { ["x"] = 16 * 144, ["p"] = 16 * 144, ["ps"] = 16 * 144, ["d"] = 64 * 144, ["dt"] = 64 * 144, ["y"] = 64 * 36 };
        var stats = elements.Select(e => new TensorStatistics { Tensor = e.Key, SampleCount = 4, ElementCount = 4 * e.Value }).ToList();
        var slow = RegionCost.SlowLayers(graph, plan, stats);
        Assert.Contains("pointwise", slow.Keys);
        Assert.Contains("pool", slow.Keys);
        Assert.DoesNotContain("deep", slow.Keys);
        Assert.Contains("(rule SlowRegion)", slow["pointwise"]);
        // pointwise: 2,304 outputs x 16 products save ~0.3 us; its Q and DQ (2 x 2,304 elements) cost ~2.6 us.
        Assert.Contains("save about 0.3 us", slow["pointwise"]);
        // Without element counts nothing is estimated, and nothing is kept in float.
        Assert.Empty(RegionCost.SlowLayers(graph, plan, Array.Empty<TensorStatistics>()));
    }

    [Fact]
    public void UnknownRule_IsRefused_WithTheRuleNames()
    {
        var ex = Check.Throws("UnknownRule", () => new QuantizationOptions { SkipRules = new[] { "Sofmax" } }.Validate());
        Assert.Contains("Softmax", ex.Message);
    }

    [Fact]
    public void TheRules_AreRecordedInTheOptions_StaticOnly()
    {
        Assert.Contains(";rules=" + ArchitectureRules.Version, new QuantizationOptions().ToString());
        Assert.Contains("skip:Gate,Softmax", new QuantizationOptions { SkipRules = new[] { "Softmax", "Gate" } }.ToString());
        Assert.DoesNotContain("rules=", new QuantizationOptions { Mode = QuantMode.Dynamic }.ToString());
    }
}
