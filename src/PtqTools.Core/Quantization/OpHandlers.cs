using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>
/// The one op registry: from op type to its <see cref="OpHandler"/>, which says for every mode and format what is
/// quantized, how it lowers to QOperator, what the engine fuses and runs, and why a node stays float. An op without
/// a handler stays float. Relu and Clip are not handled ops but folded into their producer's range.
/// </summary>
public static class OpHandlers
{
    /// <summary>Every <see cref="OpHandler"/> subclass of this assembly, by each op type it serves.</summary>
    static readonly Dictionary<string, OpHandler> Table = Discover();

    static Dictionary<string, OpHandler> Discover()
    {
        var table = new Dictionary<string, OpHandler>(StringComparer.Ordinal);
        foreach (var type in typeof(OpHandler).Assembly.GetTypes()
                     .Where(t => t.IsSubclassOf(typeof(OpHandler)) && !t.IsAbstract).OrderBy(t => t.FullName, StringComparer.Ordinal))
        {
            var handler = (OpHandler)Activator.CreateInstance(type, nonPublic: true)!;
            foreach (var op in handler.OpTypes)
                if (!table.TryAdd(op, handler))
                    throw new InvalidOperationException($"Two op handlers claim {op}: {table[op].GetType().Name} and {type.Name}.");
        }
        return table;
    }

    /// <summary>Ops folded into their producer's range rather than quantized themselves.</summary>
    public static readonly IReadOnlySet<string> FoldedActivations = new HashSet<string>(StringComparer.Ordinal) { "Relu", "Clip" };

    /// <summary>The bounds of a folded activation (Relu [0, inf); Clip its constant min and max), or null when they
    /// are not constants (such a Clip is not folded).</summary>
    public static (float Min, float Max)? FoldedBounds(NodeProto node, GraphView graph)
    {
        if (node.Domain is not ("" or "ai.onnx")) return null;
        if (node.OpType == "Relu") return (0f, float.PositiveInfinity);
        if (node.OpType != "Clip") return null;
        float min = float.NegativeInfinity, max = float.PositiveInfinity;
        if (node.Attr("min") is { } amin) min = amin.F;
        if (node.Attr("max") is { } amax) max = amax.F;
        for (int i = 1; i <= 2 && i < node.Input.Count; i++)
        {
            if (node.Input[i].Length == 0) continue;
            if (!graph.Initializers.TryGetValue(node.Input[i], out var t) || t.DataType != (int)OnnxDataType.Float
                || t.DataLocation == TensorProto.Types.DataLocation.External) return null;
            var v = TensorData.ReadFloats(t);
            if (v.Length != 1) return null;
            if (i == 1) min = v[0]; else max = v[0];
        }
        return (min, max);
    }

    public static IReadOnlyCollection<string> OpTypes => Table.Keys;

    /// <summary>The op types the weight modes (Dynamic, WeightOnly) quantize.</summary>
    public static IReadOnlyCollection<string> WeightModeOpTypes => Table.Where(kv => kv.Value.InWeightModes).Select(kv => kv.Key).ToList();

    public static OpHandler? Get(NodeProto node) =>
        node.Domain is "" or "ai.onnx" && Table.TryGetValue(node.OpType, out var h) ? h : null;

    /// <summary>The handler of an op type whatever the node's domain (the engine's fusion matches by op type).</summary>
    public static OpHandler? ForOpType(string opType) => Table.GetValueOrDefault(opType);

    /// <summary>Whether the node can be quantized, and the reason either way.</summary>
    public static (bool Quantizable, string Reason) Assess(NodeProto node, GraphView graph)
    {
        if (FoldedActivations.Contains(node.OpType))
            return (false, FoldedBounds(node, graph) is null
                ? "kept in float: its bounds are not constants, so it cannot be folded into its producer's range"
                : "folded into the range of the op before it when that op is quantized");
        var handler = Get(node);
        if (handler is null) return (false, $"no int8 handler for {node.OpType}: kept in float");
        var why = handler.CannotQuantize(node, graph);
        return why is null ? (true, "int8") : (false, $"kept in float: {why}");
    }
}
