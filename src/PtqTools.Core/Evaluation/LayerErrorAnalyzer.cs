using Google.Protobuf;
using Onnx;
using PtqTools.Core.Calibration;
using PtqTools.Core.Data;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

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

    public static List<LayerError> Run(PreparedModel prepared, IReadOnlyCollection<TensorStatistics> statistics, QuantizationOptions options,
        PtqDataSet data, int threads, IProgress<RunProgress>? progress, CancellationToken cancel)
    {
        options.Validate();
        var (plan, ranges) = Quantizer.Plan(prepared, statistics, options);
        if (plan.QuantizedLayers.Count == 0)
            throw new PtqException("NothingToQuantize", PtqErrorKind.InvalidArgument, $"None of the layers in the statistics can be quantized in '{prepared.SourcePath}'.", prepared.SourcePath);
        var graph = new GraphView(prepared.Model.Graph);
        var layers = prepared.Model.Graph.Node.Where(n => plan.QuantizedLayers.Contains(n.Name)).ToList();
        var handlers = layers.ToDictionary(n => n.Name, n => OpHandlers.Get(n)!, StringComparer.Ordinal);
        var outputOf = layers.ToDictionary(n => n.Name, n => n.Output[0], StringComparer.Ordinal);
        var inputsOf = layers.ToDictionary(n => n.Name, n => handlers[n.Name].ActivationInputs(n, graph).Select(i => n.Input[i]).Distinct().ToArray(), StringComparer.Ordinal);
        // The model's first output too: how much one layer quantized alone changes what the model returns.
        var modelOutput = prepared.Model.Graph.Output[0].Name;
        var observed = outputOf.Values.Concat(inputsOf.Values.SelectMany(v => v)).Append(modelOutput).Distinct(StringComparer.Ordinal).ToArray();

        var samples = new List<Sample>();
        using (var reader = new SampleReader(data))
            foreach (var s in reader.Read(cancel)) samples.Add(s);
        if (samples.Count == 0)
            throw new PtqException("DataSetEmpty", PtqErrorKind.InvalidData, $"The data set '{data.Name}' has no samples.", data.Name);

        int total = samples.Count * (layers.Count + 1), done = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        void Step(string what)
        {
            done++;
            progress?.Report(new RunProgress(done, total, done / Math.Max(1e-9, clock.Elapsed.TotalSeconds), what));
        }

        using var floatRunner = new OrtRunner(Expose(prepared.Model, observed).ToByteArray(), prepared.SourcePath, threads, observed, Level);
        var index = observed.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);

        // Accumulated: the whole plan quantized; activation error: each input against its fake-quantized self.
        var accumulated = layers.ToDictionary(n => n.Name, _ => new ErrorAccumulator(), StringComparer.Ordinal);
        var activation = layers.ToDictionary(n => n.Name, _ => new ErrorAccumulator(), StringComparer.Ordinal);
        var full = QdqQuantizer.Quantize(prepared.Model, plan, ranges, options, cancel);
        var outputs = outputOf.Values.Distinct(StringComparer.Ordinal).ToArray();
        using (var runner = new OrtRunner(Expose(full, outputs).ToByteArray(), prepared.SourcePath, threads, outputs, Level))
        {
            var outIndex = outputs.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
            foreach (var sample in samples)
            {
                cancel.ThrowIfCancellationRequested();
                var f = floatRunner.Run(sample, cancel);
                var q = runner.Run(sample, cancel);
                foreach (var layer in layers)
                {
                    accumulated[layer.Name].Add(f[index[outputOf[layer.Name]]], q[outIndex[outputOf[layer.Name]]]);
                    foreach (var input in inputsOf[layer.Name])
                    {
                        var reference = f[index[input]];
                        activation[layer.Name].Add(reference, FakeQuantize(reference, ranges[input], options));
                    }
                }
                Step("whole model quantized");
            }
        }

        // Isolated: one model per layer with only that layer quantized.
        var results = new List<LayerError>();
        foreach (var layer in layers)
        {
            cancel.ThrowIfCancellationRequested();
            var single = QuantizationPlan.Create(graph, new HashSet<string>(StringComparer.Ordinal) { layer.Name }, perChannel: options.PerChannel);
            var model = QdqQuantizer.Quantize(prepared.Model, single, ranges, options, cancel);
            var name = outputOf[layer.Name];
            var isolated = new ErrorAccumulator();
            var atOutput = new ErrorAccumulator();
            var names = new[] { name, modelOutput }.Distinct(StringComparer.Ordinal).ToArray();
            using (var runner = new OrtRunner(Expose(model, names).ToByteArray(), prepared.SourcePath, threads, names, Level))
                foreach (var sample in samples)
                {
                    var f = floatRunner.Run(sample, cancel);
                    var q = runner.Run(sample, cancel);
                    isolated.Add(f[index[name]], q[0]);
                    atOutput.Add(f[index[modelOutput]], q[names.Length - 1]);
                    Step(layer.Name);
                }
            var w = WeightError(layer, handlers[layer.Name], graph, options);
            results.Add(new LayerError
            {
                ModelPath = prepared.SourcePath,
                ModelSha256 = prepared.SourceSha256,
                Layer = layer.Name,
                OpType = layer.OpType,
                Tensor = name,
                SampleCount = samples.Count,
                ElementCount = isolated.Count / samples.Count,
                IsolatedSqnrDb = isolated.SqnrDb,
                IsolatedMse = isolated.Mse,
                IsolatedOutputSqnrDb = atOutput.SqnrDb,
                AccumulatedSqnrDb = accumulated[layer.Name].SqnrDb,
                AccumulatedMse = accumulated[layer.Name].Mse,
                WeightSqnrDb = w,
                ActivationSqnrDb = activation[layer.Name].Count > 0 ? activation[layer.Name].SqnrDb : null,
            });
        }
        // Worst first: the isolated view names the layer that hurts by itself; the accumulated one breaks ties.
        var ranked = results.OrderBy(r => r.IsolatedSqnrDb).ThenBy(r => r.AccumulatedSqnrDb).ToList();
        for (int i = 0; i < ranked.Count; i++) ranked[i].Rank = i + 1;
        return ranked;
    }

    /// <summary>A copy of the model with the given tensors added as float outputs (as calibration does).</summary>
    internal static ModelProto Expose(ModelProto model, IEnumerable<string> tensors)
    {
        var copy = model.Clone();
        var existing = copy.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var t in tensors.Where(t => !existing.Contains(t)))
            copy.Graph.Output.Add(new ValueInfoProto { Name = t, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)OnnxDataType.Float } } });
        return copy;
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
