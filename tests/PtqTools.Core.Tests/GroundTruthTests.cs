using PtqTools.Core.Data;
using PtqTools.Core.Engine;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;
using Xunit;
using Xunit.Abstractions;

namespace PtqTools.Core.Tests;

/// <summary>
/// The engine emulating a CPU without VNNI against what ONNX Runtime 1.31.1 really computed on one (an AMD Zen with
/// AVX2 only): shared/ground-truth/ort-1.31.1-avx2 beside the repository (see its README). Every output element must
/// be bit-identical; the exact arithmetic must differ where saturation happens, which shows the comparison can fail.
/// </summary>
public class GroundTruthTests
{
    readonly ITestOutputHelper _out;
    public GroundTruthTests(ITestOutputHelper output) { _out = output; }

    /// <summary>&lt;folder holding PtqPowerShell.sln&gt;/../shared/ground-truth/ort-1.31.1-avx2; missing is a failure.</summary>
    public static string Folder => TestPaths.GroundTruth;

    sealed record CaseResult(int Sets, long Elements, long Differing, string FirstDifference);

    /// <summary>Runs every test_data_set_K of a case and counts the output elements whose bits differ.</summary>
    static CaseResult Compare(string name, EngineOptions options)
    {
        var dir = Path.Combine(Folder, name);
        if (!Directory.Exists(dir)) throw new InvalidOperationException($"The ground-truth case '{dir}' is missing.");
        using var engine = new IntegerEngine(OnnxModelIO.Load(Path.Combine(dir, "model.onnx")), options, name);
        int sets = 0; long elements = 0, differing = 0; string first = "";
        foreach (var set in Directory.GetDirectories(dir, "test_data_set_*").OrderBy(d => d, StringComparer.Ordinal))
        {
            sets++;
            var feed = new Dictionary<string, EngineTensor>(StringComparer.Ordinal);
            for (int j = 0; j < engine.Inputs.Count; j++)
                feed[engine.Inputs[j]] = EngineTensor.FromProto(TensorProtoFile.Read(Path.Combine(set, $"input_{j}.pb")));
            var got = engine.Run(feed);
            for (int j = 0; j < engine.Outputs.Count; j++)
            {
                var want = EngineTensor.FromProto(TensorProtoFile.Read(Path.Combine(set, $"output_{j}.pb")));
                var have = got[engine.Outputs[j]];
                Assert.Equal(want.Type, have.Type);
                Assert.Equal(want.Dims, have.Dims);
                var w = Bits(want); var h = Bits(have);
                elements += w.Length;
                for (int i = 0; i < w.Length; i++)
                    if (w[i] != h[i])
                    {
                        if (differing++ == 0) first = $"{Path.GetFileName(set)} output {j} element {i}: ONNX Runtime {Show(want, i)}, engine {Show(have, i)}";
                    }
            }
        }
        Assert.True(sets > 0, $"'{dir}' holds no test_data_set_*.");
        return new CaseResult(sets, elements, differing, first);
    }

    static long[] Bits(EngineTensor t) => t.Data switch
    {
        float[] f => f.Select(v => (long)BitConverter.SingleToInt32Bits(v)).ToArray(),
        byte[] when t.IsUInt8 => t.Bytes.Select(v => (long)v).ToArray(),
        sbyte[] when t.IsInt8 => t.SBytes.Select(v => (long)v).ToArray(),
        int[] v => v.Select(e => (long)e).ToArray(),
        long[] l => l,
        _ => throw new InvalidOperationException($"Unexpected output type {t.Type}."),
    };

    static string Show(EngineTensor t, int i) => t.Data switch
    {
        float[] f => f[i].ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        _ => Bits(t)[i].ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>The int8 cases whose ops the engine runs.</summary>
    public static TheoryData<string> EngineCases() => new()
    {
        "qlinearconv_3x3_c64", "qdqconv_3x3_c64", "qlinearconv_stem_7x7_c3", "qdqconv_stem_7x7_c3",
        "qlinearmatmul_128x768x768", "matmulinteger_128x768x768", "dynamic_matmul_128x768x768",
        "resnet18_int8_default", "resnet18_int8_reduce",
    };

    /// <summary>The cases whose full-range int8 weights saturate on that CPU: the exact sums must not reproduce them.</summary>
    public static TheoryData<string> SaturatingCases() => new()
    {
        "qlinearconv_3x3_c64", "qdqconv_3x3_c64", "qlinearconv_stem_7x7_c3", "qdqconv_stem_7x7_c3",
        "qlinearmatmul_128x768x768", "matmulinteger_128x768x768", "dynamic_matmul_128x768x768",
        "resnet18_int8_default",
    };

    [Theory]
    [MemberData(nameof(EngineCases))]
    public void SaturatingPairs_ReproducesOrtOnAvx2_BitForBit(string name)
    {
        var r = Compare(name, EngineOptions.Emulating(QuantTarget.Avx2));
        _out.WriteLine($"{name}: {r.Sets} sets, {r.Elements} elements, {r.Differing} differ. {r.FirstDifference}");
        Assert.True(r.Differing == 0, $"{name}: {r.Differing} of {r.Elements} output elements differ from ONNX Runtime on AVX2; first: {r.FirstDifference}");
    }

    [Theory]
    [MemberData(nameof(SaturatingCases))]
    public void ExactSums_DoNotReproduceOrtOnAvx2(string name)
    {
        var r = Compare(name, EngineOptions.Default);
        _out.WriteLine($"{name}: {r.Sets} sets, {r.Elements} elements, {r.Differing} differ with exact sums ({100.0 * r.Differing / r.Elements:F1}%).");
        Assert.True(r.Differing > 0, $"{name}: the exact arithmetic reproduced all {r.Elements} elements; the case cannot tell saturation apart.");
    }

    public static TheoryData<KernelPath> Paths() => KernelPaths.Supported();

    /// <summary>What an AVX2-only host would run (the Avx2 path), and every other path here, reproduces ONNX Runtime too.</summary>
    [Theory]
    [MemberData(nameof(Paths))]
    public void SaturatingPairs_OnEveryKernelPath_ReproducesOrt(KernelPath path)
    {
        foreach (var name in new[] { "qlinearconv_3x3_c64", "qdqconv_stem_7x7_c3", "matmulinteger_128x768x768" })
        {
            var r = Compare(name, EngineOptions.Emulating(QuantTarget.Avx2) with { Kernels = KernelPaths.Context(path) });
            Assert.True(r.Differing == 0, $"{path} {name}: {r.Differing} of {r.Elements} differ; first: {r.FirstDifference}");
        }
    }

    [Fact]
    public void ReducedRangeWeights_NeverSaturate_SoExactSumsAgreeToo()
    {
        // 7-bit weights: |a * w + a' * w'| <= 2 * 255 * 64 = 32640 fits int16, so no pair saturates.
        var r = Compare("resnet18_int8_reduce", EngineOptions.Default);
        Assert.True(r.Differing == 0, $"{r.Differing} of {r.Elements} differ; first: {r.FirstDifference}");
    }

    /// <summary>The 3-channel stem (QLinearConv 7x7 stride 2, symmetric weights) on that CPU: ONNX Runtime cannot take
    /// MLAS's symmetric conv kernel (it needs input channels in multiples of 4), so im2col + QGEMM pairs K flat,
    /// straddling kernel positions. Pairing per kernel position (channels padded to even) does not reproduce it.</summary>
    [Fact]
    public void Stem_WithThreeChannels_PairsKFlat_NotPerKernelPosition()
    {
        var dir = Path.Combine(Folder, "qlinearconv_stem_7x7_c3");
        var model = OnnxModelIO.Load(Path.Combine(dir, "model.onnx"));
        var node = model.Graph.Node.Single(n => n.OpType == "QLinearConv");
        var init = model.Graph.Initializer.ToDictionary(t => t.Name, EngineTensor.FromProto);
        EngineTensor Arg(int i) => init[node.Input[i]];
        long[] Ints(string name) => node.Attribute.Single(a => a.Name == name).Ints.ToArray();
        var x = EngineTensor.FromProto(TensorProtoFile.Read(Path.Combine(dir, "test_data_set_0", "input_0.pb")));
        var want = EngineTensor.FromProto(TensorProtoFile.Read(Path.Combine(dir, "test_data_set_0", "output_0.pb")));
        var w = Arg(3);
        var k = Ints("kernel_shape"); var st = Ints("strides"); var pads = Ints("pads");
        var g = new ConvGeometry((int)x.Dims[0], (int)x.Dims[1], (int)x.Dims[2], (int)x.Dims[3], (int)w.Dims[0], (int)k[0], (int)k[1],
            (int)st[0], (int)st[1], (int)pads[0], (int)pads[1], (int)pads[2], (int)pads[3]);
        Assert.Equal(3, g.Channels);
        Assert.Equal(ConvPairing.FlatK, EngineOpsPairing(g));
        int xz = Arg(2).IntAt(0), yz = Arg(7).IntAt(0);
        float xs = Arg(1).FloatAt(0), ys = Arg(6).FloatAt(0);
        var ws = Arg(4).Floats;
        var mult = Enumerable.Range(0, g.OutChannels).Select(c => xs * ws[ws.Length == 1 ? 0 : c] / ys).ToArray();
        var bias = node.Input.Count > 8 ? Arg(8).Ints : new int[g.OutChannels];
        long Differing(ConvPairing pairing)
        {
            var acc = new int[want.Length];
            SaturatingConv.Reference(x.Bytes, xz, w.SBytes, new[] { 0 }, g, pairing, acc);
            int pixels = g.OutH * g.OutW;
            for (int i = 0; i < acc.Length; i++) acc[i] += bias[i / pixels % g.OutChannels];
            var y = new byte[acc.Length];
            QuantizeKernels.RequantizeReference<byte>(acc, mult, yz, pixels, y);
            return y.Zip(want.Bytes).Count(p => p.First != p.Second);
        }
        long flat = Differing(ConvPairing.FlatK), perPosition = Differing(ConvPairing.PerKernelPosition);
        _out.WriteLine($"stem set 0: flat pairs differ on {flat}, per-position pairs on {perPosition} of {want.Length}");
        Assert.Equal(0, flat);
        Assert.True(perPosition > 0);
    }

    static ConvPairing EngineOpsPairing(ConvGeometry g) => EngineOps.OrtConvPairing(g, new[] { 0 });
}
