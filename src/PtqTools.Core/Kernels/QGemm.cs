using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PtqTools.Core.Kernels;

/// <summary>
/// Weights (the right-hand K x N matrix of an integer GEMM) packed once: zero point subtracted and widened to int16,
/// K in pairs and N in blocks of 16 columns ([N/16][K/2][16][2]), which is what vpmaddwd consumes; and, for the
/// native VNNI path, as signed bytes in quads ([N/16][K/4][16][4]) with the column sums its zero-point correction needs.
/// </summary>
public sealed class PackedWeights
{
    public const int Block = 16;
    public int K { get; }
    public int N { get; }
    internal int KPairs { get; }
    internal int Blocks { get; }
    /// <summary>The int16 pairs (w minus its zero point) the managed and widened AVX2 kernels read. Dropped by
    /// <see cref="DropUnusedForms"/> on a path that runs the quads, and then rebuilt exactly from them if read.</summary>
    internal short[] Data => _data ?? DataFromQuads();
    short[]? _data;
    internal int[] ZeroPoints { get; }
    internal sbyte[]? Quads { get; private set; }
    /// <summary>Where the quads start in <see cref="Quads"/> (a 64-byte boundary of the pinned array).</summary>
    internal int QuadsOffset { get; }
    internal int[]? QuadColumnSums { get; private set; }
    internal int[]? QuadZeroPoints { get; private set; }
    readonly object _sync = new();
    /// <summary>Whether no adjacent pair of the quads can saturate vpmaddubsw (max(w0,0) + max(w1,0) &lt;= 128 and
    /// min(w0,0) + min(w1,0) &gt;= -128): the native AVX2 kernel then takes its 7-bit pairs form, else the widened one.</summary>
    public bool SevenBitPairs { get; }

    PackedWeights(int k, int n, Func<int, int, int> valueMinusZero, Func<int, int, int> storedSigned, int[] zeroPoints, bool quads)
    {
        K = k; N = n; ZeroPoints = zeroPoints;
        KPairs = (k + 1) / 2;
        Blocks = (n + Block - 1) / Block;
        var data = _data = new short[Blocks * KPairs * Block * 2];
        for (int nb = 0; nb < Blocks; nb++)
            for (int kp = 0; kp < KPairs; kp++)
                for (int j = 0; j < Block; j++)
                    for (int t = 0; t < 2; t++)
                    {
                        int kk = kp * 2 + t, col = nb * Block + j;
                        if (kk < k && col < n) data[((nb * KPairs + kp) * Block + j) * 2 + t] = (short)valueMinusZero(kk, col);
                    }
        if (!quads) return;
        int kq = (k + 3) / 4;
        // 16 quads of slack: an AMX tile of the last block may read up to 15 quads past its end (times zero A columns).
        var packed = new sbyte[Blocks * kq * Block * 4 + 16 * Block * 4];
        QuadColumnSums = new int[Blocks * Block];
        QuadZeroPoints = new int[Blocks * Block];
        for (int col = 0; col < n; col++) QuadZeroPoints[col] = storedSigned(-1, col);
        for (int nb = 0; nb < Blocks; nb++)
            for (int q = 0; q < kq; q++)
                for (int j = 0; j < Block; j++)
                    for (int t = 0; t < 4; t++)
                    {
                        int kk = q * 4 + t, col = nb * Block + j;
                        if (kk < k && col < n)
                        {
                            int v = storedSigned(kk, col);
                            packed[((nb * kq + q) * Block + j) * 4 + t] = (sbyte)v;
                            QuadColumnSums[col] += v;
                        }
                    }
        SevenBitPairs = PairsCannotSaturate(packed);
        (Quads, QuadsOffset) = NativeKernels.Aligned(packed);
    }

    /// <summary>Whether every adjacent pair (bytes 2i, 2i + 1) of s8 weights multiplied by u8 values sums exactly in
    /// int16 through vpmaddubsw: 255 * 128 = 32640 is the largest magnitude a pair may reach.</summary>
    internal static bool PairsCannotSaturate(ReadOnlySpan<sbyte> pairs)
    {
        for (int i = 0; i + 1 < pairs.Length; i += 2)
        {
            int w0 = pairs[i], w1 = pairs[i + 1];
            if (Math.Max(w0, 0) + Math.Max(w1, 0) > 128 || Math.Min(w0, 0) + Math.Min(w1, 0) < -128) return false;
        }
        return true;
    }

    static int[] Zeros(ReadOnlySpan<int> zp, int n, int min, int max)
    {
        if (zp.Length != 1 && zp.Length != n)
            throw new ArgumentException($"The weight zero point has {zp.Length} values; it needs 1 or {n}.");
        var z = new int[n];
        for (int i = 0; i < n; i++)
        {
            z[i] = zp[zp.Length == 1 ? 0 : i];
            if (z[i] < min || z[i] > max) throw new ArgumentException($"Weight zero point {z[i]} is outside [{min}, {max}].");
        }
        return z;
    }

    /// <summary>Bytes this packing holds (the int16 pairs, and the VNNI quads where packed).</summary>
    internal long Bytes => (_data?.Length ?? 0) * 2L + (Quads?.Length ?? 0) + (QuadColumnSums?.Length ?? 0) * 8L + ZeroPoints.Length * 4L;

    /// <summary>Keeps the one form <paramref name="path"/> runs (issue 16: weights held once): on the quads' paths
    /// (native VNNI, ARM64 SDOT, native AVX2 on 7-bit pairs) the int16 pairs go (rebuilt exactly from the quads if
    /// read again); on the managed paths the quads go (nothing there reads them). The native AVX2 kernel on
    /// widened pairs keeps both: its dispatch needs the quads. Returns the bytes let go.</summary>
    internal long DropUnusedForms(KernelPath path)
    {
        lock (_sync)
        {
            if (Quads is not { } quads) return 0;
            if (path is KernelPath.NativeVnni or KernelPath.ArmDot || path == KernelPath.NativeAvx2 && SevenBitPairs)
            {
                if (_data is not { } data) return 0;
                _data = null;
                return data.Length * 2L;
            }
            if (path is KernelPath.NativeAvx2) return 0;
            long bytes = quads.Length + (QuadColumnSums?.Length ?? 0) * 4L + (QuadZeroPoints?.Length ?? 0) * 4L;
            Quads = null; QuadColumnSums = null; QuadZeroPoints = null;
            return bytes;
        }
    }

    /// <summary>The int16 pairs again from the quads: stored code minus its zero point, both as the quads hold them
    /// (unsigned ones minus 128), so exactly the value minus its zero point <see cref="PackedWeights"/> wrote; zero
    /// past K and N.</summary>
    short[] DataFromQuads()
    {
        lock (_sync)
        {
            if (_data is { } held) return held;
            var quads = Quads!; var zb = QuadZeroPoints!;
            int kq = (K + 3) / 4;
            var data = new short[Blocks * KPairs * Block * 2];
            for (int nb = 0; nb < Blocks; nb++)
                for (int kp = 0; kp < KPairs; kp++)
                    for (int j = 0; j < Block; j++)
                        for (int t = 0; t < 2; t++)
                        {
                            int kk = kp * 2 + t, col = nb * Block + j;
                            if (kk < K && col < N)
                                data[((nb * KPairs + kp) * Block + j) * 2 + t] = (short)(quads[QuadsOffset + ((nb * kq + kk / 4) * Block + j) * 4 + kk % 4] - zb[col]);
                        }
            return _data = data;
        }
    }

    /// <summary>Packs signed int8 weights b[k * n + col] with one zero point or one per column.</summary>
    public static PackedWeights Pack(ReadOnlySpan<sbyte> b, int k, int n, ReadOnlySpan<int> zeroPoints) => Pack(b, k, n, zeroPoints, QuadsRun);

    /// <summary>Packs unsigned int8 weights; the VNNI form stores them minus 128 as signed bytes.</summary>
    public static PackedWeights Pack(ReadOnlySpan<byte> b, int k, int n, ReadOnlySpan<int> zeroPoints) => Pack(b, k, n, zeroPoints, QuadsRun);

    /// <summary>Packs weights read through <paramref name="stored"/>(k, column) — the stored code, unsigned when
    /// <paramref name="unsigned"/> — without copying them first (convolution weights read in place, transposed).</summary>
    /// <summary>Whether a path that runs the quads (native VNNI/AMX, ARM64 SDOT) can run in this process.</summary>
    internal static bool QuadsRun => NativeKernels.Available || ArmKernels.Supported;

    internal static PackedWeights Pack(int k, int n, Func<int, int, int> stored, ReadOnlySpan<int> zeroPoints, bool unsigned, bool quads)
    {
        var z = unsigned ? Zeros(zeroPoints, n, 0, 255) : Zeros(zeroPoints, n, -128, 127);
        int shift = unsigned ? 128 : 0;
        return new PackedWeights(k, n, (kk, c) => stored(kk, c) - z[c], (kk, c) => kk < 0 ? z[c] - shift : stored(kk, c) - shift, z, quads);
    }

    /// <param name="quads">Whether to pack the native VNNI form as well (not where nothing will run it).</param>
    internal static PackedWeights Pack(ReadOnlySpan<sbyte> b, int k, int n, ReadOnlySpan<int> zeroPoints, bool quads)
    {
        if (b.Length != (long)k * n) throw new ArgumentException($"The weights hold {b.Length} values; {k}x{n} needs {(long)k * n}.");
        var z = Zeros(zeroPoints, n, -128, 127);
        var copy = b.ToArray();
        return new PackedWeights(k, n, (kk, c) => copy[kk * n + c] - z[c], (kk, c) => kk < 0 ? z[c] : copy[kk * n + c], z, quads);
    }

    internal static PackedWeights Pack(ReadOnlySpan<byte> b, int k, int n, ReadOnlySpan<int> zeroPoints, bool quads)
    {
        if (b.Length != (long)k * n) throw new ArgumentException($"The weights hold {b.Length} values; {k}x{n} needs {(long)k * n}.");
        var z = Zeros(zeroPoints, n, 0, 255);
        var copy = b.ToArray();
        return new PackedWeights(k, n, (kk, c) => copy[kk * n + c] - z[c], (kk, c) => kk < 0 ? z[c] - 128 : copy[kk * n + c] - 128, z, quads);
    }
}

/// <summary>Integer GEMM: C[m, n] = sum_k (A[m, k] - aZero) * (B[k, n] - bZero[n]), exact in int32.</summary>
public static class QGemm
{
    /// <summary>The scalar reference every fast path is held to.</summary>
    public static void Reference<TA, TB>(ReadOnlySpan<TA> a, int aZero, int m, int k, ReadOnlySpan<TB> b, ReadOnlySpan<int> bZero, int n, Span<int> c)
        where TA : unmanaged where TB : unmanaged
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                int zb = bZero[bZero.Length == 1 ? 0 : j];
                int acc = 0;
                for (int kk = 0; kk < k; kk++)
                    acc += (ToInt(a[i * k + kk]) - aZero) * (ToInt(b[kk * n + j]) - zb);
                c[i * n + j] = acc;
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int ToInt<T>(T v) where T : unmanaged
    {
        if (typeof(T) == typeof(byte)) return Unsafe.As<T, byte>(ref v);
        if (typeof(T) == typeof(sbyte)) return Unsafe.As<T, sbyte>(ref v);
        if (typeof(T) == typeof(short)) return Unsafe.As<T, short>(ref v);
        if (typeof(T) == typeof(int)) return Unsafe.As<T, int>(ref v);
        throw new NotSupportedException(typeof(T).Name);
    }

    /// <summary>C[m, w.N] from A[m, w.K] on the path, threads and AMX setting of <paramref name="context"/>.</summary>
    public static void Multiply(KernelContext context, ReadOnlySpan<byte> a, int aZero, int m, PackedWeights w, Span<int> c) => Run(context, a, aZero, m, w, c, false);
    public static void Multiply(KernelContext context, ReadOnlySpan<sbyte> a, int aZero, int m, PackedWeights w, Span<int> c) => Run(context, MemoryMarshal.AsBytes(a), aZero, m, w, c, true);

    /// <summary>A already widened and zero-point-corrected to int16 (the im2col form), row length w.K.</summary>
    internal static void MultiplyWide(KernelContext context, short[] a, int m, PackedWeights w, Span<int> c, KernelPath path)
    {
        int threads = context.ThreadsFor((long)m * w.N * w.K);
        int rowsPerTask = (m + threads - 1) / threads;
        if (threads <= 1) { Rows(a, 0, m, w, c, path); return; }
        var cArr = Workspace.Rent<int>(Workspace.Slot.ParallelOut, (long)m * w.N);
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
        {
            int r0 = t * rowsPerTask, r1 = Math.Min(m, r0 + rowsPerTask);
            if (r0 < r1) Rows(a, r0, r1, w, cArr, path);
        });
        cArr.AsSpan(0, m * w.N).CopyTo(c);
    }

    static void Run(KernelContext context, ReadOnlySpan<byte> a, int aZero, int m, PackedWeights w, Span<int> c, bool signed)
    {
        if (a.Length != (long)m * w.K) throw new ArgumentException($"A holds {a.Length} values; {m}x{w.K} needs {(long)m * w.K}.");
        if (c.Length < (long)m * w.N) throw new ArgumentException("C is too small.");
        var path = context.EffectivePath;
        if (path == KernelPath.NativeVnni && w.Quads is not null)
        {
            NativeKernels.Gemm(context, a, aZero, signed, m, w, c);
            return;
        }
        if (path == KernelPath.ArmDot && w.Quads is not null)
        {
            ArmKernels.Gemm(context, a, aZero, signed, m, w, c);
            return;
        }
        if (path == KernelPath.NativeAvx2 && w.Quads is not null)
        {
            NativeKernels.Gemm(context, a, aZero, signed, m, w, c, avx2: true);
            return;
        }
        if (path is KernelPath.NativeAvx2 or KernelPath.NativeVnni) path = KernelDispatch.Clamp(KernelPath.Avx512BW);
        if (path == KernelPath.ArmDot) path = KernelPath.Vector128;
        // This thread's scratch (every padding column written below): no new array per call.
        int kp2 = w.KPairs * 2;
        var wide = Workspace.Rent<short>(Workspace.Slot.WideA, (long)m * kp2);
        if (w.K < kp2) for (int i = 0; i < m; i++) wide[i * kp2 + kp2 - 1] = 0;
        for (int i = 0; i < m; i++)
            for (int kk = 0; kk < w.K; kk++)
                wide[i * kp2 + kk] = (short)((signed ? (sbyte)a[i * w.K + kk] : a[i * w.K + kk]) - aZero);
        MultiplyWide(context, wide, m, w, c, path);
    }

    /// <summary>Rows [r0, r1) of C; A rows are int16 of length KPairs * 2 (zero padded).</summary>
    static void Rows(short[] a, int r0, int r1, PackedWeights w, Span<int> c, KernelPath path)
    {
        switch (path)
        {
            case KernelPath.Avx512BW: Rows512(a, r0, r1, w, c); break;
            case KernelPath.Avx2: Rows256(a, r0, r1, w, c); break;
            case KernelPath.Vector128: Rows128(a, r0, r1, w, c); break;
            default: RowsScalar(a, r0, r1, w, c); break;
        }
    }

    static void Store(ReadOnlySpan<int> block, Span<int> c, int row, int nb, int n)
    {
        int col0 = nb * PackedWeights.Block, cnt = Math.Min(PackedWeights.Block, n - col0);
        block[..cnt].CopyTo(c.Slice(row * n + col0, cnt));
    }

    static void RowsScalar(short[] a, int r0, int r1, PackedWeights w, Span<int> c)
    {
        Span<int> acc = stackalloc int[PackedWeights.Block];
        int kp = w.KPairs, stride = kp * 2;
        for (int i = r0; i < r1; i++)
            for (int nb = 0; nb < w.Blocks; nb++)
            {
                acc.Clear();
                int bBase = nb * kp * PackedWeights.Block * 2;
                for (int p = 0; p < kp; p++)
                {
                    int a0 = a[i * stride + 2 * p], a1 = a[i * stride + 2 * p + 1];
                    int bo = bBase + p * PackedWeights.Block * 2;
                    for (int j = 0; j < PackedWeights.Block; j++)
                        acc[j] += a0 * w.Data[bo + 2 * j] + a1 * w.Data[bo + 2 * j + 1];
                }
                Store(acc, c, i, nb, w.N);
            }
    }

    static unsafe void Rows256(short[] a, int r0, int r1, PackedWeights w, Span<int> c)
    {
        int kp = w.KPairs, stride = kp * 2;
        Span<int> tmp = stackalloc int[PackedWeights.Block * 4];
        fixed (short* pa = a, pb = w.Data)
        {
            int* ia = (int*)pa;
            for (int i = r0; i < r1; i += 4)
            {
                int rows = Math.Min(4, r1 - i);
                int* a0 = ia + (long)i * kp, a1 = ia + (long)(i + Math.Min(1, rows - 1)) * kp;
                int* a2 = ia + (long)(i + Math.Min(2, rows - 1)) * kp, a3 = ia + (long)(i + Math.Min(3, rows - 1)) * kp;
                for (int nb = 0; nb < w.Blocks; nb++)
                {
                    Vector256<int> c00 = default, c01 = default, c10 = default, c11 = default,
                                   c20 = default, c21 = default, c30 = default, c31 = default;
                    short* bp = pb + (long)nb * kp * 32;
                    for (int p = 0; p < kp; p++, bp += 32)
                    {
                        var b0 = Avx.LoadVector256(bp);
                        var b1 = Avx.LoadVector256(bp + 16);
                        var x0 = Vector256.Create(a0[p]).AsInt16();
                        var x1 = Vector256.Create(a1[p]).AsInt16();
                        var x2 = Vector256.Create(a2[p]).AsInt16();
                        var x3 = Vector256.Create(a3[p]).AsInt16();
                        c00 = Avx2.Add(c00, Avx2.MultiplyAddAdjacent(x0, b0)); c01 = Avx2.Add(c01, Avx2.MultiplyAddAdjacent(x0, b1));
                        c10 = Avx2.Add(c10, Avx2.MultiplyAddAdjacent(x1, b0)); c11 = Avx2.Add(c11, Avx2.MultiplyAddAdjacent(x1, b1));
                        c20 = Avx2.Add(c20, Avx2.MultiplyAddAdjacent(x2, b0)); c21 = Avx2.Add(c21, Avx2.MultiplyAddAdjacent(x2, b1));
                        c30 = Avx2.Add(c30, Avx2.MultiplyAddAdjacent(x3, b0)); c31 = Avx2.Add(c31, Avx2.MultiplyAddAdjacent(x3, b1));
                    }
                    fixed (int* t = tmp)
                    {
                        Avx.Store(t, c00); Avx.Store(t + 8, c01); Avx.Store(t + 16, c10); Avx.Store(t + 24, c11);
                        Avx.Store(t + 32, c20); Avx.Store(t + 40, c21); Avx.Store(t + 48, c30); Avx.Store(t + 56, c31);
                    }
                    for (int r = 0; r < rows; r++) Store(tmp.Slice(r * 16, 16), c, i + r, nb, w.N);
                }
            }
        }
    }

    static unsafe void Rows512(short[] a, int r0, int r1, PackedWeights w, Span<int> c)
    {
        int kp = w.KPairs;
        Span<int> tmp = stackalloc int[PackedWeights.Block * 4];
        fixed (short* pa = a, pb = w.Data)
        {
            int* ia = (int*)pa;
            for (int i = r0; i < r1; i += 4)
            {
                int rows = Math.Min(4, r1 - i);
                int* a0 = ia + (long)i * kp, a1 = ia + (long)(i + Math.Min(1, rows - 1)) * kp;
                int* a2 = ia + (long)(i + Math.Min(2, rows - 1)) * kp, a3 = ia + (long)(i + Math.Min(3, rows - 1)) * kp;
                int nb = 0;
                for (; nb + 1 < w.Blocks; nb += 2)
                {
                    Vector512<int> c00 = default, c01 = default, c10 = default, c11 = default,
                                   c20 = default, c21 = default, c30 = default, c31 = default;
                    short* bp0 = pb + (long)nb * kp * 32, bp1 = bp0 + (long)kp * 32;
                    for (int p = 0; p < kp; p++, bp0 += 32, bp1 += 32)
                    {
                        var b0 = Avx512BW.LoadVector512(bp0);
                        var b1 = Avx512BW.LoadVector512(bp1);
                        var x0 = Vector512.Create(a0[p]).AsInt16();
                        var x1 = Vector512.Create(a1[p]).AsInt16();
                        var x2 = Vector512.Create(a2[p]).AsInt16();
                        var x3 = Vector512.Create(a3[p]).AsInt16();
                        c00 += Avx512BW.MultiplyAddAdjacent(x0, b0); c01 += Avx512BW.MultiplyAddAdjacent(x0, b1);
                        c10 += Avx512BW.MultiplyAddAdjacent(x1, b0); c11 += Avx512BW.MultiplyAddAdjacent(x1, b1);
                        c20 += Avx512BW.MultiplyAddAdjacent(x2, b0); c21 += Avx512BW.MultiplyAddAdjacent(x2, b1);
                        c30 += Avx512BW.MultiplyAddAdjacent(x3, b0); c31 += Avx512BW.MultiplyAddAdjacent(x3, b1);
                    }
                    fixed (int* t = tmp)
                    {
                        c00.Store(t); c10.Store(t + 16); c20.Store(t + 32); c30.Store(t + 48);
                        for (int r = 0; r < rows; r++) Store(tmp.Slice(r * 16, 16), c, i + r, nb, w.N);
                        c01.Store(t); c11.Store(t + 16); c21.Store(t + 32); c31.Store(t + 48);
                        for (int r = 0; r < rows; r++) Store(tmp.Slice(r * 16, 16), c, i + r, nb + 1, w.N);
                    }
                }
                for (; nb < w.Blocks; nb++)
                {
                    Vector512<int> c0 = default, c1 = default, c2 = default, c3 = default;
                    short* bp = pb + (long)nb * kp * 32;
                    for (int p = 0; p < kp; p++, bp += 32)
                    {
                        var b0 = Avx512BW.LoadVector512(bp);
                        c0 += Avx512BW.MultiplyAddAdjacent(Vector512.Create(a0[p]).AsInt16(), b0);
                        c1 += Avx512BW.MultiplyAddAdjacent(Vector512.Create(a1[p]).AsInt16(), b0);
                        c2 += Avx512BW.MultiplyAddAdjacent(Vector512.Create(a2[p]).AsInt16(), b0);
                        c3 += Avx512BW.MultiplyAddAdjacent(Vector512.Create(a3[p]).AsInt16(), b0);
                    }
                    fixed (int* t = tmp) { c0.Store(t); c1.Store(t + 16); c2.Store(t + 32); c3.Store(t + 48); }
                    for (int r = 0; r < rows; r++) Store(tmp.Slice(r * 16, 16), c, i + r, nb, w.N);
                }
            }
        }
    }

    /// <summary>Portable path (any CPU with 128-bit SIMD, ARM64 included): the pairs are widened to int32 and
    /// multiplied lane by lane; each column's two partial sums are added at the end.</summary>
    static unsafe void Rows128(short[] a, int r0, int r1, PackedWeights w, Span<int> c)
    {
        int kp = w.KPairs, stride = kp * 2;
        Span<int> pairs = stackalloc int[PackedWeights.Block * 2];
        Span<int> acc = stackalloc int[PackedWeights.Block];
        fixed (short* pa = a, pb = w.Data)
        {
            for (int i = r0; i < r1; i++)
                for (int nb = 0; nb < w.Blocks; nb++)
                {
                    Vector128<int> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default, s6 = default, s7 = default;
                    short* bp = pb + (long)nb * kp * 32;
                    short* ap = pa + (long)i * stride;
                    for (int p = 0; p < kp; p++, bp += 32)
                    {
                        var x = Vector128.Create((int)ap[2 * p], ap[2 * p + 1], ap[2 * p], ap[2 * p + 1]);
                        var v0 = Vector128.Load(bp); var v1 = Vector128.Load(bp + 8); var v2 = Vector128.Load(bp + 16); var v3 = Vector128.Load(bp + 24);
                        s0 += Vector128.WidenLower(v0) * x; s1 += Vector128.WidenUpper(v0) * x;
                        s2 += Vector128.WidenLower(v1) * x; s3 += Vector128.WidenUpper(v1) * x;
                        s4 += Vector128.WidenLower(v2) * x; s5 += Vector128.WidenUpper(v2) * x;
                        s6 += Vector128.WidenLower(v3) * x; s7 += Vector128.WidenUpper(v3) * x;
                    }
                    fixed (int* t = pairs)
                    {
                        s0.Store(t); s1.Store(t + 4); s2.Store(t + 8); s3.Store(t + 12);
                        s4.Store(t + 16); s5.Store(t + 20); s6.Store(t + 24); s7.Store(t + 28);
                    }
                    for (int j = 0; j < PackedWeights.Block; j++) acc[j] = unchecked(pairs[2 * j] + pairs[2 * j + 1]);
                    Store(acc, c, i, nb, w.N);
                }
        }
    }
}
