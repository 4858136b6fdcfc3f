/* Double lanes of the moments of non-8-bit data (data_moments.pxi): eight lanes at a time
   through all blocks, written with GCC/clang vector extensions so that the accumulators stay in
   vector registers on every target (SSE2, AVX2, AVX-512) with the same elementwise IEEE
   operations, hence the same bits as the scalar loop. */
#ifndef CNORM_LANES_H
#define CNORM_LANES_H
#include <stddef.h>
#include <string.h>

#if defined(__GNUC__)
typedef double cn_v8d __attribute__((vector_size(64)));
typedef long long cn_v8l __attribute__((vector_size(64)));

/* Lanes [l, l + 8) of W: x[b*W + l + k] for b < nb, around sh; accumulates into s1, s2 and
   folds min and max into lo, hi (all at offset l). */
static inline void cn_lanes8(const double *x, ptrdiff_t nb, ptrdiff_t W, const double *sh,
                             double *s1, double *s2, double *lo, double *hi) {
    cn_v8d a, q, u, v, f, e, d;
    cn_v8l m;
    memcpy(&a, s1, 64); memcpy(&q, s2, 64); memcpy(&u, lo, 64); memcpy(&v, hi, 64);
    memcpy(&f, sh, 64);
    for (ptrdiff_t b = 0; b < nb; b++) {
        memcpy(&e, x + b * W, 64);
        d = e - f;
        a += d;
        q += d * d;
        m = e < u;
        u = (cn_v8d)(((cn_v8l)e & m) | ((cn_v8l)u & ~m));
        m = e > v;
        v = (cn_v8d)(((cn_v8l)e & m) | ((cn_v8l)v & ~m));
    }
    memcpy(s1, &a, 64); memcpy(s2, &q, 64); memcpy(lo, &u, 64); memcpy(hi, &v, 64);
}
#define CN_HAVE_LANES8 1
#else
#define CN_HAVE_LANES8 0
static inline void cn_lanes8(const double *x, ptrdiff_t nb, ptrdiff_t W, const double *sh,
                             double *s1, double *s2, double *lo, double *hi) {
    (void)x; (void)nb; (void)W; (void)sh; (void)s1; (void)s2; (void)lo; (void)hi;
}
#endif
#endif
