using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>How a quantized op's output is treated.</summary>
public enum OutputRule
{
    /// <summary>The output gets its own range from calibration (Relu after it is folded into that range).</summary>
    Own,
    /// <summary>The output reuses the input's scale and zero point (max pooling, reshapes): int8 passes through.</summary>
    SharesInput,
    /// <summary>The op runs on a quantized constant and its output is dequantized to float (Gather of an embedding table).</summary>
    Dequantized,
}

/// <summary>
/// What quantizing one op type means: which inputs are activations (calibrated), which is a weight (quantized
/// ahead of time, per channel along which axis), which is a bias (int32), and how the output is treated.
/// A new op is one handler registered in <see cref="OpHandlers"/>.
/// </summary>
public abstract class OpHandler
{
    public virtual OutputRule Output => OutputRule.Own;

    /// <summary>Why this node cannot be quantized, or null when it can.</summary>
    public virtual string? CannotQuantize(NodeProto node, GraphView graph) =>
        node.Input.Count == 0 || !graph.IsFloat(node.Input[0]) ? "its input is not float32" : null;

    /// <summary>Indices of inputs that carry activations.</summary>
    public virtual IEnumerable<int> ActivationInputs(NodeProto node, GraphView graph) => new[] { 0 };

    /// <summary>The weight input and its per-channel axis, if the op has a weight.</summary>
    public virtual (int Input, int Axis)? Weight(NodeProto node, GraphView graph) => null;

    /// <summary>The bias input, if the op has one that is quantized to int32.</summary>
    public virtual int? Bias(NodeProto node, GraphView graph) => null;

    /// <summary>Constant inputs quantized per tensor with the activation type (the constant operand of Add/Mul).</summary>
    public virtual IEnumerable<int> ConstantInputs(NodeProto node, GraphView graph) => Array.Empty<int>();

    /// <summary>The decision's reason when the node is quantized, or null for the plan's generic one.</summary>
    public virtual string? Describe(NodeProto node, GraphView graph, bool perChannel) => null;

    protected static bool IsFloatInitializer(GraphView g, NodeProto node, int index) =>
        node.Input.Count > index && g.Initializers.TryGetValue(node.Input[index], out var t) && t.DataType == (int)OnnxDataType.Float;
}

sealed class ConvHandler : OpHandler
{
    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        base.CannotQuantize(node, g) ?? (IsFloatInitializer(g, node, 1) ? null : "its weight is not a float32 initializer");
    public override (int Input, int Axis)? Weight(NodeProto node, GraphView g) => (1, 0);
    public override int? Bias(NodeProto node, GraphView g) => IsFloatInitializer(g, node, 2) ? 2 : null;
}

/// <summary>ConvTranspose: weight [C_in, C_out / group, kH, kW], so output channels are axis 1; the int32 bias
/// needs one weight scale per output channel, which only group 1 gives.</summary>
sealed class ConvTransposeHandler : OpHandler
{
    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        base.CannotQuantize(node, g) ?? (IsFloatInitializer(g, node, 1) && g.Initializers[node.Input[1]].Dims.Count >= 3 ? null : "its weight is not a float32 initializer");
    public override (int Input, int Axis)? Weight(NodeProto node, GraphView g) => (1, 1);
    public override int? Bias(NodeProto node, GraphView g) => IsFloatInitializer(g, node, 2) && node.IntAttr("group", 1) == 1 ? 2 : null;
}

/// <summary>Softmax: its input and output are calibrated like any op with its own output range; ONNX Runtime fuses
/// DQ → Softmax → Q into QLinearSoftmax.</summary>
sealed class SoftmaxHandler : OpHandler { }

/// <summary>Gather from a constant table (embeddings): the table is stored quantized, the rows are gathered as
/// integers and only they are dequantized (see <see cref="EmbeddingQuantizer"/>).</summary>
sealed class GatherHandler : OpHandler
{
    public override OutputRule Output => OutputRule.Dequantized;
    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        node.Input.Count == 2 && IsFloatInitializer(g, node, 0) && !g.IsFloat(node.Input[1]) ? null : "its data input is not a float32 initializer (a table)";
    public override IEnumerable<int> ActivationInputs(NodeProto node, GraphView g) => Array.Empty<int>();
    public override string? Describe(NodeProto node, GraphView g, bool perChannel) => EmbeddingQuantizer.Describe(node, g, perChannel);
}

sealed class GemmHandler : OpHandler
{
    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        base.CannotQuantize(node, g) ?? (IsFloatInitializer(g, node, 1) && g.Initializers[node.Input[1]].Dims.Count == 2
            ? null : "its B input is not a 2-D float32 initializer");
    // B is [K, N], or [N, K] with transB: one scale per output column N.
    public override (int Input, int Axis)? Weight(NodeProto node, GraphView g) => (1, node.IntAttr("transB", 0) == 1 ? 0 : 1);
    public override int? Bias(NodeProto node, GraphView g)
    {
        if (!IsFloatInitializer(g, node, 2) || node.FloatAttr("alpha", 1f) != 1f || node.FloatAttr("beta", 1f) != 1f) return null;
        var b = g.Initializers[node.Input[1]];
        long n = node.IntAttr("transB", 0) == 1 ? b.Dims[0] : b.Dims[1];
        var c = g.Initializers[node.Input[2]];
        return c.Dims.Count == 1 && c.Dims[0] == n ? 2 : null;
    }
}

sealed class MatMulHandler : OpHandler
{
    static bool ConstantWeight(NodeProto node, GraphView g) =>
        IsFloatInitializer(g, node, 1) && g.Initializers[node.Input[1]].Dims.Count == 2;
    public override IEnumerable<int> ActivationInputs(NodeProto node, GraphView g) =>
        ConstantWeight(node, g) ? new[] { 0 } : new[] { 0, 1 };
    public override (int Input, int Axis)? Weight(NodeProto node, GraphView g) => ConstantWeight(node, g) ? (1, 1) : null;
}

/// <summary>Add and Mul: every float input quantized; a constant operand is quantized like an activation.</summary>
sealed class BinaryHandler : OpHandler
{
    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        node.Input.All(g.IsFloat) ? null : "its inputs are not float32";
    public override IEnumerable<int> ActivationInputs(NodeProto node, GraphView g) =>
        Enumerable.Range(0, node.Input.Count).Where(i => !g.IsInitializer(node.Input[i]));
    public override IEnumerable<int> ConstantInputs(NodeProto node, GraphView g) =>
        Enumerable.Range(0, node.Input.Count).Where(i => IsFloatInitializer(g, node, i));
}

sealed class ConcatHandler : OpHandler
{
    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        node.Input.All(i => g.IsFloat(i) && !g.IsInitializer(i)) ? null : "some inputs are constants or not float32";
    public override IEnumerable<int> ActivationInputs(NodeProto node, GraphView g) => Enumerable.Range(0, node.Input.Count);
}

sealed class PoolHandler : OpHandler { }

/// <summary>Ops that move or select values without changing them: the output keeps the input's scale.</summary>
sealed class PassThroughHandler : OpHandler
{
    public override OutputRule Output => OutputRule.SharesInput;
    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        base.CannotQuantize(node, g) ?? (node.OpType == "MaxPool" && node.Output.Count > 1 && node.Output[1].Length > 0
            ? "its Indices output is used" : null);
}

/// <summary>The registry from op type to handler. An op without a handler stays float.</summary>
public static class OpHandlers
{
    static readonly Dictionary<string, OpHandler> Table = new(StringComparer.Ordinal)
    {
        ["Conv"] = new ConvHandler(),
        ["Gemm"] = new GemmHandler(),
        ["MatMul"] = new MatMulHandler(),
        ["Add"] = new BinaryHandler(),
        ["Mul"] = new BinaryHandler(),
        ["Concat"] = new ConcatHandler(),
        ["AveragePool"] = new PoolHandler(),
        ["GlobalAveragePool"] = new PoolHandler(),
        ["MaxPool"] = new PassThroughHandler(),
        ["Reshape"] = new PassThroughHandler(),
        ["Flatten"] = new PassThroughHandler(),
        ["Transpose"] = new PassThroughHandler(),
        ["Squeeze"] = new PassThroughHandler(),
        ["Unsqueeze"] = new PassThroughHandler(),
        ["ConvTranspose"] = new ConvTransposeHandler(),
        // Resize moves and blends values within the input's range: ONNX Runtime drops equal Q/DQ around it.
        ["Resize"] = new PassThroughHandler(),
        ["Softmax"] = new SoftmaxHandler(),
        ["Gather"] = new GatherHandler(),
        // Float in Static mode; their weights are quantized in the weight modes (RecurrentQuantizer).
        ["LSTM"] = new RecurrentHandler(),
        ["GRU"] = new RecurrentHandler(),
    };

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

    public static OpHandler? Get(NodeProto node) =>
        node.Domain is "" or "ai.onnx" && Table.TryGetValue(node.OpType, out var h) ? h : null;

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
