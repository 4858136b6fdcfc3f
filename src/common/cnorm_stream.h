/* The forward's output (and the backward's dx) of float data written with non-temporal
   (streaming) stores, which skip the read of each output line that an ordinary store makes
   first (read-for-ownership) and keep the input in cache. Only for outputs far larger than the
   caches (the caller decides): there the output goes to memory anyway. The arithmetic is the
   ordinary loop's, operation by operation (no fused multiply-add), so the bits are the same.
   Each loop is written once over the target's vector (AVX-512 or AVX); a run's head, up to
   the first aligned output line, and its tail go by ordinary stores. */
#ifndef CNORM_STREAM_H
#define CNORM_STREAM_H
#include <stddef.h>
#include <stdint.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define CN_STREAMS 1
typedef __m512 cn_sv;
enum { CN_SW = 16 };
#define CN_LD _mm512_loadu_ps
#define CN_SET _mm512_set1_ps
#define CN_SUB _mm512_sub_ps
#define CN_MUL _mm512_mul_ps
#define CN_ADD _mm512_add_ps
#define CN_ST _mm512_stream_ps
#elif defined(__AVX__)
#include <immintrin.h>
#define CN_STREAMS 1
typedef __m256 cn_sv;
enum { CN_SW = 8 };
#define CN_LD _mm256_loadu_ps
#define CN_SET _mm256_set1_ps
#define CN_SUB _mm256_sub_ps
#define CN_MUL _mm256_mul_ps
#define CN_ADD _mm256_add_ps
#define CN_ST _mm256_stream_ps
#else
#define CN_STREAMS 0
#endif

#if CN_STREAMS
/* The loop over t < n: SCALAR(t) for the head and the tail, VECTOR(t) (a cn_sv) streamed. */
#define CN_STREAM_LOOP(out, n, SCALAR, VECTOR)                                               \
    do {                                                                                     \
        ptrdiff_t t = 0;                                                                     \
        for (; t < (n) && ((uintptr_t)((out) + t) & (CN_SW * 4 - 1)) != 0; t++)              \
            (out)[t] = SCALAR(t);                                                            \
        for (; t + CN_SW <= (n); t += CN_SW)                                                 \
            CN_ST((out) + t, VECTOR(t));                                                     \
        for (; t < (n); t++)                                                                 \
            (out)[t] = SCALAR(t);                                                            \
    } while (0)
#endif

/* The rows layout, coefficient vectors over the run: y[c] = ((x[c] - hi[c]) - lo[c]) * a[c]
   + b[c]. Each function returns 0 where the target has no streaming form (the caller then
   runs its own loop). */
#define CN_COLS_S(c) (((x[c] - hi[c]) - lo[c]) * a[c] + b[c])
#define CN_COLS_V(c) \
    CN_ADD(CN_MUL(CN_SUB(CN_SUB(CN_LD(x + c), CN_LD(hi + c)), CN_LD(lo + c)), CN_LD(a + c)), \
           CN_LD(b + c))
static inline int cn_norm_cols_stream(const float *x, float *y, ptrdiff_t n, const float *hi,
                                      const float *lo, const float *a, const float *b) {
#if CN_STREAMS
    CN_STREAM_LOOP(y, n, CN_COLS_S, CN_COLS_V);
    return 1;
#else
    (void)x; (void)y; (void)n; (void)hi; (void)lo; (void)a; (void)b;
    return 0;
#endif
}

/* Its backward: dx[c] = dy[c] * k1[c] + (((x[c] - hi[c]) - lo[c]) * k2[c] + k3[c]). */
#define CN_GCOLS_S(c) (dy[c] * k1[c] + (((x[c] - hi[c]) - lo[c]) * k2[c] + k3[c]))
#define CN_GCOLS_V(c)                                                                         \
    CN_ADD(CN_MUL(CN_LD(dy + c), CN_LD(k1 + c)),                                             \
           CN_ADD(CN_MUL(CN_SUB(CN_SUB(CN_LD(x + c), CN_LD(hi + c)), CN_LD(lo + c)),          \
                         CN_LD(k2 + c)), CN_LD(k3 + c)))
static inline int cn_grad_cols_stream(const float *x, const float *dy, float *dx, ptrdiff_t n,
                                      const float *hi, const float *lo, const float *k1,
                                      const float *k2, const float *k3) {
#if CN_STREAMS
    CN_STREAM_LOOP(dx, n, CN_GCOLS_S, CN_GCOLS_V);
    return 1;
#else
    (void)x; (void)dy; (void)dx; (void)n; (void)hi; (void)lo; (void)k1; (void)k2; (void)k3;
    return 0;
#endif
}

/* A run of one channel (planar) or one row (row norms): ((x - hi) - lo) * a, times the
   value's weight wc[t] when given, plus its bias bc[t] when given, else b (_norm_run). */
#define CN_RUN_S(t) \
    ((wc ? (((x[t] - hi) - lo) * a) * wc[t] : ((x[t] - hi) - lo) * a) + (bc ? bc[t] : b))
#define CN_RUN_V(t) \
    CN_ADD(wc ? CN_MUL(CN_MUL(CN_SUB(CN_SUB(CN_LD(x + t), vh), vl), va), CN_LD(wc + t))     \
              : CN_MUL(CN_SUB(CN_SUB(CN_LD(x + t), vh), vl), va),                          \
           bc ? CN_LD(bc + t) : vb)
static inline int cn_norm_run_stream(const float *x, float *y, ptrdiff_t n, float hi, float lo,
                                     float a, float b, const float *wc, const float *bc) {
#if CN_STREAMS
    cn_sv vh = CN_SET(hi), vl = CN_SET(lo), va = CN_SET(a), vb = CN_SET(b);
    CN_STREAM_LOOP(y, n, CN_RUN_S, CN_RUN_V);
    return 1;
#else
    (void)x; (void)y; (void)n; (void)hi; (void)lo; (void)a; (void)b; (void)wc; (void)bc;
    return 0;
#endif
}

/* Its backward: dx[t] = g * k1 + (((x[t] - hi) - lo) * k2 + k3), g = dy[t] times the value's
   weight wc[t] when given (_grad_run). */
#define CN_GRUN_S(t) ((wc ? dy[t] * wc[t] : dy[t]) * k1 + (((x[t] - hi) - lo) * k2 + k3))
#define CN_GRUN_V(t)                                                                          \
    CN_ADD(CN_MUL(wc ? CN_MUL(CN_LD(dy + t), CN_LD(wc + t)) : CN_LD(dy + t), v1),             \
           CN_ADD(CN_MUL(CN_SUB(CN_SUB(CN_LD(x + t), vh), vl), v2), v3))
static inline int cn_grad_run_stream(const float *x, const float *dy, float *dx, ptrdiff_t n,
                                     float hi, float lo, float k1, float k2, float k3,
                                     const float *wc) {
#if CN_STREAMS
    cn_sv vh = CN_SET(hi), vl = CN_SET(lo), v1 = CN_SET(k1), v2 = CN_SET(k2), v3 = CN_SET(k3);
    CN_STREAM_LOOP(dx, n, CN_GRUN_S, CN_GRUN_V);
    return 1;
#else
    (void)x; (void)dy; (void)dx; (void)n; (void)hi; (void)lo; (void)k1; (void)k2; (void)k3;
    (void)wc;
    return 0;
#endif
}

/* Orders the streaming stores before what follows (another thread's reads of the output). */
static inline void cn_stream_fence(void) {
#if CN_STREAMS
    _mm_sfence();
#endif
}
#endif
