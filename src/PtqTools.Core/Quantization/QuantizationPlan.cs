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

    /// <summary>Names of the layers that are quantized.</summary>
    public HashSet<string> QuantizedLayers { get; } = new(StringComparer.Ordinal);

    /// <param name="selected">Layer names to quantize; null selects every quantizable layer.</param>
    /// <param name="perChannel">Whether weights get one scale per output channel (only changes the stated reasons).</param>
    public static QuantizationPlan Create(GraphView graph, IReadOnlySet<string>? selected, Func<NodeProto, string?>? exclude = null, bool perChannel = true)
    {
        var plan = new QuantizationPlan();
        foreach (var node in graph.Graph.Node)
        {
            var decision = new LayerDecision { Layer = node.Name, OpType = node.OpType };
            plan.Decisions.Add(decision);
            var (quantizable, reason) = OpHandlers.Assess(node, graph);
            if (!quantizable)
            {
                decision.Reason = reason;
                if (OpHandlers.FoldedActivations.Contains(node.OpType) && OpHandlers.FoldedBounds(node, graph) is not null)
                {
                    decision.Folded = plan.Activations.ContainsKey(node.Output[0]);
                    decision.Reason = decision.Folded ? "folded into the quantized range of its producer" : "kept in float: its producer is not quantized";
                }
                continue;
            }
            if (selected is not null && !selected.Contains(node.Name))
            {
                decision.Reason = "not in the pipeline: kept in float";
                continue;
            }
            if (exclude?.Invoke(node) is { } excluded)
            {
                decision.Reason = excluded;
                continue;
            }
            var handler = OpHandlers.Get(node)!;
            foreach (var i in handler.ActivationInputs(node, graph))
                plan.Need(node.Input[i], node.Name);
            if (handler.Output == OutputRule.Own) plan.Need(FoldedOutput(node, graph), node.Name);
            else if (handler.Output == OutputRule.SharesInput) plan.SharedOutputs[node.Output[0]] = node.Input[0];
            plan.QuantizedLayers.Add(node.Name);
            decision.Quantized = true;
            decision.Reason = handler.Describe(node, graph, perChannel) ?? (handler.Weight(node, graph) is { } w
                ? $"int8: weights {(perChannel ? $"per channel (axis {w.Axis})" : "per tensor")}{(handler.Bias(node, graph) is not null ? ", int32 bias" : "")}"
                : handler.Output == OutputRule.SharesInput ? "int8: passes its input's scale through" : "int8");
        }
        return plan;
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
