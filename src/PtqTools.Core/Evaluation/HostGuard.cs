using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Model;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using PtqTools.Core.Runtime;

namespace PtqTools.Core.Evaluation;

/// <summary>The check Invoke-Quantization runs after writing a model with integer products: the written model run by
/// this host's ONNX Runtime against the exact integer result (the PtqTools engine, exact sums) on a few samples. A
/// model that this host's kernels silently compute wrong (pair sums saturated by kernels without VNNI) is reported
/// with the layers where the saturation happens and the remedy.</summary>
public static class HostGuard
{
    /// <summary>How many samples the check runs.</summary>
    public const int DefaultSamples = 4;

    /// <summary>Cosine below which an output differs beyond rounding: integer ops agree to the bit between the engine
    /// and ONNX Runtime, and float ops that ONNX Runtime fuses differ in their last bits only (which can move a
    /// dynamic quantization step: cosine 0.99-1 on MiniLM, docs/architecture.md).</summary>
    public const double MinCosineAllowed = 0.98;

    /// <summary>The integer-product ops whose outputs are compared to name the layers that saturate.</summary>
    static readonly HashSet<string> IntegerProducts = new(StringComparer.Ordinal) { "QLinearConv", "QLinearMatMul", "MatMulInteger", "QGemm" };

    /// <summary>Up to <see cref="DefaultSamples"/> samples of the data set, or (without one) inputs drawn uniformly
    /// from the calibrated range of the model's single float input; null with the reason when neither can be had.</summary>
    public static (List<Sample>? Samples, string Source) Samples(string modelPath, PtqDataSet? data, IReadOnlyCollection<TensorStatistics>? statistics,
        CancellationToken cancel)
    {
        if (data is not null)
        {
            try
            {
                using var reader = new SampleReader(data);
                return (reader.Read(cancel).Take(DefaultSamples).ToList(), "calibration data");
            }
            // A data set the readers cannot replay (a script block) or that fails now: the check is not run.
            catch (PtqException ex) { return (null, $"the data set gives no samples here ({ex.Message})"); }
        }
        using var ort = OrtRunner.FromFile(modelPath);
        var input = statistics?.FirstOrDefault(s => s.Tensor == ort.InputName);
        if (input is null || ort.InputShape.Length == 0 || ort.InputShape.Skip(1).Any(d => d <= 0))
            return (null, "no samples: give -DataSet (the model input has no calibrated range or no fixed shape)");
        var shape = ort.InputShape.Skip(1).ToArray();
        int n = shape.Aggregate(1, (a, d) => checked(a * d));
        var random = new Random(20261206);
        var samples = Enumerable.Range(0, DefaultSamples).Select(i =>
        {
            var x = new float[n];
            for (int k = 0; k < n; k++) x[k] = input.RangeMin + (float)random.NextDouble() * (input.RangeMax - input.RangeMin);
            return new Sample(i, $"uniform-{i}", x, shape, -1);
        }).ToList();
        return (samples, "inputs drawn from the calibrated range of the model input");
    }

    /// <param name="hostRun">What this host computes for a sample (by default this host's ONNX Runtime with all
    /// optimizations, as deployed); tests give what ONNX Runtime computed on another CPU.</param>
    /// <param name="hostClass">The class of the machine <paramref name="hostRun"/> stands for (by default this one).</param>
    public static HostCheck Run(string modelPath, IReadOnlyList<Sample> samples, string sampleSource, CancellationToken cancel,
        Func<Sample, float[][]>? hostRun = null, QuantTarget? hostClass = null)
    {
        var host = hostClass ?? QuantTargets.HostClass;
        var check = new HostCheck { HostClass = host.ToString(), SampleSource = sampleSource, Samples = samples.Count };
        if (samples.Count == 0) return NotChecked(check, "no samples to run (give -DataSet)");
        var model = OnnxModelIO.Load(modelPath);
        IntegerEngine exact;
        try { exact = new IntegerEngine(model, EngineOptions.Default, Path.GetFileName(modelPath)); }
        catch (PtqException ex) { return NotChecked(check, ex.Message); }
        using var _ = exact;
        using var ort = hostRun is null ? OrtRunner.FromFile(modelPath, 1) : null;
        hostRun ??= s => ort!.Run(s, cancel);
        var parity = new EngineParity(exact);
        double minCosine = 1;
        try
        {
            foreach (var sample in samples)
            {
                cancel.ThrowIfCancellationRequested();
                var reference = hostRun(sample);
                var mine = exact.Run(EngineParity.Feed(exact, sample), cancel);
                parity.Add(reference, mine);
                for (int o = 0; o < exact.Outputs.Count; o++)
                {
                    double c = Cosine(mine[exact.Outputs[o]].ToFloats(), reference[o]);
                    minCosine = Math.Min(minCosine, c);
                }
            }
        }
        // The check never fails the quantization: a model or sample the engine cannot run is reported as not checked.
        catch (PtqException ex) { return NotChecked(check, ex.Message); }
        check.MinCosine = Math.Round(minCosine, 6);
        check.MaxSteps = Math.Round(parity.MaxSteps, 3);
        // Outputs that come from a DequantizeLinear are compared in its steps too (more than one step is no rounding).
        bool stepped = exact.Outputs.All(o => exact.OutputStep(o) > 0);
        bool differs = minCosine < MinCosineAllowed || (stepped && parity.MaxSteps > 1 + 1e-3);
        try { check.Layers = LayersThatSaturate(model, modelPath, exact, samples, host, cancel); }
        catch (PtqException) { check.Layers = Array.Empty<string>(); }
        string desc = QuantTargets.Describe(host);
        string figures = FormattableString.Invariant($"min output cosine {minCosine:0.######}, max {parity.MaxSteps:0.###} quantization steps, {samples.Count} samples ({sampleSource})");
        if (!differs)
        {
            check.Status = "Passed";
            check.Summary = $"Host check passed: this host's ONNX Runtime ({desc}) gives the exact integer result within rounding ({figures})."
                + (check.Layers.Length > 0 ? $" Pair sums saturate here in {HostCheck.ListNames(check.Layers)} without changing the outputs beyond rounding." : "");
            return check;
        }
        check.Status = "Failed";
        string where = check.Layers.Length > 0
            ? $" Its u8 x s8 pair sums saturate at int16 on this CPU in {check.Layers.Length} layers: {HostCheck.ListNames(check.Layers)}."
            : QuantTargets.SaturatesPairs(host) ? "" : " This CPU's kernels compute exact sums, so the difference is not pair saturation.";
        check.Summary = $"This host's ONNX Runtime ({desc}) computes '{Path.GetFileName(modelPath)}' differently from the exact integer result ({figures}).{where} Quantize with -Target {host} or -Target Portable, which keep every pair sum inside int16.";
        return check;
    }

    /// <summary>The integer layers whose output, from the exact run's inputs, changes under the host class's
    /// saturating arithmetic on some sample (none on a class with exact sums), in graph order.</summary>
    static string[] LayersThatSaturate(global::Onnx.ModelProto model, string modelPath, IntegerEngine exact, IReadOnlyList<Sample> samples,
        QuantTarget host, CancellationToken cancel)
    {
        if (!QuantTargets.SaturatesPairs(host)) return Array.Empty<string>();
        using var emulated = new IntegerEngine(model, EngineOptions.Emulating(host), Path.GetFileName(modelPath));
        var layers = new HashSet<string>(StringComparer.Ordinal);
        foreach (var sample in samples)
        {
            var values = exact.RunAll(EngineParity.Feed(exact, sample), cancel);
            foreach (var node in emulated.Nodes.Where(n => IntegerProducts.Contains(n.OpType) && !layers.Contains(n.Name)))
            {
                cancel.ThrowIfCancellationRequested();
                if (node.Input.Any(i => i.Length > 0 && !values.ContainsKey(i)) || !values.TryGetValue(node.Output[0], out var expected)) continue;
                if (!emulated.RunNode(node, values)[0].ToFloats().AsSpan().SequenceEqual(expected.ToFloats())) layers.Add(node.Name);
            }
        }
        return emulated.Nodes.Where(n => layers.Contains(n.Name)).Select(n => n.Name).ToArray();
    }

    static HostCheck NotChecked(HostCheck check, string why)
    {
        check.Status = "NotChecked";
        check.Summary = $"Host check not run: {why}.";
        return check;
    }

    static double Cosine(float[] a, float[] b)
    {
        double dot = 0, na = 0, nb = 0;
        for (int i = 0; i < Math.Min(a.Length, b.Length); i++) { dot += (double)a[i] * b[i]; na += (double)a[i] * a[i]; nb += (double)b[i] * b[i]; }
        return na == 0 && nb == 0 ? 1 : na == 0 || nb == 0 ? 0 : dot / Math.Sqrt(na * nb);
    }
}
