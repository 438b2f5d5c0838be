using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>The fidelity figures the ground truth's README measured on the AVX2 CPU, reproduced from any machine by
/// the engine's emulation against the saved fp32 outputs; and the fp32 references against this host's ONNX Runtime.</summary>
public sealed class GroundTruthFidelityTests(ITestOutputHelper output)
{
    static List<string> Sets(string name) =>
        Directory.GetDirectories(Path.Combine(TestPaths.GroundTruth, name), "test_data_set_*").OrderBy(d => d, StringComparer.Ordinal).ToList();

    static EngineTensor Read(string set, string file) => EngineTensor.FromProto(TensorProtoFile.Read(Path.Combine(set, file)));

    /// <summary>Per-sample cosine of an int8 case's first output, computed by the engine with the given options,
    /// against the fp32 reference's saved output for the same input.</summary>
    static double[] CosinesToFloat(string int8Case, string fp32Case, EngineOptions options)
    {
        using var engine = new IntegerEngine(OnnxModelIO.Load(Path.Combine(TestPaths.GroundTruth, int8Case, "model.onnx")), options, int8Case);
        var sets = Sets(int8Case);
        var references = Sets(fp32Case);
        Assert.Equal(sets.Count, references.Count);
        return sets.Select((set, i) =>
        {
            var feed = engine.Inputs.Select((n, k) => (n, Read(set, $"input_{k}.pb"))).ToDictionary(p => p.n, p => p.Item2, StringComparer.Ordinal);
            return Check.Cosine(engine.Run(feed)[engine.Outputs[0]].ToFloats(), Read(references[i], "output_0.pb").ToFloats());
        }).ToArray();
    }

    [Theory]
    // The README's figures on the AVX2 CPU: default mean 0.803 (min 0.684), -ReduceRange 0.994 (min 0.990).
    [InlineData("resnet18_int8_default", 0.803, 0.684)]
    [InlineData("resnet18_int8_reduce", 0.994, 0.990)]
    public void EmulatingAvx2_ReproducesTheFidelityMeasuredOnTheAvx2Cpu(string name, double mean, double min)
    {
        var avx2 = CosinesToFloat(name, "resnet18_fp32_reference", EngineOptions.Emulating(QuantTarget.Avx2));
        var exact = CosinesToFloat(name, "resnet18_fp32_reference", EngineOptions.Emulating(QuantTarget.Vnni));
        output.WriteLine($"{name}: AVX2 mean {avx2.Average():F4} (min {avx2.Min():F4}); exact classes mean {exact.Average():F4} (min {exact.Min():F4})");
        Assert.Equal(mean, Math.Round(avx2.Average(), 3));
        Assert.Equal(min, Math.Round(avx2.Min(), 3));
        if (name.EndsWith("default", StringComparison.Ordinal)) Assert.True(exact.Average() > 0.99, "on exact classes the default model was faithful");
        else Assert.Equal(avx2, exact);   // 7-bit weights: the same on every class
    }

    [Fact]
    public void MiniLmEmulatingAvx2_ReproducesItsFidelity_WithinFloatNoise()
    {
        var avx2 = CosinesToFloat("minilm_dynamic", "minilm_fp32_reference", EngineOptions.Emulating(QuantTarget.Avx2));
        var exact = CosinesToFloat("minilm_dynamic", "minilm_fp32_reference", EngineOptions.Emulating(QuantTarget.Vnni));
        output.WriteLine($"minilm_dynamic last_hidden_state: AVX2 mean {avx2.Average():F4} (min {avx2.Min():F4}); exact classes mean {exact.Average():F4} (min {exact.Min():F4})");
        // The README: 0.969 (min 0.930) on the AVX2 CPU, 0.989 on an AMX machine. The engine runs MiniLM's float ops
        // unfused (ONNX Runtime fuses LayerNormalization), so this agrees to float noise, not to the bit.
        Assert.InRange(avx2.Average(), 0.966, 0.972);
        Assert.InRange(avx2.Min(), 0.925, 0.935);
        Assert.True(exact.Average() > avx2.Average() + 0.01, $"exact {exact.Average()} vs AVX2 {avx2.Average()}");
    }

    [Theory]
    [InlineData("resnet18_fp32_reference")]
    [InlineData("minilm_fp32_reference")]
    public void Fp32References_AgreeWithThisHostsOnnxRuntime_ToFloatRounding(string name)
    {
        // Not bit for bit: ONNX Runtime's fp32 kernels differ between CPU classes (AVX2 and AVX-512 FMA orders).
        var model = name.StartsWith("resnet18", StringComparison.Ordinal) ? TestPaths.ResNet18 : MiniLm.ModelPath;
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(model);
        double worst = 1;
        long same = 0, total = 0;
        foreach (var set in Sets(name))
        {
            var inputs = Directory.GetFiles(set, "input_*.pb").OrderBy(f => f, StringComparer.Ordinal).Select(TensorProtoFile.Read).ToList();
            var feed = session.InputMetadata.Keys.Select((n, k) => Named(n, inputs[k])).ToList();
            using var results = session.Run(feed);
            var mine = results.First().AsEnumerable<float>().ToArray();
            var saved = Read(set, "output_0.pb").ToFloats();
            worst = Math.Min(worst, Check.Cosine(mine, saved));
            same += mine.Zip(saved).Count(p => BitConverter.SingleToInt32Bits(p.First) == BitConverter.SingleToInt32Bits(p.Second));
            total += saved.Length;
        }
        output.WriteLine($"{name}: min cosine {worst:F8} against this host ({QuantTargets.HostClass}); {100.0 * same / total:F1}% of the values bit-identical");
        Assert.True(worst > 0.99999, $"min cosine {worst}");
    }

    static Microsoft.ML.OnnxRuntime.NamedOnnxValue Named(string name, global::Onnx.TensorProto t)
    {
        var dims = t.Dims.Select(d => (int)d).ToArray();
        var value = EngineTensor.FromProto(t);
        return t.DataType == (int)OnnxDataType.Int64
            ? Microsoft.ML.OnnxRuntime.NamedOnnxValue.CreateFromTensor(name, new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<long>(value.Longs, dims))
            : Microsoft.ML.OnnxRuntime.NamedOnnxValue.CreateFromTensor(name, new Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>(value.Floats, dims));
    }
}
