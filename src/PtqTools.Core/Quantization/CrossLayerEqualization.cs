using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>
/// Cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019) of Conv → Relu → Conv chains: ReLU is
/// positively homogeneous, so dividing output channel i of the first Conv (weights and bias) by s_i and multiplying
/// input channel i of the second Conv's weights by s_i leaves the float model's function unchanged. With
/// s_i = sqrt(r1_i / r2_i), where r1_i and r2_i are the largest absolute weights of that channel in each layer,
/// both layers' channel i span the same range, sqrt(r1_i r2_i), so per-tensor (and per-channel) weight steps waste
/// less on a few wide channels. The activations between the layers change, so calibration must run on the
/// equalized model.
/// </summary>
public static class CrossLayerEqualization
{
    /// <summary>The equalized copy of <paramref name="model"/> and the pairs it equalized ("first → second").</summary>
    public static (ModelProto Model, List<string> Pairs) Apply(ModelProto model)
    {
        var copy = model.Clone();
        var view = new GraphView(copy.Graph);
        var pairs = new List<string>();
        var usedWeights = copy.Graph.Node.SelectMany(n => n.Input).GroupBy(i => i, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        foreach (var first in copy.Graph.Node)
        {
            if (!IsPlainConv(first, view, usedWeights) || view.GraphOutputs.Contains(first.Output[0])) continue;
            var readers = view.ConsumersOf(first.Output[0]);
            if (readers.Count != 1 || readers[0].OpType != "Relu" || view.GraphOutputs.Contains(readers[0].Output[0])) continue;
            var next = view.ConsumersOf(readers[0].Output[0]);
            if (next.Count != 1 || !IsPlainConv(next[0], view, usedWeights) || next[0].Input[0] != readers[0].Output[0]) continue;
            if (Equalize(first, next[0], view)) pairs.Add($"{first.Name} → {next[0].Name}");
        }
        return (copy, pairs);
    }

    /// <summary>A Conv of group 1 whose weight (and bias) are float initializers read by this node only.</summary>
    static bool IsPlainConv(NodeProto node, GraphView g, Dictionary<string, int> used)
    {
        if (node.OpType != "Conv" || node.Domain is not ("" or "ai.onnx") || node.Input.Count < 2) return false;
        if (node.IntAttr("group", 1) != 1) return false;
        for (int i = 1; i < node.Input.Count; i++)
        {
            if (node.Input[i].Length == 0) continue;
            if (!g.Initializers.TryGetValue(node.Input[i], out var t) || t.DataType != (int)OnnxDataType.Float || used[node.Input[i]] != 1) return false;
        }
        return g.Initializers[node.Input[1]].Dims.Count >= 3;
    }

    static bool Equalize(NodeProto first, NodeProto second, GraphView g)
    {
        var w1 = g.Initializers[first.Input[1]];
        var w2 = g.Initializers[second.Input[1]];
        long channels = w1.Dims[0];
        if (w2.Dims[1] != channels) return false;
        var a = TensorData.ReadFloats(w1);
        var b = TensorData.ReadFloats(w2);
        long inner1 = a.Length / channels, outer2 = w2.Dims[0], inner2 = b.Length / (outer2 * channels);
        var scales = new float[channels];
        for (long c = 0; c < channels; c++)
        {
            float r1 = 0, r2 = 0;
            for (long j = 0; j < inner1; j++) r1 = Math.Max(r1, Math.Abs(a[c * inner1 + j]));
            for (long o = 0; o < outer2; o++)
                for (long j = 0; j < inner2; j++) r2 = Math.Max(r2, Math.Abs(b[(o * channels + c) * inner2 + j]));
            scales[c] = r1 > 0 && r2 > 0 ? (float)Math.Sqrt(r1 / r2) : 1f;
        }
        for (long c = 0; c < channels; c++)
            for (long j = 0; j < inner1; j++) a[c * inner1 + j] /= scales[c];
        for (long o = 0; o < outer2; o++)
            for (long c = 0; c < channels; c++)
                for (long j = 0; j < inner2; j++) b[(o * channels + c) * inner2 + j] *= scales[c];
        Replace(w1, a);
        Replace(w2, b);
        if (first.Input.Count > 2 && first.Input[2].Length > 0)
        {
            var bias = g.Initializers[first.Input[2]];
            var v = TensorData.ReadFloats(bias);
            for (int c = 0; c < v.Length; c++) v[c] /= scales[c];
            Replace(bias, v);
        }
        return true;
    }

    /// <summary>Writes new values into an initializer in place (raw data, same name and shape).</summary>
    static void Replace(TensorProto t, float[] values)
    {
        var fresh = TensorData.FromFloats(t.Name, values, t.Dims.ToArray());
        t.FloatData.Clear();
        t.RawData = fresh.RawData;
    }
}
