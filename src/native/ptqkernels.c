/* PtqTools native int8 kernels: the AVX-512 VNNI GEMM that .NET cannot emit (no 512-bit vpdpbusd intrinsic).
 * Built by build.ps1 with the machine's gcc; loaded through NativeLibrary; the managed kernels are the fallback.
 * The kernel computes raw u8 x s8 dot products; the caller applies the zero-point corrections (exact in int32). */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <immintrin.h>

int ptq_version(void) { return 5; }

int ptq_has_vnni(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512f");
}

/* GEMM register tiles: R rows of A (4 bytes of each broadcast per k quad) x C blocks of 16 columns of B (one
 * 64-byte vector each), R * C accumulators in named registers; written out per (R, C) because gcc keeps an array of
 * them in memory. Per k quad: C vector loads and R broadcasts feed R * C vpdpbusd. */

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_tile_8x3(const uint8_t *a, int lda, int kq, const int8_t *b, int32_t *c, int ldc)
{
    const __m512i z = _mm512_setzero_si512();
    const int32_t *a0 = (const int32_t *)(a + (int64_t)0 * lda);
    const int32_t *a1 = (const int32_t *)(a + (int64_t)1 * lda);
    const int32_t *a2 = (const int32_t *)(a + (int64_t)2 * lda);
    const int32_t *a3 = (const int32_t *)(a + (int64_t)3 * lda);
    const int32_t *a4 = (const int32_t *)(a + (int64_t)4 * lda);
    const int32_t *a5 = (const int32_t *)(a + (int64_t)5 * lda);
    const int32_t *a6 = (const int32_t *)(a + (int64_t)6 * lda);
    const int32_t *a7 = (const int32_t *)(a + (int64_t)7 * lda);
    const int8_t *b0 = b + (int64_t)0 * kq * 64;
    const int8_t *b1 = b + (int64_t)1 * kq * 64;
    const int8_t *b2 = b + (int64_t)2 * kq * 64;
    __m512i c00 = z, c01 = z, c02 = z;
    __m512i c10 = z, c11 = z, c12 = z;
    __m512i c20 = z, c21 = z, c22 = z;
    __m512i c30 = z, c31 = z, c32 = z;
    __m512i c40 = z, c41 = z, c42 = z;
    __m512i c50 = z, c51 = z, c52 = z;
    __m512i c60 = z, c61 = z, c62 = z;
    __m512i c70 = z, c71 = z, c72 = z;
    for (int q = 0; q < kq; q++) {
        __m512i y0 = _mm512_loadu_si512(b0 + (int64_t)q * 64); __m512i y1 = _mm512_loadu_si512(b1 + (int64_t)q * 64); __m512i y2 = _mm512_loadu_si512(b2 + (int64_t)q * 64);
        __m512i x;
        x = _mm512_set1_epi32(a0[q]); c00 = _mm512_dpbusd_epi32(c00, x, y0); c01 = _mm512_dpbusd_epi32(c01, x, y1); c02 = _mm512_dpbusd_epi32(c02, x, y2);
        x = _mm512_set1_epi32(a1[q]); c10 = _mm512_dpbusd_epi32(c10, x, y0); c11 = _mm512_dpbusd_epi32(c11, x, y1); c12 = _mm512_dpbusd_epi32(c12, x, y2);
        x = _mm512_set1_epi32(a2[q]); c20 = _mm512_dpbusd_epi32(c20, x, y0); c21 = _mm512_dpbusd_epi32(c21, x, y1); c22 = _mm512_dpbusd_epi32(c22, x, y2);
        x = _mm512_set1_epi32(a3[q]); c30 = _mm512_dpbusd_epi32(c30, x, y0); c31 = _mm512_dpbusd_epi32(c31, x, y1); c32 = _mm512_dpbusd_epi32(c32, x, y2);
        x = _mm512_set1_epi32(a4[q]); c40 = _mm512_dpbusd_epi32(c40, x, y0); c41 = _mm512_dpbusd_epi32(c41, x, y1); c42 = _mm512_dpbusd_epi32(c42, x, y2);
        x = _mm512_set1_epi32(a5[q]); c50 = _mm512_dpbusd_epi32(c50, x, y0); c51 = _mm512_dpbusd_epi32(c51, x, y1); c52 = _mm512_dpbusd_epi32(c52, x, y2);
        x = _mm512_set1_epi32(a6[q]); c60 = _mm512_dpbusd_epi32(c60, x, y0); c61 = _mm512_dpbusd_epi32(c61, x, y1); c62 = _mm512_dpbusd_epi32(c62, x, y2);
        x = _mm512_set1_epi32(a7[q]); c70 = _mm512_dpbusd_epi32(c70, x, y0); c71 = _mm512_dpbusd_epi32(c71, x, y1); c72 = _mm512_dpbusd_epi32(c72, x, y2);
    }
    _mm512_storeu_si512(c + (int64_t)0 * ldc + 0, c00); _mm512_storeu_si512(c + (int64_t)0 * ldc + 16, c01); _mm512_storeu_si512(c + (int64_t)0 * ldc + 32, c02);
    _mm512_storeu_si512(c + (int64_t)1 * ldc + 0, c10); _mm512_storeu_si512(c + (int64_t)1 * ldc + 16, c11); _mm512_storeu_si512(c + (int64_t)1 * ldc + 32, c12);
    _mm512_storeu_si512(c + (int64_t)2 * ldc + 0, c20); _mm512_storeu_si512(c + (int64_t)2 * ldc + 16, c21); _mm512_storeu_si512(c + (int64_t)2 * ldc + 32, c22);
    _mm512_storeu_si512(c + (int64_t)3 * ldc + 0, c30); _mm512_storeu_si512(c + (int64_t)3 * ldc + 16, c31); _mm512_storeu_si512(c + (int64_t)3 * ldc + 32, c32);
    _mm512_storeu_si512(c + (int64_t)4 * ldc + 0, c40); _mm512_storeu_si512(c + (int64_t)4 * ldc + 16, c41); _mm512_storeu_si512(c + (int64_t)4 * ldc + 32, c42);
    _mm512_storeu_si512(c + (int64_t)5 * ldc + 0, c50); _mm512_storeu_si512(c + (int64_t)5 * ldc + 16, c51); _mm512_storeu_si512(c + (int64_t)5 * ldc + 32, c52);
    _mm512_storeu_si512(c + (int64_t)6 * ldc + 0, c60); _mm512_storeu_si512(c + (int64_t)6 * ldc + 16, c61); _mm512_storeu_si512(c + (int64_t)6 * ldc + 32, c62);
    _mm512_storeu_si512(c + (int64_t)7 * ldc + 0, c70); _mm512_storeu_si512(c + (int64_t)7 * ldc + 16, c71); _mm512_storeu_si512(c + (int64_t)7 * ldc + 32, c72);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_tile_8x2(const uint8_t *a, int lda, int kq, const int8_t *b, int32_t *c, int ldc)
{
    const __m512i z = _mm512_setzero_si512();
    const int32_t *a0 = (const int32_t *)(a + (int64_t)0 * lda);
    const int32_t *a1 = (const int32_t *)(a + (int64_t)1 * lda);
    const int32_t *a2 = (const int32_t *)(a + (int64_t)2 * lda);
    const int32_t *a3 = (const int32_t *)(a + (int64_t)3 * lda);
    const int32_t *a4 = (const int32_t *)(a + (int64_t)4 * lda);
    const int32_t *a5 = (const int32_t *)(a + (int64_t)5 * lda);
    const int32_t *a6 = (const int32_t *)(a + (int64_t)6 * lda);
    const int32_t *a7 = (const int32_t *)(a + (int64_t)7 * lda);
    const int8_t *b0 = b + (int64_t)0 * kq * 64;
    const int8_t *b1 = b + (int64_t)1 * kq * 64;
    __m512i c00 = z, c01 = z;
    __m512i c10 = z, c11 = z;
    __m512i c20 = z, c21 = z;
    __m512i c30 = z, c31 = z;
    __m512i c40 = z, c41 = z;
    __m512i c50 = z, c51 = z;
    __m512i c60 = z, c61 = z;
    __m512i c70 = z, c71 = z;
    for (int q = 0; q < kq; q++) {
        __m512i y0 = _mm512_loadu_si512(b0 + (int64_t)q * 64); __m512i y1 = _mm512_loadu_si512(b1 + (int64_t)q * 64);
        __m512i x;
        x = _mm512_set1_epi32(a0[q]); c00 = _mm512_dpbusd_epi32(c00, x, y0); c01 = _mm512_dpbusd_epi32(c01, x, y1);
        x = _mm512_set1_epi32(a1[q]); c10 = _mm512_dpbusd_epi32(c10, x, y0); c11 = _mm512_dpbusd_epi32(c11, x, y1);
        x = _mm512_set1_epi32(a2[q]); c20 = _mm512_dpbusd_epi32(c20, x, y0); c21 = _mm512_dpbusd_epi32(c21, x, y1);
        x = _mm512_set1_epi32(a3[q]); c30 = _mm512_dpbusd_epi32(c30, x, y0); c31 = _mm512_dpbusd_epi32(c31, x, y1);
        x = _mm512_set1_epi32(a4[q]); c40 = _mm512_dpbusd_epi32(c40, x, y0); c41 = _mm512_dpbusd_epi32(c41, x, y1);
        x = _mm512_set1_epi32(a5[q]); c50 = _mm512_dpbusd_epi32(c50, x, y0); c51 = _mm512_dpbusd_epi32(c51, x, y1);
        x = _mm512_set1_epi32(a6[q]); c60 = _mm512_dpbusd_epi32(c60, x, y0); c61 = _mm512_dpbusd_epi32(c61, x, y1);
        x = _mm512_set1_epi32(a7[q]); c70 = _mm512_dpbusd_epi32(c70, x, y0); c71 = _mm512_dpbusd_epi32(c71, x, y1);
    }
    _mm512_storeu_si512(c + (int64_t)0 * ldc + 0, c00); _mm512_storeu_si512(c + (int64_t)0 * ldc + 16, c01);
    _mm512_storeu_si512(c + (int64_t)1 * ldc + 0, c10); _mm512_storeu_si512(c + (int64_t)1 * ldc + 16, c11);
    _mm512_storeu_si512(c + (int64_t)2 * ldc + 0, c20); _mm512_storeu_si512(c + (int64_t)2 * ldc + 16, c21);
    _mm512_storeu_si512(c + (int64_t)3 * ldc + 0, c30); _mm512_storeu_si512(c + (int64_t)3 * ldc + 16, c31);
    _mm512_storeu_si512(c + (int64_t)4 * ldc + 0, c40); _mm512_storeu_si512(c + (int64_t)4 * ldc + 16, c41);
    _mm512_storeu_si512(c + (int64_t)5 * ldc + 0, c50); _mm512_storeu_si512(c + (int64_t)5 * ldc + 16, c51);
    _mm512_storeu_si512(c + (int64_t)6 * ldc + 0, c60); _mm512_storeu_si512(c + (int64_t)6 * ldc + 16, c61);
    _mm512_storeu_si512(c + (int64_t)7 * ldc + 0, c70); _mm512_storeu_si512(c + (int64_t)7 * ldc + 16, c71);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_tile_8x1(const uint8_t *a, int lda, int kq, const int8_t *b, int32_t *c, int ldc)
{
    const __m512i z = _mm512_setzero_si512();
    const int32_t *a0 = (const int32_t *)(a + (int64_t)0 * lda);
    const int32_t *a1 = (const int32_t *)(a + (int64_t)1 * lda);
    const int32_t *a2 = (const int32_t *)(a + (int64_t)2 * lda);
    const int32_t *a3 = (const int32_t *)(a + (int64_t)3 * lda);
    const int32_t *a4 = (const int32_t *)(a + (int64_t)4 * lda);
    const int32_t *a5 = (const int32_t *)(a + (int64_t)5 * lda);
    const int32_t *a6 = (const int32_t *)(a + (int64_t)6 * lda);
    const int32_t *a7 = (const int32_t *)(a + (int64_t)7 * lda);
    const int8_t *b0 = b + (int64_t)0 * kq * 64;
    __m512i c00 = z;
    __m512i c10 = z;
    __m512i c20 = z;
    __m512i c30 = z;
    __m512i c40 = z;
    __m512i c50 = z;
    __m512i c60 = z;
    __m512i c70 = z;
    for (int q = 0; q < kq; q++) {
        __m512i y0 = _mm512_loadu_si512(b0 + (int64_t)q * 64);
        __m512i x;
        x = _mm512_set1_epi32(a0[q]); c00 = _mm512_dpbusd_epi32(c00, x, y0);
        x = _mm512_set1_epi32(a1[q]); c10 = _mm512_dpbusd_epi32(c10, x, y0);
        x = _mm512_set1_epi32(a2[q]); c20 = _mm512_dpbusd_epi32(c20, x, y0);
        x = _mm512_set1_epi32(a3[q]); c30 = _mm512_dpbusd_epi32(c30, x, y0);
        x = _mm512_set1_epi32(a4[q]); c40 = _mm512_dpbusd_epi32(c40, x, y0);
        x = _mm512_set1_epi32(a5[q]); c50 = _mm512_dpbusd_epi32(c50, x, y0);
        x = _mm512_set1_epi32(a6[q]); c60 = _mm512_dpbusd_epi32(c60, x, y0);
        x = _mm512_set1_epi32(a7[q]); c70 = _mm512_dpbusd_epi32(c70, x, y0);
    }
    _mm512_storeu_si512(c + (int64_t)0 * ldc + 0, c00);
    _mm512_storeu_si512(c + (int64_t)1 * ldc + 0, c10);
    _mm512_storeu_si512(c + (int64_t)2 * ldc + 0, c20);
    _mm512_storeu_si512(c + (int64_t)3 * ldc + 0, c30);
    _mm512_storeu_si512(c + (int64_t)4 * ldc + 0, c40);
    _mm512_storeu_si512(c + (int64_t)5 * ldc + 0, c50);
    _mm512_storeu_si512(c + (int64_t)6 * ldc + 0, c60);
    _mm512_storeu_si512(c + (int64_t)7 * ldc + 0, c70);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_tile_4x3(const uint8_t *a, int lda, int kq, const int8_t *b, int32_t *c, int ldc)
{
    const __m512i z = _mm512_setzero_si512();
    const int32_t *a0 = (const int32_t *)(a + (int64_t)0 * lda);
    const int32_t *a1 = (const int32_t *)(a + (int64_t)1 * lda);
    const int32_t *a2 = (const int32_t *)(a + (int64_t)2 * lda);
    const int32_t *a3 = (const int32_t *)(a + (int64_t)3 * lda);
    const int8_t *b0 = b + (int64_t)0 * kq * 64;
    const int8_t *b1 = b + (int64_t)1 * kq * 64;
    const int8_t *b2 = b + (int64_t)2 * kq * 64;
    __m512i c00 = z, c01 = z, c02 = z;
    __m512i c10 = z, c11 = z, c12 = z;
    __m512i c20 = z, c21 = z, c22 = z;
    __m512i c30 = z, c31 = z, c32 = z;
    for (int q = 0; q < kq; q++) {
        __m512i y0 = _mm512_loadu_si512(b0 + (int64_t)q * 64); __m512i y1 = _mm512_loadu_si512(b1 + (int64_t)q * 64); __m512i y2 = _mm512_loadu_si512(b2 + (int64_t)q * 64);
        __m512i x;
        x = _mm512_set1_epi32(a0[q]); c00 = _mm512_dpbusd_epi32(c00, x, y0); c01 = _mm512_dpbusd_epi32(c01, x, y1); c02 = _mm512_dpbusd_epi32(c02, x, y2);
        x = _mm512_set1_epi32(a1[q]); c10 = _mm512_dpbusd_epi32(c10, x, y0); c11 = _mm512_dpbusd_epi32(c11, x, y1); c12 = _mm512_dpbusd_epi32(c12, x, y2);
        x = _mm512_set1_epi32(a2[q]); c20 = _mm512_dpbusd_epi32(c20, x, y0); c21 = _mm512_dpbusd_epi32(c21, x, y1); c22 = _mm512_dpbusd_epi32(c22, x, y2);
        x = _mm512_set1_epi32(a3[q]); c30 = _mm512_dpbusd_epi32(c30, x, y0); c31 = _mm512_dpbusd_epi32(c31, x, y1); c32 = _mm512_dpbusd_epi32(c32, x, y2);
    }
    _mm512_storeu_si512(c + (int64_t)0 * ldc + 0, c00); _mm512_storeu_si512(c + (int64_t)0 * ldc + 16, c01); _mm512_storeu_si512(c + (int64_t)0 * ldc + 32, c02);
    _mm512_storeu_si512(c + (int64_t)1 * ldc + 0, c10); _mm512_storeu_si512(c + (int64_t)1 * ldc + 16, c11); _mm512_storeu_si512(c + (int64_t)1 * ldc + 32, c12);
    _mm512_storeu_si512(c + (int64_t)2 * ldc + 0, c20); _mm512_storeu_si512(c + (int64_t)2 * ldc + 16, c21); _mm512_storeu_si512(c + (int64_t)2 * ldc + 32, c22);
    _mm512_storeu_si512(c + (int64_t)3 * ldc + 0, c30); _mm512_storeu_si512(c + (int64_t)3 * ldc + 16, c31); _mm512_storeu_si512(c + (int64_t)3 * ldc + 32, c32);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_tile_4x2(const uint8_t *a, int lda, int kq, const int8_t *b, int32_t *c, int ldc)
{
    const __m512i z = _mm512_setzero_si512();
    const int32_t *a0 = (const int32_t *)(a + (int64_t)0 * lda);
    const int32_t *a1 = (const int32_t *)(a + (int64_t)1 * lda);
    const int32_t *a2 = (const int32_t *)(a + (int64_t)2 * lda);
    const int32_t *a3 = (const int32_t *)(a + (int64_t)3 * lda);
    const int8_t *b0 = b + (int64_t)0 * kq * 64;
    const int8_t *b1 = b + (int64_t)1 * kq * 64;
    __m512i c00 = z, c01 = z;
    __m512i c10 = z, c11 = z;
    __m512i c20 = z, c21 = z;
    __m512i c30 = z, c31 = z;
    for (int q = 0; q < kq; q++) {
        __m512i y0 = _mm512_loadu_si512(b0 + (int64_t)q * 64); __m512i y1 = _mm512_loadu_si512(b1 + (int64_t)q * 64);
        __m512i x;
        x = _mm512_set1_epi32(a0[q]); c00 = _mm512_dpbusd_epi32(c00, x, y0); c01 = _mm512_dpbusd_epi32(c01, x, y1);
        x = _mm512_set1_epi32(a1[q]); c10 = _mm512_dpbusd_epi32(c10, x, y0); c11 = _mm512_dpbusd_epi32(c11, x, y1);
        x = _mm512_set1_epi32(a2[q]); c20 = _mm512_dpbusd_epi32(c20, x, y0); c21 = _mm512_dpbusd_epi32(c21, x, y1);
        x = _mm512_set1_epi32(a3[q]); c30 = _mm512_dpbusd_epi32(c30, x, y0); c31 = _mm512_dpbusd_epi32(c31, x, y1);
    }
    _mm512_storeu_si512(c + (int64_t)0 * ldc + 0, c00); _mm512_storeu_si512(c + (int64_t)0 * ldc + 16, c01);
    _mm512_storeu_si512(c + (int64_t)1 * ldc + 0, c10); _mm512_storeu_si512(c + (int64_t)1 * ldc + 16, c11);
    _mm512_storeu_si512(c + (int64_t)2 * ldc + 0, c20); _mm512_storeu_si512(c + (int64_t)2 * ldc + 16, c21);
    _mm512_storeu_si512(c + (int64_t)3 * ldc + 0, c30); _mm512_storeu_si512(c + (int64_t)3 * ldc + 16, c31);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_tile_4x1(const uint8_t *a, int lda, int kq, const int8_t *b, int32_t *c, int ldc)
{
    const __m512i z = _mm512_setzero_si512();
    const int32_t *a0 = (const int32_t *)(a + (int64_t)0 * lda);
    const int32_t *a1 = (const int32_t *)(a + (int64_t)1 * lda);
    const int32_t *a2 = (const int32_t *)(a + (int64_t)2 * lda);
    const int32_t *a3 = (const int32_t *)(a + (int64_t)3 * lda);
    const int8_t *b0 = b + (int64_t)0 * kq * 64;
    __m512i c00 = z;
    __m512i c10 = z;
    __m512i c20 = z;
    __m512i c30 = z;
    for (int q = 0; q < kq; q++) {
        __m512i y0 = _mm512_loadu_si512(b0 + (int64_t)q * 64);
        __m512i x;
        x = _mm512_set1_epi32(a0[q]); c00 = _mm512_dpbusd_epi32(c00, x, y0);
        x = _mm512_set1_epi32(a1[q]); c10 = _mm512_dpbusd_epi32(c10, x, y0);
        x = _mm512_set1_epi32(a2[q]); c20 = _mm512_dpbusd_epi32(c20, x, y0);
        x = _mm512_set1_epi32(a3[q]); c30 = _mm512_dpbusd_epi32(c30, x, y0);
    }
    _mm512_storeu_si512(c + (int64_t)0 * ldc + 0, c00);
    _mm512_storeu_si512(c + (int64_t)1 * ldc + 0, c10);
    _mm512_storeu_si512(c + (int64_t)2 * ldc + 0, c20);
    _mm512_storeu_si512(c + (int64_t)3 * ldc + 0, c30);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_tile_2x3(const uint8_t *a, int lda, int kq, const int8_t *b, int32_t *c, int ldc)
{
    const __m512i z = _mm512_setzero_si512();
    const int32_t *a0 = (const int32_t *)(a + (int64_t)0 * lda);
    const int32_t *a1 = (const int32_t *)(a + (int64_t)1 * lda);
    const int8_t *b0 = b + (int64_t)0 * kq * 64;
    const int8_t *b1 = b + (int64_t)1 * kq * 64;
    const int8_t *b2 = b + (int64_t)2 * kq * 64;
    __m512i c00 = z, c01 = z, c02 = z;
    __m512i c10 = z, c11 = z, c12 = z;
    for (int q = 0; q < kq; q++) {
        __m512i y0 = _mm512_loadu_si512(b0 + (int64_t)q * 64); __m512i y1 = _mm512_loadu_si512(b1 + (int64_t)q * 64); __m512i y2 = _mm512_loadu_si512(b2 + (int64_t)q * 64);
        __m512i x;
        x = _mm512_set1_epi32(a0[q]); c00 = _mm512_dpbusd_epi32(c00, x, y0); c01 = _mm512_dpbusd_epi32(c01, x, y1); c02 = _mm512_dpbusd_epi32(c02, x, y2);
        x = _mm512_set1_epi32(a1[q]); c10 = _mm512_dpbusd_epi32(c10, x, y0); c11 = _mm512_dpbusd_epi32(c11, x, y1); c12 = _mm512_dpbusd_epi32(c12, x, y2);
    }
    _mm512_storeu_si512(c + (int64_t)0 * ldc + 0, c00); _mm512_storeu_si512(c + (int64_t)0 * ldc + 16, c01); _mm512_storeu_si512(c + (int64_t)0 * ldc + 32, c02);
    _mm512_storeu_si512(c + (int64_t)1 * ldc + 0, c10); _mm512_storeu_si512(c + (int64_t)1 * ldc + 16, c11); _mm512_storeu_si512(c + (int64_t)1 * ldc + 32, c12);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_tile_2x2(const uint8_t *a, int lda, int kq, const int8_t *b, int32_t *c, int ldc)
{
    const __m512i z = _mm512_setzero_si512();
    const int32_t *a0 = (const int32_t *)(a + (int64_t)0 * lda);
    const int32_t *a1 = (const int32_t *)(a + (int64_t)1 * lda);
    const int8_t *b0 = b + (int64_t)0 * kq * 64;
    const int8_t *b1 = b + (int64_t)1 * kq * 64;
    __m512i c00 = z, c01 = z;
    __m512i c10 = z, c11 = z;
    for (int q = 0; q < kq; q++) {
        __m512i y0 = _mm512_loadu_si512(b0 + (int64_t)q * 64); __m512i y1 = _mm512_loadu_si512(b1 + (int64_t)q * 64);
        __m512i x;
        x = _mm512_set1_epi32(a0[q]); c00 = _mm512_dpbusd_epi32(c00, x, y0); c01 = _mm512_dpbusd_epi32(c01, x, y1);
        x = _mm512_set1_epi32(a1[q]); c10 = _mm512_dpbusd_epi32(c10, x, y0); c11 = _mm512_dpbusd_epi32(c11, x, y1);
    }
    _mm512_storeu_si512(c + (int64_t)0 * ldc + 0, c00); _mm512_storeu_si512(c + (int64_t)0 * ldc + 16, c01);
    _mm512_storeu_si512(c + (int64_t)1 * ldc + 0, c10); _mm512_storeu_si512(c + (int64_t)1 * ldc + 16, c11);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_tile_2x1(const uint8_t *a, int lda, int kq, const int8_t *b, int32_t *c, int ldc)
{
    const __m512i z = _mm512_setzero_si512();
    const int32_t *a0 = (const int32_t *)(a + (int64_t)0 * lda);
    const int32_t *a1 = (const int32_t *)(a + (int64_t)1 * lda);
    const int8_t *b0 = b + (int64_t)0 * kq * 64;
    __m512i c00 = z;
    __m512i c10 = z;
    for (int q = 0; q < kq; q++) {
        __m512i y0 = _mm512_loadu_si512(b0 + (int64_t)q * 64);
        __m512i x;
        x = _mm512_set1_epi32(a0[q]); c00 = _mm512_dpbusd_epi32(c00, x, y0);
        x = _mm512_set1_epi32(a1[q]); c10 = _mm512_dpbusd_epi32(c10, x, y0);
    }
    _mm512_storeu_si512(c + (int64_t)0 * ldc + 0, c00);
    _mm512_storeu_si512(c + (int64_t)1 * ldc + 0, c10);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_tile_1x3(const uint8_t *a, int lda, int kq, const int8_t *b, int32_t *c, int ldc)
{
    const __m512i z = _mm512_setzero_si512();
    const int32_t *a0 = (const int32_t *)(a + (int64_t)0 * lda);
    const int8_t *b0 = b + (int64_t)0 * kq * 64;
    const int8_t *b1 = b + (int64_t)1 * kq * 64;
    const int8_t *b2 = b + (int64_t)2 * kq * 64;
    __m512i c00 = z, c01 = z, c02 = z;
    for (int q = 0; q < kq; q++) {
        __m512i y0 = _mm512_loadu_si512(b0 + (int64_t)q * 64); __m512i y1 = _mm512_loadu_si512(b1 + (int64_t)q * 64); __m512i y2 = _mm512_loadu_si512(b2 + (int64_t)q * 64);
        __m512i x;
        x = _mm512_set1_epi32(a0[q]); c00 = _mm512_dpbusd_epi32(c00, x, y0); c01 = _mm512_dpbusd_epi32(c01, x, y1); c02 = _mm512_dpbusd_epi32(c02, x, y2);
    }
    _mm512_storeu_si512(c + (int64_t)0 * ldc + 0, c00); _mm512_storeu_si512(c + (int64_t)0 * ldc + 16, c01); _mm512_storeu_si512(c + (int64_t)0 * ldc + 32, c02);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_tile_1x2(const uint8_t *a, int lda, int kq, const int8_t *b, int32_t *c, int ldc)
{
    const __m512i z = _mm512_setzero_si512();
    const int32_t *a0 = (const int32_t *)(a + (int64_t)0 * lda);
    const int8_t *b0 = b + (int64_t)0 * kq * 64;
    const int8_t *b1 = b + (int64_t)1 * kq * 64;
    __m512i c00 = z, c01 = z;
    for (int q = 0; q < kq; q++) {
        __m512i y0 = _mm512_loadu_si512(b0 + (int64_t)q * 64); __m512i y1 = _mm512_loadu_si512(b1 + (int64_t)q * 64);
        __m512i x;
        x = _mm512_set1_epi32(a0[q]); c00 = _mm512_dpbusd_epi32(c00, x, y0); c01 = _mm512_dpbusd_epi32(c01, x, y1);
    }
    _mm512_storeu_si512(c + (int64_t)0 * ldc + 0, c00); _mm512_storeu_si512(c + (int64_t)0 * ldc + 16, c01);
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void gemm_tile_1x1(const uint8_t *a, int lda, int kq, const int8_t *b, int32_t *c, int ldc)
{
    const __m512i z = _mm512_setzero_si512();
    const int32_t *a0 = (const int32_t *)(a + (int64_t)0 * lda);
    const int8_t *b0 = b + (int64_t)0 * kq * 64;
    __m512i c00 = z;
    for (int q = 0; q < kq; q++) {
        __m512i y0 = _mm512_loadu_si512(b0 + (int64_t)q * 64);
        __m512i x;
        x = _mm512_set1_epi32(a0[q]); c00 = _mm512_dpbusd_epi32(c00, x, y0);
    }
    _mm512_storeu_si512(c + (int64_t)0 * ldc + 0, c00);
}

/* a: rows r0..r1 of an m x (kq*4) u8 matrix (zero padded); quads: [blocks][kq][16][4] s8;
 * c: m x (blocks*16) int32, row stride ldc. Column panels of 3 blocks (a panel of B stays in L1/L2 while every row
 * block streams past it), rows 8 at a time. */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
void ptq_gemm_u8s8_vnni(const uint8_t *a, int r0, int r1, int kq, const int8_t *quads, int blocks, int32_t *c, int ldc)
{
    const int lda = kq * 4;
    for (int nb = 0; nb < blocks; nb += 3) {
        int cols = blocks - nb < 3 ? blocks - nb : 3;
        const int8_t *b = quads + (int64_t)nb * kq * 64;
        for (int i = r0; i < r1;) {
            int rows = r1 - i >= 8 ? 8 : r1 - i >= 4 ? 4 : r1 - i >= 2 ? 2 : 1;
            const uint8_t *ap = a + (int64_t)i * lda;
            int32_t *cp = c + (int64_t)i * ldc + nb * 16;
            switch (rows * 4 + cols) {
            case 35: gemm_tile_8x3(ap, lda, kq, b, cp, ldc); break;
            case 34: gemm_tile_8x2(ap, lda, kq, b, cp, ldc); break;
            case 33: gemm_tile_8x1(ap, lda, kq, b, cp, ldc); break;
            case 19: gemm_tile_4x3(ap, lda, kq, b, cp, ldc); break;
            case 18: gemm_tile_4x2(ap, lda, kq, b, cp, ldc); break;
            case 17: gemm_tile_4x1(ap, lda, kq, b, cp, ldc); break;
            case 11: gemm_tile_2x3(ap, lda, kq, b, cp, ldc); break;
            case 10: gemm_tile_2x2(ap, lda, kq, b, cp, ldc); break;
            case 9: gemm_tile_2x1(ap, lda, kq, b, cp, ldc); break;
            case 7: gemm_tile_1x3(ap, lda, kq, b, cp, ldc); break;
            case 6: gemm_tile_1x2(ap, lda, kq, b, cp, ldc); break;
            case 5: gemm_tile_1x1(ap, lda, kq, b, cp, ldc); break;
            }
            i += rows;
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
void ptq_conv_pack_input(const uint8_t *x, int channels, int h, int w, int pt, int pl, int hp, int wp,
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
} ptq_conv_args;

#define CONV_TILE 48   /* pixels per tile: 3 blocks of 16 */
#define CONV_ROWS 8    /* output channels per register block */

int ptq_conv_tiles(const ptq_conv_args *a)
{
    int span = a->sh == 1 && a->sw == 1 ? (a->oh - 1) * a->wp + a->ow : a->oh * a->ow;
    return (span + CONV_TILE - 1) / CONV_TILE;
}

/* Bytes of per-thread workspace ptq_conv_vnni needs. */
int64_t ptq_conv_workspace(const ptq_conv_args *a) { return (int64_t)a->kq * (8 + 4 + CONV_TILE * 4) + 128; }

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
static inline void conv_store(const ptq_conv_args *a, __m512i v, int o, int b, const __mmask16 *mask, const int *start, const __m512i *xsum)
{
    if (!mask[b] || o >= a->oc) return;
    if (a->wzero) v = _mm512_sub_epi32(v, _mm512_mullo_epi32(_mm512_set1_epi32(a->wzero[o]), xsum[b]));
    v = _mm512_add_epi32(v, _mm512_set1_epi32(a->corr[o]));
    int64_t plane = (int64_t)o * a->oh * a->ow + start[b];
    if (!a->mult) { _mm512_mask_compressstoreu_epi32((int32_t *)a->y + plane, mask[b], v); return; }
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(a->mult[o]));
    f = _mm512_roundscale_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    f = _mm512_add_ps(f, _mm512_set1_ps(a->zp));
    f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(a->qlo)), _mm512_set1_ps(a->qhi));
    __m512i r = _mm512_maskz_compress_epi32(mask[b], _mm512_cvtps_epi32(f));
    __m128i bytes = a->out_signed ? _mm512_cvtsepi32_epi8(r) : _mm512_cvtusepi32_epi8(r);
    int cnt = __builtin_popcount(mask[b]);
    _mm_mask_storeu_epi8((uint8_t *)a->y + plane, (__mmask16)((1u << cnt) - 1), bytes);
}

/* 8 output channels from o x NB blocks of 16 pixels, accumulators in named registers (24 at most); written out
 * for NB = 3, 2, 1 because gcc keeps an array of them in memory. */

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
static void conv_rows8_3(const ptq_conv_args *a, const uint8_t *const *xp, int o, const __mmask16 *mask, const int *start, const __m512i *xsum)
{
    const int kq = a->kq;
    const int32_t *w0 = (const int32_t *)(a->w + (int64_t)o * kq * 4);
    const int32_t *w1 = w0 + kq;
    const int32_t *w2 = w1 + kq;
    const int32_t *w3 = w2 + kq;
    const int32_t *w4 = w3 + kq;
    const int32_t *w5 = w4 + kq;
    const int32_t *w6 = w5 + kq;
    const int32_t *w7 = w6 + kq;
    const __m512i z = _mm512_setzero_si512();
    __m512i c00 = z, c01 = z, c02 = z;
    __m512i c10 = z, c11 = z, c12 = z;
    __m512i c20 = z, c21 = z, c22 = z;
    __m512i c30 = z, c31 = z, c32 = z;
    __m512i c40 = z, c41 = z, c42 = z;
    __m512i c50 = z, c51 = z, c52 = z;
    __m512i c60 = z, c61 = z, c62 = z;
    __m512i c70 = z, c71 = z, c72 = z;
    for (int q = 0; q < kq; q++) {
        const uint8_t *p = xp[q];
        __m512i x0 = _mm512_loadu_si512(p + 0); __m512i x1 = _mm512_loadu_si512(p + 64); __m512i x2 = _mm512_loadu_si512(p + 128);
        __m512i wv;
        wv = _mm512_set1_epi32(w0[q]); c00 = _mm512_dpbusd_epi32(c00, x0, wv); c01 = _mm512_dpbusd_epi32(c01, x1, wv); c02 = _mm512_dpbusd_epi32(c02, x2, wv);
        wv = _mm512_set1_epi32(w1[q]); c10 = _mm512_dpbusd_epi32(c10, x0, wv); c11 = _mm512_dpbusd_epi32(c11, x1, wv); c12 = _mm512_dpbusd_epi32(c12, x2, wv);
        wv = _mm512_set1_epi32(w2[q]); c20 = _mm512_dpbusd_epi32(c20, x0, wv); c21 = _mm512_dpbusd_epi32(c21, x1, wv); c22 = _mm512_dpbusd_epi32(c22, x2, wv);
        wv = _mm512_set1_epi32(w3[q]); c30 = _mm512_dpbusd_epi32(c30, x0, wv); c31 = _mm512_dpbusd_epi32(c31, x1, wv); c32 = _mm512_dpbusd_epi32(c32, x2, wv);
        wv = _mm512_set1_epi32(w4[q]); c40 = _mm512_dpbusd_epi32(c40, x0, wv); c41 = _mm512_dpbusd_epi32(c41, x1, wv); c42 = _mm512_dpbusd_epi32(c42, x2, wv);
        wv = _mm512_set1_epi32(w5[q]); c50 = _mm512_dpbusd_epi32(c50, x0, wv); c51 = _mm512_dpbusd_epi32(c51, x1, wv); c52 = _mm512_dpbusd_epi32(c52, x2, wv);
        wv = _mm512_set1_epi32(w6[q]); c60 = _mm512_dpbusd_epi32(c60, x0, wv); c61 = _mm512_dpbusd_epi32(c61, x1, wv); c62 = _mm512_dpbusd_epi32(c62, x2, wv);
        wv = _mm512_set1_epi32(w7[q]); c70 = _mm512_dpbusd_epi32(c70, x0, wv); c71 = _mm512_dpbusd_epi32(c71, x1, wv); c72 = _mm512_dpbusd_epi32(c72, x2, wv);
    }
    conv_store(a, c00, o + 0, 0, mask, start, xsum); conv_store(a, c01, o + 0, 1, mask, start, xsum); conv_store(a, c02, o + 0, 2, mask, start, xsum);
    conv_store(a, c10, o + 1, 0, mask, start, xsum); conv_store(a, c11, o + 1, 1, mask, start, xsum); conv_store(a, c12, o + 1, 2, mask, start, xsum);
    conv_store(a, c20, o + 2, 0, mask, start, xsum); conv_store(a, c21, o + 2, 1, mask, start, xsum); conv_store(a, c22, o + 2, 2, mask, start, xsum);
    conv_store(a, c30, o + 3, 0, mask, start, xsum); conv_store(a, c31, o + 3, 1, mask, start, xsum); conv_store(a, c32, o + 3, 2, mask, start, xsum);
    conv_store(a, c40, o + 4, 0, mask, start, xsum); conv_store(a, c41, o + 4, 1, mask, start, xsum); conv_store(a, c42, o + 4, 2, mask, start, xsum);
    conv_store(a, c50, o + 5, 0, mask, start, xsum); conv_store(a, c51, o + 5, 1, mask, start, xsum); conv_store(a, c52, o + 5, 2, mask, start, xsum);
    conv_store(a, c60, o + 6, 0, mask, start, xsum); conv_store(a, c61, o + 6, 1, mask, start, xsum); conv_store(a, c62, o + 6, 2, mask, start, xsum);
    conv_store(a, c70, o + 7, 0, mask, start, xsum); conv_store(a, c71, o + 7, 1, mask, start, xsum); conv_store(a, c72, o + 7, 2, mask, start, xsum);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
static void conv_rows8_2(const ptq_conv_args *a, const uint8_t *const *xp, int o, const __mmask16 *mask, const int *start, const __m512i *xsum)
{
    const int kq = a->kq;
    const int32_t *w0 = (const int32_t *)(a->w + (int64_t)o * kq * 4);
    const int32_t *w1 = w0 + kq;
    const int32_t *w2 = w1 + kq;
    const int32_t *w3 = w2 + kq;
    const int32_t *w4 = w3 + kq;
    const int32_t *w5 = w4 + kq;
    const int32_t *w6 = w5 + kq;
    const int32_t *w7 = w6 + kq;
    const __m512i z = _mm512_setzero_si512();
    __m512i c00 = z, c01 = z;
    __m512i c10 = z, c11 = z;
    __m512i c20 = z, c21 = z;
    __m512i c30 = z, c31 = z;
    __m512i c40 = z, c41 = z;
    __m512i c50 = z, c51 = z;
    __m512i c60 = z, c61 = z;
    __m512i c70 = z, c71 = z;
    for (int q = 0; q < kq; q++) {
        const uint8_t *p = xp[q];
        __m512i x0 = _mm512_loadu_si512(p + 0); __m512i x1 = _mm512_loadu_si512(p + 64);
        __m512i wv;
        wv = _mm512_set1_epi32(w0[q]); c00 = _mm512_dpbusd_epi32(c00, x0, wv); c01 = _mm512_dpbusd_epi32(c01, x1, wv);
        wv = _mm512_set1_epi32(w1[q]); c10 = _mm512_dpbusd_epi32(c10, x0, wv); c11 = _mm512_dpbusd_epi32(c11, x1, wv);
        wv = _mm512_set1_epi32(w2[q]); c20 = _mm512_dpbusd_epi32(c20, x0, wv); c21 = _mm512_dpbusd_epi32(c21, x1, wv);
        wv = _mm512_set1_epi32(w3[q]); c30 = _mm512_dpbusd_epi32(c30, x0, wv); c31 = _mm512_dpbusd_epi32(c31, x1, wv);
        wv = _mm512_set1_epi32(w4[q]); c40 = _mm512_dpbusd_epi32(c40, x0, wv); c41 = _mm512_dpbusd_epi32(c41, x1, wv);
        wv = _mm512_set1_epi32(w5[q]); c50 = _mm512_dpbusd_epi32(c50, x0, wv); c51 = _mm512_dpbusd_epi32(c51, x1, wv);
        wv = _mm512_set1_epi32(w6[q]); c60 = _mm512_dpbusd_epi32(c60, x0, wv); c61 = _mm512_dpbusd_epi32(c61, x1, wv);
        wv = _mm512_set1_epi32(w7[q]); c70 = _mm512_dpbusd_epi32(c70, x0, wv); c71 = _mm512_dpbusd_epi32(c71, x1, wv);
    }
    conv_store(a, c00, o + 0, 0, mask, start, xsum); conv_store(a, c01, o + 0, 1, mask, start, xsum);
    conv_store(a, c10, o + 1, 0, mask, start, xsum); conv_store(a, c11, o + 1, 1, mask, start, xsum);
    conv_store(a, c20, o + 2, 0, mask, start, xsum); conv_store(a, c21, o + 2, 1, mask, start, xsum);
    conv_store(a, c30, o + 3, 0, mask, start, xsum); conv_store(a, c31, o + 3, 1, mask, start, xsum);
    conv_store(a, c40, o + 4, 0, mask, start, xsum); conv_store(a, c41, o + 4, 1, mask, start, xsum);
    conv_store(a, c50, o + 5, 0, mask, start, xsum); conv_store(a, c51, o + 5, 1, mask, start, xsum);
    conv_store(a, c60, o + 6, 0, mask, start, xsum); conv_store(a, c61, o + 6, 1, mask, start, xsum);
    conv_store(a, c70, o + 7, 0, mask, start, xsum); conv_store(a, c71, o + 7, 1, mask, start, xsum);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
static void conv_rows8_1(const ptq_conv_args *a, const uint8_t *const *xp, int o, const __mmask16 *mask, const int *start, const __m512i *xsum)
{
    const int kq = a->kq;
    const int32_t *w0 = (const int32_t *)(a->w + (int64_t)o * kq * 4);
    const int32_t *w1 = w0 + kq;
    const int32_t *w2 = w1 + kq;
    const int32_t *w3 = w2 + kq;
    const int32_t *w4 = w3 + kq;
    const int32_t *w5 = w4 + kq;
    const int32_t *w6 = w5 + kq;
    const int32_t *w7 = w6 + kq;
    const __m512i z = _mm512_setzero_si512();
    __m512i c00 = z;
    __m512i c10 = z;
    __m512i c20 = z;
    __m512i c30 = z;
    __m512i c40 = z;
    __m512i c50 = z;
    __m512i c60 = z;
    __m512i c70 = z;
    for (int q = 0; q < kq; q++) {
        const uint8_t *p = xp[q];
        __m512i x0 = _mm512_loadu_si512(p + 0);
        __m512i wv;
        wv = _mm512_set1_epi32(w0[q]); c00 = _mm512_dpbusd_epi32(c00, x0, wv);
        wv = _mm512_set1_epi32(w1[q]); c10 = _mm512_dpbusd_epi32(c10, x0, wv);
        wv = _mm512_set1_epi32(w2[q]); c20 = _mm512_dpbusd_epi32(c20, x0, wv);
        wv = _mm512_set1_epi32(w3[q]); c30 = _mm512_dpbusd_epi32(c30, x0, wv);
        wv = _mm512_set1_epi32(w4[q]); c40 = _mm512_dpbusd_epi32(c40, x0, wv);
        wv = _mm512_set1_epi32(w5[q]); c50 = _mm512_dpbusd_epi32(c50, x0, wv);
        wv = _mm512_set1_epi32(w6[q]); c60 = _mm512_dpbusd_epi32(c60, x0, wv);
        wv = _mm512_set1_epi32(w7[q]); c70 = _mm512_dpbusd_epi32(c70, x0, wv);
    }
    conv_store(a, c00, o + 0, 0, mask, start, xsum);
    conv_store(a, c10, o + 1, 0, mask, start, xsum);
    conv_store(a, c20, o + 2, 0, mask, start, xsum);
    conv_store(a, c30, o + 3, 0, mask, start, xsum);
    conv_store(a, c40, o + 4, 0, mask, start, xsum);
    conv_store(a, c50, o + 5, 0, mask, start, xsum);
    conv_store(a, c60, o + 6, 0, mask, start, xsum);
    conv_store(a, c70, o + 7, 0, mask, start, xsum);
}

/* Output tiles [t0, t1) (48 pixels each) for channels [o0, o1) (o0 a multiple of 8). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
void ptq_conv_vnni(const ptq_conv_args *a, int t0, int t1, int o0, int o1, uint8_t *ws)
{
    const int kq = a->kq, wide = a->sh == 1 && a->sw == 1;
    const int pixels = a->oh * a->ow, span = wide ? (a->oh - 1) * a->wp + a->ow : pixels;
    uint8_t *base = (uint8_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
    uint8_t *tile = base;                                   /* kq * 192 bytes (gathered pixels) */
    const uint8_t **xp = (const uint8_t **)(tile + (int64_t)kq * CONV_TILE * 4);
    int32_t *qoff = (int32_t *)(xp + kq);
    for (int cq = 0, q = 0; cq < a->cq; cq++)
        for (int ki = 0; ki < a->kh; ki++)
            for (int kj = 0; kj < a->kw; kj++, q++)
                qoff[q] = ((cq * a->hp + ki * a->dh) * a->wp + kj * a->dw) * 4;
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i ones = _mm512_set1_epi32(0x01010101);
    for (int t = t0; t < t1; t++) {
        int l0 = t * CONV_TILE;
        int nb = (span - l0 + 15) / 16;
        if (nb > 3) nb = 3;
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
            for (int q = 0; q < kq; q++) {
                const uint8_t *src = a->x + qoff[q];
                for (int b = 0; b < nb; b++)
                    _mm512_store_si512(tile + (int64_t)q * CONV_TILE * 4 + b * 64, _mm512_i32gather_epi32(off[b], src, 4));
                xp[q] = tile + (int64_t)q * CONV_TILE * 4;
            }
        }
        __m512i xsum[3] = { _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512() };
        if (a->wzero)
            for (int q = 0; q < kq; q++)
                for (int b = 0; b < nb; b++) xsum[b] = _mm512_dpbusd_epi32(xsum[b], _mm512_loadu_si512(xp[q] + b * 64), ones);
        for (int o = o0; o < o1; o += CONV_ROWS) {
            if (nb == 3) conv_rows8_3(a, xp, o, mask, start, xsum);
            else if (nb == 2) conv_rows8_2(a, xp, o, mask, start, xsum);
            else conv_rows8_1(a, xp, o, mask, start, xsum);
        }
    }
}

/* ---- AMX-INT8 GEMM ----------------------------------------------------------------------------------------------
 * The packed weights' quads ([blocks][kq][16][4]) are exactly the B tiles tdpbusd wants: 16 quads of one block are a
 * 16 x 64-byte tile. A is the row-major u8 copy, K padded with zeros to a multiple of 64 and rows to a multiple of 16,
 * so a tile that runs past K multiplies zeros (the quads read past it belong to the next block or the padding the
 * packer leaves). The OS must grant the tile state first (arch_prctl ARCH_REQ_XCOMP_PERM). */
#include <sys/syscall.h>
#include <unistd.h>
#include <cpuid.h>

int ptq_has_amx(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << 24)) || !(d & (1u << 25))) return 0;     /* AMX-TILE, AMX-INT8 */
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
}

typedef struct { uint8_t palette, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } ptq_tilecfg;

/* Rows [r0, r1) (multiples of 16 of the padded A) x all blocks; lda a multiple of 64; kq16 = lda / 4. */
__attribute__((target("amx-tile,amx-int8,avx512f")))
void ptq_gemm_u8s8_amx(const uint8_t *a, int lda, int r0, int r1, const int8_t *quads, int kq, int blocks, int32_t *c, int ldc)
{
    ptq_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.rows[t] = 16; cfg.colsb[t] = 64; }
    _tile_loadconfig(&cfg);
    const int kq16 = lda / 4;
    const int64_t bstride = (int64_t)kq * 64, cs = (int64_t)ldc * 4;
    for (int nb = 0; nb < blocks; nb += 2) {
        int two = nb + 1 < blocks;
        const int8_t *b0 = quads + nb * bstride, *b1 = b0 + bstride;
        for (int i = r0; i < r1; i += 32) {
            int pair = i + 16 < r1;
            const uint8_t *a0 = a + (int64_t)i * lda, *a1 = a0 + (int64_t)16 * lda;
            int32_t *c0 = c + (int64_t)i * ldc + nb * 16, *c1 = c0 + (int64_t)16 * ldc;
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            for (int q = 0; q < kq16; q += 16) {
                _tile_loadd(4, a0 + q * 4, lda);
                _tile_loadd(6, b0 + (int64_t)q * 64, 64);
                _tile_dpbusd(0, 4, 6);
                if (two) { _tile_loadd(7, b1 + (int64_t)q * 64, 64); _tile_dpbusd(1, 4, 7); }
                if (pair) {
                    _tile_loadd(5, a1 + q * 4, lda);
                    _tile_dpbusd(2, 5, 6);
                    if (two) _tile_dpbusd(3, 5, 7);
                }
            }
            _tile_stored(0, c0, cs);
            if (two) _tile_stored(1, c0 + 16, cs);
            if (pair) { _tile_stored(2, c1, cs); if (two) _tile_stored(3, c1 + 16, cs); }
        }
    }
    _tile_release();
}

/* ---- AMX-INT8 direct convolution (symmetric weights, 64+ channels per group) -------------------------------------
 * tdpbsud multiplies signed A by unsigned B: A is a weight tile, 16 output channels x 16 channel quads of one tap
 * (weights packed [oc rounded up to 32][tap][channel quads rounded up to 16][4]); B is 16 channel quads x 16 pixels of
 * the packed input, read in place (the planes of consecutive channel quads are hp * wp * 4 bytes apart, the pixels
 * run over wide rows as in ptq_conv_vnni; with other strides a tile's pixels are gathered first). C tiles are 16
 * channels x 16 pixels: NCHW rows, requantized by conv_store. Padded channels have zero weights, so whatever the padded planes hold adds nothing. */
#define AMX_TILE 32    /* pixels per tile: 2 blocks of 16 */

__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni")))
void ptq_conv_amx(const ptq_conv_args *a, const int8_t *wamx, int cq16, int t0, int t1, int o0, int o1, uint8_t *ws)
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
 * gives the same bits. ws: ptq_gemm_amx_workspace(rows, k) bytes. zb may be null (all zero). */
long long ptq_gemm_amx_workspace(int rows, int k)
{
    return (long long)(rows + 15) / 16 * 16 * ((k + 63) / 64 * 64) + (long long)(rows + 15) / 16 * 16 * 4 + 2 * 32 * 32 * 4 + 128;
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
void ptq_gemm_amx_fused(const uint8_t *a, int m, int k, int flip, int r0, int r1, const int8_t *quads, int kq, int nb0, int nb1,
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
void ptq_gemm_u8s8_satsplit(const uint8_t *a, int lda, int rows, int quads, const int8_t *safe, int blocks,
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
