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

/// <summary>The pattern by which the PtqTools engine (<see cref="Engine.QdqFuser"/>) fuses DequantizeLinear → op
/// [→ Relu] → QuantizeLinear into one integer node, as ONNX Runtime's QDQ transformer does.</summary>
public enum FusionPattern
{
    /// <summary>DQ(x), DQ(constant weight) [, DQ(constant int32 bias)] → op [→ Relu] → Q: QLinearConv, QLinearMatMul,
    /// QGemm (QGemm also without the Q: float output).</summary>
    WeightedProduct,
    /// <summary>DQ(a), DQ(b) → op [→ Relu] → Q: QLinearAdd.</summary>
    Binary,
    /// <summary>DQ(x) → op → Q, no Relu: QLinearAveragePool, QLinearGlobalAveragePool.</summary>
    Pool,
    /// <summary>DQ(x) → op → Q with equal scale and zero point: the op runs on the integer tensor itself.</summary>
    SameScale,
}

/// <summary>What the engine runs for an op: the fused op type (an entry of the engine's op table) and the pattern.</summary>
public sealed record EngineFusion(FusionPattern Pattern, string FusedOp);

/// <summary>
/// Everything PtqTools knows about quantizing one op type, for every mode and format:
/// <list type="bullet">
/// <item>Static QDQ: which inputs are activations (calibrated), which is a weight (quantized ahead of time, per
/// channel along which axis), which is a bias (int32), which constants are quantized like activations, how the
/// output is treated, and why a node stays float (<see cref="CannotQuantize"/>).</item>
/// <item>QOperator: the integer operator the QDQ form lowers to (<see cref="ToQOperator"/>).</item>
/// <item>Dynamic and weight-only (8-bit and int4): whether and how the weight modes quantize it
/// (<see cref="CannotQuantizeWeights"/>, <see cref="QuantizeWeights"/>).</item>
/// <item>The PtqTools engine: the fused op and pattern it runs (<see cref="Engine"/>).</item>
/// </list>
/// A new op is one handler file (a subclass with a parameterless constructor; <see cref="OpHandlers"/> finds it)
/// plus its tests. See docs/architecture.md, "How to add an op".
/// </summary>
public abstract class OpHandler
{
    /// <summary>The ai.onnx op types this handler serves.</summary>
    public abstract IReadOnlyList<string> OpTypes { get; }

    // ---- static mode, QDQ ----

    public virtual OutputRule Output => OutputRule.Own;

    /// <summary>Why this node cannot be quantized in static mode, or null when it can.</summary>
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

    /// <summary>The layout in which ONNX Runtime pairs the weight's K elements in a u8 x s8 product that can
    /// saturate (<see cref="PairSaturation"/>), or null when the op runs no such product.</summary>
    public virtual PairLayout? Pairs(NodeProto node, long[] weightDims) => null;

    /// <summary>For a node of this op kept in float whose first input is quantized: the channel axis of that input
    /// and its channel count, when the layer needs its own per-channel DequantizeLinear there (ONNX Runtime would
    /// otherwise quantize its float weight per tensor); null when it does not.</summary>
    public virtual (int Axis, long Channels)? FloatInputChannels(NodeProto node, TensorProto weight) => null;

    /// <summary>Writes the node's static quantization itself instead of the generic Q/DQ placement (Gather's
    /// quantized table); false for the generic writer.</summary>
    internal virtual bool RewriteStatic(QdqRewrite rewrite, NodeProto node) => false;

    // ---- QOperator ----

    /// <summary>The QOperator node that replaces DQ → node [→ <paramref name="relu"/>] → <paramref name="q"/>, or null
    /// when the op stays float between its Q/DQ.</summary>
    internal virtual NodeProto? ToQOperator(QOperatorLowering lowering, NodeProto node, NodeProto q, NodeProto? relu) => null;

    // ---- dynamic and weight-only modes ----

    /// <summary>Whether the weight modes (Dynamic, WeightOnly 8-bit and int4) quantize this op at all; the others
    /// stay float with the modes' common reason.</summary>
    public virtual bool InWeightModes => false;

    /// <summary>Why this node keeps float weights in this weight mode, or null when they are quantized.</summary>
    public virtual string? CannotQuantizeWeights(NodeProto node, GraphView graph, QuantizationOptions options) => "no weight-mode handler";

    /// <summary>The decision's reason when the weight modes quantize the node.</summary>
    public virtual string DescribeWeights(NodeProto node, GraphView graph, QuantizationOptions options) => "";

    /// <summary>Whether the node multiplies integers in the weight modes (it can be -OverflowFix FirstLayer's layer).</summary>
    public virtual bool IntegerProductInWeightModes => true;

    /// <summary>Writes the weight-mode form of a planned node into <see cref="WeightRewrite.Nodes"/>.</summary>
    internal virtual void QuantizeWeights(WeightRewrite rewrite, NodeProto node) =>
        throw new InvalidOperationException($"{node.OpType} has no weight-mode writer.");

    // ---- the PtqTools engine ----

    /// <summary>The integer node the engine fuses DQ → op → Q of this op type into, or null when it runs no fusion.</summary>
    public virtual EngineFusion? Engine(string opType) => null;

    // ---- helpers for handlers ----

    protected static bool IsFloatInitializer(GraphView g, NodeProto node, int index) =>
        node.Input.Count > index && g.Initializers.TryGetValue(node.Input[index], out var t) && t.DataType == (int)OnnxDataType.Float;
}

/// <summary>What the static QDQ writer hands a handler that writes its node itself.</summary>
internal sealed record QdqRewrite(GraphProto Graph, GraphView View, List<NodeProto> Added, NameScope Names, QuantizationOptions Options);

/// <summary>What the weight-mode writer hands a handler: the graph being rewritten, the list the rewritten nodes go
/// to (in order), and the weights already quantized (a weight shared by two MatMuls is quantized once).</summary>
internal sealed class WeightRewrite
{
    public required GraphProto Graph { get; init; }
    public required GraphView View { get; init; }
    public required NameScope Names { get; init; }
    public required List<NodeProto> Nodes { get; init; }
    public required QuantizationOptions Options { get; init; }
    public required QuantizationPlan Plan { get; init; }
    public required NodeProto? FirstLayer { get; init; }
    public IReadOnlyDictionary<string, double[]>? Hessians { get; init; }
    public int Threads { get; init; } = 1;
    public CancellationToken Cancel { get; init; }
    public Dictionary<string, WeightQuantizer.WeightTensors> Done { get; } = new(StringComparer.Ordinal);
}

/// <summary>The QOperator lowering's view of the QDQ graph: the DequantizeLinear nodes by output, and the shared
/// ways of reading them (<see cref="QOperatorConverter"/>).</summary>
internal sealed record QOperatorLowering(ModelProto Model, GraphView View, Dictionary<string, NodeProto> Dq)
{
    /// <summary>The inputs (quantized tensor, scale, zero point) of the DequantizeLinear that writes
    /// <paramref name="tensor"/>, or null.</summary>
    public IEnumerable<string>? Dequantized(string tensor) => Dq.TryGetValue(tensor, out var d) && d.Input.Count == 3 ? d.Input : null;
}
