/* The ABI version of libptqkernels (ptqkernels.c, built for linux-x64 and win-x64; ARM64 runs the engine's managed
 * SDOT kernels and has no native library). The library exports ptq_abi_version() returning it; the managed side
 * (NativeKernels) loads a library only when the number matches its own, so a stale or foreign build is never called.
 * Bump it whenever an export is added, removed or changes its signature or meaning. */
#ifndef PTQ_ABI_H
#define PTQ_ABI_H
#define PTQ_ABI_VERSION 7
#if defined(_WIN32)
#define PTQ_EXPORT __declspec(dllexport)
#else
#define PTQ_EXPORT __attribute__((visibility("default")))
#endif
#endif
