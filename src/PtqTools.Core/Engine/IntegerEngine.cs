using Onnx;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Core.Engine;

/// <summary>
/// Executes quantized QDQ and QOperator models (CNNs and MLPs) with the engine's own int8 kernels. QDQ groups are
/// fused into operator form first (<see cref="QdqFuser"/>); the graph is then run node by node in topological order.
/// Nodes whose op is outside <see cref="EngineOps.Supported"/> run in ONNX Runtime, one node at a time
/// (<see cref="OrtNodeFallback"/>; an If whole, its branches reading the outer values they name), except quantized
/// ops, loops and ops ONNX Runtime does not know either, which are refused up front, by name.
/// Dispose the engine to release the fallback's ONNX Runtime sessions.
/// </summary>
public sealed class IntegerEngine : IDisposable
{
    readonly Dictionary<string, EngineTensor> _constants = new(StringComparer.Ordinal);
    readonly Dictionary<NodeProto, object> _cache;
    readonly OrtNodeFallback _fallback;

    /// <param name="fallbackThreads">ONNX Runtime's intra-op threads for the nodes it runs (<see cref="OrtNodeFallback"/>).</param>
    public IntegerEngine(ModelProto model, string source = "model", int fallbackThreads = 1)
        : this(model, EngineOptions.Default with { FallbackThreads = fallbackThreads }, source) { }

    /// <summary>An engine computing with the given options (e.g. <c>EngineOptions.Emulating(QuantTarget.Avx2)</c>
    /// to reproduce ONNX Runtime's saturating int8 sums on CPUs without VNNI).</summary>
    public IntegerEngine(ModelProto model, EngineOptions options, string source = "model")
    {
        Options = options ?? throw new ArgumentNullException(nameof(options));
        _cache = new EngineState(options.Arithmetic, options.Kernels);
        var graph = model.Graph;
        foreach (var t in graph.Initializer) _constants[t.Name] = EngineTensor.FromProto(t);
        foreach (var n in graph.Node.Where(n => n.OpType == "Constant"))
        {
            _constants[n.Output[0]] = ConstantValue(n);
        }
        Inputs = graph.Input.Where(i => !_constants.ContainsKey(i.Name)).Select(i => i.Name).ToArray();
        Outputs = graph.Output.Select(o => o.Name).ToArray();
        Nodes = QdqFuser.Fuse(graph, _constants).Where(n => n.OpType != "Constant").ToList();
        // Ops outside the engine's table run in ONNX Runtime; what cannot run there either is refused here.
        var unsupported = Nodes.Where(OrtNodeFallback.Handles)
            .Select(n => (n.OpType, Reason: OrtNodeFallback.Refusal(n))).Where(p => p.Reason is not null).Distinct().ToList();
        if (unsupported.Count > 0)
        {
            var ops = unsupported.Select(p => p.OpType).Distinct().ToList();
            throw new PtqException("EngineOpNotSupported", PtqErrorKind.NotSupported,
                $"The PtqTools engine cannot run '{source}': it does not support {string.Join(", ", unsupported.Select(p => $"{p.OpType} ({p.Reason})"))}. Use -Engine OnnxRuntime.",
                string.Join(",", ops));
        }
        OpsInOnnxRuntime = Nodes.Where(OrtNodeFallback.Handles).Select(n => n.OpType).Distinct().ToList();
        _fallback = new OrtNodeFallback(model, _constants, options.FallbackThreads);
    }

    /// <summary>The op types the engine hands to ONNX Runtime (<see cref="OrtNodeFallback"/>), one node at a time.</summary>
    public IReadOnlyList<string> OpsInOnnxRuntime { get; }

    /// <summary>Releases the ONNX Runtime sessions of the nodes it ran.</summary>
    public void Dispose() => _fallback.Dispose();

    /// <summary>A Constant node's value: its tensor, or one of the scalar and list forms (opset 12).</summary>
    static EngineTensor ConstantValue(NodeProto n)
    {
        var a = n.Attribute.FirstOrDefault(a => a.Name is "value" or "value_float" or "value_floats" or "value_int" or "value_ints")
            ?? throw new PtqException("EngineOpNotSupported", PtqErrorKind.NotSupported,
                $"Constant node '{n.Name}' has no numeric value ('value', 'value_float(s)' or 'value_int(s)'): it holds {string.Join(", ", n.Attribute.Select(x => x.Name))}.", n.Name);
        return a.Name switch
        {
            "value" => EngineTensor.FromProto(a.T),
            "value_float" => EngineTensor.Float(new[] { a.F }),
            "value_floats" => EngineTensor.Float(a.Floats.ToArray(), a.Floats.Count),
            "value_int" => new EngineTensor(OnnxDataType.Int64, Array.Empty<long>(), new[] { a.I }),
            _ => new EngineTensor(OnnxDataType.Int64, new long[] { a.Ints.Count }, a.Ints.ToArray()),
        };
    }

    public EngineOptions Options { get; }

    /// <summary>When set, each run adds its calls and milliseconds per op type here (where the time goes).</summary>
    public Dictionary<string, (int Count, double Milliseconds)>? Profile { get; set; }

    public IReadOnlyList<string> Inputs { get; }
    public IReadOnlyList<string> Outputs { get; }
    /// <summary>The nodes as executed (after QDQ fusion).</summary>
    public IReadOnlyList<NodeProto> Nodes { get; }

    public Dictionary<string, EngineTensor> Run(IReadOnlyDictionary<string, EngineTensor> inputs, CancellationToken cancel = default)
    {
        var values = RunAll(inputs, cancel);
        return Outputs.ToDictionary(o => o, o => values.TryGetValue(o, out var v) ? v
            : throw new PtqException("EngineTensorMissing", PtqErrorKind.InvalidData, $"The output '{o}' was not produced.", o));
    }

    /// <summary>Runs the graph and returns every tensor it computed (inputs and constants included): the captured
    /// values layer replay and per-layer comparisons start from.</summary>
    public Dictionary<string, EngineTensor> RunAll(IReadOnlyDictionary<string, EngineTensor> inputs, CancellationToken cancel = default)
    {
        var values = new Dictionary<string, EngineTensor>(_constants, StringComparer.Ordinal);
        foreach (var name in Inputs)
        {
            if (!inputs.TryGetValue(name, out var t))
                throw new PtqException("EngineInputMissing", PtqErrorKind.InvalidArgument, $"The model input '{name}' was not given.", name);
            values[name] = t;
        }
        foreach (var node in Nodes)
        {
            cancel.ThrowIfCancellationRequested();
            var args = node.Input.Select(i => i.Length == 0 ? null : values.TryGetValue(i, out var v) ? v
                : throw new PtqException("EngineTensorMissing", PtqErrorKind.InvalidData, $"Node '{node.Name}' ({node.OpType}) needs '{i}', which nothing produced.", i)).ToArray();
            EngineTensor[] results;
            long started = Profile is null ? 0 : System.Diagnostics.Stopwatch.GetTimestamp();
            try { results = OrtNodeFallback.Handles(node) ? _fallback.Run(node, args, values.GetValueOrDefault) : EngineOps.Run(node, args, _cache); }
            catch (ArgumentException ex)
            {
                throw new PtqException("EngineNodeFailed", PtqErrorKind.InvalidData, $"Node '{node.Name}' ({node.OpType}) failed: {ex.Message}", node.Name, ex);
            }
            if (Profile is { } profile)
            {
                double ms = System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                profile.TryGetValue(node.OpType, out var seen);
                profile[node.OpType] = (seen.Count + 1, seen.Milliseconds + ms);
            }
            for (int i = 0; i < results.Length && i < node.Output.Count; i++)
                if (node.Output[i].Length > 0) values[node.Output[i]] = results[i];
        }
        return values;
    }

    /// <summary>Runs one node (layer replay) on the given inputs; missing inputs are taken from the model's constants.</summary>
    public EngineTensor[] RunNode(NodeProto node, IReadOnlyDictionary<string, EngineTensor> inputs)
    {
        var args = node.Input.Select(i => i.Length == 0 ? null : inputs.TryGetValue(i, out var v) ? v : _constants.TryGetValue(i, out var c) ? c
            : throw new PtqException("ReplayInputMissing", PtqErrorKind.InvalidArgument, $"Layer '{node.Name}' needs '{i}', which was not given.", i)).ToArray();
        return OrtNodeFallback.Handles(node)
            ? _fallback.Run(node, args, n => inputs.TryGetValue(n, out var v) ? v : _constants.GetValueOrDefault(n))
            : EngineOps.Run(node, args, _cache);
    }

    internal IReadOnlyDictionary<string, EngineTensor> Constants => _constants;

    /// <summary>The quantization step of an output: the scale of the DequantizeLinear that produces it (through
    /// shape-only ops), or 0 when it is not produced from quantized values.</summary>
    public float OutputStep(string output)
    {
        var producers = Nodes.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);
        while (producers.TryGetValue(output, out var node))
        {
            if (node.OpType == "DequantizeLinear")
                return _constants.TryGetValue(node.Input[1], out var s) && s.Length == 1 ? s.FloatAt(0) : 0f;
            if (node.OpType is not ("Reshape" or "Flatten" or "Identity")) return 0f;
            output = node.Input[0];
        }
        return 0f;
    }
}
