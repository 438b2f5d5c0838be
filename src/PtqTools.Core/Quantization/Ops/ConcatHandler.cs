using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>Concat of activations: every input calibrated; QOperator com.microsoft QLinearConcat.</summary>
sealed class ConcatHandler : OpHandler
{
    public override IReadOnlyList<string> OpTypes { get; } = new[] { "Concat" };

    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        node.Input.All(i => g.IsFloat(i) && !g.IsInitializer(i)) ? null : "some inputs are constants or not float32";
    public override IEnumerable<int> ActivationInputs(NodeProto node, GraphView g) => Enumerable.Range(0, node.Input.Count);

    internal override NodeProto? ToQOperator(QOperatorLowering l, NodeProto node, NodeProto q, NodeProto? relu)
    {
        var inputs = new List<string>(q.Input.Skip(1));
        foreach (var i in node.Input)
        {
            if (l.Dequantized(i) is not { } x) return null;
            inputs.AddRange(x);
        }
        return GraphEditor.Node("QLinearConcat", GraphEditor.MsDomain, node.Name, inputs, q.Output[0], node.Attribute);
    }
}
