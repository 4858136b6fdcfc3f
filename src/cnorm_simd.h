/* Apply loops with non-temporal (streaming) stores, for outputs too large to stay in cache:
   the store then costs one write instead of a read-for-ownership plus a write. The arithmetic
   is the same IEEE sequence as the scalar loops in kernels.pxi (no FMA: -ffp-contract=off),
   so results are bit-identical whichever loop or SIMD target ran. */
#ifndef CNORM_SIMD_H
#define CNORM_SIMD_H
#include <stddef.h>
#include <stdint.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define CN_F(op) _mm512_##op##_ps
#define CN_D(op) _mm512_##op##_pd
typedef __m512 cn_vf; typedef __m512d cn_vd;
#define CN_VBYTES 64
#elif defined(__AVX__)
#include <immintrin.h>
#define CN_F(op) _mm256_##op##_ps
#define CN_D(op) _mm256_##op##_pd
typedef __m256 cn_vf; typedef __m256d cn_vd;
#define CN_VBYTES 32
#elif defined(__SSE2__)
#include <emmintrin.h>
#define CN_F(op) _mm_##op##_ps
#define CN_D(op) _mm_##op##_pd
typedef __m128 cn_vf; typedef __m128d cn_vd;
#define CN_VBYTES 16
#endif

#ifdef CN_VBYTES
#define CN_HAVE_STREAM 1
#else
#define CN_HAVE_STREAM 0
#endif

/* y = ((x - hi) - lo) * a + b  and  dx = dy * k1 + (((x - hi) - lo) * k2 + k3) */
#define CN_NORM(T, x, hi, lo, a, b) ((((x) - (hi)) - (lo)) * (a) + (b))
#define CN_BWD(T, g, x, hi, lo, k1, k2, k3) ((g) * (k1) + ((((x) - (hi)) - (lo)) * (k2) + (k3)))

#define CN_DEFINE(SUFFIX, T, V, OP)                                                          \
static void cn_norm_stream_##SUFFIX(const T *x, T *y, ptrdiff_t n, T hi, T lo, T a, T b) {  \
    ptrdiff_t t = 0;                                                                         \
    {                                                                                        \
        for (; t < n && ((uintptr_t)(y + t)) % CN_VBYTES; t++)                               \
            y[t] = CN_NORM(T, x[t], hi, lo, a, b);                                           \
        V vh = OP(set1)(hi), vl = OP(set1)(lo), va = OP(set1)(a), vb = OP(set1)(b);          \
        for (; t + (ptrdiff_t)(CN_VBYTES / sizeof(T)) <= n; t += CN_VBYTES / sizeof(T)) {    \
            V v = OP(sub)(OP(sub)(OP(loadu)(x + t), vh), vl);                                \
            OP(stream)(y + t, OP(add)(OP(mul)(v, va), vb));                                  \
        }                                                                                    \
    }                                                                                        \
    for (; t < n; t++) y[t] = CN_NORM(T, x[t], hi, lo, a, b);                                \
    _mm_sfence(); /* streamed stores are weakly ordered: publish them before returning */   \
}                                                                                            \
static void cn_bwd_stream_##SUFFIX(const T *x, const T *g, T *dx, ptrdiff_t n, T hi, T lo,  \
                                   T k1, T k2, T k3) {                                       \
    ptrdiff_t t = 0;                                                                         \
    {                                                                                        \
        for (; t < n && ((uintptr_t)(dx + t)) % CN_VBYTES; t++)                              \
            dx[t] = CN_BWD(T, g[t], x[t], hi, lo, k1, k2, k3);                               \
        V vh = OP(set1)(hi), vl = OP(set1)(lo), v1 = OP(set1)(k1), v2 = OP(set1)(k2),        \
          v3 = OP(set1)(k3);                                                                 \
        for (; t + (ptrdiff_t)(CN_VBYTES / sizeof(T)) <= n; t += CN_VBYTES / sizeof(T)) {    \
            V v = OP(sub)(OP(sub)(OP(loadu)(x + t), vh), vl);                                \
            v = OP(add)(OP(mul)(OP(loadu)(g + t), v1), OP(add)(OP(mul)(v, v2), v3));         \
            OP(stream)(dx + t, v);                                                           \
        }                                                                                    \
    }                                                                                        \
    for (; t < n; t++) dx[t] = CN_BWD(T, g[t], x[t], hi, lo, k1, k2, k3);                    \
    _mm_sfence();                                                                            \
}

#define CN_DEFINE_SCALAR(SUFFIX, T)                                                          \
static void cn_norm_stream_##SUFFIX(const T *x, T *y, ptrdiff_t n, T hi, T lo, T a, T b) {  \
    for (ptrdiff_t t = 0; t < n; t++) y[t] = CN_NORM(T, x[t], hi, lo, a, b);               \
}                                                                                            \
static void cn_bwd_stream_##SUFFIX(const T *x, const T *g, T *dx, ptrdiff_t n, T hi, T lo,  \
                                   T k1, T k2, T k3) {                                       \
    for (ptrdiff_t t = 0; t < n; t++) dx[t] = CN_BWD(T, g[t], x[t], hi, lo, k1, k2, k3);    \
}

#if CN_HAVE_STREAM
CN_DEFINE(f32, float, cn_vf, CN_F)
CN_DEFINE(f64, double, cn_vd, CN_D)
#else
CN_DEFINE_SCALAR(f32, float)
CN_DEFINE_SCALAR(f64, double)
#endif
#endif
