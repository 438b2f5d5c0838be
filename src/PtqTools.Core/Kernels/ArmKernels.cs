using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;

namespace PtqTools.Core.Kernels;

/// <summary>
/// The ARM64 kernels (<see cref="KernelPath.ArmDot"/>), managed, with System.Runtime.Intrinsics.Arm: the integer GEMM
/// on SDOT (Dp, ARMv8.2 dot product: four s8 x s8 products summed exactly into each int32 lane), which the
/// convolutions reach through a byte im2col, and the quantized Add on AdvSimd fused multiply-adds. Each is held to the
/// same scalar reference as the x64 paths (<see cref="QGemm.Reference"/>, <see cref="QConv.Reference"/>,
/// <see cref="QElementwise.AddReference"/>), here in the xunit suite only for what runs on x64 and under qemu-user
/// by tests/PtqTools.Arm64Check for the rest (docs/platforms.md).
/// </summary>
/// <remarks>
/// SDOT multiplies signed by signed bytes, so unsigned operands are moved to the signed range first: u8 activations
/// and u8 weights as v - 128 (a sign-bit flip; the weights in <see cref="PackedWeights"/>' quads are already stored
/// that way, with their zero points moved alike), s8 values as they are. With a' and w' the signed codes and za', zw'
/// their zero points moved the same way, (a - za)(w - zw) = (a' - za')(w' - zw'), and
/// C[i, j] = sum a'w' - za' colsum'[j] - zw'[j] rowsum'[i] + K za' zw'[j], all in int32 with wrap-around, which is
/// what the reference's int32 sums give (exactly, also where they overflow).
/// </remarks>
public static unsafe class ArmKernels
{
    /// <summary>Whether this CPU runs the ARM64 dot-product kernels (AdvSimd on ARM64 and Dp).</summary>
    public static bool Supported => AdvSimd.Arm64.IsSupported && Dp.IsSupported;

    /// <summary>Whether this CPU has ARM64 AdvSimd (NEON); the quantized Add uses it with or without Dp.</summary>
    public static bool AdvSimdSupported => AdvSimd.Arm64.IsSupported;

    /// <summary>Rows of A per micro-kernel step (4 rows x 16 columns = 16 int32 accumulators).</summary>
    const int RowStep = 4;

    /// <summary>C = (A - aZero)(B - bZero) through SDOT on the weights' quads ([N/16][K/4][16][4] signed bytes). A is
    /// copied once per call: sign-flipped when unsigned, each row zero padded to a whole number of 16-byte vectors.</summary>
    internal static void Gemm(KernelContext context, ReadOnlySpan<byte> a, int aZero, bool aSigned, int m, PackedWeights w, Span<int> c)
    {
        if (!Supported) throw new InvalidOperationException("The ARM64 dot-product kernels (AdvSimd and Dp) are not available on this machine.");
        if (w.Quads is null) throw new InvalidOperationException("The weights were packed without their quads.");
        int k = w.K, n = w.N, kq = (k + 3) / 4, lda = (kq + 3) / 4 * 16;
        // Rows are read 4 at a time: up to 3 extra zero rows keep the last step inside the buffer.
        var a8 = Buffer(ref t_a, (long)(m + RowStep) * lda);
        var rowSums = BufferInts(ref t_rowSums, m);
        int za = aSigned ? aZero : aZero - 128;
        fixed (byte* src = a) fixed (sbyte* dst0 = a8)
        {
            for (int i = 0; i < m; i++)
            {
                sbyte* dst = dst0 + (long)i * lda;
                rowSums[i] = CopyRow(src + (long)i * k, dst, k, flip: !aSigned);
                new Span<sbyte>(dst + k, lda - k).Clear();
            }
            new Span<sbyte>(dst0 + (long)m * lda, RowStep * lda).Clear();
        }
        int padded = w.Blocks * PackedWeights.Block;
        var colTerm = BufferInts(ref t_colTerm, padded);
        var colSums = w.QuadColumnSums!;
        var zb = w.QuadZeroPoints!;
        for (int j = 0; j < padded; j++) colTerm[j] = unchecked(k * za * zb[j] - za * colSums[j]);
        int threads = context.ThreadsFor((long)m * n * k);
        int steps = (m + RowStep - 1) / RowStep;
        threads = Math.Max(1, Math.Min(threads, steps));
        fixed (sbyte* pa = a8) fixed (sbyte* pq = w.Quads) fixed (int* pc = c, pct = colTerm, pzb = zb, prs = rowSums)
        {
            var job = new GemmJob
            {
                A = pa, Lda = lda, M = m, Kq = kq, Quads = pq + w.QuadsOffset, Blocks = w.Blocks, ColTerm = pct, ZeroPoints = pzb,
                RowSums = prs, C = pc, N = n, Per = (steps + threads - 1) / threads * RowStep,
            };
            KernelWorkers.Run(threads, &GemmPart, &job);
        }
    }

    struct GemmJob
    {
        public sbyte* A; public int Lda, M, Kq; public sbyte* Quads; public int Blocks;
        public int* ColTerm, ZeroPoints, RowSums, C; public int N, Per;
    }

    static void GemmPart(void* state, int t)
    {
        ref var j = ref *(GemmJob*)state;
        int r0 = t * j.Per, r1 = Math.Min(j.M, r0 + j.Per);
        if (r0 < r1) GemmRows(ref j, r0, r1);
    }

    /// <summary>Rows [r0, r1) of C: 4 rows by 16 columns per step, K a quad at a time (four with one 16-byte load of
    /// each A row, SDOT by element), then the zero-point terms, in registers.</summary>
    static void GemmRows(ref GemmJob j, int r0, int r1)
    {
        int kq = j.Kq, lda = j.Lda, n = j.N, full4 = kq / 4 * 4;
        int* tmp = stackalloc int[RowStep * PackedWeights.Block];
        for (int i = r0; i < r1; i += RowStep)
        {
            int rows = Math.Min(RowStep, r1 - i);
            sbyte* a0 = j.A + (long)i * lda, a1 = a0 + lda, a2 = a1 + lda, a3 = a2 + lda;
            for (int nb = 0; nb < j.Blocks; nb++)
            {
                Vector128<int> c00 = default, c01 = default, c02 = default, c03 = default,
                               c10 = default, c11 = default, c12 = default, c13 = default,
                               c20 = default, c21 = default, c22 = default, c23 = default,
                               c30 = default, c31 = default, c32 = default, c33 = default;
                sbyte* bp = j.Quads + (long)nb * kq * 64;
                int q = 0;
                for (; q < full4; q += 4, bp += 256)
                {
                    int o = q * 4;
                    var x0 = AdvSimd.LoadVector128(a0 + o); var x1 = AdvSimd.LoadVector128(a1 + o);
                    var x2 = AdvSimd.LoadVector128(a2 + o); var x3 = AdvSimd.LoadVector128(a3 + o);
                    Quad(bp, x0, x1, x2, x3, 0, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13, ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
                    Quad(bp + 64, x0, x1, x2, x3, 1, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13, ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
                    Quad(bp + 128, x0, x1, x2, x3, 2, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13, ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
                    Quad(bp + 192, x0, x1, x2, x3, 3, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13, ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
                }
                if (q < kq)
                {
                    // 1 to 3 quads left; the A rows are zero padded to the whole vector, the B quads are read only as far as kq.
                    int o = q * 4, left = kq - q;
                    var x0 = AdvSimd.LoadVector128(a0 + o); var x1 = AdvSimd.LoadVector128(a1 + o);
                    var x2 = AdvSimd.LoadVector128(a2 + o); var x3 = AdvSimd.LoadVector128(a3 + o);
                    Quad(bp, x0, x1, x2, x3, 0, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13, ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
                    if (left > 1) Quad(bp + 64, x0, x1, x2, x3, 1, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13, ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
                    if (left > 2) Quad(bp + 128, x0, x1, x2, x3, 2, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13, ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
                }
                int col0 = nb * PackedWeights.Block;
                int* ct = j.ColTerm + col0, zp = j.ZeroPoints + col0;
                var t0 = AdvSimd.LoadVector128(ct); var t1 = AdvSimd.LoadVector128(ct + 4); var t2 = AdvSimd.LoadVector128(ct + 8); var t3 = AdvSimd.LoadVector128(ct + 12);
                var z0 = AdvSimd.LoadVector128(zp); var z1 = AdvSimd.LoadVector128(zp + 4); var z2 = AdvSimd.LoadVector128(zp + 8); var z3 = AdvSimd.LoadVector128(zp + 12);
                bool whole = col0 + PackedWeights.Block <= n;
                for (int r = 0; r < rows; r++)
                {
                    // r is 0..3: the row's accumulators, corrected as c + colTerm - zw * rowSum.
                    var (v0, v1, v2, v3) = r switch { 0 => (c00, c01, c02, c03), 1 => (c10, c11, c12, c13), 2 => (c20, c21, c22, c23), _ => (c30, c31, c32, c33) };
                    var rs = Vector128.Create(j.RowSums[i + r]);
                    v0 = AdvSimd.MultiplySubtract(v0 + t0, z0, rs); v1 = AdvSimd.MultiplySubtract(v1 + t1, z1, rs);
                    v2 = AdvSimd.MultiplySubtract(v2 + t2, z2, rs); v3 = AdvSimd.MultiplySubtract(v3 + t3, z3, rs);
                    int* dst = whole ? j.C + (long)(i + r) * n + col0 : tmp;
                    AdvSimd.Store(dst, v0); AdvSimd.Store(dst + 4, v1); AdvSimd.Store(dst + 8, v2); AdvSimd.Store(dst + 12, v3);
                    if (!whole) new ReadOnlySpan<int>(tmp, n - col0).CopyTo(new Span<int>(j.C + (long)(i + r) * n + col0, n - col0));
                }
            }
        }
    }

    /// <summary>One quad of K for 16 columns (four B vectors of 4 columns x 4 bytes) and 4 rows: SDOT by element, the
    /// row's quad <paramref name="lane"/> of its 16-byte A vector.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Quad(sbyte* bp, Vector128<sbyte> x0, Vector128<sbyte> x1, Vector128<sbyte> x2, Vector128<sbyte> x3, [ConstantExpected(Min = 0, Max = 3)] byte lane,
        ref Vector128<int> c00, ref Vector128<int> c01, ref Vector128<int> c02, ref Vector128<int> c03,
        ref Vector128<int> c10, ref Vector128<int> c11, ref Vector128<int> c12, ref Vector128<int> c13,
        ref Vector128<int> c20, ref Vector128<int> c21, ref Vector128<int> c22, ref Vector128<int> c23,
        ref Vector128<int> c30, ref Vector128<int> c31, ref Vector128<int> c32, ref Vector128<int> c33)
    {
        var b0 = AdvSimd.LoadVector128(bp); var b1 = AdvSimd.LoadVector128(bp + 16);
        var b2 = AdvSimd.LoadVector128(bp + 32); var b3 = AdvSimd.LoadVector128(bp + 48);
        c00 = Dp.DotProductBySelectedQuadruplet(c00, b0, x0, lane); c01 = Dp.DotProductBySelectedQuadruplet(c01, b1, x0, lane);
        c02 = Dp.DotProductBySelectedQuadruplet(c02, b2, x0, lane); c03 = Dp.DotProductBySelectedQuadruplet(c03, b3, x0, lane);
        c10 = Dp.DotProductBySelectedQuadruplet(c10, b0, x1, lane); c11 = Dp.DotProductBySelectedQuadruplet(c11, b1, x1, lane);
        c12 = Dp.DotProductBySelectedQuadruplet(c12, b2, x1, lane); c13 = Dp.DotProductBySelectedQuadruplet(c13, b3, x1, lane);
        c20 = Dp.DotProductBySelectedQuadruplet(c20, b0, x2, lane); c21 = Dp.DotProductBySelectedQuadruplet(c21, b1, x2, lane);
        c22 = Dp.DotProductBySelectedQuadruplet(c22, b2, x2, lane); c23 = Dp.DotProductBySelectedQuadruplet(c23, b3, x2, lane);
        c30 = Dp.DotProductBySelectedQuadruplet(c30, b0, x3, lane); c31 = Dp.DotProductBySelectedQuadruplet(c31, b1, x3, lane);
        c32 = Dp.DotProductBySelectedQuadruplet(c32, b2, x3, lane); c33 = Dp.DotProductBySelectedQuadruplet(c33, b3, x3, lane);
    }

    /// <summary>Copies one row of A as signed bytes (flipping the sign bit of unsigned ones: v - 128) and returns the
    /// sum of the copied signed values.</summary>
    static int CopyRow(byte* src, sbyte* dst, int k, bool flip)
    {
        int i = 0;
        var sum = Vector128<int>.Zero;
        var mask = Vector128.Create(flip ? (byte)0x80 : (byte)0);
        for (; i + 16 <= k; i += 16)
        {
            var v = (AdvSimd.LoadVector128(src + i) ^ mask).AsSByte();
            AdvSimd.Store(dst + i, v);
            // s8 -> s16 pairwise sums -> s32 pairwise sums (at most 4 x 128 per lane per step: no overflow).
            sum = AdvSimd.AddPairwiseWideningAndAdd(sum, AdvSimd.AddPairwiseWidening(v));
        }
        int total = Vector128.Sum(sum);
        for (; i < k; i++)
        {
            sbyte v = (sbyte)(flip ? src[i] ^ 0x80 : src[i]);
            dst[i] = v;
            total += v;
        }
        return total;
    }

    /// <summary>The quantized Add of <see cref="QElementwise.AddReference"/> on AdvSimd, in the same order of operations:
    /// t = fma(b, rb, f) (or f when b is one element), v = round_half_even(fma(a, ra, t)) (FMLA, FRINTN), clamped to
    /// the type and narrowed; 16 elements a step, the tail through the reference.</summary>
    internal static void Add<T>(ReadOnlySpan<T> a, float sa, int za, ReadOnlySpan<T> b, float sb, int zb, float sc, int zc, Span<T> c) where T : unmanaged
    {
        if (!AdvSimdSupported) throw new InvalidOperationException("ARM64 AdvSimd is not available on this machine.");
        var (qmin, qmax, ra, rb, f, scalarB) = QElementwise.AddTerms(b, sa, za, sb, zb, sc, zc, c.Length);
        bool signed = typeof(T) == typeof(sbyte);
        var vra = Vector128.Create(ra); var vrb = Vector128.Create(rb); var vf = Vector128.Create(f);
        var vmin = Vector128.Create((float)qmin); var vmax = Vector128.Create((float)qmax);
        int i = 0, n = c.Length;
        fixed (T* pa0 = a, pb0 = b, pc0 = c)
        {
            byte* pa = (byte*)pa0, pb = (byte*)pb0, pc = (byte*)pc0;
            for (; i + 16 <= n; i += 16)
            {
                var (a0, a1, a2, a3) = Widen(AdvSimd.LoadVector128(pa + i), signed);
                Vector128<float> t0 = vf, t1 = vf, t2 = vf, t3 = vf;
                if (!scalarB)
                {
                    var (b0, b1, b2, b3) = Widen(AdvSimd.LoadVector128(pb + i), signed);
                    t0 = AdvSimd.FusedMultiplyAdd(vf, b0, vrb); t1 = AdvSimd.FusedMultiplyAdd(vf, b1, vrb);
                    t2 = AdvSimd.FusedMultiplyAdd(vf, b2, vrb); t3 = AdvSimd.FusedMultiplyAdd(vf, b3, vrb);
                }
                var q0 = Finish(AdvSimd.FusedMultiplyAdd(t0, a0, vra), vmin, vmax);
                var q1 = Finish(AdvSimd.FusedMultiplyAdd(t1, a1, vra), vmin, vmax);
                var q2 = Finish(AdvSimd.FusedMultiplyAdd(t2, a2, vra), vmin, vmax);
                var q3 = Finish(AdvSimd.FusedMultiplyAdd(t3, a3, vra), vmin, vmax);
                // In range after the clamp, so the truncating narrows keep each value's byte.
                var lo = AdvSimd.ExtractNarrowingUpper(AdvSimd.ExtractNarrowingLower(q0), q1);
                var hi = AdvSimd.ExtractNarrowingUpper(AdvSimd.ExtractNarrowingLower(q2), q3);
                AdvSimd.Store(pc + i, AdvSimd.ExtractNarrowingUpper(AdvSimd.ExtractNarrowingLower(lo), hi).AsByte());
            }
        }
        if (i < n) QElementwise.AddReference(a[i..], sa, za, scalarB ? b : b[i..], sb, zb, sc, zc, c[i..]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<int> Finish(Vector128<float> v, Vector128<float> min, Vector128<float> max) =>
        AdvSimd.ConvertToInt32RoundToZero(AdvSimd.Min(AdvSimd.Max(AdvSimd.RoundToNearest(v), min), max));

    /// <summary>16 bytes to four vectors of 4 floats (exact: bytes are small integers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static (Vector128<float>, Vector128<float>, Vector128<float>, Vector128<float>) Widen(Vector128<byte> v, bool signed)
    {
        if (signed)
        {
            var s = v.AsSByte();
            var lo = AdvSimd.SignExtendWideningLower(s.GetLower()); var hi = AdvSimd.SignExtendWideningUpper(s);
            return (AdvSimd.ConvertToSingle(AdvSimd.SignExtendWideningLower(lo.GetLower())), AdvSimd.ConvertToSingle(AdvSimd.SignExtendWideningUpper(lo)),
                    AdvSimd.ConvertToSingle(AdvSimd.SignExtendWideningLower(hi.GetLower())), AdvSimd.ConvertToSingle(AdvSimd.SignExtendWideningUpper(hi)));
        }
        var ulo = AdvSimd.ZeroExtendWideningLower(v.GetLower()); var uhi = AdvSimd.ZeroExtendWideningUpper(v);
        return (AdvSimd.ConvertToSingle(AdvSimd.ZeroExtendWideningLower(ulo.GetLower())), AdvSimd.ConvertToSingle(AdvSimd.ZeroExtendWideningUpper(ulo)),
                AdvSimd.ConvertToSingle(AdvSimd.ZeroExtendWideningLower(uhi.GetLower())), AdvSimd.ConvertToSingle(AdvSimd.ZeroExtendWideningUpper(uhi)));
    }

    [ThreadStatic] static sbyte[]? t_a;
    [ThreadStatic] static int[]? t_rowSums;
    [ThreadStatic] static int[]? t_colTerm;

    static sbyte[] Buffer(ref sbyte[]? cache, long size)
    {
        if (cache is null || cache.Length < size) cache = GC.AllocateUninitializedArray<sbyte>(checked((int)Math.Max(size, (cache?.Length ?? 0) * 3L / 2)), pinned: true);
        return cache;
    }

    static int[] BufferInts(ref int[]? cache, int size)
    {
        if (cache is null || cache.Length < size) cache = new int[Math.Max(size, 16)];
        return cache;
    }
}
