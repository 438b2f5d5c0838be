using System.Runtime.InteropServices;

namespace PtqTools.Core.Kernels;

/// <summary>Geometry of a 2-D convolution or pooling window (1-D is H = 1). Pads are top, left, bottom, right.</summary>
public sealed record ConvGeometry(int Batch, int Channels, int Height, int Width, int OutChannels, int KernelH, int KernelW,
    int StrideH = 1, int StrideW = 1, int PadTop = 0, int PadLeft = 0, int PadBottom = 0, int PadRight = 0,
    int DilationH = 1, int DilationW = 1, int Group = 1)
{
    public int OutH => (Height + PadTop + PadBottom - DilationH * (KernelH - 1) - 1) / StrideH + 1;
    public int OutW => (Width + PadLeft + PadRight - DilationW * (KernelW - 1) - 1) / StrideW + 1;
    public int GroupChannels => Channels / Group;
    public int GroupOutChannels => OutChannels / Group;
    public int PatchSize => GroupChannels * KernelH * KernelW;

    public void Check()
    {
        if (Group <= 0 || Channels % Group != 0 || OutChannels % Group != 0)
            throw new ArgumentException($"group {Group} does not divide {Channels} input and {OutChannels} output channels.");
        // Strides first: OutH and OutW divide by them.
        if (StrideH <= 0 || StrideW <= 0 || DilationH <= 0 || DilationW <= 0) throw new ArgumentException("Strides and dilations must be positive.");
        if (OutH <= 0 || OutW <= 0) throw new ArgumentException($"The window does not fit the {Height}x{Width} input.");
    }
}

/// <summary>Convolution weights [OC, C/group, kh, kw] packed once per group as the right-hand GEMM matrix.
/// Each form (the managed GEMM's, the native direct convolution's, the pre-subtracted int32 weights of the depthwise
/// and scalar loops) is packed on first use by the path that needs it, from the weights themselves (kept by
/// reference when given as an array: no copy), so that a model holds only the forms its kernel path runs.</summary>
public sealed class PackedConvWeights
{
    Array? _source;                   // T[] [OC][patch], byte or sbyte; null once released (read back on demand)
    Func<Array>? _reload;
    readonly bool _unsigned;          // exact: the CLR lets an sbyte[] pass an 'is byte[]' test
    readonly int[] _zeroPoints;       // 1 or OC values
    PackedWeights[]? _groups;
    NativeConvWeights[]? _native;
    int[]? _raw;
    readonly object _sync = new();

    /// <summary>Managed GEMM weights per group (null entries for a depthwise convolution).</summary>
    internal PackedWeights[] Groups => _groups ?? Init(ref _groups, PackGroups);
    /// <summary>w - zero point, [OC][patch], for the depthwise and scalar paths.</summary>
    internal int[] Raw => _raw ?? Init(ref _raw, PackRaw);
    /// <summary>The native direct convolution's weights per group (VNNI, AMX and AVX2 kernels); null when the library
    /// has no convolution for this CPU or the convolution is depthwise.</summary>
    internal NativeConvWeights[]? Native => Depthwise || !(NativeKernels.HasConv || NativeKernels.HasAvx2) ? null : _native ?? Init(ref _native, PackNative);
    internal bool Depthwise { get; }
    public ConvGeometry Shape { get; }

    /// <summary>Bytes of the forms packed so far (not counting the weights themselves).</summary>
    public long PackedBytes
    {
        get
        {
            lock (_sync)
            {
                long bytes = (_raw?.Length ?? 0) * 4L;
                foreach (var p in _groups ?? Array.Empty<PackedWeights>()) if (p is not null) bytes += p.Bytes;
                foreach (var p in _native ?? Array.Empty<NativeConvWeights>()) bytes += p.QuadBytes + (p.Amx?.Length ?? 0) + (p.Taps?.Length ?? 0) + p.Sums.Length * 8L + p.WidenedBytes;
                return bytes;
            }
        }
    }

    PackedConvWeights(ConvGeometry g, Array source, bool unsigned, int[] zeroPoints)
    {
        Shape = g; _source = source; _unsigned = unsigned; _zeroPoints = zeroPoints;
        Depthwise = g.GroupChannels == 1 && g.GroupOutChannels == 1;
    }

    T Init<T>(ref T? field, Func<T> pack) where T : class
    {
        lock (_sync) return field ??= pack();
    }

    /// <summary>Packs a copy of the weights (see the array overload to keep them by reference).</summary>
    public static PackedConvWeights Pack<T>(ReadOnlySpan<T> w, ReadOnlySpan<int> zeroPoints, ConvGeometry g) where T : unmanaged =>
        Pack(w.ToArray(), zeroPoints, g);

    /// <summary>Packs weights the caller will not change afterwards: they are kept by reference, not copied.</summary>
    public static PackedConvWeights Pack<T>(T[] w, ReadOnlySpan<int> zeroPoints, ConvGeometry g) where T : unmanaged
    {
        if (typeof(T) != typeof(byte) && typeof(T) != typeof(sbyte)) throw new NotSupportedException(typeof(T).Name);
        g.Check();
        if (w.Length != (long)g.OutChannels * g.PatchSize) throw new ArgumentException($"The weights hold {w.Length} values; {g.OutChannels}x{g.PatchSize} expected.");
        if (zeroPoints.Length != 1 && zeroPoints.Length != g.OutChannels) throw new ArgumentException($"{zeroPoints.Length} weight zero points for {g.OutChannels} channels.");
        var packed = new PackedConvWeights(g, w, typeof(T) == typeof(byte), zeroPoints.ToArray());
        // Zero points outside the weights' type are refused here, not at the first run.
        if (!packed.Depthwise)
        {
            int min = typeof(T) == typeof(byte) ? 0 : -128, max = min + 255;
            foreach (int z in packed._zeroPoints)
                if (z < min || z > max) throw new ArgumentException($"Weight zero point {z} is outside [{min}, {max}].");
        }
        return packed;
    }

    int ZeroPoint(int oc) => _zeroPoints[_zeroPoints.Length == 1 ? 0 : oc];

    /// <summary>The weights these forms are packed from (read back through the release's function when released).</summary>
    Array Source
    {
        get
        {
            lock (_sync) return _source ??= (_reload ?? throw new InvalidOperationException("Released weights have no way back."))();
        }
    }

    /// <summary>Whether the weights were given as <paramref name="array"/> (kept by reference: no copy).</summary>
    internal bool PackedFrom(Array array) { lock (_sync) return ReferenceEquals(_source, array); }

    /// <summary>Drops the reference to the weights, once the forms the kernel path runs are packed: a form packed later
    /// (another path's, or the depthwise/scalar loop's) reads them back through <paramref name="reload"/>.</summary>
    internal void ReleaseSource(Func<Array> reload)
    {
        lock (_sync) { _reload = reload; _source = null; }
    }

    /// <summary>Keeps one form per group: the native quads go where the widened form was built (the AVX2 kernel on
    /// weights whose pairs could saturate, <see cref="NativeConvWeights.DropQuads"/>), and the GEMM form keeps what
    /// <paramref name="path"/> runs (<see cref="PackedWeights.DropUnusedForms"/>). Returns the bytes let go.</summary>
    internal long DropUnusedForms(KernelPath path)
    {
        lock (_sync)
            return (_native ?? Array.Empty<NativeConvWeights>()).Sum(n => n.DropQuads())
                + (_groups ?? Array.Empty<PackedWeights>()).Sum(p => p?.DropUnusedForms(path) ?? 0);
    }

    int[] PackRaw()
    {
        int patch = Shape.PatchSize;
        var source = Source;
        var raw = new int[source.Length];
        if (_unsigned) { var u = (byte[])source; for (int i = 0; i < raw.Length; i++) raw[i] = u[i] - ZeroPoint(i / patch); }
        else { var s = (sbyte[])source; for (int i = 0; i < raw.Length; i++) raw[i] = s[i] - ZeroPoint(i / patch); }
        return raw;
    }

    PackedWeights[] PackGroups()
    {
        var g = Shape;
        int patch = g.PatchSize, ocg = g.GroupOutChannels;
        var groups = new PackedWeights[g.Group];
        if (Depthwise) return groups;
        // The quads of the GEMM form serve the native VNNI GEMM where the library has no direct convolution, and the
        // ARM64 SDOT GEMM.
        bool quads = (NativeKernels.Available && !NativeKernels.HasConv) || ArmKernels.Supported;
        var source = Source;
        for (int gi = 0; gi < g.Group; gi++)
        {
            var zp = new int[ocg];
            for (int j = 0; j < ocg; j++) zp[j] = ZeroPoint(gi * ocg + j);
            int first = gi * ocg;
            // Column j of group gi's GEMM matrix is output channel gi * ocg + j; row k is its patch element k.
            groups[gi] = _unsigned
                ? PackedWeights.Pack(patch, ocg, (k, j) => ((byte[])source)[(first + j) * patch + k], zp, unsigned: true, quads)
                : PackedWeights.Pack(patch, ocg, (k, j) => ((sbyte[])source)[(first + j) * patch + k], zp, unsigned: false, quads);
        }
        return groups;
    }

    NativeConvWeights[] PackNative()
    {
        var native = new NativeConvWeights[Shape.Group];
        var source = Source;
        for (int gi = 0; gi < Shape.Group; gi++)
            native[gi] = _unsigned ? NativeConvWeights.Pack<byte>((byte[])source, _zeroPoints, Shape, gi) : NativeConvWeights.Pack<sbyte>((sbyte[])source, _zeroPoints, Shape, gi);
        return native;
    }
}

/// <summary>One group's weights for the native direct convolution: signed bytes [OC/group rounded up to 8][kq][4],
/// where quad q = (channel quad * kh + ki) * kw + kj holds 4 input channels of one tap (unsigned weights stored minus
/// 128). Missing channels hold the zero point, so they add nothing; the sums drive the zero-point correction.</summary>
internal sealed class NativeConvWeights
{
    public int Kq { get; }
    public int ChannelQuads { get; }
    /// <summary>The quads. Dropped by <see cref="DropQuads"/> once the widened form holds the same weights (the AVX2
    /// kernel then reads only that); rebuilt from it, exactly, if read again.</summary>
    public sbyte[] Data => Volatile.Read(ref _data) ?? QuadsFromWidened();
    sbyte[]? _data;
    readonly object _sync = new();
    /// <summary>Bytes of the quads held now.</summary>
    public long QuadBytes => Volatile.Read(ref _data)?.Length ?? 0;
    public int[] Sums { get; }
    public int[] Zeros { get; }
    public bool AnyZero { get; }
    /// <summary>For the AMX kernel (symmetric weights, 64+ channels): [oc rounded up to 32][tap][channel
    /// quads rounded up to 16][4], zero padded; null when it does not apply.</summary>
    public sbyte[]? Amx { get; private set; }
    public int AmxChannelQuads { get; private set; }
    public int AmxOffset { get; private set; }
    /// <summary>Whether no adjacent pair of the quads can saturate vpmaddubsw: the AVX2 kernel then runs on the quads
    /// ("7-bit pairs"); otherwise on <see cref="Widened"/>.</summary>
    public bool SevenBitPairs { get; }
    public int KernelH { get; }
    public int KernelW { get; }
    /// <summary>Channel pairs per tap and K pairs (channel pairs x taps) of the widened form.</summary>
    public int ChannelPairs => (Channels + 1) / 2;
    public int KPairs => ChannelPairs * KernelH * KernelW;
    public int Channels { get; }
    /// <summary>For the VNNI kernel where few channels would leave channel quads mostly padding (the image stem's 3):
    /// [OC rounded up to 8][<see cref="TapKq"/>][4], quad q = (c * kh + ki) * ceil(kw / 4) + jq holding taps 4 jq ..
    /// 4 jq + 3 of channel c (the zero point past kw, so those slots add nothing whatever input they meet); null where
    /// it would not take fewer quads than <see cref="Data"/>.</summary>
    public sbyte[]? Taps { get; private set; }
    public int TapKq { get; private set; }
    public int[]? TapSums { get; private set; }
    short[]? _widened;
    /// <summary>Bytes of the widened form, where built.</summary>
    public long WidenedBytes => (Volatile.Read(ref _widened)?.Length ?? 0) * 2L;

    /// <summary>The widened form for the AVX2 kernel, built from the quads on first use: int16 [OC rounded up to 8][K
    /// pairs][2], w minus its zero point, pair p = (channel pair * kh + ki) * kw + kj; missing channels 0.</summary>
    public short[] Widened => LazyInitializer.EnsureInitialized(ref _widened, () =>
    {
        var data = Data;
        int rows = data.Length / (Kq * 4), cp = ChannelPairs, taps = KernelH * KernelW, kp = KPairs;
        var wide = new short[(long)rows * kp * 2];
        for (int j = 0; j < Zeros.Length; j++)
            for (int c = 0; c < Channels; c++)
                for (int tap = 0; tap < taps; tap++)
                {
                    int v = data[((long)j * Kq + (c / 4) * taps + tap) * 4 + c % 4] - Zeros[j];
                    wide[((long)j * kp + (c / 2) * taps + tap) * 2 + c % 2] = (short)v;
                }
        return wide;
    });

    NativeConvWeights(int kq, int cq, sbyte[] data, int[] sums, int[] zeros, int channels, int kh, int kw)
    {
        Kq = kq; ChannelQuads = cq; _data = data; Sums = sums; Zeros = zeros; AnyZero = zeros.Any(z => z != 0);
        Channels = channels; KernelH = kh; KernelW = kw;
        SevenBitPairs = PackedWeights.PairsCannotSaturate(data);
    }

    /// <summary>Drops the quads when the widened form is built and nothing else reads them (no AMX form): the weights
    /// are then held once, as the AVX2 kernel reads them. Returns the bytes let go.</summary>
    internal long DropQuads()
    {
        lock (_sync)
        {
            if (Volatile.Read(ref _widened) is null || Amx is not null || _data is not { } quads) return 0;
            _data = null;
            return quads.Length;
        }
    }

    /// <summary>The quads again from the widened form (w - zero point, so w = widened + zero point; missing channels
    /// hold the zero point, padding rows zero), exactly as <see cref="Pack"/> wrote them.</summary>
    sbyte[] QuadsFromWidened()
    {
        lock (_sync)
        {
            if (_data is { } held) return held;
            var wide = Volatile.Read(ref _widened)!;
            int taps = KernelH * KernelW, kp = KPairs;
            var data = new sbyte[(long)(wide.Length / (kp * 2)) * Kq * 4];
            for (int j = 0; j < Zeros.Length; j++)
                for (int c4 = 0, q = 0; c4 < ChannelQuads; c4++)
                    for (int tap = 0; tap < taps; tap++, q++)
                        for (int t = 0; t < 4; t++)
                        {
                            int c = c4 * 4 + t;
                            int v = c < Channels ? wide[((long)j * kp + (c / 2) * taps + tap) * 2 + c % 2] + Zeros[j] : Zeros[j];
                            data[((long)j * Kq + q) * 4 + t] = (sbyte)v;
                        }
            return _data = data;
        }
    }

    void PackAmx(ConvGeometry g)
    {
        int ocg = g.GroupOutChannels, taps = g.KernelH * g.KernelW, cq16 = (ChannelQuads + 15) / 16 * 16, rows = (ocg + 31) / 32 * 32;
        var amx = new sbyte[(long)rows * taps * cq16 * 4];
        for (int j = 0; j < ocg; j++)
            for (int c4 = 0; c4 < ChannelQuads; c4++)
                for (int tap = 0; tap < taps; tap++)
                    for (int t = 0; t < 4; t++)
                        amx[(((long)j * taps + tap) * cq16 + c4) * 4 + t] = Data[((long)j * Kq + c4 * taps + tap) * 4 + t];
        (Amx, AmxOffset) = NativeKernels.Aligned(amx);
        AmxChannelQuads = cq16;
    }

    public static NativeConvWeights Pack<T>(ReadOnlySpan<T> w, ReadOnlySpan<int> zeroPoints, ConvGeometry g, int gi) where T : unmanaged
    {
        int cg = g.GroupChannels, ocg = g.GroupOutChannels, kh = g.KernelH, kw = g.KernelW, patch = g.PatchSize;
        int cq = (cg + 3) / 4, kq = cq * kh * kw, rows = (ocg + 7) / 8 * 8;
        int shift = typeof(T) == typeof(byte) ? 128 : 0;
        var data = new sbyte[(long)rows * kq * 4];
        var sums = new int[ocg];
        var zeros = new int[ocg];
        for (int j = 0; j < ocg; j++)
        {
            int oc = gi * ocg + j, z = zeroPoints[zeroPoints.Length == 1 ? 0 : oc] - shift, sum = 0;
            zeros[j] = z;
            for (int c4 = 0, q = 0; c4 < cq; c4++)
                for (int ki = 0; ki < kh; ki++)
                    for (int kj = 0; kj < kw; kj++, q++)
                        for (int t = 0; t < 4; t++)
                        {
                            int c = c4 * 4 + t;
                            int v = c < cg ? QGemm.ToInt(w[oc * patch + (c * kh + ki) * kw + kj]) - shift : z;
                            data[((long)j * kq + q) * 4 + t] = (sbyte)v;
                            sum += v;
                        }
            sums[j] = sum;
        }
        var packed = new NativeConvWeights(kq, cq, data, sums, zeros, cg, kh, kw);
        if (NativeKernels.HasAmxConv && !packed.AnyZero && cg >= 64) packed.PackAmx(g);
        int kwq = (kw + 3) / 4, tapKq = cg * kh * kwq;
        if (NativeKernels.HasConv && tapKq < kq)
        {
            var taps = new sbyte[(long)rows * tapKq * 4];
            var tapSums = new int[ocg];
            for (int j = 0; j < ocg; j++)
            {
                int oc = gi * ocg + j, sum = 0;
                for (int c = 0, q = 0; c < cg; c++)
                    for (int ki = 0; ki < kh; ki++)
                        for (int jq = 0; jq < kwq; jq++, q++)
                            for (int t = 0; t < 4; t++)
                            {
                                int kj = jq * 4 + t;
                                int v = kj < kw ? QGemm.ToInt(w[oc * patch + (c * kh + ki) * kw + kj]) - shift : zeros[j];
                                taps[((long)j * tapKq + q) * 4 + t] = (sbyte)v;
                                sum += v;
                            }
                tapSums[j] = sum;
            }
            (packed.Taps, packed.TapKq, packed.TapSums) = (taps, tapKq, tapSums);
        }
        return packed;
    }
}

/// <summary>Integer convolution: y[n, oc, oh, ow] = sum (x - xZero)(w - wZero[oc]) in int32, padding with xZero
/// (ONNX ConvInteger/QLinearConv), grouped and depthwise, with strides, pads and dilations.</summary>
public static class QConv
{
    /// <summary>The scalar reference: the definition, loop by loop.</summary>
    public static void Reference<TX, TW>(ReadOnlySpan<TX> x, int xZero, ReadOnlySpan<TW> w, ReadOnlySpan<int> wZero, ConvGeometry g, Span<int> y)
        where TX : unmanaged where TW : unmanaged
    {
        g.Check();
        int oh = g.OutH, ow = g.OutW, cg = g.GroupChannels, ocg = g.GroupOutChannels;
        for (int n = 0; n < g.Batch; n++)
            for (int oc = 0; oc < g.OutChannels; oc++)
            {
                int gi = oc / ocg, zw = wZero[wZero.Length == 1 ? 0 : oc];
                for (int i = 0; i < oh; i++)
                    for (int j = 0; j < ow; j++)
                    {
                        int acc = 0;
                        for (int c = 0; c < cg; c++)
                            for (int ki = 0; ki < g.KernelH; ki++)
                                for (int kj = 0; kj < g.KernelW; kj++)
                                {
                                    int ih = i * g.StrideH - g.PadTop + ki * g.DilationH, iw = j * g.StrideW - g.PadLeft + kj * g.DilationW;
                                    int xv = ih < 0 || ih >= g.Height || iw < 0 || iw >= g.Width ? xZero
                                        : QGemm.ToInt(x[((n * g.Channels + gi * cg + c) * g.Height + ih) * g.Width + iw]);
                                    int wv = QGemm.ToInt(w[((oc * cg + c) * g.KernelH + ki) * g.KernelW + kj]);
                                    acc += (xv - xZero) * (wv - zw);
                                }
                        y[((n * g.OutChannels + oc) * oh + i) * ow + j] = acc;
                    }
            }
    }

    /// <summary>The fast form, int32 accumulators: the native direct convolution (VNNI or AMX) when the library is
    /// present; otherwise im2col (int16, zero point subtracted) then the packed GEMM per group. Depthwise convolutions
    /// run a direct loop over the pre-subtracted weights.</summary>
    public static void Run<TX>(KernelContext context, ReadOnlySpan<TX> x, int xZero, PackedConvWeights w, Span<int> y) where TX : unmanaged
    {
        var g = w.Shape;
        int oh = g.OutH, ow = g.OutW, cg = g.GroupChannels, ocg = g.GroupOutChannels, patch = g.PatchSize, pixels = oh * ow;
        if (x.Length != (long)g.Batch * g.Channels * g.Height * g.Width) throw new ArgumentException("The input does not match the convolution shape.");
        var path = context.EffectivePath;
        if (path == KernelPath.Scalar)
        {
            // The scalar path is the reference itself, over the pre-subtracted weights.
            Direct(x, xZero, w, y, all: true);
            return;
        }
        if (y.Length < (long)g.Batch * g.OutChannels * pixels) throw new ArgumentException("The output is too small.");
        bool native = path is KernelPath.NativeAvx2 or KernelPath.NativeVnni;
        if (w.Depthwise && native && NativeKernels.HasAvx2)
        {
            unsafe { fixed (int* py = y) RunDepthwiseNative(context, x, xZero, w, default, default, 0, 0, 0, py, 4); }
            return;
        }
        if (w.Depthwise) { Direct(x, xZero, w, y, all: true); return; }
        if (native && w.Native is not null)
        {
            unsafe { fixed (int* py = y) RunNative(context, x, xZero, w, default, default, 0, 0, 0, false, py, 4, avx2: path == KernelPath.NativeAvx2); }
            return;
        }
        if ((path == KernelPath.NativeVnni || path == KernelPath.ArmDot) && w.Groups[0].Quads is not null)
        {
            // Byte im2col (padding holds the zero point, so it contributes nothing) into the GEMM on the quads (native
            // VNNI, or SDOT on ARM64).
            bool signed = typeof(TX) == typeof(sbyte);
            var colBytes = Workspace.Rent<byte>(Workspace.Slot.Im2Col, (long)pixels * patch);
            var acc = Workspace.Rent<int>(Workspace.Slot.GemmOut, (long)pixels * ocg);
            for (int n = 0; n < g.Batch; n++)
                for (int gi = 0; gi < g.Group; gi++)
                {
                    Im2ColBytes(MemoryMarshal.AsBytes(x), (byte)xZero, g, n, gi, colBytes);
                    var cols = colBytes.AsSpan(0, pixels * patch);
                    if (signed) QGemm.Multiply(context, MemoryMarshal.Cast<byte, sbyte>(cols), xZero, pixels, w.Groups[gi], acc);
                    else QGemm.Multiply(context, cols, xZero, pixels, w.Groups[gi], acc);
                    for (int j = 0; j < ocg; j++)
                    {
                        var dst = y.Slice((n * g.OutChannels + gi * ocg + j) * pixels, pixels);
                        for (int p = 0; p < pixels; p++) dst[p] = acc[p * ocg + j];
                    }
                }
            return;
        }
        // The int16 im2col form feeds the managed GEMM.
        if (path is KernelPath.NativeAvx2 or KernelPath.NativeVnni) path = KernelDispatch.Clamp(KernelPath.Avx512BW);
        if (path == KernelPath.ArmDot) path = KernelPath.Vector128;
        int kp2 = w.Groups[0].KPairs * 2;
        var col = Workspace.Rent<short>(Workspace.Slot.Im2Col, (long)pixels * kp2);
        var outBuf = Workspace.Rent<int>(Workspace.Slot.GemmOut, (long)pixels * ocg);
        for (int n = 0; n < g.Batch; n++)
            for (int gi = 0; gi < g.Group; gi++)
            {
                Im2Col(x, xZero, g, n, gi, col, kp2);
                QGemm.MultiplyWide(context, col, pixels, w.Groups[gi], outBuf, path);
                for (int j = 0; j < ocg; j++)
                {
                    var dst = y.Slice(((n * g.OutChannels + gi * ocg + j) * pixels), pixels);
                    for (int p = 0; p < pixels; p++) dst[p] = outBuf[p * ocg + j];
                }
            }
    }

    /// <summary>Reference of the fused form: <see cref="Reference"/>, plus the int32 bias per output channel, then
    /// <see cref="QuantizeKernels.RequantizeReference"/> with one multiplier per tensor or per channel, and ReLU
    /// (values below the output zero point raised to it) when asked.</summary>
    public static void RequantizedReference<TX, TW, TY>(ReadOnlySpan<TX> x, int xZero, ReadOnlySpan<TW> w, ReadOnlySpan<int> wZero, ConvGeometry g,
        ReadOnlySpan<int> bias, ReadOnlySpan<float> multipliers, int yZero, bool relu, Span<TY> y)
        where TX : unmanaged where TW : unmanaged where TY : unmanaged
    {
        var acc = new int[(long)g.Batch * g.OutChannels * g.OutH * g.OutW];
        Reference(x, xZero, w, wZero, g, acc);
        Finish(default, acc, g, bias, multipliers, yZero, relu, y, reference: true);
    }

    static void Finish<TY>(KernelContext context, Span<int> acc, ConvGeometry g, ReadOnlySpan<int> bias, ReadOnlySpan<float> multipliers, int yZero, bool relu, Span<TY> y, bool reference) where TY : unmanaged
    {
        int pixels = g.OutH * g.OutW;
        if (!bias.IsEmpty)
            for (int n = 0; n < g.Batch; n++)
                for (int c = 0; c < g.OutChannels; c++)
                {
                    int b = bias[c], o = (n * g.OutChannels + c) * pixels;
                    for (int p = 0; p < pixels; p++) acc[o + p] = unchecked(acc[o + p] + b);
                }
        if (reference) QuantizeKernels.RequantizeReference(acc, multipliers, yZero, pixels, y);
        else QuantizeKernels.Requantize(context, acc, multipliers, yZero, pixels, y);
        if (!relu) return;
        for (int i = 0; i < y.Length; i++) if (QGemm.ToInt(y[i]) < yZero) y[i] = QuantizeKernels.From<TY>(yZero);
    }

    /// <summary>The convolution with bias, requantization (to u8 or s8) and optional ReLU in one pass: on the native
    /// path the accumulators never leave registers; elsewhere <see cref="Run"/> then requantize.</summary>
    public static void RunRequantized<TX, TY>(KernelContext context, ReadOnlySpan<TX> x, int xZero, PackedConvWeights w, ReadOnlySpan<int> bias,
        ReadOnlySpan<float> multipliers, int yZero, bool relu, Span<TY> y) where TX : unmanaged where TY : unmanaged
    {
        var g = w.Shape;
        long outLen = (long)g.Batch * g.OutChannels * g.OutH * g.OutW;
        if (y.Length != outLen) throw new ArgumentException($"The output holds {y.Length} values; {outLen} expected.");
        if (multipliers.Length != 1 && multipliers.Length != g.OutChannels) throw new ArgumentException($"{multipliers.Length} multipliers for {g.OutChannels} channels.");
        if (!bias.IsEmpty && bias.Length != g.OutChannels) throw new ArgumentException($"The bias has {bias.Length} values for {g.OutChannels} channels.");
        var (qmin, qmax) = QuantizeKernels.Limits<TY>();
        var path = context.EffectivePath;
        bool native = path is KernelPath.NativeAvx2 or KernelPath.NativeVnni;
        bool depthwiseNative = w.Depthwise && native && NativeKernels.HasAvx2;
        if ((native && w.Native is not null) || depthwiseNative)
        {
            if (x.Length != (long)g.Batch * g.Channels * g.Height * g.Width) throw new ArgumentException("The input does not match the convolution shape.");
            var mult = new float[g.OutChannels];
            for (int c = 0; c < mult.Length; c++) mult[c] = multipliers[multipliers.Length == 1 ? 0 : c];
            int lo = relu ? Math.Max(qmin, yZero) : qmin;
            unsafe
            {
                fixed (TY* py = y) fixed (float* pm = mult)
                    if (depthwiseNative) RunDepthwiseNative(context, x, xZero, w, bias, new ReadOnlySpan<float>(pm, mult.Length), yZero, lo, qmax, py, 1);
                    else RunNative(context, x, xZero, w, bias, new ReadOnlySpan<float>(pm, mult.Length), yZero, lo, qmax, typeof(TY) == typeof(sbyte), py, 1, avx2: path == KernelPath.NativeAvx2);
            }
            return;
        }
        // The int32 sums live in this thread's scratch (shared by every layer), not in a new array per call.
        var acc = Workspace.Rent<int>(Workspace.Slot.ConvAcc, outLen).AsSpan(0, (int)outLen);
        Run(context, x, xZero, w, acc);
        Finish(context, acc, g, bias, multipliers, yZero, relu, y, reference: false);
    }

    /// <summary>ptq_conv_vnni per image and group; int32 output when <paramref name="mult"/> is empty.</summary>
    static unsafe void RunNative<TX>(KernelContext context, ReadOnlySpan<TX> x, int xZero, PackedConvWeights w, ReadOnlySpan<int> bias, ReadOnlySpan<float> mult,
        int yZero, int qlo, int qhi, bool outSigned, void* y, int elementSize, bool avx2 = false) where TX : unmanaged
    {
        var g = w.Shape;
        bool flip = typeof(TX) == typeof(sbyte);
        int xz = flip ? xZero + 128 : xZero;
        if (xz < 0 || xz > 255) throw new ArgumentException($"The input zero point {xZero} is outside the input type's range.");
        int pixels = g.OutH * g.OutW, cg = g.GroupChannels, ocg = g.GroupOutChannels;
        int threads = context.ThreadsFor((long)ocg * pixels * g.PatchSize);
        bool amx = context.UsesAmx;
        var corr = new int[ocg];
        fixed (byte* px = MemoryMarshal.AsBytes(x)) fixed (float* pm = mult)
            for (int gi = 0; gi < g.Group; gi++)
            {
                var nw = w.Native![gi];
                // The AVX2 kernel's widened form multiplies x and w minus their zero points: only the bias remains.
                var kernel = !avx2 ? NativeKernels.Kernel.Vnni : nw.SevenBitPairs ? NativeKernels.Kernel.Avx2Pairs7 : NativeKernels.Kernel.Avx2Widened;
                bool widened = kernel == NativeKernels.Kernel.Avx2Widened;
                // Few channels: the VNNI kernel reads quads of 4 taps of one channel (AMX needs 64+ channels, never here).
                bool taps = kernel == NativeKernels.Kernel.Vnni && nw.Taps is not null && !(amx && nw.Amx is not null);
                int kq = taps ? nw.TapKq : nw.Kq, kAll = kq * 4;
                var sums = taps ? nw.TapSums! : nw.Sums;
                for (int j = 0; j < ocg; j++)
                    corr[j] = widened ? (bias.IsEmpty ? 0 : bias[gi * ocg + j])
                        : unchecked((bias.IsEmpty ? 0 : bias[gi * ocg + j]) - xz * sums[j] + kAll * xz * nw.Zeros[j]);
                fixed (sbyte* pq = widened ? null : taps ? nw.Taps : nw.Data) fixed (short* pwide = widened ? nw.Widened : null) fixed (int* pc = corr, pz = nw.Zeros)
                    for (int n = 0; n < g.Batch; n++)
                    {
                        var args = new NativeKernels.ConvArgs
                        {
                            W = widened ? (sbyte*)pwide : pq, Corr = pc, WZero = nw.AnyZero && !widened ? pz : null, Mult = mult.IsEmpty ? null : pm + gi * ocg,
                            Y = (byte*)y + (long)(n * g.OutChannels + gi * ocg) * pixels * elementSize,
                            Kq = widened ? nw.KPairs : kq, Kh = g.KernelH, Kw = g.KernelW, Cq = widened ? nw.ChannelPairs : taps ? nw.Channels : nw.ChannelQuads,
                            Hp = g.Height + g.PadTop + g.PadBottom, Wp = g.Width + g.PadLeft + g.PadRight,
                            Sh = g.StrideH, Sw = g.StrideW, Dh = g.DilationH, Dw = g.DilationW, Oh = g.OutH, Ow = g.OutW, Oc = ocg,
                            Zp = yZero, QLo = qlo, QHi = qhi, OutSigned = outSigned ? 1 : 0, Taps4 = taps ? 1 : 0,
                        };
                        fixed (sbyte* pa = amx && !avx2 ? nw.Amx : null)
                            NativeKernels.Conv(px + (long)(n * g.Channels + gi * cg) * g.Height * g.Width, cg, g.Height, g.Width,
                                g.PadTop, g.PadLeft, (byte)xz, flip, args, threads, pa == null ? null : pa + nw.AmxOffset, nw.AmxChannelQuads, kernel);
                    }
            }
    }

    /// <summary>ptq_dwconv_avx2 per image (one input channel per output channel): int32 output when
    /// <paramref name="mult"/> is empty, else bias, requantization and clamping to [qlo, qhi] in the same pass.</summary>
    static unsafe void RunDepthwiseNative<TX>(KernelContext context, ReadOnlySpan<TX> x, int xZero, PackedConvWeights w, ReadOnlySpan<int> bias, ReadOnlySpan<float> mult,
        int yZero, int qlo, int qhi, void* y, int elementSize) where TX : unmanaged
    {
        var g = w.Shape;
        bool flip = typeof(TX) == typeof(sbyte);
        int xz = flip ? xZero + 128 : xZero;
        if (xz < 0 || xz > 255) throw new ArgumentException($"The input zero point {xZero} is outside the input type's range.");
        int pixels = g.OutH * g.OutW, plane = g.Height * g.Width;
        int threads = context.ThreadsFor((long)g.Channels * pixels * g.KernelH * g.KernelW);
        fixed (byte* px = MemoryMarshal.AsBytes(x)) fixed (int* pw = w.Raw) fixed (int* pb = bias) fixed (float* pm = mult)
            for (int n = 0; n < g.Batch; n++)
            {
                var args = new NativeKernels.DwArgs
                {
                    X = px + (long)n * g.Channels * plane, W = pw, Bias = bias.IsEmpty ? null : pb, Mult = mult.IsEmpty ? null : pm,
                    Y = (byte*)y + (long)n * g.OutChannels * pixels * elementSize,
                    H = g.Height, Wd = g.Width, Pt = g.PadTop, Pl = g.PadLeft, Hp = g.Height + g.PadTop + g.PadBottom, Wp = g.Width + g.PadLeft + g.PadRight,
                    Kh = g.KernelH, Kw = g.KernelW, Sh = g.StrideH, Sw = g.StrideW, Dh = g.DilationH, Dw = g.DilationW, Oh = g.OutH, Ow = g.OutW,
                    Xz = xz, Flip = flip ? 1 : 0, Zp = yZero, QLo = qlo, QHi = qhi,
                };
                NativeKernels.DepthwiseConv(args, g.Channels, threads);
            }
    }

    static unsafe void Im2ColBytes(ReadOnlySpan<byte> x, byte zero, ConvGeometry g, int n, int gi, byte[] col)
    {
        int oh = g.OutH, ow = g.OutW, cg = g.GroupChannels, patch = g.PatchSize;
        int kh = g.KernelH, kw = g.KernelW, sh = g.StrideH, sw = g.StrideW, dh = g.DilationH, dw = g.DilationW;
        int height = g.Height, width = g.Width, padT = g.PadTop, padL = g.PadLeft;
        fixed (byte* px = x) fixed (byte* pc = col)
        {
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++)
                {
                    byte* dst = pc + (long)(i * ow + j) * patch;
                    int ih0 = i * sh - padT, iw0 = j * sw - padL;
                    bool inside = ih0 >= 0 && ih0 + (kh - 1) * dh < height && iw0 >= 0 && iw0 + (kw - 1) * dw < width;
                    for (int c = 0; c < cg; c++)
                    {
                        byte* plane = px + (long)(n * g.Channels + gi * cg + c) * height * width;
                        if (inside)
                        {
                            for (int ki = 0; ki < kh; ki++)
                            {
                                byte* src = plane + (ih0 + ki * dh) * width + iw0;
                                for (int kj = 0; kj < kw; kj++) *dst++ = src[kj * dw];
                            }
                            continue;
                        }
                        for (int ki = 0; ki < kh; ki++)
                        {
                            int ih = ih0 + ki * dh;
                            bool rowInside = ih >= 0 && ih < height;
                            for (int kj = 0; kj < kw; kj++)
                            {
                                int iw = iw0 + kj * dw;
                                *dst++ = rowInside && iw >= 0 && iw < width ? plane[ih * width + iw] : zero;
                            }
                        }
                    }
                }
        }
    }

    static void Im2Col<TX>(ReadOnlySpan<TX> x, int xZero, ConvGeometry g, int n, int gi, short[] col, int kp2) where TX : unmanaged
    {
        int oh = g.OutH, ow = g.OutW, cg = g.GroupChannels;
        col.AsSpan(0, oh * ow * kp2).Clear();
        for (int i = 0; i < oh; i++)
            for (int j = 0; j < ow; j++)
            {
                int rowBase = (i * ow + j) * kp2, k = 0;
                for (int c = 0; c < cg; c++)
                {
                    int plane = (n * g.Channels + gi * cg + c) * g.Height;
                    for (int ki = 0; ki < g.KernelH; ki++)
                    {
                        int ih = i * g.StrideH - g.PadTop + ki * g.DilationH;
                        for (int kj = 0; kj < g.KernelW; kj++, k++)
                        {
                            int iw = j * g.StrideW - g.PadLeft + kj * g.DilationW;
                            if (ih >= 0 && ih < g.Height && iw >= 0 && iw < g.Width)
                                col[rowBase + k] = (short)(QGemm.ToInt(x[(plane + ih) * g.Width + iw]) - xZero);
                        }
                    }
                }
            }
    }

    static void Direct<TX>(ReadOnlySpan<TX> x, int xZero, PackedConvWeights w, Span<int> y, bool all) where TX : unmanaged
    {
        var g = w.Shape;
        int oh = g.OutH, ow = g.OutW, cg = g.GroupChannels, ocg = g.GroupOutChannels, patch = g.PatchSize;
        for (int n = 0; n < g.Batch; n++)
            for (int oc = 0; oc < g.OutChannels; oc++)
            {
                int gi = oc / ocg;
                for (int i = 0; i < oh; i++)
                    for (int j = 0; j < ow; j++)
                    {
                        int acc = 0, k = 0;
                        for (int c = 0; c < cg; c++)
                        {
                            int plane = (n * g.Channels + gi * cg + c) * g.Height;
                            for (int ki = 0; ki < g.KernelH; ki++)
                            {
                                int ih = i * g.StrideH - g.PadTop + ki * g.DilationH;
                                for (int kj = 0; kj < g.KernelW; kj++, k++)
                                {
                                    int iw = j * g.StrideW - g.PadLeft + kj * g.DilationW;
                                    if (ih >= 0 && ih < g.Height && iw >= 0 && iw < g.Width)
                                        acc += (QGemm.ToInt(x[(plane + ih) * g.Width + iw]) - xZero) * w.Raw[oc * patch + k];
                                }
                            }
                        }
                        y[((n * g.OutChannels + oc) * oh + i) * ow + j] = acc;
                    }
            }
    }
}
