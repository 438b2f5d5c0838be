using Onnx;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>
/// The speed rules, applied to the plan of what is written (not to calibration, nor to Measure-LayerError's per-layer
/// figures). <see cref="ShallowRule"/>: a Conv with a kernel wider than 1x1 whose outputs each sum fewer than
/// <see cref="MinConvDepth"/> products (depthwise 3x3 and 5x5, a 3x3 stem on an RGB or grey image) runs slower in ONNX
/// Runtime's int8 kernels, with its Q/DQ, than in float. <see cref="Rule"/>: a region of connected int8 layers runs in ONNX Runtime as fused integer
/// kernels, with a QuantizeLinear on every tensor entering it and a DequantizeLinear on every tensor leaving it. Such a
/// region pays only when the time its integer matrix products save over float exceeds the time of those Q/DQ nodes;
/// a region where it does not (small maps, few channels, a lone pool or add between float ops) stays in float. The
/// estimate is deterministic (shapes from the weights, element counts from the calibration statistics), so the same
/// model, statistics and options give the same file on every host. Its constants were measured with ONNX Runtime
/// 1.31.1 at one thread (docs/benchmarks.md, "Where int8 convolutions do not pay").
/// </summary>
public static class RegionCost
{
    public const string Rule = "SlowRegion", ShallowRule = "ShallowConv";

    public static IReadOnlyList<string> Rules { get; } = new[] { ShallowRule, Rule };

    /// <summary>Products per output below which a Conv wider than 1x1 stays float (<see cref="ShallowRule"/>).</summary>
    public const int MinConvDepth = 32;

    public const string ShallowDescription =
        "A Conv with a kernel wider than 1x1 whose outputs each sum fewer than 32 products (depthwise convs, 3x3 stems on RGB or grey images): ONNX Runtime's int8 convolution and its Q/DQ run slower there than its float convolution, and its few weights save almost no size.";

    public const string Description =
        "A region of connected int8 layers whose matrix products save less time over float than the QuantizeLinear and DequantizeLinear nodes around it cost (estimated from the weights' shapes and the calibrated element counts): it would run slower than float.";

    /// <summary>Time an int8 multiply-accumulate saves over a float one, ns (float ~100, int8 ~400 GMAC/s).</summary>
    public const double SavedNsPerMac = 1.0 / 100 - 1.0 / 400;

    /// <summary>Cost of each Q or DQ node at the region's edge: per node, and per element it converts (with the
    /// layout change ONNX Runtime's int8 convolutions add), ns.</summary>
    public const double EdgeNsPerNode = 1000, EdgeNsPerElement = 0.12;

    /// <summary>Ops whose int8 form saves no time (elementwise, pooling, data movement): gain 0.</summary>
    static readonly HashSet<string> NoGain = new(StringComparer.Ordinal)
    {
        "Add", "Mul", "Sub", "Concat", "GlobalAveragePool", "AveragePool", "MaxPool", "Relu", "Clip", "Reshape", "Transpose",
        "Flatten", "Squeeze", "Unsqueeze", "Resize", "Split", "Slice", "Pad", "Identity", "Sigmoid", "Tanh", "LeakyRelu",
    };

    /// <summary>Quantized Convs too shallow for int8 to pay (<see cref="ShallowRule"/>), each with its decision's reason.</summary>
    public static Dictionary<string, string> ShallowLayers(GraphView graph, QuantizationPlan plan)
    {
        var shallow = new Dictionary<string, string>(StringComparer.Ordinal);
        void Visit(GraphView g)
        {
            foreach (var n in g.Graph.Node)
            {
                if (n.OpType == "Conv" && plan.QuantizedLayers.Contains(QuantizationPlan.LayerName(g, n)) && Weight(g, n) is { Dims.Count: >= 3 } w)
                {
                    long depth = 1, kernel = 1;
                    for (int i = 1; i < w.Dims.Count; i++) depth *= w.Dims[i];
                    for (int i = 2; i < w.Dims.Count; i++) kernel *= w.Dims[i];
                    if (kernel > 1 && depth < MinConvDepth)
                        shallow[QuantizationPlan.LayerName(g, n)] = $"kept in float (rule {ShallowRule}): each output sums only {depth} products (input channels per group x kernel), too few for ONNX Runtime's int8 convolution and its Q/DQ to run faster than the float one";
                }
                foreach (var sub in g.Subgraphs(n)) Visit(sub);
            }
        }
        Visit(graph);
        return shallow;
    }

    /// <summary>A layer's constant weight (an initializer or a Constant node's value), or null.</summary>
    static TensorProto? Weight(GraphView g, NodeProto n)
    {
        if (OpHandlers.Get(n)?.Weight(n, g) is not { } w) return null;
        var name = n.Input[w.Input];
        return g.Initializers.TryGetValue(name, out var init) ? init
            : g.Producers.TryGetValue(name, out var p) && p.OpType == "Constant" ? p.TensorAttr("value") : null;
    }

    /// <summary>Layers of regions that would run slower than float, each with its decision's reason.</summary>
    public static Dictionary<string, string> SlowLayers(GraphView graph, QuantizationPlan plan, IReadOnlyCollection<TensorStatistics> statistics)
    {
        var elements = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var s in statistics)
            if (s.SampleCount > 0 && s.ElementCount > 0) elements[s.Tensor] = (double)s.ElementCount / s.SampleCount;
        var slow = new Dictionary<string, string>(StringComparer.Ordinal);
        Visit(graph, plan, elements, slow);
        return slow;
    }

    static void Visit(GraphView g, QuantizationPlan plan, Dictionary<string, double> elements, Dictionary<string, string> slow)
    {
        var nodes = g.Graph.Node.Where(n => plan.QuantizedLayers.Contains(QuantizationPlan.LayerName(g, n))).ToList();
        // A layer's output is the tensor its range quantizes (past a folded Relu), or its own output when it shares
        // its input's scale.
        // By node identity: a protobuf message hashes and compares its whole content.
        IEqualityComparer<NodeProto> byNode = ReferenceEqualityComparer.Instance;
        var output = nodes.ToDictionary(n => n, n => OpHandlers.Get(n)!.Output == OutputRule.Own ? QuantizationPlan.FoldedOutput(n, g) : n.Output[0], byNode);
        var inputs = nodes.ToDictionary(n => n, n => OpHandlers.Get(n)!.ActivationInputs(n, g).Select(i => n.Input[i]).ToArray(), byNode);
        var producedBy = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var n in nodes) producedBy[output[n]] = n;
        // Regions: layers joined by a tensor one produces and the other reads.
        var parent = nodes.ToDictionary(n => n, n => n, byNode);
        NodeProto Root(NodeProto n) { while (parent[n] != n) n = parent[n] = parent[parent[n]]; return n; }
        foreach (var n in nodes)
            foreach (var t in inputs[n])
                if (producedBy.TryGetValue(t, out var p)) parent[Root(n)] = Root(p);
        foreach (var region in nodes.GroupBy(Root, byNode))
        {
            var members = region.ToHashSet(byNode);
            double gain = 0;
            bool known = true;
            foreach (var n in members)
            {
                if (Macs(g, n, output[n], elements) is double macs) gain += macs * SavedNsPerMac;
                else if (!NoGain.Contains(n.OpType)) known = false;
            }
            if (!known) continue;
            var edges = new HashSet<string>(StringComparer.Ordinal);
            foreach (var n in members)
            {
                edges.UnionWith(inputs[n].Where(t => !(producedBy.TryGetValue(t, out var p) && members.Contains(p))));
                var o = output[n];
                if (g.GraphOutputs.Contains(o) || g.ConsumersOf(o).Any(c => !(members.Contains(c) && inputs[c].Contains(o)))) edges.Add(o);
            }
            double cost = 0;
            foreach (var t in edges)
            {
                if (!elements.TryGetValue(g.Key(t), out var count)) { known = false; break; }
                cost += EdgeNsPerNode + count * EdgeNsPerElement;
            }
            if (!known || gain >= cost) continue;
            var why = FormattableString.Invariant(
                $"kept in float (rule {Rule}): its int8 region ({members.Count} layer(s)) would save about {gain / 1000:0.#} us of matrix products over float but spend about {cost / 1000:0.#} us in the {edges.Count} QuantizeLinear/DequantizeLinear node(s) around it, so it would run slower than float");
            foreach (var n in members) slow[QuantizationPlan.LayerName(g, n)] = why;
        }
        foreach (var node in g.Graph.Node)
            foreach (var sub in g.Subgraphs(node))
                Visit(sub, plan, elements, slow);
    }

    /// <summary>Multiply-accumulates of a Conv, MatMul or Gemm with a constant weight: output elements times the
    /// products per output (the weight's elements over its output channels); null for any other layer.</summary>
    static double? Macs(GraphView g, NodeProto n, string output, Dictionary<string, double> elements)
    {
        if (n.OpType is not ("Conv" or "MatMul" or "Gemm")) return null;
        if (OpHandlers.Get(n)!.Weight(n, g) is not { } w || Weight(g, n) is not { } t) return null;
        if (t.Dims.Count < 2 || !elements.TryGetValue(g.Key(output), out var outElements)) return null;
        double all = t.Dims.Aggregate(1.0, (a, d) => a * d);
        return outElements * all / t.Dims[w.Axis];
    }
}
