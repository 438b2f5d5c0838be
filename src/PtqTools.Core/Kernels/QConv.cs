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

/// <summary>Convolution weights [OC, C/group, kh, kw] packed once per group as the right-hand GEMM matrix.</summary>
public sealed class PackedConvWeights
{
    internal PackedWeights[] Groups { get; }
    internal int[] Raw { get; }           // w - zero point, [OC][patch], for the depthwise path
    internal NativeConvWeights[]? Native { get; }
    public ConvGeometry Shape { get; }

    PackedConvWeights(ConvGeometry g, PackedWeights[] groups, int[] raw, NativeConvWeights[]? native) { Shape = g; Groups = groups; Raw = raw; Native = native; }

    public static PackedConvWeights Pack<T>(ReadOnlySpan<T> w, ReadOnlySpan<int> zeroPoints, ConvGeometry g) where T : unmanaged
    {
        g.Check();
        int patch = g.PatchSize, ocg = g.GroupOutChannels;
        if (w.Length != (long)g.OutChannels * patch) throw new ArgumentException($"The weights hold {w.Length} values; {g.OutChannels}x{patch} expected.");
        if (zeroPoints.Length != 1 && zeroPoints.Length != g.OutChannels) throw new ArgumentException($"{zeroPoints.Length} weight zero points for {g.OutChannels} channels.");
        var raw = new int[w.Length];
        for (int oc = 0; oc < g.OutChannels; oc++)
            for (int k = 0; k < patch; k++)
                raw[oc * patch + k] = QGemm.ToInt(w[oc * patch + k]) - zeroPoints[zeroPoints.Length == 1 ? 0 : oc];
        var groups = new PackedWeights[g.Group];
        bool depthwise = g.GroupChannels == 1 && ocg == 1;
        if (!depthwise)
            for (int gi = 0; gi < g.Group; gi++)
            {
                var zp = new int[ocg];
                for (int j = 0; j < ocg; j++) zp[j] = zeroPoints[zeroPoints.Length == 1 ? 0 : gi * ocg + j];
                if (typeof(T) == typeof(byte))
                {
                    var b = new byte[patch * ocg];
                    var src = MemoryMarshal.Cast<T, byte>(w);
                    for (int k = 0; k < patch; k++) for (int j = 0; j < ocg; j++) b[k * ocg + j] = src[(gi * ocg + j) * patch + k];
                    groups[gi] = PackedWeights.Pack(b, patch, ocg, zp);
                }
                else
                {
                    var b = new sbyte[patch * ocg];
                    var src = MemoryMarshal.Cast<T, sbyte>(w);
                    for (int k = 0; k < patch; k++) for (int j = 0; j < ocg; j++) b[k * ocg + j] = src[(gi * ocg + j) * patch + k];
                    groups[gi] = PackedWeights.Pack(b, patch, ocg, zp);
                }
            }
        NativeConvWeights[]? native = null;
        if (!depthwise && NativeKernels.HasConv)
        {
            native = new NativeConvWeights[g.Group];
            for (int gi = 0; gi < g.Group; gi++) native[gi] = NativeConvWeights.Pack(w, zeroPoints, g, gi);
        }
        return new PackedConvWeights(g, groups, raw, native);
    }
}

/// <summary>One group's weights for the native direct convolution: signed bytes [OC/group rounded up to 8][kq][4],
/// where quad q = (channel quad * kh + ki) * kw + kj holds 4 input channels of one tap (unsigned weights stored minus
/// 128). Missing channels hold the zero point, so they add nothing; the sums drive the zero-point correction.</summary>
internal sealed class NativeConvWeights
{
    public int Kq { get; }
    public int ChannelQuads { get; }
    public sbyte[] Data { get; }
    public int[] Sums { get; }
    public int[] Zeros { get; }
    public bool AnyZero { get; }
    /// <summary>For the AMX kernel (symmetric weights, 64+ channels): [oc rounded up to 32][tap][channel
    /// quads rounded up to 16][4], zero padded; null when it does not apply.</summary>
    public sbyte[]? Amx { get; private set; }
    public int AmxChannelQuads { get; private set; }
    public int AmxOffset { get; private set; }

    NativeConvWeights(int kq, int cq, sbyte[] data, int[] sums, int[] zeros)
    {
        Kq = kq; ChannelQuads = cq; Data = data; Sums = sums; Zeros = zeros; AnyZero = zeros.Any(z => z != 0);
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
        var packed = new NativeConvWeights(kq, cq, data, sums, zeros);
        if (NativeKernels.HasAmxConv && !packed.AnyZero && cg >= 64) packed.PackAmx(g);
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
        if (w.Groups[0] is null) { Direct(x, xZero, w, y, all: true); return; }
        if (path == KernelPath.NativeVnni && w.Native is not null)
        {
            if (y.Length < (long)g.Batch * g.OutChannels * pixels) throw new ArgumentException("The output is too small.");
            unsafe { fixed (int* py = y) RunNative(context, x, xZero, w, default, default, 0, 0, 0, false, py, 4); }
            return;
        }
        if ((path == KernelPath.NativeVnni || path == KernelPath.ArmDot) && w.Groups[0].Quads is not null)
        {
            // Byte im2col (padding holds the zero point, so it contributes nothing) into the GEMM on the quads (native
            // VNNI, or SDOT on ARM64).
            bool signed = typeof(TX) == typeof(sbyte);
            var colBytes = new byte[(long)pixels * patch];
            var acc = new int[(long)pixels * ocg];
            for (int n = 0; n < g.Batch; n++)
                for (int gi = 0; gi < g.Group; gi++)
                {
                    Im2ColBytes(MemoryMarshal.AsBytes(x), (byte)xZero, g, n, gi, colBytes);
                    if (signed) QGemm.Multiply(context, MemoryMarshal.Cast<byte, sbyte>(colBytes.AsSpan()), xZero, pixels, w.Groups[gi], acc);
                    else QGemm.Multiply(context, colBytes, xZero, pixels, w.Groups[gi], acc);
                    for (int j = 0; j < ocg; j++)
                    {
                        var dst = y.Slice((n * g.OutChannels + gi * ocg + j) * pixels, pixels);
                        for (int p = 0; p < pixels; p++) dst[p] = acc[p * ocg + j];
                    }
                }
            return;
        }
        if (path == KernelPath.NativeVnni) path = KernelPath.Avx512BW; // the int16 im2col form feeds the managed GEMM
        if (path == KernelPath.ArmDot) path = KernelPath.Vector128;
        int kp2 = w.Groups[0].KPairs * 2;
        var col = new short[(long)pixels * kp2];
        var outBuf = new int[(long)pixels * ocg];
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

    static void Finish<TY>(KernelContext context, int[] acc, ConvGeometry g, ReadOnlySpan<int> bias, ReadOnlySpan<float> multipliers, int yZero, bool relu, Span<TY> y, bool reference) where TY : unmanaged
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
        if (path == KernelPath.NativeVnni && w.Native is not null)
        {
            if (x.Length != (long)g.Batch * g.Channels * g.Height * g.Width) throw new ArgumentException("The input does not match the convolution shape.");
            var mult = new float[g.OutChannels];
            for (int c = 0; c < mult.Length; c++) mult[c] = multipliers[multipliers.Length == 1 ? 0 : c];
            unsafe
            {
                fixed (TY* py = y) fixed (float* pm = mult)
                    RunNative(context, x, xZero, w, bias, new ReadOnlySpan<float>(pm, mult.Length), yZero, relu ? Math.Max(qmin, yZero) : qmin, qmax, typeof(TY) == typeof(sbyte), py, 1);
            }
            return;
        }
        var acc = new int[outLen];
        Run(context, x, xZero, w, acc);
        Finish(context, acc, g, bias, multipliers, yZero, relu, y, reference: false);
    }

    /// <summary>ptq_conv_vnni per image and group; int32 output when <paramref name="mult"/> is empty.</summary>
    static unsafe void RunNative<TX>(KernelContext context, ReadOnlySpan<TX> x, int xZero, PackedConvWeights w, ReadOnlySpan<int> bias, ReadOnlySpan<float> mult,
        int yZero, int qlo, int qhi, bool outSigned, void* y, int elementSize) where TX : unmanaged
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
                int kAll = nw.Kq * 4;
                for (int j = 0; j < ocg; j++)
                    corr[j] = unchecked((bias.IsEmpty ? 0 : bias[gi * ocg + j]) - xz * nw.Sums[j] + kAll * xz * nw.Zeros[j]);
                fixed (sbyte* pw = nw.Data) fixed (int* pc = corr, pz = nw.Zeros)
                    for (int n = 0; n < g.Batch; n++)
                    {
                        var args = new NativeKernels.ConvArgs
                        {
                            W = pw, Corr = pc, WZero = nw.AnyZero ? pz : null, Mult = mult.IsEmpty ? null : pm + gi * ocg,
                            Y = (byte*)y + (long)(n * g.OutChannels + gi * ocg) * pixels * elementSize,
                            Kq = nw.Kq, Kh = g.KernelH, Kw = g.KernelW, Cq = nw.ChannelQuads,
                            Hp = g.Height + g.PadTop + g.PadBottom, Wp = g.Width + g.PadLeft + g.PadRight,
                            Sh = g.StrideH, Sw = g.StrideW, Dh = g.DilationH, Dw = g.DilationW, Oh = g.OutH, Ow = g.OutW, Oc = ocg,
                            Zp = yZero, QLo = qlo, QHi = qhi, OutSigned = outSigned ? 1 : 0,
                        };
                        fixed (sbyte* pa = amx ? nw.Amx : null)
                            NativeKernels.Conv(px + (long)(n * g.Channels + gi * cg) * g.Height * g.Width, cg, g.Height, g.Width,
                                g.PadTop, g.PadLeft, (byte)xz, flip, args, threads, pa == null ? null : pa + nw.AmxOffset, nw.AmxChannelQuads);
                    }
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
        Array.Clear(col);
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
