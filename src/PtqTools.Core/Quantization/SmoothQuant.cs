using Google.Protobuf;
using Onnx;
using PtqTools.Core.Data;
using PtqTools.Core.Evaluation;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Quantization;

/// <summary>
/// SmoothQuant (Xiao et al., 2023) for the MatMul layers of a dynamic model: transformer activations have a few
/// input channels far wider than the rest, which a per-tensor activation range cannot hold. For the MatMuls that
/// read one tensor X (Q, K and V read the same one), s_k = max|X_k|^alpha / max|W_k,:|^(1 - alpha) over calibration
/// data and all those weights; a Mul by 1/s is inserted on X (folding it into a LayerNormalization is not possible
/// in post-LN BERT models, whose LN output also feeds the residual Add) and each weight row k is multiplied by s_k,
/// which keeps the float function: (X / s) (diag(s) W) = X W. The activation's outliers move into the weights, which
/// are quantized per column.
/// </summary>
public static class SmoothQuant
{
    /// <summary>Per input tensor of the <paramref name="layers"/>, the largest |x| of each channel of its last axis
    /// over <paramref name="data"/> (one run of its own; the pipeline shares the run through <see cref="MaximaConsumer"/>).</summary>
    public static Dictionary<string, float[]> ChannelMaxima(PreparedModel prepared, IEnumerable<string> layers, PtqDataSet data, int threads, CancellationToken cancel)
    {
        var consumer = new MaximaConsumer(prepared.Model, layers);
        TensorTap.Collect(prepared.Model, prepared.SourcePath, data, threads, new[] { consumer }, null, cancel);
        return consumer.Maxima;
    }

    /// <summary>The channel maxima of the MatMul inputs of <c>layers</c>, gathered from the runs it is fed.</summary>
    public sealed class MaximaConsumer : ITensorConsumer
    {
        readonly float[][] _maxima;

        public MaximaConsumer(ModelProto model, IEnumerable<string> layers)
        {
            var view = new GraphView(model.Graph);
            var set = layers.ToHashSet(StringComparer.Ordinal);
            var width = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var n in model.Graph.Node.Where(n => set.Contains(n.Name))) width[n.Input[0]] = checked((int)view.Initializers[n.Input[1]].Dims[0]);
            Tensors = width.Keys.OrderBy(k => k, StringComparer.Ordinal).ToArray();
            _maxima = Tensors.Select(t => new float[width[t]]).ToArray();
        }

        public IReadOnlyList<string> Tensors { get; }

        /// <summary>Per input tensor, the largest |x| of each channel seen so far.</summary>
        public Dictionary<string, float[]> Maxima => Tensors.Select((t, i) => (t, i)).ToDictionary(p => p.t, p => _maxima[p.i], StringComparer.Ordinal);

        public void Add(Sample sample, TapValues values)
        {
            for (int t = 0; t < _maxima.Length; t++)
            {
                var m = _maxima[t];
                var v = values.Span(t);
                for (int i = 0; i < v.Length; i++)
                {
                    float a = Math.Abs(v[i]);
                    if (a > m[i % m.Length]) m[i % m.Length] = a;
                }
            }
        }
    }

    /// <summary>The smoothed copy of <paramref name="model"/> and the tensors smoothed. Each weight must be read
    /// only by the MatMuls of one input (a shared one is left alone).</summary>
    public static (ModelProto Model, List<string> Smoothed) Apply(ModelProto model, IEnumerable<string> layers, IReadOnlyDictionary<string, float[]> maxima, float alpha)
    {
        var copy = model.Clone();
        var graph = copy.Graph;
        var view = new GraphView(graph);
        var names = new NameScope(graph);
        var readers = graph.Node.SelectMany(n => n.Input).GroupBy(i => i, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        var layerSet = layers.ToHashSet(StringComparer.Ordinal);
        var smoothed = new List<string>();
        var added = new List<NodeProto>();
        foreach (var group in graph.Node.Where(n => layerSet.Contains(n.Name)).GroupBy(n => n.Input[0], StringComparer.Ordinal).ToList())
        {
            var x = group.Key;
            if (!maxima.TryGetValue(x, out var act)) continue;
            var matmuls = group.ToList();
            if (matmuls.Any(n => readers[n.Input[1]] != 1)) continue;
            int k = act.Length;
            var weights = matmuls.Select(n => view.Initializers[n.Input[1]]).ToList();
            if (weights.Any(w => w.Dims.Count != 2 || w.Dims[0] != k)) continue;
            var values = weights.Select(TensorData.ReadFloats).ToList();
            var s = new float[k];
            for (int r = 0; r < k; r++)
            {
                float wmax = 0;
                for (int j = 0; j < weights.Count; j++)
                {
                    long n = weights[j].Dims[1];
                    for (long c = 0; c < n; c++) wmax = Math.Max(wmax, Math.Abs(values[j][r * n + c]));
                }
                double v = Math.Pow(Math.Max(act[r], 1e-5), alpha) / Math.Pow(Math.Max(wmax, 1e-5), 1 - alpha);
                s[r] = (float)Math.Clamp(v, 1e-5, 1e5);
            }
            for (int j = 0; j < weights.Count; j++)
            {
                long n = weights[j].Dims[1];
                for (int r = 0; r < k; r++)
                    for (long c = 0; c < n; c++) values[j][r * n + c] *= s[r];
                var fresh = TensorData.FromFloats(weights[j].Name, values[j], weights[j].Dims.ToArray());
                weights[j].FloatData.Clear();
                weights[j].RawData = fresh.RawData;
            }
            var scaleName = names.Fresh(x + "_smooth_scale");
            graph.Initializer.Add(TensorData.FromFloats(scaleName, s.Select(v => 1f / v).ToArray(), k));
            var output = names.Fresh(x + "_smoothed");
            added.Add(GraphEditor.Node("Mul", names.Fresh(x + "_SmoothQuant"), new[] { x, scaleName }, output));
            foreach (var m in matmuls) m.Input[0] = output;
            smoothed.Add(x);
        }
        graph.Node.AddRange(added);
        GraphEditor.SortTopologically(graph);
        return (copy, smoothed);
    }
}
