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

    /// <summary>Quantizes the planned layers of one graph in place, then those of its subgraphs (If branches,
    /// Loop and Scan bodies), each with its own Q/DQ nodes and quantized weights, whether the float weight lives
    /// in the subgraph or in an outer scope.</summary>
    static void QuantizeGraph(GraphView view, QuantizationPlan plan, IReadOnlyDictionary<string, TensorRange> ranges, Dictionary<string, QuantParams> qparams,
        Dictionary<string, QuantType> qtypes, bool perAxis, NameScope names, QuantizationOptions options, CancellationToken cancel)
    {
        var graph = view.Graph;
        var actType = options.ActivationType;
        var zpType = OnnxType(actType);
        var (qmin, qmax) = QuantMath.Limits(actType, options.ActivationSymmetric);
        var subgraphs = graph.Node.SelectMany(view.Subgraphs).ToList();

        // This graph's tensors (local name -> key), in graph order so pass-through outputs find their input's parameters.
        var local = plan.LocalTensors.TryGetValue(view.Scope, out var needed)
            ? needed.Where(kv => qparams.ContainsKey(kv.Value)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal)
            : new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
            if (node.Output.Count > 0 && plan.SharedOutputs.TryGetValue(view.Key(node.Output[0]), out var input) && qparams.TryGetValue(input, out var p))
            {
                qparams[view.Key(node.Output[0])] = p;
                qtypes[view.Key(node.Output[0])] = qtypes[input];
                local[node.Output[0]] = view.Key(node.Output[0]);
            }

        var newNodes = new List<NodeProto>();
        var quantizedWeights = new Dictionary<(string, int?), (string Output, float[] Scales, double[]? ErrorSums)>();
        // The first quantized layer with a weight in the main graph (for -OverflowFix FirstLayer).
        var firstWeighted = view.Scope.Length > 0 ? null : graph.Node.FirstOrDefault(n =>
            plan.QuantizedLayers.Contains(QuantizationPlan.LayerName(view, n)) && OpHandlers.Get(n)?.Weight(n, view) is not null);
        foreach (var node in graph.Node.Where(n => plan.QuantizedLayers.Contains(QuantizationPlan.LayerName(view, n))).ToList())
        {
            cancel.ThrowIfCancellationRequested();
            var handler = OpHandlers.Get(node)!;
            if (handler.RewriteStatic(new QdqRewrite(graph, view, newNodes, names, options), node)) continue;
            // Asked before the weight input is renamed below: handlers look at the float weight initializer.
            var biasInput = handler.Bias(node, view);
            float[]? weightScales = null;
            double[]? weightErrors = null;
            if (handler.Weight(node, view) is { } w)
            {
                var wName = node.Input[w.Input];
                int? axis = options.PerChannel ? w.Axis : null;
                if (!quantizedWeights.TryGetValue((wName, axis), out var done))
                {
                    var init = view.Initializers[wName];
                    var dims = init.Dims.ToArray();
                    var spec = options.Weights;
                    bool shift = ConvKernels.ShiftsWeights(node, options);
                    ranges.TryGetValue(view.Key(node.Input[0]), out var inputRange);
                    var (values, scales, zeroPoints, pairs) = PairSaturation.QuantizeWeights(TensorData.ReadFloats(init), dims, axis, spec,
                        // Only uint8 activations meet the weights in a u8 x s8 product that can saturate (int8 ones
                        // run as |a| x sign-adjusted w, at most 2 x 128 x 127; 16-bit ones have no integer kernel).
                        options.TypeOf(view.Key(node.Input[0])) == QuantType.UInt8 ? PairLayout.For(node, dims) : null,
                        options, firstLayer: node == firstWeighted, offset: ConvKernels.Shiftable(node, options) ? -1 : 0,
                        input: float.IsFinite(inputRange.Mean) && float.IsFinite(inputRange.Std) ? (inputRange.Mean, inputRange.Std) : null);
                    // 7-bit codes stored as q - 1 could reach -65: such a layer keeps zero point 0.
                    if (shift && pairs is not { ReducedTo7Bits: true }) ConvKernels.ShiftToMinusOne(values, zeroPoints);
                    plan.RecordPairs(QuantizationPlan.LayerName(view, node), pairs, options);
                    var qName = names.Fresh(wName + "_quantized");
                    var wType = spec.Type == QuantType.UInt8 ? OnnxDataType.UInt8 : OnnxDataType.Int8;
                    graph.Initializer.Add(GraphEditor.QuantizedTensor(qName, values, wType, dims));
                    var dq = GraphEditor.AddDequantize(graph, newNodes, names, wName, qName, scales, zeroPoints, wType, axis, zeroPoints[0]);
                    var errors = options.BiasCorrection && biasInput is not null
                        ? BiasCorrection.ErrorSums(TensorData.ReadFloats(init), dims, w.Axis, values, scales, zeroPoints, axis) : null;
                    quantizedWeights[(wName, axis)] = done = (dq, scales, errors);
                }
                node.Input[w.Input] = done.Output;
                weightScales = done.Scales;
                weightErrors = done.ErrorSums;
            }
            if (biasInput is int b && weightScales is not null && qparams.TryGetValue(view.Key(node.Input[0]), out var inParams))
            {
                var bName = node.Input[b];
                var bias = TensorData.ReadFloats(view.Initializers[bName]);
                if (weightErrors is not null && ranges.TryGetValue(view.Key(node.Input[0]), out var inRange) && float.IsFinite(inRange.Mean))
                    bias = BiasCorrection.Correct(bias, weightErrors, inRange.Mean);
                var (values, scales) = QuantMath.QuantizeBias(bias, inParams.Scale, weightScales);
                var qName = names.Fresh(bName + "_quantized");
                graph.Initializer.Add(TensorData.FromInt32(qName, values, bias.Length));
                // Per-tensor weights give one bias scale: a per-tensor DequantizeLinear, valid from opset 10.
                node.Input[b] = GraphEditor.AddDequantize(graph, newNodes, names, bName, qName, scales, new int[scales.Length], OnnxDataType.Int32, weightScales.Length == 1 ? null : 0);
            }
            foreach (var c in handler.ConstantInputs(node, view))
            {
                var cName = node.Input[c];
                var init = view.Initializers[cName];
                var values = TensorData.ReadFloats(init);
                float min = values.Length == 0 ? 0 : values.Min(), max = values.Length == 0 ? 0 : values.Max();
                var p = QuantMath.FromRange(min, max, actType, options.ActivationSymmetric);
                var qName = names.Fresh(cName + "_quantized");
                var dims = init.Dims.ToArray();
                graph.Initializer.Add(GraphEditor.QuantizedTensor(qName, values.Select(v => QuantMath.Quantize(v, p, qmin, qmax)), zpType, dims));
                node.Input[c] = GraphEditor.AddDequantize(graph, newNodes, names, cName, qName, new[] { p.Scale }, null, zpType, null, p.ZeroPoint);
            }
        }

        // One Q/DQ pair per quantized activation tensor; every reader takes the dequantized copy.
        foreach (var (tensor, key) in local.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            cancel.ThrowIfCancellationRequested();
            var p = qparams[key];
            var scaleName = names.Fresh(tensor + "_scale");
            var zpName = names.Fresh(tensor + "_zero_point");
            var type = qtypes[key];
            graph.Initializer.Add(TensorData.FromFloats(scaleName, new[] { p.Scale }));
            graph.Initializer.Add(GraphEditor.QuantizedTensor(zpName, new[] { p.ZeroPoint }, OnnxType(type)));
            var quantized = names.Fresh(tensor + "_QuantizeLinear_Output");
            // An output this graph produces keeps its name; one it only passes on (an input, an outer tensor) stays float.
            bool isGraphOutput = view.GraphOutputs.Contains(tensor) && view.Producers.ContainsKey(tensor);
            string source = tensor, dequantized;
            if (isGraphOutput)
            {
                // The graph output keeps its name: the producer writes a renamed tensor, and DQ writes the output.
                source = names.Fresh(tensor + "_float");
                // Looked up now, not in the view: a rewrite above (Gather) may have given the tensor a new producer.
                var producer = graph.Node.Concat(newNodes).FirstOrDefault(n => n.Output.Contains(tensor));
                if (producer is not null)
                    for (int k = 0; k < producer.Output.Count; k++) if (producer.Output[k] == tensor) producer.Output[k] = source;
                foreach (var consumer in view.ConsumersOf(tensor))
                    for (int k = 0; k < consumer.Input.Count; k++) if (consumer.Input[k] == tensor) consumer.Input[k] = source;
                dequantized = tensor;
            }
            else
            {
                dequantized = names.Fresh(tensor + "_DequantizeLinear_Output");
                foreach (var consumer in view.ConsumersOf(tensor))
                    for (int k = 0; k < consumer.Input.Count; k++) if (consumer.Input[k] == tensor) consumer.Input[k] = dequantized;
            }
            // 16-bit Q/DQ are ONNX Runtime's com.microsoft operators (ai.onnx has them only from opset 21).
            string domain = QuantMath.Is16Bit(type) ? GraphEditor.MsDomain : "";
            newNodes.Add(GraphEditor.Node("QuantizeLinear", names.Fresh(tensor + "_QuantizeLinear"), new[] { source, scaleName, zpName }, quantized, domain));
            newNodes.Add(GraphEditor.Node("DequantizeLinear", names.Fresh(tensor + "_DequantizeLinear"), new[] { quantized, scaleName, zpName }, dequantized, domain));
            // A Conv/ConvTranspose/Gemm kept in float that reads this tensor gets its own DequantizeLinear, with the same
            // scale and zero point repeated per input channel: ONNX Runtime's WeightBiasQuantization (basic level and up)
            // quantizes the float weight of such a layer to per-tensor int8 when its input comes from a per-tensor DQ and
            // its output goes to a QuantizeLinear, so the layer would not be float. The values it reads are unchanged.
            foreach (var consumer in view.ConsumersOf(tensor))
                if (perAxis && consumer.Input.Count > 0 && consumer.Input[0] == dequantized && FloatLayerChannels(consumer, view, plan) is (int axis, int channels))
                {
                    var own = names.Fresh(tensor + "_" + consumer.Name + "_float_input");
                    var dqScale = names.Fresh(own + "_scale");
                    var dqZero = names.Fresh(own + "_zero_point");
                    graph.Initializer.Add(TensorData.FromFloats(dqScale, Enumerable.Repeat(p.Scale, channels).ToArray(), channels));
                    graph.Initializer.Add(GraphEditor.QuantizedTensor(dqZero, Enumerable.Repeat(p.ZeroPoint, channels), OnnxType(type), channels));
                    var dq = GraphEditor.Node("DequantizeLinear", names.Fresh(own + "_DequantizeLinear"), new[] { quantized, dqScale, dqZero }, own, domain);
                    dq.Attribute.Add(GraphEditor.Int("axis", axis));
                    newNodes.Add(dq);
                    consumer.Input[0] = own;
                }
        }

        graph.Node.AddRange(newNodes);
        foreach (var sub in subgraphs) QuantizeGraph(sub, plan, ranges, qparams, qtypes, perAxis, names, options, cancel);
        GraphEditor.RemoveUnusedInitializers(graph);
        GraphEditor.SortTopologically(graph);
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
