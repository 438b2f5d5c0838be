using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PtqTools.Core.Kernels;

/// <summary>Quantized add and pooling, with the arithmetic ONNX Runtime's MLAS uses (float scale ratios, fused
/// multiply-adds where it uses them, round half to even), so that results agree with its QLinearAdd /
/// QLinearAveragePool / QLinearGlobalAveragePool.</summary>
public static class QElementwise
{
    /// <summary>Reference, in the order of operations of ONNX Runtime's x64 kernel (MLAS qladd_avx2), so that results
    /// agree bit for bit: with ratios ra = sa / sc and rb = sb / sc and the constant f = zc - (ra * za + rb * zb),
    /// c = saturate(round_half_even(fma(a, ra, fma(b, rb, f)))); when b is one element, f absorbs f + b * rb

    /// <summary>The terms every fast Add computes with: c = clamp(round(a * ra + b * rb + f)) where ra = sa / sc,
    /// rb = sb / sc and f = zc - (ra * za + rb * zb); a one-value B (broadcast) is folded into f.</summary>
    internal static (int QMin, int QMax, float Ra, float Rb, float F, bool ScalarB) AddTerms<T>(ReadOnlySpan<T> b, float sa, int za, float sb, int zb,
        float sc, int zc, int length) where T : unmanaged
    {
        var (qmin, qmax) = QuantizeKernels.Limits<T>();
        float ra = sa / sc, rb = sb / sc;
        float f = zc - (ra * za + rb * zb);
        bool scalarB = b.Length == 1 && length != 1;
        if (scalarB) f += QGemm.ToInt(b[0]) * rb;
        return (qmin, qmax, ra, rb, f, scalarB);
    }
    /// (unfused) and c = saturate(round_half_even(fma(a, ra, f))).</summary>
    public static void AddReference<T>(ReadOnlySpan<T> a, float sa, int za, ReadOnlySpan<T> b, float sb, int zb, float sc, int zc, Span<T> c) where T : unmanaged
    {
        var (qmin, qmax) = QuantizeKernels.Limits<T>();
        float ra = sa / sc, rb = sb / sc;
        float f = zc - (ra * za + rb * zb);
        bool scalarB = b.Length == 1 && c.Length != 1;
        if (scalarB) f += QGemm.ToInt(b[0]) * rb;
        for (int i = 0; i < c.Length; i++)
        {
            float t = scalarB ? f : MathF.FusedMultiplyAdd(QGemm.ToInt(b[i]), rb, f);
            float v = MathF.Round(MathF.FusedMultiplyAdd(QGemm.ToInt(a[a.Length == 1 ? 0 : i]), ra, t), MidpointRounding.ToEven);
            c[i] = QuantizeKernels.From<T>((int)Math.Clamp(v, qmin, qmax));
        }
    }

    public static unsafe void Add<T>(KernelContext context, ReadOnlySpan<T> a, float sa, int za, ReadOnlySpan<T> b, float sb, int zb, float sc, int zc, Span<T> c) where T : unmanaged
    {
        if (context.EffectivePath != KernelPath.Scalar && ArmKernels.AdvSimdSupported && a.Length == c.Length && (b.Length == c.Length || b.Length == 1))
        {
            ArmKernels.Add(a, sa, za, b, sb, zb, sc, zc, c);
            return;
        }
        if (context.EffectivePath == KernelPath.Scalar || !Fma.IsSupported || !Avx2.IsSupported || a.Length != c.Length || (b.Length != c.Length && b.Length != 1))
        {
            AddReference(a, sa, za, b, sb, zb, sc, zc, c);
            return;
        }
        var (qmin, qmax, ra, rb, f, scalarB) = AddTerms(b, sa, za, sb, zb, sc, zc, c.Length);
        bool signed = typeof(T) == typeof(sbyte);
        var vra = Vector256.Create(ra); var vrb = Vector256.Create(rb); var vf = Vector256.Create(f);
        var vmin = Vector256.Create((float)qmin); var vmax = Vector256.Create((float)qmax);
        int i = 0, n = c.Length;
        fixed (T* pa0 = a, pb0 = b, pc0 = c)
        {
            byte* pa = (byte*)pa0, pb = (byte*)pb0, pc = (byte*)pc0;
            for (; i + 32 <= n; i += 32)
            {
                var q0 = One(pa + i, pb + i, scalarB, signed, vra, vrb, vf, vmin, vmax);
                var q1 = One(pa + i + 8, pb + i + 8, scalarB, signed, vra, vrb, vf, vmin, vmax);
                var q2 = One(pa + i + 16, pb + i + 16, scalarB, signed, vra, vrb, vf, vmin, vmax);
                var q3 = One(pa + i + 24, pb + i + 24, scalarB, signed, vra, vrb, vf, vmin, vmax);
                // In range after the clamp, so the truncating narrows keep each value's byte.
                var bytes = Vector256.Narrow(Vector256.Narrow(q0, q1).AsUInt16(), Vector256.Narrow(q2, q3).AsUInt16());
                bytes.Store(pc + i);
            }
        }
        if (i < n) AddReference(a[i..], sa, za, scalarB ? b : b[i..], sb, zb, sc, zc, c[i..]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe Vector256<uint> One(byte* pa, byte* pb, bool scalarB, bool signed, Vector256<float> ra, Vector256<float> rb, Vector256<float> f,
        Vector256<float> min, Vector256<float> max)
    {
        var t = scalarB ? f : Fma.MultiplyAdd(Widen(pb, signed), rb, f);
        var v = Avx.RoundToNearestInteger(Fma.MultiplyAdd(Widen(pa, signed), ra, t));
        return Avx.ConvertToVector256Int32(Vector256.Min(Vector256.Max(v, min), max)).AsUInt32();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe Vector256<float> Widen(byte* p, bool signed) =>
        Avx.ConvertToVector256Single(signed ? Avx2.ConvertToVector256Int32((sbyte*)p) : Avx2.ConvertToVector256Int32(p));

    /// <summary>Max pooling, fast form: per output row the window's input rows are reduced with vector maxima, then
    /// each output takes the maximum over its columns of that row. Same result as <see cref="MaxPoolReference"/>.</summary>
    public static unsafe void MaxPool<T>(KernelContext context, ReadOnlySpan<T> x, ConvGeometry g, Span<T> y) where T : unmanaged
    {
        if (context.EffectivePath == KernelPath.Scalar || !Vector128.IsHardwareAccelerated) { MaxPoolReference(x, g, y); return; }
        if (typeof(T) == typeof(sbyte)) { MaxPoolRows<sbyte>(MemoryMarshal.Cast<T, sbyte>(x), g, MemoryMarshal.Cast<T, sbyte>(y)); return; }
        if (typeof(T) == typeof(byte)) { MaxPoolRows<byte>(MemoryMarshal.Cast<T, byte>(x), g, MemoryMarshal.Cast<T, byte>(y)); return; }
        MaxPoolReference(x, g, y);
    }

    static unsafe void MaxPoolRows<T>(ReadOnlySpan<T> x, ConvGeometry g, Span<T> y) where T : unmanaged, INumber<T>, IMinMaxValue<T>
    {
        int oh = g.OutH, ow = g.OutW, h = g.Height, w = g.Width;
        int sw = g.StrideW, dw = g.DilationW, pl = g.PadLeft, kw = g.KernelW;
        // Outputs [jLo, jHi) have every tap inside the row; with stride 1 or 2 (dilation 1) they take 16 at a time:
        // tap kj of 16 outputs is 16 bytes at j*s - pl + kj, or the even bytes of 32 there (a narrowing).
        int jLo = Math.Min(ow, (pl + sw - 1) / sw), jHi = Math.Max(jLo, Math.Min(ow, (w - 1 + pl - (kw - 1) * dw) / sw + 1));
        bool vector = dw == 1 && (sw == 1 || sw == 2) && sizeof(T) == 1;
        var row = new T[w + 64];
        fixed (T* px = x, py = y, pr = row)
            for (int nc = 0; nc < g.Batch * g.Channels; nc++)
                for (int i = 0; i < oh; i++)
                {
                    bool any = false;
                    for (int ki = 0; ki < g.KernelH; ki++)
                    {
                        int ih = i * g.StrideH - g.PadTop + ki * g.DilationH;
                        if (ih < 0 || ih >= h) continue;
                        T* src = px + ((long)nc * h + ih) * w;
                        if (!any) { new ReadOnlySpan<T>(src, w).CopyTo(row); any = true; continue; }
                        int j = 0;
                        for (; j + Vector128<T>.Count <= w; j += Vector128<T>.Count)
                            Vector128.Max(Vector128.Load(pr + j), Vector128.Load(src + j)).Store(pr + j);
                        for (; j < w; j++) pr[j] = T.Max(pr[j], src[j]);
                    }
                    T* dst = py + ((long)nc * oh + i) * ow;
                    int jv = jLo;
                    if (vector && any)
                        for (; jv + 16 <= jHi; jv += 16)
                        {
                            byte* p = (byte*)pr + jv * sw - pl;
                            Vector128<byte> best = default;
                            for (int kj = 0; kj < kw; kj++)
                            {
                                var tap = sw == 1 ? Vector128.Load(p + kj)
                                    : Vector128.Narrow(Vector128.Load((ushort*)(p + kj)), Vector128.Load((ushort*)(p + kj) + 8));
                                best = kj == 0 ? tap : typeof(T) == typeof(sbyte) ? Vector128.Max(best.AsSByte(), tap.AsSByte()).AsByte() : Vector128.Max(best, tap);
                            }
                            best.Store((byte*)dst + jv);
                        }
                    for (int j = 0; j < ow; j++)
                    {
                        if (j == jLo && jv > jLo) { j = jv - 1; continue; }
                        T best = T.MinValue;
                        bool found = false;
                        for (int kj = 0; kj < g.KernelW; kj++)
                        {
                            int iw = j * g.StrideW - g.PadLeft + kj * g.DilationW;
                            if (iw < 0 || iw >= w) continue;
                            best = found ? T.Max(best, pr[iw]) : pr[iw];
                            found = true;
                        }
                        dst[j] = any && found ? best : T.Zero;   // an empty window: what the reference writes
                    }
                }
    }

    /// <summary>Max pooling of quantized values (exact: max commutes with the monotone affine map). Padding is
    /// ignored, as in ONNX MaxPool. The reference.</summary>
    public static void MaxPoolReference<T>(ReadOnlySpan<T> x, ConvGeometry g, Span<T> y) where T : unmanaged
    {
        int oh = g.OutH, ow = g.OutW;
        for (int nc = 0; nc < g.Batch * g.Channels; nc++)
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++)
                {
                    int best = int.MinValue;
                    for (int ki = 0; ki < g.KernelH; ki++)
                    {
                        int ih = i * g.StrideH - g.PadTop + ki * g.DilationH;
                        if (ih < 0 || ih >= g.Height) continue;
                        for (int kj = 0; kj < g.KernelW; kj++)
                        {
                            int iw = j * g.StrideW - g.PadLeft + kj * g.DilationW;
                            if (iw < 0 || iw >= g.Width) continue;
                            best = Math.Max(best, QGemm.ToInt(x[(nc * g.Height + ih) * g.Width + iw]));
                        }
                    }
                    y[(nc * oh + i) * ow + j] = QuantizeKernels.From<T>(best);
                }
    }

    /// <summary>Quantized average pooling as MLAS does: integer window sum, then
    /// saturate(round((sum - zx * count) * sx / (sy * count)) + zy); count excludes padding unless
    /// <paramref name="countIncludePad"/>.</summary>
    public static void AveragePool<T>(ReadOnlySpan<T> x, float sx, int zx, ConvGeometry g, bool countIncludePad, float sy, int zy, Span<T> y) where T : unmanaged
    {
        var (qmin, qmax) = QuantizeKernels.Limits<T>();
        int oh = g.OutH, ow = g.OutW;
        for (int nc = 0; nc < g.Batch * g.Channels; nc++)
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++)
                {
                    int sum = 0, count = 0;
                    for (int ki = 0; ki < g.KernelH; ki++)
                    {
                        int ih = i * g.StrideH - g.PadTop + ki * g.DilationH;
                        for (int kj = 0; kj < g.KernelW; kj++)
                        {
                            int iw = j * g.StrideW - g.PadLeft + kj * g.DilationW;
                            bool inside = ih >= 0 && ih < g.Height && iw >= 0 && iw < g.Width;
                            if (inside) { sum += QGemm.ToInt(x[(nc * g.Height + ih) * g.Width + iw]); count++; }
                            else if (countIncludePad) { sum += zx; count++; }
                        }
                    }
                    float scale = sx / (sy * count);
                    float v = MathF.Round((sum - zx * count) * scale, MidpointRounding.ToEven) + zy;
                    y[(nc * oh + i) * ow + j] = QuantizeKernels.From<T>((int)Math.Clamp(v, qmin, qmax));
                }
    }

    /// <summary>Global average pooling over H x W per channel (the form ResNet's head uses).</summary>
    public static void GlobalAveragePool<T>(ReadOnlySpan<T> x, float sx, int zx, int batchChannels, int spatial, float sy, int zy, Span<T> y) where T : unmanaged
    {
        var (qmin, qmax) = QuantizeKernels.Limits<T>();
        float scale = sx / (sy * spatial);
        for (int nc = 0; nc < batchChannels; nc++)
        {
            int sum = 0;
            for (int p = 0; p < spatial; p++) sum += QGemm.ToInt(x[nc * spatial + p]);
            float v = MathF.Round((sum - zx * spatial) * scale, MidpointRounding.ToEven) + zy;
            y[nc] = QuantizeKernels.From<T>((int)Math.Clamp(v, qmin, qmax));
        }
    }
}
