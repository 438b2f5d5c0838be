using System.Numerics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PtqTools.Core.Kernels;

/// <summary>
/// The native library (src/native/ptqkernels.c, built per platform by the PtqNative MSBuild target: libptqkernels.so
/// for linux-x64, ptqkernels.dll for win-x64) with the AVX-512 VNNI and AMX kernels .NET cannot emit and the AVX2
/// kernels for CPUs without VNNI. Looked for in runtimes/&lt;rid&gt;/native beside this assembly, then beside it, then
/// at $env:PTQTOOLS_NATIVE; loaded only when its ptq_abi_version() equals <see cref="AbiVersion"/> and it exports every
/// function bound here. Otherwise the managed kernels run and <see cref="LoadError"/> says why.
/// </summary>
public static unsafe class NativeKernels
{
    /// <summary>The ABI version this assembly was built against (PTQ_ABI_VERSION in src/native/ptqabi.h).</summary>
    public const int AbiVersion = 7;

    /// <summary>Kernel ids of ptq_gemm_plan and ptq_conv_plan (the enum in ptqkernels.c).</summary>
    internal enum Kernel { Vnni = 0, Amx = 1, Avx2Pairs7 = 2, Avx2Widened = 3 }

    static string FileName => OperatingSystem.IsWindows() ? "ptqkernels.dll" : OperatingSystem.IsMacOS() ? "libptqkernels.dylib" : "libptqkernels.so";

    /// <summary>Every export the managed side binds; the library must export exactly these (a test reads its symbol
    /// table).</summary>
    public static IReadOnlyList<string> BoundExports { get; } = new[]
    {
        "ptq_abi_version", "ptq_has_vnni", "ptq_has_avx2", "ptq_has_amx",
        "ptq_gemm_plan", "ptq_gemm_vnni_fused", "ptq_gemm_amx_fused", "ptq_gemm_u8s8_satsplit", "ptq_gemm_u8s8_avx2",
        "ptq_conv_plan", "ptq_conv_pack_input", "ptq_conv_pack_input_taps", "ptq_conv_vnni", "ptq_conv_amx", "ptq_conv_pack_input_avx2", "ptq_conv_avx2",
        "ptq_dwconv_workspace", "ptq_dwconv_avx2",
    };

    static readonly delegate* unmanaged<byte*, int, int, int, int, int, sbyte*, int, int, int, int*, int*, int*, int, byte*, void> VnniFusedFn;
    static readonly delegate* unmanaged<int, int, int, GemmPlan*, void> GemmPlanFn;
    static readonly delegate* unmanaged<byte*, int, int, int, int, int, int, int, byte, int, byte*, void> ConvPackFn;
    static readonly delegate* unmanaged<byte*, int, int, int, int, int, int, int, int, byte, int, byte*, void> ConvPackTapsFn;
    static readonly delegate* unmanaged<ConvArgs*, int, int, int, int, byte*, void> ConvFn;
    static readonly delegate* unmanaged<ConvArgs*, int, int, ConvPlan*, void> ConvPlanFn;
    static readonly delegate* unmanaged<ConvArgs*, sbyte*, int, int, int, int, int, byte*, void> AmxConvFn;
    static readonly delegate* unmanaged<byte*, int, int, int, int, int, sbyte*, int, int, int, int*, int*, int*, int, byte*, void> AmxFusedFn;
    static readonly delegate* unmanaged<byte*, int, int, int, sbyte*, int, sbyte*, int*, int*, int*, int, void> SatPairsFn;
    static readonly delegate* unmanaged<byte*, int, int, int, int, int, int, sbyte*, int, int*, int, byte*, void> Avx2GemmFn;
    static readonly delegate* unmanaged<byte*, int, int, int, int, int, int, int, byte, int, int, byte*, void> Avx2PackFn;
    static readonly delegate* unmanaged<ConvArgs*, int, int, int, int, int, byte*, void> Avx2ConvFn;
    static readonly delegate* unmanaged<DwArgs*, long> DwWorkspaceFn;
    static readonly delegate* unmanaged<DwArgs*, int, int, byte*, void> DwConvFn;

    static NativeKernels()
    {
        var reasons = new List<string>();
        foreach (var candidate in Candidates())
        {
            if (!File.Exists(candidate)) continue;
            var exports = Open(candidate, out var reason);
            if (exports is null) { reasons.Add(reason!); continue; }
            VnniFusedFn = (delegate* unmanaged<byte*, int, int, int, int, int, sbyte*, int, int, int, int*, int*, int*, int, byte*, void>)exports["ptq_gemm_vnni_fused"];
            GemmPlanFn = (delegate* unmanaged<int, int, int, GemmPlan*, void>)exports["ptq_gemm_plan"];
            ConvPackFn = (delegate* unmanaged<byte*, int, int, int, int, int, int, int, byte, int, byte*, void>)exports["ptq_conv_pack_input"];
            ConvPackTapsFn = (delegate* unmanaged<byte*, int, int, int, int, int, int, int, int, byte, int, byte*, void>)exports["ptq_conv_pack_input_taps"];
            ConvFn = (delegate* unmanaged<ConvArgs*, int, int, int, int, byte*, void>)exports["ptq_conv_vnni"];
            ConvPlanFn = (delegate* unmanaged<ConvArgs*, int, int, ConvPlan*, void>)exports["ptq_conv_plan"];
            AmxConvFn = (delegate* unmanaged<ConvArgs*, sbyte*, int, int, int, int, int, byte*, void>)exports["ptq_conv_amx"];
            AmxFusedFn = (delegate* unmanaged<byte*, int, int, int, int, int, sbyte*, int, int, int, int*, int*, int*, int, byte*, void>)exports["ptq_gemm_amx_fused"];
            SatPairsFn = (delegate* unmanaged<byte*, int, int, int, sbyte*, int, sbyte*, int*, int*, int*, int, void>)exports["ptq_gemm_u8s8_satsplit"];
            Avx2GemmFn = (delegate* unmanaged<byte*, int, int, int, int, int, int, sbyte*, int, int*, int, byte*, void>)exports["ptq_gemm_u8s8_avx2"];
            Avx2PackFn = (delegate* unmanaged<byte*, int, int, int, int, int, int, int, byte, int, int, byte*, void>)exports["ptq_conv_pack_input_avx2"];
            Avx2ConvFn = (delegate* unmanaged<ConvArgs*, int, int, int, int, int, byte*, void>)exports["ptq_conv_avx2"];
            DwWorkspaceFn = (delegate* unmanaged<DwArgs*, long>)exports["ptq_dwconv_workspace"];
            DwConvFn = (delegate* unmanaged<DwArgs*, int, int, byte*, void>)exports["ptq_dwconv_avx2"];
            LoadedFrom = candidate;
            Available = true;
            HasVnni = ((delegate* unmanaged<int>)exports["ptq_has_vnni"])() != 0;
            HasAvx2 = ((delegate* unmanaged<int>)exports["ptq_has_avx2"])() != 0;
            // AMX-INT8 tiles where the CPU has them and the OS grants the tile state (ptq_has_amx asks, as ONNX
            // Runtime's MLAS does in the same process); a KernelContext without AllowAmx (PTQTOOLS_AMX=0 seeds the
            // default one) keeps a call on the VNNI kernels.
            HasAmx = HasVnni && ((delegate* unmanaged<int>)exports["ptq_has_amx"])() != 0;
            break;
        }
        if (!Available)
            LoadError = reasons.Count > 0 ? string.Join("; ", reasons)
                : $"{FileName} not found (looked in {string.Join(", ", Candidates())})";
        HasConv = HasVnni;
        HasAmxConv = HasAmx;
    }

    /// <summary>Loads <paramref name="path"/> and returns its bound exports when its ABI version is this assembly's and
    /// it exports every function bound here; otherwise frees it and says why.</summary>
    internal static Dictionary<string, nint>? Open(string path, out string? reason)
    {
        reason = null;
        if (!NativeLibrary.TryLoad(path, out var handle)) { reason = $"{path}: could not be loaded"; return null; }
        var exports = new Dictionary<string, nint>();
        foreach (var name in BoundExports)
            if (NativeLibrary.TryGetExport(handle, name, out var f)) exports[name] = f;
        if (!exports.TryGetValue("ptq_abi_version", out var abi))
            reason = $"{path}: no ptq_abi_version export (a build older than ABI {AbiVersion})";
        else if (((delegate* unmanaged<int>)abi)() is var version && version != AbiVersion)
            reason = $"{path}: ABI version {version}, this assembly needs {AbiVersion}";
        else if (BoundExports.Where(n => !exports.ContainsKey(n)).ToList() is { Count: > 0 } missing)
            reason = $"{path}: missing exports {string.Join(", ", missing)}";
        if (reason is null) return exports;
        NativeLibrary.Free(handle);
        return null;
    }

    /// <summary>Why the native library is not in use (null when it is): not found, not loadable, another ABI version,
    /// or missing exports.</summary>
    public static string? LoadError { get; }

    /// <summary>Whether this CPU runs the library's AVX2 kernels (<see cref="KernelPath.NativeAvx2"/>).</summary>
    public static bool HasAvx2 { get; }

    /// <summary>The runtime identifier of the running platform as the package lays out its natives (linux-x64, win-x64,
    /// linux-arm64, osx-arm64, ...).</summary>
    public static string RuntimeId
    {
        get
        {
            string os = OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux";
            string arch = RuntimeInformation.ProcessArchitecture switch
            {
                Architecture.X64 => "x64", Architecture.Arm64 => "arm64", Architecture.X86 => "x86", Architecture.Arm => "arm",
                var other => other.ToString().ToLowerInvariant(),
            };
            return $"{os}-{arch}";
        }
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
        var dirs = new List<string>();
        var dir = Path.GetDirectoryName(typeof(NativeKernels).Assembly.Location);
        if (!string.IsNullOrEmpty(dir)) dirs.Add(dir);
        if (!dirs.Contains(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar))) dirs.Add(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        foreach (var d in dirs) yield return Path.Combine(d, "runtimes", RuntimeId, "native", FileName);
        foreach (var d in dirs) yield return Path.Combine(d, FileName);
        if (Environment.GetEnvironmentVariable("PTQTOOLS_NATIVE") is { Length: > 0 } env) yield return env;
    }

    /// <summary>Whether the library was found and loaded.</summary>
    public static bool Available { get; }
    /// <summary>Whether this CPU runs the library's VNNI kernel.</summary>
    public static bool HasVnni { get; }
    /// <summary>The file the library was loaded from, or null.</summary>
    public static string? LoadedFrom { get; }

    /// <summary>C = (A - aZero)(B - bZero) through vpdpbusd (<paramref name="avx2"/> false: AMX tiles from 16 rows
    /// where allowed, else <see cref="GemmVnni"/>, A and the correction inside the native pass) or the AVX2 kernel: A
    /// is copied as u8 (signed A + 128); 7-bit pairs multiply it by B's s8 quads and correct the zero points with row
    /// and column sums; the widened AVX2 form multiplies A minus its zero point by B's int16 pairs (B minus its zero
    /// points) and needs no correction.</summary>
    internal static void Gemm(KernelContext context, ReadOnlySpan<byte> a, int aZero, bool aSigned, int m, PackedWeights w, Span<int> c, bool avx2 = false)
    {
        Kernel kernel;
        if (avx2)
        {
            if (!HasAvx2) throw new InvalidOperationException("The native AVX2 kernel is not available on this machine.");
            kernel = w.SevenBitPairs ? Kernel.Avx2Pairs7 : Kernel.Avx2Widened;
            if (kernel == Kernel.Avx2Pairs7) Interlocked.Increment(ref s_pairs7Calls); else Interlocked.Increment(ref s_widenedCalls);
        }
        else
        {
            if (!HasVnni) throw new InvalidOperationException("The native VNNI kernel is not available on this machine.");
            if (context.AllowAmx && HasAmx && m >= AmxMinRows) GemmAmx(context, a, aZero, aSigned, m, w, c);
            else GemmVnni(context, a, aZero, aSigned, m, w, c);
            return;
        }
        bool widened = kernel == Kernel.Avx2Widened;
        int k = w.K, kq = (k + 3) / 4, ldc = w.Blocks * PackedWeights.Block;
        GemmPlan plan;
        GemmPlanFn((int)kernel, m, k, &plan);
        int lda = plan.Lda;
        // A is copied (sign flipped for s8, K padded) once per call into the calling thread's reusable buffer.
        var a8 = Buffer(ref t_gemmA, (long)m * lda + 64);
        int ao = AlignmentOffset(a8);
        Span<int> rowSums = widened ? default : m <= 1024 ? stackalloc int[m] : new int[m];
        int za = aSigned ? aZero + 128 : aZero;
        for (int i = 0; i < m; i++)
        {
            var row = a8.AsSpan(ao + i * lda, k);
            a8.AsSpan(ao + i * lda + k, lda - k).Clear();
            a.Slice(i * k, k).CopyTo(row);
            if (aSigned) FlipSign(row);
            if (!widened) rowSums[i] = SumBytes(row);
        }
        // When N fills whole blocks the kernel writes straight into C and the correction runs in place.
        bool direct = ldc == w.N && c.Length >= (long)m * ldc;
        int[]? raw = null;
        if (!direct)
        {
            if (t_gemmC is null || t_gemmC.Length < (long)m * ldc) t_gemmC = GC.AllocateUninitializedArray<int>(m * ldc, pinned: true);
            raw = t_gemmC;
        }
        int threads = context.ThreadsFor((long)m * w.N * k);
        fixed (byte* pa = a8) fixed (sbyte* pq = w.Quads) fixed (short* pd = widened ? w.Data : null) fixed (int* pc = direct ? c : raw!.AsSpan())
        {
            int per = threads <= 1 ? m : ((m + threads - 1) / threads + plan.RowStep - 1) / plan.RowStep * plan.RowStep;
            GemmPlan part;
            GemmPlanFn((int)kernel, per, k, &part);
            var job = new RowsJob
            {
                A = pa + ao, Lda = lda, Kq = kq, Quads = widened ? (sbyte*)pd : pq + w.QuadsOffset, Blocks = w.Blocks, C = pc, Ldc = ldc,
                Kernel = kernel, Za = za, Units = widened ? w.KPairs : kq, Workspace = part.Workspace, Rows = m, Per = per,
            };
            KernelWorkers.Run(Math.Max(1, threads), &RowsPart, &job);
        }
        int n = w.N;
        if (widened)
        {
            if (!direct) for (int i = 0; i < m; i++) raw.AsSpan(i * ldc, n).CopyTo(c.Slice(i * n, n));
            return;
        }
        var colSums = w.QuadColumnSums!;
        var zb = w.QuadZeroPoints!;
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

    static long s_pairs7Calls, s_widenedCalls;

    /// <summary>How the AVX2 kernels have multiplied so far in this process: calls in the 7-bit pairs form
    /// (vpmaddubsw, weights whose pairs cannot saturate) and in the widened form (vpmaddwd on int16).</summary>
    public static (long SevenBitPairs, long Widened) Avx2Forms => (Interlocked.Read(ref s_pairs7Calls), Interlocked.Read(ref s_widenedCalls));

    internal static void CountAvx2Form(bool sevenBit)
    {
        if (sevenBit) Interlocked.Increment(ref s_pairs7Calls); else Interlocked.Increment(ref s_widenedCalls);
    }

    /// <summary>The kernel path as reported to users: for NativeAvx2, which dot product forms ran ("7-bit pairs",
    /// "widened"); for a managed path on x64, why the native library is not in use.</summary>
    public static string Describe(KernelPath path)
    {
        if (path == KernelPath.NativeAvx2)
        {
            var (p7, wd) = Avx2Forms;
            string forms = p7 > 0 && wd > 0 ? "7-bit pairs + widened" : p7 > 0 ? "7-bit pairs" : wd > 0 ? "widened" : "7-bit pairs or widened";
            return $"NativeAvx2 ({forms})";
        }
        if (path < KernelPath.NativeAvx2 && LoadError is not null && RuntimeInformation.ProcessArchitecture == Architecture.X64)
            return $"{path} (native kernels not loaded: {LoadError})";
        return path.ToString();
    }

    /// <summary>The AMX GEMM with the A copy and the zero-point correction inside the native pass, split over threads:
    /// by strips of 32 rows when there are enough for every thread, otherwise by pairs of 16-column blocks. Each
    /// thread copies the rows it needs into its own reusable workspace and configures its own tiles, so only the
    /// column terms (N values) are computed serially; the result does not depend on the split (integer sums).</summary>
    static void GemmAmx(KernelContext context, ReadOnlySpan<byte> a, int aZero, bool aSigned, int m, PackedWeights w, Span<int> c)
    {
        int k = w.K, n = w.N, kq = (k + 3) / 4, blocks = w.Blocks, za = aSigned ? aZero + 128 : aZero;
        var zb = w.QuadZeroPoints!;
        var colTerm = ColumnTerms(w, za, out bool anyZb);
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

    /// <summary>The column terms of the quads' GEMMs (k·za·zb[j] − za·Σw[j]), padded to whole blocks (the native pass
    /// loads 16 at a time), in this thread's buffer; and whether any weight zero point is not 0.</summary>
    static int[] ColumnTerms(PackedWeights w, int za, out bool anyZb)
    {
        int k = w.K, padded = w.Blocks * PackedWeights.Block;
        var colSums = w.QuadColumnSums!;
        var zb = w.QuadZeroPoints!;
        anyZb = false;
        for (int j = 0; j < w.N; j++) anyZb |= zb[j] != 0;
        var terms = t_colTerm is { } ct && ct.Length >= padded ? ct : t_colTerm = new int[padded];
        for (int j = 0; j < padded; j++) terms[j] = unchecked(k * za * zb[j] - za * colSums[j]);
        return terms;
    }

    /// <summary>The VNNI GEMM with A read in place (or, with weight zero points, copied with its row sums) and the
    /// zero-point correction inside the native pass (ptq_gemm_vnni_fused), split over threads by rows (multiples of the plan's
    /// row step) when there are enough for every thread, otherwise by 16-column blocks. C is written once, in place;
    /// only the column terms (N values) are computed here. Integer sums: any split gives the same bits.</summary>
    static void GemmVnni(KernelContext context, ReadOnlySpan<byte> a, int aZero, bool aSigned, int m, PackedWeights w, Span<int> c)
    {
        int k = w.K, n = w.N, kq = (k + 3) / 4, blocks = w.Blocks, za = aSigned ? aZero + 128 : aZero;
        var zb = w.QuadZeroPoints!;
        var colTerm = ColumnTerms(w, za, out bool anyZb);
        GemmPlan plan;
        GemmPlanFn((int)Kernel.Vnni, m, k, &plan);
        int threads = Math.Max(1, context.ThreadsFor((long)m * n * k));
        int steps = (m + plan.RowStep - 1) / plan.RowStep;
        bool byRows = threads <= 1 || steps >= threads;
        if (!byRows && blocks < threads) threads = Math.Max(1, blocks);
        int rowsPer = byRows ? (threads <= 1 ? m : (steps + threads - 1) / threads * plan.RowStep) : m;
        GemmPlan part;
        GemmPlanFn((int)Kernel.Vnni, rowsPer, k, &part);
        fixed (byte* pa = a) fixed (sbyte* pq = w.Quads) fixed (int* pc = c, pct = colTerm, pzb = zb)
        {
            var job = new VnniGemmJob
            {
                A = pa, M = m, K = k, Flip = aSigned ? 1 : 0, Quads = pq + w.QuadsOffset, Kq = kq, Blocks = blocks,
                ColTerm = pct, ZeroPoints = anyZb ? pzb : null, C = pc, N = n, ByRows = byRows, RowsPer = rowsPer,
                BlocksPer = byRows ? blocks : (blocks + threads - 1) / threads, Workspace = part.Workspace,
            };
            KernelWorkers.Run(threads, &VnniGemmPart, &job);
        }
    }

    struct VnniGemmJob
    {
        public byte* A; public int M, K, Flip; public sbyte* Quads; public int Kq, Blocks;
        public int* ColTerm, ZeroPoints, C; public int N; public bool ByRows; public int RowsPer, BlocksPer; public long Workspace;
    }

    static void VnniGemmPart(void* state, int t)
    {
        ref var j = ref *(VnniGemmJob*)state;
        int r0 = j.ByRows ? t * j.RowsPer : 0, r1 = j.ByRows ? Math.Min(j.M, r0 + j.RowsPer) : j.M;
        int b0 = j.ByRows ? 0 : t * j.BlocksPer, b1 = j.ByRows ? j.Blocks : Math.Min(j.Blocks, b0 + j.BlocksPer);
        if (r0 >= r1 || b0 >= b1) return;
        fixed (byte* ws = Buffer(ref t_gemmWs, j.Workspace))
            VnniFusedFn(j.A, j.M, j.K, j.Flip, r0, r1, j.Quads, j.Kq, b0, b1, j.ColTerm, j.ZeroPoints, j.C, j.N, ws);
    }

    struct ConvJob
    {
        public ConvArgs* Args; public sbyte* Weights; public int Cq16, Tiles, OcRounded; public long Workspace; public bool ByTiles; public int Per; public Kernel Kernel;
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
            else if (j.Kernel == Kernel.Vnni) ConvFn(j.Args, tl, th, ol, oh, ws);
            else Avx2ConvFn(j.Args, j.Kernel == Kernel.Avx2Widened ? 1 : 0, tl, th, ol, oh, ws);
    }

    struct RowsJob
    {
        public byte* A; public int Lda, Kq; public sbyte* Quads; public int Blocks; public int* C; public int Ldc;
        public Kernel Kernel; public int Za, Units; public long Workspace; public int Rows, Per;
    }

    static void RowsPart(void* state, int t)
    {
        ref var j = ref *(RowsJob*)state;
        int r0 = t * j.Per, r1 = Math.Min(j.Rows, r0 + j.Per);
        if (r0 >= r1) return;
        fixed (byte* ws = Buffer(ref t_gemmWs, Math.Max(64, j.Workspace)))
            Avx2GemmFn(j.A, j.Lda, r0, r1, j.Kernel == Kernel.Avx2Widened ? 1 : 0, j.Za, j.Units, j.Quads, j.Blocks, j.C, j.Ldc, ws);
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
        GemmPlan plan;
        GemmPlanFn((int)Kernel.Amx, r1 - r0, j.K, &plan);
        fixed (byte* ws = Buffer(ref t_gemmWs, plan.Workspace))
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
        /// <summary>VNNI only: the input packed as quads of 4 taps of one channel (ptq_conv_pack_input_taps), Cq its
        /// channels (the weights' <see cref="NativeConvWeights.Taps"/>).</summary>
        public int Taps4;
    }

    /// <summary>ptq_conv_plan's answer: packed input bytes, per-thread workspace, tiles and the channel step.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct ConvPlan { public long InputBytes, Workspace; public int Tiles, OcStep; }

    /// <summary>ptq_gemm_plan's answer: per-thread workspace, the row step of a thread's share, A's row length.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct GemmPlan { public long Workspace; public int RowStep, Lda; }

    /// <summary>The arguments of ptq_dwconv_avx2 (the C struct ptq_dw_args, field for field).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct DwArgs
    {
        public byte* X; public int* W; public int* Bias; public float* Mult; public void* Y;
        public int H, Wd, Pt, Pl, Hp, Wp, Kh, Kw, Sh, Sw, Dh, Dw, Oh, Ow, Xz, Flip;
        public float Zp, QLo, QHi;
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

    /// <summary>One image and group of a convolution through ptq_conv_vnni, ptq_conv_amx (<paramref name="amxWeights"/>
    /// set) or ptq_conv_avx2 (<paramref name="kernel"/> Avx2Pairs7 or Avx2Widened, args.W its weights): the input
    /// planes (channels of this group) are packed into the calling thread's reusable buffer, then tiles or channel
    /// ranges run on up to <paramref name="threads"/> threads, each with its own reusable workspace; the library
    /// answers the sizes and tile counts (ptq_conv_plan). Output planes at args.Y.</summary>
    /// <param name="amxWeights">The group's AMX weights ([oc rounded up to 32][tap][<paramref name="cq16"/>][4]), or
    /// null.</param>
    internal static void Conv(byte* x, int channels, int height, int width, int padTop, int padLeft, byte fill, bool flip, ConvArgs args, int threads,
        sbyte* amxWeights = null, int cq16 = 0, Kernel kernel = Kernel.Vnni)
    {
        if (amxWeights != null) kernel = Kernel.Amx;
        bool avx2 = kernel is Kernel.Avx2Pairs7 or Kernel.Avx2Widened;
        if (avx2 && !HasAvx2) throw new InvalidOperationException("The native AVX2 kernel is not available on this machine.");
        if (!avx2 && !HasConv) throw new InvalidOperationException("The native VNNI convolution is not available on this machine.");
        if (args.Taps4 != 0 && kernel != Kernel.Vnni) throw new InvalidOperationException("Tap quads are read by the VNNI convolution only.");
        if (avx2) CountAvx2Form(kernel == Kernel.Avx2Pairs7);
        ConvPlan plan;
        ConvPlanFn(&args, (int)kernel, cq16, &plan);
        // The AMX kernel reads cq16 channel-quad planes; those past the input's hold whatever the buffer held (their
        // weights are zero).
        var input = Buffer(ref t_input, plan.InputBytes + 64);
        fixed (byte* pinned = input)
        {
            byte* pin = pinned + AlignmentOffset(input);
            if (avx2) Avx2PackFn(x, channels, height, width, padTop, padLeft, args.Hp, args.Wp, fill, flip ? 1 : 0, kernel == Kernel.Avx2Widened ? 1 : 0, pin);
            else if (args.Taps4 != 0) ConvPackTapsFn(x, channels, height, width, padTop, padLeft, args.Hp, args.Wp, args.Dw, fill, flip ? 1 : 0, pin);
            else ConvPackFn(x, channels, height, width, padTop, padLeft, args.Hp, args.Wp, fill, flip ? 1 : 0, pin);
            args.X = pin;
            int tiles = plan.Tiles, oc = args.Oc, ocStep = plan.OcStep, ocRounded = (oc + ocStep - 1) / ocStep * ocStep;
            threads = Math.Max(1, threads);
            bool byTiles = tiles >= threads;
            var job = new ConvJob
            {
                Args = &args, Weights = amxWeights, Cq16 = cq16, Tiles = tiles, OcRounded = ocRounded, Workspace = plan.Workspace, ByTiles = byTiles,
                Per = threads <= 1 ? tiles : byTiles ? (tiles + threads - 1) / threads : ((ocRounded / ocStep + threads - 1) / threads) * ocStep,
                Kernel = kernel,
            };
            if (threads <= 1) job.ByTiles = true;
            KernelWorkers.Run(threads, &ConvPart, &job);
        }
    }

    /// <summary>A depthwise convolution (one input channel per output channel) of one image through ptq_dwconv_avx2,
    /// channels split over up to <paramref name="threads"/> threads.</summary>
    internal static void DepthwiseConv(DwArgs args, int channels, int threads)
    {
        if (!HasAvx2) throw new InvalidOperationException("The native AVX2 kernel is not available on this machine.");
        var job = new DwJob { Args = &args, Workspace = DwWorkspaceFn(&args), Channels = channels };
        threads = Math.Max(1, Math.Min(threads, channels));
        job.Per = (channels + threads - 1) / threads;
        KernelWorkers.Run(threads, &DwPart, &job);
    }

    struct DwJob { public DwArgs* Args; public long Workspace; public int Channels, Per; }

    static void DwPart(void* state, int t)
    {
        ref var j = ref *(DwJob*)state;
        int c0 = t * j.Per, c1 = Math.Min(j.Channels, c0 + j.Per);
        if (c0 >= c1) return;
        fixed (byte* ws = Buffer(ref t_workspace, j.Workspace)) DwConvFn(j.Args, c0, c1, ws);
    }
}
