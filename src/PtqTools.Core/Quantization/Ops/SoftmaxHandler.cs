using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>Softmax: its input and output are calibrated like any op with its own output range; ONNX Runtime fuses
/// DQ → Softmax → Q into QLinearSoftmax, and QOperator writes com.microsoft QLinearSoftmax (a lookup table over the
/// 256 input codes) with the opset the Softmax was written in (its axis meaning changed at 13).</summary>
sealed class SoftmaxHandler : OpHandler
{
    public override IReadOnlyList<string> OpTypes { get; } = new[] { "Softmax" };

    internal override NodeProto? ToQOperator(QOperatorLowering l, NodeProto node, NodeProto q, NodeProto? relu)
    {
        if (relu is not null || l.Dequantized(node.Input[0]) is not { } x) return null;
        var n = GraphEditor.Node("QLinearSoftmax", GraphEditor.MsDomain, node.Name, x.Concat(q.Input.Skip(1)), q.Output[0], node.Attribute);
        long opset = l.Model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 13;
        n.Attribute.Add(GraphEditor.Int("opset", opset));
        return n;
    }
}
