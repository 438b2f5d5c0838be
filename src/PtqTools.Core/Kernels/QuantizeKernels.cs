using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using PtqTools.Core.Quantization;

namespace PtqTools.Core.Kernels;

/// <summary>
/// Quantize, dequantize and requantize over whole tensors, per tensor or per channel, to u8 or s8. The scalar forms
/// call <see cref="QuantMath"/> element by element (the reference); the fast forms use Vector128/256/512 through the
/// portable Vector APIs, whose division, rounding (half to even) and clamping are the same IEEE operations, so the
/// results are identical.
/// </summary>
public static class QuantizeKernels
{
    /// <summary>Channel of element i for a tensor whose channel axis has <paramref name="channels"/> slices of
    /// <paramref name="inner"/> elements (channels == 1: per tensor).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int Channel(long i, int channels, long inner) => channels == 1 ? 0 : (int)(i / inner % channels);

    static void CheckParams(int scales, int zeroPoints, int channels)
    {
        if (scales != channels || (zeroPoints != channels && zeroPoints != 1))
            throw new ArgumentException($"{scales} scales and {zeroPoints} zero points do not fit {channels} channels.");
    }

    public static void QuantizeReference<T>(ReadOnlySpan<float> x, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeroPoints, long inner, Span<T> y) where T : unmanaged
    {
        var (qmin, qmax) = Limits<T>();
        for (long i = 0; i < x.Length; i++)
        {
            int c = Channel(i, scales.Length, inner);
            y[(int)i] = From<T>(QuantMath.Quantize(x[(int)i], new QuantParams(scales[c], zeroPoints[zeroPoints.Length == 1 ? 0 : c]), qmin, qmax));
        }
    }

    /// <summary>y = saturate(round_half_even(x / scale[c]) + zeroPoint[c]); T is byte or sbyte.</summary>
    public static void Quantize<T>(KernelContext context, ReadOnlySpan<float> x, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeroPoints, long inner, Span<T> y) where T : unmanaged
    {
        CheckParams(scales.Length, zeroPoints.Length, scales.Length);
        if (context.EffectivePath == KernelPath.Scalar || !Vector128.IsHardwareAccelerated) { QuantizeReference(x, scales, zeroPoints, inner, y); return; }
        var (qmin, qmax) = Limits<T>();
        long segment = scales.Length == 1 ? x.Length : inner;
        Span<int> tmp = stackalloc int[4];
        for (long start = 0; start < x.Length; start += segment)
        {
            int c = Channel(start, scales.Length, inner);
            float s = scales[c];
            int zp = zeroPoints[zeroPoints.Length == 1 ? 0 : c];
            int len = (int)Math.Min(segment, x.Length - start), i = 0;
            var xs = x.Slice((int)start, len);
            var ys = y.Slice((int)start, len);
            var vs = Vector128.Create(s); var vz = Vector128.Create((float)zp);
            var vmin = Vector128.Create((float)qmin); var vmax = Vector128.Create((float)qmax);
            if (Vector256.IsHardwareAccelerated && len >= 32)
                i = Quantize32(xs, s, zp, qmin, qmax, System.Runtime.InteropServices.MemoryMarshal.AsBytes(ys), typeof(T) == typeof(sbyte));
            for (; i + 4 <= len; i += 4)
            {
                var v = Vector128.Round(Vector128.LoadUnsafe(ref Unsafe.AsRef(in xs[i])) / vs) + vz;
                // NaN compares false: QuantMath maps it to the zero point.
                var nan = ~Vector128.Equals(v, v);
                v = Vector128.ConditionalSelect(nan, vz, v);
                v = Vector128.Min(Vector128.Max(v, vmin), vmax);
                Vector128.ConvertToInt32(v).CopyTo(tmp);
                for (int t = 0; t < 4; t++) ys[i + t] = From<T>(tmp[t]);
            }
            for (; i < len; i++) ys[i] = From<T>(QuantMath.Quantize(xs[i], new QuantParams(s, zp), qmin, qmax));
        }
    }

    /// <summary>The body of <see cref="Quantize{T}"/> 32 values at a time in 256-bit vectors (the same IEEE division,
    /// round half to even, NaN to the zero point and clamping as the 128-bit loop; the clamped integers narrowed to
    /// bytes exactly); returns how many it wrote.</summary>
    static int Quantize32(ReadOnlySpan<float> xs, float s, int zp, int qmin, int qmax, Span<byte> ys, bool signed)
    {
        var vs = Vector256.Create(s); var vz = Vector256.Create((float)zp);
        var vmin = Vector256.Create((float)qmin); var vmax = Vector256.Create((float)qmax);
        int i = 0;
        for (; i + 32 <= xs.Length; i += 32)
        {
            var q0 = Step(Vector256.Create(xs.Slice(i, 8)), vs, vz, vmin, vmax);
            var q1 = Step(Vector256.Create(xs.Slice(i + 8, 8)), vs, vz, vmin, vmax);
            var q2 = Step(Vector256.Create(xs.Slice(i + 16, 8)), vs, vz, vmin, vmax);
            var q3 = Step(Vector256.Create(xs.Slice(i + 24, 8)), vs, vz, vmin, vmax);
            var lo = Vector256.Narrow(q0, q1); var hi = Vector256.Narrow(q2, q3);
            var bytes = signed ? Vector256.Narrow(lo, hi).AsByte() : Vector256.Narrow(lo.AsUInt16(), hi.AsUInt16());
            bytes.CopyTo(ys.Slice(i, 32));
        }
        return i;

        static Vector256<int> Step(Vector256<float> x, Vector256<float> vs, Vector256<float> vz, Vector256<float> vmin, Vector256<float> vmax)
        {
            var v = Vector256.Round(x / vs) + vz;
            v = Vector256.ConditionalSelect(~Vector256.Equals(v, v), vz, v);
            return Vector256.ConvertToInt32(Vector256.Min(Vector256.Max(v, vmin), vmax));
        }
    }

    public static void DequantizeReference<T>(ReadOnlySpan<T> q, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeroPoints, long inner, Span<float> y) where T : unmanaged
    {
        for (long i = 0; i < q.Length; i++)
        {
            int c = Channel(i, scales.Length, inner);
            y[(int)i] = QuantMath.Dequantize(QGemm.ToInt(q[(int)i]), new QuantParams(scales[c], zeroPoints[zeroPoints.Length == 1 ? 0 : c]));
        }
    }

    /// <summary>y = (q - zeroPoint[c]) * scale[c]; T is byte, sbyte or int.</summary>
    public static void Dequantize<T>(KernelContext context, ReadOnlySpan<T> q, ReadOnlySpan<float> scales, ReadOnlySpan<int> zeroPoints, long inner, Span<float> y) where T : unmanaged
    {
        CheckParams(scales.Length, zeroPoints.Length, scales.Length);
        if (context.EffectivePath == KernelPath.Scalar || !Vector128.IsHardwareAccelerated) { DequantizeReference(q, scales, zeroPoints, inner, y); return; }
        Span<int> tmp = stackalloc int[4];
        if (scales.Length > 1 && inner == 1 && q.Length % scales.Length == 0)
        {
            // Channels along the last axis (per-channel embeddings after a Gather): row by row, 4 channels a vector.
            int ch = scales.Length;
            Span<int> zrow = ch <= 4096 ? stackalloc int[ch] : new int[ch];
            for (int c = 0; c < ch; c++) zrow[c] = zeroPoints[zeroPoints.Length == 1 ? 0 : c];
            for (long row = 0; row < q.Length; row += ch)
            {
                var qs = q.Slice((int)row, ch);
                var ys = y.Slice((int)row, ch);
                int c = 0;
                for (; c + 4 <= ch; c += 4)
                {
                    for (int t = 0; t < 4; t++) tmp[t] = QGemm.ToInt(qs[c + t]);
                    var v = Vector128.ConvertToSingle(Vector128.Create<int>(tmp) - Vector128.Create<int>(zrow.Slice(c, 4))) * Vector128.Create<float>(scales.Slice(c, 4));
                    v.CopyTo(ys.Slice(c, 4));
                }
                for (; c < ch; c++) ys[c] = QuantMath.Dequantize(QGemm.ToInt(qs[c]), new QuantParams(scales[c], zrow[c]));
            }
            return;
        }
        long segment = scales.Length == 1 ? q.Length : inner;
        for (long start = 0; start < q.Length; start += segment)
        {
            int c = Channel(start, scales.Length, inner);
            float s = scales[c];
            int zp = zeroPoints[zeroPoints.Length == 1 ? 0 : c];
            int len = (int)Math.Min(segment, q.Length - start), i = 0;
            var qs = q.Slice((int)start, len);
            var ys = y.Slice((int)start, len);
            var vs = Vector128.Create(s); var vz = Vector128.Create(zp);
            // u8 and s8 codes widened 16 at a time (the same int subtraction, exact conversion and IEEE product).
            if (typeof(T) == typeof(byte) || typeof(T) == typeof(sbyte))
            {
                var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(qs);
                for (; i + 16 <= len; i += 16)
                {
                    var b = Vector128.Create<byte>(bytes.Slice(i, 16));
                    Vector128<int> q0, q1, q2, q3;
                    if (typeof(T) == typeof(byte))
                    {
                        var lo = Vector128.WidenLower(b); var hi = Vector128.WidenUpper(b);
                        q0 = Vector128.WidenLower(lo).AsInt32(); q1 = Vector128.WidenUpper(lo).AsInt32();
                        q2 = Vector128.WidenLower(hi).AsInt32(); q3 = Vector128.WidenUpper(hi).AsInt32();
                    }
                    else
                    {
                        var sb = b.AsSByte();
                        var lo = Vector128.WidenLower(sb); var hi = Vector128.WidenUpper(sb);
                        q0 = Vector128.WidenLower(lo); q1 = Vector128.WidenUpper(lo);
                        q2 = Vector128.WidenLower(hi); q3 = Vector128.WidenUpper(hi);
                    }
                    (Vector128.ConvertToSingle(q0 - vz) * vs).CopyTo(ys.Slice(i, 4));
                    (Vector128.ConvertToSingle(q1 - vz) * vs).CopyTo(ys.Slice(i + 4, 4));
                    (Vector128.ConvertToSingle(q2 - vz) * vs).CopyTo(ys.Slice(i + 8, 4));
                    (Vector128.ConvertToSingle(q3 - vz) * vs).CopyTo(ys.Slice(i + 12, 4));
                }
            }
            for (; i + 4 <= len; i += 4)
            {
                for (int t = 0; t < 4; t++) tmp[t] = QGemm.ToInt(qs[i + t]);
                var v = Vector128.ConvertToSingle(Vector128.Create<int>(tmp) - vz) * vs;
                v.CopyTo(ys.Slice(i, 4));
            }
            for (; i < len; i++) ys[i] = QuantMath.Dequantize(QGemm.ToInt(qs[i]), new QuantParams(s, zp));
        }
    }

    public static void RequantizeReference<T>(ReadOnlySpan<int> acc, ReadOnlySpan<float> multipliers, int zeroPoint, long inner, Span<T> y) where T : unmanaged
    {
        var (qmin, qmax) = Limits<T>();
        for (long i = 0; i < acc.Length; i++)
            y[(int)i] = From<T>(QuantMath.Requantize(acc[(int)i], multipliers[Channel(i, multipliers.Length, inner)], zeroPoint, qmin, qmax));
    }

    /// <summary>int32 accumulators to T with a float multiplier per tensor or per channel (as MLAS does).</summary>
    public static void Requantize<T>(KernelContext context, ReadOnlySpan<int> acc, ReadOnlySpan<float> multipliers, int zeroPoint, long inner, Span<T> y) where T : unmanaged
    {
        if (context.EffectivePath == KernelPath.Scalar || !Vector128.IsHardwareAccelerated) { RequantizeReference(acc, multipliers, zeroPoint, inner, y); return; }
        var (qmin, qmax) = Limits<T>();
        long segment = multipliers.Length == 1 ? acc.Length : inner;
        Span<int> tmp = stackalloc int[4];
        for (long start = 0; start < acc.Length; start += segment)
        {
            float m = multipliers[Channel(start, multipliers.Length, inner)];
            int len = (int)Math.Min(segment, acc.Length - start), i = 0;
            var a = acc.Slice((int)start, len);
            var ys = y.Slice((int)start, len);
            var vm = Vector128.Create(m); var vz = Vector128.Create((float)zeroPoint);
            var vmin = Vector128.Create((float)qmin); var vmax = Vector128.Create((float)qmax);
            for (; i + 4 <= len; i += 4)
            {
                var v = Vector128.Round(Vector128.ConvertToSingle(Vector128.Create(a.Slice(i, 4))) * vm) + vz;
                v = Vector128.Min(Vector128.Max(v, vmin), vmax);
                Vector128.ConvertToInt32(v).CopyTo(tmp);
                for (int t = 0; t < 4; t++) ys[i + t] = From<T>(tmp[t]);
            }
            for (; i < len; i++) ys[i] = From<T>(QuantMath.Requantize(a[i], m, zeroPoint, qmin, qmax));
        }
    }

    public static void RequantizeFixedPointReference<T>(ReadOnlySpan<int> acc, ReadOnlySpan<int> fixedMultipliers, ReadOnlySpan<int> shifts, int zeroPoint, long inner, Span<T> y) where T : unmanaged
    {
        var (qmin, qmax) = Limits<T>();
        for (long i = 0; i < acc.Length; i++)
        {
            int c = Channel(i, fixedMultipliers.Length, inner);
            y[(int)i] = From<T>(QuantMath.RequantizeFixedPoint(acc[(int)i], fixedMultipliers[c], shifts[c], zeroPoint, qmin, qmax));
        }
    }

    /// <summary>int32 accumulators to T with a Q31 multiplier and shift per tensor or per channel; the vector form
    /// does the doubling high multiply in int64 lanes.</summary>
    public static void RequantizeFixedPoint<T>(KernelContext context, ReadOnlySpan<int> acc, ReadOnlySpan<int> fixedMultipliers, ReadOnlySpan<int> shifts, int zeroPoint, long inner, Span<T> y) where T : unmanaged
    {
        if (context.EffectivePath == KernelPath.Scalar || !Vector128.IsHardwareAccelerated) { RequantizeFixedPointReference(acc, fixedMultipliers, shifts, zeroPoint, inner, y); return; }
        var (qmin, qmax) = Limits<T>();
        long segment = fixedMultipliers.Length == 1 ? acc.Length : inner;
        Span<long> tmp = stackalloc long[2];
        for (long start = 0; start < acc.Length; start += segment)
        {
            int c = Channel(start, fixedMultipliers.Length, inner);
            int fm = fixedMultipliers[c], shift = shifts[c];
            int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
            int len = (int)Math.Min(segment, acc.Length - start), i = 0;
            var a = acc.Slice((int)start, len);
            var ys = y.Slice((int)start, len);
            long mask = (1L << right) - 1;
            var vfm = Vector128.Create((long)fm);
            for (; i + 2 <= len && fm != int.MinValue; i += 2)
            {
                var x = Vector128.Create((long)unchecked(a[i] * (1 << left)), unchecked(a[i + 1] * (1 << left)));
                var ab = x * vfm;
                var neg = Vector128.LessThan(ab, Vector128<long>.Zero);
                var nudge = Vector128.ConditionalSelect(neg, Vector128.Create(1 - (1L << 30)), Vector128.Create(1L << 30));
                var sum = ab + nudge;
                // Division by 2^31 truncating toward zero.
                var bias = Vector128.ConditionalSelect(Vector128.LessThan(sum, Vector128<long>.Zero), Vector128.Create((1L << 31) - 1), Vector128<long>.Zero);
                var high = Vector128.ShiftRightArithmetic(sum + bias, 31);
                // high fits int32; the rounding divide by 2^right in int64 lanes.
                var rem = high & Vector128.Create(mask);
                Vector128<long> threshold;
                // threshold = (mask >> 1) + (high < 0 ? 1 : 0): the comparison gives -1 per true lane.
                threshold = Vector128.Create(mask >> 1) - Vector128.LessThan(high, Vector128<long>.Zero);
                var q = Vector128.ShiftRightArithmetic(high, right) - Vector128.GreaterThan(rem, threshold);
                q = Vector128.Min(Vector128.Max(q + Vector128.Create((long)zeroPoint), Vector128.Create((long)qmin)), Vector128.Create((long)qmax));
                q.CopyTo(tmp);
                ys[i] = From<T>((int)tmp[0]); ys[i + 1] = From<T>((int)tmp[1]);
            }
            for (; i < len; i++) ys[i] = From<T>(QuantMath.RequantizeFixedPoint(a[i], fm, shift, zeroPoint, qmin, qmax));
        }
    }

    internal static (int Min, int Max) Limits<T>() where T : unmanaged =>
        typeof(T) == typeof(byte) ? (0, 255) : typeof(T) == typeof(sbyte) ? (-128, 127)
        : throw new NotSupportedException($"Quantized type {typeof(T).Name} is not byte or sbyte.");

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static T From<T>(int v) where T : unmanaged
    {
        if (typeof(T) == typeof(byte)) { byte b = (byte)v; return Unsafe.As<byte, T>(ref b); }
        if (typeof(T) == typeof(sbyte)) { sbyte s = (sbyte)v; return Unsafe.As<sbyte, T>(ref s); }
        if (typeof(T) == typeof(int)) return Unsafe.As<int, T>(ref v);
        throw new NotSupportedException(typeof(T).Name);
    }
}
