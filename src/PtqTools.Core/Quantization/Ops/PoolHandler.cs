using Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>AveragePool and GlobalAveragePool: own output range; QOperator com.microsoft QLinearAveragePool (the
/// attributes copied) and QLinearGlobalAveragePool (channels_last = 0); the engine runs both fused.</summary>
sealed class PoolHandler : OpHandler
{
    public override IReadOnlyList<string> OpTypes { get; } = new[] { "AveragePool", "GlobalAveragePool" };

    internal override NodeProto? ToQOperator(QOperatorLowering l, NodeProto node, NodeProto q, NodeProto? relu) =>
        QOperatorConverter.Unary(l, node, q, "QLinear" + node.OpType, copyAttributes: node.OpType == "AveragePool");

    public override EngineFusion? Engine(string opType) => new(FusionPattern.Pool, "QLinear" + opType);
}
