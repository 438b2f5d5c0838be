using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>A calibrated range of one activation tensor, and its mean when known (bias correction uses it).</summary>
public readonly record struct TensorRange(float Min, float Max, float Mean = float.NaN);

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
        var graph = model.Graph;
        var view = new GraphView(graph);
        var names = new NameScope(graph);
        var actType = options.ActivationType;
        var zpType = OnnxType(actType);
        var (qmin, qmax) = QuantMath.Limits(actType, options.ActivationSymmetric);

        // Activation parameters, in graph order so pass-through outputs find their input's parameters.
        var qparams = new Dictionary<string, QuantParams>(StringComparer.Ordinal);
        var qtypes = new Dictionary<string, QuantType>(StringComparer.Ordinal);
        foreach (var (tensor, _) in plan.Activations)
        {
            qtypes[tensor] = options.TypeOf(tensor);
            qparams[tensor] = options.Overrides.TryGetValue(tensor, out var o)
                ? o.Params(ranges.GetValueOrDefault(tensor), qtypes[tensor], options.ActivationSymmetric)
                : QuantMath.FromRange(ranges[tensor].Min, ranges[tensor].Max, qtypes[tensor], options.ActivationSymmetric);
        }
        foreach (var node in graph.Node)
            if (plan.SharedOutputs.TryGetValue(node.Output.FirstOrDefault() ?? "", out var input) && qparams.TryGetValue(input, out var p))
            {
                qparams[node.Output[0]] = p;
                qtypes[node.Output[0]] = qtypes[input];
            }

        var newNodes = new List<NodeProto>();
        var quantizedWeights = new Dictionary<(string, int?), (string Output, float[] Scales, double[]? ErrorSums)>();
        foreach (var node in graph.Node.Where(n => plan.QuantizedLayers.Contains(n.Name)).ToList())
        {
            cancel.ThrowIfCancellationRequested();
            var handler = OpHandlers.Get(node)!;
            if (handler is GatherHandler)
            {
                EmbeddingQuantizer.Rewrite(graph, view, node, newNodes, names, options);
                continue;
            }
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
                    var (values, scales, zeroPoints) = QuantMath.QuantizeWeights(TensorData.ReadFloats(init), dims, axis, spec);
                    var qName = names.Fresh(wName + "_quantized");
                    var wType = spec.Type == QuantType.UInt8 ? OnnxDataType.UInt8 : OnnxDataType.Int8;
                    graph.Initializer.Add(QuantizedTensor(qName, values, wType, dims));
                    var dq = AddDequantize(graph, newNodes, names, wName, qName, scales, zeroPoints, wType, axis, zeroPoints[0]);
                    var errors = options.BiasCorrection && biasInput is not null
                        ? BiasCorrection.ErrorSums(TensorData.ReadFloats(init), dims, w.Axis, values, scales, zeroPoints, axis) : null;
                    quantizedWeights[(wName, axis)] = done = (dq, scales, errors);
                }
                node.Input[w.Input] = done.Output;
                weightScales = done.Scales;
                weightErrors = done.ErrorSums;
            }
            if (biasInput is int b && weightScales is not null && qparams.TryGetValue(node.Input[0], out var inParams))
            {
                var bName = node.Input[b];
                var bias = TensorData.ReadFloats(view.Initializers[bName]);
                if (weightErrors is not null && ranges.TryGetValue(node.Input[0], out var inRange) && float.IsFinite(inRange.Mean))
                    bias = BiasCorrection.Correct(bias, weightErrors, inRange.Mean);
                var (values, scales) = QuantMath.QuantizeBias(bias, inParams.Scale, weightScales);
                var qName = names.Fresh(bName + "_quantized");
                graph.Initializer.Add(TensorData.FromInt32(qName, values, bias.Length));
                node.Input[b] = AddDequantize(graph, newNodes, names, bName, qName, scales, null, OnnxDataType.Int32, 0);
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
                graph.Initializer.Add(QuantizedTensor(qName, values.Select(v => QuantMath.Quantize(v, p, qmin, qmax)), zpType, dims));
                node.Input[c] = AddDequantize(graph, newNodes, names, cName, qName, new[] { p.Scale }, null, zpType, null, p.ZeroPoint);
            }
        }

        // One Q/DQ pair per quantized activation tensor; every reader takes the dequantized copy.
        foreach (var (tensor, p) in qparams.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            cancel.ThrowIfCancellationRequested();
            var scaleName = names.Fresh(tensor + "_scale");
            var zpName = names.Fresh(tensor + "_zero_point");
            var type = qtypes[tensor];
            graph.Initializer.Add(TensorData.FromFloats(scaleName, new[] { p.Scale }));
            graph.Initializer.Add(QuantizedTensor(zpName, new[] { p.ZeroPoint }, OnnxType(type)));
            var quantized = names.Fresh(tensor + "_QuantizeLinear_Output");
            bool isGraphOutput = view.GraphOutputs.Contains(tensor);
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
            string domain = QuantMath.Is16Bit(type) ? MsDomain : "";
            newNodes.Add(Node("QuantizeLinear", names.Fresh(tensor + "_QuantizeLinear"), new[] { source, scaleName, zpName }, quantized, domain));
            newNodes.Add(Node("DequantizeLinear", names.Fresh(tensor + "_DequantizeLinear"), new[] { quantized, scaleName, zpName }, dequantized, domain));
        }

        graph.Node.AddRange(newNodes);
        if (newNodes.Any(n => n.Domain == MsDomain) && !model.OpsetImport.Any(o => o.Domain == MsDomain))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = MsDomain, Version = 1 });
        RemoveUnusedInitializers(graph);
        SortTopologically(graph);
        return model;
    }

    const string MsDomain = "com.microsoft";

    internal static OnnxDataType OnnxType(QuantType type) => type switch
    {
        QuantType.UInt8 => OnnxDataType.UInt8,
        QuantType.Int8 => OnnxDataType.Int8,
        QuantType.UInt16 => OnnxDataType.UInt16,
        QuantType.Int16 => OnnxDataType.Int16,
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>A DequantizeLinear of a quantized initializer; <paramref name="zeroPoints"/> per axis (zeros when null).</summary>
    internal static string AddDequantize(GraphProto graph, List<NodeProto> nodes, NameScope names, string baseName, string quantized,
        float[] scales, int[]? zeroPoints, OnnxDataType zpType, int? axis, int scalarZeroPoint = 0)
    {
        bool perAxis = axis is not null;
        var scaleName = names.Fresh(baseName + "_scale");
        var zpName = names.Fresh(baseName + "_zero_point");
        graph.Initializer.Add(perAxis ? TensorData.FromFloats(scaleName, scales, scales.Length) : TensorData.FromFloats(scaleName, scales[..1]));
        var zps = perAxis ? (IEnumerable<int>?)zeroPoints ?? Enumerable.Repeat(0, scales.Length) : new[] { scalarZeroPoint };
        graph.Initializer.Add(perAxis ? QuantizedTensor(zpName, zps, zpType, scales.Length) : QuantizedTensor(zpName, zps, zpType));
        var output = names.Fresh(baseName + "_DequantizeLinear_Output");
        var dq = Node("DequantizeLinear", names.Fresh(baseName + "_DequantizeLinear"), new[] { quantized, scaleName, zpName }, output,
            zpType is OnnxDataType.UInt16 or OnnxDataType.Int16 ? MsDomain : "");
        if (perAxis) dq.Attribute.Add(new AttributeProto { Name = "axis", I = axis!.Value, Type = AttributeProto.Types.AttributeType.Int });
        nodes.Add(dq);
        return output;
    }

    internal static TensorProto QuantizedTensor(string name, IEnumerable<int> values, OnnxDataType type, params long[] dims) => type switch
    {
        OnnxDataType.UInt16 or OnnxDataType.Int16 => Typed16(name, values, type, dims),
        OnnxDataType.UInt8 => TensorData.FromUInt8(name, values.Select(v => (byte)v).ToArray(), dims),
        OnnxDataType.Int8 => TensorData.FromInt8(name, values.Select(v => (sbyte)v).ToArray(), dims),
        OnnxDataType.Int32 => TensorData.FromInt32(name, values.ToArray(), dims),
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    /// <summary>16-bit values in int32_data (ONNX's field for them), which every reader takes.</summary>
    static TensorProto Typed16(string name, IEnumerable<int> values, OnnxDataType type, long[] dims)
    {
        var t = new TensorProto { Name = name, DataType = (int)type };
        t.Dims.AddRange(dims);
        t.Int32Data.AddRange(values);
        return t;
    }

    internal static NodeProto Node(string op, string name, string[] inputs, string output, string domain = "")
    {
        var node = new NodeProto { OpType = op, Name = name, Domain = domain };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        return node;
    }

    internal static void RemoveUnusedInitializers(GraphProto graph)
    {
        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in OpsetUpgrader.AllNodes(graph)) used.UnionWith(n.Input);
        used.UnionWith(graph.Output.Select(o => o.Name));
        var keep = graph.Initializer.Where(t => used.Contains(t.Name)).ToList();
        graph.Initializer.Clear();
        graph.Initializer.AddRange(keep);
    }

    /// <summary>Stable topological order (Kahn, ties broken by current position).</summary>
    internal static void SortTopologically(GraphProto graph)
    {
        var nodes = graph.Node.ToList();
        var producer = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < nodes.Count; i++) foreach (var o in nodes[i].Output) if (o.Length > 0) producer[o] = i;
        var indegree = new int[nodes.Count];
        var dependents = new List<int>[nodes.Count];
        for (int i = 0; i < nodes.Count; i++)
            foreach (var input in nodes[i].Input.Distinct())
                if (input.Length > 0 && producer.TryGetValue(input, out var p) && p != i)
                {
                    indegree[i]++;
                    (dependents[p] ??= new List<int>()).Add(i);
                }
        var ready = new SortedSet<int>(Enumerable.Range(0, nodes.Count).Where(i => indegree[i] == 0));
        var order = new List<NodeProto>(nodes.Count);
        while (ready.Count > 0)
        {
            var n = ready.Min;
            ready.Remove(n);
            order.Add(nodes[n]);
            if (dependents[n] is null) continue;
            foreach (var d in dependents[n]) if (--indegree[d] == 0) ready.Add(d);
        }
        if (order.Count != nodes.Count)
            throw new PtqException("GraphCycle", PtqErrorKind.InvalidData, "The quantized graph would contain a cycle.", null);
        graph.Node.Clear();
        graph.Node.AddRange(order);
    }
}
