#include <immintrin.h>
#include <stdio.h>
#include <time.h>
__attribute__((target("avx512f,avx512bw,avx512vnni"), noinline))
__m512i run(long iters, __m512i a, __m512i b) {
    __m512i c0=_mm512_setzero_si512(),c1=c0,c2=c0,c3=c0,c4=c0,c5=c0,c6=c0,c7=c0,c8=c0,c9=c0,c10=c0,c11=c0;
    for (long i = 0; i < iters; i++) {
        c0=_mm512_dpbusd_epi32(c0,a,b); c1=_mm512_dpbusd_epi32(c1,a,b); c2=_mm512_dpbusd_epi32(c2,a,b); c3=_mm512_dpbusd_epi32(c3,a,b);
        c4=_mm512_dpbusd_epi32(c4,a,b); c5=_mm512_dpbusd_epi32(c5,a,b); c6=_mm512_dpbusd_epi32(c6,a,b); c7=_mm512_dpbusd_epi32(c7,a,b);
        c8=_mm512_dpbusd_epi32(c8,a,b); c9=_mm512_dpbusd_epi32(c9,a,b); c10=_mm512_dpbusd_epi32(c10,a,b); c11=_mm512_dpbusd_epi32(c11,a,b);
        __asm__ volatile("" : "+v"(c0),"+v"(c1),"+v"(c2),"+v"(c3),"+v"(c4),"+v"(c5),"+v"(c6),"+v"(c7),"+v"(c8),"+v"(c9),"+v"(c10),"+v"(c11));
    }
    return _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0,c1),_mm512_add_epi32(c2,c3)),_mm512_add_epi32(_mm512_add_epi32(c4,c5),_mm512_add_epi32(_mm512_add_epi32(c6,c7),_mm512_add_epi32(_mm512_add_epi32(c8,c9),_mm512_add_epi32(c10,c11)))));
}
/* The throughput limit of 512-bit vpdpbusd on one thread: 12 independent chains, best of 15 runs.
 * gcc -O2 -mavx512f -mavx512bw -mavx512vnni -o /tmp/vnni-peak tests/PtqTools.Benchmarks/vnni-peak.c && /tmp/vnni-peak */
int main() {
    __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2);
    double best = 1e9; long iters = 20000000;
    for (int r = 0; r < 15; r++) {
        struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
        __m512i c = run(iters, a, b);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        if (s < best) best = s;
        if (_mm512_reduce_add_epi32(c) == 42) printf("x");
    }
    printf("vpdpbusd zmm: %.0f GOPS (12 chains, best of 15)\n", iters * 12.0 * 64 * 2 / best / 1e9);
}
