using Google.Protobuf;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Evaluation;

/// <summary>Running signal and noise energy of one tensor compared with its float reference.</summary>
internal sealed class ErrorAccumulator
{
    double _signal, _noise;
    long _count;

    public void Add(ReadOnlySpan<float> reference, ReadOnlySpan<float> test)
    {
        if (reference.Length != test.Length)
            throw new PtqException("OutputsDiffer", PtqErrorKind.InvalidData, $"Tensor sizes differ ({reference.Length} vs {test.Length}).", null);
        for (int i = 0; i < reference.Length; i++)
        {
            double r = reference[i], e = r - test[i];
            _signal += r * r;
            _noise += e * e;
        }
        _count += reference.Length;
    }

    public long Count => _count;
    public double Mse => _noise / Math.Max(1, _count);
    public double SqnrDb => Sqnr(_signal, _noise);

    /// <summary>10 log10(signal / noise), capped at 200 dB when there is no noise (a finite number sorts and charts).</summary>
    public static double Sqnr(double signal, double noise) =>
        Math.Round(noise <= 0 ? 200 : signal <= 0 ? -200 : Math.Min(200, 10 * Math.Log10(signal / noise)), 3);
}

/// <summary>
/// Per-layer quantization error on ONNX Runtime: each quantized layer's output is exposed as a model output and
/// compared with the float model's, with the whole model quantized (accumulated) and with only that layer quantized
/// (isolated); the weight and input-activation quantization errors are reported apart. Ranked worst first.
/// </summary>
public static class LayerErrorAnalyzer
{
    /// <summary>Models run as the ONNX specification defines them, graph optimizations off: ONNX Runtime's optimizer
    /// (WeightBiasQuantization, from the basic level on) quantizes the float weights of a Conv/Gemm/MatMul that sits
    /// between a DequantizeLinear and a QuantizeLinear, so "only this layer quantized" would not hold.</summary>
    const Microsoft.ML.OnnxRuntime.GraphOptimizationLevel Level = Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_DISABLE_ALL;

    /// <param name="target">A CPU class to emulate: the quantized layers then run in the PtqTools engine with that class's
    /// ONNX Runtime int8 arithmetic (see <see cref="RunEmulated"/>); null runs them in ONNX Runtime on this host.</param>
    public static List<LayerError> Run(PreparedModel prepared, IReadOnlyCollection<TensorStatistics> statistics, QuantizationOptions options,
        PtqDataSet data, int threads, IProgress<RunProgress>? progress, CancellationToken cancel, EngineTarget? target = null)
        => Run(prepared, statistics, options, data, threads, progress, cancel, target, null);

    /// <param name="isolatedOutputs">Called with each layer's name and the model's first output on every sample (in
    /// order) with only that layer quantized (ONNX Runtime path): the accuracy-aware search scores these with its metric.</param>
    internal static List<LayerError> Run(PreparedModel prepared, IReadOnlyCollection<TensorStatistics> statistics, QuantizationOptions options,
        PtqDataSet data, int threads, IProgress<RunProgress>? progress, CancellationToken cancel, EngineTarget? target,
        Action<string, float[][]>? isolatedOutputs)
    {
        options.Validate();
        var (plan, ranges) = Quantizer.Plan(prepared, statistics, options, speedRules: false);
        if (plan.QuantizedLayers.Count == 0)
            throw new PtqException("NothingToQuantize", PtqErrorKind.InvalidArgument, $"None of the layers in the statistics can be quantized in '{prepared.SourcePath}'.", prepared.SourcePath);
        var graph = new GraphView(prepared.Model.Graph);
        // Every quantized layer with the view of the graph that holds it: those inside If branches and Loop/Scan bodies
        // too, by their scoped names (if/then_branch/conv), their tensors by model-wide key (GraphView.Key), which
        // TensorTap exposes through the op that owns the subgraph (a sample that takes the other If branch gives no
        // values). The engine (-Target) runs main-graph layers only.
        var all = plan.QuantizedNodes(graph);
        if (target is not null) all.RemoveAll(l => l.View.Scope.Length > 0);
        if (all.Count == 0)
            throw new PtqException("LayersInSubgraphs", PtqErrorKind.NotSupported,
                $"The {plan.QuantizedLayers.Count} quantized layers of '{prepared.SourcePath}' are all inside If, Loop or Scan subgraphs ({string.Join(", ", plan.QuantizedLayers.Take(3))}{(plan.QuantizedLayers.Count > 3 ? ", ..." : "")}), which the engine emulating a CPU class (-Target) does not run: it ranks the layers of the main graph. Leave out -Target to rank them on ONNX Runtime.", prepared.SourcePath);
        var layers = all.Select(l => l.Node).ToList();
        var nameOf = all.ToDictionary(l => l.Node, l => QuantizationPlan.LayerName(l.View, l.Node));
        var viewOf = all.ToDictionary(l => nameOf[l.Node], l => l.View, StringComparer.Ordinal);
        var handlers = layers.ToDictionary(n => nameOf[n], n => OpHandlers.Get(n)!, StringComparer.Ordinal);
        var outputOf = layers.ToDictionary(n => nameOf[n], n => viewOf[nameOf[n]].Key(n.Output[0]), StringComparer.Ordinal);
        var inputsOf = layers.ToDictionary(n => nameOf[n], n => handlers[nameOf[n]].ActivationInputs(n, viewOf[nameOf[n]]).Select(i => viewOf[nameOf[n]].Key(n.Input[i])).Distinct().ToArray(), StringComparer.Ordinal);
        // The model's first output too: how much one layer quantized alone changes what the model returns.
        var modelOutput = prepared.Model.Graph.Output[0].Name;

        var samples = new List<Sample>();
        using (var reader = new SampleReader(data))
            foreach (var s in reader.Read(cancel)) samples.Add(s);
        if (samples.Count == 0)
            throw new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, $"The data set '{data.Name}' has no samples.", data.Name);

        var full = QdqQuantizer.Quantize(prepared.Model, plan, ranges, options, cancel);
        // With a target: the engine over the whole quantized model, and which float tensor each layer's output is.
        using var emulated = target is null ? null : Emulation.Create(prepared.Model, full, layers, target);
        if (emulated is not null) outputOf = emulated.Reference;
        var observed = outputOf.Values.Concat(inputsOf.Values.SelectMany(v => v)).Append(modelOutput).Distinct(StringComparer.Ordinal).ToArray();

        int total = samples.Count * (layers.Count + 1), done = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        void Step(string what)
        {
            done++;
            progress?.Report(new RunProgress(done, total, done / Math.Max(1e-9, clock.Elapsed.TotalSeconds), what));
        }

        using var floatTap = new TensorTap(prepared.Model, prepared.SourcePath, observed, threads, Level);
        var floatRunner = floatTap.Runner;
        var index = observed.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);

        // Accumulated: the whole plan quantized; activation error: each input against its fake-quantized self.
        var accumulated = layers.ToDictionary(n => nameOf[n], _ => new ErrorAccumulator(), StringComparer.Ordinal);
        var activation = layers.ToDictionary(n => nameOf[n], _ => new ErrorAccumulator(), StringComparer.Ordinal);
        void AddActivation(NodeProto layer, float[][] f)
        {
            foreach (var input in inputsOf[nameOf[layer]])
            {
                var reference = f[index[input]];
                activation[nameOf[layer]].Add(reference, FakeQuantize(reference, ranges[input], options));
            }
        }
        if (emulated is not null)
            foreach (var sample in samples)
            {
                cancel.ThrowIfCancellationRequested();
                var f = floatRunner.Run(sample, cancel);
                var values = emulated.Engine.RunAll(EngineParity.Feed(emulated.Engine, sample), cancel);
                foreach (var layer in layers)
                {
                    accumulated[layer.Name].Add(f[index[outputOf[layer.Name]]], emulated.Output(layer.Name, values));
                    AddActivation(layer, f);
                }
                Step("whole model quantized");
            }
        else
        {
            var outputs = outputOf.Values.Distinct(StringComparer.Ordinal).ToArray();
            using var tap = new TensorTap(full, prepared.SourcePath, outputs, threads, Level);
            var runner = tap.Runner;
            var outIndex = outputs.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
            foreach (var sample in samples)
            {
                cancel.ThrowIfCancellationRequested();
                var f = floatRunner.Run(sample, cancel);
                var q = runner.Run(sample, cancel);
                foreach (var layer in layers)
                {
                    accumulated[nameOf[layer]].Add(f[index[outputOf[nameOf[layer]]]], q[outIndex[outputOf[nameOf[layer]]]]);
                    AddActivation(layer, f);
                }
                Step("whole model quantized");
            }
        }

        // Isolated: one model per layer with only that layer quantized.
        var results = new List<LayerError>();
        foreach (var layer in layers)
        {
            cancel.ThrowIfCancellationRequested();
            var single = QuantizationPlan.Create(graph, new HashSet<string>(StringComparer.Ordinal) { nameOf[layer] }, perChannel: options.PerChannel);
            var model = QdqQuantizer.Quantize(prepared.Model, single, ranges, options, cancel);
            var name = outputOf[nameOf[layer]];
            var isolated = new ErrorAccumulator();
            var atOutput = new ErrorAccumulator();
            if (emulated is not null)
                emulated.Isolated(layer.Name, model, modelOutput, samples, floatRunner, index, isolated, atOutput, threads, prepared.SourcePath, () => Step(layer.Name), cancel);
            else
            {
                var names = new[] { name, modelOutput }.Distinct(StringComparer.Ordinal).ToArray();
                using var tap = new TensorTap(model, prepared.SourcePath, names, threads, Level);
                var runner = tap.Runner;
                var firstOutputs = isolatedOutputs is null ? null : new float[samples.Count][];
                for (int i = 0; i < samples.Count; i++)
                {
                    var sample = samples[i];
                    var f = floatRunner.Run(sample, cancel);
                    var q = runner.Run(sample, cancel);
                    isolated.Add(f[index[name]], q[0]);
                    atOutput.Add(f[index[modelOutput]], q[names.Length - 1]);
                    if (firstOutputs is not null) firstOutputs[i] = q[names.Length - 1];
                    Step(nameOf[layer]);
                }
                if (firstOutputs is not null) isolatedOutputs!(nameOf[layer], firstOutputs);
            }
            var w = WeightError(layer, handlers[nameOf[layer]], viewOf[nameOf[layer]], options);
            results.Add(new LayerError
            {
                ModelPath = prepared.SourcePath,
                ModelSha256 = prepared.SourceSha256,
                Layer = nameOf[layer],
                OpType = layer.OpType,
                Tensor = name,
                SampleCount = samples.Count,
                ElementCount = isolated.Count / samples.Count,
                IsolatedSqnrDb = isolated.SqnrDb,
                IsolatedMse = isolated.Mse,
                IsolatedOutputSqnrDb = atOutput.SqnrDb,
                AccumulatedSqnrDb = accumulated[nameOf[layer]].SqnrDb,
                AccumulatedMse = accumulated[nameOf[layer]].Mse,
                WeightSqnrDb = w,
                ActivationSqnrDb = activation[nameOf[layer]].Count > 0 ? activation[nameOf[layer]].SqnrDb : null,
                Target = target?.Name ?? "",
            });
        }
        // Worst first: the isolated view names the layer that hurts by itself; the accumulated one breaks ties.
        var ranked = results.OrderBy(r => r.IsolatedSqnrDb).ThenBy(r => r.AccumulatedSqnrDb).ToList();
        for (int i = 0; i < ranked.Count; i++) ranked[i].Rank = i + 1;
        return ranked;
    }

    /// <summary>
    /// The quantized layers computed by the PtqTools engine emulating a CPU class (-Target), the float reference staying
    /// ONNX Runtime. The ONNX Runtime path compares the tensor that keeps the layer's output name in the unfused QDQ
    /// graph: the op's own float result from the dequantized inputs, before its output QuantizeLinear (for a layer that
    /// writes a graph output, the DequantizeLinear that keeps the name: the rounded value). After QDQ fusion the engine's
    /// layer writes its QuantizeLinear's tensor instead (a folded Relu included), so for the same meaning the engine
    /// gives the layer's output before output quantization (<see cref="LayerReplay.Unrounded"/>: for QLinearConv,
    /// QLinearMatMul and QGemm its int32 sums, saturated as the target's kernels saturate them, plus bias, times the
    /// scales; for QLinearAdd and the average pools the float op on the dequantized inputs), compared with the float
    /// op's output. Shape and max ops pass quantized values on: what they write is dequantized, as is what a layer
    /// writes for a graph output, and compared with the float tensor its QuantizeLinear reads.
    /// Accumulated: the whole quantized model runs in the engine (<see cref="IntegerEngine.RunAll"/>). Isolated: the
    /// model with only that layer quantized runs in ONNX Runtime up to the layer's inputs (float ops, as its float
    /// parts would), the layer's QDQ group taken from it is replayed in the engine from them (<see cref="LayerReplay"/>),
    /// and the rest of that model runs in ONNX Runtime from the tensor the layer writes on (as the engine wrote it),
    /// which gives the error at the model's output. (Once the engine runs float ops through ONNX Runtime, the whole one-layer model
    /// could run in it; this computes the same.)
    /// </summary>
    sealed class Emulation : IDisposable
    {
        readonly EngineTarget _target;
        readonly ModelProto _floatModel;
        readonly QdqNames _names;
        readonly LayerReplay _replay;
        readonly Dictionary<string, Compared> _compared;

        Emulation(EngineTarget target, ModelProto floatModel, ModelProto full, IReadOnlyList<NodeProto> layers)
        {
            _target = target;
            _floatModel = floatModel;
            _names = new QdqNames(floatModel, full);
            _replay = new LayerReplay(full, target.Options, "quantized model");
            _compared = layers.ToDictionary(l => l.Name, l => _names.Compare(_replay, l), StringComparer.Ordinal);
        }

        public static Emulation Create(ModelProto floatModel, ModelProto full, IReadOnlyList<NodeProto> layers, EngineTarget target) =>
            new(target, floatModel, full, layers);

        public IntegerEngine Engine => _replay.Engine;

        public void Dispose() => _replay.Dispose();

        /// <summary>Layer name to the float model's tensor its engine output is compared with.</summary>
        public Dictionary<string, string> Reference => _compared.ToDictionary(kv => kv.Key, kv => kv.Value.Reference, StringComparer.Ordinal);

        /// <summary>The layer's output in a whole-model engine run, as float.</summary>
        public float[] Output(string layer, IReadOnlyDictionary<string, EngineTensor> values)
        {
            var tensor = _replay.OutputTensor(layer);
            if (!values.TryGetValue(tensor, out var value))
                throw new PtqException("EngineTensorMissing", PtqErrorKind.InvalidData, $"The engine did not produce '{tensor}', the output of layer '{layer}'.", tensor);
            return (_compared[layer].Unrounded ? _replay.Unrounded(layer, values) : null) ?? _replay.Dequantized(layer, value);
        }

        /// <summary>The layer alone quantized: <paramref name="single"/> (the model with only that layer quantized) run in
        /// ONNX Runtime up to the layer's inputs, its QDQ group replayed in the engine from them, and the float rest of the
        /// model run in ONNX Runtime from the tensor the layer writes on.</summary>
        public void Isolated(string layer, ModelProto single, string modelOutput, List<Sample> samples, OrtRunner floatRunner,
            Dictionary<string, int> index, ErrorAccumulator isolated, ErrorAccumulator atOutput, int threads, string source, Action step, CancellationToken cancel)
        {
            var names = new QdqNames(_floatModel, single);
            using var replay = new LayerReplay(Group(single, layer), _target.Options, layer);
            var floatLayer = _floatModel.Graph.Node.First(n => n.Name == layer);
            var compared = names.Compare(replay, floatLayer);
            int Index(string tensor) => index.TryGetValue(tensor, out var i) ? i
                : throw new PtqException("EngineTensorMissing", PtqErrorKind.InvalidData, $"The float model's tensor '{tensor}' (for layer '{layer}') was not captured.", tensor);
            var written = replay.OutputTensor(layer);
            // The group's inputs as that model computes them: a float layer that shares an input with the quantized one
            // reads its dequantized copy too, so they need not be the float model's values.
            var inputNames = replay.FloatInputs(layer);
            var graphInputs = single.Graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
            var computed = inputNames.Where(n => !graphInputs.Contains(n)).ToArray();
            OrtRunner? before = null, rest = null;
            try
            {
                if (computed.Length > 0)
                    before = new OrtRunner(Until(single, computed).ToByteArray(), source, threads, computed, Level);
                foreach (var sample in samples)
                {
                    cancel.ThrowIfCancellationRequested();
                    var f = floatRunner.Run(sample, cancel);
                    var modelInputs = EngineParity.Feed(Engine, sample);
                    var feed = new Dictionary<string, EngineTensor>(StringComparer.Ordinal);
                    foreach (var n in inputNames.Where(graphInputs.Contains)) feed[n] = modelInputs[n];
                    if (before is not null)
                        using (var values = before.RunValues(sample, cancel))
                            for (int k = 0; k < computed.Length; k++)
                                feed[computed[k]] = EngineTensor.Float(values[k].GetTensorDataAsSpan<float>().ToArray(), values[k].GetTensorTypeAndShape().Shape);
                    var (r, unrounded) = replay.RunUnrounded(layer, feed);
                    isolated.Add(f[Index(compared.Reference)], (compared.Unrounded ? unrounded : null) ?? r.FloatOutputs[0]);
                    if (written == modelOutput) atOutput.Add(f[Index(modelOutput)], r.FloatOutputs[0]);
                    else
                    {
                        var output = r.IntegerOutputs[0];
                        rest ??= new OrtRunner(From(single, written, output.Type, output.Dims).ToByteArray(), source, threads, new[] { modelOutput }, Level);
                        var inputs = modelInputs.Select(kv => kv.Value.ToProto(kv.Key)).Append(output.ToProto(written)).ToList();
                        atOutput.Add(f[Index(modelOutput)], rest.Run(sample with { Inputs = inputs }, cancel)[0]);
                    }
                    step();
                }
            }
            finally
            {
                before?.Dispose();
                rest?.Dispose();
            }
        }

        /// <summary>The model computing only the given tensors (as its outputs).</summary>
        static ModelProto Until(ModelProto model, IReadOnlyCollection<string> tensors)
        {
            var copy = model.Clone();
            var g = copy.Graph;
            g.Output.Clear();
            foreach (var t in tensors)
                g.Output.Add(new ValueInfoProto { Name = t, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxDataType.Float } } });
            var kept = QdqFuser.Prune(g.Node.ToList(), tensors.ToHashSet(StringComparer.Ordinal));
            g.Node.Clear();
            g.Node.AddRange(kept);
            return copy;
        }

        /// <summary>The layer's QDQ group as a model of its own: the QuantizeLinear/DequantizeLinear pairs of its
        /// activation inputs (their float tensors are the graph inputs), the DequantizeLinear of its weight and bias, the
        /// layer, and the QuantizeLinear of its output (through a Relu, as the QDQ fusion takes it), which is the output.</summary>
        internal static ModelProto Group(ModelProto model, string layer)
        {
            var g = model.Graph;
            var producers = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
            var consumers = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
            foreach (var n in g.Node)
            {
                foreach (var o in n.Output) producers[o] = n;
                foreach (var i in n.Input) { if (!consumers.TryGetValue(i, out var l)) consumers[i] = l = new(); l.Add(n); }
            }
            var graphOutputs = g.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
            var node = g.Node.FirstOrDefault(n => n.Name == layer)
                ?? throw new PtqException("LayerNotFound", PtqErrorKind.InvalidData, $"The model with '{layer}' quantized has no node of that name.", layer);
            var keep = new HashSet<NodeProto> { node };
            void Constants(NodeProto n)
            {
                foreach (var i in n.Input) if (producers.TryGetValue(i, out var c) && c.OpType == "Constant") keep.Add(c);
            }
            foreach (var input in node.Input)
                if (producers.TryGetValue(input, out var dq) && dq.OpType == "DequantizeLinear")
                {
                    keep.Add(dq);
                    if (producers.TryGetValue(dq.Input[0], out var q) && q.OpType == "QuantizeLinear") keep.Add(q);
                }
            NodeProto? Sole(string t) => !graphOutputs.Contains(t) && consumers.TryGetValue(t, out var l) && l.Count == 1 ? l[0] : null;
            var output = node.Output[0];
            var next = Sole(output);
            if (next?.OpType == "QuantizeLinear") { keep.Add(next); output = next.Output[0]; }
            else if (next?.OpType == "Relu" && Sole(next.Output[0]) is { OpType: "QuantizeLinear" } q2) { keep.Add(next); keep.Add(q2); output = q2.Output[0]; }
            foreach (var n in keep.ToList()) Constants(n);
            var nodes = g.Node.Where(keep.Contains).ToList();
            var produced = nodes.SelectMany(n => n.Output).ToHashSet(StringComparer.Ordinal);
            var initializers = g.Initializer.GroupBy(t => t.Name).ToDictionary(t => t.Key, t => t.First(), StringComparer.Ordinal);
            var sub = new GraphProto { Name = layer };
            sub.Node.AddRange(nodes);
            foreach (var name in nodes.SelectMany(n => n.Input).Where(i => i.Length > 0).Distinct(StringComparer.Ordinal))
            {
                if (initializers.TryGetValue(name, out var t)) sub.Initializer.Add(t);
                else if (!produced.Contains(name))
                    sub.Input.Add(new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxDataType.Float } } });
            }
            sub.Output.Add(new ValueInfoProto { Name = output });
            var result = new ModelProto { IrVersion = model.IrVersion, Graph = sub };
            result.OpsetImport.AddRange(model.OpsetImport);
            return result;
        }

        /// <summary>The model with only one layer quantized, computed from that layer's written tensor on: the tensor is a
        /// graph input and what only served to compute it is dropped.</summary>
        static ModelProto From(ModelProto single, string written, OnnxDataType type, long[] dims)
        {
            var copy = single.Clone();
            var g = copy.Graph;
            var producer = g.Node.FirstOrDefault(n => n.Output.Contains(written))
                ?? throw new PtqException("EngineTensorMissing", PtqErrorKind.InvalidData,
                    $"The model with one layer quantized has no tensor '{written}', which the engine writes for that layer.", written);
            g.Node.Remove(producer);
            var kept = QdqFuser.Prune(g.Node.ToList(), new HashSet<string>(g.Output.Select(o => o.Name), StringComparer.Ordinal));
            g.Node.Clear();
            g.Node.AddRange(kept);
            var shape = new TensorShapeProto();
            foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
            g.Input.Add(new ValueInfoProto { Name = written, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } });
            return copy;
        }
    }

    /// <summary>What a replayed layer's value is compared with: the float model's tensor, and whether the value is the
    /// layer's output before output quantization (<see cref="LayerReplay.Unrounded"/>) or what it writes, dequantized.</summary>
    readonly record struct Compared(string Reference, bool Unrounded);

    /// <summary>Tensor names of a QDQ model against its float model's.</summary>
    sealed class QdqNames
    {
        readonly ModelProto _qdq;
        readonly Dictionary<string, NodeProto> _producers = new(StringComparer.Ordinal);
        readonly Dictionary<string, NodeProto> _floatNodes;

        public QdqNames(ModelProto floatModel, ModelProto qdq)
        {
            _qdq = qdq;
            foreach (var n in qdq.Graph.Node) foreach (var o in n.Output) _producers[o] = n;
            _floatNodes = floatModel.Graph.Node.Where(n => n.Name.Length > 0).GroupBy(n => n.Name).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        }

        /// <summary>A tensor of the QDQ model by its float model name: a producer's output keeps the producer's name and
        /// place (a graph output that gets quantized is renamed in the QDQ model, the node that writes it is not).</summary>
        public string FloatName(string tensor)
        {
            if (_producers.TryGetValue(tensor, out var p) && p.Name.Length > 0 && _floatNodes.TryGetValue(p.Name, out var f) && f.OpType == p.OpType)
            {
                int k = p.Output.IndexOf(tensor);
                if (k >= 0 && k < f.Output.Count) return f.Output[k];
            }
            return tensor;
        }

        /// <summary>A layer with integer products, or an Add or average pool, gives its output before output quantization
        /// and Relu: the op's own output, as on ONNX Runtime. Another (or one whose output is a graph output, which the
        /// ONNX Runtime path compares after its DequantizeLinear) compares what it writes with the float tensor that
        /// quantizes: a QuantizeLinear's input (a folded Relu's output), else the tensor itself.</summary>
        public Compared Compare(LayerReplay replay, NodeProto floatLayer)
        {
            var written = replay.OutputTensor(floatLayer.Name);
            var source = _producers.TryGetValue(written, out var q) && q.OpType == "QuantizeLinear" ? q.Input[0] : written;
            bool renamed = _qdq.Graph.Node.FirstOrDefault(n => n.Name == floatLayer.Name) is not { } own || own.Output[0] != floatLayer.Output[0];
            bool unrounded = !renamed && replay.HasUnrounded(floatLayer.Name);
            return new Compared(unrounded ? floatLayer.Output[0] : FloatName(source), unrounded);
        }
    }

    /// <summary>What QuantizeLinear then DequantizeLinear make of a tensor with this range.</summary>
    internal static float[] FakeQuantize(ReadOnlySpan<float> values, TensorRange range, QuantizationOptions options)
    {
        var p = QuantMath.FromRange(range.Min, range.Max, options.ActivationType, options.ActivationSymmetric);
        var (qmin, qmax) = QuantMath.Limits(options.ActivationType, options.ActivationSymmetric);
        var result = new float[values.Length];
        for (int i = 0; i < values.Length; i++) result[i] = QuantMath.Dequantize(QuantMath.Quantize(values[i], p, qmin, qmax), p);
        return result;
    }

    /// <summary>SQNR of the layer's weight against its int8 round trip; null for a layer without weight.</summary>
    internal static double? WeightError(NodeProto node, OpHandler handler, GraphView graph, QuantizationOptions options)
    {
        if (handler.Weight(node, graph) is not { } w) return null;
        var init = graph.Initializers[node.Input[w.Input]];
        var values = TensorData.ReadFloats(init);
        var dims = init.Dims.ToArray();
        int? axis = options.PerChannel ? w.Axis : null;
        var (q, scales) = QuantMath.QuantizeWeights(values, dims, axis);
        long inner = 1;
        if (axis is int a) for (int d = a + 1; d < dims.Length; d++) inner *= dims[d];
        else inner = values.Length;
        double signal = 0, noise = 0;
        for (int i = 0; i < values.Length; i++)
        {
            double r = values[i], e = r - q[i] * (double)scales[(int)(i / inner % scales.Length)];
            signal += r * r;
            noise += e * e;
        }
        return ErrorAccumulator.Sqnr(signal, noise);
    }
}
