using System.Runtime.InteropServices;
using PtqTools.Core.Kernels;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The native AVX2 kernels (KernelPath.NativeAvx2), forced on whatever x64 host runs the suite (every x64 CI
/// host has AVX2; VNNI is not needed): GEMM, convolution and depthwise convolution against the scalar references, in
/// both dot product forms (7-bit pairs where the weights' pairs cannot saturate vpmaddubsw, widened otherwise), with
/// leftover rows, columns, channels and pixels. On other architectures there is no native library: the tests report as skipped, with the reason.</summary>
public sealed class NativeAvx2KernelTests
{
    /// <summary>The native AVX2 path, forced whatever the host's best path is.</summary>
    static readonly KernelContext avx2 = KernelPaths.Context(KernelPath.NativeAvx2);

    static void RequireLibrary()
    {
        Assert.True(NativeKernels.Available, $"The native library is not loaded: {NativeKernels.LoadError}");
        Assert.True(NativeKernels.HasAvx2, "This x64 host reports no AVX2.");
    }

    static sbyte[] Weights(Random r, int count, int limit) => Enumerable.Range(0, count).Select(_ => (sbyte)r.Next(-limit, limit + 1)).ToArray();

    public static TheoryData<int, int, int, int, bool> GemmShapes()
    {
        var d = new TheoryData<int, int, int, int, bool>();
        foreach (var (m, k, n) in new[] { (1, 1, 1), (3, 5, 7), (4, 64, 16), (5, 67, 33), (13, 130, 50), (2, 768, 40), (64, 256, 96) })
            foreach (int limit in new[] { 64, 127 })
                foreach (bool signedA in new[] { false, true })
                    d.Add(m, k, n, limit, signedA);
        return d;
    }

    [HostTheory(HostNeed.X64)]
    [MemberData(nameof(GemmShapes))]
    public void Gemm_IsExact_InBothForms(int m, int k, int n, int limit, bool signedA)
    {
        RequireLibrary();
        var r = new Random(m * 7919 + k * 31 + n + limit);
        var b = Weights(r, k * n, limit);
        if (limit == 127 && k > 1) { b[0] = 127; b[n] = 100; }   // a pair (k 0 and 1 of column 0) that can saturate
        var zb = Enumerable.Range(0, n).Select(j => r.Next(-3, 4)).ToArray();
        if (limit == 64) Array.Clear(zb);   // the stored quads are the weights: within 7 bits
        var packed = PackedWeights.Pack(b, k, n, zb);
        Assert.Equal(limit == 64 || k == 1, packed.SevenBitPairs);
        var expected = new int[m * n];
        var actual = new int[m * n];
        if (signedA)
        {
            var a = Weights(r, m * k, 128);
            QGemm.Reference(a, -5, m, k, b, zb, n, expected);
            QGemm.Multiply(avx2, a, -5, m, packed, actual);
        }
        else
        {
            var a = Enumerable.Range(0, m * k).Select(_ => (byte)r.Next(256)).ToArray();
            QGemm.Reference(a, 131, m, k, b, zb, n, expected);
            QGemm.Multiply(avx2, a, 131, m, packed, actual);
        }
        Assert.Equal(expected, actual);
    }

    [HostFact(HostNeed.X64)]
    public void Gemm_UnsignedWeights_WithZeroPoints_AreExact()
    {
        RequireLibrary();
        var r = new Random(5);
        int m = 9, k = 37, n = 21;
        var b = Enumerable.Range(0, k * n).Select(_ => (byte)r.Next(256)).ToArray();
        var zb = Enumerable.Range(0, n).Select(_ => r.Next(100, 156)).ToArray();
        var a = Enumerable.Range(0, m * k).Select(_ => (byte)r.Next(256)).ToArray();
        var packed = PackedWeights.Pack(b, k, n, zb);
        var expected = new int[m * n];
        var actual = new int[m * n];
        QGemm.Reference(a, 7, m, k, b, zb, n, expected);
        QGemm.Multiply(avx2, a, 7, m, packed, actual);
        Assert.Equal(expected, actual);
    }

    public static TheoryData<string, int, bool> ConvShapes()
    {
        var d = new TheoryData<string, int, bool>();
        foreach (var name in Geometries.Keys)
            foreach (int limit in new[] { 64, 127 })
                foreach (bool asymmetric in new[] { false, true })
                    d.Add(name, limit, asymmetric);
        return d;
    }

    static readonly Dictionary<string, ConvGeometry> Geometries = new()
    {
        ["3x3 pad 1 (ResNet body)"] = new ConvGeometry(1, 8, 9, 11, 8, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
        ["3x3 stride 2 (downsampling)"] = new ConvGeometry(1, 6, 13, 10, 12, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
        ["7x7 stride 2 pad 3 (ResNet stem)"] = new ConvGeometry(1, 3, 20, 18, 16, 7, 7, StrideH: 2, StrideW: 2, PadTop: 3, PadLeft: 3, PadBottom: 3, PadRight: 3),
        ["1x1 stride 2 (shortcut)"] = new ConvGeometry(2, 5, 9, 9, 11, 1, 1, StrideH: 2, StrideW: 2),
        ["1x1 leftover channels"] = new ConvGeometry(1, 7, 5, 19, 5, 1, 1),
        ["grouped, dilated"] = new ConvGeometry(1, 6, 12, 12, 10, 3, 3, PadTop: 2, PadLeft: 2, PadBottom: 2, PadRight: 2, DilationH: 2, DilationW: 2, Group: 2),
        ["asymmetric pads, odd width"] = new ConvGeometry(1, 9, 7, 23, 9, 3, 2, PadTop: 0, PadLeft: 1, PadBottom: 2, PadRight: 0),
    };

    [HostTheory(HostNeed.X64)]
    [MemberData(nameof(ConvShapes))]
    public void Conv_IsExact_Int32AndRequantized(string shape, int limit, bool asymmetric)
    {
        RequireLibrary();
        var g = Geometries[shape];
        var r = new Random(shape.Length * 131 + limit + (asymmetric ? 1 : 0));
        var x = Enumerable.Range(0, g.Batch * g.Channels * g.Height * g.Width).Select(_ => (byte)r.Next(256)).ToArray();
        var w = Weights(r, g.OutChannels * g.PatchSize, limit);
        if (limit == 127) { w[0] = 127; w[g.KernelH * g.KernelW] = 100; }   // channels 0 and 1 of one tap: a pair that can saturate
        var wz = asymmetric ? Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(-4, 5)).ToArray() : new[] { 0 };
        var packed = PackedConvWeights.Pack<sbyte>(w, wz, g);
        Assert.Equal(limit == 64, packed.Native![0].SevenBitPairs);
        int outLen = g.Batch * g.OutChannels * g.OutH * g.OutW;
        var expected = new int[outLen];
        var actual = new int[outLen];
        QConv.Reference<byte, sbyte>(x, 119, w, wz, g, expected);
        QConv.Run<byte>(avx2, x, 119, packed, actual);
        Assert.Equal(expected, actual);

        var bias = Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(-2000, 2000)).ToArray();
        var mult = Enumerable.Range(0, g.OutChannels).Select(_ => (float)(r.NextDouble() * 0.004 + 0.0005)).ToArray();
        foreach (bool relu in new[] { false, true })
        {
            var yRef = new byte[outLen];
            var y = new byte[outLen];
            QConv.RequantizedReference<byte, sbyte, byte>(x, 119, w, wz, g, bias, mult, 128, relu, yRef);
            QConv.RunRequantized<byte, byte>(avx2, x, 119, packed, bias, mult, 128, relu, y);
            Assert.Equal(yRef, y);
        }
        var xs = x.Select(v => (sbyte)(v - 128)).ToArray();
        var sRef = new sbyte[outLen];
        var s = new sbyte[outLen];
        QConv.RequantizedReference<sbyte, sbyte, sbyte>(xs, -9, w, wz, g, bias, new[] { 0.002f }, 3, false, sRef);
        QConv.RunRequantized<sbyte, sbyte>(avx2, xs, -9, packed, bias, new[] { 0.002f }, 3, false, s);
        Assert.Equal(sRef, s);
    }

    public static TheoryData<int, int, int, int> DepthwiseShapes() => new()
    {
        { 3, 1, 1, 1 },   // MobileNet 3x3, stride 1
        { 3, 2, 1, 1 },   // stride 2
        { 3, 1, 2, 2 },   // dilation 2
        { 5, 2, 2, 1 },   // 5x5
    };

    [HostTheory(HostNeed.X64)]
    [MemberData(nameof(DepthwiseShapes))]
    public void DepthwiseConv_IsExact_Int32AndRequantized(int kernel, int stride, int pad, int dilation)
    {
        RequireLibrary();
        var g = new ConvGeometry(2, 10, 13, 19, 10, kernel, kernel, stride, stride, pad, pad, pad, pad, dilation, dilation, Group: 10);
        var r = new Random(kernel * 100 + stride * 10 + pad + dilation);
        var x = Enumerable.Range(0, g.Batch * g.Channels * g.Height * g.Width).Select(_ => (sbyte)r.Next(-128, 128)).ToArray();
        var w = Enumerable.Range(0, g.OutChannels * g.PatchSize).Select(_ => (byte)r.Next(256)).ToArray();
        var wz = Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(120, 136)).ToArray();
        var packed = PackedConvWeights.Pack<byte>(w, wz, g);
        int outLen = g.Batch * g.OutChannels * g.OutH * g.OutW;
        var expected = new int[outLen];
        var actual = new int[outLen];
        QConv.Reference<sbyte, byte>(x, 4, w, wz, g, expected);
        QConv.Run<sbyte>(avx2, x, 4, packed, actual);
        Assert.Equal(expected, actual);
        var bias = Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(-500, 500)).ToArray();
        var mult = Enumerable.Range(0, g.OutChannels).Select(_ => (float)(r.NextDouble() * 0.01 + 0.001)).ToArray();
        var yRef = new byte[outLen];
        var y = new byte[outLen];
        QConv.RequantizedReference<sbyte, byte, byte>(x, 4, w, wz, g, bias, mult, 100, true, yRef);
        QConv.RunRequantized<sbyte, byte>(avx2, x, 4, packed, bias, mult, 100, true, y);
        Assert.Equal(yRef, y);
    }

    [HostFact(HostNeed.X64)]
    public void KernelPath_SaysWhichFormRan()
    {
        RequireLibrary();
        var r = new Random(3);
        var seven = PackedWeights.Pack(Weights(r, 32 * 16, 64), 32, 16, new[] { 0 });
        var full = PackedWeights.Pack(Weights(r, 32 * 16, 127).Select((v, i) => i == 0 ? (sbyte)-128 : v).ToArray(), 32, 16, new[] { 0 });
        var a = new byte[4 * 32];
        var c = new int[4 * 16];
        var before = NativeKernels.Avx2Forms;
        QGemm.Multiply(avx2, a, 0, 4, seven, c); QGemm.Multiply(avx2, a, 0, 4, full, c);
        var after = NativeKernels.Avx2Forms;
        Assert.True(after.SevenBitPairs > before.SevenBitPairs);
        Assert.True(after.Widened > before.Widened);
        Assert.Contains("7-bit pairs", NativeKernels.Describe(KernelPath.NativeAvx2));
        Assert.Contains("widened", NativeKernels.Describe(KernelPath.NativeAvx2));
    }

    [Fact]
    public void PairCheck_FindsTheOnePairThatCanSaturate()
    {
        Assert.True(PackedWeights.PairsCannotSaturate(new sbyte[] { 64, 64, -64, -64, 127, 1, -128, 0 }));
        Assert.False(PackedWeights.PairsCannotSaturate(new sbyte[] { 0, 0, 100, 29 }));
        Assert.False(PackedWeights.PairsCannotSaturate(new sbyte[] { -100, -29, 0, 0 }));
        Assert.True(PackedWeights.PairsCannotSaturate(new sbyte[] { 127, -128, -128, 127 }));
    }
}
