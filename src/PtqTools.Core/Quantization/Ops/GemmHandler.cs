using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>Gemm: B quantized per output column, C as int32 bias when alpha = beta = 1 and C is [N]. No QOperator
/// form (it stays float between Q/DQ); the engine fuses it into QGemm, with or without a QuantizeLinear after it.</summary>
sealed class GemmHandler : OpHandler
{
    public override IReadOnlyList<string> OpTypes { get; } = new[] { "Gemm" };

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
    public override PairLayout? Pairs(NodeProto node, long[] dims) =>
        dims.Length == 2 ? node.IntAttr("transB", 0) == 1 ? PairLayout.Rows(dims[0], dims[1]) : PairLayout.MatMul(dims[0], dims[1]) : null;

    public override (int Axis, long Channels)? FloatInputChannels(NodeProto node, TensorProto w) =>
        (node.IntAttr("transA", 0) == 1 ? 0 : 1, node.IntAttr("transB", 0) == 1 ? w.Dims[1] : w.Dims[0]);

    public override EngineFusion? Engine(string opType) => new(FusionPattern.WeightedProduct, "QGemm");
}
