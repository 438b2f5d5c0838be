using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>A calibrated range of one activation tensor, and its mean when known (bias correction uses it).</summary>
/// <summary>A calibrated activation range, with the tensor's mean and standard deviation where the statistics have
/// them (bias correction and the pair fix's choice of scale use them).</summary>
public readonly record struct TensorRange(float Min, float Max, float Mean = float.NaN, float Std = float.NaN);

/// <summary>
/// Writes a static QDQ model: QuantizeLinear/DequantizeLinear pairs on every planned activation tensor, int8
/// per-channel weights and int32 biases behind DequantizeLinear, placed where ONNX Runtime fuses them into its
/// integer kernels (QLinearConv, QLinearAdd, QLinearAveragePool, ...). Deterministic: the same inputs give the same bytes.
/// </summary>
public static class QdqQuantizer
{
    public static ModelProto Quantize(ModelProto prepared, QuantizationPlan plan, IReadOnlyDictionary<string, TensorRange> ranges,
        QuantizationOptions options, CancellationToken cancel = default)
    {
        options.Validate();
        TensorOverrides.Check(plan, options);
        foreach (var (tensor, layers) in plan.Activations)
            if (!ranges.ContainsKey(tensor) && !(options.Overrides.TryGetValue(tensor, out var o) && !o.NeedsCalibration))
                throw new PtqException("MissingActivationRange", PtqErrorKind.InvalidData,
                    $"No calibrated range for tensor '{tensor}', which layer '{layers[0]}' needs. Calibrate the layers you quantize with Measure-ActivationRange.", tensor);

        var model = prepared.Clone();
        OpsetUpgrader.RaiseFor(model, Quantizer.RequiredOpset(options));
        var names = new NameScope(model.Graph);
        // Activation types and parameters by model-wide tensor key (see GraphView.Key).
        var qparams = new Dictionary<string, QuantParams>(StringComparer.Ordinal);
        var qtypes = new Dictionary<string, QuantType>(StringComparer.Ordinal);
        foreach (var (tensor, _) in plan.Activations)
        {
            qtypes[tensor] = options.TypeOf(tensor);
            qparams[tensor] = options.Overrides.TryGetValue(tensor, out var o)
                ? o.Params(ranges.GetValueOrDefault(tensor), qtypes[tensor], options.ActivationSymmetric)
                : QuantMath.FromRange(ranges[tensor].Min, ranges[tensor].Max, qtypes[tensor], options.ActivationSymmetric);
        }
        // Per-axis DequantizeLinear (the float layers' own input copies below) needs opset 13.
        bool perAxis = OpsetUpgrader.DefaultOpset(model) >= 13;
        QuantizeGraph(new GraphView(model.Graph), plan, ranges, qparams, qtypes, perAxis, names, options, cancel);
        GraphEditor.ImportMsDomainIfUsed(model);
        return model;
    }

    /// <summary>What one graph's pass shares: the plan, ranges and parameters, the names, and the nodes it adds.</summary>
    sealed record GraphPass(GraphView View, QuantizationPlan Plan, IReadOnlyDictionary<string, TensorRange> Ranges, Dictionary<string, QuantParams> QParams,
        Dictionary<string, QuantType> QTypes, bool PerAxis, NameScope Names, QuantizationOptions Options, List<NodeProto> Added)
    {
        public GraphProto Graph => View.Graph;
        /// <summary>Weights already quantized, by name and axis (a weight two layers share is quantized once).</summary>
        public Dictionary<(string, int?), (string Output, float[] Scales, double[]? ErrorSums)> Weights { get; } = new();
    }

    /// <summary>Quantizes the planned layers of one graph in place, then those of its subgraphs (If branches,
    /// Loop and Scan bodies), each with its own Q/DQ nodes and quantized weights, whether the float weight lives
    /// in the subgraph or in an outer scope.</summary>
    static void QuantizeGraph(GraphView view, QuantizationPlan plan, IReadOnlyDictionary<string, TensorRange> ranges, Dictionary<string, QuantParams> qparams,
        Dictionary<string, QuantType> qtypes, bool perAxis, NameScope names, QuantizationOptions options, CancellationToken cancel)
    {
        var graph = view.Graph;
        var subgraphs = graph.Node.SelectMany(view.Subgraphs).ToList();
        var local = LocalTensors(view, plan, qparams, qtypes);
        var pass = new GraphPass(view, plan, ranges, qparams, qtypes, perAxis, names, options, new List<NodeProto>());
        // The first quantized layer with a weight in the main graph (for -OverflowFix FirstLayer).
        var firstWeighted = view.Scope.Length > 0 ? null : graph.Node.FirstOrDefault(n =>
            plan.QuantizedLayers.Contains(QuantizationPlan.LayerName(view, n)) && OpHandlers.Get(n)?.Weight(n, view) is not null);
        foreach (var node in graph.Node.Where(n => plan.QuantizedLayers.Contains(QuantizationPlan.LayerName(view, n))).ToList())
        {
            cancel.ThrowIfCancellationRequested();
            QuantizeLayer(pass, node, node == firstWeighted);
        }
        // One Q/DQ pair per quantized activation tensor; every reader takes the dequantized copy.
        foreach (var (tensor, key) in local.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            cancel.ThrowIfCancellationRequested();
            QuantizeActivation(pass, tensor, key);
        }
        graph.Node.AddRange(pass.Added);
        foreach (var sub in subgraphs) QuantizeGraph(sub, plan, ranges, qparams, qtypes, perAxis, names, options, cancel);
        GraphEditor.RemoveUnusedInitializers(graph);
        GraphEditor.SortTopologically(graph);
    }

    /// <summary>This graph's tensors (local name -> key), in graph order so pass-through outputs find their input's
    /// parameters (which they take over).</summary>
    static Dictionary<string, string> LocalTensors(GraphView view, QuantizationPlan plan, Dictionary<string, QuantParams> qparams, Dictionary<string, QuantType> qtypes)
    {
        var local = plan.LocalTensors.TryGetValue(view.Scope, out var needed)
            ? needed.Where(kv => qparams.ContainsKey(kv.Value)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal)
            : new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var node in view.Graph.Node)
            if (node.Output.Count > 0 && plan.SharedOutputs.TryGetValue(view.Key(node.Output[0]), out var input) && qparams.TryGetValue(input, out var p))
            {
                qparams[view.Key(node.Output[0])] = p;
                qtypes[view.Key(node.Output[0])] = qtypes[input];
                local[node.Output[0]] = view.Key(node.Output[0]);
            }
        return local;
    }

    /// <summary>One planned layer: its weight, int32 bias and quantized constants behind DequantizeLinear (or the
    /// handler's own rewrite).</summary>
    static void QuantizeLayer(GraphPass pass, NodeProto node, bool firstLayer)
    {
        var (view, options) = (pass.View, pass.Options);
        var handler = OpHandlers.Get(node)!;
        if (handler.RewriteStatic(new QdqRewrite(pass.Graph, view, pass.Added, pass.Names, options), node)) return;
        // Asked before the weight input is renamed below: handlers look at the float weight initializer.
        var biasInput = handler.Bias(node, view);
        float[]? weightScales = null;
        double[]? weightErrors = null;
        if (handler.Weight(node, view) is { } w)
        {
            var done = QuantizeWeight(pass, node, w, biasInput is not null, firstLayer);
            node.Input[w.Input] = done.Output;
            weightScales = done.Scales;
            weightErrors = done.ErrorSums;
        }
        if (biasInput is int b && weightScales is not null && pass.QParams.TryGetValue(view.Key(node.Input[0]), out var inParams))
        {
            var bName = node.Input[b];
            var bias = TensorData.ReadFloats(view.Initializers[bName]);
            if (weightErrors is not null && pass.Ranges.TryGetValue(view.Key(node.Input[0]), out var inRange) && float.IsFinite(inRange.Mean))
                bias = BiasCorrection.Correct(bias, weightErrors, inRange.Mean);
            var (values, scales) = QuantMath.QuantizeBias(bias, inParams.Scale, weightScales);
            var qName = pass.Names.Fresh(bName + "_quantized");
            pass.Graph.Initializer.Add(TensorData.FromInt32(qName, values, bias.Length));
            // Per-tensor weights give one bias scale: a per-tensor DequantizeLinear, valid from opset 10.
            node.Input[b] = GraphEditor.AddDequantize(pass.Graph, pass.Added, pass.Names, bName, qName, scales, new int[scales.Length], OnnxDataType.Int32, weightScales.Length == 1 ? null : 0);
        }
        var actType = options.ActivationType;
        var zpType = OnnxType(actType);
        var (qmin, qmax) = QuantMath.Limits(actType, options.ActivationSymmetric);
        foreach (var c in handler.ConstantInputs(node, view))
        {
            var cName = node.Input[c];
            var init = view.Initializers[cName];
            var values = TensorData.ReadFloats(init);
            float min = values.Length == 0 ? 0 : values.Min(), max = values.Length == 0 ? 0 : values.Max();
            var p = QuantMath.FromRange(min, max, actType, options.ActivationSymmetric);
            var qName = pass.Names.Fresh(cName + "_quantized");
            var dims = init.Dims.ToArray();
            pass.Graph.Initializer.Add(GraphEditor.QuantizedTensor(qName, values.Select(v => QuantMath.Quantize(v, p, qmin, qmax)), zpType, dims));
            node.Input[c] = GraphEditor.AddDequantize(pass.Graph, pass.Added, pass.Names, cName, qName, new[] { p.Scale }, null, zpType, null, p.ZeroPoint);
        }
    }

    /// <summary>A layer's weight quantized (pair-safe where uint8 activations meet it, shifted for the GEMM
    /// convolution path where chosen) behind a DequantizeLinear, once per weight and axis.</summary>
    static (string Output, float[] Scales, double[]? ErrorSums) QuantizeWeight(GraphPass pass, NodeProto node, (int Input, int Axis) w, bool hasBias, bool firstLayer)
    {
        var (view, options, names, graph) = (pass.View, pass.Options, pass.Names, pass.Graph);
        var wName = node.Input[w.Input];
        int? axis = options.PerChannel ? w.Axis : null;
        if (pass.Weights.TryGetValue((wName, axis), out var done)) return done;
        var init = view.Initializers[wName];
        var dims = init.Dims.ToArray();
        var spec = options.Weights;
        bool shift = ConvKernels.ShiftsWeights(node, options);
        pass.Ranges.TryGetValue(view.Key(node.Input[0]), out var inputRange);
        var (values, scales, zeroPoints, pairs) = PairSaturation.QuantizeWeights(TensorData.ReadFloats(init), dims, axis, spec,
            // Only uint8 activations meet the weights in a u8 x s8 product that can saturate (int8 ones
            // run as |a| x sign-adjusted w, at most 2 x 128 x 127; 16-bit ones have no integer kernel).
            options.TypeOf(view.Key(node.Input[0])) == QuantType.UInt8 ? PairLayout.For(node, dims) : null,
            options, firstLayer: firstLayer, offset: ConvKernels.Shiftable(node, options) ? -1 : 0,
            input: float.IsFinite(inputRange.Mean) && float.IsFinite(inputRange.Std) ? (inputRange.Mean, inputRange.Std) : null);
        // 7-bit codes stored as q - 1 could reach -65: such a layer keeps zero point 0.
        if (shift && pairs is not { ReducedTo7Bits: true }) ConvKernels.ShiftToMinusOne(values, zeroPoints);
        pass.Plan.RecordPairs(QuantizationPlan.LayerName(view, node), pairs, options);
        var qName = names.Fresh(wName + "_quantized");
        var wType = spec.Type == QuantType.UInt8 ? OnnxDataType.UInt8 : OnnxDataType.Int8;
        graph.Initializer.Add(GraphEditor.QuantizedTensor(qName, values, wType, dims));
        var dq = GraphEditor.AddDequantize(graph, pass.Added, names, wName, qName, scales, zeroPoints, wType, axis, zeroPoints[0]);
        var errors = options.BiasCorrection && hasBias
            ? BiasCorrection.ErrorSums(TensorData.ReadFloats(init), dims, w.Axis, values, scales, zeroPoints, axis) : null;
        return pass.Weights[(wName, axis)] = (dq, scales, errors);
    }

    /// <summary>One activation tensor's Q/DQ pair, and the per-channel DequantizeLinear of each float layer that reads it.</summary>
    static void QuantizeActivation(GraphPass pass, string tensor, string key)
    {
        var (view, names, graph) = (pass.View, pass.Names, pass.Graph);
        var p = pass.QParams[key];
        var scaleName = names.Fresh(tensor + "_scale");
        var zpName = names.Fresh(tensor + "_zero_point");
        var type = pass.QTypes[key];
        graph.Initializer.Add(TensorData.FromFloats(scaleName, new[] { p.Scale }));
        graph.Initializer.Add(GraphEditor.QuantizedTensor(zpName, new[] { p.ZeroPoint }, OnnxType(type)));
        // 16-bit Q/DQ are ONNX Runtime's com.microsoft operators (ai.onnx has them only from opset 21).
        string domain = QuantMath.Is16Bit(type) ? GraphEditor.MsDomain : "";
        var (quantized, dequantized) = GraphEditor.InsertQdqPair(view, pass.Added, names, tensor, scaleName, zpName, domain);
        // A Conv/ConvTranspose/Gemm kept in float that reads this tensor gets its own DequantizeLinear, with the same
        // scale and zero point repeated per input channel: ONNX Runtime's WeightBiasQuantization (basic level and up)
        // quantizes the float weight of such a layer to per-tensor int8 when its input comes from a per-tensor DQ and
        // its output goes to a QuantizeLinear, so the layer would not be float. The values it reads are unchanged.
        foreach (var consumer in view.ConsumersOf(tensor))
            if (pass.PerAxis && consumer.Input.Count > 0 && consumer.Input[0] == dequantized && FloatLayerChannels(consumer, view, pass.Plan) is (int axis, int channels))
            {
                var own = names.Fresh(tensor + "_" + consumer.Name + "_float_input");
                var dqScale = names.Fresh(own + "_scale");
                var dqZero = names.Fresh(own + "_zero_point");
                graph.Initializer.Add(TensorData.FromFloats(dqScale, Enumerable.Repeat(p.Scale, channels).ToArray(), channels));
                graph.Initializer.Add(GraphEditor.QuantizedTensor(dqZero, Enumerable.Repeat(p.ZeroPoint, channels), OnnxType(type), channels));
                var dq = GraphEditor.Node("DequantizeLinear", names.Fresh(own + "_DequantizeLinear"), new[] { quantized, dqScale, dqZero }, own, domain);
                dq.Attribute.Add(GraphEditor.Int("axis", axis));
                pass.Added.Add(dq);
                consumer.Input[0] = own;
            }
    }

    internal static OnnxDataType OnnxType(QuantType type) => type switch
    {
        QuantType.UInt8 => OnnxDataType.UInt8,
        QuantType.Int8 => OnnxDataType.Int8,
        QuantType.UInt16 => OnnxDataType.UInt16,
        QuantType.Int16 => OnnxDataType.Int16,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>For a float (not planned) layer with a float weight initializer whose handler asks for its own
    /// per-channel input DequantizeLinear (Conv, ConvTranspose, Gemm): the channel axis of its first input and the
    /// number of channels there; null for anything else.</summary>
    static (int Axis, int Channels)? FloatLayerChannels(NodeProto node, GraphView view, QuantizationPlan plan)
    {
        if (plan.QuantizedLayers.Contains(QuantizationPlan.LayerName(view, node)) || node.Input.Count < 2 || !view.Initializers.TryGetValue(node.Input[1], out var w)
            || w.DataType != (int)OnnxDataType.Float || w.Dims.Count < 2) return null;
        if (OpHandlers.ForOpType(node.OpType)?.FloatInputChannels(node, w) is not (int axis, long channels)) return null;
        return channels is > 0 and < int.MaxValue ? (axis, (int)channels) : null;
    }
}
