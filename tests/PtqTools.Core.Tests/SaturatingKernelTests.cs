using PtqTools.Core.Kernels;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>The saturating-pairs GEMM and convolution (ONNX Runtime's int8 arithmetic without VNNI), on every path
/// this CPU offers, held bit for bit to their scalar references; random data, and adversarial data where nearly
/// every pair saturates.</summary>
public class SaturatingKernelTests
{
    public static TheoryData<KernelPath> Paths() => KernelPaths.Supported();

    static KernelContext On(KernelPath path) => KernelPaths.Context(path);

    static byte[] U8(Random r, int n, bool adversarial) =>
        Enumerable.Range(0, n).Select(_ => adversarial ? (byte)r.Next(200, 256) : (byte)r.Next(256)).ToArray();

    /// <summary>Weights shaped like trained ones (normal, sigma 30, clipped): mostly pairs that cannot saturate, some
    /// that can, so the native kernel's safe/risky split is exercised within blocks.</summary>
    static sbyte[] Trained(Random r, int n) =>
        Enumerable.Range(0, n).Select(_ => (sbyte)Math.Clamp(Math.Round(30 * Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble())), -127, 127)).ToArray();

    static sbyte[] S8(Random r, int n, bool adversarial) =>
        Enumerable.Range(0, n).Select(_ => adversarial ? (sbyte)(r.Next(2) == 0 ? r.Next(100, 128) : r.Next(-128, -99)) : (sbyte)r.Next(-128, 128)).ToArray();

    [Fact]
    public void Reference_IsTheDefinition()
    {
        // One row, K = 3: sat16(255*127 + 255*127) + 255*(-128) = 32767 - 32640 = 127; minus aZero * colsum.
        var a = new byte[] { 255, 255, 255 };
        var b = new sbyte[] { 127, 127, -128 };
        var c = new int[1];
        SaturatingGemm.Reference(a, 0, 1, 3, b, new[] { 0 }, 1, c);
        Assert.Equal(127, c[0]);
        SaturatingGemm.Reference(a, 10, 1, 3, b, new[] { 0 }, 1, c);
        Assert.Equal(127 - 10 * 126, c[0]);
        // A weight zero point: minus zb * rowsum(a) plus K * aZero * zb.
        SaturatingGemm.Reference(a, 10, 1, 3, b, new[] { -1 }, 1, c);
        Assert.Equal(127 - 10 * 126 + 765 - 3 * 10, c[0]);
        // The exact sum would be 255 * 126 = 32130: the first pair (64770) was clipped to 32767.
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Gemm_FastPaths_MatchTheReference(KernelPath path)
    {
        var r = new Random(7);
        foreach (bool adversarial in new[] { false, true })
            foreach (var (m, n, k) in new[] { (1, 1, 1), (1, 1, 2), (3, 17, 5), (5, 33, 64), (8, 16, 7), (1, 70, 300), (13, 48, 129), (4, 32, 3), (37, 70, 200), (64, 96, 768), (130, 40, 147) })
            {
                var a = U8(r, m * k, adversarial); var b = S8(r, k * n, adversarial);
                var zpCol = Enumerable.Range(0, n).Select(_ => r.Next(-128, 128)).ToArray();
                foreach (var (az, bz) in new[] { (0, new[] { 0 }), (255, new[] { 0 }), (131, new[] { -1 }), (r.Next(256), zpCol) })
                {
                    var want = new int[m * n];
                    SaturatingGemm.Reference(a, az, m, k, b, bz, n, want);
                    var packed = SaturatingPackedWeights.Pack(b, k, n, bz);
                    var got = new int[m * n]; SaturatingGemm.Multiply(On(path), a, az, m, packed, got);
                    Assert.True(want.AsSpan().SequenceEqual(got), $"{path} m={m} n={n} k={k} az={az} adversarial={adversarial}");
                }
            }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Gemm_TrainedWeights_MatchTheReference(KernelPath path)
    {
        var r = new Random(17);
        foreach (var (m, n, k) in new[] { (7, 33, 147), (64, 64, 576), (13, 96, 768), (5, 16, 9) })
        {
            var a = U8(r, m * k, true); var b = Trained(r, k * n);
            var want = new int[m * n];
            SaturatingGemm.Reference(a, 131, m, k, b, new[] { 0 }, n, want);
            var packed = SaturatingPackedWeights.Pack(b, k, n, new[] { 0 });
            var got = new int[m * n]; SaturatingGemm.Multiply(On(path), a, 131, m, packed, got);
            Assert.True(want.AsSpan().SequenceEqual(got), $"{path} m={m} n={n} k={k}");
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Gemm_Parallel_MatchesOneThread(KernelPath path)
    {
        var r = new Random(3);
        int m = 203, n = 77, k = 190;
        var a = U8(r, m * k, true); var b = S8(r, k * n, true);
        var packed = SaturatingPackedWeights.Pack(b, k, n, new[] { 0 });
        var want = new int[m * n];
        SaturatingGemm.Reference(a, 128, m, k, b, new[] { 0 }, n, want);
        foreach (int threads in new[] { 1, 2, 3 })
        {
            var got = new int[m * n];
            SaturatingGemm.Multiply(On(path) with { ParallelThreshold = 1 << 12, MaxThreads = threads }, a, 128, m, packed, got);
            Assert.Equal(want, got);
        }
    }

    [Fact]
    public void NativeLibrary_ServesTheSaturatingKernel_WhereItRunsVnni()
    {
        // A stale native library (before version 4) would silently leave the NativeVnni path on the managed kernel.
        Assert.Equal(NativeKernels.HasVnni, NativeKernels.HasSaturatingPairs);
    }

    [Fact]
    public void CanSaturate_IsExactlyThePairsSomeCodesSaturate()
    {
        // The native kernel sums the other pairs exactly (vpdpbusd): that is only right if none of them can saturate.
        for (int w0 = -128; w0 < 128; w0++)
            for (int w1 = -128; w1< 128; w1++)
            {
                int hi = 255 * (Math.Max(w0, 0) + Math.Max(w1, 0)), lo = 255 * (Math.Min(w0, 0) + Math.Min(w1, 0));
                Assert.Equal(hi > short.MaxValue || lo < short.MinValue, SaturatingPackedWeights.CanSaturate(w0, w1));
            }
    }

    [Fact]
    public void Adversarial_Data_Saturates()
    {
        // Guard for the tests above: the adversarial data really differ from the exact sums.
        var r = new Random(11);
        int m = 8, n = 16, k = 64;
        var a = U8(r, m * k, true); var b = S8(r, k * n, true);
        var sat = new int[m * n]; var exact = new int[m * n];
        SaturatingGemm.Reference(a, 0, m, k, b, new[] { 0 }, n, sat);
        QGemm.Reference(a, 0, m, k, b, new[] { 0 }, n, exact);
        Assert.True(sat.Zip(exact).Count(p => p.First != p.Second) > m * n / 2);
    }

    [Fact]
    public void NoSaturation_EqualsTheExactGemm()
    {
        // Seven-bit weights cannot saturate a pair: the saturating form is then the exact product.
        var r = new Random(5);
        int m = 9, n = 21, k = 77;
        var a = U8(r, m * k, false);
        var b = Enumerable.Range(0, k * n).Select(_ => (sbyte)r.Next(-64, 64)).ToArray();
        var sat = new int[m * n]; var exact = new int[m * n];
        SaturatingGemm.Reference(a, 37, m, k, b, new[] { 3 }, n, sat);
        QGemm.Reference(a, 37, m, k, b, new[] { 3 }, n, exact);
        Assert.Equal(exact, sat);
    }

    public static TheoryData<ConvGeometry> Shapes() => new()
    {
        new ConvGeometry(1, 3, 12, 11, 16, 7, 7, 2, 2, 3, 3, 3, 3),          // stem-like, odd channels
        new ConvGeometry(2, 8, 9, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1),
        new ConvGeometry(1, 5, 8, 7, 6, 3, 2, 1, 2, 0, 1, 1, 0, 2, 1),        // odd channels, dilation, asymmetric pads
        new ConvGeometry(1, 6, 7, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1, Group: 2),    // grouped, 3 channels per group
        new ConvGeometry(1, 16, 6, 6, 24, 1, 1, 2, 2),                        // pointwise, strided
        new ConvGeometry(2, 32, 7, 7, 16, 3, 3, 1, 1, 1, 1, 1, 1),           // 16 x 16 transposes plus edges
        new ConvGeometry(1, 48, 8, 8, 32, 1, 1),                              // pointwise, read in place
        new ConvGeometry(1, 4, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, Group: 4),    // depthwise shape (kernel is general)
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Conv_FastPaths_MatchTheReference(ConvGeometry g)
    {
        var r = new Random(g.GetHashCode());
        foreach (bool adversarial in new[] { false, true })
        {
            var x = U8(r, g.Batch * g.Channels * g.Height * g.Width, adversarial);
            var w = S8(r, g.OutChannels * g.PatchSize, adversarial);
            var zpPerChannel = Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(-128, 128)).ToArray();
            foreach (var (xz, wz) in new[] { (0, new[] { 0 }), (128, new[] { 0 }), (201, new[] { -1 }), (r.Next(256), zpPerChannel) })
                foreach (var pairing in new[] { ConvPairing.FlatK, ConvPairing.PerKernelPosition })
                {
                    var want = new int[g.Batch * g.OutChannels * g.OutH * g.OutW];
                    SaturatingConv.Reference(x, xz, w, wz, g, pairing, want);
                    var packed = SaturatingConvWeights.Pack(w, wz, g, pairing);
                    foreach (var path in KernelDispatch.Supported())
                    {
                        var got = new int[want.Length]; SaturatingConv.Run(On(path), x, xz, packed, got);
                        Assert.True(want.AsSpan().SequenceEqual(got), $"{path} {g} xz={xz} {pairing} adversarial={adversarial}");
                        // The bias folded into the correction is the bias added afterwards.
                        var bias = Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(-100000, 100000)).ToArray();
                        var biased = new int[want.Length]; SaturatingConv.Run(On(path), x, xz, packed, biased, bias);
                        int pixels = g.OutH * g.OutW;
                        for (int i = 0; i < want.Length; i++) Assert.Equal(want[i] + bias[i / pixels % g.OutChannels], biased[i]);
                    }
                }
        }
    }

    [Fact]
    public void Conv_Pairings_AgreeWhenChannelsAreEven_AndDifferWhenOdd()
    {
        var r = new Random(2);
        var even = new ConvGeometry(1, 4, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1);
        var odd = new ConvGeometry(1, 3, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1);
        foreach (var (g, same) in new[] { (even, true), (odd, false) })
        {
            var x = U8(r, g.Channels * 36, true); var w = S8(r, g.OutChannels * g.PatchSize, true);
            var flat = new int[g.OutChannels * 36]; var per = new int[flat.Length];
            SaturatingConv.Reference(x, 0, w, new[] { 0 }, g, ConvPairing.FlatK, flat);
            SaturatingConv.Reference(x, 0, w, new[] { 0 }, g, ConvPairing.PerKernelPosition, per);
            Assert.Equal(same, flat.AsSpan().SequenceEqual(per));
        }
    }
}
