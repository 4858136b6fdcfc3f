/* The sums of one short float32 row (row_norm.pxi's _short_sums), with the 32 float lanes and
   their double flush in vector registers. Written in Cython, GCC kept the four lane arrays on
   the stack: each row stored and reloaded them (LayerNorm (4096, 64) forward: two thirds of
   the time in the sums). The operations are _short_sums' own, lane by lane and in the same
   order (float blocks, flushed into double every `flush` blocks, the tail in double, then the
   levels of cnorm_tree.h's tree): the same bits on every target, as the scalar form. */
#ifndef CNORM_SHORT_H
#define CNORM_SHORT_H
#include <stddef.h>
#include <string.h>
#include "cnorm_tree.h"

#if defined(__GNUC__)
typedef float cn_sf16 __attribute__((vector_size(64)));
typedef float cn_sf8 __attribute__((vector_size(32)));
typedef cn_td8 cn_sd8;

static inline cn_sf16 cn_sload(const float *p) {
    cn_sf16 v;
    memcpy(&v, p, 64);
    return v;
}

/* Eight floats to double: GCC splits the generic conversion into halves and shuffles */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline cn_sd8 cn_swiden(cn_sf8 h) { return (cn_sd8)_mm512_cvtps_pd((__m256)h); }
#else
static inline cn_sd8 cn_swiden(cn_sf8 h) { return __builtin_convertvector(h, cn_sd8); }
#endif

/* a[0..1] += the low and high eight lanes of f, in double; first: a is still 0, so a = them
   (0 + v is v: a lane is never -0, as it starts at +0). With AVX-512 the halves are taken in
   registers: through memory, their 32-byte loads of f's 64-byte store stalled (a third of
   the channels-last statistics' time, cn_rows_sums_f32). */
static inline void cn_sflush(cn_sf16 f, cn_sd8 *a, int first) {
    cn_sd8 lo, hi;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    lo = (cn_sd8)_mm512_cvtps_pd(_mm512_extractf32x8_ps((__m512)f, 0));
    hi = (cn_sd8)_mm512_cvtps_pd(_mm512_extractf32x8_ps((__m512)f, 1));
#else
    cn_sf8 h[2];
    memcpy(h, &f, 64);
    lo = cn_swiden(h[0]);
    hi = cn_swiden(h[1]);
#endif
    a[0] = first ? lo : a[0] + lo;
    a[1] = first ? hi : a[1] + hi;
}

/* lanes 0..n-1 of the 32 double lanes a1, a2 (four vectors each) += a tail's n < 32 values:
   d = x - sh in double, and d (without dy) or g = dy * w in float (a product rounded once;
   w NULL: dy), then d * d or g * d. With AVX-512 by masked loads and masked adds, so that the
   lanes stay in registers (through memory, the scalar stores of one tail stall the vector
   loads of the next); elsewhere a loop over the lanes: the same operations. */
static inline void cn_lanes_tail(const float *x, const float *dy, const float *w, ptrdiff_t n,
                                 double sh, cn_sd8 *a1, cn_sd8 *a2) {
#if defined(__AVX512F__) && defined(__AVX512VL__)
    for (int v = 0; v < 4 && 8 * v < n; v++) {
        const ptrdiff_t m = n - 8 * v < 8 ? n - 8 * v : 8;
        const __mmask8 k = (__mmask8)((1u << m) - 1u);
        const __m512d d = _mm512_sub_pd(
            _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, x + 8 * v)), _mm512_set1_pd(sh));
        __m512d g = d;
        if (dy != NULL) {
            __m256 q = _mm256_maskz_loadu_ps(k, dy + 8 * v);
            if (w != NULL)
                q = _mm256_mul_ps(q, _mm256_maskz_loadu_ps(k, w + 8 * v));
            g = _mm512_cvtps_pd(q);
        }
        a1[v] = (cn_sd8)_mm512_mask_add_pd((__m512d)a1[v], k, (__m512d)a1[v], g);
        a2[v] = (cn_sd8)_mm512_mask_add_pd((__m512d)a2[v], k, (__m512d)a2[v],
                                           _mm512_mul_pd(g, d));
    }
#else
    double t1[32], t2[32];
    memcpy(t1, a1, sizeof t1);
    memcpy(t2, a2, sizeof t2);
    for (ptrdiff_t l = 0; l < n; l++) {
        const double d = (double)x[l] - sh;
        const double g = dy == NULL ? d : (double)(w == NULL ? dy[l] : dy[l] * w[l]);
        t1[l] += g;
        t2[l] += g * d;
    }
    memcpy(a1, t1, sizeof t1);
    memcpy(a2, t2, sizeof t2);
#endif
}

/* One block of 32 values into the float lanes f1, f2 (two vectors each): e = x - sh, then e
   and e * e without dy, else g = dy * w (w NULL: dy) and g * e. */
static inline void cn_lanes_block(const float *x, const float *dy, const float *w, float sh,
                                  cn_sf16 *f1, cn_sf16 *f2) {
    for (int j = 0; j < 2; j++) {
        const cn_sf16 e = cn_sload(x + 16 * j) - sh;
        const cn_sf16 g = dy == NULL ? e
                          : w == NULL ? cn_sload(dy + 16 * j)
                                      : cn_sload(dy + 16 * j) * cn_sload(w + 16 * j);
        f1[j] += g;
        f2[j] += g * e;
    }
}

/* One row's lanes, reduced by cn_tree_half into u1 and u2. Without dy: sums of x - sh and of
   (x - sh)^2; with dy: of g and of g * (x - sh), g = dy * w (w by column, or NULL). */
static inline void cn_short_lanes(const float *x, const float *dy, const float *w,
                                  ptrdiff_t L, float sh, ptrdiff_t flush, cn_sd8 *u1,
                                  cn_sd8 *u2) {
    cn_sf16 f1[2], f2[2], z = {0};
    cn_sd8 a1[4] = {0}, a2[4] = {0};
    ptrdiff_t nb = L / 32, t = nb * 32, b0, b, be;
    for (b0 = 0; b0 < nb; b0 += flush) {
        be = b0 + flush < nb ? b0 + flush : nb;
        f1[0] = f1[1] = f2[0] = f2[1] = z;
        for (b = b0; b < be; b++)
            cn_lanes_block(x + b * 32, dy == NULL ? NULL : dy + b * 32,
                           w == NULL ? NULL : w + b * 32, sh, f1, f2);
        for (int j = 0; j < 2; j++) {
            cn_sflush(f1[j], a1 + 2 * j, b0 == 0);
            cn_sflush(f2[j], a2 + 2 * j, b0 == 0);
        }
    }
    if (L > t)
        cn_lanes_tail(x + t, dy == NULL ? NULL : dy + t, w == NULL ? NULL : w + t, L - t,
                      (double)sh, a1, a2);
    *u1 = cn_tree_half(a1);
    *u2 = cn_tree_half(a2);
}

static inline void cn_short_sums_f32(const float *x, const float *dy, const float *w,
                                     ptrdiff_t L, float sh, ptrdiff_t flush, double *s1,
                                     double *s2) {
    cn_sd8 u1, u2;
    cn_short_lanes(x, dy, w, L, sh, flush, &u1, &u2);
    *s1 = cn_tree_last(u1);
    *s2 = cn_tree_last(u2);
}

#if defined(__clang__)
#define CN_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef long long cn_sl8 __attribute__((vector_size(64)));
#define CN_SHUF(a, b, ...) __builtin_shuffle(a, b, (cn_sl8){__VA_ARGS__})
#endif

/* cn_tree_last of eight rows' lanes u[0..7] at once, the rows as lanes: each level adds the
   same pairs as cn_tree_last, taken from two rows by shuffles (a quarter of the operations). */
static inline void cn_tree_last8(const cn_sd8 *u, double *out, ptrdiff_t n) {
    cn_sd8 p[4], q[2], r;
    for (int k = 0; k < 4; k++)  /* l + 4: rows 2k, 2k + 1 in the low, high halves */
        p[k] = CN_SHUF(u[2 * k], u[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11)
             + CN_SHUF(u[2 * k], u[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15);
    for (int k = 0; k < 2; k++)  /* l + 2: rows 4k..4k + 3, two lanes each */
        q[k] = CN_SHUF(p[2 * k], p[2 * k + 1], 0, 1, 4, 5, 8, 9, 12, 13)
             + CN_SHUF(p[2 * k], p[2 * k + 1], 2, 3, 6, 7, 10, 11, 14, 15);
    r = CN_SHUF(q[0], q[1], 0, 2, 4, 6, 8, 10, 12, 14)  /* l + 1: one lane a row */
      + CN_SHUF(q[0], q[1], 1, 3, 5, 7, 9, 11, 13, 15);
    memcpy(out, &r, (size_t)n * sizeof(double));
}

/* cn_short_sums_f32 of n rows of L values (row i at x + i * L, dy + i * L) around sh[i],
   the last tree levels of eight rows at a time. */
static inline void cn_short_rows_f32(const float *x, const float *dy, const float *w,
                                     ptrdiff_t n, ptrdiff_t L, const float *sh,
                                     ptrdiff_t flush, double *s1, double *s2) {
    cn_sd8 u1[8], u2[8], z = {0};
    for (ptrdiff_t i0 = 0; i0 < n; i0 += 8) {
        const ptrdiff_t m = n - i0 < 8 ? n - i0 : 8;
        for (ptrdiff_t i = 0; i < 8; i++) {
            const ptrdiff_t o = (i0 + i) * L;
            if (i < m)
                cn_short_lanes(x + o, dy == NULL ? NULL : dy + o, w, L, sh[i0 + i], flush,
                               &u1[i], &u2[i]);
            else
                u1[i] = u2[i] = z;
        }
        cn_tree_last8(u1, s1 + i0, m);
        cn_tree_last8(u2, s2 + i0, m);
    }
}
#define CN_HAVE_SHORT 1
#else
#define CN_HAVE_SHORT 0
static inline void cn_short_sums_f32(const float *x, const float *dy, const float *w,
                                     ptrdiff_t L, float sh, ptrdiff_t flush, double *s1,
                                     double *s2) {
    (void)x; (void)dy; (void)w; (void)L; (void)sh; (void)flush; (void)s1; (void)s2;
}
static inline void cn_short_rows_f32(const float *x, const float *dy, const float *w,
                                     ptrdiff_t n, ptrdiff_t L, const float *sh,
                                     ptrdiff_t flush, double *s1, double *s2) {
    (void)x; (void)dy; (void)w; (void)n; (void)L; (void)sh; (void)flush; (void)s1; (void)s2;
}
#endif
#endif
