using Onnx;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Core.Engine;

/// <summary>
/// Executes quantized QDQ and QOperator models (CNNs and MLPs) with the engine's own int8 kernels. QDQ groups are
/// fused into operator form first (<see cref="QdqFuser"/>); the graph is then run node by node in topological order.
/// Nodes whose op is outside <see cref="EngineOps.Supported"/> run in ONNX Runtime (<see cref="OrtNodeFallback"/>;
/// an If whole, its branches reading the outer values they name): in <see cref="Run"/> each connected region of them
/// as one session (<see cref="OrtRegionPlan"/>), in <see cref="RunAll"/> and <see cref="RunNode"/> one node at a time;
/// quantized ops, loops and ops ONNX Runtime does not know either are refused up front, by name.
/// Dispose the engine to release the fallback's ONNX Runtime sessions.
/// </summary>
public sealed partial class IntegerEngine : IDisposable
{
    readonly Dictionary<string, EngineTensor> _constants = new(StringComparer.Ordinal);
    readonly Dictionary<NodeProto, object> _cache;
    readonly OrtNodeFallback _fallback;
    readonly HashSet<Array> _constantArrays;

    /// <param name="fallbackThreads">ONNX Runtime's intra-op threads for the nodes it runs (<see cref="OrtNodeFallback"/>).</param>
    public IntegerEngine(ModelProto model, string source = "model", int fallbackThreads = 1)
        : this(model, EngineOptions.Default with { FallbackThreads = fallbackThreads }, source) { }

    /// <summary>An engine computing with the given options (e.g. <c>EngineOptions.Emulating(QuantTarget.Avx2)</c>
    /// to reproduce ONNX Runtime's saturating int8 sums on CPUs without VNNI).</summary>
    public IntegerEngine(ModelProto model, EngineOptions options, string source = "model") : this(model, options, source, null) { }

    /// <summary>An engine on the model file at <paramref name="path"/>, which it parses itself and owns: each
    /// initializer's bytes are dropped from the parsed model as soon as its constant is made, and a weight that only
    /// one packing node reads (QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger) is released once that node has
    /// packed it, so the engine holds its weights once, in the packed form its kernel path runs (issue 16: peak
    /// memory). A released weight read again (a new input shape, <see cref="RunAll"/>, <see cref="RunNode"/>) is read
    /// back from the file, which must not have changed (<c>EngineModelChanged</c> otherwise).</summary>
    public static IntegerEngine Load(string path, EngineOptions options, string? source = null)
    {
        var info = new FileInfo(path);
        var stamp = (info.Exists ? info.Length : -1, info.Exists ? info.LastWriteTimeUtc : default);
        var model = OnnxModelIO.Load(path);
        return new IntegerEngine(model, options, source ?? Path.GetFileName(path), new ModelFile(Path.GetFullPath(path), stamp.Item1, stamp.Item2));
    }

    /// <summary>The file an engine made by <see cref="Load"/> reads released weights back from, as it was loaded.</summary>
    sealed record ModelFile(string Path, long Length, DateTime Written);

    readonly ModelFile? _file;
    WeakReference<ModelProto>? _readBack;
    /// <summary>Constants the engine may release once packed: initializers of its own model read by one packing node only.</summary>
    readonly Dictionary<string, (NodeProto Node, EngineTensor Tensor)>? _releasable;
    readonly HashSet<NodeProto>? _packers;
    /// <summary>Constants of nodes ONNX Runtime runs that the engine releases once the node's session holds them.</summary>
    readonly Dictionary<NodeProto, List<string>> _fallbackReleases = new(ReferenceEqualityComparer.Instance);
    long _releasedBytes;

    /// <summary>The packing ops and the input each packs (the weights).</summary>
    static int PackedInput(string opType) => opType switch
    {
        "QLinearConv" or "QLinearMatMul" => 3,
        "ConvInteger" or "MatMulInteger" => 1,
        _ => -1,
    };

    IntegerEngine(ModelProto model, EngineOptions options, string source, ModelFile? file)
    {
        Options = options ?? throw new ArgumentNullException(nameof(options));
        _cache = new EngineState(options.Arithmetic, options.Kernels);
        _file = file;
        var graph = model.Graph;
        var fromFile = file is null ? null : new Dictionary<string, EngineTensor>(StringComparer.Ordinal);
        if (file is not null) _constantBytesLoaded = file.Length;
        foreach (var t in graph.Initializer)
        {
            var c = _constants[t.Name] = EngineTensor.FromProto(t);
            if (fromFile is null) continue;
            // The model is the engine's own: its copy of the bytes goes now, not when the model does.
            fromFile[t.Name] = c;
            t.RawData = Google.Protobuf.ByteString.Empty;
            t.FloatData.Clear(); t.Int32Data.Clear(); t.Int64Data.Clear(); t.DoubleData.Clear(); t.Uint64Data.Clear();
            Freed((long)c.Length * OnnxDataTypes.ElementSize(c.Type));
        }
        foreach (var n in graph.Node.Where(n => n.OpType == "Constant"))
        {
            _constants[n.Output[0]] = ConstantValue(n);
        }
        Inputs = graph.Input.Where(i => !_constants.ContainsKey(i.Name)).Select(i => i.Name).ToArray();
        InputShapes = graph.Input.Where(i => !_constants.ContainsKey(i.Name)).ToDictionary(i => i.Name,
            i => i.Type?.TensorType?.Shape?.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : -1L).ToArray() ?? Array.Empty<long>(),
            StringComparer.Ordinal);
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
        ReleasedAfter = PlanReleases(Nodes, Outputs, _constants.Keys);
        _constantArrays = new HashSet<Array>(_constants.Values.Select(c => c.Data), ReferenceEqualityComparer.Instance);
        if (fromFile is not null)
        {
            var readers = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
            foreach (var node in Nodes)
                foreach (var name in Reads(node).Distinct())
                    if (fromFile.ContainsKey(name)) (readers.TryGetValue(name, out var list) ? list : readers[name] = new()).Add(node);
            _releasable = new(StringComparer.Ordinal);
            foreach (var (name, nodes) in readers)
            {
                var node = nodes[0];
                int input = PackedInput(node.OpType);
                // Read once, as the weights of a packing node (and nowhere else in it), and still the initializer's tensor.
                if (nodes.Count != 1 || Outputs.Contains(name) || !ReferenceEquals(_constants[name], fromFile[name])) continue;
                if (input >= 0 && node.Input.Count > input && node.Input[input] == name && node.Input.Count(i => i == name) == 1)
                    _releasable[name] = (node, fromFile[name]);
                // A constant of a node ONNX Runtime runs is an initializer of that node's session, which holds its own
                // copy (a MiniLM's embedding table): the engine's goes after the node ran. Large ones only.
                else if (OrtNodeFallback.Handles(node) && node.Attribute.All(a => a.G is null && a.Graphs.Count == 0)
                    && node.Input.Contains(name) && fromFile[name].Length * (long)OnnxDataTypes.ElementSize(fromFile[name].Type) >= 64 << 10)
                {
                    _releasable[name] = (node, fromFile[name]);
                    (_fallbackReleases.TryGetValue(node, out var list) ? list : _fallbackReleases[node] = new()).Add(name);
                }
            }
            _packers = _releasable.Where(kv => !OrtNodeFallback.Handles(kv.Value.Node)).Select(kv => kv.Value.Node).ToHashSet();
        }
    }

    /// <summary>Bytes of weights released after packing (<see cref="Load"/>); a weight read back counts until released again.</summary>
    public long ReleasedWeightBytes => Interlocked.Read(ref _releasedBytes);

    /// <summary>After a packing node ran: releases its weights when the packed form in the cache was made from them
    /// and no longer needs them (a form packed later reads them back).</summary>
    void ReleasePacked(NodeProto node)
    {
        var name = node.Input[PackedInput(node.OpType)];
        if (!_releasable!.TryGetValue(name, out var entry) || !ReferenceEquals(entry.Node, node)) return;
        var w = entry.Tensor;
        lock (_cache)
        {
            if (w.HeldData is not { } data) return;
            // The forms the cache may hold for this node; only the convolution's keeps the weights (by reference).
            if (!_cache.TryGetValue(node, out var o)) return;
            switch (o)
            {
                case (EngineTensor from, PackedConvWeights p) when ReferenceEquals(from, w):
                    if (p.PackedFrom(data)) p.ReleaseSource(() => w.Data);
                    Freed(p.DropUnusedForms(Options.Kernels.EffectivePath));
                    break;
                case (EngineTensor from, PackedWeights[] packs) when ReferenceEquals(from, w):
                    var path = Options.Kernels.EffectivePath;
                    Freed(packs.Sum(pw => pw.DropUnusedForms(path)));
                    break;
                case (EngineTensor from, SaturatingConvWeights) when ReferenceEquals(from, w): break;
                case (EngineTensor from, SaturatingPackedWeights[]) when ReferenceEquals(from, w): break;
                default: return;
            }
            lock (_constantArrays) _constantArrays.Remove(data);
            w.Release(() => ReadBack(name));
            Interlocked.Add(ref _releasedBytes, (long)data.Length * OnnxDataTypes.ElementSize(w.Type));
        }
        Freed((long)w.Length * OnnxDataTypes.ElementSize(w.Type));
    }

    long _freedSinceCollect;

    /// <summary>Counts bytes the engine let go of (an initializer's copy while loading, a weight after packing); past
    /// <see cref="CollectEvery"/>, a full collection, so that the next large arrays (constants, packed forms) reuse
    /// that memory instead of growing the process.</summary>
    void Freed(long bytes)
    {
        if (Interlocked.Add(ref _freedSinceCollect, bytes) < CollectEvery) return;
        Interlocked.Exchange(ref _freedSinceCollect, 0);
        // Aggressive: compacts the large-object heap and gives free pages back, so the process does not keep what it
        // freed beside what it allocates next (measured on the int8 ResNet18: 44 MB peak growth with a plain full
        // collection, 32 MB with this; without collections 69 MB).
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    /// <summary>Bytes freed between collections: a quarter of the model's constants, at least 4 MB (a handful of
    /// collections while loading and while packing, whatever the model's size).</summary>
    long CollectEvery => Math.Max(4L << 20, _constantBytesLoaded / 4);
    long _constantBytesLoaded;

    /// <summary>After a node ONNX Runtime ran: its large constants live in the node's session now; the engine's copy goes
    /// (read back if a new input signature compiles the node again).</summary>
    void ReleaseAfterFallback(List<string> names)
    {
        foreach (var name in names)
        {
            var w = _releasable![name].Tensor;
            lock (_cache)
            {
                if (w.HeldData is not { } data) continue;
                lock (_constantArrays) _constantArrays.Remove(data);
                w.Release(() => ReadBack(name));
                Interlocked.Add(ref _releasedBytes, (long)data.Length * OnnxDataTypes.ElementSize(w.Type));
            }
            Freed((long)w.Length * OnnxDataTypes.ElementSize(w.Type));
        }
    }

    /// <summary>A released weight, read back from the model file (parsed again: rare, e.g. a new input shape).</summary>
    Array ReadBack(string name)
    {
        var file = _file!;
        var info = new FileInfo(file.Path);
        if (!info.Exists || info.Length != file.Length || info.LastWriteTimeUtc != file.Written)
            throw new PtqException("EngineModelChanged", PtqErrorKind.InvalidData,
                $"The engine released the packed weight '{name}' and must read it back from '{file.Path}', which changed or went since it was loaded.", file.Path);
        // Several weights are read back together (a new input shape repacks every layer): one parse serves them.
        ModelProto? model;
        lock (file)
        {
            if (_readBack is null || !_readBack.TryGetTarget(out model))
                _readBack = new WeakReference<ModelProto>(model = OnnxModelIO.Load(file.Path, validate: false));
        }
        var t = model.Graph.Initializer.FirstOrDefault(i => i.Name == name)
            ?? throw new PtqException("EngineModelChanged", PtqErrorKind.InvalidData, $"'{file.Path}' no longer has the weight '{name}'.", name);
        var data = EngineTensor.FromProto(t).Data;
        Interlocked.Add(ref _releasedBytes, -(long)data.Length * OnnxDataTypes.ElementSize((OnnxDataType)t.DataType));
        lock (_constantArrays) _constantArrays.Add(data);
        return data;
    }

    /// <summary>The liveness plan <see cref="Run"/> follows: after node i, the values listed at i are dropped, each at
    /// its last use (a value nothing reads is dropped after the node that makes it). Graph outputs and the model's
    /// constants are never dropped; names a subgraph (If branches) reads from the outer graph count as uses.</summary>
    public IReadOnlyList<IReadOnlyList<string>> ReleasedAfter { get; }

    static IReadOnlyList<IReadOnlyList<string>> PlanReleases(IReadOnlyList<NodeProto> nodes, IReadOnlyList<string> outputs, IEnumerable<string> constants)
    {
        var keep = new HashSet<string>(outputs, StringComparer.Ordinal);
        keep.UnionWith(constants);
        var last = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < nodes.Count; i++)
        {
            foreach (var o in nodes[i].Output) if (o.Length > 0) last.TryAdd(o, i); // produced and never read: dropped here
            foreach (var name in Reads(nodes[i])) last[name] = i;
        }
        var plan = Enumerable.Range(0, nodes.Count).Select(_ => new List<string>()).ToArray();
        foreach (var (name, i) in last)
            if (!keep.Contains(name)) plan[i].Add(name);
        foreach (var list in plan) list.Sort(StringComparer.Ordinal);
        return plan;
    }

    /// <summary>Every value name a node reads: its inputs, and what its subgraphs' nodes read (a superset of their
    /// outer-scope names, which is safe: a value is then kept longer, never dropped too early).</summary>
    static IEnumerable<string> Reads(NodeProto node)
    {
        foreach (var i in node.Input) if (i.Length > 0) yield return i;
        foreach (var a in node.Attribute)
            foreach (var g in a.G is null ? a.Graphs : a.Graphs.Prepend(a.G))
                foreach (var n in g.Node)
                    foreach (var name in Reads(n)) yield return name;
    }

    /// <summary>The op types outside the engine's table, which it hands to ONNX Runtime (<see cref="OrtNodeFallback"/>; by regions in <see cref="Run"/>).</summary>
    public IReadOnlyList<string> OpsInOnnxRuntime { get; }

    /// <summary>The nodes ONNX Runtime ran so far, and the distinct sessions they took (nodes alike share one).</summary>
    public (int Nodes, int Sessions) FallbackSessions => (_fallback.SessionCount, _fallback.DistinctSessionCount);

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
    /// <summary>Each input's dimensions as the model declares them (-1 where symbolic; empty when it declares none).</summary>
    public IReadOnlyDictionary<string, long[]> InputShapes { get; }
    public IReadOnlyList<string> Outputs { get; }
    /// <summary>The nodes as executed (after QDQ fusion).</summary>
    public IReadOnlyList<NodeProto> Nodes { get; }

    /// <summary>When set, each <see cref="Run"/> records here what it held at each node (see <see cref="EngineMemoryTrace"/>).</summary>
    public EngineMemoryTrace? MemoryTrace { get; set; }

    /// <summary>Runs the graph and returns its outputs. Intermediate values are dropped at their last use
    /// (<see cref="ReleasedAfter"/>), so a run holds at once only the values still to be read, and the kernels'
    /// scratch is shared by all layers (<see cref="Kernels.Workspace"/>).</summary>
    public Dictionary<string, EngineTensor> Run(IReadOnlyDictionary<string, EngineTensor> inputs, CancellationToken cancel = default)
    {
        var values = Execute(inputs, release: true, cancel);
        return Outputs.ToDictionary(o => o, o => values.TryGetValue(o, out var v) ? v
            : throw new PtqException("EngineTensorMissing", PtqErrorKind.InvalidData, $"The output '{o}' was not produced.", o));
    }

    /// <summary>Runs the graph and returns every tensor it computed (inputs and constants included): the captured
    /// values layer replay and per-layer comparisons start from.</summary>
    public Dictionary<string, EngineTensor> RunAll(IReadOnlyDictionary<string, EngineTensor> inputs, CancellationToken cancel = default) =>
        Execute(inputs, release: false, cancel);

    Dictionary<string, EngineTensor> Execute(IReadOnlyDictionary<string, EngineTensor> inputs, bool release, CancellationToken cancel)
    {
        var trace = release ? MemoryTrace : null;
        // Regions of ONNX Runtime's nodes run as one session each; node by node where every value is wanted (RunAll)
        // or traced (the same arithmetic: IntegerEngine.Regions.cs).
        if (release && trace is null && RegionPlan.Regions.Count > 0) return ExecuteUnits(inputs, cancel);
        trace?.Begin(this);
        var values = new Dictionary<string, EngineTensor>(_constants, StringComparer.Ordinal);
        foreach (var name in Inputs)
        {
            if (!inputs.TryGetValue(name, out var t))
                throw new PtqException("EngineInputMissing", PtqErrorKind.InvalidArgument, $"The model input '{name}' was not given.", name);
            values[name] = t;
        }
        int step = 0;
        foreach (var node in Nodes)
        {
            cancel.ThrowIfCancellationRequested();
            var args = node.Input.Select(i => i.Length == 0 ? null : values.TryGetValue(i, out var v) ? v
                : throw new PtqException("EngineTensorMissing", PtqErrorKind.InvalidData, $"Node '{node.Name}' ({node.OpType}) needs '{i}', which nothing produced.", i)).ToArray();
            EngineTensor[] results;
            long started = Profile is null ? 0 : System.Diagnostics.Stopwatch.GetTimestamp();
            try { results = OrtNodeFallback.Handles(node) ? _fallback.Run(node, args, values.GetValueOrDefault, ((EngineState)_cache).Buffers) : EngineOps.Run(node, args, _cache); }
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
            if (_packers is not null && _packers.Contains(node)) ReleasePacked(node);
            else if (_fallbackReleases.Count > 0 && _fallbackReleases.TryGetValue(node, out var held)) ReleaseAfterFallback(held);
            trace?.Step(node, args, results, values, _constants);
            if (release)
                foreach (var name in ReleasedAfter[step])
                    if (values.Remove(name, out var dropped)) Recycle(dropped, values, inputs);
            trace?.Released(values, _constants);
            step++;
        }
        return values;
    }

    /// <summary>Gives a dropped value's array to the engine's pool (<see cref="EngineBuffers"/>) unless something
    /// may still read it: a live value sharing it (Reshape, Flatten and Identity pass arrays on), a constant, or an
    /// array of the caller's inputs.</summary>
    void Recycle(EngineTensor dropped, Dictionary<string, EngineTensor> values, IReadOnlyDictionary<string, EngineTensor> inputs)
    {
        if (dropped.HeldData is not { } data) return;
        lock (_constantArrays) if (_constantArrays.Contains(data)) return;
        foreach (var t in inputs.Values) if (ReferenceEquals(t.HeldData, data)) return;
        foreach (var t in values.Values) if (ReferenceEquals(t.HeldData, data)) return;
        ((EngineState)_cache).Buffers.Return(data);
    }

    /// <summary>Bytes of recycled value arrays the engine holds between runs (at most what one run dropped).</summary>
    public long RecycledBytes => ((EngineState)_cache).Buffers.Bytes;

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

    /// <summary>Bytes of the model's constants the engine holds now (the weights as stored, each tensor once; not
    /// those released after packing: <see cref="ReleasedWeightBytes"/>).</summary>
    public long ConstantBytes => _constants.Values.Select(t => t.HeldData).OfType<Array>().Distinct(ReferenceEqualityComparer.Instance).Cast<Array>()
        .Sum(a => (long)a.Length * System.Runtime.InteropServices.Marshal.SizeOf(a.GetType().GetElementType() == typeof(bool) ? typeof(byte) : a.GetType().GetElementType()!));

    /// <summary>Bytes of the weights' packed forms built so far (the exact GEMM and convolution forms; each packed on
    /// first use, only in the form the kernel path that ran needs).</summary>
    public long PackedWeightBytes
    {
        get
        {
            lock (_cache)
                return _cache.Values.Sum(v => v switch
                {
                    (EngineTensor, PackedConvWeights p) => p.PackedBytes,
                    (EngineTensor, PackedWeights[] p) => p.Sum(w => w.Bytes),
                    (EngineTensor, EngineTensor t) => t.Length,
                    _ => 0L,
                });
        }
    }

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
