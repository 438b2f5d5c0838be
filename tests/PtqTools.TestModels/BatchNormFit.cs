using Onnx;
using PtqTools.Core.Onnx;

namespace PtqTools.TestModels;

/// <summary>Sets every BatchNormalization's running mean and variance to the statistics of its input on the given
/// samples, as training leaves them (random running statistics would let activations grow or die with depth).</summary>
public static class BatchNormFit
{
    public static void Fit(ModelProto model, IReadOnlyList<TensorProto[]> samples)
    {
        var bns = model.Graph.Node.Where(n => n.OpType == "BatchNormalization").ToList();
        var inits = model.Graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        for (int pass = 0; pass < bns.Count; pass++)
        {
            var probe = model.Clone();
            foreach (var bn in bns) probe.Graph.Output.Add(OnnxBuilder.Value(bn.Input[0], null));
            using var ort = new OrtModel(probe);
            int first = model.Graph.Output.Count;
            var sums = bns.Select(_ => (S: (double[]?)null, Q: (double[]?)null, N: 0L)).ToArray();
            foreach (var s in samples)
            {
                var o = ort.Run(s);
                for (int k = 0; k < bns.Count; k++)
                {
                    var v = o[first + k];
                    int c = (int)TensorData.ElementCount(inits[bns[k].Input[3]].Dims);
                    int hw = v.Length / c;
                    sums[k].S ??= new double[c]; sums[k].Q ??= new double[c];
                    for (int ch = 0; ch < c; ch++)
                        for (int i = 0; i < hw; i++) { double x = v[ch * hw + i]; sums[k].S![ch] += x; sums[k].Q![ch] += x * x; }
                    sums[k].N += hw;
                }
            }
            for (int k = 0; k < bns.Count; k++)
            {
                var (S, Q, N) = sums[k];
                var mean = S!.Select(x => (float)(x / N)).ToArray();
                var variance = Q!.Select((q, ch) => (float)Math.Max(1e-4, q / N - (double)mean[ch] * mean[ch])).ToArray();
                Replace(model, bns[k].Input[3], mean);
                Replace(model, bns[k].Input[4], variance);
            }
        }
    }

    static void Replace(ModelProto model, string name, float[] values)
    {
        var old = model.Graph.Initializer.First(t => t.Name == name);
        model.Graph.Initializer[model.Graph.Initializer.IndexOf(old)] = TensorData.FromFloats(name, values, old.Dims.ToArray());
    }

    /// <summary>Copies the running statistics fitted on <paramref name="fitted"/> into <paramref name="target"/> (same names).</summary>
    public static ModelProto CopyStatistics(ModelProto fitted, ModelProto target)
    {
        var byName = fitted.Graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        for (int i = 0; i < target.Graph.Initializer.Count; i++)
            if (target.Graph.Initializer[i].Name.StartsWith("bn_mean", StringComparison.Ordinal) || target.Graph.Initializer[i].Name.StartsWith("bn_var", StringComparison.Ordinal))
                target.Graph.Initializer[i] = byName[target.Graph.Initializer[i].Name].Clone();
        return target;
    }
}
