using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>What happens to one layer, and why.</summary>
public sealed class LayerDecision
{
    public string Layer { get; set; } = "";
    public string OpType { get; set; } = "";
    public bool Quantized { get; set; }
    /// <summary>Folded into a quantized producer's range (a Relu): it runs in int8 without being quantized itself.</summary>
    public bool Folded { get; set; }
    public string Reason { get; set; } = "";
    /// <summary>The u8 x s8 pair-sum check of the layer's weight, on a target that needs pair-safe weights.</summary>
    public PairCheck? Pairs { get; set; }
}

/// <summary>
/// Which layers are quantized and which activation tensors need a range for that: the one place that decides,
/// shared by calibration (which tensors to observe) and quantization (where Q/DQ go).
/// </summary>
public sealed class QuantizationPlan
{
    /// <summary>Calibrated activation tensors, each with the selected layers that need it (in graph order).</summary>
    public Dictionary<string, List<string>> Activations { get; } = new(StringComparer.Ordinal);

    /// <summary>Outputs that reuse their input's quantization parameters: output -> input.</summary>
    public Dictionary<string, string> SharedOutputs { get; } = new(StringComparer.Ordinal);

    public List<LayerDecision> Decisions { get; } = new();

    /// <summary>Records a layer's pair check and adds what it found to the layer's reason.</summary>
    public void RecordPairs(string layer, PairCheck? check, QuantizationOptions options)
    {
        if (check is null || Decisions.FirstOrDefault(d => d.Layer == layer) is not { } decision) return;
        decision.Pairs = check;
        decision.Reason += PairSaturation.Reason(check, options.Target, options.OverflowFix);
    }

    /// <summary>Names of the layers that are quantized.</summary>
    public HashSet<string> QuantizedLayers { get; } = new(StringComparer.Ordinal);

    /// <summary>
    /// The plan of a prepared model's graph, with the options' float decisions: for the cmdlets, whose assembly
    /// references no ONNX or protobuf type (it loads in pwsh's default context, the engine's dependencies in the
    /// module's own; docs/platforms.md).
    /// </summary>
    public static QuantizationPlan Create(PreparedModel prepared, IReadOnlySet<string>? selected, QuantizationOptions? options = null) =>
        Create(new GraphView(prepared.Model.Graph), selected, options is null ? null : options.FloatReason);

    /// <param name="selected">Layer names to quantize; null selects every quantizable layer.</param>
    /// <param name="perChannel">Whether weights get one scale per output channel (only changes the stated reasons).</param>
    public static QuantizationPlan Create(GraphView graph, IReadOnlySet<string>? selected, Func<NodeProto, GraphView, string?>? exclude = null, bool perChannel = true)
    {
        var plan = new QuantizationPlan();
        plan.AddGraph(graph, selected, exclude, perChannel);
        return plan;
    }

    /// <summary>Per graph scope ("" for the main graph, "If_3/then_branch/" inside): the tensors read or written
    /// there by its quantized layers, by local name, with their model-wide keys (the keys of <see cref="Activations"/>).</summary>
    public Dictionary<string, Dictionary<string, string>> LocalTensors { get; } = new(StringComparer.Ordinal);

    /// <summary>The nodes of the quantized layers, each with the view of the graph that holds it (the main graph's
    /// first, then those inside If branches and Loop/Scan bodies, as <see cref="Decisions"/> orders them).</summary>
    public List<(NodeProto Node, GraphView View)> QuantizedNodes(GraphView main)
    {
        var result = new List<(NodeProto, GraphView)>();
        void Walk(GraphView view)
        {
            foreach (var n in view.Graph.Node)
                if (QuantizedLayers.Contains(LayerName(view, n))) result.Add((n, view));
            foreach (var n in view.Graph.Node)
                foreach (var sub in view.Subgraphs(n)) Walk(sub);
        }
        Walk(main);
        return result;
    }

    /// <summary>The layer name the plan uses for a node: its scope path, then its name.</summary>
    public static string LayerName(GraphView graph, NodeProto node) => graph.Scope + node.Name;

    /// <summary>One graph's layers, then those of its subgraphs (If branches, Loop and Scan bodies) in place.</summary>
    void AddGraph(GraphView graph, IReadOnlySet<string>? selected, Func<NodeProto, GraphView, string?>? exclude, bool perChannel)
    {
        var plan = this;
        if (!LocalTensors.TryGetValue(graph.Scope, out var local)) LocalTensors[graph.Scope] = local = new Dictionary<string, string>(StringComparer.Ordinal);
        void Need(string tensor, string layer)
        {
            local[tensor] = graph.Key(tensor);
            plan.Need(graph.Key(tensor), layer);
        }
        foreach (var node in graph.Graph.Node)
        {
            var name = LayerName(graph, node);
            var decision = new LayerDecision { Layer = name, OpType = node.OpType };
            plan.Decisions.Add(decision);
            var (quantizable, reason) = OpHandlers.Assess(node, graph);
            if (!quantizable)
            {
                decision.Reason = reason;
                if (OpHandlers.FoldedActivations.Contains(node.OpType) && OpHandlers.FoldedBounds(node, graph) is not null)
                {
                    decision.Folded = plan.Activations.ContainsKey(graph.Key(node.Output[0]));
                    decision.Reason = decision.Folded ? "folded into the quantized range of its producer" : "kept in float: its producer is not quantized";
                }
                continue;
            }
            // -Exclude and the architecture rules first: such a layer is not calibrated, so after calibration it is not
            // in the pipeline either, and its decision names the entry or rule that keeps it in float.
            if (exclude?.Invoke(node, graph) is { } excluded)
            {
                decision.Reason = excluded;
                continue;
            }
            if (selected is not null && !selected.Contains(name))
            {
                decision.Reason = "not in the pipeline: kept in float";
                continue;
            }
            var handler = OpHandlers.Get(node)!;
            foreach (var i in handler.ActivationInputs(node, graph))
                Need(node.Input[i], name);
            if (handler.Output == OutputRule.Own) Need(FoldedOutput(node, graph), name);
            else if (handler.Output == OutputRule.SharesInput) plan.SharedOutputs[graph.Key(node.Output[0])] = graph.Key(node.Input[0]);
            plan.QuantizedLayers.Add(name);
            decision.Quantized = true;
            decision.Reason = handler.Describe(node, graph, perChannel) ?? (handler.Weight(node, graph) is { } w
                ? $"int8: weights {(perChannel ? $"per channel (axis {w.Axis})" : "per tensor")}{(handler.Bias(node, graph) is not null ? ", int32 bias" : "")}"
                : handler.Output == OutputRule.SharesInput ? "int8: passes its input's scale through" : "int8");
        }
        foreach (var node in graph.Graph.Node)
            foreach (var sub in graph.Subgraphs(node))
                AddGraph(sub, selected, exclude, perChannel);
    }

    /// <summary>The tensor whose range quantizes a node's output: past a Relu that is its only consumer, since
    /// ONNX Runtime folds such a Relu into the quantized range.</summary>
    public static string FoldedOutput(NodeProto node, GraphView graph)
    {
        var output = node.Output[0];
        if (graph.GraphOutputs.Contains(output)) return output;
        var consumers = graph.ConsumersOf(output);
        return consumers.Count == 1 && OpHandlers.FoldedBounds(consumers[0], graph) is not null
            ? consumers[0].Output[0]
            : output;
    }

    void Need(string tensor, string layer)
    {
        if (!Activations.TryGetValue(tensor, out var layers)) Activations[tensor] = layers = new List<string>();
        if (!layers.Contains(layer)) layers.Add(layer);
    }
}
