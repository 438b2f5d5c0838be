using Onnx;

namespace PtqTools.Core.Onnx;

/// <summary>Read-only lookups over one graph: producers, consumers, initializers and element types. A subgraph's
/// view (an If branch, a Loop or Scan body) sees its outer scopes: their initializers and element types, and
/// <see cref="Key"/> names each tensor by the scope that defines it.</summary>
public sealed class GraphView
{
    public GraphView(GraphProto graph) : this(graph, null, "") { }

    /// <param name="outer">The view of the graph that holds the node owning this subgraph.</param>
    /// <param name="scope">The scope path of this graph: "" for the main graph, else "Node/attribute/" after the outer scope.</param>
    public GraphView(GraphProto graph, GraphView? outer, string scope)
    {
        Graph = graph;
        Outer = outer;
        Scope = scope;
        Initializers = outer is null ? new Dictionary<string, TensorProto>(StringComparer.Ordinal) : new Dictionary<string, TensorProto>(outer.Initializers, StringComparer.Ordinal);
        foreach (var t in graph.Initializer) Initializers[t.Name] = t;
        if (outer is not null) foreach (var (k, v) in outer.ElementTypes) ElementTypes[k] = v;
        Defined = graph.Input.Select(i => i.Name).Concat(graph.Initializer.Select(t => t.Name))
            .Concat(graph.Node.SelectMany(n => n.Output)).Where(n => n.Length > 0).ToHashSet(StringComparer.Ordinal);
        GraphInputs = graph.Input.Select(i => i.Name).Where(n => !Initializers.ContainsKey(n)).ToHashSet(StringComparer.Ordinal);
        GraphOutputs = graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            foreach (var o in node.Output) if (o.Length > 0) Producers[o] = node;
            foreach (var i in node.Input)
            {
                if (i.Length == 0) continue;
                if (!Consumers.TryGetValue(i, out var list)) Consumers[i] = list = new List<NodeProto>();
                if (!list.Contains(node)) list.Add(node);
            }
        }
        InferElementTypes();
    }

    public GraphProto Graph { get; }
    public GraphView? Outer { get; }
    public string Scope { get; }
    /// <summary>Tensors this graph itself defines (inputs, its own initializers, node outputs).</summary>
    public HashSet<string> Defined { get; }

    /// <summary>The model-wide name of a tensor read here: the scope of the graph that defines it, then its name.
    /// Main-graph tensors keep their plain names.</summary>
    public string Key(string tensor) => Defined.Contains(tensor) || Outer is null ? Scope + tensor : Outer.Key(tensor);

    /// <summary>The views of the subgraphs of a node (If branches, Loop and Scan bodies), with their scopes.</summary>
    public IEnumerable<GraphView> Subgraphs(NodeProto node)
    {
        foreach (var attr in node.Attribute)
        {
            if (attr.G is not null) yield return new GraphView(attr.G, this, $"{Scope}{node.Name}/{attr.Name}/");
            for (int k = 0; k < attr.Graphs.Count; k++) yield return new GraphView(attr.Graphs[k], this, $"{Scope}{node.Name}/{attr.Name}/{k}/");
        }
    }
    public Dictionary<string, TensorProto> Initializers { get; }
    public HashSet<string> GraphInputs { get; }
    public HashSet<string> GraphOutputs { get; }
    public Dictionary<string, NodeProto> Producers { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, List<NodeProto>> Consumers { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, int> ElementTypes { get; } = new(StringComparer.Ordinal);

    public IReadOnlyList<NodeProto> ConsumersOf(string tensor) =>
        Consumers.TryGetValue(tensor, out var list) ? list : (IReadOnlyList<NodeProto>)Array.Empty<NodeProto>();

    public bool IsInitializer(string tensor) => Initializers.ContainsKey(tensor);

    /// <summary>Float32 unless known otherwise: the quantizer only touches float tensors.</summary>
    public bool IsFloat(string tensor) => !ElementTypes.TryGetValue(tensor, out var t) || t == (int)OnnxDataType.Float;

    public static long[]? Shape(ValueInfoProto vi)
    {
        var shape = vi.Type?.TensorType?.Shape;
        if (shape is null) return null;
        return shape.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : -1).ToArray();
    }

    public static string ShapeText(ValueInfoProto vi)
    {
        var shape = vi.Type?.TensorType?.Shape;
        if (shape is null) return "?";
        return "[" + string.Join(",", shape.Dim.Select(d =>
            d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue.ToString() :
            d.DimParam.Length > 0 ? d.DimParam : "?")) + "]";
    }

    /// <summary>A graph input or output as an object: name, element type, shape.</summary>
    public static Model.TensorInfo Info(ValueInfoProto vi)
    {
        var shape = vi.Type?.TensorType?.Shape;
        return new Model.TensorInfo
        {
            Name = vi.Name,
            ElementType = OnnxDataTypes.Name(vi.Type?.TensorType?.ElemType ?? 0),
            RankKnown = shape is not null,
            Shape = new(shape?.Dim.Select(d =>
                d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue.ToString(System.Globalization.CultureInfo.InvariantCulture) :
                d.DimParam.Length > 0 ? d.DimParam : "?") ?? Enumerable.Empty<string>()),
        };
    }

    public static string Describe(ValueInfoProto vi) =>
        $"{vi.Name}: {OnnxDataTypes.Name(vi.Type?.TensorType?.ElemType ?? 0)}{ShapeText(vi)}";

    /// <summary>A light forward pass over element types: enough to keep integer shape arithmetic out of the
    /// quantizer's reach.</summary>
    void InferElementTypes()
    {
        foreach (var t in Graph.Initializer) ElementTypes[t.Name] = t.DataType;
        // Subgraph values shadow nothing (ONNX names are SSA across scopes), but a stale outer guess must not win.
        foreach (var n in Graph.Node) foreach (var o in n.Output) if (Outer is not null) ElementTypes.Remove(o);
        foreach (var v in Graph.Input.Concat(Graph.ValueInfo).Concat(Graph.Output))
            if (v.Type?.TensorType is { } tt && tt.ElemType != 0) ElementTypes[v.Name] = tt.ElemType;
        foreach (var node in Graph.Node)
        {
            if (node.OpType is "If" or "Loop" or "Scan")
            {
                // Control flow: each output has the type of the matching subgraph output (Loop's body starts with its condition).
                var body = node.Attribute.FirstOrDefault(a => a.Name is "then_branch" or "body")?.G;
                int skip = node.OpType == "Loop" ? 1 : 0;
                for (int k = 0; body is not null && k < node.Output.Count && k + skip < body.Output.Count; k++)
                    if (node.Output[k].Length > 0 && body.Output[k + skip].Type?.TensorType?.ElemType is int et and not 0)
                        ElementTypes.TryAdd(node.Output[k], et);
                continue;
            }
            int? type = node.OpType switch
            {
                "Shape" or "Size" or "NonZero" or "ArgMax" or "ArgMin" => (int)OnnxDataType.Int64,
                "Equal" or "Less" or "Greater" or "LessOrEqual" or "GreaterOrEqual" or "Not" or "And" or "Or" or "Xor" or "IsNaN" or "IsInf" => (int)OnnxDataType.Bool,
                "Cast" => (int?)node.Attr("to")?.I,
                "Constant" => node.TensorAttr("value")?.DataType
                    ?? (node.Attribute.Any(a => a.Name is "value_int" or "value_ints") ? (int)OnnxDataType.Int64 : (int)OnnxDataType.Float),
                "ConstantOfShape" => node.TensorAttr("value")?.DataType ?? (int)OnnxDataType.Float,
                "QuantizeLinear" => node.Input.Count > 2 && ElementTypes.TryGetValue(node.Input[2], out var zt) ? zt : (int)OnnxDataType.UInt8,
                "DequantizeLinear" => (int)OnnxDataType.Float,
                "Where" => node.Input.Count > 1 && ElementTypes.TryGetValue(node.Input[1], out var wt) ? wt : null,
                _ => node.Input.Count > 0 && ElementTypes.TryGetValue(node.Input[0], out var it) ? it : null,
            };
            if (type is null) continue;
            for (int k = 0; k < node.Output.Count; k++)
                if (node.Output[k].Length > 0 && !ElementTypes.ContainsKey(node.Output[k]))
                    ElementTypes[node.Output[k]] = (node.OpType is "TopK" or "MaxPool") && k == 1 ? (int)OnnxDataType.Int64 : type.Value;
        }
    }
}
