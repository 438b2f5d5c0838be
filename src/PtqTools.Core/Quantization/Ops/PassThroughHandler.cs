using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>Ops that move or select values without changing them: the output keeps the input's scale and zero
/// point, so QOperator runs them on the integer tensor (when no Relu follows), as does the engine for the ones it has
/// (MaxPool, Reshape, Flatten). Resize moves and blends values within the input's range: ONNX Runtime drops equal
/// Q/DQ around it. A new such op is one entry in <see cref="OpTypes"/> (and in the engine's op table, for the engine).</summary>
sealed class PassThroughHandler : OpHandler
{
    public override IReadOnlyList<string> OpTypes { get; } =
        new[] { "MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Resize" };

    /// <summary>The pass-through ops the engine runs on integer tensors.</summary>
    static readonly HashSet<string> InEngine = new(StringComparer.Ordinal) { "MaxPool", "Reshape", "Flatten" };

    public override OutputRule Output => OutputRule.SharesInput;
    public override string? CannotQuantize(NodeProto node, GraphView g) =>
        base.CannotQuantize(node, g) ?? (node.OpType == "MaxPool" && node.Output.Count > 1 && node.Output[1].Length > 0
            ? "its Indices output is used" : null);

    internal override NodeProto? ToQOperator(QOperatorLowering l, NodeProto node, NodeProto q, NodeProto? relu) =>
        relu is null ? QOperatorConverter.PassThrough(l, node, q) : null;

    public override EngineFusion? Engine(string opType) => InEngine.Contains(opType) ? new(FusionPattern.SameScale, opType) : null;
}
