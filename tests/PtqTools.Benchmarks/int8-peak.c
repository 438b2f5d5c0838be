/* The attainable int8 (and fp32) throughput of one core: register-only loops of each int8 dot instruction this CPU
 * has (512-bit vpdpbusd on AVX-512 VNNI, 256-bit vpdpbusd on AVX-VNNI, AMX tdpbusd tiles; FMA for fp32), 12 independent accumulator
 * chains (four destination tiles for AMX), timed in short bursts (~0.1 ms), best of 400 (a long loop on a shared
 * machine is always preempted somewhere). One line per instruction that ran:
 *   <name> <GOPS>      (ops = 2 x multiply-adds)
 * The managed peak probe (tests/PtqTools.Benchmarks/KernelBenchmarks/PeakProbe.cs) compiles and runs this where gcc
 * is present, for the instructions .NET cannot issue (512-bit vpdpbusd, AMX).
 *   gcc -O2 -o /tmp/int8-peak tests/PtqTools.Benchmarks/int8-peak.c && /tmp/int8-peak */
#include <immintrin.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <cpuid.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

#define CHAINS(OP, T, ZERO, ADD, RED) \
    T c0 = ZERO, c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0; \
    for (long i = 0; i < iters; i++) { \
        c0 = OP(c0, a, b); c1 = OP(c1, a, b); c2 = OP(c2, a, b); c3 = OP(c3, a, b); c4 = OP(c4, a, b); c5 = OP(c5, a, b); \
        c6 = OP(c6, a, b); c7 = OP(c7, a, b); c8 = OP(c8, a, b); c9 = OP(c9, a, b); c10 = OP(c10, a, b); c11 = OP(c11, a, b); \
        __asm__ volatile("" : "+v"(c0), "+v"(c1), "+v"(c2), "+v"(c3), "+v"(c4), "+v"(c5), "+v"(c6), "+v"(c7), "+v"(c8), "+v"(c9), "+v"(c10), "+v"(c11)); \
    } \
    T s = ADD(ADD(ADD(c0, c1), ADD(c2, c3)), ADD(ADD(c4, c5), ADD(ADD(c6, c7), ADD(ADD(c8, c9), ADD(c10, c11))))); \
    return RED(s);

__attribute__((target("avx512f,avx512bw,avx512vnni"), noinline)) static int zmm_dpbusd(long iters)
{
    __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2);
    CHAINS(_mm512_dpbusd_epi32, __m512i, _mm512_setzero_si512(), _mm512_add_epi32, _mm512_reduce_add_epi32)
}

__attribute__((target("avx2,avxvnni"), noinline)) static int ymm_dpbusd(long iters)
{
    __m256i a = _mm256_set1_epi8(1), b = _mm256_set1_epi8(2);
#define DP(c, x, y) _mm256_dpbusd_avx_epi32(c, x, y)
#define RED256(s) _mm256_extract_epi32(s, 0)
    CHAINS(DP, __m256i, _mm256_setzero_si256(), _mm256_add_epi32, RED256)
}

#define RED256F(s) ((int)_mm256_cvtss_f32(s))
__attribute__((target("avx2,fma"), noinline)) static int ymm_fma(long iters)
{
    __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-3f);
#define FMA256(c, x, y) _mm256_fmadd_ps(c, x, y)
    CHAINS(FMA256, __m256, _mm256_setzero_ps(), _mm256_add_ps, RED256F)
}

#define RED512F(s) ((int)_mm512_reduce_add_ps(s))
__attribute__((target("avx512f"), noinline)) static int zmm_fma(long iters)
{
    __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
#define FMA512(c, x, y) _mm512_fmadd_ps(c, x, y)
    CHAINS(FMA512, __m512, _mm512_setzero_ps(), _mm512_add_ps, RED512F)
}

static double best(int (*f)(long), long iters, double macsPerIter)
{
    double t = 1e9;
    f(iters);
    for (int r = 0; r < 400; r++)
    {
        double t0 = now();
        if (f(iters) == 42) printf("#");
        double s = now() - t0;
        if (s < t) t = s;
    }
    return iters * macsPerIter * 2 / t / 1e9;
}

#if defined(__linux__) && defined(__x86_64__)
/* AMX: 4 destination tiles (16x16 int32) of 16x64 u8 x 64x16 s8 products: 16*16*64 multiply-adds per tdpbusd. */
struct tilecfg { unsigned char palette, start; unsigned char reserved[14]; unsigned short colsb[16]; unsigned char rows[16]; };
__attribute__((target("amx-tile,amx-int8"), noinline)) static int amx_tiles(long iters)
{
    static unsigned char a[16 * 64] __attribute__((aligned(64))), b[16 * 64] __attribute__((aligned(64)));
    static int c[16 * 16] __attribute__((aligned(64)));
    struct tilecfg cfg; memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 6; t++) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
    _tile_loadconfig(&cfg);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, a, 64); _tile_loadd(5, b, 64);
    for (long i = 0; i < iters; i++) { _tile_dpbusd(0, 4, 5); _tile_dpbusd(1, 4, 5); _tile_dpbusd(2, 4, 5); _tile_dpbusd(3, 4, 5); }
    _tile_stored(0, c, 64);
    _tile_release();
    return c[0];
}

static int amx_usable(void)
{
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    if (!((edx >> 24) & 1) || !((edx >> 25) & 1)) return 0;          /* AMX-TILE, AMX-INT8 */
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
}
#endif

int main(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vnni")) printf("vpdpbusd-zmm %.1f\n", best(zmm_dpbusd, 20000, 12.0 * 64));
    if (__builtin_cpu_supports("avxvnni")) printf("vpdpbusd-ymm %.1f\n", best(ymm_dpbusd, 20000, 12.0 * 32));
    if (__builtin_cpu_supports("fma")) printf("vfmadd-ymm %.1f\n", best(ymm_fma, 20000, 12.0 * 8));
    if (__builtin_cpu_supports("avx512f")) printf("vfmadd-zmm %.1f\n", best(zmm_fma, 20000, 12.0 * 16));
#if defined(__linux__) && defined(__x86_64__)
    if (amx_usable()) printf("amx-tdpbusd %.1f\n", best(amx_tiles, 2000, 4.0 * 16 * 16 * 64));
#endif
    return 0;
}
