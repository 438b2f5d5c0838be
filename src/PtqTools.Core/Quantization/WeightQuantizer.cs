using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>
/// The modes that need no calibration: both quantize the constant weight of MatMul layers ahead of time.
/// <list type="bullet">
/// <item>Dynamic: int8 weights (per output column or per tensor) and, at run time, DynamicQuantizeLinear on the
/// activation, MatMulInteger, Cast and Mul by input scale x weight scale: the exact pattern ONNX Runtime fuses into
/// DynamicQuantizeMatMul (one DynamicQuantizeLinear per MatMul, so each matches the fusion on its own).</item>
/// <item>WeightOnly 8-bit: 8-bit weights turned back to float by Cast and Mul, which ONNX Runtime folds at load
/// (<see cref="FoldedDequantize"/>); activations stay float.</item>
/// <item>WeightOnly 4-bit: com.microsoft MatMulNBits with block-wise codes: round-to-nearest, HQQ, or GPTQ from
/// calibration data (<see cref="Gptq"/>).</item>
/// </list>
/// Layer names are kept (the node that replaces a MatMul carries its name); the output is deterministic.
/// </summary>
public static class WeightQuantizer
{
    /// <summary>Which MatMul layers get quantized in a weight mode, with every layer's decision and reason.</summary>
    public static QuantizationPlan Plan(GraphView graph, IReadOnlySet<string>? selected, QuantizationOptions options,
        Func<NodeProto, string?>? exclude = null)
    {
        var plan = new QuantizationPlan();
        string mode = options.Mode == QuantMode.Dynamic ? "dynamic" : "weight-only";
        foreach (var node in graph.Graph.Node)
        {
            var decision = new LayerDecision { Layer = node.Name, OpType = node.OpType };
            plan.Decisions.Add(decision);
            bool gather = node.OpType == "Gather" && node.Domain is "" or "ai.onnx";
            bool recurrent = RecurrentQuantizer.Handles(node);
            if (node.OpType != "MatMul" && !gather && !recurrent || node.Domain is not ("" or "ai.onnx"))
            {
                decision.Reason = $"kept in float: {mode} mode quantizes MatMul layers with a constant weight, Gather from a constant table and the weights of LSTM and GRU";
                continue;
            }
            if ((gather ? OpHandlers.Get(node)!.CannotQuantize(node, graph) : recurrent ? RecurrentQuantizer.CannotQuantize(node, graph, options)
                    : CannotQuantize(node, graph, options)) is { } why)
            {
                decision.Reason = $"kept in float: {why}";
                continue;
            }
            // -Exclude first: an excluded layer is not calibrated, so after calibration it is not in the pipeline
            // either, and its decision names the entry that excluded it.
            if (exclude?.Invoke(node) is { } excluded)
            {
                decision.Reason = excluded;
                continue;
            }
            if (selected is not null && !selected.Contains(node.Name))
            {
                decision.Reason = "not in the pipeline: kept in float";
                continue;
            }
            plan.QuantizedLayers.Add(node.Name);
            decision.Quantized = true;
            decision.Reason = gather ? $"{mode}: {EmbeddingQuantizer.Describe(node, graph, options.PerChannel)}"
                : recurrent ? RecurrentQuantizer.Describe(node, options)
                : options.Mode == QuantMode.Dynamic
                ? $"dynamic: {options.WeightType.ToString().ToLowerInvariant()} weights {(options.PerChannel ? "per column" : "per tensor")}, uint8 activations quantized at run time (MatMulInteger)"
                : options.WeightBits == 4
                    ? $"weight-only: int4 weights in blocks of {options.BlockSize} along K ({options.WeightMethod.ToString().ToUpperInvariant()}, MatMulNBits), float activations"
                    : $"weight-only: {options.WeightType.ToString().ToLowerInvariant()} weights {(options.PerChannel ? "per column" : "per tensor")}, float activations";
        }
        return plan;
    }

    static string? CannotQuantize(NodeProto node, GraphView g, QuantizationOptions options)
    {
        if (node.Input.Count < 2 || !g.IsFloat(node.Input[0]) || g.IsInitializer(node.Input[0])) return "its A input is not a float32 activation";
        if (!g.Initializers.TryGetValue(node.Input[1], out var w) || w.DataType != (int)OnnxDataType.Float || w.Dims.Count != 2)
            return "its B input is not a 2-D float32 initializer";
        if (w.Dims[0] == 0 || w.Dims[1] == 0) return "its weight is empty";
        if (options.Mode == QuantMode.WeightOnly && options.WeightBits == 4 && w.Dims[0] < 16)
            return $"K = {w.Dims[0]} is below MatMulNBits' smallest block";
        return null;
    }

    /// <param name="hessians">With -WeightMethod GPTQ: H of each MatMul weight (<see cref="Gptq.Hessians"/>).</param>
    public static ModelProto Quantize(ModelProto prepared, QuantizationPlan plan, QuantizationOptions options, CancellationToken cancel = default,
        IProgress<Calibration.RunProgress>? progress = null, IReadOnlyDictionary<string, double[]>? hessians = null, int threads = 1)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int doneLayers = 0;
        options.Validate();
        if (options.Mode == QuantMode.Static)
            throw new ArgumentException("Static mode is written by QdqQuantizer.", nameof(options));
        var model = prepared.Clone();
        OpsetUpgrader.RaiseFor(model, Quantizer.RequiredOpset(options));
        var graph = model.Graph;
        var view = new GraphView(graph);
        var names = new NameScope(graph);
        var done = new Dictionary<string, WeightTensors>(StringComparer.Ordinal);
        var rewritten = new List<NodeProto>();
        // The first layer with an integer product (for -OverflowFix FirstLayer).
        var firstLayer = graph.Node.FirstOrDefault(n => plan.QuantizedLayers.Contains(n.Name) && n.OpType != "Gather");
        foreach (var node in graph.Node)
        {
            if (!plan.QuantizedLayers.Contains(node.Name))
            {
                rewritten.Add(node);
                continue;
            }
            cancel.ThrowIfCancellationRequested();
            progress?.Report(new Calibration.RunProgress(doneLayers, plan.QuantizedLayers.Count, doneLayers / Math.Max(1e-9, clock.Elapsed.TotalSeconds), node.Name));
            doneLayers++;
            if (node.OpType == "Gather")
            {
                rewritten.Add(node);
                EmbeddingQuantizer.Rewrite(graph, view, node, rewritten, names, options);
                continue;
            }
            if (RecurrentQuantizer.Handles(node))
            {
                plan.RecordPairs(node.Name, RecurrentQuantizer.Rewrite(graph, view, node, rewritten, names, options, node == firstLayer), options);
                continue;
            }
            var wName = node.Input[1];
            if (!done.TryGetValue(wName, out var weight))
            {
                done[wName] = weight = QuantizeWeight(graph, names, view.Initializers[wName], options, rewritten, hessians, threads, cancel,
                    node == firstLayer, out var pairs);
                plan.RecordPairs(node.Name, pairs, options);
            }
            switch (options.Mode)
            {
                case QuantMode.Dynamic: rewritten.AddRange(Dynamic(node, weight, names)); break;
                case QuantMode.WeightOnly when options.WeightBits == 4: rewritten.Add(MatMulNBits(node, weight, options)); break;
                default:
                    node.Input[1] = weight.Dequantized!;
                    rewritten.Add(node);
                    break;
            }
        }
        progress?.Report(new Calibration.RunProgress(doneLayers, plan.QuantizedLayers.Count, doneLayers / Math.Max(1e-9, clock.Elapsed.TotalSeconds), ""));
        graph.Node.Clear();
        graph.Node.AddRange(rewritten);
        if (graph.Node.Any(n => n.Domain == "com.microsoft") && !model.OpsetImport.Any(o => o.Domain == "com.microsoft"))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        GraphEditor.RemoveUnusedInitializers(graph);
        GraphEditor.SortTopologically(graph);
        return model;
    }

    /// <summary>Names of the initializers that hold one quantized weight, and its shape; for weight-only 8-bit, the
    /// float tensor its Cast and Mul write.</summary>
    sealed record WeightTensors(string Values, string Scale, string ZeroPoint, long K, long N, string? Dequantized = null);

    /// <summary>
    /// Weight-only 8-bit weights turned back to float as Cast → (Sub zero point) → Mul scale, all on initializers,
    /// which ONNX Runtime constant-folds at load: the file holds 8-bit codes and the session runs its fp32 kernels.
    /// Not DequantizeLinear: ONNX Runtime never constant-folds that (it keeps Q/DQ for its fusions), and it rewrites a
    /// per-axis DequantizeLinear → MatMul into MatMulNBits (8 bits, blocks of 32, int8 compute), which at one thread
    /// ran all-MiniLM-L6-v2 at 0.81x fp32 where the folded form runs at 0.99x (docs/benchmarks.md). The values are
    /// those of DequantizeLinear: (q - zero point) * scale in float. <paramref name="paramDims"/> is the shape the
    /// scales and zero points broadcast with (one per column: [N]; one per tensor: []).
    /// </summary>
    internal static string FoldedDequantize(GraphProto graph, List<NodeProto> nodes, NameScope names, string baseName, string quantized,
        float[] scales, int[] zeroPoints, long[] paramDims)
    {
        var cast = GraphEditor.Node("Cast", names.Fresh(baseName + "_Cast"), new[] { quantized }, names.Fresh(baseName + "_Cast_Output"));
        cast.Attribute.Add(GraphEditor.Int("to", (int)OnnxDataType.Float));
        nodes.Add(cast);
        var codes = cast.Output[0];
        if (zeroPoints.Any(z => z != 0))
        {
            var zpName = names.Fresh(baseName + "_zero_point");
            graph.Initializer.Add(TensorData.FromFloats(zpName, zeroPoints.Select(z => (float)z).ToArray(), paramDims));
            var sub = GraphEditor.Node("Sub", names.Fresh(baseName + "_Sub"), new[] { codes, zpName }, names.Fresh(baseName + "_Sub_Output"));
            nodes.Add(sub);
            codes = sub.Output[0];
        }
        var scaleName = names.Fresh(baseName + "_scale");
        graph.Initializer.Add(TensorData.FromFloats(scaleName, scales, paramDims));
        var mul = GraphEditor.Node("Mul", names.Fresh(baseName + "_Mul"), new[] { codes, scaleName }, names.Fresh(baseName + "_dequantized"));
        nodes.Add(mul);
        return mul.Output[0];
    }

    static WeightTensors QuantizeWeight(GraphProto graph, NameScope names, TensorProto init, QuantizationOptions options, List<NodeProto> nodes,
        IReadOnlyDictionary<string, double[]>? hessians, int threads, CancellationToken cancel, bool firstLayer, out PairCheck? pairs)
    {
        pairs = null;
        var dims = init.Dims.ToArray();
        long k = dims[0], n = dims[1];
        var w = TensorData.ReadFloats(init);
        var valuesName = names.Fresh(init.Name + "_quantized");
        var scaleName = names.Fresh(init.Name + "_scale");
        var zpName = names.Fresh(init.Name + "_zero_point");
        if (options.Mode == QuantMode.WeightOnly && options.WeightBits == 4)
        {
            byte[] codes; float[] scales; byte[]? zps;
            if (options.WeightMethod == WeightMethod.Gptq)
            {
                if (hessians is null || !hessians.TryGetValue(init.Name, out var h))
                    throw new ArgumentException($"GPTQ needs the Hessian of weight '{init.Name}'.", nameof(hessians));
                var u = Gptq.InverseFactor(h, checked((int)k), out var dead);
                (codes, scales, zps) = Gptq.Quantize(w, checked((int)k), checked((int)n), u, dead, options.BlockSize, options.Int4Symmetric, threads, cancel);
            }
            else
                (codes, scales, zps) = QuantMath.QuantizeBlockwise(w, checked((int)k), checked((int)n), 4, options.BlockSize, options.WeightMethod == WeightMethod.Hqq,
                    options.Int4Symmetric);
            int blocks = (int)((k + options.BlockSize - 1) / options.BlockSize);
            graph.Initializer.Add(TensorData.FromUInt8(valuesName, codes, n, blocks, options.BlockSize / 2));
            graph.Initializer.Add(TensorData.FromFloats(scaleName, scales, scales.Length));
            // Symmetric blocks have no zero points: MatMulNBits then uses 8, the middle of the 4-bit codes.
            if (zps is not null) graph.Initializer.Add(TensorData.FromUInt8(zpName, zps, zps.Length));
            return new WeightTensors(valuesName, scaleName, zps is null ? "" : zpName, k, n);
        }
        int? axis = options.PerChannel ? 1 : null;
        var spec = options.Weights;
        // Only Dynamic mode multiplies these weights by uint8 activations; weight-only MatMuls run in float.
        var (values, weightScales, zeroPoints, check) = PairSaturation.QuantizeWeights(w, dims, axis, spec,
            options.Mode == QuantMode.Dynamic ? PairLayout.MatMul(k, n) : null, options, firstLayer);
        pairs = check;
        var type = spec.Type == QuantType.UInt8 ? OnnxDataType.UInt8 : OnnxDataType.Int8;
        graph.Initializer.Add(GraphEditor.QuantizedTensor(valuesName, values, type, dims));
        if (options.Mode == QuantMode.WeightOnly)
            return new WeightTensors(valuesName, "", "", k, n,
                FoldedDequantize(graph, nodes, names, init.Name, valuesName, weightScales, zeroPoints, axis is null ? Array.Empty<long>() : new[] { n }));
        if (axis is null)
        {
            graph.Initializer.Add(TensorData.FromFloats(scaleName, weightScales));
            graph.Initializer.Add(GraphEditor.QuantizedTensor(zpName, zeroPoints, type));
        }
        else
        {
            graph.Initializer.Add(TensorData.FromFloats(scaleName, weightScales, weightScales.Length));
            graph.Initializer.Add(GraphEditor.QuantizedTensor(zpName, zeroPoints, type, weightScales.Length));
        }
        return new WeightTensors(valuesName, scaleName, zpName, k, n);
    }

    /// <summary>DynamicQuantizeLinear → MatMulInteger → Cast → Mul(input scale × weight scale): the pattern of
    /// ONNX Runtime's DynamicQuantizeMatMulFusion. The last Mul writes the MatMul's output and carries its name.</summary>
    static IEnumerable<NodeProto> Dynamic(NodeProto node, WeightTensors w, NameScope names)
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

    static NodeProto MatMulNBits(NodeProto node, WeightTensors w, QuantizationOptions options)
    {
        var inputs = w.ZeroPoint.Length == 0 ? new[] { node.Input[0], w.Values, w.Scale } : new[] { node.Input[0], w.Values, w.Scale, w.ZeroPoint };
        var q = GraphEditor.Node("MatMulNBits", node.Name, inputs, node.Output[0]);
        q.Domain = "com.microsoft";
        q.Attribute.Add(GraphEditor.Int("K", w.K));
        q.Attribute.Add(GraphEditor.Int("N", w.N));
        q.Attribute.Add(GraphEditor.Int("bits", 4));
        q.Attribute.Add(GraphEditor.Int("block_size", options.BlockSize));
        return q;
    }
}
