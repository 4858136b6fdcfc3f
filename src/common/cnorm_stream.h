/* The forward's output (and the backward's dx) of float data written with non-temporal
   (streaming) stores, which skip the read of each output line that an ordinary store makes
   first (read-for-ownership) and keep the input in cache. Only for outputs far larger than the caches (the caller decides):
   there the output goes to memory anyway. The arithmetic is the ordinary loop's, operation by
   operation (no fused multiply-add), so the bits are the same. */
#ifndef CNORM_STREAM_H
#define CNORM_STREAM_H
#include <stddef.h>
#include <stdint.h>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#define CN_STREAMS 1
#else
#define CN_STREAMS 0
#endif

/* y[c] = ((x[c] - hi[c]) - lo[c]) * a[c] + b[c] for c < n. Returns 0 when this target has
   no streaming form (the caller runs its own loop). */
static inline int cn_norm_cols_stream(const float *x, float *y, ptrdiff_t n, const float *hi,
                                      const float *lo, const float *a, const float *b) {
#if defined(__AVX512F__)
    ptrdiff_t c = 0;
    for (; c < n && ((uintptr_t)(y + c) & 63) != 0; c++)
        y[c] = ((x[c] - hi[c]) - lo[c]) * a[c] + b[c];
    for (; c + 16 <= n; c += 16) {
        __m512 v = _mm512_sub_ps(_mm512_loadu_ps(x + c), _mm512_loadu_ps(hi + c));
        v = _mm512_sub_ps(v, _mm512_loadu_ps(lo + c));
        v = _mm512_add_ps(_mm512_mul_ps(v, _mm512_loadu_ps(a + c)), _mm512_loadu_ps(b + c));
        _mm512_stream_ps(y + c, v);
    }
    for (; c < n; c++)
        y[c] = ((x[c] - hi[c]) - lo[c]) * a[c] + b[c];
    return 1;
#elif defined(__AVX__)
    ptrdiff_t c = 0;
    for (; c < n && ((uintptr_t)(y + c) & 31) != 0; c++)
        y[c] = ((x[c] - hi[c]) - lo[c]) * a[c] + b[c];
    for (; c + 8 <= n; c += 8) {
        __m256 v = _mm256_sub_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(hi + c));
        v = _mm256_sub_ps(v, _mm256_loadu_ps(lo + c));
        v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_loadu_ps(a + c)), _mm256_loadu_ps(b + c));
        _mm256_stream_ps(y + c, v);
    }
    for (; c < n; c++)
        y[c] = ((x[c] - hi[c]) - lo[c]) * a[c] + b[c];
    return 1;
#else
    (void)x; (void)y; (void)n; (void)hi; (void)lo; (void)a; (void)b;
    return 0;
#endif
}

/* One value of a run: ((x - hi) - lo) * a, times the value's weight wc[t] when given, plus
   its bias bc[t] when given, else b: _norm_run's loops. */
#define CN_RUN_VALUE(t) \
    ((wc ? (((x[t] - hi) - lo) * a) * wc[t] : ((x[t] - hi) - lo) * a) + (bc ? bc[t] : b))

/* A run of one channel (planar) or one row (row norms, with per-value wc and bc, or NULL). */
static inline int cn_norm_run_stream(const float *x, float *y, ptrdiff_t n, float hi, float lo,
                                     float a, float b, const float *wc, const float *bc) {
#if defined(__AVX512F__)
    ptrdiff_t t = 0;
    __m512 vh = _mm512_set1_ps(hi), vl = _mm512_set1_ps(lo), va = _mm512_set1_ps(a),
           vb = _mm512_set1_ps(b), v;
    for (; t < n && ((uintptr_t)(y + t) & 63) != 0; t++)
        y[t] = CN_RUN_VALUE(t);
    for (; t + 16 <= n; t += 16) {
        v = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(x + t), vh), vl), va);
        if (wc) v = _mm512_mul_ps(v, _mm512_loadu_ps(wc + t));
        _mm512_stream_ps(y + t, _mm512_add_ps(v, bc ? _mm512_loadu_ps(bc + t) : vb));
    }
    for (; t < n; t++)
        y[t] = CN_RUN_VALUE(t);
    return 1;
#elif defined(__AVX__)
    ptrdiff_t t = 0;
    __m256 vh = _mm256_set1_ps(hi), vl = _mm256_set1_ps(lo), va = _mm256_set1_ps(a),
           vb = _mm256_set1_ps(b), v;
    for (; t < n && ((uintptr_t)(y + t) & 31) != 0; t++)
        y[t] = CN_RUN_VALUE(t);
    for (; t + 8 <= n; t += 8) {
        v = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + t), vh), vl), va);
        if (wc) v = _mm256_mul_ps(v, _mm256_loadu_ps(wc + t));
        _mm256_stream_ps(y + t, _mm256_add_ps(v, bc ? _mm256_loadu_ps(bc + t) : vb));
    }
    for (; t < n; t++)
        y[t] = CN_RUN_VALUE(t);
    return 1;
#else
    (void)x; (void)y; (void)n; (void)hi; (void)lo; (void)a; (void)b; (void)wc; (void)bc;
    return 0;
#endif
}

/* A backward run: dx[t] = g * k1 + (((x[t] - hi) - lo) * k2 + k3), g = dy[t] times the
   value's weight wc[t] when given (_grad_run's loops). */
#define CN_GRAD_VALUE(t) \
    ((wc ? dy[t] * wc[t] : dy[t]) * k1 + (((x[t] - hi) - lo) * k2 + k3))

static inline int cn_grad_run_stream(const float *x, const float *dy, float *dx, ptrdiff_t n,
                                     float hi, float lo, float k1, float k2, float k3,
                                     const float *wc) {
#if defined(__AVX512F__)
    ptrdiff_t t = 0;
    __m512 vh = _mm512_set1_ps(hi), vl = _mm512_set1_ps(lo), v1 = _mm512_set1_ps(k1),
           v2 = _mm512_set1_ps(k2), v3 = _mm512_set1_ps(k3), g, v;
    for (; t < n && ((uintptr_t)(dx + t) & 63) != 0; t++)
        dx[t] = CN_GRAD_VALUE(t);
    for (; t + 16 <= n; t += 16) {
        g = _mm512_loadu_ps(dy + t);
        if (wc) g = _mm512_mul_ps(g, _mm512_loadu_ps(wc + t));
        v = _mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(x + t), vh), vl);
        v = _mm512_add_ps(_mm512_mul_ps(v, v2), v3);
        _mm512_stream_ps(dx + t, _mm512_add_ps(_mm512_mul_ps(g, v1), v));
    }
    for (; t < n; t++)
        dx[t] = CN_GRAD_VALUE(t);
    return 1;
#elif defined(__AVX__)
    ptrdiff_t t = 0;
    __m256 vh = _mm256_set1_ps(hi), vl = _mm256_set1_ps(lo), v1 = _mm256_set1_ps(k1),
           v2 = _mm256_set1_ps(k2), v3 = _mm256_set1_ps(k3), g, v;
    for (; t < n && ((uintptr_t)(dx + t) & 31) != 0; t++)
        dx[t] = CN_GRAD_VALUE(t);
    for (; t + 8 <= n; t += 8) {
        g = _mm256_loadu_ps(dy + t);
        if (wc) g = _mm256_mul_ps(g, _mm256_loadu_ps(wc + t));
        v = _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + t), vh), vl);
        v = _mm256_add_ps(_mm256_mul_ps(v, v2), v3);
        _mm256_stream_ps(dx + t, _mm256_add_ps(_mm256_mul_ps(g, v1), v));
    }
    for (; t < n; t++)
        dx[t] = CN_GRAD_VALUE(t);
    return 1;
#else
    (void)x; (void)dy; (void)dx; (void)n; (void)hi; (void)lo; (void)k1; (void)k2; (void)k3;
    (void)wc;
    return 0;
#endif
}

/* Orders the streaming stores before what follows (another thread's reads of the output). */
static inline void cn_stream_fence(void) {
#if defined(__AVX512F__) || defined(__AVX__)
    _mm_sfence();
#endif
}
#endif
