/* PtqTools native int8 kernels for x86-64: the AVX-512 VNNI and AMX-INT8 kernels .NET cannot emit (no 512-bit
 * vpdpbusd intrinsic, no tiles), the saturating-pairs emulation of ONNX Runtime without VNNI, and AVX2 kernels for
 * CPUs without VNNI. Built per platform by the PtqNative MSBuild target (gcc for linux-x64, mingw-w64 for win-x64);
 * loaded through NativeLibrary when ptq_abi_version() matches the managed side; the managed kernels are the fallback.
 * Kernels compute raw u8 x s8 dot products; the caller applies the zero-point corrections (exact in int32).
 * Register tiles are written once as always_inline templates whose dimensions are compile-time constants at each
 * instantiation (gcc unrolls the loops and keeps the accumulator arrays in registers), so each kernel has one body. */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <immintrin.h>
#include "ptqabi.h"

#define UNROLL _Pragma("GCC unroll 8")
#define TILE_INLINE __attribute__((always_inline)) static inline

PTQ_EXPORT int ptq_abi_version(void) { return PTQ_ABI_VERSION; }

PTQ_EXPORT int ptq_has_vnni(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512f");
}

PTQ_EXPORT int ptq_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

/* ---- VNNI GEMM, one thread's share, A copy and zero-point correction fused ------------------------------------------
 * C[i, j] = sum_k A'[i, k] * B'[k, j] + colterm[j] - zb[j] * rowsum(A'[i]) for rows [r0, r1) and column blocks
 * [nb0, nb1) (C row-major, ldc = n), A' being A (m x k bytes, row-major as the caller holds it) with the sign bit
 * flipped when flip is set, B' the s8 quads [blocks][kq][16][4] (zero past K). Rows go in chunks (about VNNI_CHUNK
 * bytes, in L2): read in place when zb is null (no row sums needed), otherwise copied into the workspace (flipped, K
 * padded with zeros to whole quads) with their sums; each chunk then runs over the column panels (4 blocks, B of a
 * panel from L1/L2) and, in a panel, over register tiles of rows. The tiles store C once, corrected, with the last
 * block of N masked: no staging buffer and no second pass. zb may be null (all zero). */
#define VNNI_CHUNK (384 << 10)

/* The epilogue of a tile: C = sums + colterm - zb * rowsum (zb null: none), the last block under lastmask. */
__attribute__((target("avx512f,avx512bw")))
TILE_INLINE void vnni_tile_store(const int R, const int C, const int32_t *out, int32_t *c, int ldc, __mmask16 lastmask,
                                 const int32_t *colterm, const int32_t *zb, const int32_t *rowsum)
{
    UNROLL for (int j = 0; j < C; j++) {
        const __mmask16 mk = j == C - 1 ? lastmask : (__mmask16)0xFFFF;
        const __m512i ct = _mm512_loadu_si512(colterm + j * 16);
        if (zb) {
            const __m512i z = _mm512_loadu_si512(zb + j * 16);
            for (int r = 0; r < R; r++)
                _mm512_mask_storeu_epi32(c + (int64_t)r * ldc + j * 16, mk, _mm512_sub_epi32(_mm512_add_epi32(_mm512_load_si512(out + (r * C + j) * 16), ct),
                                                                                            _mm512_mullo_epi32(z, _mm512_set1_epi32(rowsum[r]))));
        } else
            for (int r = 0; r < R; r++)
                _mm512_mask_storeu_epi32(c + (int64_t)r * ldc + j * 16, mk, _mm512_add_epi32(_mm512_load_si512(out + (r * C + j) * 16), ct));
    }
}

/* A's rows read in place start anywhere: 4-byte loads without alignment. */
typedef int32_t __attribute__((aligned(1), may_alias)) ptq_i32u;

/* One register tile template: R rows of A (4 bytes of each broadcast per k quad) x C blocks of 16 columns of B (one
 * 64-byte vector each), R * C accumulators. Per k quad: C vector loads and R broadcasts feed R * C vpdpbusd; the
 * epilogue adds the column terms, subtracts zb * rowsum when zb is set, and stores (the last block under lastmask). */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
TILE_INLINE void vnni_tile(const int R, const int C, const uint8_t *a, int64_t lda, int kq, const int8_t *b, int64_t bstride,
                           int32_t *c, int ldc, __mmask16 lastmask, const int32_t *colterm, const int32_t *zb, const int32_t *rowsum,
                           int32_t *out, __m512i sign)
{
    __m512i acc[24];   /* R * C <= 24: [r * C + j] (an array of this size stays in registers) */
    const ptq_i32u *ar[8];
    UNROLL for (int r = 0; r < R; r++) {
        ar[r] = (const ptq_i32u *)(a + r * lda);
        UNROLL for (int j = 0; j < C; j++) acc[r * C + j] = _mm512_setzero_si512();
    }
    for (int q = 0; q < kq; q++) {
        __m512i y[4];
        UNROLL for (int j = 0; j < C; j++) y[j] = _mm512_loadu_si512(b + j * bstride + (int64_t)q * 64);
        UNROLL for (int r = 0; r < R; r++) {
            __m512i x = _mm512_xor_si512(_mm512_set1_epi32(ar[r][q]), sign);
            UNROLL for (int j = 0; j < C; j++) acc[r * C + j] = _mm512_dpbusd_epi32(acc[r * C + j], x, y[j]);
        }
    }
    /* The epilogue reads the sums back from an aligned block of the workspace (in L1): corrected in registers, or
     * through a block on the stack, gcc 12 spills the accumulators inside the k loop. */
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int j = 0; j < C; j++) _mm512_store_si512(out + (r * C + j) * 16, acc[r * C + j]);
    vnni_tile_store(R, C, out, c, ldc, lastmask, colterm, zb, rowsum);
}

typedef void (*vnni_tile_fn)(const uint8_t *, int64_t, int, const int8_t *, int64_t, int32_t *, int, __mmask16, const int32_t *, const int32_t *, const int32_t *, int32_t *, __m512i);
#define VNNI_TILE(R, C) \
    __attribute__((target("avx512f,avx512bw,avx512vnni"))) \
    static void vnni_tile_##R##x##C(const uint8_t *a, int64_t lda, int kq, const int8_t *b, int64_t bs, int32_t *c, int ldc, __mmask16 lm, \
                                    const int32_t *ct, const int32_t *zb, const int32_t *rs, int32_t *out, __m512i sign) \
    { vnni_tile(R, C, a, lda, kq, b, bs, c, ldc, lm, ct, zb, rs, out, sign); }
/* Panels of 4 blocks: 6 rows (24 accumulators; 4 loads + 6 broadcasts per 24 vpdpbusd), tails of 1-5 rows exact.
 * Narrower panels (what N leaves, 1-3 blocks): 8 rows, tails of 4, 2, 1. */
VNNI_TILE(6, 4) VNNI_TILE(5, 4) VNNI_TILE(4, 4) VNNI_TILE(3, 4) VNNI_TILE(2, 4) VNNI_TILE(1, 4)
VNNI_TILE(8, 3) VNNI_TILE(4, 3) VNNI_TILE(2, 3) VNNI_TILE(1, 3)
VNNI_TILE(8, 2) VNNI_TILE(4, 2) VNNI_TILE(2, 2) VNNI_TILE(1, 2)
VNNI_TILE(8, 1) VNNI_TILE(4, 1) VNNI_TILE(2, 1) VNNI_TILE(1, 1)
static const vnni_tile_fn vnni_tiles4[7] = { 0, vnni_tile_1x4, vnni_tile_2x4, vnni_tile_3x4, vnni_tile_4x4, vnni_tile_5x4, vnni_tile_6x4 };
static const vnni_tile_fn vnni_tiles_narrow[4][4] = {
    { 0, 0, 0, 0 },
    { vnni_tile_8x1, vnni_tile_4x1, vnni_tile_2x1, vnni_tile_1x1 },
    { vnni_tile_8x2, vnni_tile_4x2, vnni_tile_2x2, vnni_tile_1x2 },
    { vnni_tile_8x3, vnni_tile_4x3, vnni_tile_2x3, vnni_tile_1x3 },
};

/* The blocks of the next column panel from nb (of nb1): 4, or what is left (3, 2, 1), with 5 left split 3 + 2 so no
 * 1-block panel runs unless N has a single block. */
static inline int vnni_panel(int nb, int nb1)
{
    int left = nb1 - nb;
    return left == 5 ? 3 : left >= 4 ? 4 : left;
}

/* Rows per chunk: about VNNI_CHUNK bytes of A' (a multiple of 24 rows, the tiles' row steps), at least 24. */
static int vnni_chunk_rows(int rows, int k)
{
    int64_t lda = ((int64_t)k + 3) / 4 * 4;
    if (lda < 4) lda = 4;
    int64_t cr = VNNI_CHUNK / lda / 24 * 24;
    if (cr < 24) cr = 24;
    return (int)(cr < rows ? cr : rows);
}

static int64_t vnni_gemm_workspace(int rows, int k)
{
    int cr = vnni_chunk_rows(rows, k);
    return (int64_t)cr * (((int64_t)k + 3) / 4 * 4) + 64 + 24 * 16 * 4 + (int64_t)cr * 4 + 64;
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
PTQ_EXPORT void ptq_gemm_vnni_fused(const uint8_t *a, int m, int k, int flip, int r0, int r1, const int8_t *quads, int kq, int nb0, int nb1,
                                    const int32_t *colterm, const int32_t *zb, int32_t *c, int n, uint8_t *ws)
{
    const int lda = kq * 4, rows = r1 - r0;
    if (rows <= 0 || nb0 >= nb1) return;
    const int cr = vnni_chunk_rows(rows, k);
    uint8_t *ap = (uint8_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    int32_t *out = (int32_t *)(ap + ((int64_t)cr * lda + 63) / 64 * 64);   /* a tile's sums, 24 x 16 */
    int32_t *rowsum = out + 24 * 16;
    const __m512i sign = _mm512_set1_epi8(flip ? (char)0x80 : 0), zero = _mm512_setzero_si512();
    const int64_t bstride = (int64_t)kq * 64;
    for (int i0 = r0; i0 < r1; i0 += cr) {
        const int ch = r1 - i0 < cr ? r1 - i0 : cr;
        /* Without weight zero points no row sums are needed: the rows are read in place (quads straddle rows where K
         * is not a multiple of 4, the weights past K are zero) and the sign flipped after each broadcast; only a chunk
         * whose last quad would read past A's end (A's last rows with a partial last quad) is copied. */
        const int inplace = !zb && (int64_t)(i0 + ch - 1) * k + lda <= (int64_t)m * k;
        const uint8_t *rows_at = inplace ? a + (int64_t)i0 * k : ap;
        const int64_t stride = inplace ? k : lda;
        if (!inplace)
            /* the chunk's rows: sign flipped, K padded with zeros to whole quads, summed */
            for (int i = 0; i < ch; i++) {
                const uint8_t *src = a + (int64_t)(i0 + i) * k;
                uint8_t *dst = ap + (int64_t)i * lda;
                __m512i sum = zero;
                for (int q = 0; q < lda; q += 64) {
                    int left = k - q, room = lda - q;
                    __mmask64 mk = left >= 64 ? ~(__mmask64)0 : left <= 0 ? 0 : (((__mmask64)1 << left) - 1);
                    __mmask64 ms = room >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << room) - 1);
                    __m512i v = _mm512_maskz_mov_epi8(mk, _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, src + q), sign));
                    _mm512_mask_storeu_epi8(dst + q, ms, v);
                    sum = _mm512_add_epi64(sum, _mm512_sad_epu8(v, zero));
                }
                rowsum[i] = (int32_t)_mm512_reduce_add_epi64(sum);
            }
        const __m512i tsign = inplace ? sign : zero;
        for (int nb = nb0; nb < nb1;) {
            const int cols = vnni_panel(nb, nb1);
            const int col = nb * 16, tailcols = n - (nb + cols - 1) * 16;
            const __mmask16 lastmask = tailcols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << tailcols) - 1);
            const int8_t *b = quads + (int64_t)nb * bstride;
            const int32_t *ct = colterm + col, *z = zb ? zb + col : 0;
            for (int i = 0; i < ch;) {
                int left = ch - i, rr;
                vnni_tile_fn f;
                if (cols == 4) { rr = left >= 6 ? 6 : left; f = vnni_tiles4[rr]; }
                else { int s = left >= 8 ? 0 : left >= 4 ? 1 : left >= 2 ? 2 : 3; rr = 8 >> s; f = vnni_tiles_narrow[cols][s]; }
                f(rows_at + i * stride, stride, kq, b, bstride, c + (int64_t)(i0 + i) * n + col, n, lastmask, ct, z, rowsum + i, out, tsign);
                i += rr;
            }
            nb += cols;
        }
    }
}

/* ---- Direct VNNI convolution ------------------------------------------------------------------------------------
 * The input of one image and group is laid out once per call as channel quads, padded: [cq][hp][wp][4] u8 (pads
 * and missing channels hold the zero point, plus 256 bytes of slack). A K "quad" q = (cq * kh + ki) * kw + kj is then
 * 4 channels at one kernel tap, so 16 output pixels x 4 k values are one 64-byte vector: with stride 1 it is read
 * straight from the packed input (pixels run over "wide" rows of wp columns, the pad columns computed and dropped);
 * with other strides 64 pixels are gathered into a per-thread tile. vpdpbusd multiplies it by a broadcast weight
 * quad, so each accumulator holds 16 pixels of one output channel: the NCHW row, requantized in the same pass. */

__attribute__((target("avx512f,avx512bw,avx512vl")))
PTQ_EXPORT void ptq_conv_pack_input(const uint8_t *x, int channels, int h, int w, int pt, int pl, int hp, int wp,
                         uint8_t fill, int flip, uint8_t *out)
{
    int cq = (channels + 3) / 4;
    memset(out, fill, (size_t)cq * hp * wp * 4 + 256);
    const __m128i f = _mm_set1_epi8((char)fill), sign = _mm_set1_epi8(flip ? (char)0x80 : 0);
    for (int q = 0; q < cq; q++)
        for (int r = 0; r < h; r++) {
            const uint8_t *src[4];
            int have[4];
            for (int t = 0; t < 4; t++) {
                int c = q * 4 + t;
                have[t] = c < channels;
                src[t] = have[t] ? x + ((int64_t)c * h + r) * w : 0;
            }
            uint8_t *dst = out + (((int64_t)q * hp + r + pt) * wp + pl) * 4;
            for (int j = 0; j < w; j += 16) {
                int n = w - j < 16 ? w - j : 16;
                __mmask16 m = (__mmask16)((1u << n) - 1);
                __m128i v[4];
                for (int t = 0; t < 4; t++)
                    v[t] = have[t] ? _mm_xor_si128(_mm_maskz_loadu_epi8(m, src[t] + j), sign) : f;
                __m128i a = _mm_unpacklo_epi8(v[0], v[1]), b = _mm_unpacklo_epi8(v[2], v[3]);
                __m128i c = _mm_unpackhi_epi8(v[0], v[1]), d = _mm_unpackhi_epi8(v[2], v[3]);
                __m128i o[4] = { _mm_unpacklo_epi16(a, b), _mm_unpackhi_epi16(a, b), _mm_unpacklo_epi16(c, d), _mm_unpackhi_epi16(c, d) };
                for (int s = 0; s < 4; s++) {
                    int cnt = n - s * 4;
                    if (cnt <= 0) break;
                    __mmask16 sm = (__mmask16)(cnt >= 4 ? 0xFFFF : (1u << (cnt * 4)) - 1);
                    _mm_mask_storeu_epi8(dst + (j + s * 4) * 4, sm, o[s]);
                }
            }
        }
}

/* The input for convolutions with few channels (the image stem: 3 channels), where channel quads would be mostly
 * padding: [channels][hp][wp][4] u8, the 4 bytes at (c, r, j) being the padded input at columns j, j + dw, j + 2 dw,
 * j + 3 dw of row r (the zero point outside the image, plus 256 bytes of slack). A K quad is then 4 taps of one
 * channel and kernel row, q = (c * kh + ki) * ceil(kw / 4) + jq (weights past kw hold the weight zero point), and the
 * convolution reads it exactly as the channel quads (ptq_conv_vnni with taps4 set, cq = channels). */
__attribute__((target("avx512f,avx512bw,avx512vl")))
PTQ_EXPORT void ptq_conv_pack_input_taps(const uint8_t *x, int channels, int h, int w, int pt, int pl, int hp, int wp, int dw,
                                         uint8_t fill, int flip, uint8_t *out)
{
    /* the image rows are written whole (pad columns included): only the pad rows and the slack are filled first */
    const int64_t rowb = (int64_t)wp * 4;
    for (int c = 0; c < channels; c++) {
        uint8_t *plane = out + (int64_t)c * hp * rowb;
        memset(plane, fill, (size_t)(pt * rowb));
        if (hp > pt + h) memset(plane + (pt + h) * rowb, fill, (size_t)((hp - pt - h) * rowb));
    }
    memset(out + (int64_t)channels * hp * rowb, fill, 256);
    const __m128i f = _mm_set1_epi8((char)fill), sign = _mm_set1_epi8(flip ? (char)0x80 : 0);
    for (int c = 0; c < channels; c++)
        for (int r = 0; r < h; r++) {
            const uint8_t *src = x + ((int64_t)c * h + r) * w;
            uint8_t *dst = out + ((int64_t)c * hp + r + pt) * wp * 4;
            for (int j = 0; j < wp; j += 16) {
                __m128i v[4];
                if (j - pl >= 0 && j + 3 * dw - pl + 16 <= w)   /* inside the image: plain loads */
                    for (int t = 0; t < 4; t++) v[t] = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + j + t * dw - pl)), sign);
                else for (int t = 0; t < 4; t++) {
                    /* padded columns j + t dw + i, i < 16: image columns (that minus pl) inside [0, w) */
                    int start = j + t * dw - pl, lo = start < 0 ? -start : 0, hi = w - start;
                    if (hi > 16) hi = 16;
                    __mmask16 m = hi <= lo ? 0 : (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
                    v[t] = _mm_mask_mov_epi8(f, m, _mm_xor_si128(_mm_maskz_loadu_epi8(m, src + start), sign));
                }
                /* pixel i's dword: its 4 bytes v[0][i] .. v[3][i] */
                __m512i d = _mm512_or_si512(_mm512_or_si512(_mm512_cvtepu8_epi32(v[0]), _mm512_slli_epi32(_mm512_cvtepu8_epi32(v[1]), 8)),
                                            _mm512_or_si512(_mm512_slli_epi32(_mm512_cvtepu8_epi32(v[2]), 16), _mm512_slli_epi32(_mm512_cvtepu8_epi32(v[3]), 24)));
                int n = wp - j < 16 ? wp - j : 16;
                _mm512_mask_storeu_epi32(dst + j * 4, (__mmask16)((1u << n) - 1), d);
            }
        }
}

typedef struct {
    const uint8_t *x;      /* packed input [cq][hp][wp][4] */
    const int8_t *w;       /* weights [oc rounded up to 8][kq][4] */
    const int32_t *corr;   /* per channel: bias - xz * sum(w) + K * xz * wz (wrapping int32) */
    const int32_t *wzero;  /* per channel weight zero point (as stored), or null when all are 0 */
    const float *mult;     /* per channel requantize multiplier, or null for int32 output */
    void *y;               /* output planes [oc][oh * ow] of this image and group */
    int kq, kh, kw, cq, hp, wp, sh, sw, dh, dw, oh, ow, oc;
    float zp, qlo, qhi;
    int out_signed;
    int taps4;             /* VNNI only: the input packed by ptq_conv_pack_input_taps, cq its channels, quads of 4 taps */
} ptq_conv_args;


#define CONV_TILE 48   /* VNNI: pixels per tile, 3 blocks of 16 (or 2, see conv_vnni_tile) */
#define CONV_ROWS 8    /* VNNI: output channels per register block */
#define AMX_TILE 32    /* AMX: pixels per tile, 2 blocks of 16 */
#define AVX2_TILE 16   /* AVX2: pixels per tile, 2 blocks of 8 */
#define AVX2_ROWS 4    /* AVX2: output channels per register block */

enum { PTQ_VNNI = 0, PTQ_AMX = 1, PTQ_AVX2_PAIRS7 = 2, PTQ_AVX2_WIDENED = 3 };

/* What a convolution needs from the caller, per kernel: packed input bytes (one image and group), per-thread
 * workspace bytes, the number of pixel tiles, and the output channel step of a thread's channel range. The managed
 * side asks instead of recomputing the tile geometry. cq16: the AMX weights' channel quads (other kernels: 0). */
typedef struct { int64_t input_bytes, workspace; int32_t tiles, oc_step; } ptq_conv_plan_t;

/* The VNNI kernel's pixels per tile: 48 (8 channels x 3 blocks in registers), or 32 when the output spans 4 blocks
 * (a 7x7 output, ResNet's last stage): 2 + 2 blocks instead of 3 + 1, whose 8 accumulators are bound by their loads. */
static int conv_vnni_tile(int64_t span)
{
    return (span + 15) / 16 == 4 ? 32 : CONV_TILE;
}

PTQ_EXPORT void ptq_conv_plan(const ptq_conv_args *a, int kernel, int cq16, ptq_conv_plan_t *p)
{
    const int wide = a->sh == 1 && a->sw == 1;
    const int64_t span = wide ? (int64_t)(a->oh - 1) * a->wp + a->ow : (int64_t)a->oh * a->ow;
    const int tile = kernel == PTQ_VNNI ? conv_vnni_tile(span) : kernel == PTQ_AMX ? AMX_TILE : AVX2_TILE;
    const int64_t planes = kernel == PTQ_AMX ? cq16 : a->cq;   /* the AMX kernel reads cq16 channel-quad planes */
    p->tiles = (int32_t)((span + tile - 1) / tile);
    p->input_bytes = planes * a->hp * a->wp * 4 + 256;
    p->oc_step = kernel == PTQ_VNNI ? CONV_ROWS : kernel == PTQ_AMX ? 32 : 8;
    p->workspace = kernel == PTQ_AMX ? 32 * 32 * 4 + (wide ? 0 : (int64_t)a->kh * a->kw * cq16 * 128) + 128
                                     : (int64_t)a->kq * (8 + 4 + (kernel == PTQ_VNNI ? CONV_TILE : tile) * 4) + 128;
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
static inline void conv_store(const ptq_conv_args *a, __m512i v, int o, int b, const __mmask16 *mask, const int *start, const __m512i *xsum)
{
    if (!mask[b] || o >= a->oc) return;
    if (a->wzero) v = _mm512_sub_epi32(v, _mm512_mullo_epi32(_mm512_set1_epi32(a->wzero[o]), xsum[b]));
    v = _mm512_add_epi32(v, _mm512_set1_epi32(a->corr[o]));
    int64_t plane = (int64_t)o * a->oh * a->ow + start[b];
    const int full = mask[b] == (__mmask16)0xFFFF;   /* 16 consecutive output pixels: no compress */
    if (!a->mult) {
        if (full) _mm512_storeu_si512((int32_t *)a->y + plane, v);
        else _mm512_mask_compressstoreu_epi32((int32_t *)a->y + plane, mask[b], v);
        return;
    }
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(a->mult[o]));
    f = _mm512_roundscale_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    f = _mm512_add_ps(f, _mm512_set1_ps(a->zp));
    f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(a->qlo)), _mm512_set1_ps(a->qhi));
    if (full) {
        __m512i r = _mm512_cvtps_epi32(f);
        _mm_storeu_si128((__m128i *)((uint8_t *)a->y + plane), a->out_signed ? _mm512_cvtsepi32_epi8(r) : _mm512_cvtusepi32_epi8(r));
        return;
    }
    __m512i r = _mm512_maskz_compress_epi32(mask[b], _mm512_cvtps_epi32(f));
    __m128i bytes = a->out_signed ? _mm512_cvtsepi32_epi8(r) : _mm512_cvtusepi32_epi8(r);
    int cnt = __builtin_popcount(mask[b]);
    _mm_mask_storeu_epi8((uint8_t *)a->y + plane, (__mmask16)((1u << cnt) - 1), bytes);
}

/* One register block template: 8 output channels (broadcast weight quads) x NB blocks of 16 pixels. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
TILE_INLINE void vnni_conv_rows(const int NB, const ptq_conv_args *a, const uint8_t *const *xp, int o, const __mmask16 *mask, const int *start, const __m512i *xsum)
{
    const int kq = a->kq;
    const int32_t *w[CONV_ROWS];
    __m512i acc[CONV_ROWS][3];
    UNROLL for (int r = 0; r < CONV_ROWS; r++) {
        w[r] = (const int32_t *)(a->w + ((int64_t)o + r) * kq * 4);
        UNROLL for (int b = 0; b < NB; b++) acc[r][b] = _mm512_setzero_si512();
    }
    for (int q = 0; q < kq; q++) {
        const uint8_t *p = xp[q];
        __m512i x[3];
        UNROLL for (int b = 0; b < NB; b++) x[b] = _mm512_loadu_si512(p + b * 64);
        UNROLL for (int r = 0; r < CONV_ROWS; r++) {
            __m512i wv = _mm512_set1_epi32(w[r][q]);
            UNROLL for (int b = 0; b < NB; b++) acc[r][b] = _mm512_dpbusd_epi32(acc[r][b], x[b], wv);
        }
    }
    UNROLL for (int r = 0; r < CONV_ROWS; r++)
        UNROLL for (int b = 0; b < NB; b++) conv_store(a, acc[r][b], o + r, b, mask, start, xsum);
}

/* Output tiles [t0, t1) (48 pixels each) for channels [o0, o1) (o0 a multiple of 8). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
PTQ_EXPORT void ptq_conv_vnni(const ptq_conv_args *a, int t0, int t1, int o0, int o1, uint8_t *ws)
{
    const int kq = a->kq, wide = a->sh == 1 && a->sw == 1;
    const int pixels = a->oh * a->ow, span = wide ? (a->oh - 1) * a->wp + a->ow : pixels;
    uint8_t *base = (uint8_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    uint8_t *tile = base;                                   /* kq * 192 bytes (gathered pixels) */
    const uint8_t **xp = (const uint8_t **)(tile + (int64_t)kq * CONV_TILE * 4);
    int32_t *qoff = (int32_t *)(xp + kq);
    if (a->taps4)   /* quad q = (c * kh + ki) * ceil(kw / 4) + jq: taps 4 jq .. 4 jq + 3 of one channel */
        for (int c = 0, q = 0; c < a->cq; c++)
            for (int ki = 0; ki < a->kh; ki++)
                for (int jq = 0; jq < (a->kw + 3) / 4; jq++, q++)
                    qoff[q] = ((c * a->hp + ki * a->dh) * a->wp + jq * 4 * a->dw) * 4;
    else
        for (int cq = 0, q = 0; cq < a->cq; cq++)
            for (int ki = 0; ki < a->kh; ki++)
                for (int kj = 0; kj < a->kw; kj++, q++)
                    qoff[q] = ((cq * a->hp + ki * a->dh) * a->wp + kj * a->dw) * 4;
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i ones = _mm512_set1_epi32(0x01010101);
    const int tw = conv_vnni_tile(span), maxnb = tw / 16;
    for (int t = t0; t < t1; t++) {
        int l0 = t * tw;
        int nb = (span - l0 + 15) / 16;
        if (nb > maxnb) nb = maxnb;
        __mmask16 mask[3];
        int start[3];
        for (int b = 0; b < 3; b++) {
            int lb = l0 + b * 16;
            mask[b] = 0; start[b] = 0;
            int first = 1;
            for (int i = 0; i < 16 && b < nb; i++) {
                int l = lb + i;
                if (l >= span) break;
                if (wide && l % a->wp >= a->ow) continue;
                if (first) { start[b] = wide ? l / a->wp * a->ow + l % a->wp : l; first = 0; }
                mask[b] |= (__mmask16)(1u << i);
            }
        }
        if (wide) {
            for (int q = 0; q < kq; q++) xp[q] = a->x + qoff[q] + (int64_t)l0 * 4;
        } else {
            __m512i off[3];
            for (int b = 0; b < 3; b++) {
                __m512i p = _mm512_add_epi32(_mm512_set1_epi32(l0 + b * 16), lane);
                __mmask16 in = _mm512_cmplt_epi32_mask(p, _mm512_set1_epi32(pixels));
                /* p / ow by float division is exact here (p < 2^24), then rounded down. */
                __m512i r = _mm512_cvttps_epi32(_mm512_div_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps((float)a->ow)));
                __m512i c = _mm512_sub_epi32(p, _mm512_mullo_epi32(r, _mm512_set1_epi32(a->ow)));
                /* correct a rounding up of the quotient */
                __mmask16 neg = _mm512_cmplt_epi32_mask(c, _mm512_setzero_si512());
                r = _mm512_mask_sub_epi32(r, neg, r, _mm512_set1_epi32(1));
                c = _mm512_mask_add_epi32(c, neg, c, _mm512_set1_epi32(a->ow));
                __m512i o = _mm512_add_epi32(_mm512_mullo_epi32(r, _mm512_set1_epi32(a->sh * a->wp)), _mm512_mullo_epi32(c, _mm512_set1_epi32(a->sw)));
                off[b] = _mm512_maskz_mov_epi32(in, o);
            }
            /* Column stride 2 (ResNet's downsampling convolutions): a block whose 16 pixels lie in one output row, or
             * run from one row into the next, is the even dwords of one or two 32-dword windows of the packed input:
             * two loads and a permute each (the second window's loads masked below the lanes it gives, so they read
             * nothing before it), blended; other blocks are gathered. The windows read at most 31 dwords past a
             * pixel the block uses: inside the packed input or its 256 bytes of slack. */
            int mode[3], split[3];
            int64_t base1[3], base2[3];
            __mmask16 m2lo[3], m2hi[3];
            for (int b = 0; b < 3; b++) {
                int p0 = l0 + b * 16, r = p0 / a->ow, c0 = p0 % a->ow, left = a->ow - c0;
                mode[b] = b < nb && a->sw == 2 && p0 + 16 <= pixels && (left >= 16 || (left + a->ow >= 16));
                split[b] = left >= 16 ? 16 : left;
                base1[b] = ((int64_t)r * a->sh * a->wp + (int64_t)c0 * 2) * 4;
                base2[b] = ((int64_t)(r + 1) * a->sh * a->wp - 2 * split[b]) * 4;
                int e = 2 * split[b];   /* the second window's first dword used */
                m2lo[b] = e >= 16 ? 0 : (__mmask16)(0xFFFFu << e);
                m2hi[b] = e >= 16 ? (__mmask16)(0xFFFFu << (e - 16)) : (__mmask16)0xFFFF;
            }
            const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
            for (int q = 0; q < kq; q++) {
                const uint8_t *src = a->x + qoff[q];
                for (int b = 0; b < nb; b++) {
                    __m512i v;
                    if (mode[b]) {
                        const uint8_t *w1 = src + base1[b];
                        v = _mm512_permutex2var_epi32(_mm512_loadu_si512(w1), evens, _mm512_loadu_si512(w1 + 64));
                        if (split[b] < 16) {
                            const uint8_t *w2 = src + base2[b];
                            __m512i v2 = _mm512_permutex2var_epi32(_mm512_maskz_loadu_epi32(m2lo[b], w2), evens, _mm512_maskz_loadu_epi32(m2hi[b], w2 + 64));
                            v = _mm512_mask_blend_epi32((__mmask16)(0xFFFFu << split[b]), v, v2);
                        }
                    } else
                        v = _mm512_i32gather_epi32(off[b], src, 4);
                    _mm512_store_si512(tile + (int64_t)q * CONV_TILE * 4 + b * 64, v);
                }
                xp[q] = tile + (int64_t)q * CONV_TILE * 4;
            }
        }
        __m512i xsum[3] = { _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512() };
        if (a->wzero)
            for (int q = 0; q < kq; q++)
                for (int b = 0; b < nb; b++) xsum[b] = _mm512_dpbusd_epi32(xsum[b], _mm512_loadu_si512(xp[q] + b * 64), ones);
        for (int o = o0; o < o1; o += CONV_ROWS) {
            if (nb == 3) vnni_conv_rows(3, a, xp, o, mask, start, xsum);
            else if (nb == 2) vnni_conv_rows(2, a, xp, o, mask, start, xsum);
            else vnni_conv_rows(1, a, xp, o, mask, start, xsum);
        }
    }
}
/* ---- AMX-INT8 GEMM ----------------------------------------------------------------------------------------------
 * The packed weights' quads ([blocks][kq][16][4]) are exactly the B tiles tdpbusd wants: 16 quads of one block are a
 * 16 x 64-byte tile. A is the row-major u8 copy, K padded with zeros to a multiple of 64 and rows to a multiple of 16,
 * so a tile that runs past K multiplies zeros (the quads read past it belong to the next block or the padding the
 * packer leaves). On Linux the process must ask for the tile state first (arch_prctl ARCH_REQ_XCOMP_PERM); elsewhere
 * the OS must have enabled it in XCR0. */
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

PTQ_EXPORT int ptq_has_amx(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << 24)) || !(d & (1u << 25))) return 0;     /* AMX-TILE, AMX-INT8 */
#if defined(__linux__)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;   /* OSXSAVE */
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & (3u << 17)) == (3u << 17);                               /* XTILECFG, XTILEDATA enabled */
#endif
}

typedef struct { uint8_t palette, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } ptq_tilecfg;

#if defined(_WIN32)
/* gcc 12's tile load/store macros pass the stride as long, 32 bits on Windows x64 (LLP64), which is no valid index
 * register: the same instructions with a 64-bit stride. */
#undef _tile_loadd
#define _tile_loadd(dst, base, stride) \
    __asm__ volatile("tileloadd\t(%0,%1,1), %%tmm" #dst :: "r"((const void *)(base)), "r"((long long)(stride)))
#undef _tile_stored
#define _tile_stored(src, base, stride) \
    __asm__ volatile("tilestored\t%%tmm" #src ", (%0,%1,1)" :: "r"((void *)(base)), "r"((long long)(stride)) : "memory")
#endif

/* ---- AMX-INT8 direct convolution (symmetric weights, 64+ channels per group) -------------------------------------
 * tdpbsud multiplies signed A by unsigned B: A is a weight tile, 16 output channels x 16 channel quads of one tap
 * (weights packed [oc rounded up to 32][tap][channel quads rounded up to 16][4]); B is 16 channel quads x 16 pixels of
 * the packed input, read in place (the planes of consecutive channel quads are hp * wp * 4 bytes apart, the pixels
 * run over wide rows as in ptq_conv_vnni; with other strides a tile's pixels are gathered first). C tiles are 16
 * channels x 16 pixels: NCHW rows, requantized by conv_store. Padded channels have zero weights, so whatever the padded planes hold adds nothing. */
__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni")))
PTQ_EXPORT void ptq_conv_amx(const ptq_conv_args *a, const int8_t *wamx, int cq16, int t0, int t1, int o0, int o1, uint8_t *ws)
{
    ptq_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    _tile_loadconfig(&cfg);
    const int taps = a->kh * a->kw, wide = a->sh == 1 && a->sw == 1, pixels = a->oh * a->ow;
    const int span = wide ? (a->oh - 1) * a->wp + a->ow : pixels;
    const int64_t plane = (int64_t)a->hp * a->wp * 4, wrow = (int64_t)taps * cq16 * 4;
    int32_t *acc = (int32_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);    /* [32 channels][32 pixels] */
    uint8_t *gathered = (uint8_t *)(acc + 32 * 32);                          /* strided: [tap][cq16][32 pixels][4] */
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i noxsum[2] = { _mm512_setzero_si512(), _mm512_setzero_si512() };
    for (int t = t0; t < t1; t++) {
        int l0 = t * AMX_TILE;
        __mmask16 mask[2];
        int start[2];
        for (int b = 0; b < 2; b++) {
            int lb = l0 + b * 16, first = 1;
            mask[b] = 0; start[b] = 0;
            for (int i = 0; i < 16; i++) {
                int l = lb + i;
                if (l >= span) break;
                if (wide && l % a->wp >= a->ow) continue;
                if (first) { start[b] = wide ? l / a->wp * a->ow + l % a->wp : l; first = 0; }
                mask[b] |= (__mmask16)(1u << i);
            }
        }
        if (!wide) {
            /* Other strides: the tile's 32 pixels of every tap and channel quad gathered once, for all channels. */
            __m512i off[2];
            for (int b = 0; b < 2; b++) {
                __m512i p = _mm512_add_epi32(_mm512_set1_epi32(l0 + b * 16), lane);
                __mmask16 in = _mm512_cmplt_epi32_mask(p, _mm512_set1_epi32(pixels));
                __m512i r = _mm512_cvttps_epi32(_mm512_div_ps(_mm512_cvtepi32_ps(p), _mm512_set1_ps((float)a->ow)));
                __m512i c = _mm512_sub_epi32(p, _mm512_mullo_epi32(r, _mm512_set1_epi32(a->ow)));
                __mmask16 neg = _mm512_cmplt_epi32_mask(c, _mm512_setzero_si512());
                r = _mm512_mask_sub_epi32(r, neg, r, _mm512_set1_epi32(1));
                c = _mm512_mask_add_epi32(c, neg, c, _mm512_set1_epi32(a->ow));
                __m512i o = _mm512_add_epi32(_mm512_mullo_epi32(r, _mm512_set1_epi32(a->sh * a->wp)), _mm512_mullo_epi32(c, _mm512_set1_epi32(a->sw)));
                off[b] = _mm512_maskz_mov_epi32(in, o);
            }
            for (int ki = 0; ki < a->kh; ki++)
                for (int kj = 0; kj < a->kw; kj++)
                    for (int c = 0; c < cq16; c++) {
                        const uint8_t *src = a->x + c * plane + ((int64_t)(ki * a->dh) * a->wp + kj * a->dw) * 4;
                        uint8_t *dst = gathered + ((int64_t)(ki * a->kw + kj) * cq16 + c) * 128;
                        _mm512_store_si512(dst, _mm512_i32gather_epi32(off[0], src, 4));
                        _mm512_store_si512(dst + 64, _mm512_i32gather_epi32(off[1], src, 4));
                    }
        }
        for (int o = o0; o < o1; o += 32) {
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            const int8_t *w0 = wamx + (int64_t)o * wrow, *w1 = w0 + 16 * wrow;
            for (int ki = 0; ki < a->kh; ki++)
                for (int kj = 0; kj < a->kw; kj++) {
                    int tap = ki * a->kw + kj;
                    const uint8_t *xb = wide ? a->x + ((int64_t)(ki * a->dh) * a->wp + kj * a->dw + l0) * 4
                                             : gathered + (int64_t)tap * cq16 * 128;
                    const int64_t bs = wide ? plane : 128;
                    for (int c = 0; c < cq16; c += 16) {
                        const uint8_t *x0 = xb + c * bs;
                        _tile_loadd(6, x0, bs);
                        _tile_loadd(7, x0 + 64, bs);
                        _tile_loadd(4, w0 + ((int64_t)tap * cq16 + c) * 4, wrow);
                        _tile_loadd(5, w1 + ((int64_t)tap * cq16 + c) * 4, wrow);
                        _tile_dpbsud(0, 4, 6); _tile_dpbsud(1, 4, 7);
                        _tile_dpbsud(2, 5, 6); _tile_dpbsud(3, 5, 7);
                    }
                }
            _tile_stored(0, acc, 128); _tile_stored(1, acc + 16, 128);
            _tile_stored(2, acc + 16 * 32, 128); _tile_stored(3, acc + 16 * 32 + 16, 128);
            for (int r = 0; r < 32; r++)
                for (int b = 0; b < 2; b++)
                    conv_store(a, _mm512_load_si512(acc + r * 32 + b * 16), o + r, b, mask, start, noxsum);
        }
    }
    _tile_release();
}

/* ---- AMX-INT8 GEMM, one thread's share, A copy and zero-point correction fused --------------------------------------
 * C[i, j] = sum_k A'[i, k] * B'[k, j] + colterm[j] - zb[j] * rowsum(A'[i]) for rows [r0, r1) of the m rows and column
 * blocks [nb0, nb1), where A' is A (m x k bytes, row-major, as the caller holds it) with the sign bit flipped when
 * flip is set, and B' the signed quads. Each thread copies its own rows of A into its workspace (K padded with zeros
 * to a multiple of 64, rows to a multiple of 16) with their sums, so the caller runs nothing serial but the column
 * terms; the tiles of each 32 x 32 block go through an aligned scratch block (in L1) into C (ldc = n) with the
 * correction, so C needs no alignment and no extra pass. Integer arithmetic throughout: any split of rows or blocks
 * gives the same bits. ws: ptq_gemm_plan's workspace bytes. zb may be null (all zero). */
static int64_t amx_gemm_workspace(int rows, int k)
{
    return (int64_t)(rows + 15) / 16 * 16 * ((k + 63) / 64 * 64) + (int64_t)(rows + 15) / 16 * 16 * 4 + 2 * 32 * 32 * 4 + 128;
}

typedef struct {
    const uint8_t *ap; int lda, kq16, rows, rowsPadded, r0, n; int64_t bstride;
    const int8_t *quads; const int32_t *colterm, *zb, *rowsum; int32_t *c;
} amx_gemm_ctx;

/* The tiles of one 32 x 32 block (rows i.. of this thread's copy, column blocks nb and nb + 1 when two) in tiles 0-3. */
__attribute__((target("amx-tile,amx-int8"), always_inline))
static inline void amx_gemm_block(const amx_gemm_ctx *x, int i, int nb, int two)
{
    /* A is stored tile by tile ([16-row group][64-byte K step][16 rows][64 bytes]): a tile is 1 KB in a row. */
    const int pair = i + 16 < x->rowsPadded;
    const int64_t group = (int64_t)x->lda * 16;
    const uint8_t *a0 = x->ap + (int64_t)(i / 16) * group, *a1 = a0 + group;
    const int8_t *b0 = x->quads + nb * x->bstride, *b1 = b0 + x->bstride;
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (int q = 0; q < x->kq16; q += 16) {
        _tile_loadd(4, a0 + (int64_t)q * 64, 64);
        _tile_loadd(6, b0 + (int64_t)q * 64, 64);
        _tile_dpbusd(0, 4, 6);
        if (two) { _tile_loadd(7, b1 + (int64_t)q * 64, 64); _tile_dpbusd(1, 4, 7); }
        if (pair) {
            _tile_loadd(5, a1 + (int64_t)q * 64, 64);
            _tile_dpbusd(2, 5, 6);
            if (two) _tile_dpbusd(3, 5, 7);
        }
    }
}

__attribute__((target("amx-tile,amx-int8"), always_inline))
static inline void amx_gemm_store(const amx_gemm_ctx *x, int i, int two, int32_t *acc)
{
    _tile_stored(0, acc, 128);
    if (two) _tile_stored(1, acc + 16, 128);
    if (i + 16 < x->rowsPadded) { _tile_stored(2, acc + 16 * 32, 128); if (two) _tile_stored(3, acc + 16 * 32 + 16, 128); }
}

/* The stored block, corrected into C. */
__attribute__((target("avx512f,avx512bw"), always_inline))
static inline void amx_gemm_correct(const amx_gemm_ctx *x, int i, int nb, int two, const int32_t *acc)
{
    const int rlim = x->rows - i < 32 ? x->rows - i : 32;
    for (int bb = 0; bb < 1 + two; bb++) {
        int col = (nb + bb) * 16, cnt = x->n - col < 16 ? x->n - col : 16;
        __mmask16 mc = (__mmask16)((1u << cnt) - 1);
        __m512i ct = _mm512_loadu_si512(x->colterm + col);
        int32_t *cp = x->c + (int64_t)(x->r0 + i) * x->n + col;
        if (x->zb) {
            __m512i z = _mm512_loadu_si512(x->zb + col);
            for (int r = 0; r < rlim; r++, cp += x->n)
                _mm512_mask_storeu_epi32(cp, mc, _mm512_sub_epi32(_mm512_add_epi32(_mm512_load_si512(acc + r * 32 + bb * 16), ct),
                                                                  _mm512_mullo_epi32(z, _mm512_set1_epi32(x->rowsum[i + r]))));
        } else
            for (int r = 0; r < rlim; r++, cp += x->n)
                _mm512_mask_storeu_epi32(cp, mc, _mm512_add_epi32(_mm512_load_si512(acc + r * 32 + bb * 16), ct));
    }
}

__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw")))
PTQ_EXPORT void ptq_gemm_amx_fused(const uint8_t *a, int m, int k, int flip, int r0, int r1, const int8_t *quads, int kq, int nb0, int nb1,
                        const int32_t *colterm, const int32_t *zb, int32_t *c, int n, uint8_t *ws)
{
    (void)m;
    const int lda = (k + 63) / 64 * 64, rows = r1 - r0, rowsPadded = (rows + 15) / 16 * 16;
    uint8_t *ap = (uint8_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    int32_t *acc = (int32_t *)(ap + (int64_t)rowsPadded * lda);             /* 2 x [32][32], 64-byte aligned */
    int32_t *rowsum = acc + 2 * 32 * 32;
    const __m512i sign = _mm512_set1_epi8(flip ? (char)0x80 : 0), zero = _mm512_setzero_si512();
    for (int i = 0; i < rowsPadded; i++) {
        /* row i's 64-byte K steps, one per tile of its 16-row group */
        uint8_t *dst = ap + (int64_t)(i / 16) * lda * 16 + (i % 16) * 64;
        if (i >= rows) { for (int q = 0; q < lda; q += 64) _mm512_store_si512(dst + (int64_t)q * 16, zero); rowsum[i] = 0; continue; }
        const uint8_t *src = a + (int64_t)(r0 + i) * k;
        __m512i sum = zero;
        for (int q = 0; q < lda; q += 64) {
            int left = k - q;
            __mmask64 mk = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
            __m512i v = _mm512_maskz_mov_epi8(mk, _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, src + q), sign));
            _mm512_store_si512(dst + (int64_t)q * 16, v);
            sum = _mm512_add_epi64(sum, _mm512_sad_epu8(v, zero));
        }
        rowsum[i] = (int32_t)_mm512_reduce_add_epi64(sum);
    }
    ptq_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    _tile_loadconfig(&cfg);
    amx_gemm_ctx x = { ap, lda, lda / 4, rows, rowsPadded, r0, n, (int64_t)kq * 64, quads, colterm, zb, rowsum, c };
    /* Software pipelined: while the tiles of one block compute, the previous block (stored to the other half of acc)
     * is corrected into C; a vector load right after a tile store of the same lines would wait for the store. */
    /* Blocked for L2: column-block chunks of about 256 KB of B outer; in a chunk, strips of 32 rows (their A tiles stay
     * in L1) over the chunk's block pairs (B from L2). */
    int chunk = (int)((256 << 10) / ((int64_t)kq * 64)) & ~1;
    if (chunk < 2) chunk = 2;
    int pi = -1, pnb = 0, ptwo = 0, buf = 0;
    for (int cb = nb0; cb < nb1; cb += chunk) {
        int ce = cb + chunk < nb1 ? cb + chunk : nb1;
        for (int i = 0; i < rowsPadded; i += 32)
            for (int nb = cb; nb < ce; nb += 2) {
                int two = nb + 1 < ce;
                amx_gemm_block(&x, i, nb, two);
                if (pi >= 0) amx_gemm_correct(&x, pi, pnb, ptwo, acc + (buf ^ 1) * 32 * 32);
                amx_gemm_store(&x, i, two, acc + buf * 32 * 32);
                pi = i; pnb = nb; ptwo = two; buf ^= 1;
            }
    }
    if (pi >= 0) amx_gemm_correct(&x, pi, pnb, ptwo, acc + (buf ^ 1) * 32 * 32);
    _tile_release();
}

/* ---- Saturating pairs (emulation of ONNX Runtime on x86 without VNNI) ------------------------------------------
 * Raw u8 x s8 sums as MLAS's AVX2/AVX-512BW kernels compute them: vpmaddubsw adds two adjacent products and
 * saturates the pair to int16; the pairs are then added in int32. A pair of weights (w0, w1) can only saturate if
 * max(w0,0) + max(w1,0) > 128 or min(w0,0) + min(w1,0) < -128 (the codes a are 0..255); every other pair's sum is
 * exact, so the caller splits B in two: "safe" (risky pairs zeroed), multiplied exactly with vpdpbusd, and "risky"
 * (only the quads of a block that hold a risky pair, safe pairs zeroed), through vpmaddubsw and vpdpwssd with a
 * vector of ones (what vpmaddwd + vpaddd do there, in one instruction). Zeroed pairs add 0 to either sum.
 * a: rows of lda = quads * 4 bytes (zero padded); safe: [blocks][quads][16][4] s8; risky: the risky quads of all
 * blocks, [count][16][4], block nb's from riskyStart[nb] to riskyStart[nb + 1], their quad indices in riskyQ;
 * out: rows x (blocks * 16) int32, row stride ldo. A block whose every quad is risky has an all-zero safe part,
 * which is skipped. */
#define SAT_ACC(acc, x, w) acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(x, w), ones)

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static inline __m512i sat_bcast(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
PTQ_EXPORT void ptq_gemm_u8s8_satsplit(const uint8_t *a, int lda, int rows, int quads, const int8_t *safe, int blocks,
                            const int8_t *risky, const int32_t *riskyStart, const int32_t *riskyQ, int32_t *out, int ldo)
{
    const __m512i ones = _mm512_set1_epi16(1);
    for (int i = 0; i < rows; i += 4) {
        int rr = rows - i < 4 ? rows - i : 4;
        const uint8_t *a0 = a + (int64_t)i * lda;
        const uint8_t *a1 = a + (int64_t)(i + (rr > 1 ? 1 : 0)) * lda;
        const uint8_t *a2 = a + (int64_t)(i + (rr > 2 ? 2 : 0)) * lda;
        const uint8_t *a3 = a + (int64_t)(i + (rr > 3 ? 3 : 0)) * lda;
        int nb = 0;
        for (; nb + 1 < blocks; nb += 2) {
            __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
            const int8_t *b0 = safe + (int64_t)nb * quads * 64, *b1 = b0 + (int64_t)quads * 64;
            int skip = riskyStart[nb + 1] - riskyStart[nb] == quads && riskyStart[nb + 2] - riskyStart[nb + 1] == quads;
            for (int q = 0; q < (skip ? 0 : quads); q++) {
                __m512i w0 = _mm512_loadu_si512(b0 + (int64_t)q * 64), w1 = _mm512_loadu_si512(b1 + (int64_t)q * 64), x;
                x = sat_bcast(a0 + q * 4); c00 = _mm512_dpbusd_epi32(c00, x, w0); c01 = _mm512_dpbusd_epi32(c01, x, w1);
                x = sat_bcast(a1 + q * 4); c10 = _mm512_dpbusd_epi32(c10, x, w0); c11 = _mm512_dpbusd_epi32(c11, x, w1);
                x = sat_bcast(a2 + q * 4); c20 = _mm512_dpbusd_epi32(c20, x, w0); c21 = _mm512_dpbusd_epi32(c21, x, w1);
                x = sat_bcast(a3 + q * 4); c30 = _mm512_dpbusd_epi32(c30, x, w0); c31 = _mm512_dpbusd_epi32(c31, x, w1);
            }
            for (int t = riskyStart[nb]; t < riskyStart[nb + 1]; t++) {
                __m512i w = _mm512_loadu_si512(risky + (int64_t)t * 64);
                int q = riskyQ[t];
                SAT_ACC(c00, sat_bcast(a0 + q * 4), w); SAT_ACC(c10, sat_bcast(a1 + q * 4), w);
                SAT_ACC(c20, sat_bcast(a2 + q * 4), w); SAT_ACC(c30, sat_bcast(a3 + q * 4), w);
            }
            for (int t = riskyStart[nb + 1]; t < riskyStart[nb + 2]; t++) {
                __m512i w = _mm512_loadu_si512(risky + (int64_t)t * 64);
                int q = riskyQ[t];
                SAT_ACC(c01, sat_bcast(a0 + q * 4), w); SAT_ACC(c11, sat_bcast(a1 + q * 4), w);
                SAT_ACC(c21, sat_bcast(a2 + q * 4), w); SAT_ACC(c31, sat_bcast(a3 + q * 4), w);
            }
            int32_t *o = out + (int64_t)i * ldo + nb * 16;
            _mm512_storeu_si512(o, c00); _mm512_storeu_si512(o + 16, c01);
            if (rr > 1) { _mm512_storeu_si512(o + ldo, c10); _mm512_storeu_si512(o + ldo + 16, c11); }
            if (rr > 2) { _mm512_storeu_si512(o + 2 * ldo, c20); _mm512_storeu_si512(o + 2 * ldo + 16, c21); }
            if (rr > 3) { _mm512_storeu_si512(o + 3 * ldo, c30); _mm512_storeu_si512(o + 3 * ldo + 16, c31); }
        }
        for (; nb < blocks; nb++) {
            __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0;
            const int8_t *b0 = safe + (int64_t)nb * quads * 64;
            int skip = riskyStart[nb + 1] - riskyStart[nb] == quads;
            for (int q = 0; q < (skip ? 0 : quads); q++) {
                __m512i w0 = _mm512_loadu_si512(b0 + (int64_t)q * 64);
                c0 = _mm512_dpbusd_epi32(c0, sat_bcast(a0 + q * 4), w0); c1 = _mm512_dpbusd_epi32(c1, sat_bcast(a1 + q * 4), w0);
                c2 = _mm512_dpbusd_epi32(c2, sat_bcast(a2 + q * 4), w0); c3 = _mm512_dpbusd_epi32(c3, sat_bcast(a3 + q * 4), w0);
            }
            for (int t = riskyStart[nb]; t < riskyStart[nb + 1]; t++) {
                __m512i w = _mm512_loadu_si512(risky + (int64_t)t * 64);
                int q = riskyQ[t];
                SAT_ACC(c0, sat_bcast(a0 + q * 4), w); SAT_ACC(c1, sat_bcast(a1 + q * 4), w);
                SAT_ACC(c2, sat_bcast(a2 + q * 4), w); SAT_ACC(c3, sat_bcast(a3 + q * 4), w);
            }
            int32_t *o = out + (int64_t)i * ldo + nb * 16;
            _mm512_storeu_si512(o, c0);
            if (rr > 1) _mm512_storeu_si512(o + ldo, c1);
            if (rr > 2) _mm512_storeu_si512(o + 2 * ldo, c2);
            if (rr > 3) _mm512_storeu_si512(o + 3 * ldo, c3);
        }
    }
}

/* ---- AVX2 kernels (CPUs without VNNI) -------------------------------------------------------------------------------
 * Two exact forms of the u8 x s8 dot product, chosen per weight tensor when it is packed:
 * - "7-bit pairs": vpmaddubsw adds two adjacent u8 x s8 products into a saturating int16, then vpmaddwd with ones
 *   adds the pairs into int32. With a in 0..255 a pair (w0, w1) cannot saturate when max(w0,0) + max(w1,0) <= 128
 *   and min(w0,0) + min(w1,0) >= -128 (255 * 128 = 32640); the packer checks every pair and uses this form only then
 *   (weights within 7 bits, |w| <= 64, always pass). Same quads, same zero-point corrections as the VNNI kernels.
 * - "widened": A and B as int16 pairs (A widened per row panel, minus its zero point; B already packed as int16
 *   pairs minus its zero point), vpmaddwd adds each pair exactly into int32: no saturation, no correction.
 * One unit of K (a quad of bytes or a pair of int16) is 4 bytes per row of A and 64 bytes per block of 16 columns of
 * B in both forms, so one register tile template serves both; only the dot product differs. */
#define AVX2_GEMM_ROWS 4

__attribute__((target("avx2")))
TILE_INLINE __m256i avx2_dot(const int widened, __m256i acc, __m256i x, __m256i w)
{
    if (widened) return _mm256_add_epi32(acc, _mm256_madd_epi16(x, w));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), _mm256_set1_epi16(1)));
}

/* AVX2_GEMM_ROWS rows of A (u8 quads or int16 pairs, one 4-byte unit broadcast per row) x one block of 16 columns
 * (two vectors). Leftover rows are handled inside the tile, as XNNPACK's micro-kernels do: the pointers of rows past
 * rr alias the last valid row and their results are not stored. */
__attribute__((target("avx2")))
TILE_INLINE void avx2_tile(const int W, const int32_t *a, int64_t lda32, int rr, int units, const int8_t *b, int32_t *c, int ldc)
{
    __m256i acc[AVX2_GEMM_ROWS][2];
    const int32_t *ar[AVX2_GEMM_ROWS];
    UNROLL for (int r = 0; r < AVX2_GEMM_ROWS; r++) {
        ar[r] = a + (r < rr ? r : rr - 1) * lda32;
        acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    }
    for (int u = 0; u < units; u++) {
        __m256i y0 = _mm256_loadu_si256((const __m256i *)(b + (int64_t)u * 64));
        __m256i y1 = _mm256_loadu_si256((const __m256i *)(b + (int64_t)u * 64 + 32));
        UNROLL for (int r = 0; r < AVX2_GEMM_ROWS; r++) {
            __m256i x = _mm256_set1_epi32(ar[r][u]);
            acc[r][0] = avx2_dot(W, acc[r][0], x, y0);
            acc[r][1] = avx2_dot(W, acc[r][1], x, y1);
        }
    }
    UNROLL for (int r = 0; r < AVX2_GEMM_ROWS; r++)
        if (r < rr) {
            _mm256_storeu_si256((__m256i *)(c + (int64_t)r * ldc), acc[r][0]);
            _mm256_storeu_si256((__m256i *)(c + (int64_t)r * ldc + 8), acc[r][1]);
        }
}

__attribute__((target("avx2"))) static void avx2_tile_pairs7(const int32_t *a, int64_t lda32, int rr, int units, const int8_t *b, int32_t *c, int ldc)
{ avx2_tile(0, a, lda32, rr, units, b, c, ldc); }
__attribute__((target("avx2"))) static void avx2_tile_widened(const int32_t *a, int64_t lda32, int rr, int units, const int8_t *b, int32_t *c, int ldc)
{ avx2_tile(1, a, lda32, rr, units, b, c, ldc); }

/* Rows [r0, r1) of C (row stride ldc) = A x B over all blocks. a: the u8 copy of A (rows of lda bytes, zero padded,
 * signed A sign-flipped). 7-bit pairs (widened = 0): b = the quads [blocks][kq][16][4], units = kq, raw sums (the
 * caller corrects the zero points). Widened: b = int16 pairs [blocks][kp][16][2] of w minus its zero point,
 * units = kp; the rows are widened into ws (ptq_gemm_plan's workspace) minus az, so C is exact as it stands.
 * Column blocks outer (a block of B stays in L1/L2 while the rows stream past it). */
__attribute__((target("avx2")))
PTQ_EXPORT void ptq_gemm_u8s8_avx2(const uint8_t *a, int lda, int r0, int r1, int widened, int az, int units,
                                   const int8_t *b, int blocks, int32_t *c, int ldc, uint8_t *ws)
{
    const int32_t *ap = (const int32_t *)(a + (int64_t)r0 * lda);
    int64_t lda32 = lda / 4;
    if (widened) {
        int16_t *w16 = (int16_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
        const int kk = units * 2;
        const __m256i z = _mm256_set1_epi16((short)az);
        for (int i = r0; i < r1; i++) {
            const uint8_t *src = a + (int64_t)i * lda;
            int16_t *dst = w16 + (int64_t)(i - r0) * kk;
            int k = 0;
            for (; k + 16 <= kk; k += 16)
                _mm256_storeu_si256((__m256i *)(dst + k), _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(src + k))), z));
            for (; k < kk; k++) dst[k] = (int16_t)(src[k] - az);
        }
        ap = (const int32_t *)w16;
        lda32 = units;
    }
    for (int nb = 0; nb < blocks; nb++) {
        const int8_t *bp = b + (int64_t)nb * units * 64;
        for (int i = r0; i < r1; i += AVX2_GEMM_ROWS) {
            int rr = r1 - i < AVX2_GEMM_ROWS ? r1 - i : AVX2_GEMM_ROWS;
            const int32_t *ai = ap + (int64_t)(i - r0) * lda32;
            int32_t *cp = c + (int64_t)i * ldc + nb * 16;
            if (widened) avx2_tile_widened(ai, lda32, rr, units, bp, cp, ldc);
            else avx2_tile_pairs7(ai, lda32, rr, units, bp, cp, ldc);
        }
    }
}

/* What a GEMM kernel needs from the caller: the per-thread workspace for `rows` rows, the row step a thread's share
 * is a multiple of, and the row length (bytes) of the u8 copy of A. */
typedef struct { int64_t workspace; int32_t row_step, lda; } ptq_gemm_plan_t;

PTQ_EXPORT void ptq_gemm_plan(int kernel, int rows, int k, ptq_gemm_plan_t *p)
{
    const int kq = (k + 3) / 4;
    p->lda = kq * 4;
    p->workspace = kernel == PTQ_VNNI ? vnni_gemm_workspace(rows, k) : 0;
    p->row_step = 8;
    if (kernel == PTQ_AMX) { p->workspace = amx_gemm_workspace(rows, k) + 64; p->row_step = 32; p->lda = (k + 63) / 64 * 64; }
    else if (kernel == PTQ_AVX2_PAIRS7) p->row_step = AVX2_GEMM_ROWS;
    else if (kernel == PTQ_AVX2_WIDENED) { p->row_step = AVX2_GEMM_ROWS; p->workspace = (int64_t)rows * ((k + 1) / 2) * 4 + 64; }
}

/* ---- AVX2 direct convolution ---------------------------------------------------------------------------------------
 * ptq_conv_vnni's structure with 8-pixel vectors: the input of one image and group is packed once per call as
 * [units][hp][wp][4 bytes]: channel quads of u8 (7-bit pairs; pads and missing channels hold the zero point, the
 * weights are the VNNI quads [oc rounded up to 8][kq][4] and the corrections those of the VNNI kernel) or channel
 * pairs of int16 x minus its zero point (widened; pads 0, the weights [oc rounded up to 8][kp][2] int16 w minus its
 * zero point, so only the bias is added). 8 pixels x one unit are one 32-byte vector either way; one weight unit is
 * broadcast per output channel. */
PTQ_EXPORT void ptq_conv_pack_input_avx2(const uint8_t *x, int channels, int h, int w, int pt, int pl, int hp, int wp,
                                         uint8_t fill, int flip, int widened, uint8_t *out)
{
    const int per = widened ? 2 : 4, units = (channels + per - 1) / per;
    const uint8_t sign = flip ? 0x80 : 0;
    memset(out, widened ? 0 : fill, (size_t)units * hp * wp * 4 + 256);
    for (int c = 0; c < channels; c++) {
        int u = c / per, t = c % per;
        for (int r = 0; r < h; r++) {
            const uint8_t *src = x + ((int64_t)c * h + r) * w;
            int64_t at = ((int64_t)u * hp + r + pt) * wp + pl;
            if (widened) {
                int16_t *dst = (int16_t *)out + at * 2 + t;
                for (int j = 0; j < w; j++) dst[j * 2] = (int16_t)((src[j] ^ sign) - fill);
            } else {
                uint8_t *dst = out + at * 4 + t;
                for (int j = 0; j < w; j++) dst[j * 4] = src[j] ^ sign;
            }
        }
    }
}

/* Requantization epilogue (QuantMath.Requantize, 8 lanes): round_half_even(float(v) * m) + zp, clamped. */
__attribute__((target("avx2")))
TILE_INLINE __m256i avx2_requantize(__m256i v, float m, float zp, float lo, float hi)
{
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(m));
    f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    f = _mm256_add_ps(f, _mm256_set1_ps(zp));
    f = _mm256_min_ps(_mm256_max_ps(f, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
    return _mm256_cvtps_epi32(f);
}

/* The valid lanes (mask) of one block, in output order from start: int32 as they are, or requantized bytes. */
__attribute__((target("avx2")))
TILE_INLINE void avx2_store_lanes(void *y, int64_t at, int out_bytes, __m256i v, unsigned mask)
{
    int32_t t[8];
    _mm256_storeu_si256((__m256i *)t, v);
    int n = 0;
    if (out_bytes) { uint8_t *p = (uint8_t *)y + at; for (int i = 0; i < 8; i++) if (mask >> i & 1) p[n++] = (uint8_t)t[i]; }
    else { int32_t *p = (int32_t *)y + at; for (int i = 0; i < 8; i++) if (mask >> i & 1) p[n++] = t[i]; }
}

__attribute__((target("avx2")))
TILE_INLINE void avx2_conv_store(const ptq_conv_args *a, __m256i v, int o, int b, const uint8_t *mask, const int *start, const __m256i *xsum)
{
    if (!mask[b] || o >= a->oc) return;
    if (a->wzero) v = _mm256_sub_epi32(v, _mm256_mullo_epi32(_mm256_set1_epi32(a->wzero[o]), xsum[b]));
    v = _mm256_add_epi32(v, _mm256_set1_epi32(a->corr[o]));
    if (a->mult) v = avx2_requantize(v, a->mult[o], a->zp, a->qlo, a->qhi);
    avx2_store_lanes(a->y, (int64_t)o * a->oh * a->ow + start[b], a->mult != 0, v, mask[b]);
}

/* One register block template: AVX2_ROWS output channels x NB blocks of 8 pixels, one dot product form W. */
__attribute__((target("avx2")))
TILE_INLINE void avx2_conv_rows(const int W, const int NB, const ptq_conv_args *a, const uint8_t *const *xp, int o, const uint8_t *mask, const int *start, const __m256i *xsum)
{
    const int kq = a->kq;
    const int32_t *w[AVX2_ROWS];
    __m256i acc[AVX2_ROWS][2];
    UNROLL for (int r = 0; r < AVX2_ROWS; r++) {
        w[r] = (const int32_t *)a->w + ((int64_t)o + r) * kq;
        UNROLL for (int b = 0; b < NB; b++) acc[r][b] = _mm256_setzero_si256();
    }
    for (int q = 0; q < kq; q++) {
        __m256i x[2];
        UNROLL for (int b = 0; b < NB; b++) x[b] = _mm256_loadu_si256((const __m256i *)(xp[q] + b * 32));
        UNROLL for (int r = 0; r < AVX2_ROWS; r++) {
            __m256i wv = _mm256_set1_epi32(w[r][q]);
            UNROLL for (int b = 0; b < NB; b++) acc[r][b] = avx2_dot(W, acc[r][b], x[b], wv);
        }
    }
    UNROLL for (int r = 0; r < AVX2_ROWS; r++)
        UNROLL for (int b = 0; b < NB; b++) avx2_conv_store(a, acc[r][b], o + r, b, mask, start, xsum);
}

__attribute__((target("avx2"))) static void avx2_conv_block(int widened, int nb, const ptq_conv_args *a, const uint8_t *const *xp, int o, const uint8_t *mask, const int *start, const __m256i *xsum)
{
    if (widened) { if (nb == 2) avx2_conv_rows(1, 2, a, xp, o, mask, start, xsum); else avx2_conv_rows(1, 1, a, xp, o, mask, start, xsum); }
    else { if (nb == 2) avx2_conv_rows(0, 2, a, xp, o, mask, start, xsum); else avx2_conv_rows(0, 1, a, xp, o, mask, start, xsum); }
}

/* Output tiles [t0, t1) (AVX2_TILE pixels each) for channels [o0, o1) (o0 a multiple of 8); a->kq counts units
 * (quads or pairs), a->cq channel units; ws: ptq_conv_plan's workspace. */
__attribute__((target("avx2")))
PTQ_EXPORT void ptq_conv_avx2(const ptq_conv_args *a, int widened, int t0, int t1, int o0, int o1, uint8_t *ws)
{
    const int kq = a->kq, wide = a->sh == 1 && a->sw == 1;
    const int pixels = a->oh * a->ow, span = wide ? (a->oh - 1) * a->wp + a->ow : pixels;
    uint8_t *tile = (uint8_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);   /* kq * 64 bytes (gathered pixels) */
    const uint8_t **xp = (const uint8_t **)(tile + (int64_t)kq * AVX2_TILE * 4);
    int32_t *qoff = (int32_t *)(xp + kq);
    for (int cq = 0, q = 0; cq < a->cq; cq++)
        for (int ki = 0; ki < a->kh; ki++)
            for (int kj = 0; kj < a->kw; kj++, q++)
                qoff[q] = ((cq * a->hp + ki * a->dh) * a->wp + kj * a->dw) * 4;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), zero = _mm256_setzero_si256();
    for (int t = t0; t < t1; t++) {
        int l0 = t * AVX2_TILE;
        int nb = (span - l0 + 7) / 8;
        if (nb > 2) nb = 2;
        uint8_t mask[2];
        int start[2];
        for (int b = 0; b < 2; b++) {
            int lb = l0 + b * 8, first = 1;
            mask[b] = 0; start[b] = 0;
            for (int i = 0; i < 8 && b < nb; i++) {
                int l = lb + i;
                if (l >= span) break;
                if (wide && l % a->wp >= a->ow) continue;
                if (first) { start[b] = wide ? l / a->wp * a->ow + l % a->wp : l; first = 0; }
                mask[b] |= (uint8_t)(1u << i);
            }
        }
        if (wide) {
            for (int q = 0; q < kq; q++) xp[q] = a->x + qoff[q] + (int64_t)l0 * 4;
        } else {
            __m256i off[2];
            for (int b = 0; b < 2; b++) {
                __m256i p = _mm256_add_epi32(_mm256_set1_epi32(l0 + b * 8), lane);
                __m256i in = _mm256_cmpgt_epi32(_mm256_set1_epi32(pixels), p);
                /* p / ow by float division is exact here (p < 2^24), then rounded down. */
                __m256i r = _mm256_cvttps_epi32(_mm256_div_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps((float)a->ow)));
                __m256i c = _mm256_sub_epi32(p, _mm256_mullo_epi32(r, _mm256_set1_epi32(a->ow)));
                __m256i neg = _mm256_cmpgt_epi32(zero, c);                /* -1 where the quotient rounded up */
                r = _mm256_add_epi32(r, neg);
                c = _mm256_add_epi32(c, _mm256_and_si256(neg, _mm256_set1_epi32(a->ow)));
                __m256i o = _mm256_add_epi32(_mm256_mullo_epi32(r, _mm256_set1_epi32(a->sh * a->wp)), _mm256_mullo_epi32(c, _mm256_set1_epi32(a->sw)));
                off[b] = _mm256_and_si256(o, in);
            }
            for (int q = 0; q < kq; q++) {
                const int *src = (const int *)(a->x + qoff[q]);
                for (int b = 0; b < nb; b++)
                    _mm256_store_si256((__m256i *)(tile + (int64_t)q * AVX2_TILE * 4 + b * 32), _mm256_i32gather_epi32(src, off[b], 4));
                xp[q] = tile + (int64_t)q * AVX2_TILE * 4;
            }
        }
        __m256i xsum[2] = { zero, zero };
        if (a->wzero && !widened) {
            const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
            for (int q = 0; q < kq; q++)
                for (int b = 0; b < nb; b++)
                    xsum[b] = _mm256_add_epi32(xsum[b], _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(xp[q] + b * 32)), ones8), ones16));
        }
        for (int o = o0; o < o1; o += AVX2_ROWS) avx2_conv_block(widened, nb, a, xp, o, mask, start, xsum);
    }
}

/* ---- AVX2 depthwise convolution ------------------------------------------------------------------------------------
 * One channel per input plane: the plane is laid out once per channel as int32 x minus its zero point, padded with
 * zeros (plus slack for the vector reads past a row's end), and 8 output pixels of a row accumulate w[tap] * x over
 * the taps with vpmulld (exact: |x - xz|, |w - wz| <= 255). Stride 1 reads straight from the plane, other strides
 * gather. The epilogue adds the bias and requantizes (or stores int32). */
typedef struct {
    const uint8_t *x;      /* the image's planes [channels][h][w] */
    const int32_t *w;      /* [channels][kh * kw], w minus its zero point */
    const int32_t *bias;   /* per channel, or null */
    const float *mult;     /* per channel requantize multiplier, or null for int32 output */
    void *y;               /* the image's output planes [channels][oh * ow] */
    int h, w_, pt, pl, hp, wp, kh, kw, sh, sw, dh, dw, oh, ow, xz, flip;
    float zp, qlo, qhi;
} ptq_dw_args;

/* Bytes of per-thread workspace ptq_dwconv_avx2 needs. */
PTQ_EXPORT int64_t ptq_dwconv_workspace(const ptq_dw_args *a) { return ((int64_t)a->hp * a->wp + 8 * (int64_t)a->sw + 16) * 4 + 64; }

/* Channels [c0, c1) of one image. */
__attribute__((target("avx2")))
PTQ_EXPORT void ptq_dwconv_avx2(const ptq_dw_args *a, int c0, int c1, uint8_t *ws)
{
    int32_t *plane = (int32_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    const int taps = a->kh * a->kw, pixels = a->oh * a->ow;
    const int64_t size = (int64_t)a->hp * a->wp + 8 * (int64_t)a->sw + 16;
    const uint8_t sign = a->flip ? 0x80 : 0;
    const __m256i step = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(a->sw));
    for (int c = c0; c < c1; c++) {
        memset(plane, 0, (size_t)size * 4);
        for (int r = 0; r < a->h; r++) {
            const uint8_t *src = a->x + ((int64_t)c * a->h + r) * a->w_;
            int32_t *dst = plane + (int64_t)(r + a->pt) * a->wp + a->pl;
            for (int j = 0; j < a->w_; j++) dst[j] = (src[j] ^ sign) - a->xz;
        }
        const int32_t *wc = a->w + (int64_t)c * taps;
        const __m256i bias = _mm256_set1_epi32(a->bias ? a->bias[c] : 0);
        for (int i = 0; i < a->oh; i++)
            for (int j = 0; j < a->ow; j += 8) {
                __m256i acc = _mm256_setzero_si256();
                for (int ki = 0; ki < a->kh; ki++) {
                    const int32_t *row = plane + (int64_t)(i * a->sh + ki * a->dh) * a->wp + (int64_t)j * a->sw;
                    for (int kj = 0; kj < a->kw; kj++) {
                        const int32_t *p = row + kj * a->dw;
                        __m256i v = a->sw == 1 ? _mm256_loadu_si256((const __m256i *)p) : _mm256_i32gather_epi32((const int *)p, step, 4);
                        acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(v, _mm256_set1_epi32(wc[ki * a->kw + kj])));
                    }
                }
                acc = _mm256_add_epi32(acc, bias);
                if (a->mult) acc = avx2_requantize(acc, a->mult[c], a->zp, a->qlo, a->qhi);
                int n = a->ow - j < 8 ? a->ow - j : 8;
                avx2_store_lanes(a->y, (int64_t)c * pixels + (int64_t)i * a->ow + j, a->mult != 0, acc, (1u << n) - 1);
            }
    }
}
