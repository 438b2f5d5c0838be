using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>ConvTranspose: weight [C_in, C_out / group, kH, kW], so output channels are axis 1; the int32 bias
/// needs one weight scale per output channel, which only group 1 gives. No QOperator form (ONNX Runtime has no
/// QLinearConvTranspose in ai.onnx) and no engine fusion: it stays float between its Q/DQ there.</summary>
sealed class ConvTransposeHandler : OpHandler
{
    public override IReadOnlyList<string> OpTypes { get; } = new[] { "ConvTranspose" };

    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        base.CannotQuantize(node, g) ?? (IsFloatInitializer(g, node, 1) && g.Initializers[node.Input[1]].Dims.Count >= 3 ? null : "its weight is not a float32 initializer");
    public override (int Input, int Axis)? Weight(NodeProto node, GraphView g) => (1, 1);
    public override int? Bias(NodeProto node, GraphView g) => IsFloatInitializer(g, node, 2) && node.IntAttr("group", 1) == 1 ? 2 : null;
    public override PairLayout? Pairs(NodeProto node, long[] dims) => dims.Length >= 3 ? PairLayout.ConvTranspose(dims) : null;
    public override (int Axis, long Channels)? FloatInputChannels(NodeProto node, TensorProto w) => (1, w.Dims[0]);
}
