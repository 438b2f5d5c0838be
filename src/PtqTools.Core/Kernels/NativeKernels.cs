using System.Numerics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PtqTools.Core.Kernels;

/// <summary>
/// The optional native library (src/native/ptqkernels.c, compiled by build.ps1 with gcc) that runs the AVX-512 VNNI
/// GEMM .NET cannot emit. Loaded with NativeLibrary from beside this assembly (or $env:PTQTOOLS_NATIVE); when it is
/// absent or the CPU lacks VNNI, the managed kernels run instead.
/// </summary>
public static unsafe class NativeKernels
{
    const string FileName = "libptqkernels.so";
    static readonly delegate* unmanaged<int> HasVnniFn;
    static readonly delegate* unmanaged<byte*, int, int, int, sbyte*, int, int*, int, void> GemmFn;
    static readonly delegate* unmanaged<byte*, int, int, int, int, int, int, int, byte, int, byte*, void> ConvPackFn;
    static readonly delegate* unmanaged<ConvArgs*, int, int, int, int, byte*, void> ConvFn;
    static readonly delegate* unmanaged<byte*, int, int, int, sbyte*, int, int, int*, int, void> AmxGemmFn;
    static readonly delegate* unmanaged<ConvArgs*, sbyte*, int, int, int, int, int, byte*, void> AmxConvFn;
    static readonly delegate* unmanaged<byte*, int, int, int, int, int, sbyte*, int, int, int, int*, int*, int*, int, byte*, void> AmxFusedFn;
    static readonly delegate* unmanaged<int, int, long> AmxWorkspaceFn;
    static readonly delegate* unmanaged<byte*, int, int, int, sbyte*, int, sbyte*, int*, int*, int*, int, void> SatPairsFn;

    static NativeKernels()
    {
        foreach (var candidate in Candidates())
        {
            if (!File.Exists(candidate) || !NativeLibrary.TryLoad(candidate, out var handle)) continue;
            if (!NativeLibrary.TryGetExport(handle, "ptq_has_vnni", out var has) ||
                !NativeLibrary.TryGetExport(handle, "ptq_gemm_u8s8_vnni", out var gemm)) continue;
            HasVnniFn = (delegate* unmanaged<int>)has;
            GemmFn = (delegate* unmanaged<byte*, int, int, int, sbyte*, int, int*, int, void>)gemm;
            LoadedFrom = candidate;
            // AMX-INT8 tiles for the GEMM where the CPU has them and the OS grants the tile state (ptq_has_amx asks, as
            // ONNX Runtime's MLAS does in the same process); a KernelContext without AllowAmx (PTQTOOLS_AMX=0 seeds the
            // default one) keeps a call on the VNNI kernels.
            if (NativeLibrary.TryGetExport(handle, "ptq_has_amx", out var hasAmx) && NativeLibrary.TryGetExport(handle, "ptq_gemm_u8s8_amx", out var amx)
                && ((delegate* unmanaged<int>)hasAmx)() != 0)
            {
                AmxGemmFn = (delegate* unmanaged<byte*, int, int, int, sbyte*, int, int, int*, int, void>)amx;
                // Version 3: each thread copies its rows of A and corrects its block of C itself (nothing serial).
                if (NativeLibrary.TryGetExport(handle, "ptq_gemm_amx_fused", out var fused) && NativeLibrary.TryGetExport(handle, "ptq_gemm_amx_workspace", out var fusedWs))
                {
                    AmxFusedFn = (delegate* unmanaged<byte*, int, int, int, int, int, sbyte*, int, int, int, int*, int*, int*, int, byte*, void>)fused;
                    AmxWorkspaceFn = (delegate* unmanaged<int, int, long>)fusedWs;
                }
                if (NativeLibrary.TryGetExport(handle, "ptq_conv_amx", out var amxConv))
                    AmxConvFn = (delegate* unmanaged<ConvArgs*, sbyte*, int, int, int, int, int, byte*, void>)amxConv;
            }
            // The saturating-pairs kernel (emulating ONNX Runtime on CPUs without VNNI) came with version 5.
            if (NativeLibrary.TryGetExport(handle, "ptq_gemm_u8s8_satsplit", out var sat))
                SatPairsFn = (delegate* unmanaged<byte*, int, int, int, sbyte*, int, sbyte*, int*, int*, int*, int, void>)sat;
            // The direct convolution came with version 2 of the library; an older build still serves the GEMM.
            if (NativeLibrary.TryGetExport(handle, "ptq_conv_pack_input", out var pack) && NativeLibrary.TryGetExport(handle, "ptq_conv_vnni", out var conv))
            {
                ConvPackFn = (delegate* unmanaged<byte*, int, int, int, int, int, int, int, byte, int, byte*, void>)pack;
                ConvFn = (delegate* unmanaged<ConvArgs*, int, int, int, int, byte*, void>)conv;
            }
            break;
        }
        Available = GemmFn != null;
        HasVnni = Available && HasVnniFn() != 0;
        HasConv = HasVnni && ConvFn != null;
        HasAmx = HasVnni && AmxGemmFn != null;
        HasAmxConv = HasConv && HasAmx && AmxConvFn != null;
    }

    /// <summary>Whether the saturating-pairs GEMM (vpdpbusd for the pairs that cannot saturate, vpmaddubsw +
    /// vpdpwssd for the others) can run here.</summary>
    public static bool HasSaturatingPairs => HasVnni && SatPairsFn != null;

    /// <summary>Raw saturating-pairs sums of <paramref name="rows"/> rows of A (lda bytes each, whole quads) against
    /// all blocks of B split in safe and risky parts (see SaturatingPackedWeights), into out (row stride ldo).</summary>
    internal static void SaturatingPairs(byte* a, int lda, int rows, int quads, sbyte* safe, int blocks, sbyte* risky, int* riskyStart, int* riskyQuads, int* output, int ldo)
    {
        if (!HasSaturatingPairs) throw new InvalidOperationException("The native saturating-pairs kernel is not available on this machine.");
        SatPairsFn(a, lda, rows, quads, safe, blocks, risky, riskyStart, riskyQuads, output, ldo);
    }

    /// <summary>Whether convolutions with symmetric weights and 64+ channels per group can run on AMX tiles (under a
    /// context that allows them).</summary>
    public static bool HasAmxConv { get; }

    /// <summary>Whether the GEMM can run on AMX-INT8 tiles (from 16 rows of A, under a context that allows them; fewer
    /// rows take the VNNI kernel).</summary>
    public static bool HasAmx { get; }

    /// <summary>Rows of A from which the AMX kernel is used.</summary>
    const int AmxMinRows = 16;

    /// <summary>Whether the library's direct VNNI convolution can run here.</summary>
    public static bool HasConv { get; }

    static IEnumerable<string> Candidates()
    {
        if (Environment.GetEnvironmentVariable("PTQTOOLS_NATIVE") is { Length: > 0 } env) yield return env;
        var dir = Path.GetDirectoryName(typeof(NativeKernels).Assembly.Location);
        if (!string.IsNullOrEmpty(dir)) yield return Path.Combine(dir, FileName);
        yield return Path.Combine(AppContext.BaseDirectory, FileName);
    }

    /// <summary>Whether the library was found and loaded.</summary>
    public static bool Available { get; }
    /// <summary>Whether this CPU runs the library's VNNI kernel.</summary>
    public static bool HasVnni { get; }
    /// <summary>The file the library was loaded from, or null.</summary>
    public static string? LoadedFrom { get; }

    /// <summary>C = (A - aZero)(B - bZero) through vpdpbusd: A is mapped to u8 (signed A + 128) and B to s8 (stored in
    /// the quads), so the raw products are exact; the zero points are corrected with row and column sums.</summary>
    internal static void Gemm(KernelContext context, ReadOnlySpan<byte> a, int aZero, bool aSigned, int m, PackedWeights w, Span<int> c)
    {
        if (!HasVnni) throw new InvalidOperationException("The native VNNI kernel is not available on this machine.");
        int k = w.K, kq = (k + 3) / 4, ldc = w.Blocks * PackedWeights.Block;
        bool amx = context.AllowAmx && HasAmx && m >= AmxMinRows;
        if (amx && AmxFusedFn != null) { GemmAmx(context, a, aZero, aSigned, m, w, c); return; }
        // AMX tiles take 64 k values and 16 rows at a time: K and M are padded (zero K columns add nothing; the extra
        // rows are computed into the scratch result and dropped).
        int lda = amx ? (k + 63) / 64 * 64 : kq * 4, rowsPadded = amx ? (m + 15) / 16 * 16 : m;
        // A is copied (sign flipped for s8, K padded) once per call into the calling thread's reusable buffer.
        var a8 = Buffer(ref t_gemmA, (long)rowsPadded * lda + 64);
        int ao = AlignmentOffset(a8);
        if (rowsPadded > m) a8.AsSpan(ao + m * lda, (rowsPadded - m) * lda).Clear();
        Span<int> rowSums = m <= 1024 ? stackalloc int[m] : new int[m];
        int za = aSigned ? aZero + 128 : aZero;
        for (int i = 0; i < m; i++)
        {
            var row = a8.AsSpan(ao + i * lda, k);
            a8.AsSpan(ao + i * lda + k, lda - k).Clear();
            a.Slice(i * k, k).CopyTo(row);
            if (aSigned) FlipSign(row);
            rowSums[i] = SumBytes(row);
        }
        // When N fills whole blocks the kernel writes straight into C and the correction runs in place.
        bool direct = ldc == w.N && c.Length >= (long)m * ldc && rowsPadded == m;
        int[]? raw = null;
        if (!direct)
        {
            if (t_gemmC is null || t_gemmC.Length < (long)rowsPadded * ldc) t_gemmC = GC.AllocateUninitializedArray<int>(rowsPadded * ldc, pinned: true);
            raw = t_gemmC;
        }
        int threads = context.ThreadsFor((long)m * w.N * k);
        fixed (byte* pa = a8) fixed (sbyte* pq = w.Quads) fixed (int* pc = direct ? c : raw!.AsSpan())
        {
            byte* ppa = pa + ao; sbyte* ppq = pq + w.QuadsOffset; int* ppc = pc;
            int step = amx ? 32 : 8, rowsAll = amx ? rowsPadded : m;
            var job = new RowsJob
            {
                A = ppa, Lda = lda, Kq = kq, Quads = ppq, Blocks = w.Blocks, C = ppc, Ldc = ldc, Amx = amx, Rows = rowsAll,
                Per = threads <= 1 ? rowsAll : ((rowsPadded + threads - 1) / threads + step - 1) / step * step,
            };
            KernelWorkers.Run(Math.Max(1, threads), &RowsPart, &job);
        }
        var colSums = w.QuadColumnSums!;
        var zb = w.QuadZeroPoints!;
        int n = w.N;
        Span<int> colTerm = n <= 4096 ? stackalloc int[n] : new int[n];
        for (int j = 0; j < n; j++) colTerm[j] = unchecked(k * za * zb[j] - za * colSums[j]);
        bool anyZb = false;
        for (int j = 0; j < n; j++) anyZb |= zb[j] != 0;
        int vn = Vector<int>.Count;
        for (int i = 0; i < m; i++)
        {
            int rs = rowSums[i];
            ReadOnlySpan<int> src = direct ? c.Slice(i * n, n) : raw.AsSpan(i * ldc, n);
            var dst = c.Slice(i * n, n);
            int j = 0;
            if (!anyZb)
                for (; j + vn <= n; j += vn) (new Vector<int>(src.Slice(j)) + new Vector<int>(colTerm.Slice(j))).CopyTo(dst.Slice(j));
            else
            {
                var vrs = new Vector<int>(rs);
                for (; j + vn <= n; j += vn)
                    (new Vector<int>(src.Slice(j)) + new Vector<int>(colTerm.Slice(j)) - new Vector<int>(zb.AsSpan(j)) * vrs).CopyTo(dst.Slice(j));
            }
            for (; j < n; j++) dst[j] = unchecked(src[j] + colTerm[j] - zb[j] * rs);
        }
    }

    /// <summary>The AMX GEMM with the A copy and the zero-point correction inside the native pass, split over threads:
    /// by strips of 32 rows when there are enough for every thread, otherwise by pairs of 16-column blocks. Each
    /// thread copies the rows it needs into its own reusable workspace and configures its own tiles, so only the
    /// column terms (N values) are computed serially; the result does not depend on the split (integer sums).</summary>
    static void GemmAmx(KernelContext context, ReadOnlySpan<byte> a, int aZero, bool aSigned, int m, PackedWeights w, Span<int> c)
    {
        int k = w.K, n = w.N, kq = (k + 3) / 4, blocks = w.Blocks, za = aSigned ? aZero + 128 : aZero;
        var colSums = w.QuadColumnSums!;
        var zb = w.QuadZeroPoints!;
        int padded = blocks * PackedWeights.Block;
        bool anyZb = false;
        for (int j = 0; j < n; j++) anyZb |= zb[j] != 0;
        // Padded to whole blocks: the native pass loads 16 column terms at a time.
        var colTerm = padded <= 4096 ? stackalloc int[padded] : (t_colTerm is { } ct && ct.Length >= padded ? ct : t_colTerm = new int[padded]).AsSpan(0, padded);
        for (int j = 0; j < padded; j++) colTerm[j] = unchecked(k * za * zb[j] - za * colSums[j]);
        int threads = context.ThreadsFor((long)m * n * k);
        int strips = (m + 31) / 32, pairs = (blocks + 1) / 2;
        bool byRows = strips >= threads;
        if (!byRows && pairs < threads) threads = pairs;
        fixed (byte* pa = a) fixed (sbyte* pq = w.Quads) fixed (int* pc = c, pct = colTerm, pzb = zb)
        {
            sbyte* q = pq + w.QuadsOffset;
            int flip = aSigned ? 1 : 0;
            int* z = anyZb ? pzb : null;
            var job = new AmxGemmJob
            {
                A = pa, M = m, K = k, Flip = aSigned ? 1 : 0, Quads = pq + w.QuadsOffset, Kq = kq, Blocks = blocks,
                ColTerm = pct, ZeroPoints = anyZb ? pzb : null, C = pc, N = n, ByRows = byRows,
                RowsPer = byRows ? (strips + threads - 1) / threads * 32 : m, BlocksPer = byRows ? blocks : (pairs + threads - 1) / threads * 2,
            };
            KernelWorkers.Run(Math.Max(1, threads), &AmxGemmPart, &job);
        }
    }

    struct ConvJob
    {
        public ConvArgs* Args; public sbyte* Weights; public int Cq16, Tiles, OcRounded; public long Workspace; public bool ByTiles; public int Per;
    }

    /// <summary>Part t of a convolution: a range of tiles (or of output channels when there are fewer tiles than parts);
    /// the kernels only read the shared arguments.</summary>
    static void ConvPart(void* state, int t)
    {
        ref var j = ref *(ConvJob*)state;
        int lo = t * j.Per, hi = Math.Min(j.ByTiles ? j.Tiles : j.OcRounded, lo + j.Per);
        if (lo >= hi) return;
        int tl = j.ByTiles ? lo : 0, th = j.ByTiles ? hi : j.Tiles, ol = j.ByTiles ? 0 : lo, oh = j.ByTiles ? j.OcRounded : hi;
        fixed (byte* ws = Buffer(ref t_workspace, j.Workspace))
            if (j.Weights != null) AmxConvFn(j.Args, j.Weights, j.Cq16, tl, th, ol, oh, ws);
            else ConvFn(j.Args, tl, th, ol, oh, ws);
    }

    struct RowsJob
    {
        public byte* A; public int Lda, Kq; public sbyte* Quads; public int Blocks; public int* C; public int Ldc; public bool Amx; public int Rows, Per;
    }

    static void RowsPart(void* state, int t)
    {
        ref var j = ref *(RowsJob*)state;
        int r0 = t * j.Per, r1 = Math.Min(j.Rows, r0 + j.Per);
        if (r0 >= r1) return;
        if (j.Amx) AmxGemmFn(j.A, j.Lda, r0, r1, j.Quads, j.Kq, j.Blocks, j.C, j.Ldc);
        else GemmFn(j.A, r0, r1, j.Kq, j.Quads, j.Blocks, j.C, j.Ldc);
    }

    struct AmxGemmJob
    {
        public byte* A; public int M, K, Flip; public sbyte* Quads; public int Kq, Blocks;
        public int* ColTerm, ZeroPoints, C; public int N; public bool ByRows; public int RowsPer, BlocksPer;
    }

    static void AmxGemmPart(void* state, int t)
    {
        ref var j = ref *(AmxGemmJob*)state;
        int r0 = j.ByRows ? t * j.RowsPer : 0, r1 = j.ByRows ? Math.Min(j.M, r0 + j.RowsPer) : j.M;
        int b0 = j.ByRows ? 0 : t * j.BlocksPer, b1 = j.ByRows ? j.Blocks : Math.Min(j.Blocks, b0 + j.BlocksPer);
        if (r0 >= r1 || b0 >= b1) return;
        fixed (byte* ws = Buffer(ref t_gemmWs, AmxWorkspaceFn(r1 - r0, j.K) + 64))
            AmxFusedFn(j.A, j.M, j.K, j.Flip, r0, r1, j.Quads, j.Kq, b0, b1, j.ColTerm, j.ZeroPoints, j.C, j.N, ws);
    }

    [ThreadStatic] static byte[]? t_gemmWs;
    [ThreadStatic] static int[]? t_colTerm;

    static void FlipSign(Span<byte> row)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + 32 <= row.Length; i += 32)
                (Vector256.Create<byte>(row.Slice(i, 32)) ^ Vector256.Create((byte)0x80)).CopyTo(row.Slice(i, 32));
        for (; i < row.Length; i++) row[i] ^= 0x80;
    }

    static int SumBytes(ReadOnlySpan<byte> row)
    {
        long sum = 0;
        int i = 0;
        if (Avx2.IsSupported)
        {
            var acc = Vector256<ulong>.Zero;
            for (; i + 32 <= row.Length; i += 32)
                acc += Avx2.SumAbsoluteDifferences(Vector256.Create<byte>(row.Slice(i, 32)), Vector256<byte>.Zero).AsUInt64();
            sum = (long)Vector256.Sum(acc);
        }
        for (; i < row.Length; i++) sum += row[i];
        return (int)sum;
    }

    /// <summary>The arguments of ptq_conv_vnni (the C struct ptq_conv_args, field for field).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct ConvArgs
    {
        public byte* X; public sbyte* W; public int* Corr; public int* WZero; public float* Mult; public void* Y;
        public int Kq, Kh, Kw, Cq, Hp, Wp, Sh, Sw, Dh, Dw, Oh, Ow, Oc;
        public float Zp, QLo, QHi;
        public int OutSigned;

        public readonly bool Wide => Sh == 1 && Sw == 1;
        // Tiles of 48 pixels and blocks of 8 output channels (CONV_TILE and CONV_ROWS in ptqkernels.c).
        public readonly int Tiles => ((Wide ? (Oh - 1) * Wp + Ow : Oh * Ow) + 47) / 48;
        public readonly long Workspace => (long)Kq * (8 + 4 + 192) + 128;
        public readonly long PackedInput => (long)Cq * Hp * Wp * 4 + 256;
    }

    [ThreadStatic] static byte[]? t_workspace;
    [ThreadStatic] static byte[]? t_gemmA;
    [ThreadStatic] static int[]? t_gemmC;
    [ThreadStatic] static byte[]? t_input;

    /// <summary>A pinned copy of <paramref name="data"/> whose element <c>Offset</c> is 64-byte aligned: AMX tile rows
    /// that straddle cache lines load at a third of the speed.</summary>
    internal static (T[] Array, int Offset) Aligned<T>(T[] data) where T : unmanaged
    {
        var array = GC.AllocateArray<T>(data.Length + 64, pinned: true);
        int offset = AlignmentOffset(array);
        data.CopyTo(array, offset);
        return (array, offset);
    }

    /// <summary>Elements to skip in a pinned array to reach a 64-byte boundary.</summary>
    static int AlignmentOffset<T>(T[] pinned) where T : unmanaged
    {
        fixed (T* p = pinned) return (int)((64 - (nint)p % 64) % 64) / sizeof(T);
    }

    static byte[] Buffer(ref byte[]? cache, long size)
    {
        if (cache is null || cache.Length < size) cache = GC.AllocateUninitializedArray<byte>((int)Math.Max(size, (cache?.Length ?? 0) * 3L / 2), pinned: true);
        return cache;
    }

    /// <summary>One image and group of a convolution through ptq_conv_vnni: the input planes (channels of this group)
    /// are packed into the calling thread's reusable buffer, then tiles or channel ranges run on up to
    /// <paramref name="threads"/> threads, each with its own reusable workspace. Output planes at <paramref name="y"/>.</summary>
    /// <param name="amxWeights">The group's AMX weights ([oc rounded up to 32][tap][<paramref name="cq16"/>][4]), or
    /// null for the VNNI kernel.</param>
    internal static void Conv(byte* x, int channels, int height, int width, int padTop, int padLeft, byte fill, bool flip, ConvArgs args, int threads,
        sbyte* amxWeights = null, int cq16 = 0)
    {
        bool amx = amxWeights != null;
        // The AMX kernel reads cq16 channel-quad planes; those past the input's hold whatever the buffer held (their
        // weights are zero).
        var input = Buffer(ref t_input, (amx ? (long)cq16 * args.Hp * args.Wp * 4 + 256 : args.PackedInput) + 64);
        fixed (byte* pinned = input)
        {
            byte* pin = pinned + AlignmentOffset(input);
            ConvPackFn(x, channels, height, width, padTop, padLeft, args.Hp, args.Wp, fill, flip ? 1 : 0, pin);
            args.X = pin;
            int tiles = amx ? ((args.Oh - 1) * args.Wp + args.Ow + 31) / 32 : args.Tiles, oc = args.Oc;
            int ocStep = amx ? 32 : 8, ocRounded = (oc + ocStep - 1) / ocStep * ocStep;
            long wsSize = amx ? 32 * 32 * 4 + (args.Wide ? 0 : (long)args.Kh * args.Kw * cq16 * 128) + 128 : args.Workspace;
            threads = Math.Max(1, threads);
            bool byTiles = tiles >= threads;
            var job = new ConvJob
            {
                Args = &args, Weights = amxWeights, Cq16 = cq16, Tiles = tiles, OcRounded = ocRounded, Workspace = wsSize, ByTiles = byTiles,
                Per = threads <= 1 ? tiles : byTiles ? (tiles + threads - 1) / threads : ((ocRounded / ocStep + threads - 1) / threads) * ocStep,
            };
            if (threads <= 1) job.ByTiles = true;
            KernelWorkers.Run(threads, &ConvPart, &job);
        }
    }
}
