using Onnx;

namespace PtqTools.Core.Onnx;

/// <summary>
/// The one place that edits ONNX graphs: node creation, attribute access and creation, quantized initializers and
/// DequantizeLinear insertion, unused-initializer removal and a stable topological order. Every writer (QDQ, weight
/// modes, QOperator lowering, the accuracy algorithms) and every reader of attributes goes through it, so a node or
/// an initializer is written the same way everywhere.
/// </summary>
public static class GraphEditor
{
    /// <summary>ONNX Runtime's contrib domain (16-bit Q/DQ, QLinearAdd, MatMulNBits, ...).</summary>
    public const string MsDomain = "com.microsoft";

    // ---- attributes ----

    /// <summary>The attribute of that name, or null.</summary>
    public static AttributeProto? Attr(this NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name);

    /// <summary>An integer attribute, or <paramref name="fallback"/> when the node has none of that name.</summary>
    public static long IntAttr(this NodeProto node, string name, long fallback) => node.Attr(name) is { } a ? a.I : fallback;

    /// <summary>A float attribute, or <paramref name="fallback"/> when the node has none of that name.</summary>
    public static float FloatAttr(this NodeProto node, string name, float fallback) => node.Attr(name) is { } a ? a.F : fallback;

    /// <summary>An integer list attribute, or null.</summary>
    public static long[]? IntsAttr(this NodeProto node, string name) => node.Attr(name)?.Ints.ToArray();

    /// <summary>A string attribute (UTF-8), or <paramref name="fallback"/>.</summary>
    public static string StringAttr(this NodeProto node, string name, string fallback) => node.Attr(name) is { } a ? a.S.ToStringUtf8() : fallback;

    /// <summary>A string attribute (UTF-8), or null.</summary>
    public static string? StringAttr(this NodeProto node, string name) => node.Attr(name)?.S.ToStringUtf8();

    /// <summary>A tensor attribute (Constant's value), or null.</summary>
    public static TensorProto? TensorAttr(this NodeProto node, string name) => node.Attr(name)?.T;

    /// <summary>Whether the node has an attribute of that name.</summary>
    public static bool HasAttr(this NodeProto node, string name) => node.Attr(name) is not null;

    /// <summary>A new integer attribute.</summary>
    public static AttributeProto Int(string name, long value) => new() { Name = name, I = value, Type = AttributeProto.Types.AttributeType.Int };

    /// <summary>A new tensor attribute.</summary>
    public static AttributeProto Tensor(string name, TensorProto value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Tensor, T = value };

    // ---- nodes ----

    /// <summary>A node with one output.</summary>
    public static NodeProto Node(string op, string name, string[] inputs, string output, string domain = "")
    {
        var node = new NodeProto { OpType = op, Name = name, Domain = domain };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        return node;
    }

    /// <summary>A node with one output and copies of <paramref name="attributes"/>.</summary>
    public static NodeProto Node(string op, string domain, string name, IEnumerable<string> inputs, string output, IEnumerable<AttributeProto>? attributes)
    {
        var n = new NodeProto { OpType = op, Domain = domain, Name = name };
        n.Input.AddRange(inputs);
        n.Output.Add(output);
        if (attributes is not null) n.Attribute.AddRange(attributes.Select(a => a.Clone()));
        return n;
    }

    // ---- quantized initializers and DequantizeLinear ----

    /// <summary>An initializer of 8-, 16- or 32-bit integer codes (16-bit ones in int32_data, which every reader takes).</summary>
    public static TensorProto QuantizedTensor(string name, IEnumerable<int> values, OnnxDataType type, params long[] dims) => type switch
    {
        OnnxDataType.UInt16 or OnnxDataType.Int16 => Typed16(name, values, type, dims),
        OnnxDataType.UInt8 => TensorData.FromUInt8(name, values.Select(v => (byte)v).ToArray(), dims),
        OnnxDataType.Int8 => TensorData.FromInt8(name, values.Select(v => (sbyte)v).ToArray(), dims),
        OnnxDataType.Int32 => TensorData.FromInt32(name, values.ToArray(), dims),
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    static TensorProto Typed16(string name, IEnumerable<int> values, OnnxDataType type, long[] dims)
    {
        var t = new TensorProto { Name = name, DataType = (int)type };
        t.Dims.AddRange(dims);
        t.Int32Data.AddRange(values);
        return t;
    }

    /// <summary>A DequantizeLinear of a quantized initializer, with its scale and zero-point initializers;
    /// <paramref name="zeroPoints"/> per axis (zeros when null). Returns the dequantized tensor's name.</summary>
    public static string AddDequantize(GraphProto graph, List<NodeProto> nodes, NameScope names, string baseName, string quantized,
        float[] scales, int[]? zeroPoints, OnnxDataType zpType, int? axis, int scalarZeroPoint = 0)
    {
        bool perAxis = axis is not null;
        var scaleName = names.Fresh(baseName + "_scale");
        var zpName = names.Fresh(baseName + "_zero_point");
        graph.Initializer.Add(perAxis ? TensorData.FromFloats(scaleName, scales, scales.Length) : TensorData.FromFloats(scaleName, scales[..1]));
        var zps = perAxis ? (IEnumerable<int>?)zeroPoints ?? Enumerable.Repeat(0, scales.Length) : new[] { scalarZeroPoint };
        graph.Initializer.Add(perAxis ? QuantizedTensor(zpName, zps, zpType, scales.Length) : QuantizedTensor(zpName, zps, zpType));
        var output = names.Fresh(baseName + "_DequantizeLinear_Output");
        var dq = Node("DequantizeLinear", names.Fresh(baseName + "_DequantizeLinear"), new[] { quantized, scaleName, zpName }, output,
            zpType is OnnxDataType.UInt16 or OnnxDataType.Int16 ? MsDomain : "");
        if (perAxis) dq.Attribute.Add(Int("axis", axis!.Value));
        nodes.Add(dq);
        return output;
    }

    /// <summary>
    /// Puts a QuantizeLinear → DequantizeLinear pair on <paramref name="tensor"/> (scale and zero point already in the
    /// graph), the nodes added to <paramref name="added"/>, and gives every reader the dequantized copy. A graph output
    /// this graph produces keeps its name (the producer writes a renamed float tensor and the DequantizeLinear writes
    /// the output); one it only passes on stays float. Returns the quantized and the dequantized tensor's names.
    /// </summary>
    public static (string Quantized, string Dequantized) InsertQdqPair(GraphView view, List<NodeProto> added, NameScope names, string tensor,
        string scaleName, string zpName, string domain)
    {
        var graph = view.Graph;
        var quantized = names.Fresh(tensor + "_QuantizeLinear_Output");
        bool isGraphOutput = view.GraphOutputs.Contains(tensor) && view.Producers.ContainsKey(tensor);
        string source = tensor, dequantized;
        if (isGraphOutput)
        {
            source = names.Fresh(tensor + "_float");
            // Looked up now, not in the view: a rewrite before this (Gather) may have given the tensor a new producer.
            var producer = graph.Node.Concat(added).FirstOrDefault(n => n.Output.Contains(tensor));
            if (producer is not null)
                for (int k = 0; k < producer.Output.Count; k++) if (producer.Output[k] == tensor) producer.Output[k] = source;
            foreach (var consumer in view.ConsumersOf(tensor))
                for (int k = 0; k < consumer.Input.Count; k++) if (consumer.Input[k] == tensor) consumer.Input[k] = source;
            dequantized = tensor;
        }
        else
        {
            dequantized = names.Fresh(tensor + "_DequantizeLinear_Output");
            foreach (var consumer in view.ConsumersOf(tensor))
                for (int k = 0; k < consumer.Input.Count; k++) if (consumer.Input[k] == tensor) consumer.Input[k] = dequantized;
        }
        added.Add(Node("QuantizeLinear", names.Fresh(tensor + "_QuantizeLinear"), new[] { source, scaleName, zpName }, quantized, domain));
        added.Add(Node("DequantizeLinear", names.Fresh(tensor + "_DequantizeLinear"), new[] { quantized, scaleName, zpName }, dequantized, domain));
        return (quantized, dequantized);
    }

    /// <summary>Adds the com.microsoft opset import when a node of the graph (or a subgraph) uses that domain.</summary>
    public static void ImportMsDomainIfUsed(ModelProto model)
    {
        if (OpsetUpgrader.AllNodes(model.Graph).Any(n => n.Domain == MsDomain) && !model.OpsetImport.Any(o => o.Domain == MsDomain))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = MsDomain, Version = 1 });
    }

    // ---- graph order and cleanup ----

    /// <summary>Drops initializers no node (in any subgraph) and no graph output reads.</summary>
    public static void RemoveUnusedInitializers(GraphProto graph)
    {
        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in OpsetUpgrader.AllNodes(graph)) used.UnionWith(n.Input);
        used.UnionWith(graph.Output.Select(o => o.Name));
        var keep = graph.Initializer.Where(t => used.Contains(t.Name)).ToList();
        graph.Initializer.Clear();
        graph.Initializer.AddRange(keep);
    }

    /// <summary>Tensors a node's subgraphs read from the scopes around them (the node's implicit inputs).</summary>
    public static IEnumerable<string> OuterReferences(NodeProto node)
    {
        foreach (var attr in node.Attribute)
            foreach (var g in attr.G is null ? attr.Graphs : attr.Graphs.Prepend(attr.G))
            {
                var defined = g.Input.Select(i => i.Name).Concat(g.Initializer.Select(t => t.Name)).Concat(g.Node.SelectMany(n => n.Output)).ToHashSet(StringComparer.Ordinal);
                foreach (var n in g.Node)
                    foreach (var i in n.Input.Concat(OuterReferences(n)))
                        if (i.Length > 0 && !defined.Contains(i)) yield return i;
                foreach (var o in g.Output) if (!defined.Contains(o.Name)) yield return o.Name;
            }
    }

    /// <summary>Stable topological order (Kahn, ties broken by current position).</summary>
    public static void SortTopologically(GraphProto graph)
    {
        var nodes = graph.Node.ToList();
        var producer = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < nodes.Count; i++) foreach (var o in nodes[i].Output) if (o.Length > 0) producer[o] = i;
        var indegree = new int[nodes.Count];
        var dependents = new List<int>[nodes.Count];
        for (int i = 0; i < nodes.Count; i++)
            foreach (var input in nodes[i].Input.Concat(OuterReferences(nodes[i])).Distinct())
                if (input.Length > 0 && producer.TryGetValue(input, out var p) && p != i)
                {
                    indegree[i]++;
                    (dependents[p] ??= new List<int>()).Add(i);
                }
        var ready = new SortedSet<int>(Enumerable.Range(0, nodes.Count).Where(i => indegree[i] == 0));
        var order = new List<NodeProto>(nodes.Count);
        while (ready.Count > 0)
        {
            var n = ready.Min;
            ready.Remove(n);
            order.Add(nodes[n]);
            if (dependents[n] is null) continue;
            foreach (var d in dependents[n]) if (--indegree[d] == 0) ready.Add(d);
        }
        if (order.Count != nodes.Count)
            throw new PtqException("GraphCycle", PtqErrorKind.InvalidData, "The quantized graph would contain a cycle.", null);
        graph.Node.Clear();
        graph.Node.AddRange(order);
    }
}
