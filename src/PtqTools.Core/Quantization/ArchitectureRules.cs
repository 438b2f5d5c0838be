using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>
/// One named failure mode of real architectures that static int8 quantization does not survive, and the layers it
/// keeps in float by default. <see cref="Match"/> looks at the graph only; <see cref="ArchitectureRules.RangeRule"/>
/// looks at calibration statistics.
/// </summary>
public sealed class ArchitectureRule
{
    public ArchitectureRule(string name, string description, Func<NodeProto, GraphView, string?> match)
    {
        Name = name;
        Description = description;
        Match = match;
    }

    /// <summary>The stable name: in layer decisions, in -SkipRule, and in the options string.</summary>
    public string Name { get; }

    /// <summary>What the rule recognizes and why such layers stay float.</summary>
    public string Description { get; }

    /// <summary>Why this node stays in float under the rule (the decision's reason after the rule's name), or null.</summary>
    public Func<NodeProto, GraphView, string?> Match { get; }

    public override string ToString() => Name;
}

/// <summary>
/// The architecture rules, in one place: patterns of transformer, mobile CNN, recurrent and detection models whose
/// layers lose the model's task in static int8 (the speed rules, which keep in float what would run slower in int8 than in float, are <see cref="RegionCost"/>'s) (as ONNX Runtime's op exclusions and transformer recipes, NNCF's
/// model-type ignored patterns and INC's recipes keep them in float). Static mode applies every rule unless the
/// options skip it; each kept layer's decision names its rule.
/// </summary>
public static class ArchitectureRules
{
    /// <summary>The version of the rule set, recorded in the options string: a model written under other rules is not
    /// up to date.</summary>
    public const string Version = "2";

    /// <summary>A constant of at least this magnitude in an Add or Mul (an attention mask's -10000, a padding fill)
    /// sets its range, and an 8-bit step of magnitude/128 erases every ordinary value.</summary>
    public const float LargeConstant = 1000f;

    /// <summary>Ops that carry a mask from the model's inputs to the scores without computing anything else.</summary>
    static readonly HashSet<string> MaskOps = new(StringComparer.Ordinal)
    {
        "Cast", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Sub", "Mul", "Add", "Where", "Not", "Equal", "Less", "Greater",
        "Tile", "Slice", "Concat", "Identity", "Neg", "Transpose",
    };

    public static readonly IReadOnlyList<ArchitectureRule> All = new[]
    {
        new ArchitectureRule("AttentionMask",
            "An Add or Mul that builds or applies an additive attention mask ((1 - mask) x -10000 from a model input): the scores and the mask cannot share one 8-bit range.",
            (node, g) => node.OpType is "Add" or "Mul" && (MaskFromInputs(g, node.Output[0]) || node.Input.Any(i => MaskFromInputs(g, i)))
                ? "it builds or applies an additive attention mask (large constants from a model input), whose range would erase the scores" : null),
        new ArchitectureRule("LargeConstant",
            $"An Add or Mul with a constant operand of magnitude {LargeConstant:0} or more: that constant, not the data, would set the range.",
            (node, g) => node.OpType is "Add" or "Mul" && node.Input.Select(i => ConstantMagnitude(g, i)).Max() is >= LargeConstant and var m
                ? FormattableString.Invariant($"its constant operand reaches {m:G3}, which would set the range and erase the data") : null),
        new ArchitectureRule("Softmax",
            "Softmax: its input range holds masks and outliers, and its outputs are probabilities as small as 1/n that an output step of 1/255 cannot tell apart.",
            (node, _) => node.OpType == "Softmax" ? "probabilities as small as 1/n (attention over n tokens) are below an 8-bit output step of 1/255" : null),
        new ArchitectureRule("Normalization",
            "The elementwise ops of a LayerNorm or other normalization written as ReduceMean/Sub/Pow/Sqrt/Div (opset-11 exports), with its scale and shift.",
            (node, g) => node.OpType is "Add" or "Mul" && InNormalization(g, node)
                ? "part of a normalization (mean, variance, epsilon, scale and shift), whose small values an 8-bit range of the activations cannot hold" : null),
        new ArchitectureRule("Gelu",
            "The Mul and Add ops of a GELU written with Erf or Tanh (x * 0.5 * (1 + erf(x / sqrt 2))).",
            (node, g) => node.OpType is "Add" or "Mul" && InGelu(g, node) ? "part of a GELU written as elementwise ops" : null),
        new ArchitectureRule("GeluOutput",
            "A MatMul or Gemm reading a GELU output (a transformer's FFN down-projection): a few channels hold outliers 10-100x the rest, which one static per-tensor range cannot hold.",
            (node, g) => node.OpType is "MatMul" or "Gemm" && ProducedByGelu(g, node.Input[0])
                ? "it reads a GELU output, whose few outlier channels one static per-tensor range cannot hold" : null),
        new ArchitectureRule("SqueezeExcitation",
            "The channel gate of a squeeze-excitation block (GlobalAveragePool -> 1x1 convs -> Sigmoid/HardSigmoid -> Mul) and the layers of its branch.",
            (node, g) => SqueezeExcitation(node, g)),
        new ArchitectureRule("Gate",
            "A Mul by a Sigmoid or HardSigmoid of its own input (HardSwish, SiLU written as ops): the gate's rounding multiplies every value.",
            (node, g) => node.OpType == "Mul" && node.Input.Any(i => Producer(g, i) is { OpType: "Sigmoid" or "HardSigmoid" } p && node.Input.Contains(p.Input[0]))
                ? "x times a sigmoid of x (HardSwish, SiLU): rounding the product and its gate compounds" : null),
        new ArchitectureRule("LogDomain",
            "An Add or Mul whose output reaches Log, Sqrt, Reciprocal or a Div's denominator (directly or through one more Add or Mul): log-power features, epsilon adds. Values near zero, which an 8-bit step erases, become large there.",
            (node, g) => node.OpType is "Add" or "Mul" && FeedsLogDomain(g, node.Output[0], 0) is { } op
                ? $"its values reach {op}, where the small values an 8-bit step erases become large" : null),
        new ArchitectureRule("RecurrentState",
            "Ops on the state of an LSTM, GRU or RNN (its Y_h/Y_c outputs, or model inputs that become its initial state): rounding the state compounds over the sequence.",
            (node, g) => RecurrentState(node, g)),
    };

    /// <summary>The statistics rule: a tensor whose calibrated range is set by one value far from the rest of its
    /// values (a fill or mask constant), so that the rest would get only a few of the 256 levels.</summary>
    public const string RangeRule = "ConstantDominatedRange";

    public const string RangeDescription =
        "A layer whose calibrated input or output range is set by one value far from the rest (a fill or mask constant): at least 2 % of the values at one end, the rest within 1/32 of the range.";

    public static IEnumerable<string> Names => All.Select(r => r.Name).Append(RangeRule).Concat(RegionCost.Rules);

    /// <summary>The first rule (not skipped) that keeps this node in float, with the decision's reason, or null.</summary>
    public static string? Reason(NodeProto node, GraphView graph, IReadOnlyCollection<string> skipped)
    {
        if (node.Domain is not ("" or "ai.onnx")) return null;
        foreach (var rule in All)
        {
            if (skipped.Contains(rule.Name)) continue;
            if (rule.Match(node, graph) is { } why) return $"kept in float (rule {rule.Name}): {why}";
        }
        return null;
    }

    /// <summary>Whether a calibrated histogram is dominated by one value at an end of the range: at least 2% of the
    /// values in the end bin, and the rest within 1/32 of the range (fewer than 8 of the 256 levels).</summary>
    public static string? DominatedRange(Model.TensorStatistics s)
    {
        var h = s.Histogram.ToArray();
        if (h.Length < 64) return null;
        long total = h.Sum();
        if (total == 0) return null;
        int first = Array.FindIndex(h, c => c > 0), last = Array.FindLastIndex(h, c => c > 0);
        if (last - first < 64) return null;
        foreach (var (end, from, to) in new[] { (first, first + 1, last), (last, first, last - 1) })
        {
            if (h[end] < total / 50) continue;
            // Where the other values lie: their 0.1 % and 99.9 % quantiles.
            long rest = total - h[end], lowCut = rest / 1000, highCut = rest - rest / 1000, seen = 0;
            int lo = -1, hi = -1;
            for (int i = from; i <= to; i++)
            {
                seen += h[i];
                if (lo < 0 && seen > lowCut) lo = i;
                if (hi < 0 && seen >= highCut) { hi = i; break; }
            }
            if (lo < 0 || hi < 0) continue;
            if ((hi - lo + 1) * 32 <= last - first + 1)
                return FormattableString.Invariant($"{h[end] * 100.0 / total:0.#} % of its values sit at {(end == first ? "the minimum" : "the maximum")} of its range [{s.RangeMin:G3}, {s.RangeMax:G3}] and the rest span {(hi - lo + 1) * 100.0 / (last - first + 1):0.#} % of it, fewer than 8 of the 256 levels");
        }
        return null;
    }

    static NodeProto? Producer(GraphView g, string tensor) => g.Producers.TryGetValue(tensor, out var p) ? p : null;

    /// <summary>The largest magnitude of a constant tensor (an initializer or a Constant node's value), or 0.</summary>
    static float ConstantMagnitude(GraphView g, string tensor)
    {
        TensorProto? t = g.Initializers.TryGetValue(tensor, out var init) ? init
            : Producer(g, tensor) is { OpType: "Constant" } c ? c.TensorAttr("value") : null;
        if (t is null || t.DataType != (int)OnnxDataType.Float || t.DataLocation == TensorProto.Types.DataLocation.External) return 0;
        if (TensorData.ElementCount(t.Dims) > 1 << 16) return 0;
        float m = 0;
        foreach (var v in TensorData.ReadFloats(t)) m = Math.Max(m, float.IsNaN(v) ? 0 : Math.Abs(v));
        return m;
    }

    static bool IsConstant(GraphView g, string tensor) =>
        g.Initializers.ContainsKey(tensor) || Producer(g, tensor) is { OpType: "Constant" };

    /// <summary>Whether a tensor is computed only from model inputs and constants through mask ops, with a large
    /// constant on the way: an additive attention mask, or the masked scores' addend.</summary>
    static bool MaskFromInputs(GraphView g, string tensor)
    {
        bool large = false, input = false;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        bool Walk(string t, int depth)
        {
            if (!seen.Add(t)) return true;
            if (g.GraphInputs.Contains(t)) { input = true; return true; }
            if (IsConstant(g, t)) { large |= ConstantMagnitude(g, t) >= LargeConstant; return true; }
            var p = Producer(g, t);
            if (p is null || depth > 12 || !MaskOps.Contains(p.OpType)) return false;
            if (p.OpType == "ConstantOfShape") return true;
            return p.Input.Where(i => i.Length > 0).All(i => Walk(i, depth + 1));
        }
        return Walk(tensor, 0) && input && large;
    }

    /// <summary>The nodes of a decomposed normalization: Sub(x, ReduceMean(x)), its square, the variance's
    /// ReduceMean, + epsilon, Sqrt, Div, then a constant scale and shift.</summary>
    static bool InNormalization(GraphView g, NodeProto node)
    {
        // + epsilon: Add(ReduceMean(...), const) feeding Sqrt.
        if (node.OpType == "Add" && node.Input.Any(i => Producer(g, i) is { OpType: "ReduceMean" })
            && g.ConsumersOf(node.Output[0]).Any(c => c.OpType == "Sqrt")) return true;
        // The square of the centred values: Mul(d, d) with d = Sub(x, ReduceMean(x)).
        if (node.OpType == "Mul" && node.Input.Count == 2 && node.Input[0] == node.Input[1] && Centred(g, node.Input[0])) return true;
        // Scale and shift after the Div: Mul by a constant, then Add of a constant.
        var input = node.Input.FirstOrDefault(i => !IsConstant(g, i));
        if (input is null || !node.Input.Any(i => IsConstant(g, i))) return false;
        var p = Producer(g, input);
        if (p is { OpType: "Div" } && Centred(g, p.Input[0]) && p.Input.Count > 1 && Producer(g, p.Input[1]) is { OpType: "Sqrt" }) return true;
        return node.OpType == "Add" && p is { OpType: "Mul" } && InNormalization(g, p);
    }

    static bool Centred(GraphView g, string tensor) =>
        Producer(g, tensor) is { OpType: "Sub" } sub && sub.Input.Count == 2 && Producer(g, sub.Input[1]) is { OpType: "ReduceMean" } mean && mean.Input[0] == sub.Input[0];

    /// <summary>The elementwise nodes of x * 0.5 * (1 + erf(x / sqrt 2)) (in any association), or of the Tanh form.</summary>
    static bool InGelu(GraphView g, NodeProto node) => GeluOf(g, node) is not null;

    /// <summary>The Erf or Tanh of the GELU this Add or Mul belongs to, or null.</summary>
    static NodeProto? GeluOf(GraphView g, NodeProto node, int depth = 0)
    {
        if (depth > 3) return null;
        foreach (var i in node.Input)
        {
            var p = Producer(g, i);
            if (p is { OpType: "Erf" } || (p is { OpType: "Tanh" } && HasCube(g, p.Input[0]))) return p;
            if (p is { OpType: "Add" or "Mul" } && GeluOf(g, p, depth + 1) is { } e) return e;
        }
        return null;
    }

    /// <summary>Whether the argument of a Tanh holds a cube (tanh GELU: tanh(sqrt(2/pi) (x + 0.044715 x^3))).</summary>
    static bool HasCube(GraphView g, string tensor, int depth = 0) =>
        depth <= 4 && Producer(g, tensor) is { } p && (p.OpType == "Pow" || p.Input.Any(i => HasCube(g, i, depth + 1)));

    /// <summary>Whether a tensor is the output of a GELU (the last Mul of its elementwise form, or a Gelu op).</summary>
    static bool ProducedByGelu(GraphView g, string tensor) =>
        Producer(g, tensor) is { } p && (p.OpType is "Gelu" or "FastGelu" || (p.OpType == "Mul" && GeluOf(g, p) is not null
            && !g.ConsumersOf(tensor).Any(c => c.OpType is "Mul" or "Add" && GeluOf(g, c) is not null)));

    /// <summary>A squeeze-excitation gate (a Mul of features by Sigmoid/HardSigmoid of their pooled values) or a
    /// layer of its branch (between the pool and the gate).</summary>
    static string? SqueezeExcitation(NodeProto node, GraphView g)
    {
        if (node.OpType == "Mul")
        {
            foreach (var i in node.Input)
                if (GateRoot(g, i) is { } pooled && node.Input.Contains(pooled.Input[0]))
                    return "the channel gate of a squeeze-excitation block: its rounding scales whole channels";
            return null;
        }
        if (node.OpType is not ("Conv" or "Gemm" or "MatMul" or "Add")) return null;
        // A layer of the branch: its input is pooled (directly or through the branch), and a gate follows.
        if (!PooledBranch(g, node.Input[0], 0)) return null;
        var output = node.Output[0];
        for (int depth = 0; depth < 6; depth++)
        {
            var consumers = g.ConsumersOf(output);
            if (consumers.Count != 1) return null;
            var c = consumers[0];
            if (c.OpType is "Sigmoid" or "HardSigmoid")
                return g.ConsumersOf(c.Output[0]).Any(m => m.OpType == "Mul") ? "a layer of a squeeze-excitation branch (on pooled values): no speed to gain, and its error scales whole channels" : null;
            output = c.Output[0];
        }
        return null;
    }

    static bool PooledBranch(GraphView g, string tensor, int depth)
    {
        var p = Producer(g, tensor);
        if (p is null || depth > 6) return false;
        if (p.OpType is "GlobalAveragePool" || (p.OpType == "ReduceMean" && p.Input.Count >= 1)) return true;
        return p.OpType is "Conv" or "Relu" or "Clip" or "HardSwish" or "Add" or "Mul" or "Gemm" or "MatMul" or "Reshape" or "Flatten" or "Squeeze" or "Unsqueeze" or "HardSigmoid"
            && PooledBranch(g, p.Input[0], depth + 1);
    }

    /// <summary>The pool a gate tensor comes from: Sigmoid/HardSigmoid(... GlobalAveragePool(x) ...), or null.</summary>
    static NodeProto? GateRoot(GraphView g, string tensor)
    {
        var gate = Producer(g, tensor);
        if (gate is not { OpType: "Sigmoid" or "HardSigmoid" }) return null;
        var t = gate.Input[0];
        for (int depth = 0; depth < 8; depth++)
        {
            var p = Producer(g, t);
            if (p is null) return null;
            if (p.OpType is "GlobalAveragePool" or "ReduceMean") return p;
            t = p.Input[0];
        }
        return null;
    }

    /// <summary>The op (Log, Sqrt, Reciprocal, Div) a tensor reaches within one more Add or Mul, as the operand
    /// whose small values it magnifies, or null.</summary>
    static string? FeedsLogDomain(GraphView g, string tensor, int depth)
    {
        foreach (var c in g.ConsumersOf(tensor))
        {
            if (c.OpType is "Log" or "Sqrt" or "Reciprocal") return c.OpType;
            if (c.OpType == "Div" && c.Input.Count > 1 && c.Input[1] == tensor) return "a Div's denominator";
            if (depth == 0 && c.OpType is "Add" or "Mul" && FeedsLogDomain(g, c.Output[0], 1) is { } op) return op;
        }
        return null;
    }

    static readonly HashSet<string> Recurrent = new(StringComparer.Ordinal) { "LSTM", "GRU", "RNN" };

    static string? RecurrentState(NodeProto node, GraphView g)
    {
        // Reads Y_h or Y_c (outputs 1 and 2) of a recurrent op.
        foreach (var i in node.Input)
            if (Producer(g, i) is { } p && Recurrent.Contains(p.OpType) && p.Output.IndexOf(i) >= 1)
                return $"it reads the state of {p.OpType} '{p.Name}', which rounding would change at every step";
        // Computes an initial state: its output reaches input 5 or 6 (initial_h, initial_c) of a recurrent op.
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var frontier = new Queue<(string Tensor, int Depth)>(node.Output.Select(o => (o, 0)));
        while (frontier.Count > 0)
        {
            var (t, depth) = frontier.Dequeue();
            if (!seen.Add(t) || depth > 4) continue;
            foreach (var c in g.ConsumersOf(t))
            {
                if (Recurrent.Contains(c.OpType))
                {
                    if (c.Input.IndexOf(t) >= 5) return $"it computes the initial state of {c.OpType} '{c.Name}'";
                    continue;
                }
                if (c.OpType is "Reshape" or "Squeeze" or "Unsqueeze" or "Transpose" or "Concat" or "Slice" or "Split" or "Gather" or "Identity")
                    foreach (var o in c.Output) frontier.Enqueue((o, depth + 1));
            }
        }
        return null;
    }
}
