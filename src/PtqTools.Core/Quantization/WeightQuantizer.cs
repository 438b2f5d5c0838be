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
            var handler = OpHandlers.Get(node);
            if (handler is not { InWeightModes: true })
            {
                decision.Reason = $"kept in float: {mode} mode quantizes MatMul layers with a constant weight, Gather from a constant table and the weights of LSTM and GRU";
                continue;
            }
            if (handler.CannotQuantizeWeights(node, graph, options) is { } why)
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
            decision.Reason = handler.DescribeWeights(node, graph, options);
        }
        return plan;
    }

    /// <param name="hessians">With -WeightMethod GPTQ: H of each MatMul weight (<see cref="Gptq.Hessians"/>).</param>
    public static ModelProto Quantize(ModelProto prepared, QuantizationPlan plan, QuantizationOptions options, CancellationToken cancel = default,
        IProgress<Model.RunProgress>? progress = null, IReadOnlyDictionary<string, double[]>? hessians = null, int threads = 1)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int doneLayers = 0;
        options.Validate();
        if (options.Mode == QuantMode.Static)
            throw new ArgumentException("Static mode is written by QdqQuantizer.", nameof(options));
        var model = prepared.Clone();
        // A per-column embedding table is dequantized with DequantizeLinear's axis, which opset 13 brought: a model below
        // it (a BERT exported at opset 11) is raised that far, as per-channel static quantization raises it.
        var source = new GraphView(prepared.Graph);
        bool perColumnTables = prepared.Graph.Node.Any(n => n.OpType == "Gather" && plan.QuantizedLayers.Contains(n.Name) && EmbeddingQuantizer.PerColumn(n, source, options.PerChannel));
        OpsetUpgrader.RaiseFor(model, perColumnTables ? Math.Max(13, Quantizer.RequiredOpset(options)) : Quantizer.RequiredOpset(options));
        var graph = model.Graph;
        var view = new GraphView(graph);
        var names = new NameScope(graph);
        var rewritten = new List<NodeProto>();
        // The first layer with an integer product (for -OverflowFix FirstLayer).
        var firstLayer = graph.Node.FirstOrDefault(n => plan.QuantizedLayers.Contains(n.Name) && OpHandlers.Get(n)!.IntegerProductInWeightModes);
        var rewrite = new WeightRewrite
        {
            Graph = graph, View = view, Names = names, Nodes = rewritten, Options = options, Plan = plan, FirstLayer = firstLayer,
            Hessians = hessians, Threads = threads, Cancel = cancel,
        };
        foreach (var node in graph.Node)
        {
            if (!plan.QuantizedLayers.Contains(node.Name))
            {
                rewritten.Add(node);
                continue;
            }
            cancel.ThrowIfCancellationRequested();
            progress?.Report(new Model.RunProgress(doneLayers, plan.QuantizedLayers.Count, doneLayers / Math.Max(1e-9, clock.Elapsed.TotalSeconds), node.Name));
            doneLayers++;
            OpHandlers.Get(node)!.QuantizeWeights(rewrite, node);
        }
        progress?.Report(new Model.RunProgress(doneLayers, plan.QuantizedLayers.Count, doneLayers / Math.Max(1e-9, clock.Elapsed.TotalSeconds), ""));
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
    internal sealed record WeightTensors(string Values, string Scale, string ZeroPoint, long K, long N, string? Dequantized = null);

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

    internal static WeightTensors QuantizeWeight(GraphProto graph, NameScope names, TensorProto init, QuantizationOptions options, List<NodeProto> nodes,
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
}
