using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>Add and Mul: every float input quantized; a constant operand is quantized like an activation. QOperator
/// com.microsoft QLinearAdd / QLinearMul; the engine fuses Add into QLinearAdd.</summary>
sealed class BinaryHandler : OpHandler
{
    public override IReadOnlyList<string> OpTypes { get; } = new[] { "Add", "Mul" };

    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        node.Input.All(g.IsFloat) ? null : "its inputs are not float32";
    public override IEnumerable<int> ActivationInputs(NodeProto node, GraphView g) =>
        Enumerable.Range(0, node.Input.Count).Where(i => !g.IsInitializer(node.Input[i]));
    public override IEnumerable<int> ConstantInputs(NodeProto node, GraphView g) =>
        Enumerable.Range(0, node.Input.Count).Where(i => IsFloatInitializer(g, node, i));

    internal override NodeProto? ToQOperator(QOperatorLowering l, NodeProto node, NodeProto q, NodeProto? relu) =>
        QOperatorConverter.Binary(l, node, q, "QLinear" + node.OpType, GraphEditor.MsDomain);

    public override EngineFusion? Engine(string opType) => opType == "Add" ? new(FusionPattern.Binary, "QLinearAdd") : null;
}
