using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>
/// Turns a static QDQ model into the QOperator format: every float op whose activation inputs all come from
/// DequantizeLinear and whose output (past a folded Relu) goes only to a QuantizeLinear becomes the integer
/// operator its <see cref="OpHandler"/> lowers it to (<see cref="OpHandler.ToQOperator"/>), reading and writing the quantized tensors directly: QLinearConv, QLinearMatMul, com.microsoft
/// QLinearAdd, QLinearMul, QLinearConcat, QLinearAveragePool and QLinearGlobalAveragePool; MaxPool and the
/// reshapes run on the integer tensor itself. The Q/DQ nodes left without readers are removed; ops that do not
/// match stay float between their DequantizeLinear and QuantizeLinear, exactly as in QDQ.
/// </summary>
public static class QOperatorConverter
{
    const string Ms = "com.microsoft";

    public static ModelProto Convert(ModelProto qdq, CancellationToken cancel = default)
    {
        var model = qdq.Clone();
        var graph = model.Graph;
        var view = new GraphView(graph);
        var dq = graph.Node.Where(n => n.OpType == "DequantizeLinear" && n.Domain is "" or "ai.onnx").ToDictionary(n => n.Output[0], StringComparer.Ordinal);
        var lowering = new QOperatorLowering(model, view, dq);
        var remove = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var added = new List<NodeProto>();
        bool usesMs = false;
        foreach (var node in graph.Node.ToList())
        {
            cancel.ThrowIfCancellationRequested();
            if (node.Domain is not ("" or "ai.onnx") || remove.Contains(node)) continue;
            var (output, relu) = QuantizedOutput(node, view);
            if (output is null) continue;
            // The op's handler says what it lowers to (OpHandler.ToQOperator); null: it stays float between Q/DQ.
            var replacement = OpHandlers.Get(node)?.ToQOperator(lowering, node, output, relu);
            if (replacement is null) continue;
            usesMs |= replacement.Domain == Ms;
            added.Add(replacement);
            remove.Add(node);
            remove.Add(output);
            if (relu is not null) remove.Add(relu);
        }
        var nodes = graph.Node.Where(n => !remove.Contains(n)).Concat(added).ToList();
        // DequantizeLinear nodes nobody reads any more (weights, biases, activations now read as integers).
        while (true)
        {
            var read = nodes.SelectMany(n => n.Input).Concat(graph.Output.Select(o => o.Name)).ToHashSet(StringComparer.Ordinal);
            int before = nodes.Count;
            nodes.RemoveAll(n => n.OpType is "DequantizeLinear" or "QuantizeLinear" && !read.Contains(n.Output[0]));
            if (nodes.Count == before) break;
        }
        graph.Node.Clear();
        graph.Node.AddRange(nodes);
        if (usesMs && !model.OpsetImport.Any(o => o.Domain == Ms))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = Ms, Version = 1 });
        GraphEditor.RemoveUnusedInitializers(graph);
        GraphEditor.SortTopologically(graph);
        return model;
    }

    /// <summary>The QuantizeLinear that reads the node's output (or the output of the Relu that is its only reader,
    /// when the quantized range starts at the type's minimum so saturation is the Relu), and that Relu.</summary>
    static (NodeProto? Q, NodeProto? Relu) QuantizedOutput(NodeProto node, GraphView g)
    {
        if (node.Output.Count != 1 && !(node.OpType == "MaxPool" && node.Output.Skip(1).All(o => o.Length == 0))) return (null, null);
        var tensor = node.Output[0];
        NodeProto? relu = null;
        var readers = g.ConsumersOf(tensor);
        if (readers.Count == 1 && OpHandlers.FoldedBounds(readers[0], g) is not null && !g.GraphOutputs.Contains(tensor))
        {
            relu = readers[0];
            tensor = relu.Output[0];
            readers = g.ConsumersOf(tensor);
        }
        if (readers.Count != 1 || readers[0].OpType != "QuantizeLinear" || g.GraphOutputs.Contains(tensor)) return (null, null);
        var q = readers[0];
        if (relu is not null)
        {
            // Saturation replaces the Relu or Clip only when the representable range lies inside its bounds: for a
            // Relu, a zero point at the type's minimum (range [0, max]).
            if (q.Input.Count < 3 || !g.Initializers.TryGetValue(q.Input[2], out var zp) || !g.Initializers.TryGetValue(q.Input[1], out var sc)) return (null, null);
            var z = TensorData.ReadFloats(zp);
            var s = TensorData.ReadFloats(sc);
            if (z.Length != 1 || s.Length != 1 || zp.DataType is not ((int)OnnxDataType.UInt8 or (int)OnnxDataType.Int8)) return (null, null);
            var (qmin, qmax) = zp.DataType == (int)OnnxDataType.UInt8 ? (0, 255) : (-128, 127);
            var (lo, hi) = OpHandlers.FoldedBounds(relu, g)!.Value;
            double low = (double)s[0] * (qmin - z[0]), high = (double)s[0] * (qmax - z[0]);
            if (low < lo || high > hi + 1e-5 * Math.Abs(hi)) return (null, null);
        }
        return (q, relu);
    }

    // ---- the lowerings several handlers share ----

    /// <summary>DQ(a), DQ(b) → op → Q as one two-input QLinear op (QLinearMatMul, QLinearAdd, QLinearMul).</summary>
    internal static NodeProto? Binary(QOperatorLowering l, NodeProto node, NodeProto q, string op, string domain)
    {
        if (node.Input.Count != 2 || l.Dequantized(node.Input[0]) is not { } a || l.Dequantized(node.Input[1]) is not { } b) return null;
        return GraphEditor.Node(op, domain, node.Name, a.Concat(b).Concat(q.Input.Skip(1)), q.Output[0], null);
    }

    /// <summary>DQ(x) → op → Q as one com.microsoft QLinear op (the pools).</summary>
    internal static NodeProto? Unary(QOperatorLowering l, NodeProto node, NodeProto q, string op, bool copyAttributes)
    {
        if (l.Dequantized(node.Input[0]) is not { } x) return null;
        var n = GraphEditor.Node(op, Ms, node.Name, x.Concat(q.Input.Skip(1)), q.Output[0], copyAttributes ? node.Attribute : null);
        if (!copyAttributes) n.Attribute.Add(GraphEditor.Int("channels_last", 0));
        return n;
    }

    /// <summary>MaxPool and the reshapes on the integer tensor, when input and output share scale and zero point.</summary>
    internal static NodeProto? PassThrough(QOperatorLowering l, NodeProto node, NodeProto q)
    {
        var g = l.View;
        if (!l.Dq.TryGetValue(node.Input[0], out var d) || d.Input.Count != 3 || q.Input.Count != 3) return null;
        // The QDQ writer gives a shared-scale output its own initializers with equal values.
        if (!Same(d.Input[1], q.Input[1]) || !Same(d.Input[2], q.Input[2])) return null;
        return GraphEditor.Node(node.OpType, node.Domain, node.Name, new[] { d.Input[0] }.Concat(node.Input.Skip(1)), q.Output[0], node.Attribute);

        bool Same(string a, string b) => a == b || (g.Initializers.TryGetValue(a, out var ta) && g.Initializers.TryGetValue(b, out var tb)
            && ta.DataType == tb.DataType && TensorData.ReadFloats(ta).SequenceEqual(TensorData.ReadFloats(tb)));
    }
}
