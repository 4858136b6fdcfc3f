/* Lanes of the moments of non-8-bit data (data_moments.pxi): double lanes, and float lanes
   flushed into double for float32 data (cn_flanes32 / cn_flanes96, below), written with GCC/clang
   vector extensions so that the accumulators stay in vector registers on every target (SSE2,
   AVX2, AVX-512) with the same elementwise IEEE operations, hence the same bits as the scalar
   loop. Each lane still takes its values in order; only the lanes are interleaved:
   cn_lanes32 runs 32 lanes (four vectors, four independent chains) through each block, where
   one chain of eight waited on its add and compare latencies (float32 moments 7.7 GB/s).
   The float form converts in registers (exact), without the double tile's store and reload. */
#ifndef CNORM_LANES_H
#define CNORM_LANES_H
#include <stddef.h>
#include <string.h>

#if defined(__GNUC__)
typedef double cn_v8d __attribute__((vector_size(64)));
typedef long long cn_v8l __attribute__((vector_size(64)));
typedef float cn_v8f __attribute__((vector_size(32)));
typedef float cn_v16f __attribute__((vector_size(64)));
typedef int cn_v16i __attribute__((vector_size(64)));

/* MINPD / MINPS return their second operand unless the first is below it (MAX: above):
   exactly the ternaries of the generic form, NaN and signed zeros included. */
#if defined(__AVX512F__)
#include <immintrin.h>
#define CN_MIN(e, u) ((cn_v8d)_mm512_min_pd((__m512d)(e), (__m512d)(u)))
#define CN_MAX(e, v) ((cn_v8d)_mm512_max_pd((__m512d)(e), (__m512d)(v)))
#define CN_MINF(e, u) ((cn_v16f)_mm512_min_ps((__m512)(e), (__m512)(u)))
#define CN_MAXF(e, v) ((cn_v16f)_mm512_max_ps((__m512)(e), (__m512)(v)))
/* GCC 12 splits the generic float-to-double conversion into halves and shuffles here. */
static inline cn_v8d cn_load8f(const float *x) {
    return (cn_v8d)_mm512_cvtps_pd(_mm256_loadu_ps(x));
}
#else
#define CN_PICK(m, a, b, I) (((I)(a) & (m)) | ((I)(b) & ~(m)))
#define CN_MIN(e, u) ((cn_v8d)CN_PICK((e) < (u), e, u, cn_v8l))
#define CN_MAX(e, v) ((cn_v8d)CN_PICK((e) > (v), e, v, cn_v8l))
#define CN_MINF(e, u) ((cn_v16f)CN_PICK((e) < (u), e, u, cn_v16i))
#define CN_MAXF(e, v) ((cn_v16f)CN_PICK((e) > (v), e, v, cn_v16i))
static inline cn_v8d cn_load8f(const float *x) {
    cn_v8f e;
    memcpy(&e, x, 32);
    return __builtin_convertvector(e, cn_v8d);
}
#endif

static inline cn_v8d cn_load8(const double *x) {
    cn_v8d e;
    memcpy(&e, x, 64);
    return e;
}

/* Sixteen double lanes as floats and back: exact for the min and max of float data. */
static inline cn_v16f cn_narrow16(const double *x) {
    cn_v8f h[2] = {__builtin_convertvector(cn_load8(x), cn_v8f),
                   __builtin_convertvector(cn_load8(x + 8), cn_v8f)};
    cn_v16f r;
    memcpy(&r, h, 64);
    return r;
}

static inline void cn_widen16(cn_v16f r, double *x) {
    cn_v8f h[2];
    memcpy(h, &r, 64);
    cn_v8d w[2] = {__builtin_convertvector(h[0], cn_v8d), __builtin_convertvector(h[1], cn_v8d)};
    memcpy(x, w, 128);
}

/* One vector of values e into lanes around their shifts f: d = e - f, a += d, q += d * d, and
   u, v the running min and max; the one step of the double and the float lane loops. */
#define CN_ADD_VALUE(e, f, d, a, q, u, v, MIN, MAX)                                          \
    do {                                                                                     \
        (d) = (e) - (f);                                                                     \
        (a) += (d);                                                                          \
        (q) += (d) * (d);                                                                    \
        (u) = MIN((e), (u));                                                                 \
        (v) = MAX((e), (v));                                                                 \
    } while (0)

/* Lanes [l, l + 8J) of W (at offset l in every array): x[b*W + l + k] for b < nb, around sh,
   accumulated into s1, s2, and folded into lo, hi. */
#define CN_LANES(NAME, J)                                                                   \
    static inline void NAME(const double *x, ptrdiff_t nb, ptrdiff_t W, const double *sh,    \
                            double *s1, double *s2, double *lo, double *hi) {                \
        cn_v8d a[J], q[J], u[J], v[J], f[J], e, d;                                           \
        for (int j = 0; j < J; j++) {                                                        \
            a[j] = cn_load8(s1 + 8 * j); q[j] = cn_load8(s2 + 8 * j);                        \
            u[j] = cn_load8(lo + 8 * j); v[j] = cn_load8(hi + 8 * j);                        \
            f[j] = cn_load8(sh + 8 * j);                                                     \
        }                                                                                    \
        for (ptrdiff_t b = 0; b < nb; b++) {                                                 \
            for (int j = 0; j < J; j++) {                                                    \
                e = cn_load8(x + b * W + 8 * j);                                             \
                CN_ADD_VALUE(e, f[j], d, a[j], q[j], u[j], v[j], CN_MIN, CN_MAX);            \
            }                                                                                \
        }                                                                                    \
        for (int j = 0; j < J; j++) {                                                        \
            memcpy(s1 + 8 * j, &a[j], 64); memcpy(s2 + 8 * j, &q[j], 64);                    \
            memcpy(lo + 8 * j, &u[j], 64); memcpy(hi + 8 * j, &v[j], 64);                    \
        }                                                                                    \
    }

CN_LANES(cn_lanes32, 4)
/* Eight lanes alone, for the W % 32 left (interleaved C > 32 and not a multiple of 32). */
CN_LANES(cn_lanes8, 1)

/* cn_lanes32 of float data: converted in registers (no double tile stored and read back),
   the min and max taken on the floats, sixteen lanes a register: float32 moments 7.7 ->
   15-16 GB/s a thread on an AMD EPYC, where the four double operations a value are left. */
static inline void cn_lanes32f(const float *x, ptrdiff_t nb, ptrdiff_t W, const double *sh,
                               double *s1, double *s2, double *lo, double *hi) {
    cn_v8d a[4], q[4], f[4], e, d;
    cn_v16f u[2], v[2], g;
    for (int j = 0; j < 4; j++) {
        a[j] = cn_load8(s1 + 8 * j); q[j] = cn_load8(s2 + 8 * j); f[j] = cn_load8(sh + 8 * j);
    }
    for (int j = 0; j < 2; j++) {
        u[j] = cn_narrow16(lo + 16 * j); v[j] = cn_narrow16(hi + 16 * j);
    }
    for (ptrdiff_t b = 0; b < nb; b++) {
        for (int j = 0; j < 2; j++) {
            memcpy(&g, x + b * W + 16 * j, 64);
            u[j] = CN_MINF(g, u[j]);
            v[j] = CN_MAXF(g, v[j]);
        }
        for (int j = 0; j < 4; j++) {
            e = cn_load8f(x + b * W + 8 * j);
            d = e - f[j];
            a[j] += d;
            q[j] += d * d;
        }
    }
    for (int j = 0; j < 4; j++) {
        memcpy(s1 + 8 * j, &a[j], 64); memcpy(s2 + 8 * j, &q[j], 64);
    }
    for (int j = 0; j < 2; j++) {
        cn_widen16(u[j], lo + 16 * j); cn_widen16(v[j], hi + 16 * j);
    }
}
/* Float lanes of float data, the norm kernels' scheme (_sums.pxi): 32G float lanes around float
   shifts (sh holds floats' values), flushed into the double sums s1, s2 after every `flush`
   blocks of a run. The partial float sums (fa, fq) and the run's blocks since the last flush
   (`done`, returned) carry over calls, so a run's flushes fall on the same blocks however it
   is stepped; `last` flushes what is left. No conversion a value and half the vector
   operations of cn_lanes32f, whose float32 moments were compute-bound at 13-16 GB/s a thread
   on an AMD EPYC. A flush holds the rounding of float sums of `flush` values; the caller
   sums in double lanes again where (x - shift)^2 left float's range. One pass over each
   block reads it in memory order: cn_flanes96 takes the three groups of interleaved RGB data
   (W = 96), where a pass a group read a third of every line and stalled on its loads. */
static inline cn_v8d cn_half8(cn_v16f g, int k) {
    cn_v8f h[2];
    memcpy(h, &g, 64);
    return __builtin_convertvector(h[k], cn_v8d);
}

#define CN_FLANES(NAME, G)                                                                  \
    static inline ptrdiff_t NAME(const float *x, ptrdiff_t nb, ptrdiff_t W, const double *sh,\
                                 ptrdiff_t flush, ptrdiff_t done, int last, float *fa,       \
                                 float *fq, double *s1, double *s2, double *lo, double *hi) {\
        cn_v8d A[4 * G], Q[4 * G];                                                           \
        cn_v16f a[2 * G], q[2 * G], f[2 * G], u[2 * G], v[2 * G], g, d, zero = {0};          \
        for (int j = 0; j < 4 * G; j++) {                                                    \
            A[j] = cn_load8(s1 + 8 * j); Q[j] = cn_load8(s2 + 8 * j);                        \
        }                                                                                    \
        for (int j = 0; j < 2 * G; j++) {                                                    \
            f[j] = cn_narrow16(sh + 16 * j); u[j] = cn_narrow16(lo + 16 * j);                \
            v[j] = cn_narrow16(hi + 16 * j);                                                 \
            memcpy(&a[j], fa + 16 * j, 64); memcpy(&q[j], fq + 16 * j, 64);                  \
        }                                                                                    \
        for (ptrdiff_t b = 0; b < nb || (last && done);) {                                   \
            ptrdiff_t e = nb - b > flush - done ? b + flush - done : nb;                     \
            done += e - b;                                                                   \
            for (; b < e; b++) {                                                             \
                for (int j = 0; j < 2 * G; j++) {                                            \
                    memcpy(&g, x + b * W + 16 * j, 64);                                      \
                    CN_ADD_VALUE(g, f[j], d, a[j], q[j], u[j], v[j], CN_MINF, CN_MAXF);      \
                }                                                                            \
            }                                                                                \
            if (done < flush && !(last && b == nb))                                          \
                break;                                                                       \
            for (int j = 0; j < 4 * G; j++) {                                                \
                A[j] += cn_half8(a[j / 2], j % 2); Q[j] += cn_half8(q[j / 2], j % 2);        \
            }                                                                                \
            for (int j = 0; j < 2 * G; j++) { a[j] = zero; q[j] = zero; }                    \
            done = 0;                                                                        \
        }                                                                                    \
        for (int j = 0; j < 4 * G; j++) {                                                    \
            memcpy(s1 + 8 * j, &A[j], 64); memcpy(s2 + 8 * j, &Q[j], 64);                    \
        }                                                                                    \
        for (int j = 0; j < 2 * G; j++) {                                                    \
            cn_widen16(u[j], lo + 16 * j); cn_widen16(v[j], hi + 16 * j);                    \
            memcpy(fa + 16 * j, &a[j], 64); memcpy(fq + 16 * j, &q[j], 64);                  \
        }                                                                                    \
        return done;                                                                         \
    }

CN_FLANES(cn_flanes32, 1)
CN_FLANES(cn_flanes96, 3)
#define CN_HAVE_LANES8 1
#else
#define CN_HAVE_LANES8 0
#define CN_LANES_NONE(NAME, T)                                                                \
    static inline void NAME(const T *x, ptrdiff_t nb, ptrdiff_t W, const double *sh,         \
                            double *s1, double *s2, double *lo, double *hi) {                \
        (void)x; (void)nb; (void)W; (void)sh; (void)s1; (void)s2; (void)lo; (void)hi;        \
    }
CN_LANES_NONE(cn_lanes32, double)
CN_LANES_NONE(cn_lanes32f, float)
CN_LANES_NONE(cn_lanes8, double)
#define CN_FLANES_NONE(NAME)                                                                \
    static inline ptrdiff_t NAME(const float *x, ptrdiff_t nb, ptrdiff_t W, const double *sh,\
                                 ptrdiff_t flush, ptrdiff_t done, int last, float *fa,       \
                                 float *fq, double *s1, double *s2, double *lo, double *hi) {\
        (void)x; (void)nb; (void)W; (void)sh; (void)flush; (void)last; (void)fa; (void)fq;   \
        (void)s1; (void)s2; (void)lo; (void)hi;                                              \
        return done;                                                                         \
    }
CN_FLANES_NONE(cn_flanes32)
CN_FLANES_NONE(cn_flanes96)
#endif
#endif
