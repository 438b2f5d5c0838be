using Onnx;

namespace PtqTools.Core.Onnx;

/// <summary>Read-only lookups over one graph: producers, consumers, initializers and element types.</summary>
public sealed class GraphView
{
    public GraphView(GraphProto graph)
    {
        Graph = graph;
        Initializers = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
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

    public static string Describe(ValueInfoProto vi) =>
        $"{vi.Name}: {OnnxDataTypes.Name(vi.Type?.TensorType?.ElemType ?? 0)}{ShapeText(vi)}";

    /// <summary>A light forward pass over element types: enough to keep integer shape arithmetic out of the
    /// quantizer's reach.</summary>
    void InferElementTypes()
    {
        foreach (var t in Graph.Initializer) ElementTypes[t.Name] = t.DataType;
        foreach (var v in Graph.Input.Concat(Graph.ValueInfo).Concat(Graph.Output))
            if (v.Type?.TensorType is { } tt && tt.ElemType != 0) ElementTypes[v.Name] = tt.ElemType;
        foreach (var node in Graph.Node)
        {
            int? type = node.OpType switch
            {
                "Shape" or "Size" or "NonZero" or "ArgMax" or "ArgMin" => (int)OnnxDataType.Int64,
                "Equal" or "Less" or "Greater" or "LessOrEqual" or "GreaterOrEqual" or "Not" or "And" or "Or" or "Xor" or "IsNaN" or "IsInf" => (int)OnnxDataType.Bool,
                "Cast" => (int?)node.Attribute.FirstOrDefault(a => a.Name == "to")?.I,
                "Constant" => node.Attribute.FirstOrDefault(a => a.Name == "value")?.T?.DataType
                    ?? (node.Attribute.Any(a => a.Name is "value_int" or "value_ints") ? (int)OnnxDataType.Int64 : (int)OnnxDataType.Float),
                "ConstantOfShape" => node.Attribute.FirstOrDefault(a => a.Name == "value")?.T?.DataType ?? (int)OnnxDataType.Float,
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
