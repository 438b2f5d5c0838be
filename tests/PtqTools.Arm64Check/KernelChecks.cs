using PtqTools.Core.Kernels;
using PtqTools.Core.Quantization;

namespace PtqTools.Arm64Check;

/// <summary>The kernels' exactness checks: every kernel family on every path this CPU offers (Scalar, Vector128 and,
/// on ARM64 with the dot product, ArmDot), over many shapes with leftovers and zero points, each result compared
/// element for element with the scalar reference.</summary>
public sealed class KernelChecks
{
    readonly TextWriter _log;
    readonly Random _random = new(20261206);
    public int Cases { get; private set; }
    public List<string> Failures { get; } = new();

    public KernelChecks(TextWriter log) { _log = log; }

    /// <summary>This host's default kernel context on <paramref name="path"/>.</summary>
    public static KernelContext On(KernelPath path) => KernelContext.Default.WithPath(path);

    /// <summary>Work from which the kernels split over threads in the checks (the default unless a check lowers it).</summary>
    long _threshold = KernelContext.DefaultParallelThreshold;

    public void RunAll()
    {
        Family("gemm", Gemm);
        Family("gemm, split over threads", GemmThreads);
        Family("conv", Conv);
        Family("conv + bias + requantize (+relu)", ConvRequantized);
        Family("saturating pairs gemm (ONNX Runtime without VNNI, emulated)", SaturatingPairs);
        Family("add", Add);
        Family("requantize", Requantize);
        Family("requantize fixed point", RequantizeFixedPoint);
        Family("quantize", Quantize);
        Family("dequantize", Dequantize);
        Family("max pool", MaxPool);
    }

    void Family(string name, Func<int> body)
    {
        int before = Failures.Count;
        var started = System.Diagnostics.Stopwatch.StartNew();
        int cases = body();
        Cases += cases;
        _log.WriteLine($"kernels: {name}: {cases} cases x {KernelDispatch.Supported().Count} paths, " +
            (Failures.Count == before ? "exact" : $"{Failures.Count - before} MISMATCHES") + $" ({started.Elapsed.TotalSeconds:F1} s)");
    }

    /// <summary>Compares the fast result on every path with the reference; records the first differing element.</summary>
    void Compare<T>(string what, T[] expected, Func<KernelContext, T[]> fast) where T : IEquatable<T>
    {
        foreach (var path in KernelDispatch.Supported())
        {
            var actual = fast(On(path) with { ParallelThreshold = _threshold });
            for (int i = 0; i < expected.Length; i++)
                if (!expected[i].Equals(actual[i]))
                {
                    Failures.Add($"{what} on {path}: element {i} is {actual[i]}, the reference gives {expected[i]}");
                    break;
                }
        }
    }

    byte[] U8(int n, bool extreme = false) { var v = new byte[n]; if (extreme) Array.Fill(v, (byte)255); else _random.NextBytes(v); return v; }
    sbyte[] S8(int n, bool extreme = false) { var v = new sbyte[n]; for (int i = 0; i < n; i++) v[i] = extreme ? (sbyte)-128 : (sbyte)_random.Next(-128, 128); return v; }
    int[] Zeros(int count, int min, int max, bool perChannel) =>
        Enumerable.Range(0, perChannel ? count : 1).Select(_ => _random.Next(min, max + 1)).ToArray();

    int Gemm()
    {
        // Leftovers of every kind: M mod 4 (rows per step), K mod 4 (bytes of a quad) and K/4 mod 4 (quads per A
        // vector), N mod 16 (columns per block).
        int[] ms = { 1, 2, 3, 4, 5, 9, 17 }, ks = { 1, 2, 3, 4, 5, 8, 11, 15, 16, 17, 34, 67 }, ns = { 1, 15, 16, 17, 33 };
        int count = 0;
        foreach (var m in ms) foreach (var k in ks) foreach (var n in ns)
                {
                    GemmCase(m, k, n, count % 4, count % 3 == 0, count % 11 == 0);
                    count++;
                }
        // K past the int32 range of the sums (they wrap the same way in every path), and the largest codes.
        GemmCase(2, 40000, 17, 3, false, true); GemmCase(3, 40000, 5, 0, true, true);
        return count + 2;
    }

    int GemmThreads()
    {
        long saved = _threshold;
        _threshold = 4096;
        try
        {
            GemmCase(67, 129, 50, 0, true, false); GemmCase(130, 64, 33, 1, false, false);
            GemmCase(33, 257, 16, 2, true, false); GemmCase(9, 1000, 64, 3, false, false);
        }
        finally { _threshold = saved; }
        return 4;
    }

    /// <summary>variant: 0 u8 x s8, 1 s8 x s8, 2 u8 x u8, 3 s8 x u8 (activations x weights).</summary>
    void GemmCase(int m, int k, int n, int variant, bool perColumn, bool extreme)
    {
        bool aU8 = variant is 0 or 2, wU8 = variant >= 2;
        string what = $"gemm {(aU8 ? "u8" : "s8")}x{(wU8 ? "u8" : "s8")} {m}x{k}x{n}{(perColumn ? " per-column zp" : "")}{(extreme ? " extreme" : "")}";
        var c = new int[m * n];
        int az = extreme ? (aU8 ? 0 : 127) : aU8 ? _random.Next(0, 256) : _random.Next(-128, 128);
        var zw = extreme ? new[] { wU8 ? 0 : 127 } : wU8 ? Zeros(n, 0, 255, perColumn) : Zeros(n, -128, 127, perColumn);
        if (aU8)
        {
            var a = U8(m * k, extreme);
            if (wU8) { var b = U8(k * n, extreme); QGemm.Reference<byte, byte>(a, az, m, k, b, zw, n, c); var p = PackedWeights.Pack(b, k, n, zw); Compare(what, c, ctx => { var r = new int[m * n]; QGemm.Multiply(ctx, a, az, m, p, r); return r; }); }
            else { var b = S8(k * n, extreme); QGemm.Reference<byte, sbyte>(a, az, m, k, b, zw, n, c); var p = PackedWeights.Pack(b, k, n, zw); Compare(what, c, ctx => { var r = new int[m * n]; QGemm.Multiply(ctx, a, az, m, p, r); return r; }); }
        }
        else
        {
            var a = S8(m * k, extreme);
            if (wU8) { var b = U8(k * n, extreme); QGemm.Reference<sbyte, byte>(a, az, m, k, b, zw, n, c); var p = PackedWeights.Pack(b, k, n, zw); Compare(what, c, ctx => { var r = new int[m * n]; QGemm.Multiply(ctx, a, az, m, p, r); return r; }); }
            else { var b = S8(k * n, extreme); QGemm.Reference<sbyte, sbyte>(a, az, m, k, b, zw, n, c); var p = PackedWeights.Pack(b, k, n, zw); Compare(what, c, ctx => { var r = new int[m * n]; QGemm.Multiply(ctx, a, az, m, p, r); return r; }); }
        }
    }

    /// <summary>The emulation of ONNX Runtime's u8 x s8 kernels on CPUs without VNNI (adjacent pairs saturated at
    /// int16), which an analyst on ARM64 runs with -Target Avx2: the same sums as its reference.</summary>
    int SaturatingPairs()
    {
        int count = 0;
        foreach (var m in new[] { 1, 3, 4, 9 }) foreach (var k in new[] { 1, 2, 5, 16, 33, 64 }) foreach (var n in new[] { 1, 16, 19 })
                {
                    // Weights near the ends of the range, so that many pairs saturate.
                    var a = U8(m * k);
                    var b = Enumerable.Range(0, k * n).Select(i => (sbyte)(i % 3 == 0 ? _random.Next(-128, 128) : i % 2 == 0 ? 127 : -128)).ToArray();
                    int az = _random.Next(0, 256);
                    var zb = Zeros(n, -4, 4, count % 2 == 0);
                    var e = new int[m * n];
                    PtqTools.Core.Kernels.SaturatingGemm.Reference(a, az, m, k, b, zb, n, e);
                    var p = SaturatingPackedWeights.Pack(b, k, n, zb);
                    Compare($"saturating pairs gemm {m}x{k}x{n}", e, ctx => { var r = new int[m * n]; PtqTools.Core.Kernels.SaturatingGemm.Multiply(ctx, a, az, m, p, r); return r; });
                    count++;
                }
        return count;
    }

    static readonly ConvGeometry[] ConvShapes =
    {
        new(1, 3, 8, 8, 8, 3, 3, PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1),
        new(1, 4, 7, 9, 6, 3, 3, 2, 2, 1, 1, 1, 1),
        new(2, 5, 6, 6, 7, 1, 1),
        new(1, 8, 9, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1, Group: 8),                       // depthwise
        new(1, 8, 10, 10, 16, 3, 3, 2, 2, 1, 1, 1, 1, Group: 8),                    // two outputs per group
        new(1, 6, 8, 8, 9, 3, 3, 1, 1, 2, 0, 1, 2, 2, 2, 3),                        // grouped, dilated, uneven pads
        new(1, 16, 5, 5, 17, 3, 3, 1, 1, 1, 1, 1, 1),
        new(1, 3, 16, 16, 8, 7, 7, 2, 2, 3, 3, 3, 3),                               // a ResNet-style stem
        new(1, 12, 6, 6, 12, 3, 3, 1, 1, 1, 1, 1, 1, Group: 12),                    // depthwise
        new(1, 2, 1, 20, 3, 1, 5, 1, 2, 0, 2, 0, 2),                                // 1-D
        new(1, 33, 4, 4, 20, 1, 1),                                                 // pointwise, odd channels
        new(1, 64, 6, 6, 32, 3, 3, 1, 1, 1, 1, 1, 1),
    };

    int Conv()
    {
        int count = 0;
        foreach (var g in ConvShapes)
            for (int variant = 0; variant < 4; variant++, count++)
            {
                bool xU8 = variant is 0 or 2, wU8 = variant >= 2, perChannel = variant % 2 == 0;
                string what = $"conv {(xU8 ? "u8" : "s8")}x{(wU8 ? "u8" : "s8")} {g}";
                int xLen = g.Batch * g.Channels * g.Height * g.Width, wLen = g.OutChannels * g.PatchSize;
                var y = new int[g.Batch * g.OutChannels * g.OutH * g.OutW];
                int xz = xU8 ? _random.Next(0, 256) : _random.Next(-128, 128);
                var wz = wU8 ? Zeros(g.OutChannels, 0, 255, perChannel) : Zeros(g.OutChannels, -128, 127, perChannel);
                if (xU8) ConvCase(what, U8(xLen), xz, wU8, wLen, wz, g, y);
                else ConvCase(what, S8(xLen), xz, wU8, wLen, wz, g, y);
            }
        return count;
    }

    // (sbyte[] is byte[] holds in the CLR: the weights' type is a flag, not a type test.)
    void ConvCase<TX>(string what, TX[] x, int xz, bool wU8, int wLen, int[] wz, ConvGeometry g, int[] y) where TX : unmanaged
    {
        if (wU8)
        {
            var wu = U8(wLen);
            QConv.Reference<TX, byte>(x, xz, wu, wz, g, y);
            var p = PackedConvWeights.Pack<byte>(wu, wz, g);
            Compare(what, y, ctx => { var r = new int[y.Length]; QConv.Run<TX>(ctx, x, xz, p, r); return r; });
        }
        else
        {
            var ws = S8(wLen);
            QConv.Reference<TX, sbyte>(x, xz, ws, wz, g, y);
            var p = PackedConvWeights.Pack<sbyte>(ws, wz, g);
            Compare(what, y, ctx => { var r = new int[y.Length]; QConv.Run<TX>(ctx, x, xz, p, r); return r; });
        }
    }

    int ConvRequantized()
    {
        int count = 0;
        foreach (var g in ConvShapes)
            for (int variant = 0; variant < 4; variant++, count++)
            {
                bool xU8 = variant % 2 == 0, yU8 = variant < 2, relu = variant % 3 == 0, perChannel = variant != 1;
                string what = $"conv requantized {(xU8 ? "u8" : "s8")}->{(yU8 ? "u8" : "s8")}{(relu ? " relu" : "")} {g}";
                int xLen = g.Batch * g.Channels * g.Height * g.Width, wLen = g.OutChannels * g.PatchSize;
                var w = S8(wLen);
                var wz = Zeros(g.OutChannels, -3, 3, perChannel);
                var bias = Enumerable.Range(0, g.OutChannels).Select(_ => _random.Next(-5000, 5000)).ToArray();
                var mult = Enumerable.Range(0, perChannel ? g.OutChannels : 1).Select(_ => (float)(_random.NextDouble() * 0.02 + 0.0005)).ToArray();
                int yz = yU8 ? _random.Next(0, 256) : _random.Next(-128, 128);
                var p = PackedConvWeights.Pack<sbyte>(w, wz, g);
                int yLen = g.Batch * g.OutChannels * g.OutH * g.OutW;
                if (xU8)
                {
                    var x = U8(xLen); int xz = _random.Next(0, 256);
                    if (yU8) { var e = new byte[yLen]; QConv.RequantizedReference<byte, sbyte, byte>(x, xz, w, wz, g, bias, mult, yz, relu, e); Compare(what, e, ctx => { var r = new byte[yLen]; QConv.RunRequantized<byte, byte>(ctx, x, xz, p, bias, mult, yz, relu, r); return r; }); }
                    else { var e = new sbyte[yLen]; QConv.RequantizedReference<byte, sbyte, sbyte>(x, xz, w, wz, g, bias, mult, yz, relu, e); Compare(what, e, ctx => { var r = new sbyte[yLen]; QConv.RunRequantized<byte, sbyte>(ctx, x, xz, p, bias, mult, yz, relu, r); return r; }); }
                }
                else
                {
                    var x = S8(xLen); int xz = _random.Next(-128, 128);
                    if (yU8) { var e = new byte[yLen]; QConv.RequantizedReference<sbyte, sbyte, byte>(x, xz, w, wz, g, bias, mult, yz, relu, e); Compare(what, e, ctx => { var r = new byte[yLen]; QConv.RunRequantized<sbyte, byte>(ctx, x, xz, p, bias, mult, yz, relu, r); return r; }); }
                    else { var e = new sbyte[yLen]; QConv.RequantizedReference<sbyte, sbyte, sbyte>(x, xz, w, wz, g, bias, mult, yz, relu, e); Compare(what, e, ctx => { var r = new sbyte[yLen]; QConv.RunRequantized<sbyte, sbyte>(ctx, x, xz, p, bias, mult, yz, relu, r); return r; }); }
                }
            }
        return count;
    }

    int Add()
    {
        int count = 0;
        foreach (int n in new[] { 1, 2, 15, 16, 17, 31, 32, 33, 64, 100, 257, 1000 })
            for (int variant = 0; variant < 4; variant++, count++)
            {
                bool u8 = variant % 2 == 0, scalarB = variant >= 2 && n > 1;
                float sa = (float)(_random.NextDouble() * 0.1 + 0.001), sb = (float)(_random.NextDouble() * 0.1 + 0.001), sc = (float)(_random.NextDouble() * 0.1 + 0.001);
                string what = $"add {(u8 ? "u8" : "s8")} n={n}{(scalarB ? " scalar b" : "")}";
                int bn = scalarB ? 1 : n;
                if (u8)
                {
                    var a = U8(n); var b = U8(bn); int za = _random.Next(0, 256), zb = _random.Next(0, 256), zc = _random.Next(0, 256);
                    var e = new byte[n]; QElementwise.AddReference<byte>(a, sa, za, b, sb, zb, sc, zc, e);
                    Compare(what, e, ctx => { var r = new byte[n]; QElementwise.Add<byte>(ctx, a, sa, za, b, sb, zb, sc, zc, r); return r; });
                }
                else
                {
                    var a = S8(n); var b = S8(bn); int za = _random.Next(-128, 128), zb = _random.Next(-128, 128), zc = _random.Next(-128, 128);
                    var e = new sbyte[n]; QElementwise.AddReference<sbyte>(a, sa, za, b, sb, zb, sc, zc, e);
                    Compare(what, e, ctx => { var r = new sbyte[n]; QElementwise.Add<sbyte>(ctx, a, sa, za, b, sb, zb, sc, zc, r); return r; });
                }
            }
        return count;
    }

    int Requantize()
    {
        int count = 0;
        foreach (int channels in new[] { 1, 3, 8 })
            foreach (int inner in new[] { 1, 5, 16, 49 })
            {
                int len = channels * inner * 2;
                var acc = Enumerable.Range(0, len).Select(i => i % 17 == 0 ? (i % 2 == 0 ? int.MaxValue : int.MinValue) : _random.Next(-200000, 200000)).ToArray();
                // Multipliers that put some values exactly half-way (ties round to even).
                var mult = Enumerable.Range(0, channels).Select(c => c == 0 ? 0.5f : (float)(_random.NextDouble() * 0.01)).ToArray();
                int zu = _random.Next(0, 256), zs = _random.Next(-128, 128);
                var eu = new byte[len]; QuantizeKernels.RequantizeReference<byte>(acc, mult, zu, inner, eu);
                Compare($"requantize u8 {channels}x{inner}", eu, ctx => { var r = new byte[len]; QuantizeKernels.Requantize<byte>(ctx, acc, mult, zu, inner, r); return r; });
                var es = new sbyte[len]; QuantizeKernels.RequantizeReference<sbyte>(acc, mult, zs, inner, es);
                Compare($"requantize s8 {channels}x{inner}", es, ctx => { var r = new sbyte[len]; QuantizeKernels.Requantize<sbyte>(ctx, acc, mult, zs, inner, r); return r; });
                count += 2;
            }
        return count;
    }

    int RequantizeFixedPoint()
    {
        int count = 0;
        foreach (int channels in new[] { 1, 4 })
            foreach (int inner in new[] { 1, 7, 32 })
            {
                int len = channels * inner;
                var acc = Enumerable.Range(0, len).Select(_ => _random.Next(-1 << 24, 1 << 24)).ToArray();
                var fm = Enumerable.Range(0, channels).Select(_ => _random.Next(1 << 30, int.MaxValue)).ToArray();
                var shifts = Enumerable.Range(0, channels).Select(_ => _random.Next(-12, 2)).ToArray();
                int zu = _random.Next(0, 256);
                var e = new byte[len]; QuantizeKernels.RequantizeFixedPointReference<byte>(acc, fm, shifts, zu, inner, e);
                Compare($"requantize fixed point {channels}x{inner}", e, ctx => { var r = new byte[len]; QuantizeKernels.RequantizeFixedPoint<byte>(ctx, acc, fm, shifts, zu, inner, r); return r; });
                count++;
            }
        return count;
    }

    int Quantize()
    {
        int count = 0;
        foreach (int channels in new[] { 1, 3 })
            foreach (int inner in new[] { 1, 4, 13, 64 })
            {
                int len = channels * inner;
                var scales = Enumerable.Range(0, channels).Select(_ => (float)(_random.NextDouble() * 0.1 + 0.01)).ToArray();
                var zeros = Enumerable.Range(0, channels).Select(_ => _random.Next(0, 256)).ToArray();
                // Random values, exact ties (k + 0.5 steps), NaN and infinities.
                var x = Enumerable.Range(0, len).Select(i => (i % 9) switch
                {
                    0 => (_random.Next(-300, 300) + 0.5f) * scales[i / inner % channels],
                    1 => float.NaN,
                    2 => i % 2 == 0 ? float.PositiveInfinity : float.NegativeInfinity,
                    _ => (float)(_random.NextDouble() * 30 - 15),
                }).ToArray();
                var e = new byte[len]; QuantizeKernels.QuantizeReference<byte>(x, scales, zeros, inner, e);
                Compare($"quantize u8 {channels}x{inner}", e, ctx => { var r = new byte[len]; QuantizeKernels.Quantize<byte>(ctx, x, scales, zeros, inner, r); return r; });
                var zs = zeros.Select(z => z - 128).ToArray();
                var es = new sbyte[len]; QuantizeKernels.QuantizeReference<sbyte>(x, scales, zs, inner, es);
                Compare($"quantize s8 {channels}x{inner}", es, ctx => { var r = new sbyte[len]; QuantizeKernels.Quantize<sbyte>(ctx, x, scales, zs, inner, r); return r; });
                count += 2;
            }
        return count;
    }

    int Dequantize()
    {
        int count = 0;
        foreach (int channels in new[] { 1, 5 })
            foreach (int inner in new[] { 1, 4, 9, 64 })
            {
                int len = channels * inner;
                var scales = Enumerable.Range(0, channels).Select(_ => (float)(_random.NextDouble() * 0.1 + 0.001)).ToArray();
                var zeros = Enumerable.Range(0, channels).Select(_ => _random.Next(-128, 128)).ToArray();
                var q = S8(len);
                var e = new float[len]; QuantizeKernels.DequantizeReference<sbyte>(q, scales, zeros, inner, e);
                // Compared bit for bit.
                var bits = e.Select(BitConverter.SingleToInt32Bits).ToArray();
                Compare($"dequantize s8 {channels}x{inner}", bits, ctx => { var r = new float[len]; QuantizeKernels.Dequantize<sbyte>(ctx, q, scales, zeros, inner, r); return r.Select(BitConverter.SingleToInt32Bits).ToArray(); });
                var qi = Enumerable.Range(0, len).Select(_ => _random.Next(-1 << 20, 1 << 20)).ToArray();
                var ei = new float[len]; QuantizeKernels.DequantizeReference<int>(qi, scales, zeros, inner, ei);
                var bitsI = ei.Select(BitConverter.SingleToInt32Bits).ToArray();
                Compare($"dequantize int32 {channels}x{inner}", bitsI, ctx => { var r = new float[len]; QuantizeKernels.Dequantize<int>(ctx, qi, scales, zeros, inner, r); return r.Select(BitConverter.SingleToInt32Bits).ToArray(); });
                count += 2;
            }
        return count;
    }

    int MaxPool()
    {
        var shapes = new ConvGeometry[]
        {
            new(1, 3, 9, 40, 3, 3, 3, 2, 2, 1, 1, 1, 1),
            new(1, 2, 8, 37, 2, 2, 2, 2, 2),
            new(2, 2, 7, 50, 2, 3, 3, 1, 1, 1, 1, 1, 1),
            new(1, 1, 5, 20, 1, 2, 3, 1, 2, 0, 1, 0, 1, 1, 2),
        };
        int count = 0;
        foreach (var g in shapes)
        {
            int len = g.Batch * g.Channels * g.Height * g.Width, outLen = g.Batch * g.Channels * g.OutH * g.OutW;
            var xu = U8(len); var eu = new byte[outLen]; QElementwise.MaxPoolReference<byte>(xu, g, eu);
            Compare($"max pool u8 {g}", eu, ctx => { var r = new byte[outLen]; QElementwise.MaxPool<byte>(ctx, xu, g, r); return r; });
            var xs = S8(len); var es = new sbyte[outLen]; QElementwise.MaxPoolReference<sbyte>(xs, g, es);
            Compare($"max pool s8 {g}", es, ctx => { var r = new sbyte[outLen]; QElementwise.MaxPool<sbyte>(ctx, xs, g, r); return r; });
            count += 2;
        }
        return count;
    }
}
