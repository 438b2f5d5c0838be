using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>LSTM and GRU in the table: Static mode keeps them float (their activations stay float, with Q/DQ only
/// at the boundary to quantized neighbours), since ONNX Runtime has no recurrent kernel for calibrated int8
/// activations; the weight modes quantize their weights through <see cref="RecurrentQuantizer"/>.</summary>
sealed class RecurrentHandler : OpHandler
{
    public override IReadOnlyList<string> OpTypes { get; } = new[] { "LSTM", "GRU" };

    public override string? CannotQuantize(NodeProto node, GraphView g) => node.OpType == "LSTM"
        ? "static mode: ONNX Runtime has no LSTM kernel for calibrated int8 activations (its quantized LSTM, com.microsoft DynamicQuantizeLSTM, quantizes them at run time: -Mode Dynamic); it stays float between Q/DQ"
        : "static mode: ONNX Runtime has no quantized GRU kernel (-Mode WeightOnly stores its weights in 8 bits); it stays float between Q/DQ";

    public override bool InWeightModes => true;
    public override string? CannotQuantizeWeights(NodeProto node, GraphView g, QuantizationOptions options) => RecurrentQuantizer.CannotQuantize(node, g, options);
    public override string DescribeWeights(NodeProto node, GraphView g, QuantizationOptions options) => RecurrentQuantizer.Describe(node, options);

    internal override void QuantizeWeights(WeightRewrite r, NodeProto node) =>
        r.Plan.RecordPairs(node.Name, RecurrentQuantizer.Rewrite(r.Graph, r.View, node, r.Nodes, r.Names, r.Options, node == r.FirstLayer), r.Options);
}

/// <summary>
/// The weights W and R of LSTM and GRU in the modes without calibration.
/// <list type="bullet">
/// <item>LSTM, Dynamic: com.microsoft DynamicQuantizeLSTM, ONNX Runtime's quantized LSTM. W [D, 4H, K] and R [D, 4H, H]
/// are quantized per gate row (one scale per direction and row, [D, 4H]) or per direction ([D]) and stored
/// transposed, [D, K, 4H] and [D, H, 4H], as the kernel takes them; X and the hidden state are quantized to uint8 at
/// run time. Its per-row zero points must be 0 (int8) or one value (uint8), so per-row weights are symmetric.</item>
/// <item>GRU, Dynamic: kept float: ONNX Runtime has no quantized GRU kernel, so nothing would run faster; -Mode
/// WeightOnly stores its weights in 8 bits.</item>
/// <item>LSTM and GRU, WeightOnly: 8-bit W and R (per gate row, one scale per direction and row; or per tensor),
/// turned back to float by Cast and Mul that ONNX Runtime folds at load, the op computing in float. This is for
/// size on disk, not speed.</item>
/// </list>
/// The node keeps its name and outputs; B, sequence_lens, the initial states and the peepholes are left as they are.
/// </summary>
public static class RecurrentQuantizer
{
    const string MsDomain = "com.microsoft";

    static int Gates(NodeProto node) => node.OpType == "LSTM" ? 4 : 3;

    static int Directions(NodeProto node) =>
        node.StringAttr("direction") == "bidirectional" ? 2 : 1;

    static bool DynamicLstm(NodeProto node, QuantizationOptions options) => options.Mode == QuantMode.Dynamic && node.OpType == "LSTM";

    /// <summary>Why this LSTM or GRU keeps float weights in this mode, or null when they are quantized.</summary>
    public static string? CannotQuantize(NodeProto node, GraphView g, QuantizationOptions options)
    {
        if (node.Input.Count < 3 || !g.IsFloat(node.Input[0]) || g.IsInitializer(node.Input[0])) return "its X input is not a float32 activation";
        if (node.IntAttr("layout", 0) != 0) return "its layout is batch-first (layout = 1), which ONNX Runtime's recurrent kernels do not take";
        int d = Directions(node), gates = Gates(node);
        if (!g.Initializers.TryGetValue(node.Input[1], out var w) || w.DataType != (int)OnnxDataType.Float || w.Dims.Count != 3)
            return "its W input is not a 3-D float32 initializer";
        if (!g.Initializers.TryGetValue(node.Input[2], out var r) || r.DataType != (int)OnnxDataType.Float || r.Dims.Count != 3)
            return "its R input is not a 3-D float32 initializer";
        long h = r.Dims[2];
        if (h <= 0 || w.Dims[2] <= 0 || w.Dims[0] != d || r.Dims[0] != d || w.Dims[1] != gates * h || r.Dims[1] != gates * h
            || node.IntAttr("hidden_size", h) != h)
            return $"its W {Shape(w)} and R {Shape(r)} do not match {d} direction(s) of {gates} gates of hidden size {node.IntAttr("hidden_size", h)}";
        if (options.Mode == QuantMode.Dynamic && node.OpType == "GRU")
            return "ONNX Runtime has no quantized GRU kernel, so dynamic mode has nothing faster to run; -Mode WeightOnly stores its weights in 8 bits for size";
        if (DynamicLstm(node, options) && options.PerChannel && !options.Weights.Symmetric)
            return "DynamicQuantizeLSTM takes per-row weights only with zero point 0 (int8) or one zero point (uint8): use symmetric weights, or -PerTensor for asymmetric ones";
        return null;
    }

    static string Shape(TensorProto t) => "[" + string.Join(", ", t.Dims) + "]";

    public static string Describe(NodeProto node, QuantizationOptions options)
    {
        var type = options.WeightType.ToString().ToLowerInvariant();
        var granularity = options.PerChannel ? "per gate row" : DynamicLstm(node, options) ? "per direction" : "per tensor";
        return DynamicLstm(node, options)
            ? $"dynamic: com.microsoft DynamicQuantizeLSTM, {type} W and R {granularity}, X and the hidden state quantized to uint8 at run time"
            : $"weight-only: {type} W and R {granularity}, dequantized by Cast and Mul that ONNX Runtime folds at load (for size), {node.OpType} computes in float";
    }

    /// <summary>Rewrites one planned LSTM or GRU of <paramref name="graph"/>, adding it (and the Cast and Mul
    /// before it) to <paramref name="added"/>.</summary>
    /// <returns>The pair check of a DynamicQuantizeLSTM's W and R (null for the weight-only forms, which compute in
    /// float).</returns>
    public static PairCheck? Rewrite(GraphProto graph, GraphView view, NodeProto node, List<NodeProto> added, NameScope names, QuantizationOptions options,
        bool firstLayer = false)
    {
        if (DynamicLstm(node, options))
        {
            added.Add(DynamicQuantizeLstm(graph, view, node, names, options, firstLayer, out var pairs));
            return pairs;
        }
        for (int i = 1; i <= 2; i++) node.Input[i] = Dequantized(graph, view.Initializers[node.Input[i]], added, names, options);
        added.Add(node);
        return null;
    }

    /// <summary>One direction's [rows, cols] slice quantized per row or as a whole.</summary>
    static (int[] Values, float[] Scales, int[] ZeroPoints) QuantizeSlice(ReadOnlySpan<float> slice, long rows, long cols, bool perRow, WeightSpec spec) =>
        QuantMath.QuantizeWeights(slice, new[] { rows, cols }, perRow ? 0 : null, spec);

    static NodeProto DynamicQuantizeLstm(GraphProto graph, GraphView view, NodeProto node, NameScope names, QuantizationOptions options,
        bool firstLayer, out PairCheck? pairs)
    {
        pairs = null;
        var spec = options.Weights;
        var type = spec.Type == QuantType.UInt8 ? OnnxDataType.UInt8 : OnnxDataType.Int8;
        var inputs = new List<string> { node.Input[0] };
        var parameters = new List<string>();
        for (int i = 1; i <= 2; i++)
        {
            var init = view.Initializers[node.Input[i]];
            long d = init.Dims[0], rows = init.Dims[1], cols = init.Dims[2];
            var w = TensorData.ReadFloats(init);
            var values = new int[w.Length];
            var scales = new List<float>();
            var zeroPoints = new List<int>();
            for (int dir = 0; dir < d; dir++)
            {
                // The kernel's K is the slice's columns (X or H times W^T): pairs run along each gate row.
                var (q, s, z, check) = PairSaturation.QuantizeWeights(w.AsSpan(checked((int)(dir * rows * cols)), checked((int)(rows * cols))),
                    new[] { rows, cols }, options.PerChannel ? 0 : null, spec, PairLayout.Rows(rows, cols), options, firstLayer);
                pairs = PairCheck.Combine(pairs, check);
                // [rows = 4H, cols] -> [cols, 4H]: the kernel's B matrix of X (or H) x B.
                long offset = dir * rows * cols;
                for (long r = 0; r < rows; r++)
                    for (long c = 0; c < cols; c++)
                        values[offset + c * rows + r] = q[r * cols + c];
                scales.AddRange(s);
                zeroPoints.AddRange(z);
            }
            var name = init.Name;
            var qName = names.Fresh(name + "_quantized");
            graph.Initializer.Add(GraphEditor.QuantizedTensor(qName, values, type, d, cols, rows));
            long[] paramDims = options.PerChannel ? new[] { d, rows } : new[] { d };
            var scaleName = names.Fresh(name + "_scale");
            var zpName = names.Fresh(name + "_zero_point");
            graph.Initializer.Add(TensorData.FromFloats(scaleName, scales.ToArray(), paramDims));
            graph.Initializer.Add(GraphEditor.QuantizedTensor(zpName, zeroPoints, type, paramDims));
            inputs.Add(qName);
            parameters.Add(scaleName);
            parameters.Add(zpName);
        }
        // B, sequence_lens, initial_h, initial_c, P (absent ones as ""), then W_scale, W_zero_point, R_scale, R_zero_point.
        for (int i = 3; i <= 7; i++) inputs.Add(i < node.Input.Count ? node.Input[i] : "");
        inputs.AddRange(parameters);
        var lstm = new NodeProto { OpType = "DynamicQuantizeLSTM", Domain = MsDomain, Name = node.Name };
        lstm.Input.AddRange(inputs);
        lstm.Output.AddRange(node.Output);
        // The schema has LSTM's attributes but layout (checked to be 0 above).
        lstm.Attribute.AddRange(node.Attribute.Where(a => a.Name != "layout"));
        return lstm;
    }

    /// <summary>A float copy of a 3-D weight [D, G * H, K] from its 8-bit codes, by Cast and Mul that ONNX Runtime
    /// folds at load (<see cref="WeightQuantizer.FoldedDequantize"/>): per gate row, scales [D, G * H, 1].</summary>
    static string Dequantized(GraphProto graph, TensorProto init, List<NodeProto> added, NameScope names, QuantizationOptions options)
    {
        var spec = options.Weights;
        var type = spec.Type == QuantType.UInt8 ? OnnxDataType.UInt8 : OnnxDataType.Int8;
        var dims = init.Dims.ToArray();
        var (values, scales, zeroPoints) = QuantizeSlice(TensorData.ReadFloats(init), dims[0] * dims[1], dims[2], options.PerChannel, spec);
        var qName = names.Fresh(init.Name + "_quantized");
        graph.Initializer.Add(GraphEditor.QuantizedTensor(qName, values, type, dims));
        return WeightQuantizer.FoldedDequantize(graph, added, names, init.Name, qName, scales, zeroPoints,
            options.PerChannel ? new[] { dims[0], dims[1], 1L } : Array.Empty<long>());
    }
}
