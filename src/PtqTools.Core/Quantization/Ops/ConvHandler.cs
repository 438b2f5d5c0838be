using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>Conv: int8 weights per output channel (axis 0), int32 bias; QOperator QLinearConv; the engine's
/// QLinearConv. Float in the weight modes (they quantize MatMul weights).</summary>
sealed class ConvHandler : OpHandler
{
    public override IReadOnlyList<string> OpTypes { get; } = new[] { "Conv" };

    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        base.CannotQuantize(node, g) ?? (IsFloatInitializer(g, node, 1) ? null : "its weight is not a float32 initializer");
    public override (int Input, int Axis)? Weight(NodeProto node, GraphView g) => (1, 0);
    public override int? Bias(NodeProto node, GraphView g) => IsFloatInitializer(g, node, 2) ? 2 : null;

    public override PairLayout? Pairs(NodeProto node, long[] dims) =>
        // A depthwise convolution (one input and one output channel per group) runs in MLAS's depthwise kernels,
        // which widen to int16 or int32 before they multiply: exact on every class.
        dims.Length >= 3 && dims[1] == 1 && dims[0] == node.IntAttr("group", 1) && dims[0] > 1 ? null
        : dims.Length >= 3 ? PairLayout.Conv(dims) : null;

    public override (int Axis, long Channels)? FloatInputChannels(NodeProto node, TensorProto w) => (1, w.Dims[1] * node.IntAttr("group", 1));

    internal override NodeProto? ToQOperator(QOperatorLowering l, NodeProto node, NodeProto q, NodeProto? relu)
    {
        if (node.Input.Count < 2 || l.Dequantized(node.Input[0]) is not { } x || l.Dequantized(node.Input[1]) is not { } w) return null;
        var inputs = x.Concat(w).Concat(q.Input.Skip(1)).ToList();
        if (node.Input.Count > 2 && node.Input[2].Length > 0)
        {
            if (l.Dequantized(node.Input[2]) is not { } b || !l.View.Initializers.TryGetValue(b.First(), out var bias) || bias.DataType != (int)OnnxDataType.Int32) return null;
            inputs.Add(b.First());
        }
        return GraphEditor.Node("QLinearConv", "", node.Name, inputs, q.Output[0], node.Attribute);
    }

    public override EngineFusion? Engine(string opType) => new(FusionPattern.WeightedProduct, "QLinearConv");
}
