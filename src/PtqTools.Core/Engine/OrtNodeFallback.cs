using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Engine;

/// <summary>
/// Runs the nodes the engine does not implement in ONNX Runtime, each as a model of that one node: the source
/// model's opset imports, the node as written, its inputs typed from the actual tensors (element type and rank,
/// dimensions left open), the inputs that are model constants as initializers, and untyped outputs. One
/// <see cref="InferenceSession"/> per node (and input signature), created on the node's first run, with graph
/// optimizations disabled so that it computes the node as written. <see cref="IntegerEngine.Run"/> hands it whole
/// regions of such nodes instead (<see cref="OrtRegionPlan"/>), each one model and one session built the same way.
/// Quantized ops are never run here: the engine computes them itself (see <see cref="Refusal"/>).
/// </summary>
public sealed class OrtNodeFallback : IDisposable
{
    readonly long _irVersion;
    readonly OperatorSetIdProto[] _opsets;
    readonly IReadOnlyDictionary<string, EngineTensor> _constants;
    readonly int _threads;
    // By node identity (a protobuf message hashes and compares its whole content); each node keeps one session per
    // input signature (element type and rank of every input), almost always one.
    readonly Dictionary<NodeProto, List<Compiled>> _sessions = new(ReferenceEqualityComparer.Instance);
    // The distinct sessions, by the SHA-256 of their node model: nodes alike share one (see Compile).
    readonly Dictionary<string, InferenceSession> _shared = new(StringComparer.Ordinal);
    // The regions whose sessions were built (OrtRegion holds its own session).
    readonly HashSet<OrtRegion> _regions = new(ReferenceEqualityComparer.Instance);
    // Created with the first session: an engine whose nodes are all its own never loads ONNX Runtime (which is how
    // it runs under qemu-user on ARM64, where ONNX Runtime's initialization crashes; docs/platforms.md).
    RunOptions? _runOptions;

    RunOptions RunOptionsOnce() { lock (_sessions) return _runOptions ??= new RunOptions(); }
    bool _disposed;

    sealed record Compiled(int[] Signature, InferenceSession Session, string[] FedInputs, int[] FedIndex, string[] Outputs, int[] OutputIndex);

    /// <param name="source">The model the nodes come from (its opset imports and IR version are kept).</param>
    /// <param name="constants">The model's constants by name: inputs found here become initializers.</param>
    /// <param name="threads">ONNX Runtime's intra-op threads per node session.</param>
    public OrtNodeFallback(ModelProto source, IReadOnlyDictionary<string, EngineTensor> constants, int threads = 1)
    {
        // Only what the node models need: the engine does not keep the source model (and its weights) alive.
        _irVersion = Math.Max(source.IrVersion, 4);
        _opsets = source.OpsetImport.Select(o => o.Clone()).ToArray();
        _constants = constants;
        _threads = Math.Max(1, threads);
    }

    /// <summary>Quantized ops: the engine computes their integer arithmetic itself (that is what it exists for; the
    /// emulation of other CPUs applies to them), so they are never handed to ONNX Runtime.</summary>
    public static bool IsQuantizedOp(string opType) =>
        opType.StartsWith("QLinear", StringComparison.Ordinal) || QuantizedOps.Contains(opType);

    static readonly HashSet<string> QuantizedOps = new(StringComparer.Ordinal)
    {
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QGemm",
        // ONNX Runtime's contrib ops with integer arithmetic inside.
        "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QAttention", "QEmbedLayerNormalization",
        "MatMulNBits", "MatMulBnb4", "GatherBlockQuantized", "QOrderedMatMul", "QOrderedAttention", "QOrderedLayerNormalization",
        "QOrderedGelu", "QOrderedLongformerAttention", "QuantizeWithOrder", "DequantizeWithOrder",
    };

    /// <summary>Why the fallback cannot run <paramref name="node"/>, or null when it can (whether ONNX Runtime really
    /// has a kernel for it shows when its session is built).</summary>
    public static string? Refusal(NodeProto node)
    {
        if (IsQuantizedOp(node.OpType)) return "a quantized op the engine does not implement";
        if (HasSubgraphs(node))
        {
            // An If runs whole in ONNX Runtime, its branches reading the outer values they name; unless a quantized op
            // or a loop is inside, whose integer arithmetic would then not be the engine's.
            if (node.OpType != "If" || node.Domain is not ("" or "ai.onnx")) return "a node with subgraphs";
            var inner = Subgraphs(node).SelectMany(AllNodes).ToList();
            if (inner.FirstOrDefault(n => IsQuantizedOp(n.OpType)) is { } q) return $"an If whose branch holds the quantized op {q.OpType}";
            if (inner.FirstOrDefault(n => HasSubgraphs(n) && n.OpType != "If") is { } l) return $"an If whose branch holds a {l.OpType}";
            return null;
        }
        switch (node.Domain)
        {
            case "" or "ai.onnx":
                if (NonTensorOps.Contains(node.OpType)) return "an op on sequences, optionals or strings, which the engine cannot hold";
                return OnnxOps.Contains(node.OpType) ? null : "not an ONNX operator";
            // ONNX Runtime's own operator sets: whether it has the op shows when the node's session is built.
            case "com.microsoft" or "ai.onnx.ml":
                return null;
            default:
                return $"in the domain '{node.Domain}', which ONNX Runtime does not know";
        }
    }

    static bool HasSubgraphs(NodeProto node) => node.Attribute.Any(a =>
        a.Type is AttributeProto.Types.AttributeType.Graph or AttributeProto.Types.AttributeType.Graphs || a.G is not null || a.Graphs.Count > 0);

    static IEnumerable<GraphProto> Subgraphs(NodeProto node) =>
        node.Attribute.SelectMany(a => (a.G is null ? Enumerable.Empty<GraphProto>() : new[] { a.G }).Concat(a.Graphs));

    static IEnumerable<NodeProto> AllNodes(GraphProto g) => g.Node.SelectMany(n => new[] { n }.Concat(Subgraphs(n).SelectMany(AllNodes)));

    /// <summary>The outer values a node's subgraphs read (names they use but do not define), in first-use order;
    /// empty for a node without subgraphs.</summary>
    public static IReadOnlyList<string> OuterScopeInputs(NodeProto node)
    {
        if (!HasSubgraphs(node)) return Array.Empty<string>();
        var defined = new HashSet<string>(StringComparer.Ordinal);
        var used = new List<string>();
        void Walk(GraphProto g)
        {
            foreach (var i in g.Input) defined.Add(i.Name);
            foreach (var t in g.Initializer) defined.Add(t.Name);
            foreach (var n in g.Node)
            {
                foreach (var o in n.Output) defined.Add(o);
                used.AddRange(n.Input.Where(i => i.Length > 0));
                foreach (var s in Subgraphs(n)) Walk(s);
            }
            used.AddRange(g.Output.Select(o => o.Name));
        }
        foreach (var s in Subgraphs(node)) Walk(s);
        return used.Where(u => !defined.Contains(u)).Distinct(StringComparer.Ordinal).ToList();
    }

    /// <summary>The ONNX standard operators (ai.onnx, up to opset 23).</summary>
    static readonly HashSet<string> OnnxOps = new(StringComparer.Ordinal)
    {
        "Abs", "Acos", "Acosh", "Add", "AffineGrid", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "Attention",
        "AveragePool", "BatchNormalization", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
        "BlackmanWindow", "Cast", "CastLike", "Ceil", "Celu", "CenterCropPad", "Clip", "Col2Im", "Compress", "Concat",
        "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DFT", "DeformConv",
        "DepthToSpace", "Det", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten",
        "Floor", "GRU", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool",
        "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "HammingWindow", "HannWindow",
        "HardSigmoid", "HardSwish", "Hardmax", "Identity", "InstanceNormalization", "IsInf", "IsNaN", "LRN", "LSTM",
        "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "LpNormalization", "LpPool",
        "MatMul", "Max", "MaxPool", "MaxRoiPool", "MaxUnpool", "Mean", "MeanVarianceNormalization", "MelWeightMatrix",
        "Min", "Mish", "Mod", "Mul", "Multinomial", "Neg", "NegativeLogLikelihoodLoss", "NonMaxSuppression", "NonZero",
        "Not", "OneHot", "Or", "PRelu", "Pad", "Pow", "RMSNormalization", "RNN", "RandomNormal", "RandomNormalLike",
        "RandomUniform", "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
        "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu",
        "Reshape", "Resize", "ReverseSequence", "RoiAlign", "RotaryEmbedding", "Round", "STFT", "Scatter",
        "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice",
        "Softmax", "SoftmaxCrossEntropyLoss", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub",
        "Sum", "Swish", "Tan", "Tanh", "TensorScatter", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unique",
        "Unsqueeze", "Upsample", "Where", "Xor",
    };

    static readonly HashSet<string> NonTensorOps = new(StringComparer.Ordinal)
    {
        "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
        "SequenceMap", "SplitToSequence", "ConcatFromSequence", "Optional", "OptionalGetElement", "OptionalHasElement",
        "StringConcat", "StringNormalizer", "StringSplit", "RegexFullMatch", "TfIdfVectorizer", "ImageDecoder",
    };

    /// <summary>Whether the node goes to ONNX Runtime: every op outside the engine's own table.</summary>
    public static bool Handles(NodeProto node) => !EngineOps.Supported.Contains(node.OpType);

    /// <summary>How many sessions were built so far (one-node models and regions).</summary>
    public int SessionCount { get { lock (_sessions) return _sessions.Values.Sum(l => l.Count) + _regions.Sum(r => r.Sessions.Count); } }

    /// <summary>How many distinct ONNX Runtime sessions those are (nodes alike share one).</summary>
    public int DistinctSessionCount { get { lock (_sessions) return _shared.Count; } }

    /// <summary>Runs one node on its input tensors (null for an omitted optional input); returns one tensor per node
    /// output (null where the output's name is empty). <paramref name="outer"/> gives the outer values an If's
    /// branches read (<see cref="OuterScopeInputs"/>).</summary>
    public EngineTensor[] Run(NodeProto node, EngineTensor?[] inputs, Func<string, EngineTensor?>? outer = null) => Run(node, inputs, outer, null);

    /// <param name="buffers">Where the outputs' arrays come from (the engine's recycled arrays), or null for new ones.</param>
    internal EngineTensor[] Run(NodeProto node, EngineTensor?[] inputs, Func<string, EngineTensor?>? outer, EngineBuffers? buffers)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var names = node.Input.ToList();
        var outerNames = OuterScopeInputs(node);
        if (outerNames.Count > 0)
        {
            var all = new EngineTensor?[names.Count + outerNames.Count];
            inputs.AsSpan(0, Math.Min(inputs.Length, names.Count)).CopyTo(all);
            for (int k = 0; k < outerNames.Count; k++)
                all[names.Count + k] = outer?.Invoke(outerNames[k]) ?? throw new PtqException("EngineTensorMissing", PtqErrorKind.InvalidData,
                    $"Node '{node.Name}' ({node.OpType}) reads '{outerNames[k]}' in a branch, which nothing produced.", outerNames[k]);
            names.AddRange(outerNames);
            inputs = all;
        }
        var compiled = Compile(node, names, inputs);
        var values = new OrtValue[compiled.FedInputs.Length];
        try
        {
            for (int k = 0; k < values.Length; k++) values[k] = ToOrt(inputs[compiled.FedIndex[k]]!);
            using var results = compiled.Session.Run(RunOptionsOnce(), compiled.FedInputs, values, compiled.Outputs);
            var outputs = new EngineTensor[node.Output.Count];
            for (int k = 0; k < results.Count; k++) outputs[compiled.OutputIndex[k]] = FromOrt(results[k], node, node.Output[compiled.OutputIndex[k]], buffers);
            return outputs;
        }
        catch (OnnxRuntimeException ex)
        {
            throw new PtqException("EngineNodeFailed", PtqErrorKind.InvalidData,
                $"Node '{node.Name}' ({node.OpType}) failed in ONNX Runtime: {ex.Message}", node.Name, ex);
        }
        finally
        {
            foreach (var v in values) v?.Dispose();
        }
    }

    /// <summary>Runs a region of nodes as one ONNX Runtime session (<see cref="OrtRegion"/>): reads its inputs from
    /// <paramref name="values"/> and returns its outputs in <see cref="OrtRegion.Outputs"/> order.</summary>
    internal EngineTensor[] Run(OrtRegion region, Func<string, EngineTensor?> values, EngineBuffers? buffers)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var inputs = new EngineTensor[region.Inputs.Length];
        for (int k = 0; k < inputs.Length; k++)
            inputs[k] = values(region.Inputs[k]) ?? throw new PtqException("EngineTensorMissing", PtqErrorKind.InvalidData,
                $"The nodes {region.Name} need '{region.Inputs[k]}', which nothing produced.", region.Inputs[k]);
        var session = Compile(region, inputs);
        var ort = new OrtValue[inputs.Length];
        try
        {
            for (int k = 0; k < ort.Length; k++) ort[k] = region.ReadInPlace[k] ? InPlace(inputs[k]) ?? ToOrt(inputs[k]) : ToOrt(inputs[k]);
            using var results = session.Run(RunOptionsOnce(), region.Inputs, ort, region.Outputs);
            var outputs = new EngineTensor[region.Outputs.Length];
            for (int k = 0; k < results.Count; k++) outputs[k] = FromOrt(results[k], region.Nodes[0], region.Outputs[k], buffers);
            return outputs;
        }
        catch (OnnxRuntimeException ex)
        {
            throw new PtqException("EngineNodeFailed", PtqErrorKind.InvalidData,
                $"The nodes {region.Name} failed in ONNX Runtime: {ex.Message}", region.Nodes[0].Name, ex);
        }
        finally
        {
            foreach (var v in ort) v?.Dispose();
        }
    }

    InferenceSession Compile(OrtRegion region, EngineTensor[] inputs)
    {
        var signature = new int[inputs.Length];
        for (int i = 0; i < inputs.Length; i++) signature[i] = (int)inputs[i].Type * 64 + inputs[i].Dims.Length;
        lock (_sessions)
        {
            foreach (var (sig, s) in region.Sessions)
                if (sig.AsSpan().SequenceEqual(signature)) return s;
            var graph = new GraphProto { Name = "ptq_region" };
            graph.Node.AddRange(region.Nodes.Select(n => n.Clone()));
            foreach (var name in region.ConstantInputs) graph.Initializer.Add(_constants[name].ToProto(name));
            for (int i = 0; i < inputs.Length; i++)
            {
                var shape = new TensorShapeProto();
                for (int d = 0; d < inputs[i].Dims.Length; d++) shape.Dim.Add(new TensorShapeProto.Types.Dimension());
                graph.Input.Add(new ValueInfoProto { Name = region.Inputs[i], Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)inputs[i].Type, Shape = shape } } });
            }
            foreach (var o in region.Outputs) graph.Output.Add(new ValueInfoProto { Name = o });
            InferenceSession session;
            try
            {
                session = NewSession(graph);
            }
            catch (OnnxRuntimeException ex)
            {
                throw new PtqException("EngineNodeFailed", PtqErrorKind.NotSupported,
                    $"The nodes {region.Name} ({string.Join(", ", region.Nodes.Select(n => n.OpType).Distinct())}) cannot run in ONNX Runtime: {ex.Message}", region.Nodes[0].Name, ex);
            }
            region.Sessions.Add((signature, session));
            _regions.Add(region);
            return session;
        }
    }

    /// <summary>A session of the given graph with the source model's opsets, graph optimizations disabled (each node
    /// computes as written), the fallback's threads and no spinning.</summary>
    InferenceSession NewSession(GraphProto graph) => NewSession(ModelBytes(graph));

    /// <summary>The model of a graph with the source model's opsets and IR version.</summary>
    byte[] ModelBytes(GraphProto graph)
    {
        var model = new ModelProto { IrVersion = _irVersion, ProducerName = "PtqTools engine fallback", Graph = graph };
        model.OpsetImport.AddRange(_opsets.Select(o => o.Clone()));
        return model.ToByteArray();
    }

    InferenceSession NewSession(byte[] model)
    {
        using var options = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL,
            IntraOpNumThreads = _threads,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        return new InferenceSession(model, options);
    }

    Compiled Compile(NodeProto node, List<string> names, EngineTensor?[] inputs)
    {
        var signature = new int[inputs.Length];
        for (int i = 0; i < inputs.Length; i++) signature[i] = inputs[i] is { } t ? (int)t.Type * 64 + t.Dims.Length : -1;
        lock (_sessions)
        {
            if (!_sessions.TryGetValue(node, out var list)) _sessions[node] = list = new();
            foreach (var c in list)
                if (c.Signature.AsSpan().SequenceEqual(signature)) return c;
            var graph = new GraphProto { Name = "ptq_fallback_" + node.OpType };
            // Values renamed by position (x0, x1, ..., y0, ...) and the node unnamed, where no branch reads outer names:
            // nodes alike (same op, attributes, input types and constants: a LayerNorm's ReduceMean in every layer)
            // then make the same model, and share one session (issue 16: each session holds its own memory).
            var clone = node.Clone();
            bool canonical = !node.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0);
            var renamed = new Dictionary<string, string>(StringComparer.Ordinal);
            string Canon(string name, string prefix)
            {
                if (!canonical || name.Length == 0) return name;
                if (!renamed.TryGetValue(name, out var c)) renamed[name] = c = prefix + renamed.Count.ToString(System.Globalization.CultureInfo.InvariantCulture);
                return c;
            }
            if (canonical)
            {
                clone.Name = "";
                for (int i = 0; i < clone.Input.Count; i++) clone.Input[i] = Canon(clone.Input[i], "x");
                for (int i = 0; i < clone.Output.Count; i++) clone.Output[i] = Canon(clone.Output[i], "y");
            }
            graph.Node.Add(clone);
            var fed = new List<string>();
            var fedIndex = new List<int>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < names.Count; i++)
            {
                var name = Canon(names[i], "x");
                if (name.Length == 0 || !seen.Add(name)) continue;
                var t = i < inputs.Length ? inputs[i] : null;
                if (t is null)
                    throw new PtqException("EngineTensorMissing", PtqErrorKind.InvalidData, $"Node '{node.Name}' ({node.OpType}) needs '{names[i]}', which nothing produced.", names[i]);
                // The model's constants stay constants, as ONNX Runtime sees them in the whole model (weights of a
                // float MatMul are pre-packed, for example).
                if (_constants.TryGetValue(names[i], out var c) && ReferenceEquals(c, t)) { graph.Initializer.Add(t.ToProto(name)); continue; }
                var shape = new TensorShapeProto();
                for (int d = 0; d < t.Dims.Length; d++) shape.Dim.Add(new TensorShapeProto.Types.Dimension());
                graph.Input.Add(new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)t.Type, Shape = shape } } });
                fed.Add(name);
                fedIndex.Add(i);
            }
            var outputs = new List<string>();
            var outputIndex = new List<int>();
            for (int i = 0; i < node.Output.Count; i++)
            {
                if (node.Output[i].Length == 0) continue;
                var output = Canon(node.Output[i], "y");
                graph.Output.Add(new ValueInfoProto { Name = output });
                outputs.Add(output);
                outputIndex.Add(i);
            }
            var bytes = ModelBytes(graph);
            var key = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(bytes));
            if (_shared.TryGetValue(key, out var shared))
            {
                var reused = new Compiled(signature, shared, fed.ToArray(), fedIndex.ToArray(), outputs.ToArray(), outputIndex.ToArray());
                list.Add(reused);
                return reused;
            }
            InferenceSession session;
            try
            {
                session = NewSession(bytes);
                _shared[key] = session;
            }
            catch (OnnxRuntimeException ex)
            {
                throw new PtqException("EngineNodeFailed", PtqErrorKind.NotSupported,
                    $"Node '{node.Name}' ({node.OpType}) cannot run in ONNX Runtime as a single node: {ex.Message}", node.Name, ex);
            }
            var done = new Compiled(signature, session, fed.ToArray(), fedIndex.ToArray(), outputs.ToArray(), outputIndex.ToArray());
            list.Add(done);
            return done;
        }
    }

    /// <summary>A copy of the tensor in a buffer ONNX Runtime allocates. Not the engine's own array pinned: MLAS's
    /// float kernels (reductions, GEMM) take other paths on managed arrays' 16-byte alignment than on its 64-byte
    /// aligned buffers and round differently from run to run (measured: the synthetic block lost its bit-identity).</summary>
    static OrtValue ToOrt(EngineTensor t)
    {
        var value = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, (TensorElementType)(int)t.Type, t.Dims);
        try
        {
            t.RawBytes.CopyTo(value.GetTensorMutableRawData());
            return value;
        }
        catch
        {
            value.Dispose();
            throw;
        }
    }

    /// <summary>The engine's own array as ONNX Runtime's input, pinned while the value lives (no copy), for inputs only
    /// exact element-wise ops and data movement read (<see cref="OrtRegion.ReadInPlace"/>), whose results do not depend
    /// on the buffer's alignment; null for element types it does not wrap.</summary>
    static OrtValue? InPlace(EngineTensor t) => t.Data switch
    {
        float[] f when f.Length == t.Length => OrtValue.CreateTensorValueFromMemory(f, t.Dims),
        int[] i when i.Length == t.Length => OrtValue.CreateTensorValueFromMemory(i, t.Dims),
        long[] l when l.Length == t.Length => OrtValue.CreateTensorValueFromMemory(l, t.Dims),
        _ => null,
    };

    static EngineTensor FromOrt(OrtValue value, NodeProto node, string name, EngineBuffers? buffers)
    {
        if (value.OnnxType != OnnxValueType.ONNX_TYPE_TENSOR)
            throw new PtqException("EngineTensorType", PtqErrorKind.NotSupported,
                $"Output '{name}' of node '{node.Name}' ({node.OpType}) is a {value.OnnxType}, which the engine cannot hold.", name);
        var info = value.GetTensorTypeAndShape();
        var type = (OnnxDataType)(int)info.ElementDataType;
        if (EngineTensor.ElementType(type) is null)
            throw new PtqException("EngineTensorType", PtqErrorKind.NotSupported,
                $"Output '{name}' of node '{node.Name}' ({node.OpType}) is of type {OnnxDataTypes.Name((int)type)}, which the engine cannot hold.", name);
        long count = TensorData.ElementCount(info.Shape);
        // Into a recycled array of the engine's where one is free (every byte is copied over it).
        Array? data = buffers is null || count <= 0 ? null : type switch
        {
            OnnxDataType.Float => buffers.Rent<float>(count),
            OnnxDataType.Int32 => buffers.Rent<int>(count),
            OnnxDataType.UInt8 => buffers.Rent<byte>(count),
            OnnxDataType.Int8 => buffers.Rent<sbyte>(count),
            _ => null,
        };
        if (data is null) return EngineTensor.FromBytes(type, info.Shape, value.GetTensorMutableRawData());
        var t = new EngineTensor(type, info.Shape, data);
        var raw = value.GetTensorMutableRawData();
        if (raw.Length != t.RawBytes.Length)
            throw new PtqException("TensorDataSizeMismatch", PtqErrorKind.InvalidData, $"Output '{name}' of node '{node.Name}' holds {raw.Length} bytes for the shape [{string.Join(",", info.Shape)}].", name);
        raw.CopyTo(t.RawBytes);
        return t;
    }

    public void Dispose()
    {
        lock (_sessions)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var session in _shared.Values) session.Dispose();
            _shared.Clear();
            _sessions.Clear();
            foreach (var r in _regions) { foreach (var (_, session) in r.Sessions) session.Dispose(); r.Sessions.Clear(); }
            _regions.Clear();
            _runOptions?.Dispose();
        }
    }
}
