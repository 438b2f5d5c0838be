/* PtqTools native int8 kernels: the AVX-512 VNNI GEMM that .NET cannot emit (no 512-bit vpdpbusd intrinsic).
 * Built by build.ps1 with the machine's gcc; loaded through NativeLibrary; the managed kernels are the fallback.
 * The kernel computes raw u8 x s8 dot products; the caller applies the zero-point corrections (exact in int32). */
#include <stdint.h>
#include <string.h>
#include <immintrin.h>

int ptq_version(void) { return 1; }

int ptq_has_vnni(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512f");
}

/* a: rows r0..r1 of an m x (kq*4) u8 matrix (zero padded); quads: [blocks][kq][16][4] s8;
 * c: m x (blocks*16) int32, row stride ldc. */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
void ptq_gemm_u8s8_vnni(const uint8_t *a, int r0, int r1, int kq, const int8_t *quads, int blocks, int32_t *c, int ldc)
{
    const int lda = kq * 4;
    for (int i = r0; i < r1; i += 4) {
        int rows = r1 - i < 4 ? r1 - i : 4;
        const int32_t *a0 = (const int32_t *)(a + (int64_t)i * lda);
        const int32_t *a1 = (const int32_t *)(a + (int64_t)(i + (rows > 1 ? 1 : 0)) * lda);
        const int32_t *a2 = (const int32_t *)(a + (int64_t)(i + (rows > 2 ? 2 : 0)) * lda);
        const int32_t *a3 = (const int32_t *)(a + (int64_t)(i + (rows > 3 ? 3 : 0)) * lda);
        int nb = 0;
        for (; nb + 1 < blocks; nb += 2) {
            __m512i c00 = _mm512_setzero_si512(), c01 = _mm512_setzero_si512();
            __m512i c10 = _mm512_setzero_si512(), c11 = _mm512_setzero_si512();
            __m512i c20 = _mm512_setzero_si512(), c21 = _mm512_setzero_si512();
            __m512i c30 = _mm512_setzero_si512(), c31 = _mm512_setzero_si512();
            const int8_t *b0p = quads + (int64_t)nb * kq * 64, *b1p = b0p + (int64_t)kq * 64;
            for (int q = 0; q < kq; q++) {
                __m512i b0 = _mm512_loadu_si512(b0p + q * 64), b1 = _mm512_loadu_si512(b1p + q * 64);
                __m512i x0 = _mm512_set1_epi32(a0[q]), x1 = _mm512_set1_epi32(a1[q]);
                __m512i x2 = _mm512_set1_epi32(a2[q]), x3 = _mm512_set1_epi32(a3[q]);
                c00 = _mm512_dpbusd_epi32(c00, x0, b0); c01 = _mm512_dpbusd_epi32(c01, x0, b1);
                c10 = _mm512_dpbusd_epi32(c10, x1, b0); c11 = _mm512_dpbusd_epi32(c11, x1, b1);
                c20 = _mm512_dpbusd_epi32(c20, x2, b0); c21 = _mm512_dpbusd_epi32(c21, x2, b1);
                c30 = _mm512_dpbusd_epi32(c30, x3, b0); c31 = _mm512_dpbusd_epi32(c31, x3, b1);
            }
            int32_t *o = c + (int64_t)i * ldc + nb * 16;
            _mm512_storeu_si512(o, c00); _mm512_storeu_si512(o + 16, c01);
            if (rows > 1) { _mm512_storeu_si512(o + ldc, c10); _mm512_storeu_si512(o + ldc + 16, c11); }
            if (rows > 2) { _mm512_storeu_si512(o + 2 * ldc, c20); _mm512_storeu_si512(o + 2 * ldc + 16, c21); }
            if (rows > 3) { _mm512_storeu_si512(o + 3 * ldc, c30); _mm512_storeu_si512(o + 3 * ldc + 16, c31); }
        }
        for (; nb < blocks; nb++) {
            __m512i c0 = _mm512_setzero_si512(), c1 = _mm512_setzero_si512(), c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
            const int8_t *bp = quads + (int64_t)nb * kq * 64;
            for (int q = 0; q < kq; q++) {
                __m512i b0 = _mm512_loadu_si512(bp + q * 64);
                c0 = _mm512_dpbusd_epi32(c0, _mm512_set1_epi32(a0[q]), b0);
                c1 = _mm512_dpbusd_epi32(c1, _mm512_set1_epi32(a1[q]), b0);
                c2 = _mm512_dpbusd_epi32(c2, _mm512_set1_epi32(a2[q]), b0);
                c3 = _mm512_dpbusd_epi32(c3, _mm512_set1_epi32(a3[q]), b0);
            }
            int32_t *o = c + (int64_t)i * ldc + nb * 16;
            _mm512_storeu_si512(o, c0);
            if (rows > 1) _mm512_storeu_si512(o + ldc, c1);
            if (rows > 2) _mm512_storeu_si512(o + 2 * ldc, c2);
            if (rows > 3) _mm512_storeu_si512(o + 3 * ldc, c3);
        }
    }
}
