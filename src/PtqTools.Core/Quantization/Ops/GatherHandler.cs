using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>Gather from a constant table (embeddings), in every mode: the table is stored quantized, the rows are
/// gathered as integers and only they are dequantized (<see cref="EmbeddingQuantizer"/>). No QOperator form or engine
/// fusion is needed: the Gather itself runs on the integer table.</summary>
sealed class GatherHandler : OpHandler
{
    public override IReadOnlyList<string> OpTypes { get; } = new[] { "Gather" };

    public override OutputRule Output => OutputRule.Dequantized;
    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        node.Input.Count == 2 && IsFloatInitializer(g, node, 0) && !g.IsFloat(node.Input[1]) ? null : "its data input is not a float32 initializer (a table)";
    public override IEnumerable<int> ActivationInputs(NodeProto node, GraphView g) => Array.Empty<int>();
    public override string? Describe(NodeProto node, GraphView g, bool perChannel) => EmbeddingQuantizer.Describe(node, g, perChannel);

    internal override bool RewriteStatic(QdqRewrite r, NodeProto node)
    {
        EmbeddingQuantizer.Rewrite(r.Graph, r.View, node, r.Added, r.Names, r.Options);
        return true;
    }

    public override bool InWeightModes => true;
    public override string? CannotQuantizeWeights(NodeProto node, GraphView g, QuantizationOptions options) => CannotQuantize(node, g);
    public override string DescribeWeights(NodeProto node, GraphView g, QuantizationOptions options) =>
        $"{(options.Mode == QuantMode.Dynamic ? "dynamic" : "weight-only")}: {EmbeddingQuantizer.Describe(node, g, options.PerChannel)}";
    public override bool IntegerProductInWeightModes => false;

    internal override void QuantizeWeights(WeightRewrite r, NodeProto node)
    {
        r.Nodes.Add(node);
        EmbeddingQuantizer.Rewrite(r.Graph, r.View, node, r.Nodes, r.Names, r.Options);
    }
}

/// <summary>
/// Gather from a constant table (word and position embeddings): the table is stored as 8-bit weights (the options'
/// weight type, symmetry and range; per column of the last axis when it is gathered along axis 0 and weights are
/// per channel, else per tensor), the node gathers the integer rows, and a DequantizeLinear after it turns only the
/// gathered rows back to float. Dequantizing the whole table in front of the Gather would cost a pass over it on
/// every run. The node keeps its name and its output's name, so readers and graph outputs are unchanged.
/// </summary>
public static class EmbeddingQuantizer
{
    /// <summary>The per-channel axis of the table, or null for one scale.</summary>
    static int? Axis(NodeProto node, GraphView g, bool perChannel)
    {
        var table = g.Initializers[node.Input[0]];
        long axis = node.IntAttr("axis", 0);
        return perChannel && table.Dims.Count >= 2 && (axis == 0 || axis == -table.Dims.Count) ? table.Dims.Count - 1 : null;
    }

    /// <summary>Whether the table is quantized per column (its DequantizeLinear then has an axis: opset 13).</summary>
    public static bool PerColumn(NodeProto node, GraphView g, bool perChannel) => Axis(node, g, perChannel) is not null;

    public static string Describe(NodeProto node, GraphView g, bool perChannel) =>
        $"8-bit table {(Axis(node, g, perChannel) is { } a ? $"per column (axis {a})" : "per tensor")}: gathered as integers, the rows dequantized after the Gather";

    /// <summary>Rewrites one Gather in <paramref name="graph"/>: its table becomes the quantized initializer and a
    /// DequantizeLinear (added to <paramref name="added"/>) writes the original output.</summary>
    public static void Rewrite(GraphProto graph, GraphView view, NodeProto node, List<NodeProto> added, NameScope names, QuantizationOptions options)
    {
        var tName = node.Input[0];
        var table = view.Initializers[tName];
        var dims = table.Dims.ToArray();
        int? axis = Axis(node, view, options.PerChannel);
        var spec = options.Weights;
        var (values, scales, zeroPoints) = QuantMath.QuantizeWeights(TensorData.ReadFloats(table), dims, axis, spec);
        var type = spec.Type == QuantType.UInt8 ? OnnxDataType.UInt8 : OnnxDataType.Int8;
        var qName = names.Fresh(tName + "_quantized");
        graph.Initializer.Add(GraphEditor.QuantizedTensor(qName, values, type, dims));

        var output = node.Output[0];
        var gathered = names.Fresh(output + "_quantized");
        node.Input[0] = qName;
        node.Output[0] = gathered;
        var scaleName = names.Fresh(tName + "_scale");
        var zpName = names.Fresh(tName + "_zero_point");
        graph.Initializer.Add(axis is null ? TensorData.FromFloats(scaleName, scales) : TensorData.FromFloats(scaleName, scales, scales.Length));
        graph.Initializer.Add(axis is null ? GraphEditor.QuantizedTensor(zpName, zeroPoints, type) : GraphEditor.QuantizedTensor(zpName, zeroPoints, type, zeroPoints.Length));
        var dq = GraphEditor.Node("DequantizeLinear", names.Fresh(node.Name + "_DequantizeLinear"), new[] { gathered, scaleName, zpName }, output);
        // The gathered rows keep the table's last axis last, whatever the rank of the indices.
        if (axis is not null) dq.Attribute.Add(GraphEditor.Int("axis", -1));
        added.Add(dq);
    }
}
