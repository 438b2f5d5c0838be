using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>
/// MatMul. Static: a constant 2-D weight per output column (axis 1), else both inputs are activations; QOperator
/// QLinearMatMul; the engine's QLinearMatMul. The weight modes quantize a constant 2-D weight:
/// <list type="bullet">
/// <item>Dynamic: DynamicQuantizeLinear → MatMulInteger → Cast → Mul(input scale × weight scale), the pattern of
/// ONNX Runtime's DynamicQuantizeMatMulFusion (one DynamicQuantizeLinear per MatMul, so each matches on its own).</item>
/// <item>WeightOnly 8-bit: the weight turned back to float by Cast and Mul that ONNX Runtime folds at load.</item>
/// <item>WeightOnly int4: com.microsoft MatMulNBits (RTN, HQQ or GPTQ codes).</item>
/// </list>
/// </summary>
sealed class MatMulHandler : OpHandler
{
    public override IReadOnlyList<string> OpTypes { get; } = new[] { "MatMul" };

    static bool ConstantWeight(NodeProto node, GraphView g) =>
        IsFloatInitializer(g, node, 1) && g.Initializers[node.Input[1]].Dims.Count == 2;
    public override IEnumerable<int> ActivationInputs(NodeProto node, GraphView g) =>
        ConstantWeight(node, g) ? new[] { 0 } : new[] { 0, 1 };
    public override (int Input, int Axis)? Weight(NodeProto node, GraphView g) => ConstantWeight(node, g) ? (1, 1) : null;
    public override PairLayout? Pairs(NodeProto node, long[] dims) => dims.Length == 2 ? PairLayout.MatMul(dims[0], dims[1]) : null;

    internal override NodeProto? ToQOperator(QOperatorLowering l, NodeProto node, NodeProto q, NodeProto? relu) =>
        QOperatorConverter.Binary(l, node, q, "QLinearMatMul", "");

    public override EngineFusion? Engine(string opType) => new(FusionPattern.WeightedProduct, "QLinearMatMul");

    // ---- weight modes ----

    public override bool InWeightModes => true;

    public override string? CannotQuantizeWeights(NodeProto node, GraphView g, QuantizationOptions options)
    {
        if (node.Input.Count < 2 || !g.IsFloat(node.Input[0]) || g.IsInitializer(node.Input[0])) return "its A input is not a float32 activation";
        if (!g.Initializers.TryGetValue(node.Input[1], out var w) || w.DataType != (int)OnnxDataType.Float || w.Dims.Count != 2)
            return "its B input is not a 2-D float32 initializer";
        if (w.Dims[0] == 0 || w.Dims[1] == 0) return "its weight is empty";
        if (options.Mode == QuantMode.WeightOnly && options.WeightBits == 4 && w.Dims[0] < 16)
            return $"K = {w.Dims[0]} is below MatMulNBits' smallest block";
        return null;
    }

    public override string DescribeWeights(NodeProto node, GraphView g, QuantizationOptions options) =>
        options.Mode == QuantMode.Dynamic
            ? $"dynamic: {options.WeightType.ToString().ToLowerInvariant()} weights {(options.PerChannel ? "per column" : "per tensor")}, uint8 activations quantized at run time (MatMulInteger)"
            : options.WeightBits == 4
                ? $"weight-only: int4 weights in blocks of {options.BlockSize} along K ({options.WeightMethod.ToString().ToUpperInvariant()}, MatMulNBits), float activations"
                : $"weight-only: {options.WeightType.ToString().ToLowerInvariant()} weights {(options.PerChannel ? "per column" : "per tensor")}, float activations";

    internal override void QuantizeWeights(WeightRewrite r, NodeProto node)
    {
        var wName = node.Input[1];
        if (!r.Done.TryGetValue(wName, out var weight))
        {
            r.Done[wName] = weight = WeightQuantizer.QuantizeWeight(r.Graph, r.Names, r.View.Initializers[wName], r.Options, r.Nodes, r.Hessians, r.Threads, r.Cancel,
                node == r.FirstLayer, out var pairs);
            r.Plan.RecordPairs(node.Name, pairs, r.Options);
        }
        switch (r.Options.Mode)
        {
            case QuantMode.Dynamic: r.Nodes.AddRange(Dynamic(node, weight, r.Names)); break;
            case QuantMode.WeightOnly when r.Options.WeightBits == 4: r.Nodes.Add(MatMulNBits(node, weight, r.Options)); break;
            default:
                node.Input[1] = weight.Dequantized!;
                r.Nodes.Add(node);
                break;
        }
    }

    /// <summary>DynamicQuantizeLinear → MatMulInteger → Cast → Mul(input scale × weight scale): the pattern of
    /// ONNX Runtime's DynamicQuantizeMatMulFusion. The last Mul writes the MatMul's output and carries its name.</summary>
    static IEnumerable<NodeProto> Dynamic(NodeProto node, WeightQuantizer.WeightTensors w, NameScope names)
    {
        string x = node.Input[0], y = node.Output[0], baseName = node.Name;
        var xq = names.Fresh(x + "_quantized_" + baseName);
        var xs = names.Fresh(x + "_scale_" + baseName);
        var xzp = names.Fresh(x + "_zero_point_" + baseName);
        var dql = new NodeProto { OpType = "DynamicQuantizeLinear", Name = names.Fresh(baseName + "_DynamicQuantizeLinear") };
        dql.Input.Add(x);
        dql.Output.AddRange(new[] { xq, xs, xzp });
        var integer = GraphEditor.Node("MatMulInteger", names.Fresh(baseName + "_MatMulInteger"),
            new[] { xq, w.Values, xzp, w.ZeroPoint }, names.Fresh(baseName + "_MatMulInteger_Output"));
        var scale = GraphEditor.Node("Mul", names.Fresh(baseName + "_scale_Mul"), new[] { xs, w.Scale }, names.Fresh(baseName + "_scale_Mul_Output"));
        var cast = GraphEditor.Node("Cast", names.Fresh(baseName + "_Cast"), new[] { integer.Output[0] }, names.Fresh(baseName + "_Cast_Output"));
        cast.Attribute.Add(GraphEditor.Int("to", (int)OnnxDataType.Float));
        var output = GraphEditor.Node("Mul", baseName, new[] { cast.Output[0], scale.Output[0] }, y);
        return new[] { dql, integer, scale, cast, output };
    }

    static NodeProto MatMulNBits(NodeProto node, WeightQuantizer.WeightTensors w, QuantizationOptions options)
    {
        var inputs = w.ZeroPoint.Length == 0 ? new[] { node.Input[0], w.Values, w.Scale } : new[] { node.Input[0], w.Values, w.Scale, w.ZeroPoint };
        var q = GraphEditor.Node("MatMulNBits", node.Name, inputs, node.Output[0]);
        q.Domain = GraphEditor.MsDomain;
        q.Attribute.Add(GraphEditor.Int("K", w.K));
        q.Attribute.Add(GraphEditor.Int("N", w.N));
        q.Attribute.Add(GraphEditor.Int("bits", 4));
        q.Attribute.Add(GraphEditor.Int("block_size", options.BlockSize));
        return q;
    }
}
