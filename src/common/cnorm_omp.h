/* Thread-count helpers that also compile without OpenMP (the serial fallback build), and the
   CPU feature test that picks a SIMD target at import. */
#ifndef CNORM_OMP_H
#define CNORM_OMP_H
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
static int cn_max_threads(void) { return omp_get_max_threads(); }
static void cn_set_max_threads(int n) { omp_set_num_threads(n); }
static int cn_openmp_enabled(void) { return 1; }
#else
static int cn_max_threads(void) { return 1; }
static void cn_set_max_threads(int n) { (void)n; }
static int cn_openmp_enabled(void) { return 0; }
#endif

/* 1 when this CPU and OS run code built for target "baseline", "avx2" or "avx512".
   GCC's and clang's __builtin_cpu_supports also check that the OS saves the wide registers. */
static int cn_cpu_supports(const char *target) {
    if (strcmp(target, "baseline") == 0) return 1;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(target, "avx2") == 0) return avx2;
    if (strcmp(target, "avx512") == 0)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
               && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
    return 0;
}
#endif
