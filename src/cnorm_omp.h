/* Thread-count helpers that also compile without OpenMP (the serial fallback build). */
#ifndef CNORM_OMP_H
#define CNORM_OMP_H
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
#endif
