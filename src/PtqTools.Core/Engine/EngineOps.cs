using Onnx;
using PtqTools.Core.Kernels;
using PtqTools.Core.Onnx;
using PtqTools.Core.Quantization;

namespace PtqTools.Core.Engine;

/// <summary>The one table from op type to the engine's implementation.</summary>
internal static class EngineOps
{
    delegate EngineTensor[] Op(NodeProto node, EngineTensor?[] x, Dictionary<NodeProto, object> cache);

    static readonly Dictionary<string, Op> Table = new(StringComparer.Ordinal)
    {
        ["QuantizeLinear"] = QuantizeLinear,
        ["DequantizeLinear"] = DequantizeLinear,
        ["DynamicQuantizeLinear"] = DynamicQuantizeLinear,
        ["QLinearConv"] = QLinearConv,
        ["ConvInteger"] = ConvInteger,
        ["QLinearMatMul"] = QLinearMatMul,
        ["MatMulInteger"] = MatMulInteger,
        ["QGemm"] = QGemm_,
        ["QLinearAdd"] = QLinearAdd,
        ["QLinearAveragePool"] = QLinearAveragePool,
        ["QLinearGlobalAveragePool"] = QLinearGlobalAveragePool,
        ["Relu"] = Relu,
        ["Clip"] = Clip,
        ["MaxPool"] = MaxPool,
        ["AveragePool"] = AveragePool,
        ["GlobalAveragePool"] = GlobalAveragePool,
        ["Flatten"] = Flatten,
        ["Reshape"] = Reshape,
        ["Concat"] = Concat,
        ["Gemm"] = Gemm,
        ["Cast"] = Cast,
        ["Mul"] = Mul,
        ["Identity"] = (n, x, c) => new[] { x[0]! },
    };

    public static IReadOnlySet<string> Supported { get; } = Table.Keys.ToHashSet();

    /// <summary>Float ops the engine runs only once fused into a quantized op: those whose handler names an engine
    /// fusion (<see cref="OpHandler.Engine"/>) and that have no float entry in the table.</summary>
    public static IReadOnlySet<string> OnlyQuantized { get; } =
        OpHandlers.OpTypes.Where(op => OpHandlers.ForOpType(op)!.Engine(op) is not null && !Table.ContainsKey(op)).ToHashSet();

    public static EngineTensor[] Run(NodeProto node, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        if (!Table.TryGetValue(node.OpType, out var op))
            throw new PtqException("EngineOpNotSupported", PtqErrorKind.NotSupported, $"The PtqTools engine does not support {node.OpType}.", node.OpType);
        return op(node, x, cache);
    }

    // ---- attributes and parameters ----
    static long Int(NodeProto n, string name, long def) => n.IntAttr(name, def);
    static float Float(NodeProto n, string name, float def) => n.FloatAttr(name, def);
    static long[]? Ints(NodeProto n, string name) => n.IntsAttr(name);
    static string Str(NodeProto n, string name, string def) => n.StringAttr(name, def);

    /// <summary>The product arithmetic of the engine running the op (exact when called without engine state).</summary>
    static ProductArithmetic Arithmetic(Dictionary<NodeProto, object> cache) => cache is EngineState s ? s.Arithmetic : ProductArithmetic.Exact;

    /// <summary>The kernels' context of the engine running the op (the host's default without engine state).</summary>
    static KernelContext Kernels(Dictionary<NodeProto, object> cache) => cache is EngineState s ? s.Kernels : KernelContext.Default;

    /// <summary>Whether this u8 x s8 product is summed in saturating pairs: MLAS's vpmaddubsw kernels take uint8
    /// activations and int8 weights only (u8 x u8 widens to int16 with vpmaddwd, exact).</summary>
    static bool Saturating(Dictionary<NodeProto, object> cache, EngineTensor activations, EngineTensor weights) =>
        Arithmetic(cache) == ProductArithmetic.SaturatingPairs && activations.IsUInt8 && weights.IsInt8;

    /// <summary>An output array (contents undefined: the op writes every element), recycled from the engine's
    /// dropped intermediates when one of that type and length is free (<see cref="EngineBuffers"/>).</summary>
    static T[] Buffer<T>(Dictionary<NodeProto, object> cache, long length) where T : unmanaged =>
        cache is EngineState s ? s.Buffers.Rent<T>(length) : GC.AllocateUninitializedArray<T>(checked((int)length));

    /// <summary>Gives back a temporary of the op's own (nothing else holds it).</summary>
    static void Done(Dictionary<NodeProto, object> cache, Array temporary) { if (cache is EngineState s) s.Buffers.Return(temporary); }

    static EngineTensor Need(EngineTensor?[] x, int i, NodeProto n) =>
        i < x.Length && x[i] is { } t ? t : throw new ArgumentException($"input {i} is missing.");
    static EngineTensor? Opt(EngineTensor?[] x, int i) => i < x.Length ? x[i] : null;

    static float[] Scales(EngineTensor t) => t.Floats;
    static int[] Zeros(EngineTensor? t, int count)
    {
        if (t is null) return new int[1];
        var z = new int[t.Length];
        for (int i = 0; i < z.Length; i++) z[i] = t.IntAt(i);
        return z;
    }
    static bool Signed(EngineTensor? zp) => zp?.Type == OnnxDataType.Int8;
    static (int Min, int Max) Range(OnnxDataType t) => t == OnnxDataType.Int8 ? (-128, 127) : (0, 255);

    static long Inner(long[] dims, int axis)
    {
        long inner = 1;
        for (int d = axis + 1; d < dims.Length; d++) inner *= dims[d];
        return inner;
    }

    static int Axis(NodeProto n, int rank, long def = 1)
    {
        long a = Int(n, "axis", def);
        if (a < 0) a += rank;
        if (a < 0 || a >= Math.Max(rank, 1)) throw new ArgumentException($"axis {a} is outside the rank {rank}.");
        return (int)a;
    }

    // ---- quantize / dequantize ----
    static EngineTensor[] QuantizeLinear(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var input = Need(x, 0, n); var scale = Need(x, 1, n); var zp = Opt(x, 2);
        var s = Scales(scale); var z = Zeros(zp, s.Length);
        long inner = s.Length == 1 ? input.Length : Inner(input.Dims, Axis(n, input.Dims.Length));
        if (Signed(zp))
        {
            var y = Buffer<sbyte>(cache, input.Length);
            QuantizeKernels.Quantize<sbyte>(Kernels(cache), input.Floats, s, z, inner, y);
            return new[] { new EngineTensor(OnnxDataType.Int8, input.Dims, y) };
        }
        var u = Buffer<byte>(cache, input.Length);
        QuantizeKernels.Quantize<byte>(Kernels(cache), input.Floats, s, z, inner, u);
        return new[] { new EngineTensor(OnnxDataType.UInt8, input.Dims, u) };
    }

    static EngineTensor[] DequantizeLinear(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var input = Need(x, 0, n); var s = Scales(Need(x, 1, n)); var z = Zeros(Opt(x, 2), s.Length);
        long inner = s.Length == 1 ? input.Length : Inner(input.Dims, Axis(n, input.Dims.Length));
        var y = Buffer<float>(cache, input.Length);
        switch (input.Data)
        {
            case byte[] when input.IsUInt8: QuantizeKernels.Dequantize<byte>(Kernels(cache), input.Bytes, s, z, inner, y); break;
            case sbyte[] when input.IsInt8: QuantizeKernels.Dequantize<sbyte>(Kernels(cache), input.SBytes, s, z, inner, y); break;
            case int[] b: QuantizeKernels.Dequantize<int>(Kernels(cache), b, s, z, inner, y); break;
            default: throw new ArgumentException($"DequantizeLinear of {input.Type} is not supported.");
        }
        return new[] { EngineTensor.Float(y, input.Dims) };
    }

    static EngineTensor[] DynamicQuantizeLinear(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var input = Need(x, 0, n).Floats;
        var (min, max) = FloatOps.RangeWithZero(input);
        float scale = (max - min) / 255f;
        int zp = scale == 0 ? 0 : (int)MathF.Round(Math.Clamp(0 - min / scale, 0f, 255f), MidpointRounding.ToEven);
        var y = Buffer<byte>(cache, input.Length);
        if (scale != 0) QuantizeKernels.Quantize<byte>(Kernels(cache), input, new[] { scale }, new[] { zp }, input.Length, y);
        else Array.Clear(y);
        return new[]
        {
            new EngineTensor(OnnxDataType.UInt8, Need(x, 0, n).Dims, y),
            EngineTensor.Float(new[] { scale }),
            new EngineTensor(OnnxDataType.UInt8, Array.Empty<long>(), new[] { (byte)zp }),
        };
    }

    // ---- convolution ----
    static void WindowValues(string name, long[] values, int count, long min)
    {
        if (values.Length != count) throw new ArgumentException($"{name} has {values.Length} values; {count} are expected.");
        foreach (var v in values)
            if (v < min || v > 1 << 20) throw new ArgumentException($"{name} holds {v}, outside {min}..{1 << 20}.");
    }

    static ConvGeometry Geometry(NodeProto n, long[] xDims, long[] wDims, bool pool, long[]? kernel = null)
    {
        int spatial = xDims.Length - 2;
        if (spatial < 1 || spatial > 2) throw new ArgumentException($"only 1-D and 2-D windows are supported (input rank {xDims.Length}).");
        long[] k = kernel ?? Ints(n, "kernel_shape") ?? wDims.Skip(2).ToArray();
        long[] strides = Ints(n, "strides") ?? Enumerable.Repeat(1L, spatial).ToArray();
        long[] dil = Ints(n, "dilations") ?? Enumerable.Repeat(1L, spatial).ToArray();
        long[] pads = Ints(n, "pads") ?? new long[2 * spatial];
        // Attributes are untrusted: wrong lengths or values outside int (a stride of 2^40 truncates to 0) are refused
        // here rather than failing inside the kernels (found by the fuzz harness).
        WindowValues("kernel_shape", k, spatial, 1);
        WindowValues("strides", strides, spatial, 1);
        WindowValues("dilations", dil, spatial, 1);
        WindowValues("pads", pads, 2 * spatial, 0);
        string autoPad = Str(n, "auto_pad", "NOTSET");
        long[] inSp = xDims.Skip(2).ToArray();
        if (autoPad is "SAME_UPPER" or "SAME_LOWER")
        {
            pads = new long[2 * spatial];
            for (int d = 0; d < spatial; d++)
            {
                long outSize = (inSp[d] + strides[d] - 1) / strides[d];
                long total = Math.Max(0, (outSize - 1) * strides[d] + dil[d] * (k[d] - 1) + 1 - inSp[d]);
                pads[d] = autoPad == "SAME_UPPER" ? total / 2 : total - total / 2;
                pads[d + spatial] = total - pads[d];
            }
        }
        else if (autoPad == "VALID") pads = new long[2 * spatial];
        if (Int(n, "ceil_mode", 0) != 0) throw new ArgumentException("ceil_mode is not supported.");
        if (spatial == 1)
            return new ConvGeometry((int)xDims[0], (int)xDims[1], 1, (int)xDims[2], pool ? (int)xDims[1] : (int)wDims[0], 1, (int)k[0],
                1, (int)strides[0], 0, (int)pads[0], 0, (int)pads[1], 1, (int)dil[0], (int)Int(n, "group", 1));
        return new ConvGeometry((int)xDims[0], (int)xDims[1], (int)xDims[2], (int)xDims[3], pool ? (int)xDims[1] : (int)wDims[0],
            (int)k[0], (int)k[1], (int)strides[0], (int)strides[1], (int)pads[0], (int)pads[1], (int)pads[2], (int)pads[3],
            (int)dil[0], (int)dil[1], (int)Int(n, "group", 1));
    }

    static long[] OutDims(ConvGeometry g, int rank) => rank == 3
        ? new long[] { g.Batch, g.OutChannels, g.OutW }
        : new long[] { g.Batch, g.OutChannels, g.OutH, g.OutW };

    static PackedConvWeights ConvWeights(NodeProto n, EngineTensor w, int[] wz, ConvGeometry g, Dictionary<NodeProto, object> cache)
    {
        lock (cache)
        {
            // Packed once per node for constant weights (the cache keeps the tensor the packing came from).
            if (cache.TryGetValue(n, out var o) && o is (EngineTensor from, PackedConvWeights p) && ReferenceEquals(from, w) && p.Shape == g) return p;
            p = w.IsUInt8 ? PackedConvWeights.Pack<byte>(w.Bytes, wz, g)
                : EqualZeroPointRemoved(w.SBytes, wz) is { } shifted ? PackedConvWeights.Pack<sbyte>(shifted, new int[wz.Length], g)
                : PackedConvWeights.Pack<sbyte>(w.SBytes, wz, g);
            cache[n] = (w, p);
            return p;
        }
    }

    /// <summary>int8 weights whose zero points are all one nonzero value z (as -ConvKernel Gemm writes, z = -1)
    /// are the same as w - z with zero point 0 when every w - z fits in int8: packed that way, they take the
    /// symmetric kernels (AMX tiles among them). Null when that does not apply.</summary>
    static sbyte[]? EqualZeroPointRemoved(sbyte[] w, int[] wz)
    {
        if (wz.Length == 0 || wz[0] == 0 || wz.Any(z => z != wz[0])) return null;
        int z = wz[0];
        var shifted = new sbyte[w.Length];
        for (int i = 0; i < w.Length; i++)
        {
            int v = w[i] - z;
            if (v is < sbyte.MinValue or > sbyte.MaxValue) return null;
            shifted[i] = (sbyte)v;
        }
        return shifted;
    }

    /// <summary>u8 x s8 under saturating emulation, except depthwise convolutions: MLAS's depthwise kernels
    /// (MlasConvDepthwiseKernelAvx2, MlasConvSymDepthwiseKernelAvx2) widen to 16/32 bits and are exact.</summary>
    static bool SaturatingConvApplies(Dictionary<NodeProto, object> cache, EngineTensor xt, EngineTensor w, ConvGeometry g) =>
        Saturating(cache, xt, w) && !(g.GroupChannels == 1 && g.GroupOutChannels == 1);

    /// <summary>How ONNX Runtime's QLinearConv pairs K on x86 without VNNI. MlasConvSymPackWSize (convsym.cpp)
    /// accepts the symmetric kernel for one group, all weight zero points 0, input channels a multiple of 4 and
    /// output channels a multiple of 8 and at least 16: pairs are two channels of one kernel position. Otherwise
    /// im2col (NHWC, K = (ki, kj, c)) + QGEMM: K paired flat.</summary>
    internal static ConvPairing OrtConvPairing(ConvGeometry g, int[] wz) =>
        g.Group == 1 && wz.All(z => z == 0) && g.GroupChannels % 4 == 0 && g.GroupOutChannels % 8 == 0 && g.GroupOutChannels >= 16
            ? ConvPairing.PerKernelPosition : ConvPairing.FlatK;

    /// <summary>The saturated int32 sums (raw stored codes multiplied, zero points corrected exactly).</summary>
    static int[] SaturatingConvAccumulate(NodeProto n, EngineTensor xt, int xz, EngineTensor w, int[] wz, ConvGeometry g, Dictionary<NodeProto, object> cache, int[]? bias = null)
    {
        SaturatingConvWeights packed;
        lock (cache)
        {
            if (cache.TryGetValue(n, out var o) && o is (EngineTensor from, SaturatingConvWeights p) && ReferenceEquals(from, w) && p.Shape == g) packed = p;
            else
            {
                packed = SaturatingConvWeights.Pack(w.SBytes, wz, g, OrtConvPairing(g, wz));
                cache[n] = (w, packed);
            }
        }
        var acc = Buffer<int>(cache, (long)g.Batch * g.OutChannels * g.OutH * g.OutW);
        SaturatingConv.Run(Kernels(cache), xt.Bytes, xz, packed, acc, bias);
        return acc;
    }

    static int[] ConvAccumulate(NodeProto n, EngineTensor xt, int xz, EngineTensor w, int[] wz, Dictionary<NodeProto, object> cache, out ConvGeometry g)
    {
        g = Geometry(n, xt.Dims, w.Dims, false);
        if (g.Channels / g.Group * g.KernelH * g.KernelW * g.OutChannels != w.Length) throw new ArgumentException("the weight shape does not match the input channels and group.");
        // ConvInteger stays exact under saturating emulation: ONNX Runtime's CPU kernel (conv_integer.cc) is registered
        // for uint8 weights only, and its GEMM (weights as A, NCHW im2col as B) is then u8 x u8, which MLAS widens to
        // int16 (vpmaddwd): exact. It has no u8 x s8 form to emulate.
        var packed = ConvWeights(n, w, wz, g, cache);
        var acc = Buffer<int>(cache, (long)g.Batch * g.OutChannels * g.OutH * g.OutW);
        if (xt.IsUInt8) QConv.Run<byte>(Kernels(cache), xt.Bytes, xz, packed, acc);
        else QConv.Run<sbyte>(Kernels(cache), xt.SBytes, xz, packed, acc);
        return acc;
    }

    static EngineTensor[] ConvInteger(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var xt = Need(x, 0, n); var w = Need(x, 1, n);
        int xz = Opt(x, 2)?.IntAt(0) ?? 0;
        // ONNX Runtime's ConvInteger takes uint8 weights only (u8 x u8: exact); int8 weights come from LayerReplay's
        // unrounded sums of a QLinearConv, which saturate where that QLinearConv does.
        var g0 = Geometry(n, xt.Dims, w.Dims, false);
        if (SaturatingConvApplies(cache, xt, w, g0))
            return new[] { new EngineTensor(OnnxDataType.Int32, OutDims(g0, xt.Dims.Length), SaturatingConvAccumulate(n, xt, xz, w, Zeros(Opt(x, 3), g0.OutChannels), g0, cache)) };
        var acc = ConvAccumulate(n, xt, xz, w, Zeros(Opt(x, 3), 1), cache, out var g);
        return new[] { new EngineTensor(OnnxDataType.Int32, OutDims(g, xt.Dims.Length), acc) };
    }

    /// <summary>QLinearConv(x, xs, xz, w, ws, wz, ys, yz, [bias, [bias scale]]): the accumulator plus bias,
    /// requantized per output channel with multiplier xs * ws[c] / ys. A bias whose scale is not xs * ws[c] (QDQ
    /// models may store another) is rescaled to it first.</summary>
    static EngineTensor[] QLinearConv(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var xt = Need(x, 0, n); float xs = Need(x, 1, n).FloatAt(0); int xz = Opt(x, 2)?.IntAt(0) ?? 0;
        var w = Need(x, 3, n); var ws = Scales(Need(x, 4, n)); var wz = Zeros(Opt(x, 5), ws.Length);
        float ys = Need(x, 6, n).FloatAt(0); var yzT = Opt(x, 7); int yz = yzT?.IntAt(0) ?? 0;
        var g = Geometry(n, xt.Dims, w.Dims, false);
        if (g.Channels / g.Group * g.KernelH * g.KernelW * g.OutChannels != w.Length) throw new ArgumentException("the weight shape does not match the input channels and group.");
        var mult = new float[g.OutChannels];
        for (int c = 0; c < g.OutChannels; c++) mult[c] = xs * ws[ws.Length == 1 ? 0 : c] / ys;
        var bias = Opt(x, 8) is { } b ? Bias(b, Opt(x, 9), xs, ws, g.OutChannels) : null;
        bool relu = Int(n, "ptq_relu", 0) != 0;
        var dims = OutDims(g, xt.Dims.Length);
        long count = (long)g.Batch * g.OutChannels * g.OutH * g.OutW;
        if (SaturatingConvApplies(cache, xt, w, g))
        {
            // ONNX Runtime without VNNI: saturated raw sums, then bias and the same float32 requantization.
            var acc = SaturatingConvAccumulate(n, xt, xz, w, wz, g, cache, bias);
            var requantized = Requant(acc, mult, (long)g.OutH * g.OutW, yz, yzT?.Type ?? xt.Type, dims, relu, cache);
            Done(cache, acc);
            return new[] { requantized };
        }
        var packed = ConvWeights(n, w, wz, g, cache);
        // One fused pass: convolution, bias, requantization and ReLU (native VNNI when present).
        if ((yzT?.Type ?? xt.Type) == OnnxDataType.Int8)
        {
            var y = Buffer<sbyte>(cache, count);
            if (xt.IsUInt8) QConv.RunRequantized<byte, sbyte>(Kernels(cache), xt.Bytes, xz, packed, bias, mult, yz, relu, y);
            else QConv.RunRequantized<sbyte, sbyte>(Kernels(cache), xt.SBytes, xz, packed, bias, mult, yz, relu, y);
            return new[] { new EngineTensor(OnnxDataType.Int8, dims, y) };
        }
        var u = Buffer<byte>(cache, count);
        if (xt.IsUInt8) QConv.RunRequantized<byte, byte>(Kernels(cache), xt.Bytes, xz, packed, bias, mult, yz, relu, u);
        else QConv.RunRequantized<sbyte, byte>(Kernels(cache), xt.SBytes, xz, packed, bias, mult, yz, relu, u);
        return new[] { new EngineTensor(OnnxDataType.UInt8, dims, u) };
    }

    static int[] Bias(EngineTensor bias, EngineTensor? biasScale, float xs, float[] ws, int channels)
    {
        var b = bias.Ints;
        if (b.Length != channels) throw new ArgumentException($"the bias has {b.Length} values for {channels} channels.");
        if (biasScale is null) return b;
        var bs = biasScale.Floats;
        var r = new int[channels];
        for (int c = 0; c < channels; c++)
        {
            float want = xs * ws[ws.Length == 1 ? 0 : c], have = bs[bs.Length == 1 ? 0 : c];
            r[c] = want == have ? b[c] : (int)Math.Clamp(Math.Round((double)b[c] * have / want, MidpointRounding.ToEven), int.MinValue, int.MaxValue);
        }
        return r;
    }

    static void AddBias(int[] acc, int[] bias, int batch, int channels, int inner)
    {
        for (int nb = 0; nb < batch; nb++)
            for (int c = 0; c < channels; c++)
            {
                int b = bias[c], o = (nb * channels + c) * inner;
                for (int p = 0; p < inner; p++) acc[o + p] += b;
            }
    }

    static EngineTensor Requant(int[] acc, float[] mult, long inner, int yz, OnnxDataType type, long[] dims, bool relu, Dictionary<NodeProto, object> cache)
    {
        if (type == OnnxDataType.Int8)
        {
            var y = Buffer<sbyte>(cache, acc.Length);
            QuantizeKernels.Requantize<sbyte>(Kernels(cache), acc, mult, yz, inner, y);
            if (relu) for (int i = 0; i < y.Length; i++) if (y[i] < yz) y[i] = (sbyte)yz;
            return new EngineTensor(type, dims, y);
        }
        var u = Buffer<byte>(cache, acc.Length);
        QuantizeKernels.Requantize<byte>(Kernels(cache), acc, mult, yz, inner, u);
        if (relu) for (int i = 0; i < u.Length; i++) if (u[i] < yz) u[i] = (byte)yz;
        return new EngineTensor(OnnxDataType.UInt8, dims, u);
    }

    // ---- matrix products ----
    /// <summary>A [..., M, K] x B [K, N] or [..., K, N] (same leading dims) in int32.</summary>
    static int[] MatMulAccumulate(NodeProto n, EngineTensor a, int az, EngineTensor b, int[] bz, Dictionary<NodeProto, object> cache, out long[] dims, out int cols)
    {
        if (a.Dims.Length < 1 || b.Dims.Length < 2) throw new ArgumentException("MatMul needs A of rank >= 1 and B of rank >= 2.");
        int k = (int)a.Dims[^1], kb = (int)b.Dims[^2], nCols = (int)b.Dims[^1];
        if (k != kb) throw new ArgumentException($"A has {k} columns but B has {kb} rows.");
        int m = a.Dims.Length >= 2 ? (int)a.Dims[^2] : 1;
        long batchA = a.Length / ((long)m * k), batchB = b.Length / ((long)k * nCols);
        if (batchB != 1 && batchB != batchA) throw new ArgumentException("the batch dimensions of A and B differ.");
        var lead = (a.Dims.Length >= b.Dims.Length ? a.Dims : b.Dims)[..^2];
        dims = a.Dims.Length == 1 ? new long[] { nCols } : lead.Concat(new long[] { m, nCols }).ToArray();
        var c = Buffer<int>(cache, batchA * m * nCols);
        if (Saturating(cache, a, b))
        {
            // ONNX Runtime without VNNI (MlasGemmU8S8KernelAvx2 / Avx512Core): K paired flat, raw codes.
            var sat = new SaturatingPackedWeights[batchB];
            lock (cache)
            {
                if (cache.TryGetValue(n, out var o) && o is (EngineTensor from, SaturatingPackedWeights[] p) && ReferenceEquals(from, b)) sat = p;
                else
                {
                    for (int i = 0; i < batchB; i++) sat[i] = SaturatingPackedWeights.Pack(b.SBytes.AsSpan(i * k * nCols, k * nCols), k, nCols, bz);
                    cache[n] = (b, sat);
                }
            }
            for (long i = 0; i < batchA; i++)
                SaturatingGemm.Multiply(Kernels(cache), a.Bytes.AsSpan((int)(i * m * k), m * k), az, m, sat[batchB == 1 ? 0 : i], c.AsSpan((int)(i * m * nCols), m * nCols));
            cols = nCols;
            return c;
        }
        var packs = new PackedWeights[batchB];
        lock (cache)
        {
            if (cache.TryGetValue(n, out var o) && o is (EngineTensor from, PackedWeights[] p) && ReferenceEquals(from, b)) packs = p;
            else
            {
                for (int i = 0; i < batchB; i++)
                    packs[i] = b.IsUInt8 ? PackedWeights.Pack(b.Bytes.AsSpan(i * k * nCols, k * nCols), k, nCols, bz)
                        : PackedWeights.Pack(b.SBytes.AsSpan(i * k * nCols, k * nCols), k, nCols, bz);
                cache[n] = (b, packs);
            }
        }
        for (long i = 0; i < batchA; i++)
        {
            var cs = c.AsSpan((int)(i * m * nCols), m * nCols);
            var pk = packs[batchB == 1 ? 0 : i];
            if (a.IsUInt8) QGemm.Multiply(Kernels(cache), a.Bytes.AsSpan((int)(i * m * k), m * k), az, m, pk, cs);
            else QGemm.Multiply(Kernels(cache), a.SBytes.AsSpan((int)(i * m * k), m * k), az, m, pk, cs);
        }
        cols = nCols;
        return c;
    }

    static EngineTensor[] MatMulInteger(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var a = Need(x, 0, n); var b = Need(x, 1, n);
        var azT = Opt(x, 2);
        if (azT is { Length: > 1 }) throw new ArgumentException("a per-row a_zero_point is not supported.");
        var c = MatMulAccumulate(n, a, azT?.IntAt(0) ?? 0, b, Zeros(Opt(x, 3), 1), cache, out var dims, out _);
        return new[] { new EngineTensor(OnnxDataType.Int32, dims, c) };
    }

    static EngineTensor[] QLinearMatMul(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var a = Need(x, 0, n); float sa = Need(x, 1, n).FloatAt(0); int az = Opt(x, 2)?.IntAt(0) ?? 0;
        var b = Need(x, 3, n); var sb = Scales(Need(x, 4, n)); var bz = Zeros(Opt(x, 5), sb.Length);
        float sy = Need(x, 6, n).FloatAt(0); var yzT = Opt(x, 7);
        var c = MatMulAccumulate(n, a, az, b, bz, cache, out var dims, out int cols);
        var mult = sb.Select(s => sa * s / sy).ToArray();
        // Per-column multipliers: channel = index % N, i.e. "inner" 1 over N channels.
        var y = Requant(c, mult, 1, yzT?.IntAt(0) ?? 0, yzT?.Type ?? a.Type, dims, Int(n, "ptq_relu", 0) != 0, cache);
        Done(cache, c);
        return new[] { y };
    }

    /// <summary>QGemm(a, as, az, b, bs, bz, [c, cs], [ys, yz]) with transB; float output when ys is absent.</summary>
    static EngineTensor[] QGemm_(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        if (Int(n, "transA", 0) != 0) throw new ArgumentException("transA is not supported.");
        if (Float(n, "alpha", 1f) != 1f || Float(n, "beta", 1f) != 1f) throw new ArgumentException("alpha and beta other than 1 are not supported.");
        var a = Need(x, 0, n); float sa = Need(x, 1, n).FloatAt(0); int az = Opt(x, 2)?.IntAt(0) ?? 0;
        var b = Need(x, 3, n); var sb = Scales(Need(x, 4, n)); var bz = Zeros(Opt(x, 5), sb.Length);
        if (Int(n, "transB", 0) != 0) b = Transposed(n, b, cache);
        var c = MatMulAccumulate(n, a, az, b, bz, cache, out var dims, out int cols);
        if (Opt(x, 6) is { } bias)
        {
            var bi = Bias(bias, Opt(x, 7), sa, sb, cols);
            for (int i = 0; i < c.Length; i++) c[i] += bi[i % cols];
        }
        if (Opt(x, 8) is { } ysT)
        {
            var yzT = Opt(x, 9);
            var mult = sb.Select(s => sa * s / ysT.FloatAt(0)).ToArray();
            var q = Requant(c, mult, 1, yzT?.IntAt(0) ?? 0, yzT?.Type ?? a.Type, dims, Int(n, "ptq_relu", 0) != 0, cache);
            Done(cache, c);
            return new[] { q };
        }
        var y = Buffer<float>(cache, c.Length);
        for (int i = 0; i < c.Length; i++) y[i] = c[i] * (sa * sb[sb.Length == 1 ? 0 : i % cols]);
        Done(cache, c);
        return new[] { EngineTensor.Float(y, dims) };
    }

    static EngineTensor Transposed(NodeProto n, EngineTensor b, Dictionary<NodeProto, object> cache)
    {
        var key = new NodeProto { Name = n.Name + "\u0000transposed" };
        lock (cache)
        {
            foreach (var kv in cache)
                if (kv.Key.Name == key.Name && kv.Value is (EngineTensor from, EngineTensor t) && ReferenceEquals(from, b)) return t;
            int rows = (int)b.Dims[0], cols = (int)b.Dims[1];
            Array data = b.IsUInt8 ? new byte[b.Length] : new sbyte[b.Length];
            if (b.IsUInt8) { var ub = b.Bytes; var d = (byte[])data; for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) d[j * rows + i] = ub[i * cols + j]; }
            else { var sb = b.SBytes; var d = (sbyte[])data; for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) d[j * rows + i] = sb[i * cols + j]; }
            var tr = new EngineTensor(b.Type, new[] { (long)cols, rows }, data);
            cache[key] = (b, tr);
            return tr;
        }
    }

    // ---- element-wise and pooling ----
    static EngineTensor[] QLinearAdd(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var a = Need(x, 0, n); float sa = Need(x, 1, n).FloatAt(0); int za = Opt(x, 2)?.IntAt(0) ?? 0;
        var b = Need(x, 3, n); float sb = Need(x, 4, n).FloatAt(0); int zb = Opt(x, 5)?.IntAt(0) ?? 0;
        float sc = Need(x, 6, n).FloatAt(0); int zc = Opt(x, 7)?.IntAt(0) ?? 0;
        if (b.Length > a.Length) (a, sa, za, b, sb, zb) = (b, sb, zb, a, sa, za);
        if (b.Length != a.Length && b.Length != 1) throw new ArgumentException("only same-shape or scalar broadcasting is supported in QLinearAdd.");
        bool relu = Int(n, "ptq_relu", 0) != 0;
        if (a.Type == OnnxDataType.Int8)
        {
            var c = Buffer<sbyte>(cache, a.Length);
            QElementwise.Add<sbyte>(Kernels(cache), a.SBytes, sa, za, b.SBytes, sb, zb, sc, zc, c);
            if (relu) for (int i = 0; i < c.Length; i++) if (c[i] < zc) c[i] = (sbyte)zc;
            return new[] { new EngineTensor(a.Type, a.Dims, c) };
        }
        var u = Buffer<byte>(cache, a.Length);
        QElementwise.Add<byte>(Kernels(cache), a.Bytes, sa, za, b.Bytes, sb, zb, sc, zc, u);
        if (relu) for (int i = 0; i < u.Length; i++) if (u[i] < zc) u[i] = (byte)zc;
        return new[] { new EngineTensor(a.Type, a.Dims, u) };
    }

    static EngineTensor[] QLinearGlobalAveragePool(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var t = Need(x, 0, n); float sx = Need(x, 1, n).FloatAt(0); int zx = Opt(x, 2)?.IntAt(0) ?? 0;
        float sy = Need(x, 3, n).FloatAt(0); var yzT = Opt(x, 4); int zy = yzT?.IntAt(0) ?? 0;
        if (Int(n, "channels_last", 0) != 0) throw new ArgumentException("channels_last is not supported.");
        int nc = (int)(t.Dims[0] * t.Dims[1]), spatial = (int)(t.Length / nc);
        var dims = t.Dims.Select((d, i) => i < 2 ? d : 1L).ToArray();
        if (t.Type == OnnxDataType.Int8)
        {
            var y = new sbyte[nc];
            QElementwise.GlobalAveragePool<sbyte>(t.SBytes, sx, zx, nc, spatial, sy, zy, y);
            return new[] { new EngineTensor(t.Type, dims, y) };
        }
        var u = new byte[nc];
        QElementwise.GlobalAveragePool<byte>(t.Bytes, sx, zx, nc, spatial, sy, zy, u);
        return new[] { new EngineTensor(t.Type, dims, u) };
    }

    static EngineTensor[] QLinearAveragePool(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var t = Need(x, 0, n); float sx = Need(x, 1, n).FloatAt(0); int zx = Opt(x, 2)?.IntAt(0) ?? 0;
        float sy = Need(x, 3, n).FloatAt(0); int zy = Opt(x, 4)?.IntAt(0) ?? 0;
        var g = Geometry(n, t.Dims, Array.Empty<long>(), true);
        bool include = Int(n, "count_include_pad", 0) != 0;
        var dims = OutDims(g, t.Dims.Length);
        if (t.Type == OnnxDataType.Int8)
        {
            var y = new sbyte[TensorData.ElementCount(dims)];
            QElementwise.AveragePool<sbyte>(t.SBytes, sx, zx, g, include, sy, zy, y);
            return new[] { new EngineTensor(t.Type, dims, y) };
        }
        var u = new byte[TensorData.ElementCount(dims)];
        QElementwise.AveragePool<byte>(t.Bytes, sx, zx, g, include, sy, zy, u);
        return new[] { new EngineTensor(t.Type, dims, u) };
    }

    static EngineTensor[] MaxPool(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var t = Need(x, 0, n);
        if (n.Output.Count > 1 && n.Output[1].Length > 0) throw new ArgumentException("the Indices output of MaxPool is not supported.");
        var g = Geometry(n, t.Dims, Array.Empty<long>(), true);
        var dims = OutDims(g, t.Dims.Length);
        long count = TensorData.ElementCount(dims);
        switch (t.Data)
        {
            case byte[] when t.IsUInt8: { var y = Buffer<byte>(cache, count); QElementwise.MaxPool<byte>(Kernels(cache), t.Bytes, g, y); return new[] { new EngineTensor(t.Type, dims, y) }; }
            case sbyte[] when t.IsInt8: { var y = Buffer<sbyte>(cache, count); QElementwise.MaxPool<sbyte>(Kernels(cache), t.SBytes, g, y); return new[] { new EngineTensor(t.Type, dims, y) }; }
            case float[] f:
            {
                var y = new float[count];
                int oh = g.OutH, ow = g.OutW;
                for (int nc = 0; nc < g.Batch * g.Channels; nc++)
                    for (int i = 0; i < oh; i++)
                        for (int j = 0; j < ow; j++)
                        {
                            float best = float.NegativeInfinity;
                            for (int ki = 0; ki < g.KernelH; ki++)
                                for (int kj = 0; kj < g.KernelW; kj++)
                                {
                                    int ih = i * g.StrideH - g.PadTop + ki * g.DilationH, iw = j * g.StrideW - g.PadLeft + kj * g.DilationW;
                                    if (ih >= 0 && ih < g.Height && iw >= 0 && iw < g.Width) best = Math.Max(best, f[(nc * g.Height + ih) * g.Width + iw]);
                                }
                            y[(nc * oh + i) * ow + j] = best;
                        }
                return new[] { EngineTensor.Float(y, dims) };
            }
            default: throw new ArgumentException($"MaxPool of {t.Type} is not supported.");
        }
    }

    static EngineTensor[] AveragePool(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var t = Need(x, 0, n); var f = t.Floats;
        var g = Geometry(n, t.Dims, Array.Empty<long>(), true);
        bool include = Int(n, "count_include_pad", 0) != 0;
        var dims = OutDims(g, t.Dims.Length);
        var y = new float[TensorData.ElementCount(dims)];
        int oh = g.OutH, ow = g.OutW;
        for (int nc = 0; nc < g.Batch * g.Channels; nc++)
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++)
                {
                    float sum = 0; int count = 0;
                    for (int ki = 0; ki < g.KernelH; ki++)
                        for (int kj = 0; kj < g.KernelW; kj++)
                        {
                            int ih = i * g.StrideH - g.PadTop + ki * g.DilationH, iw = j * g.StrideW - g.PadLeft + kj * g.DilationW;
                            if (ih >= 0 && ih < g.Height && iw >= 0 && iw < g.Width) { sum += f[(nc * g.Height + ih) * g.Width + iw]; count++; }
                            else if (include) count++;
                        }
                    y[(nc * oh + i) * ow + j] = sum / count;
                }
        return new[] { EngineTensor.Float(y, dims) };
    }

    static EngineTensor[] GlobalAveragePool(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var t = Need(x, 0, n); var f = t.Floats;
        int nc = (int)(t.Dims[0] * t.Dims[1]), spatial = (int)(t.Length / nc);
        var y = new float[nc];
        for (int c = 0; c < nc; c++) { float s = 0; for (int p = 0; p < spatial; p++) s += f[c * spatial + p]; y[c] = s / spatial; }
        return new[] { EngineTensor.Float(y, t.Dims.Select((d, i) => i < 2 ? d : 1L).ToArray()) };
    }

    static EngineTensor[] Relu(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var t = Need(x, 0, n);
        var y = t.Floats.Select(v => v > 0 ? v : 0f).ToArray();
        return new[] { EngineTensor.Float(y, t.Dims) };
    }

    static EngineTensor[] Clip(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var t = Need(x, 0, n);
        float lo = Opt(x, 1)?.FloatAt(0) ?? Float(n, "min", float.MinValue), hi = Opt(x, 2)?.FloatAt(0) ?? Float(n, "max", float.MaxValue);
        var y = t.Floats.Select(v => Math.Clamp(v, lo, hi)).ToArray();
        return new[] { EngineTensor.Float(y, t.Dims) };
    }

    static EngineTensor[] Flatten(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var t = Need(x, 0, n);
        int axis = (int)Int(n, "axis", 1);
        if (axis < 0) axis += t.Dims.Length;
        long outer = 1;
        for (int d = 0; d < axis; d++) outer *= t.Dims[d];
        return new[] { t.Reshaped(new[] { outer, outer == 0 ? 0 : t.Length / outer }) };
    }

    static EngineTensor[] Reshape(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var t = Need(x, 0, n); var shape = Need(x, 1, n).Longs.ToArray();
        bool allowZero = Int(n, "allowzero", 0) != 0;
        int minus = -1;
        long known = 1;
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] == 0 && !allowZero) shape[i] = t.Dims[i];
            if (shape[i] == -1) { if (minus >= 0) throw new ArgumentException("Reshape has two -1 dimensions."); minus = i; }
            else known *= shape[i];
        }
        if (minus >= 0) shape[minus] = known == 0 ? 0 : t.Length / known;
        if (TensorData.ElementCount(shape) != t.Length) throw new ArgumentException($"cannot reshape {t.Length} values to [{string.Join(",", shape)}].");
        return new[] { t.Reshaped(shape) };
    }

    static EngineTensor[] Concat(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var parts = x.Where(t => t is not null).Select(t => t!).ToArray();
        var first = parts[0];
        int axis = Axis(n, first.Dims.Length, 0);
        if (parts.Any(p => p.Type != first.Type || p.Dims.Length != first.Dims.Length)) throw new ArgumentException("Concat inputs differ in type or rank.");
        long outer = 1;
        for (int d = 0; d < axis; d++) outer *= first.Dims[d];
        var dims = (long[])first.Dims.Clone();
        dims[axis] = parts.Sum(p => p.Dims[axis]);
        var data = Array.CreateInstance(first.Data.GetType().GetElementType()!, TensorData.ElementCount(dims));
        long offset = 0;
        long rowOut = data.Length / Math.Max(outer, 1);
        foreach (var p in parts)
        {
            long row = p.Length / Math.Max(outer, 1);
            for (long o = 0; o < outer; o++) Array.Copy(p.Data, o * row, data, o * rowOut + offset, row);
            offset += row;
        }
        return new[] { new EngineTensor(first.Type, dims, data) };
    }

    /// <summary>Cast to float (from float, int32, int64, uint8 or int8): the dequantization tail of
    /// DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul.</summary>
    static EngineTensor[] Cast(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var t = Need(x, 0, n);
        long to = Int(n, "to", 0);
        if (to != (long)OnnxDataType.Float) throw new ArgumentException($"Cast to {OnnxDataTypes.Name((int)to)} is not supported (only to float).");
        var y = Buffer<float>(cache, t.Length);
        switch (t.Data)
        {
            case float[] f: f.CopyTo(y, 0); break;
            case int[] v: for (int i = 0; i < y.Length; i++) y[i] = v[i]; break;
            case long[] l: for (int i = 0; i < y.Length; i++) y[i] = l[i]; break;
            case byte[] when t.IsUInt8: { var b = t.Bytes; for (int i = 0; i < y.Length; i++) y[i] = b[i]; break; }
            case sbyte[] when t.IsInt8: { var b = t.SBytes; for (int i = 0; i < y.Length; i++) y[i] = b[i]; break; }
            default: throw new ArgumentException($"Cast from {t.Type} is not supported.");
        }
        return new[] { EngineTensor.Float(y, t.Dims) };
    }

    /// <summary>Float Mul with multidirectional (NumPy) broadcasting; one IEEE float32 product per element
    /// (<see cref="FloatOps.Multiply(ReadOnlySpan{float}, long[], ReadOnlySpan{float}, long[], long[], Span{float})"/>).</summary>
    static EngineTensor[] Mul(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var a = Need(x, 0, n); var b = Need(x, 1, n);
        var dims = FloatOps.BroadcastDims(a.Dims, b.Dims)
            ?? throw new ArgumentException($"Mul cannot broadcast [{string.Join(",", a.Dims)}] with [{string.Join(",", b.Dims)}].");
        var y = Buffer<float>(cache, TensorData.ElementCount(dims));
        FloatOps.Multiply(a.Floats, a.Dims, b.Floats, b.Dims, dims, y);
        return new[] { EngineTensor.Float(y, dims) };
    }

    static EngineTensor[] Gemm(NodeProto n, EngineTensor?[] x, Dictionary<NodeProto, object> cache)
    {
        var a = Need(x, 0, n); var b = Need(x, 1, n); var c = Opt(x, 2);
        bool ta = Int(n, "transA", 0) != 0, tb = Int(n, "transB", 0) != 0;
        float alpha = Float(n, "alpha", 1f), beta = Float(n, "beta", 1f);
        int m = (int)(ta ? a.Dims[1] : a.Dims[0]), k = (int)(ta ? a.Dims[0] : a.Dims[1]), nn = (int)(tb ? b.Dims[0] : b.Dims[1]);
        var af = a.Floats; var bf = b.Floats; var cf = c?.Floats;
        var y = new float[m * nn];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < nn; j++)
            {
                float s = 0;
                for (int kk = 0; kk < k; kk++) s += af[ta ? kk * m + i : i * k + kk] * bf[tb ? j * k + kk : kk * nn + j];
                float bias = cf is null ? 0 : cf.Length == 1 ? cf[0] : cf.Length == nn ? cf[j] : cf[i * nn + j];
                y[i * nn + j] = alpha * s + beta * bias;
            }
        return new[] { EngineTensor.Float(y, m, nn) };
    }
}
