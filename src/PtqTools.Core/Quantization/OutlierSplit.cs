using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.Core.Quantization;

/// <summary>
/// Mixed-precision decomposition of dynamic MatMuls (after LLM.int8(), Dettmers et al., 2022, with the channels
/// chosen once from calibration data instead of at run time). Transformer activations have a few input channels
/// far wider than the rest (MiniLM's FFN down-projection inputs: tens of times the median); one run-time
/// DynamicQuantizeLinear range over the whole tensor spends its 256 codes on them. For an input X whose channel
/// maxima have outliers (above <c>threshold</c> times the median channel maximum; at most K/16 of them, the
/// largest), each MatMul reading X becomes
/// <code>Y = MatMul(X * mask, W with those rows zeroed)  +  MatMul(Gather(X, outliers, axis -1), W[outliers, :])</code>
/// The first MatMul is quantized as usual (its range and its column scales no longer see the outliers); the second,
/// k columns wide, stays in float. The float function is unchanged: the two parts sum to X W.
/// </summary>
public static class OutlierSplit
{
    /// <summary>Input channels (ascending) whose maximum |x| is above <paramref name="threshold"/> times the median
    /// channel maximum, at most K/16 of them (the largest).</summary>
    public static int[] Outliers(float[] maxima, float threshold)
    {
        if (maxima.Length == 0) return Array.Empty<int>();
        var sorted = maxima.Order().ToArray();
        float median = sorted[sorted.Length / 2];
        if (!(median > 0)) return Array.Empty<int>();
        return Enumerable.Range(0, maxima.Length).Where(i => maxima[i] > threshold * median)
            .OrderByDescending(i => maxima[i]).ThenBy(i => i).Take(Math.Max(1, maxima.Length / 16)).Order().ToArray();
    }

    /// <summary>The split copy of <paramref name="model"/>, and per split MatMul layer its outlier channels. A
    /// weight read by anything else than the MatMuls of one input is left alone.</summary>
    public static (ModelProto Model, Dictionary<string, int[]> Split) Apply(ModelProto model, IEnumerable<string> layers,
        IReadOnlyDictionary<string, float[]> maxima, float threshold)
    {
        var copy = model.Clone();
        var graph = copy.Graph;
        var view = new GraphView(graph);
        var names = new NameScope(graph);
        var readers = graph.Node.SelectMany(n => n.Input).GroupBy(i => i, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
        var layerSet = layers.ToHashSet(StringComparer.Ordinal);
        var split = new Dictionary<string, int[]>(StringComparer.Ordinal);
        var added = new List<NodeProto>();
        foreach (var group in graph.Node.Where(n => layerSet.Contains(n.Name) && n.OpType == "MatMul").GroupBy(n => n.Input[0], StringComparer.Ordinal).ToList())
        {
            var x = group.Key;
            if (!maxima.TryGetValue(x, out var act)) continue;
            var outliers = Outliers(act, threshold);
            int k = act.Length;
            var matmuls = group.Where(n => readers[n.Input[1]] == 1 && view.Initializers[n.Input[1]].Dims is { Count: 2 } d && d[0] == k).ToList();
            if (outliers.Length == 0 || matmuls.Count == 0) continue;

            var mask = new float[k];
            Array.Fill(mask, 1f);
            foreach (var i in outliers) mask[i] = 0f;
            var maskName = names.Fresh(x + "_outlier_mask");
            graph.Initializer.Add(TensorData.FromFloats(maskName, mask, k));
            var masked = names.Fresh(x + "_masked");
            added.Add(GraphEditor.Node("Mul", names.Fresh(x + "_OutlierMask"), new[] { x, maskName }, masked));
            var indexName = names.Fresh(x + "_outlier_channels");
            graph.Initializer.Add(TensorData.FromInt32(indexName, outliers, outliers.Length));
            var gathered = names.Fresh(x + "_outliers");
            var gather = GraphEditor.Node("Gather", names.Fresh(x + "_OutlierGather"), new[] { x, indexName }, gathered);
            gather.Attribute.Add(GraphEditor.Int("axis", -1));
            added.Add(gather);

            foreach (var m in matmuls)
            {
                var w = view.Initializers[m.Input[1]];
                long n = w.Dims[1];
                var values = TensorData.ReadFloats(w);
                var rows = new float[outliers.Length * n];
                for (int r = 0; r < outliers.Length; r++)
                {
                    Array.Copy(values, outliers[r] * n, rows, r * n, n);
                    Array.Clear(values, (int)(outliers[r] * n), (int)n);
                }
                var fresh = TensorData.FromFloats(w.Name, values, w.Dims.ToArray());
                w.FloatData.Clear();
                w.RawData = fresh.RawData;
                var rowsName = names.Fresh(w.Name + "_outlier_rows");
                graph.Initializer.Add(TensorData.FromFloats(rowsName, rows, outliers.Length, n));

                // The float part is added after the MatMul's bias Add when it has one, so that ONNX Runtime still fuses
                // the int8 MatMul with its bias (DynamicQuantizeMatMul).
                var tail = BiasAdd(graph, view, m) ?? m;
                var y = tail.Output[0];
                var quantizedPart = names.Fresh(y + "_int8_part");
                var floatPart = names.Fresh(y + "_float_part");
                m.Input[0] = masked;
                tail.Output[0] = quantizedPart;
                added.Add(GraphEditor.Node("MatMul", names.Fresh(m.Name + "_outliers"), new[] { gathered, rowsName }, floatPart));
                added.Add(GraphEditor.Node("Add", names.Fresh(m.Name + "_outlier_add"), new[] { quantizedPart, floatPart }, y));
                split[m.Name] = outliers;
            }
        }
        graph.Node.AddRange(added);
        GraphEditor.SortTopologically(graph);
        return (copy, split);
    }

    /// <summary>The Add of a constant that is the only reader of the MatMul's output (its bias), or null.</summary>
    static NodeProto? BiasAdd(GraphProto graph, GraphView view, NodeProto matmul)
    {
        var y = matmul.Output[0];
        if (view.GraphOutputs.Contains(y)) return null;
        var readers = graph.Node.Where(n => n.Input.Contains(y)).ToList();
        return readers.Count == 1 && readers[0] is { OpType: "Add", Domain: "" or "ai.onnx" } add && add.Input.Count == 2
            && view.IsInitializer(add.Input[add.Input[0] == y ? 1 : 0]) ? add : null;
    }

    public static string Reason(int[] channels) =>
        $"; {channels.Length} outlier input channel{(channels.Length == 1 ? "" : "s")} ({string.Join(",", channels.Take(8))}{(channels.Length > 8 ? ",..." : "")}) computed in float beside the int8 MatMul";
}
