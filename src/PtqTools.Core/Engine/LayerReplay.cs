using Onnx;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Engine;

/// <summary>What replaying one layer gives: its integer output(s) and their dequantized float values.</summary>
public sealed record LayerReplayResult(string Layer, string OpType, string[] InputTensors, EngineTensor[] IntegerOutputs, float[][] FloatOutputs,
    float OutputScale, int OutputZeroPoint);

/// <summary>
/// Layer replay: one layer of a quantized model run through the kernels from captured float inputs (for example the
/// float model's activations), quantized with the model's own input scales and zero points. The building block of
/// per-layer error analysis: compare <see cref="LayerReplayResult.FloatOutputs"/> with the float layer's output.
/// </summary>
public sealed class LayerReplay : IDisposable
{
    readonly IntegerEngine _engine;
    readonly Dictionary<string, NodeProto> _producers = new(StringComparer.Ordinal);

    public LayerReplay(ModelProto quantized, string source = "model") : this(quantized, EngineOptions.Default, source) { }

    /// <summary>Replay computing with the given options (e.g. emulating a CPU class's saturating int8 sums).</summary>
    public LayerReplay(ModelProto quantized, EngineOptions options, string source = "model")
    {
        _engine = new IntegerEngine(quantized, options, source);
        foreach (var n in quantized.Graph.Node) foreach (var o in n.Output) _producers[o] = n;
    }

    public IntegerEngine Engine => _engine;

    /// <summary>Releases the engine (and the ONNX Runtime sessions of the nodes it ran there).</summary>
    public void Dispose() => _engine.Dispose();

    /// <summary>Layers that can be replayed: the executed nodes, by name (a fused QDQ layer keeps its Conv/MatMul/Add name).</summary>
    public IReadOnlyList<string> Layers => _engine.Nodes.Where(n => n.Name.Length > 0).Select(n => n.Name).ToList();

    /// <summary>The float tensors a layer's activation inputs are quantized from (the names to capture).</summary>
    public IReadOnlyList<string> FloatInputs(string layer) => ActivationInputs(Find(layer)).Select(a => a.FloatName).ToList();

    NodeProto Find(string layer) => _engine.Nodes.FirstOrDefault(n => n.Name == layer)
        ?? throw new PtqException("LayerNotFound", PtqErrorKind.ObjectNotFound,
            $"The quantized model has no layer named '{layer}' that the engine executes.", layer);

    /// <summary>Activation inputs of the executed node: index, the quantized tensor it reads, and the float tensor that
    /// QuantizeLinear made it from.</summary>
    List<(int Index, string QuantName, string FloatName, NodeProto? Quantize)> ActivationInputs(NodeProto node)
    {
        var list = new List<(int, string, string, NodeProto?)>();
        for (int i = 0; i < node.Input.Count; i++)
        {
            var name = node.Input[i];
            if (name.Length == 0 || _engine.Constants.ContainsKey(name)) continue;
            if (_producers.TryGetValue(name, out var q) && q.OpType == "QuantizeLinear") list.Add((i, name, q.Input[0], q));
            else list.Add((i, name, name, null));
        }
        return list;
    }

    /// <summary>Runs <paramref name="layer"/> on captured float inputs, keyed by the float tensor names
    /// (<see cref="FloatInputs"/>).</summary>
    public LayerReplayResult Run(string layer, IReadOnlyDictionary<string, EngineTensor> floatInputs) => RunWithFeed(layer, floatInputs).Result;

    /// <summary>As <see cref="Run"/>, with the layer's output before its output quantization too (see
    /// <see cref="Unrounded"/>; null for a layer without integer products).</summary>
    public (LayerReplayResult Result, float[]? Unrounded) RunUnrounded(string layer, IReadOnlyDictionary<string, EngineTensor> floatInputs)
    {
        var (result, feed) = RunWithFeed(layer, floatInputs);
        return (result, Unrounded(layer, feed));
    }

    (LayerReplayResult Result, Dictionary<string, EngineTensor> Feed) RunWithFeed(string layer, IReadOnlyDictionary<string, EngineTensor> floatInputs)
    {
        var node = Find(layer);
        var feed = new Dictionary<string, EngineTensor>(StringComparer.Ordinal);
        foreach (var (index, quantName, floatName, quantize) in ActivationInputs(node))
        {
            if (!floatInputs.TryGetValue(floatName, out var value))
                throw new PtqException("ReplayInputMissing", PtqErrorKind.InvalidArgument,
                    $"Layer '{layer}' reads '{floatName}'; capture it and pass it by that name.", floatName);
            if (quantize is null) { feed[quantName] = value; continue; }
            feed[quantName] = _engine.RunNode(quantize, new Dictionary<string, EngineTensor> { [quantize.Input[0]] = value })[0];
        }
        var outputs = _engine.RunNode(node, feed);
        var (scale, zero) = OutputParams(node, feed);
        var floats = outputs.Select(o => o.Type == OnnxDataType.Float ? o.Floats : Dequantize(o, scale, zero)).ToArray();
        return (new LayerReplayResult(layer, node.OpType, ActivationInputs(node).Select(a => a.FloatName).ToArray(), outputs, floats, scale, zero), feed);
    }

    readonly Dictionary<string, NodeProto?> _unrounded = new(StringComparer.Ordinal);

    /// <summary>Whether <see cref="Unrounded"/> gives a value for the layer: a QLinearConv, QLinearMatMul, QGemm,
    /// QLinearAdd (same shapes or a scalar operand), QLinearGlobalAveragePool or QLinearAveragePool.</summary>
    public bool HasUnrounded(string layer) => UnroundedNode(Find(layer)) is not null;

    /// <summary>
    /// The output of a layer before its output quantization and any fused Relu: for integer products (QLinearConv,
    /// QLinearMatMul, QGemm) the same int32 sums the layer computes (the engine's arithmetic, saturating pairs when it
    /// emulates a CPU without VNNI), plus bias, times the input and weight scales; for QLinearAdd and the average pools
    /// the float op on the dequantized inputs. This is what an unfused QDQ graph computes in float for the op's own
    /// output. Null for other layers (shape and max ops pass quantized values on unchanged). <paramref name="values"/> holds the layer's
    /// inputs by name (a whole-model <see cref="IntegerEngine.RunAll"/>, or a replay's feed).
    /// </summary>
    public float[]? Unrounded(string layer, IReadOnlyDictionary<string, EngineTensor> values)
    {
        var node = Find(layer);
        EngineTensor Get(int i) => values.TryGetValue(node.Input[i], out var v) ? v : _engine.Constants[node.Input[i]];
        float[] Dq(int x, int scale, int zero) =>
            Dequantize(Get(x), Get(scale).FloatAt(0), node.Input.Count > zero && node.Input[zero].Length > 0 ? Get(zero).IntAt(0) : 0);
        switch (node.OpType)
        {
            // No products: the float op on the dequantized inputs, which is what they compute before rounding.
            case "QLinearGlobalAveragePool" or "QLinearAveragePool":
            {
                var pool = UnroundedNode(node)!;
                var x = Get(0);
                return _engine.RunNode(pool, new Dictionary<string, EngineTensor> { [pool.Input[0]] = EngineTensor.Float(Dq(0, 1, 2), x.Dims) })[0].Floats;
            }
            case "QLinearAdd":
            {
                float[] a = Dq(0, 1, 2), b = Dq(3, 4, 5);
                if (a.Length != b.Length && b.Length != 1 && a.Length != 1) return null;
                var sum = new float[Math.Max(a.Length, b.Length)];
                for (int i = 0; i < sum.Length; i++) sum[i] = a[a.Length == 1 ? 0 : i] + b[b.Length == 1 ? 0 : i];
                return sum;
            }
        }
        var variant = UnroundedNode(node);
        if (variant is null) return null;
        var y = _engine.RunNode(variant, values)[0];
        if (y.Type == OnnxDataType.Float) return y.Floats;
        // ConvInteger / MatMulInteger sums: scale per output channel (axis 1 of a conv, the last axis of a matmul).
        var acc = y.Ints;
        float xs = Get(1).FloatAt(0);
        var ws = Get(4).Floats;
        bool conv = node.OpType == "QLinearConv";
        int channels = conv ? (int)y.Dims[1] : (int)y.Dims[^1];
        long inner = conv ? acc.Length / (y.Dims[0] * channels) : 1;
        var bias = new float[channels];
        if (conv && node.Input.Count > 8 && node.Input[8].Length > 0)
        {
            var b = Get(8).Ints;
            var bs = node.Input.Count > 9 && node.Input[9].Length > 0 ? Get(9).Floats : null;
            for (int c = 0; c < channels; c++) bias[c] = b[c] * (bs is null ? xs * ws[ws.Length == 1 ? 0 : c] : bs[bs.Length == 1 ? 0 : c]);
        }
        var result = new float[acc.Length];
        for (int i = 0; i < acc.Length; i++)
        {
            int c = (int)(i / inner % channels);
            result[i] = acc[i] * (xs * ws[ws.Length == 1 ? 0 : c]) + bias[c];
        }
        return result;
    }

    /// <summary>The integer form of a layer that gives its sums (ConvInteger, MatMulInteger) or its float output
    /// (QGemm without output scale), kept per layer so packed weights are cached; null for other layers.</summary>
    NodeProto? UnroundedNode(NodeProto node)
    {
        lock (_unrounded)
        {
            if (_unrounded.TryGetValue(node.Name, out var known)) return known;
            NodeProto? variant = null;
            string In(int i) => i < node.Input.Count ? node.Input[i] : "";
            switch (node.OpType)
            {
                case "QLinearConv":
                    variant = new NodeProto { OpType = "ConvInteger", Name = node.Name + "_unrounded" };
                    variant.Input.AddRange(new[] { In(0), In(3), In(2), In(5) });
                    break;
                case "QLinearMatMul":
                    variant = new NodeProto { OpType = "MatMulInteger", Name = node.Name + "_unrounded" };
                    variant.Input.AddRange(new[] { In(0), In(3), In(2), In(5) });
                    break;
                case "QGemm":
                    variant = new NodeProto { OpType = "QGemm", Name = node.Name + "_unrounded" };
                    variant.Input.AddRange(node.Input.Take(8));
                    break;
                case "QLinearGlobalAveragePool" or "QLinearAveragePool":
                    variant = new NodeProto { OpType = node.OpType["QLinear".Length..], Name = node.Name + "_unrounded" };
                    variant.Input.Add(node.Name + "_unrounded_input");
                    break;
                case "QLinearAdd":
                    variant = new NodeProto { OpType = "Add", Name = node.Name + "_unrounded" };
                    break;
            }
            if (variant is not null)
            {
                variant.Attribute.AddRange(node.Attribute.Where(a => a.Name != "ptq_relu"));
                variant.Output.Add(node.Name + "_unrounded_output");
            }
            return _unrounded[node.Name] = variant;
        }
    }

    /// <summary>The tensor the executed layer writes (after QDQ fusion: its QuantizeLinear's output, or the op's own
    /// output when it is not followed by one).</summary>
    public string OutputTensor(string layer) => Find(layer).Output[0];

    /// <summary>A value of the layer's output (<see cref="OutputTensor"/>, e.g. taken from <see cref="IntegerEngine.RunAll"/>)
    /// as float: dequantized with the layer's output scale and zero point, or as it is when it is float.</summary>
    public float[] Dequantized(string layer, EngineTensor output)
    {
        var node = Find(layer);
        if (output.Type == OnnxDataType.Float) return output.Floats;
        var (scale, zero) = OutputParams(node, new Dictionary<string, EngineTensor>());
        return Dequantize(output, scale, zero);
    }

    (float Scale, int Zero) OutputParams(NodeProto node, IReadOnlyDictionary<string, EngineTensor> feed)
    {
        EngineTensor? Get(int i) => i < node.Input.Count && node.Input[i].Length > 0
            ? (_engine.Constants.TryGetValue(node.Input[i], out var c) ? c : feed.GetValueOrDefault(node.Input[i])) : null;
        (int s, int z) = node.OpType switch
        {
            "QLinearConv" or "QLinearMatMul" or "QLinearAdd" => (6, 7),
            "QGemm" => (8, 9),
            "QLinearAveragePool" or "QLinearGlobalAveragePool" => (3, 4),
            "QuantizeLinear" => (1, 2),
            _ => (-1, -1),
        };
        if (s >= 0 && Get(s) is { } st) return (st.FloatAt(0), Get(z)?.IntAt(0) ?? 0);
        // Shape-only and max ops on quantized values keep their input's parameters.
        var input = node.Input.Count > 0 && _producers.TryGetValue(node.Input[0], out var q) && q.OpType == "QuantizeLinear" ? q : null;
        if (input is not null && _engine.Constants.TryGetValue(input.Input[1], out var qs))
            return (qs.FloatAt(0), input.Input.Count > 2 && _engine.Constants.TryGetValue(input.Input[2], out var qz) ? qz.IntAt(0) : 0);
        return (1f, 0);
    }

    float[] Dequantize(EngineTensor t, float scale, int zero)
    {
        var y = new float[t.Length];
        switch (t.Type)
        {
            case OnnxDataType.UInt8: QuantizeKernels.Dequantize<byte>(_engine.Options.Kernels, t.Bytes, new[] { scale }, new[] { zero }, t.Length, y); break;
            case OnnxDataType.Int8: QuantizeKernels.Dequantize<sbyte>(_engine.Options.Kernels, t.SBytes, new[] { scale }, new[] { zero }, t.Length, y); break;
            case OnnxDataType.Int32: QuantizeKernels.Dequantize<int>(_engine.Options.Kernels, t.Ints, new[] { scale }, new[] { zero }, t.Length, y); break;
            default: throw new PtqException("ReplayOutputType", PtqErrorKind.NotSupported, $"A {t.Type} output cannot be dequantized.", t.Type);
        }
        return y;
    }
}
