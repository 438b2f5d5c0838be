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
public sealed class LayerReplay
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
    public LayerReplayResult Run(string layer, IReadOnlyDictionary<string, EngineTensor> floatInputs)
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
        return new LayerReplayResult(layer, node.OpType, ActivationInputs(node).Select(a => a.FloatName).ToArray(), outputs, floats, scale, zero);
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

    static float[] Dequantize(EngineTensor t, float scale, int zero)
    {
        var y = new float[t.Length];
        switch (t.Type)
        {
            case OnnxDataType.UInt8: QuantizeKernels.Dequantize<byte>(t.Bytes, new[] { scale }, new[] { zero }, t.Length, y); break;
            case OnnxDataType.Int8: QuantizeKernels.Dequantize<sbyte>(t.SBytes, new[] { scale }, new[] { zero }, t.Length, y); break;
            case OnnxDataType.Int32: QuantizeKernels.Dequantize<int>(t.Ints, new[] { scale }, new[] { zero }, t.Length, y); break;
            default: throw new PtqException("ReplayOutputType", PtqErrorKind.NotSupported, $"A {t.Type} output cannot be dequantized.", t.Type);
        }
        return y;
    }
}
