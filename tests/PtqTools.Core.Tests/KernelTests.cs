using PtqTools.Core.Kernels;
using PtqTools.Core.Quantization;
using Xunit;

namespace PtqTools.Core.Tests;

/// <summary>Every fast kernel, on every path this CPU (and the native library, when built) offers, held exactly to
/// its scalar reference, on random data that includes the extremes of each type.</summary>
public class KernelTests
{
    public static TheoryData<KernelPath> Paths() => KernelPaths.Supported();

    static KernelContext On(KernelPath path) => KernelPaths.Context(path);

    static byte[] U8(Random r, int n) { var a = new byte[n]; r.NextBytes(a); for (int i = 0; i < Math.Min(n, 4); i++) a[i] = (byte)(i % 2 == 0 ? 255 : 0); return a; }
    static sbyte[] S8(Random r, int n) { var a = new sbyte[n]; for (int i = 0; i < n; i++) a[i] = (sbyte)r.Next(-128, 128); for (int i = 0; i < Math.Min(n, 4); i++) a[i] = (sbyte)(i % 2 == 0 ? -128 : 127); return a; }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Gemm_U8xS8_And_S8xS8_MatchTheReference(KernelPath path)
    {
        var r = new Random(1);
        foreach (var (m, n, k) in new[] { (1, 1, 1), (3, 17, 5), (5, 33, 64), (8, 16, 7), (1, 70, 300), (13, 48, 129), (11, 112, 40), (22, 40, 17), (37, 70, 200), (16, 16, 64), (48, 33, 130) })
        {
            var a = U8(r, m * k); var sa = S8(r, m * k); var b = S8(r, k * n); var ub = U8(r, k * n);
            var zpCols = Enumerable.Range(0, n).Select(_ => r.Next(-128, 128)).ToArray();
            int az = 255;   // the extremes: (0 - 255) * (127 - -128) stays exact
            var expected = new int[m * n]; var actual = new int[m * n];
            QGemm.Reference<byte, sbyte>(a, az, m, k, b, zpCols, n, expected);
            QGemm.Multiply(On(path), a, az, m, PackedWeights.Pack(b, k, n, zpCols), actual);
            Assert.Equal(expected, actual);

            QGemm.Reference<sbyte, sbyte>(sa, -128, m, k, b, new[] { 127 }, n, expected);
            QGemm.Multiply(On(path), sa, -128, m, PackedWeights.Pack(b, k, n, new[] { 127 }), actual);
            Assert.Equal(expected, actual);

            QGemm.Reference<byte, byte>(a, 3, m, k, ub, new[] { 200 }, n, expected);
            QGemm.Multiply(On(path), a, 3, m, PackedWeights.Pack(ub, k, n, new[] { 200 }), actual);
            Assert.Equal(expected, actual);
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Gemm_LargeShape_UsesThreadsAndMatchesTheReference(KernelPath path)
    {
        var r = new Random(2);
        int m = 64, n = 96, k = 300;
        var a = U8(r, m * k); var b = S8(r, k * n);
        var expected = new int[m * n]; var actual = new int[m * n];
        QGemm.Reference<byte, sbyte>(a, 128, m, k, b, new[] { 0 }, n, expected);
        QGemm.Multiply(On(path) with { ParallelThreshold = 1 << 12, MaxThreads = 2 }, a, 128, m, PackedWeights.Pack(b, k, n, new[] { 0 }), actual);
        Assert.Equal(expected, actual);
    }

    /// <summary>Large GEMMs split over threads (by strips of 32 rows, or by column-block pairs when there are fewer
    /// strips than threads), on shapes with partial strips, partial blocks, K off the 64 grid, signed A and per-column
    /// weight zero points: every split gives the reference's bits, and the same bits as one thread.</summary>
    [Theory]
    [MemberData(nameof(Paths))]
    public void Gemm_SplitOverThreads_IsBitIdenticalToOneThread(KernelPath path)
    {
        var r = new Random(7);
        foreach (var (m, n, k) in new[] { (100, 200, 300), (20, 150, 70), (16, 40, 64), (64, 33, 129), (97, 16, 1000) })
        {
            var sa = S8(r, m * k); var b = S8(r, k * n);
            var zp = Enumerable.Range(0, n).Select(_ => r.Next(-128, 128)).ToArray();
            var packed = PackedWeights.Pack(b, k, n, zp);
            var expected = new int[m * n];
            QGemm.Reference<sbyte, sbyte>(sa, -3, m, k, b, zp, n, expected);
            foreach (var context in KernelPaths.Contexts(path))
                foreach (int threads in new[] { 1, 2, 3 })
                {
                    var actual = new int[m * n];
                    QGemm.Multiply(context with { ParallelThreshold = 1 << 10, MaxThreads = threads }, sa, -3, m, packed, actual);
                    Assert.True(expected.AsSpan().SequenceEqual(actual), $"{m}x{n}x{k} on {threads} thread(s) ({context}) differs from the reference");
                }
        }
    }

    /// <summary>The register tiles' edges: rows 1 to 13 and 25 (every tail of the 6- and 8-row tiles, M = 1 included),
    /// N from under one 16-column block to 7 blocks (a partial last block, panels of 4, 3 and 2 blocks, 5 blocks split
    /// 3 + 2), K = 1, 3 and 147 to 150 (a partial last quad, as the ResNet18 stem's 147); unsigned and signed A, one and
    /// per-column weight zero points; then shapes whose rows span more than one of the native VNNI kernel's row chunks.
    /// Every result equals the scalar reference.</summary>
    [Theory]
    [MemberData(nameof(Paths))]
    public void Gemm_EveryTileEdge_MatchesTheReference(KernelPath path)
    {
        var r = new Random(11);
        var shapes = new List<(int M, int N, int K)>();
        foreach (int m in new[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 25 })
            foreach (int n in new[] { 1, 15, 16, 17, 48, 64, 65, 80, 112 })
                foreach (int k in new[] { 1, 3, 147, 150 })
                    shapes.Add((m, n, k));
        shapes.AddRange(new[] { (150, 70, 3000), (200, 16, 4100), (130, 64, 147) });
        int i = 0;
        foreach (var (m, n, k) in shapes)
        {
            bool signedA = i % 2 == 1, perColumn = i++ % 3 != 0;
            var b = S8(r, k * n);
            int[] zp = perColumn ? Enumerable.Range(0, n).Select(_ => r.Next(-128, 128)).ToArray() : new[] { 0 };
            var packed = PackedWeights.Pack(b, k, n, zp);
            var expected = new int[m * n]; var actual = new int[m * n];
            if (signedA)
            {
                var sa = S8(r, m * k);
                QGemm.Reference<sbyte, sbyte>(sa, -5, m, k, b, zp, n, expected);
                QGemm.Multiply(On(path), sa, -5, m, packed, actual);
            }
            else
            {
                var a = U8(r, m * k);
                QGemm.Reference<byte, sbyte>(a, 131, m, k, b, zp, n, expected);
                QGemm.Multiply(On(path), a, 131, m, packed, actual);
            }
            Assert.True(expected.AsSpan().SequenceEqual(actual), $"{m}x{n}x{k} (signed A {signedA}, per-column zero points {perColumn}) on {path} differs from the reference");
        }
    }

    static unsafe void RecordThread(void* state, int part)
    {
        var ids = (int*)state;
        ids[part] = Environment.CurrentManagedThreadId;
        if (part == 2) throw new InvalidOperationException("part 2 failed");
        System.Threading.Thread.Sleep(20);   // keeps the part busy long enough that no other thread could take a second part
    }

    /// <summary>KernelWorkers gives every part its own thread (the caller runs part 0), passes a worker's exception to the
    /// caller, and still runs every part when called from several threads at once.</summary>
    [Fact]
    public unsafe void KernelWorkers_RunEachPartOnItsOwnThread()
    {
        var ids = stackalloc int[3];
        var ex = Assert.Throws<AggregateException>(() => KernelWorkers.Run(3, &RecordThread, ids));
        Assert.Equal("part 2 failed", ex.InnerException!.Message);
        Assert.Equal(Environment.CurrentManagedThreadId, ids[0]);
        Assert.Equal(3, new HashSet<int> { ids[0], ids[1], ids[2] }.Count);
        // Concurrent callers: every part of every call runs (on the workers or, when they are taken, on the caller).
        var results = new int[8][];
        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 4 }, c =>
        {
            var mine = new int[2];
            fixed (int* p = mine) KernelWorkers.Run(2, &RecordThread, p);
            results[c] = mine;
        });
        Assert.All(results, r => Assert.True(r[0] != 0 && r[1] != 0));
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Conv_GroupedDepthwiseStridedPaddedDilated_MatchesTheReference(KernelPath path)
    {
        var r = new Random(3);
        var shapes = new[]
        {
            new ConvGeometry(1, 3, 9, 11, 5, 3, 3),
            new ConvGeometry(2, 4, 8, 8, 6, 3, 2, StrideH: 2, StrideW: 1, PadTop: 1, PadLeft: 2, PadBottom: 0, PadRight: 1),
            new ConvGeometry(1, 6, 10, 10, 4, 3, 3, DilationH: 2, DilationW: 3, PadTop: 2, PadLeft: 2, PadBottom: 2, PadRight: 2, Group: 2),
            new ConvGeometry(1, 8, 7, 7, 8, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1, Group: 8),
            new ConvGeometry(1, 4, 5, 9, 8, 1, 1),
        };
        foreach (var g in shapes)
        {
            var x = U8(r, g.Batch * g.Channels * g.Height * g.Width);
            var w = S8(r, g.OutChannels * g.PatchSize);
            var wz = Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(-5, 5)).ToArray();
            int outLen = g.Batch * g.OutChannels * g.OutH * g.OutW;
            var expected = new int[outLen]; var actual = new int[outLen];
            QConv.Reference<byte, sbyte>(x, 97, w, wz, g, expected);
            QConv.Run<byte>(On(path), x, 97, PackedConvWeights.Pack<sbyte>(w, wz, g), actual);
            Assert.Equal(expected, actual);
        }
    }

    /// <summary>Shapes that reach every branch of the native direct convolution: stride 1 over "wide" rows narrower
    /// than a 16-pixel block, several 64-pixel tiles, strides (gathered tiles), dilations, groups, channels that do not
    /// fill a quad, output channels that do not fill a group of 4, and a depthwise one (managed).</summary>
    static readonly ConvGeometry[] FusedShapes =
    {
        new(1, 3, 19, 23, 5, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
        new(2, 9, 5, 6, 7, 3, 3, PadTop: 1, PadLeft: 0, PadBottom: 2, PadRight: 1),
        new(1, 16, 14, 14, 12, 1, 1),
        new(1, 8, 15, 17, 6, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
        new(1, 4, 12, 30, 4, 7, 7, StrideH: 2, StrideW: 3, PadTop: 3, PadLeft: 3, PadBottom: 3, PadRight: 3),
        new(1, 8, 16, 16, 8, 1, 1, StrideH: 2, StrideW: 2),
        new(1, 6, 10, 10, 10, 3, 3, DilationH: 2, DilationW: 3, PadTop: 2, PadLeft: 2, PadBottom: 2, PadRight: 2, Group: 2),
        new(1, 6, 9, 9, 6, 3, 3, StrideH: 1, StrideW: 2, Group: 3),
        new(1, 8, 7, 7, 8, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1, Group: 8),
        // 64+ channels per group: with symmetric weights (odd positions) the AMX kernel where the CPU has it.
        new(1, 64, 9, 11, 40, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
        new(2, 130, 5, 7, 70, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1, DilationH: 2),
        new(1, 70, 12, 12, 33, 1, 1),
        new(1, 128, 6, 6, 64, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1, Group: 2),
        new(1, 72, 10, 10, 40, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
        new(1, 64, 11, 13, 36, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
        new(1, 64, 14, 14, 50, 1, 1, StrideH: 2, StrideW: 2),
    };

    /// <summary>Outputs spanning 4 blocks of 16 pixels (7x7 with its pad columns, as ResNet18's last stage; 5x9; 8x8 by
    /// stride 2), which the native VNNI kernel runs as two tiles of 32 pixels, on one and two threads (split by tiles
    /// and by channels), with and without weight zero points, int32 and requantized: equal to the references.</summary>
    [Theory]
    [MemberData(nameof(Paths))]
    public void Conv_FourBlockOutputs_MatchTheReference(KernelPath path)
    {
        var r = new Random(13);
        var shapes = new[]
        {
            new ConvGeometry(1, 40, 7, 7, 24, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
            new ConvGeometry(1, 9, 5, 9, 17, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
            new ConvGeometry(1, 8, 16, 16, 8, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
        };
        int i = 0;
        foreach (var g in shapes)
            foreach (int threads in new[] { 1, 2 })
            {
                var x = U8(r, g.Channels * g.Height * g.Width); var w = S8(r, g.OutChannels * g.PatchSize);
                var wz = i++ % 2 == 0 ? new int[g.OutChannels] : Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(-5, 5)).ToArray();
                var context = On(path) with { ParallelThreshold = 1, MaxThreads = threads };
                int outLen = g.OutChannels * g.OutH * g.OutW;
                var expected = new int[outLen]; var actual = new int[outLen];
                var packed = PackedConvWeights.Pack<sbyte>(w, wz, g);
                QConv.Reference<byte, sbyte>(x, 101, w, wz, g, expected);
                QConv.Run<byte>(context, x, 101, packed, actual);
                Assert.True(expected.AsSpan().SequenceEqual(actual), $"{g} on {path}, {threads} thread(s)");
                var bias = Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(-3000, 3000)).ToArray();
                var mult = Enumerable.Range(0, g.OutChannels).Select(j => 0.001f + j * 1e-4f).ToArray();
                var e = new byte[outLen]; var y = new byte[outLen];
                QConv.RequantizedReference<byte, sbyte, byte>(x, 101, w, wz, g, bias, mult, 128, false, e);
                QConv.RunRequantized<byte, byte>(context, x, 101, packed, bias, mult, 128, false, y);
                Assert.True(e.SequenceEqual(y), $"{g} requantized on {path}, {threads} thread(s)");
            }
    }

    /// <summary>Convolutions with 1 to 3 input channels, where the native VNNI kernel reads quads of 4 taps of one channel
    /// instead of mostly padded channel quads (the image stem): kernel widths 2, 3, 5 and 7 (a partial last tap quad),
    /// column dilation, strides 1 and 2, uneven pads, two images and two groups, signed input, with and without weight
    /// zero points; int32 and requantized outputs. Every output equals the scalar reference.</summary>
    [Theory]
    [MemberData(nameof(Paths))]
    public void Conv_FewChannels_MatchTheReference(KernelPath path)
    {
        var r = new Random(9);
        var shapes = new[]
        {
            new ConvGeometry(1, 3, 40, 44, 16, 7, 7, StrideH: 2, StrideW: 2, PadTop: 3, PadLeft: 3, PadBottom: 3, PadRight: 3),
            new ConvGeometry(1, 1, 20, 37, 8, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
            new ConvGeometry(2, 2, 15, 30, 9, 3, 5, StrideW: 2, PadTop: 0, PadLeft: 2, PadBottom: 1, PadRight: 0, DilationW: 2),
            new ConvGeometry(1, 3, 11, 50, 5, 1, 7, PadLeft: 3, PadRight: 3),
            new ConvGeometry(1, 2, 12, 13, 4, 2, 2, StrideH: 2, StrideW: 2),
            new ConvGeometry(1, 4, 18, 21, 6, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1, Group: 2),
            new ConvGeometry(1, 3, 9, 70, 8, 7, 7, StrideH: 1, StrideW: 2, PadTop: 3, PadLeft: 1, PadBottom: 0, PadRight: 3, DilationH: 1, DilationW: 3),
        };
        int i = 0;
        foreach (var g in shapes)
        {
            var w = S8(r, g.OutChannels * g.PatchSize);
            var wz = i % 2 == 0 ? new int[g.OutChannels] : Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(-5, 5)).ToArray();
            int outLen = g.Batch * g.OutChannels * g.OutH * g.OutW, inLen = g.Batch * g.Channels * g.Height * g.Width;
            var expected = new int[outLen]; var actual = new int[outLen];
            var packed = PackedConvWeights.Pack<sbyte>(w, wz, g);
            bool signedX = i++ % 3 == 1;
            var ux = U8(r, inLen); var sx = S8(r, inLen);
            if (signedX) { QConv.Reference<sbyte, sbyte>(sx, -7, w, wz, g, expected); QConv.Run<sbyte>(On(path), sx, -7, packed, actual); }
            else { QConv.Reference<byte, sbyte>(ux, 97, w, wz, g, expected); QConv.Run<byte>(On(path), ux, 97, packed, actual); }
            Assert.True(expected.AsSpan().SequenceEqual(actual), $"{g} on {path} differs from the reference");
            // requantized in the same pass, and unsigned weights with a zero point (stored minus 128)
            var bias = Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(-3000, 3000)).ToArray();
            var mult = Enumerable.Range(0, g.OutChannels).Select(j => 0.002f + j * 1e-4f).ToArray();
            var e = new byte[outLen]; var y = new byte[outLen];
            QConv.RequantizedReference<byte, sbyte, byte>(ux, 97, w, wz, g, bias, mult, 128, false, e);
            QConv.RunRequantized<byte, byte>(On(path), ux, 97, packed, bias, mult, 128, false, y);
            Assert.True(e.SequenceEqual(y), $"{g} requantized on {path} differs from the reference");
            var uw = U8(r, g.OutChannels * g.PatchSize);
            QConv.Reference<byte, byte>(ux, 97, uw, new[] { 119 }, g, expected);
            QConv.Run<byte>(On(path), ux, 97, PackedConvWeights.Pack<byte>(uw, new[] { 119 }, g), actual);
            Assert.True(expected.AsSpan().SequenceEqual(actual), $"{g} (u8 weights) on {path} differs from the reference");
        }
    }

    /// <summary>Column stride 2, where the native VNNI convolution reads a block of 16 pixels as the even dwords of the
    /// packed input: output rows of 16 pixels or more (a block in one row), of 8 to 15 (a block running into the next
    /// row), of fewer (gathered), a partial last block, dilation, uneven pads, two images, signed input, with and
    /// without weight zero points. Every output equals the scalar reference.</summary>
    [Theory]
    [MemberData(nameof(Paths))]
    public void Conv_StrideTwo_EveryBlockLayout_MatchesTheReference(KernelPath path)
    {
        var r = new Random(5);
        var shapes = new[]
        {
            new ConvGeometry(1, 3, 37, 40, 8, 7, 7, StrideH: 2, StrideW: 2, PadTop: 3, PadLeft: 3, PadBottom: 3, PadRight: 3),
            new ConvGeometry(1, 5, 30, 64, 9, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
            new ConvGeometry(1, 4, 21, 23, 16, 1, 1, StrideH: 2, StrideW: 2),
            new ConvGeometry(2, 6, 26, 50, 8, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1),
            new ConvGeometry(1, 3, 17, 13, 8, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1, DilationH: 2, DilationW: 2),
            new ConvGeometry(1, 7, 19, 35, 12, 3, 3, StrideH: 1, StrideW: 2, PadTop: 0, PadLeft: 2, PadBottom: 1, PadRight: 0, DilationW: 3),
            new ConvGeometry(1, 64, 16, 16, 16, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
        };
        int i = 0;
        foreach (var g in shapes)
        {
            var w = S8(r, g.OutChannels * g.PatchSize);
            var wz = i % 2 == 0 ? new int[g.OutChannels] : Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(-5, 5)).ToArray();
            int outLen = g.Batch * g.OutChannels * g.OutH * g.OutW, inLen = g.Batch * g.Channels * g.Height * g.Width;
            var expected = new int[outLen]; var actual = new int[outLen];
            var packed = PackedConvWeights.Pack<sbyte>(w, wz, g);
            if (i++ % 3 == 2)
            {
                var x = S8(r, inLen);
                QConv.Reference<sbyte, sbyte>(x, -7, w, wz, g, expected);
                QConv.Run<sbyte>(On(path), x, -7, packed, actual);
            }
            else
            {
                var x = U8(r, inLen);
                QConv.Reference<byte, sbyte>(x, 97, w, wz, g, expected);
                QConv.Run<byte>(On(path), x, 97, packed, actual);
            }
            Assert.True(expected.AsSpan().SequenceEqual(actual), $"{g} on {path} differs from the reference");
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Conv_FusedRequantize_MatchesTheReference(KernelPath path)
    {
        var r = new Random(31);
        int i = 0;
        foreach (var g in FusedShapes)
        {
            i++;
            int inLen = g.Batch * g.Channels * g.Height * g.Width, outLen = g.Batch * g.OutChannels * g.OutH * g.OutW;
            var bias = Enumerable.Range(0, g.OutChannels).Select(_ => r.Next(-20000, 20000)).ToArray();
            var mult = Enumerable.Range(0, g.OutChannels).Select(_ => (float)(r.NextDouble() * 2e-3 + 1e-5)).ToArray();
            var wz = Enumerable.Range(0, g.OutChannels).Select(_ => i % 2 == 0 ? r.Next(-5, 5) : 0).ToArray();
            bool relu = i % 3 == 0;
            // u8 input, s8 weights, u8 output (the QDQ form), per-channel multipliers.
            var x = U8(r, inLen); var w = S8(r, g.OutChannels * g.PatchSize);
            var e = new byte[outLen]; var a = new byte[outLen];
            QConv.RequantizedReference<byte, sbyte, byte>(x, 131, w, wz, g, bias, mult, 77, relu, e);
            QConv.RunRequantized<byte, byte>(On(path), x, 131, PackedConvWeights.Pack<sbyte>(w, wz, g), bias, mult, 77, relu, a);
            Assert.True(e.SequenceEqual(a), $"u8 shape {i} on {path}");
            // s8 input, u8 weights, s8 output, one multiplier, no bias.
            var sx = S8(r, inLen); var uw = U8(r, g.OutChannels * g.PatchSize);
            var uwz = new[] { 119 };
            var es = new sbyte[outLen]; var asx = new sbyte[outLen];
            QConv.RequantizedReference<sbyte, byte, sbyte>(sx, -9, uw, uwz, g, default, new[] { 2.5e-4f }, 4, relu, es);
            QConv.RunRequantized<sbyte, sbyte>(On(path), sx, -9, PackedConvWeights.Pack<byte>(uw, uwz, g), default, new[] { 2.5e-4f }, 4, relu, asx);
            Assert.True(es.SequenceEqual(asx), $"s8 shape {i} on {path}");
            // The int32 accumulators of the same weights (ConvInteger).
            var ei = new int[outLen]; var ai = new int[outLen];
            QConv.Reference<sbyte, byte>(sx, -9, uw, uwz, g, ei);
            QConv.Run<sbyte>(On(path), sx, -9, PackedConvWeights.Pack<byte>(uw, uwz, g), ai);
            Assert.True(ei.SequenceEqual(ai), $"int32 shape {i} on {path}");
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Conv_OnSeveralThreads_MatchesTheReference(KernelPath path)
    {
        var r = new Random(32);
        // Many tiles (split by tiles) and one tile with many channels (split by channels), on the VNNI kernel and
        // (64 channels, symmetric weights) on the AMX kernel where the CPU has it, stride 1 and 2.
        foreach (var g in new ConvGeometry[]
        {
            new(1, 8, 20, 20, 12, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1), new(1, 16, 5, 5, 40, 3, 3, StrideH: 2, StrideW: 2),
            new(1, 64, 12, 12, 64, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1), new(1, 64, 3, 3, 96, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
            new(1, 64, 11, 11, 64, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
        })
        {
            var x = U8(r, g.Channels * g.Height * g.Width); var w = S8(r, g.OutChannels * g.PatchSize);
            for (int i = 0; i < w.Length; i++) if (w[i] == -128) w[i] = -127;
            var mult = new[] { 1e-3f };
            var e = new byte[g.OutChannels * g.OutH * g.OutW];
            QConv.RequantizedReference<byte, sbyte, byte>(x, 128, w, new[] { 0 }, g, default, mult, 128, false, e);
            var packed = PackedConvWeights.Pack<sbyte>(w, new[] { 0 }, g);
            foreach (var context in KernelPaths.Contexts(path))
                foreach (int threads in new[] { 1, 2, 3 })
                {
                    var a = new byte[e.Length];
                    QConv.RunRequantized<byte, byte>(context with { ParallelThreshold = 1 << 10, MaxThreads = threads }, x, 128, packed, default, mult, 128, false, a);
                    Assert.True(e.AsSpan().SequenceEqual(a), $"{g} on {threads} thread(s) ({context}) differs from the reference");
                }
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void QuantizeDequantize_PerTensorAndPerChannel_MatchTheReference(KernelPath path)
    {
        var r = new Random(4);
        var x = Check.RandomFloats(r, 2 * 3 * 7, 10f);
        x[0] = float.NaN; x[1] = 1e9f; x[2] = -1e9f; x[3] = 0.5f; x[4] = -2.5f;
        var scales = new[] { 0.1f, 0.05f, 1f }; var zp = new[] { 3, -7, 0 };
        var e8 = new sbyte[x.Length]; var a8 = new sbyte[x.Length];
        QuantizeKernels.QuantizeReference<sbyte>(x, scales, zp, 7, e8);
        QuantizeKernels.Quantize<sbyte>(On(path), x, scales, zp, 7, a8);
        Assert.Equal(e8, a8);
        var eu = new byte[x.Length]; var au = new byte[x.Length];
        QuantizeKernels.QuantizeReference<byte>(x, new[] { 0.07f }, new[] { 128 }, x.Length, eu);
        QuantizeKernels.Quantize<byte>(On(path), x, new[] { 0.07f }, new[] { 128 }, x.Length, au);
        Assert.Equal(eu, au);
        // The reference is QuantMath itself.
        Assert.Equal(QuantMath.Quantize(x[5], new QuantParams(0.07f, 128), 0, 255), eu[5]);

        var fe = new float[x.Length]; var fa = new float[x.Length];
        QuantizeKernels.DequantizeReference<sbyte>(e8, scales, zp, 7, fe);
        QuantizeKernels.Dequantize<sbyte>(On(path), e8, scales, zp, 7, fa);
        Assert.Equal(fe, fa);
        QuantizeKernels.DequantizeReference<byte>(eu, new[] { 0.07f }, new[] { 128 }, x.Length, fe);
        QuantizeKernels.Dequantize<byte>(On(path), eu, new[] { 0.07f }, new[] { 128 }, x.Length, fa);
        Assert.Equal(fe, fa);
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Requantize_FloatAndFixedPoint_MatchTheReference(KernelPath path)
    {
        var r = new Random(5);
        var acc = Enumerable.Range(0, 4 * 33).Select(_ => r.Next(-200000, 200000)).ToArray();
        acc[0] = int.MaxValue; acc[1] = int.MinValue; acc[2] = 0; acc[3] = -1;
        var mult = new[] { 0.0012f, 0.5f, 3.7e-5f, 1.25f };
        var e = new sbyte[acc.Length]; var a = new sbyte[acc.Length];
        QuantizeKernels.RequantizeReference<sbyte>(acc, mult, -3, 33, e);
        QuantizeKernels.Requantize<sbyte>(On(path), acc, mult, -3, 33, a);
        Assert.Equal(e, a);

        var q = mult.Select(m => QuantMath.QuantizeMultiplier(m)).ToArray();
        var fixedM = q.Select(v => v.Fixed).ToArray(); var shifts = q.Select(v => v.Shift).ToArray();
        var eu = new byte[acc.Length]; var au = new byte[acc.Length];
        QuantizeKernels.RequantizeFixedPointReference<byte>(acc, fixedM, shifts, 120, 33, eu);
        QuantizeKernels.RequantizeFixedPoint<byte>(On(path), acc, fixedM, shifts, 120, 33, au);
        Assert.Equal(eu, au);
        // Fixed point agrees with the real multiplier to within one step away from the rounding ties.
        for (int i = 4; i < acc.Length; i++)
        {
            double real = acc[i] * (double)mult[i / 33] + 120;
            Assert.InRange(eu[i], Math.Clamp(Math.Floor(real), 0, 255), Math.Clamp(Math.Ceiling(real), 0, 255));
        }
    }

    [Fact]
    public void FixedPointMultiplier_KnownValues()
    {
        Assert.Equal((1 << 30, 0), QuantMath.QuantizeMultiplier(0.5));
        Assert.Equal((1 << 30, -1), QuantMath.QuantizeMultiplier(0.25));
        Assert.Equal(int.MaxValue, QuantMath.SaturatingRoundingDoublingHighMul(int.MinValue, int.MinValue));
        Assert.Equal(3, QuantMath.RoundingDivideByPOT(5, 1));     // 2.5 rounds away from zero
        Assert.Equal(-3, QuantMath.RoundingDivideByPOT(-5, 1));
        Assert.Equal(50, QuantMath.RequantizeFixedPoint(100, 1 << 30, 0, 0, -128, 127));
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Add_MatchesTheReference(KernelPath path)
    {
        var r = new Random(6);
        var a = U8(r, 103); var b = U8(r, 103);
        var e = new byte[103]; var act = new byte[103];
        QElementwise.AddReference<byte>(a, 0.02f, 120, b, 0.05f, 3, 0.06f, 7, e);
        QElementwise.Add<byte>(On(path), a, 0.02f, 120, b, 0.05f, 3, 0.06f, 7, act);
        Assert.Equal(e, act);
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void Add_BroadcastAndSigned_MatchTheReference(KernelPath path)
    {
        var r = new Random(8);
        foreach (int n in new[] { 1, 31, 32, 200 })
        {
            var a = S8(r, n); var b = S8(r, n); var one = S8(r, 1);
            var e = new sbyte[n]; var act = new sbyte[n];
            QElementwise.AddReference<sbyte>(a, 0.031f, -3, b, 0.047f, 11, 0.052f, -7, e);
            QElementwise.Add<sbyte>(On(path), a, 0.031f, -3, b, 0.047f, 11, 0.052f, -7, act);
            Assert.Equal(e, act);
            QElementwise.AddReference<sbyte>(a, 0.031f, -3, one, 0.047f, 11, 0.052f, -7, e);
            QElementwise.Add<sbyte>(On(path), a, 0.031f, -3, one, 0.047f, 11, 0.052f, -7, act);
            Assert.Equal(e, act);
        }
    }

    /// <summary>QLinearAdd as ONNX Runtime computes it on x64 (the engine's parity with it rests on this): every pair of
    /// u8 or s8 values under random scales and zero points, and a one-element B, through a single-node model, bit for
    /// bit (the plain formula round(ra (a - za) + rb (b - zb) + zc) misses a few ties per million). ARM64 builds of ONNX Runtime use a
    /// fixed-point kernel instead, so the comparison runs on x64 only.</summary>
    [HostFact(HostNeed.Avx2)]
    public void Add_IsBitExactWithOnnxRuntime()
    {
        var r = new Random(10);
        const int n = 65536;   // every (a, b) pair of byte values
        for (int trial = 0; trial < 24; trial++)
        {
            bool signed = trial % 2 == 1, scalar = trial >= 20;
            float sa = (float)(r.NextDouble() * 0.1 + 1e-3), sb = (float)(r.NextDouble() * 0.1 + 1e-3), sc = (float)(r.NextDouble() * 0.1 + 1e-2);
            int za = r.Next(signed ? -128 : 0, signed ? 128 : 256), zb = r.Next(signed ? -128 : 0, signed ? 128 : 256), zc = r.Next(signed ? -128 : 0, signed ? 128 : 256);
            int elem = signed ? 3 : 2, lenB = scalar ? 1 : n;
            var node = new global::Onnx.NodeProto { OpType = "QLinearAdd", Domain = "com.microsoft" };
            node.Input.AddRange(new[] { "a", "sa", "za", "b", "sb", "zb", "sc", "zc" }); node.Output.Add("c");
            var m = new global::Onnx.ModelProto { IrVersion = 8, Graph = new global::Onnx.GraphProto { Name = "add" } };
            m.OpsetImport.Add(new global::Onnx.OperatorSetIdProto { Domain = "", Version = 13 });
            m.OpsetImport.Add(new global::Onnx.OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
            m.Graph.Node.Add(node);
            global::Onnx.ValueInfoProto V(string name, long len)
            {
                var shape = new global::Onnx.TensorShapeProto();
                shape.Dim.Add(new global::Onnx.TensorShapeProto.Types.Dimension { DimValue = len });
                return new global::Onnx.ValueInfoProto { Name = name, Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = elem, Shape = shape } } };
            }
            m.Graph.Input.Add(V("a", n)); m.Graph.Input.Add(V("b", lenB)); m.Graph.Output.Add(V("c", n));
            global::Onnx.TensorProto Z(string name, int z) => signed ? PtqTools.Core.Onnx.TensorData.FromInt8(name, new[] { (sbyte)z }) : PtqTools.Core.Onnx.TensorData.FromUInt8(name, new[] { (byte)z });
            m.Graph.Initializer.Add(PtqTools.Core.Onnx.TensorData.FromFloats("sa", new[] { sa })); m.Graph.Initializer.Add(Z("za", za));
            m.Graph.Initializer.Add(PtqTools.Core.Onnx.TensorData.FromFloats("sb", new[] { sb })); m.Graph.Initializer.Add(Z("zb", zb));
            m.Graph.Initializer.Add(PtqTools.Core.Onnx.TensorData.FromFloats("sc", new[] { sc })); m.Graph.Initializer.Add(Z("zc", zc));
            using var options = new Microsoft.ML.OnnxRuntime.SessionOptions { IntraOpNumThreads = 1 };
            using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(Google.Protobuf.MessageExtensions.ToByteArray(m), options);
            var a = new byte[n]; var b = new byte[lenB];
            for (int i = 0; i < n; i++) a[i] = (byte)(i >> 8);
            if (scalar) b[0] = (byte)r.Next(256); else for (int i = 0; i < n; i++) b[i] = (byte)i;
            using var ia = signed ? Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(a, v => (sbyte)v), new long[] { n })
                : Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(a, new long[] { n });
            using var ib = signed ? Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(b, v => (sbyte)v), new long[] { lenB })
                : Microsoft.ML.OnnxRuntime.OrtValue.CreateTensorValueFromMemory(b, new long[] { lenB });
            using var run = new Microsoft.ML.OnnxRuntime.RunOptions();
            using var result = session.Run(run, new[] { "a", "b" }, new[] { ia, ib }, new[] { "c" });
            var ort = result[0].GetTensorDataAsSpan<byte>().ToArray();
            var mine = new byte[n];
            if (signed)
                QElementwise.Add<sbyte>(KernelContext.Default, Array.ConvertAll(a, v => (sbyte)v), sa, za, Array.ConvertAll(b, v => (sbyte)v), sb, zb, sc, zc, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, sbyte>(mine.AsSpan()));
            else QElementwise.Add<byte>(KernelContext.Default, a, sa, za, b, sb, zb, sc, zc, mine);
            Assert.Equal(ort, mine);
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void MaxPool_MatchesTheReference(KernelPath path)
    {
        var r = new Random(9);
        foreach (var g in new ConvGeometry[]
        {
            new(1, 3, 112, 112, 3, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
            new(2, 2, 9, 37, 2, 2, 3, StrideH: 1, StrideW: 2, PadTop: 1, PadLeft: 2, PadBottom: 0, PadRight: 2, DilationH: 2, DilationW: 1),
            new(1, 2, 10, 40, 2, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
            new(1, 2, 8, 50, 2, 2, 2, StrideH: 2, StrideW: 3, DilationW: 2),
        })
        {
            int inLen = g.Batch * g.Channels * g.Height * g.Width, outLen = g.Batch * g.Channels * g.OutH * g.OutW;
            var x = U8(r, inLen); var sx = S8(r, inLen);
            var e = new byte[outLen]; var a = new byte[outLen]; var es = new sbyte[outLen]; var asx = new sbyte[outLen];
            QElementwise.MaxPoolReference<byte>(x, g, e);
            QElementwise.MaxPoolReference<sbyte>(sx, g, es);
            QElementwise.MaxPool<byte>(On(path), x, g, a); QElementwise.MaxPool<sbyte>(On(path), sx, g, asx);
            Assert.Equal(e, a);
            Assert.Equal(es, asx);
        }
    }

    [Fact]
    public void Pools_AgreeWithFloatPooling()
    {
        var r = new Random(7);
        var g = new ConvGeometry(1, 2, 6, 6, 2, 3, 3, StrideH: 2, StrideW: 2, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1);
        var x = S8(r, 72);
        var max = new sbyte[2 * g.OutH * g.OutW];
        QElementwise.MaxPool<sbyte>(KernelContext.Default, x, g, max);
        Assert.Equal(x.Take(36).Max(), max.Take(9).Max());
        var avg = new sbyte[max.Length];
        QElementwise.AveragePool<sbyte>(x, 0.1f, 0, g, false, 0.1f, 0, avg);
        // Top-left window covers rows 0..1, columns 0..1 (the padding is not counted).
        double mean = (x[0] + x[1] + x[6] + x[7]) / 4.0;
        Assert.Equal(Math.Round(mean, MidpointRounding.ToEven), avg[0]);
        var gap = new sbyte[2];
        QElementwise.GlobalAveragePool<sbyte>(x, 0.1f, 0, 2, 36, 0.1f, 0, gap);
        Assert.Equal(Math.Round(x.Skip(36).Take(36).Average(v => (double)v), MidpointRounding.ToEven), gap[1]);
    }
}
