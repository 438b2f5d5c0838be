using System.Globalization;
using Onnx;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Arm64Check;

/// <summary>
/// The integer engine on quantized models written on x64: for each model NAME.onnx of a folder and each of its
/// inputs NAME.in0.pb, NAME.in1.pb, ... (one TensorProto a sample), every tensor the engine computes (each node's
/// outputs, in execution order) as element type, shape and a 64-bit FNV-1a hash of its little-endian values (not
/// SHA-256: .NET computes that with OpenSSL, which the arm64 sysroot lacks), and the model
/// outputs' values themselves (floats round-trip, "R"). The lines do not name the kernel path: they are computed on
/// every path this CPU offers, which must agree, and the x64 engine's lines are compared with the ARM64 ones. Each
/// model runs twice: with exact sums, and emulating ONNX Runtime on a CPU without VNNI (NAME@avx2).
/// </summary>
public static class EngineReport
{
    /// <summary>The report lines of every model in <paramref name="folder"/>; <paramref name="log"/> gets a line per
    /// model with the paths that agreed, or the first line where two paths differ (then the lines are null).</summary>
    public static List<string>? Run(string folder, TextWriter log)
    {
        var all = new List<string>();
        bool agree = true;
        foreach (var modelPath in Directory.GetFiles(folder, "*.onnx").OrderBy(p => p, StringComparer.Ordinal))
        {
            string name = Path.GetFileNameWithoutExtension(modelPath);
            var inputs = Enumerable.Range(0, 1000).Select(i => Path.Combine(folder, $"{name}.in{i}.pb")).TakeWhile(File.Exists).ToList();
            var model = OnnxModelIO.Load(modelPath);
            List<string>? first = null;
            var paths = KernelDispatch.Supported();
            foreach (var path in paths)
            {
                // Exact sums (what ARM64, VNNI and AMX machines compute), then the emulation of ONNX Runtime on a CPU
                // without VNNI (-Target Avx2: adjacent u8 x s8 pairs saturated at int16), which runs on any host.
                var kernels = KernelChecks.On(path);
                var lines = Lines(name, model, inputs, EngineOptions.Default with { Kernels = kernels }, "")
                    .Concat(Lines(name, model, inputs, EngineOptions.Emulating(QuantTarget.Avx2) with { Kernels = kernels }, "@avx2")).ToList();
                if (first is null) { first = lines; continue; }
                int differ = Enumerable.Range(0, Math.Max(first.Count, lines.Count)).FirstOrDefault(i => i >= first.Count || i >= lines.Count || first[i] != lines[i], -1);
                if (differ >= 0)
                {
                    log.WriteLine($"engine: {name}: path {path} differs from {paths[0]} at line {differ}: '{(differ < lines.Count ? lines[differ] : "")}' vs '{(differ < first.Count ? first[differ] : "")}'");
                    agree = false;
                }
            }
            log.WriteLine($"engine: {name}: {inputs.Count} samples, {first!.Count(l => l.StartsWith("tensor ", StringComparison.Ordinal))} tensor values, paths {string.Join(", ", paths)} agree" + (agree ? "" : " NOT"));
            all.AddRange(first ?? new List<string>());
        }
        return agree ? all : null;
    }

    static ulong Fnv1a(ReadOnlySpan<byte> data)
    {
        ulong h = 14695981039346656037UL;
        foreach (var b in data) h = (h ^ b) * 1099511628211UL;
        return h;
    }

    static List<string> Lines(string name, ModelProto model, List<string> inputs, EngineOptions options, string suffix)
    {
        var lines = new List<string>();
        using var engine = new IntegerEngine(model, options, name);
        name += suffix;
        for (int s = 0; s < inputs.Count; s++)
        {
            var tensor = EngineTensor.FromProto(TensorProto.Parser.ParseFrom(File.ReadAllBytes(inputs[s])));
            var values = engine.RunAll(new Dictionary<string, EngineTensor> { [engine.Inputs[0]] = tensor });
            foreach (var node in engine.Nodes)
                foreach (var output in node.Output)
                    if (output.Length > 0 && values.TryGetValue(output, out var t))
                        lines.Add($"tensor {name}#{s} {output} {t.Type} [{string.Join(",", t.Dims)}] {Fnv1a(t.RawBytes):x16} ({t.RawBytes.Length} bytes)");
            foreach (var output in engine.Outputs)
                lines.Add($"output {name}#{s} {output} " + string.Join(" ", values[output].ToFloats().Select(v => v.ToString("R", CultureInfo.InvariantCulture))));
        }
        return lines;
    }
}
