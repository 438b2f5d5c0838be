using System.Runtime.Intrinsics;

namespace PtqTools.Core.Kernels;

/// <summary>Quantized add and pooling, with the arithmetic ONNX Runtime's MLAS uses (float scale ratios, round half
/// to even), so that results agree with its QLinearAdd / QLinearAveragePool / QLinearGlobalAveragePool.</summary>
public static class QElementwise
{
    /// <summary>Reference: c = saturate(round((a - za) * sa/sc + (b - zb) * sb/sc + zc)); b broadcast when it has
    /// one element.</summary>
    public static void AddReference<T>(ReadOnlySpan<T> a, float sa, int za, ReadOnlySpan<T> b, float sb, int zb, float sc, int zc, Span<T> c) where T : unmanaged
    {
        var (qmin, qmax) = QuantizeKernels.Limits<T>();
        float ra = sa / sc, rb = sb / sc;
        for (int i = 0; i < c.Length; i++)
        {
            float va = ra * (QGemm.ToInt(a[a.Length == 1 ? 0 : i]) - za);
            float vb = rb * (QGemm.ToInt(b[b.Length == 1 ? 0 : i]) - zb);
            float v = MathF.Round(va + vb + zc, MidpointRounding.ToEven);
            c[i] = QuantizeKernels.From<T>((int)Math.Clamp(v, qmin, qmax));
        }
    }

    public static void Add<T>(ReadOnlySpan<T> a, float sa, int za, ReadOnlySpan<T> b, float sb, int zb, float sc, int zc, Span<T> c) where T : unmanaged
    {
        if (KernelDispatch.Current == KernelPath.Scalar || a.Length != c.Length || b.Length != c.Length) { AddReference(a, sa, za, b, sb, zb, sc, zc, c); return; }
        var (qmin, qmax) = QuantizeKernels.Limits<T>();
        float ra = sa / sc, rb = sb / sc;
        var vra = Vector128.Create(ra); var vrb = Vector128.Create(rb);
        var vza = Vector128.Create(za); var vzb = Vector128.Create(zb); var vzc = Vector128.Create((float)zc);
        var vmin = Vector128.Create((float)qmin); var vmax = Vector128.Create((float)qmax);
        Span<int> ta = stackalloc int[4], tb = stackalloc int[4], tc = stackalloc int[4];
        int i = 0;
        for (; i + 4 <= c.Length; i += 4)
        {
            for (int t = 0; t < 4; t++) { ta[t] = QGemm.ToInt(a[i + t]); tb[t] = QGemm.ToInt(b[i + t]); }
            var va = vra * Vector128.ConvertToSingle(Vector128.Create<int>(ta) - vza);
            var vb = vrb * Vector128.ConvertToSingle(Vector128.Create<int>(tb) - vzb);
            var v = Vector128.Min(Vector128.Max(Vector128.Round(va + vb + vzc), vmin), vmax);
            Vector128.ConvertToInt32(v).CopyTo(tc);
            for (int t = 0; t < 4; t++) c[i + t] = QuantizeKernels.From<T>(tc[t]);
        }
        if (i < c.Length) AddReference(a[i..], sa, za, b[i..], sb, zb, sc, zc, c[i..]);
    }

    /// <summary>Max pooling of quantized values (exact: max commutes with the monotone affine map). Padding is
    /// ignored, as in ONNX MaxPool.</summary>
    public static void MaxPool<T>(ReadOnlySpan<T> x, ConvGeometry g, Span<T> y) where T : unmanaged
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
