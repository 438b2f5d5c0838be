using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace PtqTools.Core.Calibration;

/// <summary>What one pass over a tensor's values finds: extremes, sums and whether all values are finite.</summary>
public readonly record struct TensorMoments(float Min, float Max, double Sum, double SumSquares, bool Finite, int Length);

/// <summary>
/// The two per-value passes of calibration (moments, then histogram binning), each as a scalar reference and a
/// vectorized path that gives exactly the same result:
/// - Moments: min and max with <see cref="MathF.Min(float, float)"/> semantics (-0 below +0, so the order of the
///   values does not matter); the sums in double over 16 lanes, value i added to lane i % 16 in increasing i, lanes
///   then added 0..15. The vector paths keep the same 16 lanes, so every sum is bit-identical to the reference.
///   v*v is exact in double (24-bit mantissas), so the square needs no particular rounding order.
/// - Binning: bin floor(v * 2^-e) in double (a power-of-two scaling, exact) minus the histogram's origin. The vector
///   path computes the indices 8 at a time and counts them into 4 interleaved int tables, so that runs of values in
///   one bin (ReLU zeros) do not serialize on one counter, then folds the touched bins into the long counts.
/// </summary>
public static class ObserverKernels
{
    const int Lanes = 16;
    /// <summary>Below this many values the scalar binning is used (the table fold would cost more than it saves).</summary>
    const int VectorBinThreshold = 2048;
    const uint ExponentMask = 0x7F80_0000;

    /// <summary>Which path <see cref="Moments"/> and <see cref="Bin"/> take on this machine.</summary>
    public static string Path => Vector512.IsHardwareAccelerated ? "Vector512" : Vector256.IsHardwareAccelerated ? "Vector256" : "Scalar";

    public static TensorMoments Moments(ReadOnlySpan<float> values) =>
        Vector512.IsHardwareAccelerated ? Moments512(values)
        : Vector256.IsHardwareAccelerated ? Moments256(values)
        : MomentsReference(values);

    /// <summary>The scalar reference of <see cref="Moments"/>.</summary>
    public static TensorMoments MomentsReference(ReadOnlySpan<float> values)
    {
        Span<double> sum = stackalloc double[Lanes], sq = stackalloc double[Lanes];
        sum.Clear(); sq.Clear();
        return Tail(values, 0, float.PositiveInfinity, float.NegativeInfinity, sum, sq);
    }

    static TensorMoments Finish(float min, float max, ReadOnlySpan<double> sum, ReadOnlySpan<double> sq, int length)
    {
        double s = 0, q = 0;
        for (int l = 0; l < Lanes; l++) { s += sum[l]; q += sq[l]; }
        return new TensorMoments(min, max, s, q, true, length);
    }

    internal static TensorMoments Moments512(ReadOnlySpan<float> values)
    {
        if (!Vector512.IsHardwareAccelerated) return MomentsReference(values);
        ref float start = ref MemoryMarshal.GetReference(values);
        var vMin = Vector512.Create(float.PositiveInfinity);
        var vMax = Vector512.Create(float.NegativeInfinity);
        Vector512<double> s0 = default, s1 = default, q0 = default, q1 = default;
        var bad = Vector512<uint>.Zero;
        var mask = Vector512.Create(ExponentMask);
        int i = 0, n = values.Length - Lanes;
        for (; i <= n; i += Lanes)
        {
            var v = Vector512.LoadUnsafe(ref start, (nuint)i);
            bad |= Vector512.Equals(v.AsUInt32() & mask, mask);
            vMin = Vector512.Min(vMin, v);
            vMax = Vector512.Max(vMax, v);
            var (lo, hi) = Vector512.Widen(v);   // lanes 0..7 and 8..15
            s0 += lo; s1 += hi;
            q0 += lo * lo; q1 += hi * hi;
        }
        if (bad != Vector512<uint>.Zero) return new TensorMoments(0, 0, 0, 0, false, values.Length);
        Span<double> sum = stackalloc double[Lanes], sq = stackalloc double[Lanes];
        s0.CopyTo(sum); s1.CopyTo(sum[8..]); q0.CopyTo(sq); q1.CopyTo(sq[8..]);
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        for (int l = 0; l < Lanes; l++) { min = MathF.Min(min, vMin[l]); max = MathF.Max(max, vMax[l]); }
        return Tail(values, i, min, max, sum, sq);
    }

    internal static TensorMoments Moments256(ReadOnlySpan<float> values)
    {
        if (!Vector256.IsHardwareAccelerated) return MomentsReference(values);
        ref float start = ref MemoryMarshal.GetReference(values);
        var vMin = Vector256.Create(float.PositiveInfinity);
        var vMax = Vector256.Create(float.NegativeInfinity);
        Vector256<double> s0 = default, s1 = default, s2 = default, s3 = default, q0 = default, q1 = default, q2 = default, q3 = default;
        var bad = Vector256<uint>.Zero;
        var mask = Vector256.Create(ExponentMask);
        int i = 0, n = values.Length - Lanes;
        for (; i <= n; i += Lanes)
        {
            var a = Vector256.LoadUnsafe(ref start, (nuint)i);
            var b = Vector256.LoadUnsafe(ref start, (nuint)(i + 8));
            bad |= Vector256.Equals(a.AsUInt32() & mask, mask) | Vector256.Equals(b.AsUInt32() & mask, mask);
            vMin = Vector256.Min(vMin, Vector256.Min(a, b));
            vMax = Vector256.Max(vMax, Vector256.Max(a, b));
            var (a0, a1) = Vector256.Widen(a);   // lanes 0..3, 4..7
            var (b0, b1) = Vector256.Widen(b);   // lanes 8..11, 12..15
            s0 += a0; s1 += a1; s2 += b0; s3 += b1;
            q0 += a0 * a0; q1 += a1 * a1; q2 += b0 * b0; q3 += b1 * b1;
        }
        if (bad != Vector256<uint>.Zero) return new TensorMoments(0, 0, 0, 0, false, values.Length);
        Span<double> sum = stackalloc double[Lanes], sq = stackalloc double[Lanes];
        s0.CopyTo(sum); s1.CopyTo(sum[4..]); s2.CopyTo(sum[8..]); s3.CopyTo(sum[12..]);
        q0.CopyTo(sq); q1.CopyTo(sq[4..]); q2.CopyTo(sq[8..]); q3.CopyTo(sq[12..]);
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        for (int l = 0; l < 8; l++) { min = MathF.Min(min, vMin[l]); max = MathF.Max(max, vMax[l]); }
        return Tail(values, i, min, max, sum, sq);
    }

    /// <summary>Values from <paramref name="i"/> on, one at a time, each into lane i % 16: the whole reference, and
    /// the values after the vector paths' last whole block of 16.</summary>
    static TensorMoments Tail(ReadOnlySpan<float> values, int i, float min, float max, Span<double> sum, Span<double> sq)
    {
        for (; i < values.Length; i++)
        {
            float v = values[i];
            if (!float.IsFinite(v)) return new TensorMoments(0, 0, 0, 0, false, values.Length);
            min = MathF.Min(min, v);
            max = MathF.Max(max, v);
            double d = v;
            sum[i % Lanes] += d;
            sq[i % Lanes] += d * d;
        }
        return Finish(min, max, sum, sq, values.Length);
    }

    /// <summary>Adds each value to counts[floor(v * inv) - origin]. The caller guarantees every index is inside
    /// counts (it has covered [min, max]) and that inv is a power of two.</summary>
    public static void Bin(ReadOnlySpan<float> values, double inv, long origin, long[] counts, float min, float max)
    {
        if (values.Length < VectorBinThreshold || !Vector512.IsHardwareAccelerated && !Vector256.IsHardwareAccelerated)
            BinReference(values, inv, origin, counts);
        else
            BinVector(values, inv, origin, counts, min, max);
    }

    /// <summary>The scalar reference of <see cref="Bin"/>.</summary>
    public static void BinReference(ReadOnlySpan<float> values, double inv, long origin, long[] counts)
    {
        foreach (var v in values)
            counts[(long)Math.Floor(v * inv) - origin]++;
    }

    [ThreadStatic] static int[]? t_tables;

    internal static void BinVector(ReadOnlySpan<float> values, double inv, long origin, long[] counts, float min, float max)
    {
        int bins = counts.Length;
        var tables = t_tables ??= new int[4 * StreamingHistogram.MaxBins];
        if (tables.Length < 4 * bins) t_tables = tables = new int[4 * bins];
        long first = (long)Math.Floor(min * inv) - origin, last = (long)Math.Floor(max * inv) - origin;
        // The writes below are unchecked: every value lies in [min, max], so its bin lies in [first, last].
        if (first < 0 || last >= bins || first > last)
            throw new ArgumentOutOfRangeException(nameof(min), $"Bins {first}..{last} are outside the histogram's {bins}.");
        // int counters: one call adds at most 2^30 values to a table before it is folded.
        const int Chunk = 1 << 30;
        for (int offset = 0; offset < values.Length; offset += Chunk)
        {
            var part = values.Slice(offset, Math.Min(Chunk, values.Length - offset));
            CountInto(part, inv, origin, tables, bins);
            for (int k = (int)first; k <= (int)last; k++)
            {
                long c = (long)tables[k] + tables[bins + k] + tables[2 * bins + k] + tables[3 * bins + k];
                if (c == 0) continue;
                counts[k] += c;
                tables[k] = tables[bins + k] = tables[2 * bins + k] = tables[3 * bins + k] = 0;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void CountInto(ReadOnlySpan<float> values, double inv, long origin, int[] tables, int bins)
    {
        ref float start = ref MemoryMarshal.GetReference(values);
        ref int t = ref MemoryMarshal.GetArrayDataReference(tables);
        Span<int> idx = stackalloc int[8];
        ref int ix = ref MemoryMarshal.GetReference(idx);
        int b1 = bins, b2 = 2 * bins, b3 = 3 * bins;
        int i = 0, n = values.Length - 8;
        if (Vector512.IsHardwareAccelerated)
        {
            var vInv = Vector512.Create(inv);
            var vOrigin = Vector512.Create(origin);
            for (; i <= n; i += 8)
            {
                var d = Vector512.WidenLower(Vector256.LoadUnsafe(ref start, (nuint)i).ToVector512Unsafe());
                var k = Vector512.ConvertToInt64(Vector512.Floor(d * vInv)) - vOrigin;
                Vector256.Narrow(k.GetLower(), k.GetUpper()).StoreUnsafe(ref ix);
                Count(ref t, ref ix, b1, b2, b3);
            }
        }
        else
        {
            var vInv = Vector256.Create(inv);
            var vOrigin = Vector256.Create(origin);
            for (; i <= n; i += 8)
            {
                var (lo, hi) = Vector256.Widen(Vector256.LoadUnsafe(ref start, (nuint)i));
                var k0 = Vector256.ConvertToInt64(Vector256.Floor(lo * vInv)) - vOrigin;
                var k1 = Vector256.ConvertToInt64(Vector256.Floor(hi * vInv)) - vOrigin;
                Vector256.Narrow(k0, k1).StoreUnsafe(ref ix);
                Count(ref t, ref ix, b1, b2, b3);
            }
        }
        for (; i < values.Length; i++)
            tables[(int)((long)Math.Floor(values[i] * inv) - origin)]++;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Count(ref int t, ref int ix, int b1, int b2, int b3)
    {
        Unsafe.Add(ref t, Unsafe.Add(ref ix, 0))++;
        Unsafe.Add(ref t, b1 + Unsafe.Add(ref ix, 1))++;
        Unsafe.Add(ref t, b2 + Unsafe.Add(ref ix, 2))++;
        Unsafe.Add(ref t, b3 + Unsafe.Add(ref ix, 3))++;
        Unsafe.Add(ref t, Unsafe.Add(ref ix, 4))++;
        Unsafe.Add(ref t, b1 + Unsafe.Add(ref ix, 5))++;
        Unsafe.Add(ref t, b2 + Unsafe.Add(ref ix, 6))++;
        Unsafe.Add(ref t, b3 + Unsafe.Add(ref ix, 7))++;
    }
}
