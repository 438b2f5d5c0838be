using System.Numerics;

namespace PtqTools.Core.Engine;

/// <summary>
/// Float element-wise products with multidirectional (NumPy) broadcasting, as the engine's Mul computes them: one
/// IEEE float32 product per output element, so every path (vectors of any width, the scalar reference) gives the
/// same bits, and the same bits as ONNX Runtime's Mul. The fast path walks the output row by row (the innermost
/// dimension), each row a vector product or a vector-times-scalar product.
/// </summary>
internal static class FloatOps
{
    /// <summary>The broadcast output shape of <paramref name="a"/> and <paramref name="b"/>, or null when they do not broadcast.</summary>
    public static long[]? BroadcastDims(long[] a, long[] b)
    {
        int rank = Math.Max(a.Length, b.Length);
        var dims = new long[rank];
        for (int d = 0; d < rank; d++)
        {
            long x = d < rank - a.Length ? 1 : a[d - (rank - a.Length)], y = d < rank - b.Length ? 1 : b[d - (rank - b.Length)];
            if (x != y && x != 1 && y != 1) return null;
            dims[d] = x == 1 ? y : x;
        }
        return dims;
    }

    /// <summary>Element strides of a tensor of <paramref name="dims"/> read at the broadcast shape <paramref name="outDims"/>
    /// (0 along dimensions it broadcasts).</summary>
    static long[] Strides(long[] dims, int rank)
    {
        var st = new long[rank];
        long acc = 1;
        for (int k = rank - 1; k >= 0; k--)
        {
            int src = k - (rank - dims.Length);
            long d = src < 0 ? 1 : dims[src];
            st[k] = d == 1 ? 0 : acc;
            acc *= d;
        }
        return st;
    }

    /// <summary>y = a * b at the broadcast shape <paramref name="dims"/> (from <see cref="BroadcastDims"/>).</summary>
    public static void Multiply(ReadOnlySpan<float> a, long[] aDims, ReadOnlySpan<float> b, long[] bDims, long[] dims, Span<float> y)
    {
        if (a.Length == y.Length && b.Length == y.Length) { Multiply(a, b, y); return; }
        if (b.Length == 1) { Multiply(a.Length == y.Length ? a : throw Shape(), b[0], y); return; }
        if (a.Length == 1) { Multiply(b.Length == y.Length ? b : throw Shape(), a[0], y); return; }
        int rank = dims.Length;
        var sa = Strides(aDims, rank); var sb = Strides(bDims, rank);
        int inner = (int)dims[rank - 1];
        long rows = y.Length / Math.Max(inner, 1);
        var idx = new long[rank];
        for (long r = 0; r < rows; r++)
        {
            long oa = 0, ob = 0;
            for (int k = 0; k < rank - 1; k++) { oa += idx[k] * sa[k]; ob += idx[k] * sb[k]; }
            var row = y.Slice((int)(r * inner), inner);
            bool va = sa[rank - 1] != 0, vb = sb[rank - 1] != 0;
            if (va && vb) Multiply(a.Slice((int)oa, inner), b.Slice((int)ob, inner), row);
            else if (va) Multiply(a.Slice((int)oa, inner), b[(int)ob], row);
            else if (vb) Multiply(b.Slice((int)ob, inner), a[(int)oa], row);
            else row.Fill(a[(int)oa] * b[(int)ob]);
            for (int k = rank - 2; k >= 0; k--) { if (++idx[k] < dims[k]) break; idx[k] = 0; }
        }
    }

    static ArgumentException Shape() => new("the operands do not broadcast to the output.");

    /// <summary>y[i] = a[i] * b[i].</summary>
    public static void Multiply(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            int w = Vector<float>.Count;
            for (; i <= y.Length - w; i += w) (new Vector<float>(a.Slice(i)) * new Vector<float>(b.Slice(i))).CopyTo(y.Slice(i));
        }
        for (; i < y.Length; i++) y[i] = a[i] * b[i];
    }

    /// <summary>y[i] = a[i] * s.</summary>
    public static void Multiply(ReadOnlySpan<float> a, float s, Span<float> y)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            int w = Vector<float>.Count;
            var vs = new Vector<float>(s);
            for (; i <= y.Length - w; i += w) (new Vector<float>(a.Slice(i)) * vs).CopyTo(y.Slice(i));
        }
        for (; i < y.Length; i++) y[i] = a[i] * s;
    }

    /// <summary>The scalar reference: one product per output element, each operand indexed through its broadcast strides.</summary>
    public static void MultiplyReference(float[] a, long[] aDims, float[] b, long[] bDims, long[] dims, float[] y)
    {
        int rank = dims.Length;
        var sa = Strides(aDims, rank); var sb = Strides(bDims, rank);
        var idx = new long[rank];
        for (long i = 0; i < y.Length; i++)
        {
            long oa = 0, ob = 0;
            for (int k = 0; k < rank; k++) { oa += idx[k] * sa[k]; ob += idx[k] * sb[k]; }
            y[i] = a[oa] * b[ob];
            for (int k = rank - 1; k >= 0; k--) { if (++idx[k] < dims[k]) break; idx[k] = 0; }
        }
    }

    /// <summary>The smallest and largest value with 0 included (DynamicQuantizeLinear's range): each element
    /// compared as <c>v &lt; min</c> and <c>v &gt; max</c>, so NaN is skipped; min and max are exact, so lanes
    /// reduce to the same result as the scalar walk (<see cref="RangeWithZeroReference"/>), whatever the order.</summary>
    public static (float Min, float Max) RangeWithZero(ReadOnlySpan<float> x)
    {
        float min = 0, max = 0;
        int i = 0;
        if (Vector.IsHardwareAccelerated && x.Length >= 2 * Vector<float>.Count)
        {
            int w = Vector<float>.Count;
            Vector<float> vmin = Vector<float>.Zero, vmax = Vector<float>.Zero;
            for (; i <= x.Length - w; i += w)
            {
                var v = new Vector<float>(x.Slice(i));
                vmin = Vector.ConditionalSelect(Vector.LessThan(v, vmin), v, vmin);
                vmax = Vector.ConditionalSelect(Vector.GreaterThan(v, vmax), v, vmax);
            }
            for (int k = 0; k < w; k++) { if (vmin[k] < min) min = vmin[k]; if (vmax[k] > max) max = vmax[k]; }
        }
        for (; i < x.Length; i++) { float v = x[i]; if (v < min) min = v; if (v > max) max = v; }
        return (min, max);
    }

    /// <summary>The scalar reference of <see cref="RangeWithZero"/>.</summary>
    public static (float Min, float Max) RangeWithZeroReference(ReadOnlySpan<float> x)
    {
        float min = 0, max = 0;
        foreach (var v in x) { if (v < min) min = v; if (v > max) max = v; }
        return (min, max);
    }
}
