using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PtqTools.Core.Kernels;

/// <summary>How the u8 x s8 products of an integer GEMM or convolution are summed.</summary>
public enum ProductArithmetic
{
    /// <summary>Exact int32 sums (VNNI, AMX, ARM64, and every u8 x u8 or exact-widening path).</summary>
    Exact,
    /// <summary>What MLAS computes with <c>vpmaddubsw</c> on x86-64 without VNNI (AVX2, AVX-512BW): the raw uint8
    /// activation codes times the raw int8 weight codes, two adjacent products of K added and saturated to int16,
    /// the pair sums added in int32; zero points corrected afterwards with exact column and row sums.</summary>
    SaturatingPairs,
}

/// <summary>How a convolution's patch (K) is ordered and paired under <see cref="ProductArithmetic.SaturatingPairs"/>.
/// Both order K as (kernel row, kernel column, input channel), as ONNX Runtime's NHWC im2col and its symmetric
/// convolution do.</summary>
public enum ConvPairing
{
    /// <summary>im2col + QGEMM: K flat, pairs k = 0,1 / 2,3 / ..., which straddle two kernel positions when the
    /// group's input channel count is odd.</summary>
    FlatK,
    /// <summary>MLAS's symmetric convolution kernel (MlasConvSym): each kernel position's channels padded to even
    /// (with zero weights), so a pair is two adjacent input channels at the same position.</summary>
    PerKernelPosition,
}

/// <summary>Int8 weights (the K x N right-hand matrix) packed for the saturating-pairs GEMM: the raw stored codes
/// (no zero point subtracted) in quads of K ([N/16][K/4][16][4], K padded with zero weights), and the exact column
/// sums and zero points the correction needs.</summary>
public sealed class SaturatingPackedWeights
{
    public const int Block = 16;
    public int K { get; }
    public int N { get; }
    internal int Quads { get; }
    internal int Blocks { get; }
    internal sbyte[] Data { get; }
    internal int[] ColumnSums { get; }
    internal int[] ZeroPoints { get; }
    /// <summary>The K of the zero-point term K * aZero * bZero: the real patch length when K holds padding slots.</summary>
    internal int CorrectionK { get; }

    /// <summary>For the native kernel: <see cref="Data"/> with the pairs that can saturate zeroed (summed exactly
    /// with vpdpbusd), and the quads holding such pairs ([count][16][4], the other pairs zeroed), block nb's from
    /// RiskyStart[nb] to RiskyStart[nb + 1], their quad indices in RiskyQuads.</summary>
    internal sbyte[] Safe { get; }
    internal sbyte[] Risky { get; }
    internal int[] RiskyStart { get; }
    internal int[] RiskyQuads { get; }

    SaturatingPackedWeights(int k, int n, sbyte[] data, int[] sums, int[] zeros, int correctionK)
    {
        K = k; N = n; Quads = (k + 3) / 4; Blocks = (n + Block - 1) / Block;
        Data = data; ColumnSums = sums; ZeroPoints = zeros; CorrectionK = correctionK;
        (Safe, Risky, RiskyStart, RiskyQuads) = Split(data, Quads, Blocks);
    }

    /// <summary>Whether a pair of weights can saturate: with codes 0..255, a0 w0 + a1 w1 spans 255 times the sum of
    /// the positive weights down to 255 times the sum of the negative ones; beyond 128 either way it can leave int16.</summary>
    internal static bool CanSaturate(int w0, int w1) =>
        Math.Max(w0, 0) + Math.Max(w1, 0) > 128 || Math.Min(w0, 0) + Math.Min(w1, 0) < -128;

    static (sbyte[], sbyte[], int[], int[]) Split(sbyte[] data, int quads, int blocks)
    {
        var safe = (sbyte[])data.Clone();
        var risky = new List<sbyte>();
        var start = new int[blocks + 1];
        var quadList = new List<int>();
        var v = new sbyte[Block * 4];
        for (int nb = 0; nb < blocks; nb++)
        {
            start[nb] = quadList.Count;
            // Where more than half of a block's quads hold a pair that can saturate, the whole block takes the
            // saturating instructions (2 per quad, not 1 + 2 for the risky ones); its safe part is then all zero
            // and the kernel skips it.
            int riskyQuads = 0;
            for (int q = 0; q < quads; q++)
                for (int j = 0, found = 0; j < Block * 2 && found == 0; j++)
                {
                    long o = (((long)nb * quads + q) * Block + j / 2) * 4 + j % 2 * 2;
                    if (CanSaturate(data[o], data[o + 1])) { riskyQuads++; found = 1; }
                }
            if (riskyQuads * 2 > quads)
            {
                for (int q = 0; q < quads; q++)
                {
                    long o = ((long)nb * quads + q) * Block * 4;
                    for (int b = 0; b < Block * 4; b++) { risky.Add(data[o + b]); safe[o + b] = 0; }
                    quadList.Add(q);
                }
                continue;
            }
            for (int q = 0; q < quads; q++)
            {
                bool any = false;
                Array.Clear(v);
                for (int j = 0; j < Block; j++)
                    for (int t = 0; t < 4; t += 2)
                    {
                        long o = (((long)nb * quads + q) * Block + j) * 4 + t;
                        if (!CanSaturate(data[o], data[o + 1])) continue;
                        any = true;
                        v[j * 4 + t] = data[o]; v[j * 4 + t + 1] = data[o + 1];
                        safe[o] = 0; safe[o + 1] = 0;
                    }
                if (!any) continue;
                risky.AddRange(v);
                quadList.Add(q);
            }
        }
        start[blocks] = quadList.Count;
        return (safe, risky.ToArray(), start, quadList.ToArray());
    }

    /// <summary>Packs b[k * n + col] (raw int8 codes) with one zero point or one per column.</summary>
    public static SaturatingPackedWeights Pack(ReadOnlySpan<sbyte> b, int k, int n, ReadOnlySpan<int> zeroPoints) => Pack(b, k, n, zeroPoints, k);

    internal static SaturatingPackedWeights Pack(ReadOnlySpan<sbyte> b, int k, int n, ReadOnlySpan<int> zeroPoints, int correctionK)
    {
        if (b.Length != (long)k * n) throw new ArgumentException($"The weights hold {b.Length} values; {k}x{n} needs {(long)k * n}.");
        if (zeroPoints.Length != 1 && zeroPoints.Length != n) throw new ArgumentException($"The weight zero point has {zeroPoints.Length} values; it needs 1 or {n}.");
        int quads = (k + 3) / 4, blocks = (n + Block - 1) / Block;
        var data = new sbyte[(long)blocks * quads * Block * 4];
        var sums = new int[n];
        var zeros = new int[n];
        for (int col = 0; col < n; col++)
        {
            zeros[col] = zeroPoints[zeroPoints.Length == 1 ? 0 : col];
            if (zeros[col] is < -128 or > 127) throw new ArgumentException($"Weight zero point {zeros[col]} is outside [-128, 127].");
        }
        for (int kk = 0; kk < k; kk++)
            for (int col = 0; col < n; col++)
            {
                sbyte v = b[kk * n + col];
                sums[col] += v;
                int nb = col / Block, j = col % Block, q = kk / 4, t = kk % 4;
                data[(((long)nb * quads + q) * Block + j) * 4 + t] = v;
            }
        return new SaturatingPackedWeights(k, n, data, sums, zeros, correctionK);
    }
}

/// <summary>
/// The u8 x s8 GEMM as MLAS computes it without VNNI: C[i, j] = sum over pairs p of sat16(a[i,2p] b[2p,j] +
/// a[i,2p+1] b[2p+1,j]) on the raw codes, minus aZero * colsum(b)[j], minus bZero[j] * rowsum(a)[i], plus
/// K * aZero * bZero[j] (int32, wrapping). The fast paths use <c>vpmaddubsw</c> itself (Avx2/Avx512BW
/// <c>MultiplyAddAdjacent(byte, sbyte)</c>) followed by <c>vpmaddwd</c> with ones, as MLAS's kernels do.
/// </summary>
public static class SaturatingGemm
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Sat16(int v) => v < short.MinValue ? short.MinValue : v > short.MaxValue ? short.MaxValue : v;

    /// <summary>The plain definition, on the unpacked operands: a[m * k] (uint8 codes), b[k * n] (int8 codes).</summary>
    public static void Reference(ReadOnlySpan<byte> a, int aZero, int m, int k, ReadOnlySpan<sbyte> b, ReadOnlySpan<int> bZero, int n, Span<int> c)
    {
        for (int i = 0; i < m; i++)
        {
            int rowSum = 0;
            for (int kk = 0; kk < k; kk++) rowSum += a[i * k + kk];
            for (int j = 0; j < n; j++)
            {
                int zb = bZero[bZero.Length == 1 ? 0 : j];
                int acc = 0, colSum = 0;
                for (int kk = 0; kk < k; kk += 2)
                {
                    int p = a[i * k + kk] * b[kk * n + j];
                    if (kk + 1 < k) p += a[i * k + kk + 1] * b[(kk + 1) * n + j];
                    acc += Sat16(p);
                }
                for (int kk = 0; kk < k; kk++) colSum += b[kk * n + j];
                c[i * n + j] = unchecked(acc - aZero * colSum - zb * rowSum + k * aZero * zb);
            }
        }
    }

    /// <summary>C[m, w.N] from A[m, w.K] (uint8 codes) on the path and threads of <paramref name="context"/>.</summary>
    public static void Multiply(KernelContext context, ReadOnlySpan<byte> a, int aZero, int m, SaturatingPackedWeights w, Span<int> c)
    {
        if (a.Length != (long)m * w.K) throw new ArgumentException($"A holds {a.Length} values; {m}x{w.K} needs {(long)m * w.K}.");
        if (c.Length < (long)m * w.N) throw new ArgumentException("C is too small.");
        int kq4 = w.Quads * 4;
        // Rows padded to whole quads (zeros: times zero weights they add nothing, and nothing to the row sums).
        var padded = new byte[(long)m * kq4 + 4];
        if (kq4 == w.K) a.CopyTo(padded);
        else for (int i = 0; i < m; i++) a.Slice(i * w.K, w.K).CopyTo(padded.AsSpan(i * kq4));
        var result = new int[(long)m * w.N];
        Run(context, padded, aZero, m, w, result, 0, transposed: false, ldc: w.N);
        result.CopyTo(c);
    }

    /// <summary>The core: A in rows of whole quads (w.Quads * 4 bytes, zeros past K); C[row, col] stored at
    /// c[offset + row * ldc + col], or at c[offset + col * ldc + row] when <paramref name="transposed"/> (NCHW planes).
    /// The zero-point correction is applied as each tile is stored.</summary>
    internal static unsafe void Run(KernelContext context, byte[] a, int aZero, int m, SaturatingPackedWeights w, int[] c, long offset, bool transposed, int ldc, ReadOnlySpan<int> bias = default)
    {
        if (!bias.IsEmpty && bias.Length != w.N) throw new ArgumentException($"The bias has {bias.Length} values for {w.N} columns.");
        if (aZero is < 0 or > 255) throw new ArgumentException($"The activation zero point {aZero} is outside [0, 255].");
        int n = w.N, kq4 = w.Quads * 4;
        if (a.Length < (long)m * kq4) throw new ArgumentException("A is too small.");
        var corr = new int[n];
        bool anyZero = false;
        for (int j = 0; j < n; j++)
        {
            corr[j] = unchecked((bias.IsEmpty ? 0 : bias[j]) - aZero * w.ColumnSums[j] + w.CorrectionK * aZero * w.ZeroPoints[j]);
            anyZero |= w.ZeroPoints[j] != 0;
        }
        int[]? rowSums = null;
        if (anyZero)
        {
            rowSums = new int[m];
            for (int i = 0; i < m; i++) { int s = 0; for (int kk = 0; kk < kq4; kk++) s += a[(long)i * kq4 + kk]; rowSums[i] = s; }
        }
        var path = context.EffectivePath;
        int threads = m < 8 ? 1 : context.ThreadsFor((long)m * n * w.K);
        int chunk = ((m + threads - 1) / threads + 3) / 4 * 4;
        int parts = (m + chunk - 1) / chunk;
        void Part(int t)
        {
            int r0 = t * chunk, r1 = Math.Min(m, r0 + chunk);
            if (r0 >= r1) return;
            fixed (byte* pa = a) fixed (int* pc = c) fixed (int* pcorr = corr) fixed (int* prs = rowSums) fixed (sbyte* pb = w.Data) fixed (int* pz = w.ZeroPoints)
            {
                var o = new Output(pc + offset, transposed, ldc, n, pcorr, pz, prs);
                switch (path)
                {
                    case KernelPath.NativeVnni when NativeKernels.HasSaturatingPairs: RowsNative(pa, kq4, r0, r1, w, pb, o); break;
                    case KernelPath.NativeVnni:
                    case KernelPath.Avx512BW: Rows512(pa, kq4, r0, r1, w, pb, o); break;
                    case KernelPath.Avx2: Rows256(pa, kq4, r0, r1, w, pb, o); break;
                    // No portable vpmaddubsw: Vector128 (ARM64 included) and Scalar take the packed scalar loop.
                    default: RowsScalar(pa, kq4, r0, r1, w, pb, o); break;
                }
            }
        }
        if (parts <= 1) Part(0);
        else Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = threads }, Part);
    }

    /// <summary>Where and how tiles are stored: the destination layout and the zero-point correction.</summary>
    readonly unsafe struct Output(int* c, bool transposed, int ldc, int n, int* corr, int* zeros, int* rowSums)
    {
        /// <summary>Rows [row, row + rows) of the 16 columns of block nb, from tmp[r * ts + j].</summary>
        public void Store(int* tmp, int ts, int row, int rows, int nb)
        {
            int col0 = nb * SaturatingPackedWeights.Block, cnt = Math.Min(SaturatingPackedWeights.Block, n - col0);
            if (rowSums == null && cnt == SaturatingPackedWeights.Block)
            {
                if (!transposed)
                {
                    // Whole rows of 16: one vector add of the column corrections per row.
                    var k0 = Vector256.Load(corr + col0); var k1 = Vector256.Load(corr + col0 + 8);
                    for (int r = 0; r < rows; r++)
                    {
                        int* d = c + (long)(row + r) * ldc + col0;
                        (Vector256.Load(tmp + r * ts) + k0).Store(d);
                        (Vector256.Load(tmp + r * ts + 8) + k1).Store(d + 8);
                    }
                    return;
                }
                if (rows == 4)
                {
                    // NCHW planes: each column's 4 rows are 4 adjacent pixels of one output channel.
                    for (int j = 0; j < 16; j++)
                    {
                        var v = Vector128.Create(tmp[j], tmp[ts + j], tmp[2 * ts + j], tmp[3 * ts + j]) + Vector128.Create(corr[col0 + j]);
                        v.Store(c + (long)(col0 + j) * ldc + row);
                    }
                    return;
                }
            }
            for (int r = 0; r < rows; r++)
            {
                int rs = rowSums == null ? 0 : rowSums[row + r];
                for (int j = 0; j < cnt; j++)
                {
                    int col = col0 + j;
                    int v = unchecked(tmp[r * ts + j] + corr[col] - zeros[col] * rs);
                    if (transposed) c[(long)col * ldc + row + r] = v;
                    else c[(long)(row + r) * ldc + col] = v;
                }
            }
        }
    }

    /// <summary>The native kernel (the pairs that cannot saturate summed exactly by vpdpbusd, the others by
    /// vpmaddubsw then vpdpwssd with ones), 32 rows at a time into a buffer the stores then read.</summary>
    static unsafe void RowsNative(byte* a, int kq4, int r0, int r1, SaturatingPackedWeights w, sbyte* pb, Output o)
    {
        const int Chunk = 32;
        int ldo = w.Blocks * SaturatingPackedWeights.Block;
        var buffer = new int[Chunk * ldo];
        fixed (int* tmp = buffer) fixed (sbyte* safe = w.Safe) fixed (sbyte* risky = w.Risky) fixed (int* start = w.RiskyStart) fixed (int* rq = w.RiskyQuads)
            for (int i = r0; i < r1; i += Chunk)
            {
                int rows = Math.Min(Chunk, r1 - i);
                NativeKernels.SaturatingPairs(a + (long)i * kq4, kq4, rows, w.Quads, safe, w.Blocks, risky, start, rq, tmp, ldo);
                for (int r = 0; r < rows; r += 4)
                    for (int nb = 0; nb < w.Blocks; nb++)
                        o.Store(tmp + r * ldo + nb * SaturatingPackedWeights.Block, ldo, i + r, Math.Min(4, rows - r), nb);
            }
    }

    static unsafe void RowsScalar(byte* a, int kq4, int r0, int r1, SaturatingPackedWeights w, sbyte* data, Output o)
    {
        int* acc = stackalloc int[SaturatingPackedWeights.Block];
        int quads = w.Quads;
        for (int i = r0; i < r1; i++)
            for (int nb = 0; nb < w.Blocks; nb++)
            {
                for (int j = 0; j < SaturatingPackedWeights.Block; j++) acc[j] = 0;
                sbyte* bp = data + (long)nb * quads * SaturatingPackedWeights.Block * 4;
                byte* ap = a + (long)i * kq4;
                for (int q = 0; q < quads; q++, bp += SaturatingPackedWeights.Block * 4)
                {
                    int a0 = ap[q * 4], a1 = ap[q * 4 + 1], a2 = ap[q * 4 + 2], a3 = ap[q * 4 + 3];
                    for (int j = 0; j < SaturatingPackedWeights.Block; j++)
                    {
                        sbyte* b = bp + j * 4;
                        acc[j] += Sat16(a0 * b[0] + a1 * b[1]) + Sat16(a2 * b[2] + a3 * b[3]);
                    }
                }
                o.Store(acc, 16, i, 1, nb);
            }
    }

    /// <summary>4 rows x 16 columns per tile: a broadcast quad of A against two 32-byte halves of a block.</summary>
    static unsafe void Rows256(byte* a, int kq4, int r0, int r1, SaturatingPackedWeights w, sbyte* pb, Output o)
    {
        int quads = w.Quads;
        int* tmp = stackalloc int[SaturatingPackedWeights.Block * 4];
        var ones = Vector256.Create((short)1);
        for (int i = r0; i < r1; i += 4)
        {
            int rows = Math.Min(4, r1 - i);
            int* a0 = (int*)(a + (long)i * kq4), a1 = (int*)(a + (long)(i + Math.Min(1, rows - 1)) * kq4);
            int* a2 = (int*)(a + (long)(i + Math.Min(2, rows - 1)) * kq4), a3 = (int*)(a + (long)(i + Math.Min(3, rows - 1)) * kq4);
            for (int nb = 0; nb < w.Blocks; nb++)
            {
                Vector256<int> c00 = default, c01 = default, c10 = default, c11 = default,
                               c20 = default, c21 = default, c30 = default, c31 = default;
                sbyte* bp = pb + (long)nb * quads * 64;
                for (int q = 0; q < quads; q++, bp += 64)
                {
                    var b0 = Avx.LoadVector256(bp);
                    var b1 = Avx.LoadVector256(bp + 32);
                    var x0 = Vector256.Create(a0[q]).AsByte();
                    var x1 = Vector256.Create(a1[q]).AsByte();
                    var x2 = Vector256.Create(a2[q]).AsByte();
                    var x3 = Vector256.Create(a3[q]).AsByte();
                    c00 = Avx2.Add(c00, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(x0, b0), ones));
                    c01 = Avx2.Add(c01, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(x0, b1), ones));
                    c10 = Avx2.Add(c10, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(x1, b0), ones));
                    c11 = Avx2.Add(c11, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(x1, b1), ones));
                    c20 = Avx2.Add(c20, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(x2, b0), ones));
                    c21 = Avx2.Add(c21, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(x2, b1), ones));
                    c30 = Avx2.Add(c30, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(x3, b0), ones));
                    c31 = Avx2.Add(c31, Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(x3, b1), ones));
                }
                Avx.Store(tmp, c00); Avx.Store(tmp + 8, c01); Avx.Store(tmp + 16, c10); Avx.Store(tmp + 24, c11);
                Avx.Store(tmp + 32, c20); Avx.Store(tmp + 40, c21); Avx.Store(tmp + 48, c30); Avx.Store(tmp + 56, c31);
                o.Store(tmp, 16, i, rows, nb);
            }
        }
    }

    /// <summary>4 rows x 32 columns per tile: one 64-byte block load per 16 columns.</summary>
    static unsafe void Rows512(byte* a, int kq4, int r0, int r1, SaturatingPackedWeights w, sbyte* pb, Output o)
    {
        int quads = w.Quads;
        int* tmp = stackalloc int[SaturatingPackedWeights.Block * 4];
        var ones = Vector512.Create((short)1);
        for (int i = r0; i < r1; i += 4)
        {
            int rows = Math.Min(4, r1 - i);
            int* a0 = (int*)(a + (long)i * kq4), a1 = (int*)(a + (long)(i + Math.Min(1, rows - 1)) * kq4);
            int* a2 = (int*)(a + (long)(i + Math.Min(2, rows - 1)) * kq4), a3 = (int*)(a + (long)(i + Math.Min(3, rows - 1)) * kq4);
            int nb = 0;
            for (; nb + 1 < w.Blocks; nb += 2)
            {
                Vector512<int> c00 = default, c01 = default, c10 = default, c11 = default,
                               c20 = default, c21 = default, c30 = default, c31 = default;
                sbyte* bp0 = pb + (long)nb * quads * 64, bp1 = bp0 + (long)quads * 64;
                for (int q = 0; q < quads; q++, bp0 += 64, bp1 += 64)
                {
                    var b0 = Avx512BW.LoadVector512(bp0);
                    var b1 = Avx512BW.LoadVector512(bp1);
                    var x0 = Vector512.Create(a0[q]).AsByte();
                    var x1 = Vector512.Create(a1[q]).AsByte();
                    var x2 = Vector512.Create(a2[q]).AsByte();
                    var x3 = Vector512.Create(a3[q]).AsByte();
                    c00 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(x0, b0), ones);
                    c01 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(x0, b1), ones);
                    c10 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(x1, b0), ones);
                    c11 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(x1, b1), ones);
                    c20 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(x2, b0), ones);
                    c21 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(x2, b1), ones);
                    c30 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(x3, b0), ones);
                    c31 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(x3, b1), ones);
                }
                c00.Store(tmp); c10.Store(tmp + 16); c20.Store(tmp + 32); c30.Store(tmp + 48);
                o.Store(tmp, 16, i, rows, nb);
                c01.Store(tmp); c11.Store(tmp + 16); c21.Store(tmp + 32); c31.Store(tmp + 48);
                o.Store(tmp, 16, i, rows, nb + 1);
            }
            for (; nb < w.Blocks; nb++)
            {
                Vector512<int> c0 = default, c1 = default, c2 = default, c3 = default;
                sbyte* bp = pb + (long)nb * quads * 64;
                for (int q = 0; q < quads; q++, bp += 64)
                {
                    var b0 = Avx512BW.LoadVector512(bp);
                    c0 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(a0[q]).AsByte(), b0), ones);
                    c1 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(a1[q]).AsByte(), b0), ones);
                    c2 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(a2[q]).AsByte(), b0), ones);
                    c3 += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(a3[q]).AsByte(), b0), ones);
                }
                c0.Store(tmp); c1.Store(tmp + 16); c2.Store(tmp + 32); c3.Store(tmp + 48);
                o.Store(tmp, 16, i, rows, nb);
            }
        }
    }
}

/// <summary>Convolution weights [OC, C/group, kh, kw] (raw int8 codes) packed per group for the saturating GEMM,
/// with K ordered (kernel row, kernel column, input channel) and the channel run padded as <see cref="Pairing"/> says.</summary>
public sealed class SaturatingConvWeights
{
    public ConvGeometry Shape { get; }
    public ConvPairing Pairing { get; }
    /// <summary>Channel slots per kernel position: the group's channels, rounded up to even for PerKernelPosition.</summary>
    internal int ChannelSlots { get; }
    internal SaturatingPackedWeights[] Groups { get; }

    SaturatingConvWeights(ConvGeometry g, ConvPairing pairing, int slots, SaturatingPackedWeights[] groups) { Shape = g; Pairing = pairing; ChannelSlots = slots; Groups = groups; }

    public static SaturatingConvWeights Pack(ReadOnlySpan<sbyte> w, ReadOnlySpan<int> zeroPoints, ConvGeometry g, ConvPairing pairing)
    {
        g.Check();
        int cg = g.GroupChannels, ocg = g.GroupOutChannels, taps = g.KernelH * g.KernelW, patch = g.PatchSize;
        if (w.Length != (long)g.OutChannels * patch) throw new ArgumentException($"The weights hold {w.Length} values; {g.OutChannels}x{patch} expected.");
        if (zeroPoints.Length != 1 && zeroPoints.Length != g.OutChannels) throw new ArgumentException($"{zeroPoints.Length} weight zero points for {g.OutChannels} channels.");
        int slots = pairing == ConvPairing.PerKernelPosition ? (cg + 1) / 2 * 2 : cg;
        int k = taps * slots;
        var groups = new SaturatingPackedWeights[g.Group];
        for (int gi = 0; gi < g.Group; gi++)
        {
            var b = new sbyte[(long)k * ocg];
            var zp = new int[ocg];
            for (int j = 0; j < ocg; j++)
            {
                int oc = gi * ocg + j;
                zp[j] = zeroPoints[zeroPoints.Length == 1 ? 0 : oc];
                for (int c = 0; c < cg; c++)
                    for (int tap = 0; tap < taps; tap++)
                        b[((long)tap * slots + c) * ocg + j] = w[oc * patch + c * taps + tap];
            }
            groups[gi] = SaturatingPackedWeights.Pack(b, k, ocg, zp, taps * cg);
        }
        return new SaturatingConvWeights(g, pairing, slots, groups);
    }
}

/// <summary>The convolution under <see cref="ProductArithmetic.SaturatingPairs"/>: uint8 input codes (padding holds
/// the input zero point) times int8 weight codes, K ordered and paired as <see cref="ConvPairing"/> says, int32 out.</summary>
public static class SaturatingConv
{
    /// <summary>The plain definition, output by output: K walked as (ki, kj, c), pairs formed per the pairing.</summary>
    public static void Reference(ReadOnlySpan<byte> x, int xZero, ReadOnlySpan<sbyte> w, ReadOnlySpan<int> wZero, ConvGeometry g, ConvPairing pairing, Span<int> y)
    {
        g.Check();
        int oh = g.OutH, ow = g.OutW, cg = g.GroupChannels, ocg = g.GroupOutChannels;
        int slots = pairing == ConvPairing.PerKernelPosition ? (cg + 1) / 2 * 2 : cg;
        int taps = g.KernelH * g.KernelW, klen = taps * slots;
        var av = new int[klen]; var wv = new int[klen];
        for (int n = 0; n < g.Batch; n++)
            for (int oc = 0; oc < g.OutChannels; oc++)
            {
                int gi = oc / ocg, zw = wZero[wZero.Length == 1 ? 0 : oc];
                for (int i = 0; i < oh; i++)
                    for (int j = 0; j < ow; j++)
                    {
                        Array.Clear(av); Array.Clear(wv);
                        int rowSum = 0, colSum = 0;
                        for (int ki = 0; ki < g.KernelH; ki++)
                            for (int kj = 0; kj < g.KernelW; kj++)
                                for (int c = 0; c < cg; c++)
                                {
                                    int ih = i * g.StrideH - g.PadTop + ki * g.DilationH, iw = j * g.StrideW - g.PadLeft + kj * g.DilationW;
                                    int xv = ih < 0 || ih >= g.Height || iw < 0 || iw >= g.Width ? xZero
                                        : x[((n * g.Channels + gi * cg + c) * g.Height + ih) * g.Width + iw];
                                    int wvv = w[((oc * cg + c) * g.KernelH + ki) * g.KernelW + kj];
                                    int slot = (ki * g.KernelW + kj) * slots + c;
                                    av[slot] = xv; wv[slot] = wvv;
                                    rowSum += xv; colSum += wvv;
                                }
                        int acc = 0;
                        for (int kk = 0; kk < klen; kk += 2)
                            acc += SaturatingGemm.Sat16(av[kk] * wv[kk] + (kk + 1 < klen ? av[kk + 1] * wv[kk + 1] : 0));
                        y[((n * g.OutChannels + oc) * oh + i) * ow + j] = unchecked(acc - xZero * colSum - zw * rowSum + taps * cg * xZero * zw);
                    }
            }
    }

    /// <summary>The fast form: per image, the input to NHWC, an im2col in (ki, kj, channel slot) order (a 1x1,
    /// stride-1, unpadded convolution reads the NHWC image itself), then the saturating GEMM per group, stored
    /// straight into the NCHW output planes.</summary>
    public static void Run(KernelContext context, ReadOnlySpan<byte> x, int xZero, SaturatingConvWeights w, Span<int> y)
    {
        var g = w.Shape;
        long outLen = (long)g.Batch * g.OutChannels * g.OutH * g.OutW;
        if (y.Length < outLen) throw new ArgumentException("The output is too small.");
        var result = new int[outLen];
        Run(context, x, xZero, w, result);
        result.CopyTo(y);
    }

    /// <summary><see cref="Run(KernelContext, ReadOnlySpan{byte}, int, SaturatingConvWeights, Span{int})"/> into an array (no copy),
    /// with an optional int32 bias per output channel added to the sums (as ONNX Runtime folds it into the
    /// zero-point correction).</summary>
    public static unsafe void Run(KernelContext context, ReadOnlySpan<byte> x, int xZero, SaturatingConvWeights w, int[] y, ReadOnlySpan<int> bias = default)
    {
        if (!bias.IsEmpty && bias.Length != w.Shape.OutChannels) throw new ArgumentException($"The bias has {bias.Length} values for {w.Shape.OutChannels} channels.");
        var g = w.Shape;
        int oh = g.OutH, ow = g.OutW, cg = g.GroupChannels, ocg = g.GroupOutChannels, pixels = oh * ow, hw = g.Height * g.Width, ch = g.Channels;
        if (x.Length != (long)g.Batch * ch * hw) throw new ArgumentException("The input does not match the convolution shape.");
        if (y.Length < (long)g.Batch * g.OutChannels * pixels) throw new ArgumentException("The output is too small.");
        if (xZero is < 0 or > 255) throw new ArgumentException($"The input zero point {xZero} is outside [0, 255].");
        int slots = w.ChannelSlots, stride = w.Groups[0].Quads * 4;
        bool direct = g.KernelH == 1 && g.KernelW == 1 && g.StrideH == 1 && g.StrideW == 1 && g.PadTop == 0 && g.PadLeft == 0
            && g.PadBottom == 0 && g.PadRight == 0 && g.Group == 1 && stride == ch;
        // Scratch from the shared pool (no large zeroed allocation per call); Im2Col writes every byte of its rows.
        var nhwc = System.Buffers.ArrayPool<byte>.Shared.Rent(checked((int)((long)hw * ch + 4)));
        var col = direct ? nhwc : System.Buffers.ArrayPool<byte>.Shared.Rent(checked((int)((long)pixels * stride + 4)));
        try
        {
        for (int n = 0; n < g.Batch; n++)
        {
            fixed (byte* px = x) fixed (byte* pt = nhwc)
                ToNhwc(px + (long)n * ch * hw, pt, ch, hw);
            for (int gi = 0; gi < g.Group; gi++)
            {
                if (!direct) Im2Col(nhwc, (byte)xZero, g, gi, slots, stride, col);
                SaturatingGemm.Run(context, col, xZero, pixels, w.Groups[gi], y, (long)(n * g.OutChannels + gi * ocg) * pixels, transposed: true, ldc: pixels,
                    bias.IsEmpty ? default : bias.Slice(gi * ocg, ocg));
            }
        }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(nhwc);
            if (!direct) System.Buffers.ArrayPool<byte>.Shared.Return(col);
        }
    }

    /// <summary>[C][HW] to [HW][C]: 16 x 16 byte blocks transposed in registers (SSE2 unpacks), the edges and
    /// CPUs without SSE2 in 32 x 32 scalar tiles.</summary>
    static unsafe void ToNhwc(byte* src, byte* dst, int ch, int hw)
    {
        int c16 = Sse2.IsSupported ? ch / 16 * 16 : 0, p16 = Sse2.IsSupported ? hw / 16 * 16 : 0;
        for (int c0 = 0; c0 < c16; c0 += 16)
            for (int p0 = 0; p0 < p16; p0 += 16)
                Transpose16(src + (long)c0 * hw + p0, hw, dst + (long)p0 * ch + c0, ch);
        if (c16 == ch && p16 == hw) return;
        const int T = 32;
        for (int c0 = 0; c0 < ch; c0 += T)
        {
            int c1 = Math.Min(ch, c0 + T);
            for (int p0 = 0; p0 < hw; p0 += T)
            {
                int p1 = Math.Min(hw, p0 + T);
                for (int p = p0; p < p1; p++)
                {
                    byte* d = dst + (long)p * ch;
                    for (int c = c0; c < c1; c++)
                        if (c >= c16 || p >= p16) d[c] = src[(long)c * hw + p];
                }
            }
        }
    }

    /// <summary>16 rows of 16 bytes (row stride ss) to 16 rows of 16 bytes (row stride ds), transposed.</summary>
    static unsafe void Transpose16(byte* s, int ss, byte* d, int ds)
    {
        var r0 = Sse2.LoadVector128(s); var r1 = Sse2.LoadVector128(s + ss); var r2 = Sse2.LoadVector128(s + 2 * ss); var r3 = Sse2.LoadVector128(s + 3 * ss);
        var r4 = Sse2.LoadVector128(s + 4 * ss); var r5 = Sse2.LoadVector128(s + 5 * ss); var r6 = Sse2.LoadVector128(s + 6 * ss); var r7 = Sse2.LoadVector128(s + 7 * ss);
        var r8 = Sse2.LoadVector128(s + 8 * ss); var r9 = Sse2.LoadVector128(s + 9 * ss); var ra = Sse2.LoadVector128(s + 10 * ss); var rb = Sse2.LoadVector128(s + 11 * ss);
        var rc = Sse2.LoadVector128(s + 12 * ss); var rd = Sse2.LoadVector128(s + 13 * ss); var re = Sse2.LoadVector128(s + 14 * ss); var rf = Sse2.LoadVector128(s + 15 * ss);
        // Bytes, then words, dwords and qwords: after four rounds row j holds column j.
        var a0 = Sse2.UnpackLow(r0, r1); var a1 = Sse2.UnpackHigh(r0, r1); var a2 = Sse2.UnpackLow(r2, r3); var a3 = Sse2.UnpackHigh(r2, r3);
        var a4 = Sse2.UnpackLow(r4, r5); var a5 = Sse2.UnpackHigh(r4, r5); var a6 = Sse2.UnpackLow(r6, r7); var a7 = Sse2.UnpackHigh(r6, r7);
        var a8 = Sse2.UnpackLow(r8, r9); var a9 = Sse2.UnpackHigh(r8, r9); var aa = Sse2.UnpackLow(ra, rb); var ab = Sse2.UnpackHigh(ra, rb);
        var ac = Sse2.UnpackLow(rc, rd); var ad = Sse2.UnpackHigh(rc, rd); var ae = Sse2.UnpackLow(re, rf); var af = Sse2.UnpackHigh(re, rf);
        var b0 = Sse2.UnpackLow(a0.AsUInt16(), a2.AsUInt16()); var b1 = Sse2.UnpackHigh(a0.AsUInt16(), a2.AsUInt16());
        var b2 = Sse2.UnpackLow(a1.AsUInt16(), a3.AsUInt16()); var b3 = Sse2.UnpackHigh(a1.AsUInt16(), a3.AsUInt16());
        var b4 = Sse2.UnpackLow(a4.AsUInt16(), a6.AsUInt16()); var b5 = Sse2.UnpackHigh(a4.AsUInt16(), a6.AsUInt16());
        var b6 = Sse2.UnpackLow(a5.AsUInt16(), a7.AsUInt16()); var b7 = Sse2.UnpackHigh(a5.AsUInt16(), a7.AsUInt16());
        var b8 = Sse2.UnpackLow(a8.AsUInt16(), aa.AsUInt16()); var b9 = Sse2.UnpackHigh(a8.AsUInt16(), aa.AsUInt16());
        var ba = Sse2.UnpackLow(a9.AsUInt16(), ab.AsUInt16()); var bb = Sse2.UnpackHigh(a9.AsUInt16(), ab.AsUInt16());
        var bc = Sse2.UnpackLow(ac.AsUInt16(), ae.AsUInt16()); var bd = Sse2.UnpackHigh(ac.AsUInt16(), ae.AsUInt16());
        var be = Sse2.UnpackLow(ad.AsUInt16(), af.AsUInt16()); var bf = Sse2.UnpackHigh(ad.AsUInt16(), af.AsUInt16());
        // b0: columns 0-3 of rows 0-3 (4 bytes per column), b1: columns 4-7, b2: 8-11, b3: 12-15; b4..b7 rows 4-7, ...
        var c0 = Sse2.UnpackLow(b0.AsUInt32(), b4.AsUInt32()); var c1 = Sse2.UnpackHigh(b0.AsUInt32(), b4.AsUInt32());
        var c2 = Sse2.UnpackLow(b1.AsUInt32(), b5.AsUInt32()); var c3 = Sse2.UnpackHigh(b1.AsUInt32(), b5.AsUInt32());
        var c4 = Sse2.UnpackLow(b2.AsUInt32(), b6.AsUInt32()); var c5 = Sse2.UnpackHigh(b2.AsUInt32(), b6.AsUInt32());
        var c6 = Sse2.UnpackLow(b3.AsUInt32(), b7.AsUInt32()); var c7 = Sse2.UnpackHigh(b3.AsUInt32(), b7.AsUInt32());
        var c8 = Sse2.UnpackLow(b8.AsUInt32(), bc.AsUInt32()); var c9 = Sse2.UnpackHigh(b8.AsUInt32(), bc.AsUInt32());
        var ca = Sse2.UnpackLow(b9.AsUInt32(), bd.AsUInt32()); var cb = Sse2.UnpackHigh(b9.AsUInt32(), bd.AsUInt32());
        var cc = Sse2.UnpackLow(ba.AsUInt32(), be.AsUInt32()); var cd = Sse2.UnpackHigh(ba.AsUInt32(), be.AsUInt32());
        var ce = Sse2.UnpackLow(bb.AsUInt32(), bf.AsUInt32()); var cf = Sse2.UnpackHigh(bb.AsUInt32(), bf.AsUInt32());
        // c0: columns 0-1 of rows 0-7 (8 bytes per column); c8: columns 0-1 of rows 8-15.
        Sse2.Store(d, Sse2.UnpackLow(c0.AsUInt64(), c8.AsUInt64()).AsByte()); Sse2.Store(d + ds, Sse2.UnpackHigh(c0.AsUInt64(), c8.AsUInt64()).AsByte());
        Sse2.Store(d + 2 * ds, Sse2.UnpackLow(c1.AsUInt64(), c9.AsUInt64()).AsByte()); Sse2.Store(d + 3 * ds, Sse2.UnpackHigh(c1.AsUInt64(), c9.AsUInt64()).AsByte());
        Sse2.Store(d + 4 * ds, Sse2.UnpackLow(c2.AsUInt64(), ca.AsUInt64()).AsByte()); Sse2.Store(d + 5 * ds, Sse2.UnpackHigh(c2.AsUInt64(), ca.AsUInt64()).AsByte());
        Sse2.Store(d + 6 * ds, Sse2.UnpackLow(c3.AsUInt64(), cb.AsUInt64()).AsByte()); Sse2.Store(d + 7 * ds, Sse2.UnpackHigh(c3.AsUInt64(), cb.AsUInt64()).AsByte());
        Sse2.Store(d + 8 * ds, Sse2.UnpackLow(c4.AsUInt64(), cc.AsUInt64()).AsByte()); Sse2.Store(d + 9 * ds, Sse2.UnpackHigh(c4.AsUInt64(), cc.AsUInt64()).AsByte());
        Sse2.Store(d + 10 * ds, Sse2.UnpackLow(c5.AsUInt64(), cd.AsUInt64()).AsByte()); Sse2.Store(d + 11 * ds, Sse2.UnpackHigh(c5.AsUInt64(), cd.AsUInt64()).AsByte());
        Sse2.Store(d + 12 * ds, Sse2.UnpackLow(c6.AsUInt64(), ce.AsUInt64()).AsByte()); Sse2.Store(d + 13 * ds, Sse2.UnpackHigh(c6.AsUInt64(), ce.AsUInt64()).AsByte());
        Sse2.Store(d + 14 * ds, Sse2.UnpackLow(c7.AsUInt64(), cf.AsUInt64()).AsByte()); Sse2.Store(d + 15 * ds, Sse2.UnpackHigh(c7.AsUInt64(), cf.AsUInt64()).AsByte());
    }

    /// <summary>Rows of <paramref name="stride"/> bytes (whole quads); the tail past K stays zero. Without channel
    /// padding, a kernel row inside the image is one contiguous run of the NHWC input (kw * channels bytes).</summary>
    static unsafe void Im2Col(byte[] nhwc, byte zero, ConvGeometry g, int gi, int slots, int stride, byte[] col)
    {
        int oh = g.OutH, ow = g.OutW, cg = g.GroupChannels, ch = g.Channels;
        fixed (byte* src = nhwc) fixed (byte* pc = col)
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++)
                {
                    byte* row = pc + (long)(i * ow + j) * stride;
                    int k = g.KernelH * g.KernelW * slots;
                    if (stride > k) Unsafe.InitBlockUnaligned(row + k, 0, (uint)(stride - k));
                    int iw0 = j * g.StrideW - g.PadLeft;
                    bool rowRun = slots == cg && cg == ch && g.DilationW == 1 && iw0 >= 0 && iw0 + g.KernelW <= g.Width;
                    for (int ki = 0; ki < g.KernelH; ki++)
                    {
                        int ih = i * g.StrideH - g.PadTop + ki * g.DilationH;
                        if (rowRun && ih >= 0 && ih < g.Height)
                        {
                            Unsafe.CopyBlockUnaligned(row + ki * g.KernelW * cg, src + ((long)ih * g.Width + iw0) * ch, (uint)(g.KernelW * cg));
                            continue;
                        }
                        for (int kj = 0; kj < g.KernelW; kj++)
                        {
                            int iw = j * g.StrideW - g.PadLeft + kj * g.DilationW;
                            byte* dst = row + (ki * g.KernelW + kj) * slots;
                            if (ih >= 0 && ih < g.Height && iw >= 0 && iw < g.Width)
                                Unsafe.CopyBlockUnaligned(dst, src + ((long)ih * g.Width + iw) * ch + gi * cg, (uint)cg);
                            else Unsafe.InitBlockUnaligned(dst, zero, (uint)cg);
                            if (slots > cg) Unsafe.InitBlockUnaligned(dst + cg, 0, (uint)(slots - cg));
                        }
                    }
                }
    }
}
