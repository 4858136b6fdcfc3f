/* Vector loops of the apply step written once over the target's vector (AVX-512 or AVX), the
   arithmetic the ordinary loop's, operation by operation (no fused multiply-add), so the bits
   are the same. A training backward's dx of float data goes out by non-temporal (streaming)
   stores, which skip the read of each output line that an ordinary store makes first
   (read-for-ownership) and keep x and dy in cache; only for large arrays (the caller
   decides): there dx goes to memory anyway. (Planar forward outputs stream only from three
   quarters of the L3 up (_apply.pxi's _stream_out): below it ordinary stores are faster on
   two threads, where the report's loop keeps x and y in L3. Rows layouts of 1 MB and of 25
   MB measured no faster streaming. Row norms' long rows stream theirs: cn_norm_run_vec.)
   A streaming run's head, up to the first aligned output
   line, and its tail go by ordinary stores. The rows layout's forward and training backward
   (cn_rows_apply) keep their coefficients in registers; a backward of 65 to 128 channels
   streams its dx (cn_rows_plan). */
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
#define CN_STU _mm512_storeu_ps
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
#define CN_STU _mm256_storeu_ps
#else
#define CN_STREAMS 0
#endif

/* A training backward's run of one channel (planar) or one row's column block (row norms):
   dx[t] = g * k1 + (((x[t] - hi) - lo) * k2 + k3), g = dy[t] times the value's weight wc[t]
   when given (_grad_run's loops). Only called where CN_STREAMS (the caller's condition). */
#define CN_GRUN(t) ((wc ? dy[t] * wc[t] : dy[t]) * k1 + (((x[t] - hi) - lo) * k2 + k3))
static inline void cn_grad_run_stream(const float *x, const float *dy, float *dx, ptrdiff_t n,
                                      float hi, float lo, float k1, float k2, float k3,
                                      const float *wc) {
#if CN_STREAMS
    cn_sv vh = CN_SET(hi), vl = CN_SET(lo), v1 = CN_SET(k1), v2 = CN_SET(k2), v3 = CN_SET(k3), g;
    ptrdiff_t t = 0;
    for (; t < n && ((uintptr_t)(dx + t) & (CN_SW * 4 - 1)) != 0; t++)
        dx[t] = CN_GRUN(t);
    for (; t + CN_SW <= n; t += CN_SW) {
        g = wc ? CN_MUL(CN_LD(dy + t), CN_LD(wc + t)) : CN_LD(dy + t);
        CN_ST(dx + t, CN_ADD(CN_MUL(g, v1), CN_ADD(CN_MUL(CN_SUB(CN_SUB(CN_LD(x + t), vh), vl),
                                                          v2), v3)));
    }
    for (; t < n; t++)
        dx[t] = CN_GRUN(t);
#else
    (void)x; (void)dy; (void)dx; (void)n; (void)hi; (void)lo; (void)k1; (void)k2; (void)k3;
    (void)wc;
#endif
}

/* A forward run of a row norm's row: y[t] = (((x[t] - hi) - lo) * a) * wc[t] + bc[t], without
   wc: ((x[t] - hi) - lo) * a + ..., without bc: ... + b (_norm_run's loops, operation by
   operation). stream: by streaming stores (long rows, large calls); else ordinary stores, for
   short rows: _norm_run's loop, vectorized by GCC, spent half its time on a 64-value row in
   the checks of its pointers' overlap, the alignment of y and the ends (LayerNorm (4096, 64)
   forward: 111 -> 107 us, AMD EPYC). Only called where CN_STREAMS. */
#define CN_NRUN(t) ((wc ? (((x[t] - hi) - lo) * a) * wc[t] : ((x[t] - hi) - lo) * a) \
                    + (bc ? bc[t] : b))
static inline void cn_norm_run_vec(const float *x, float *y, ptrdiff_t n, float hi, float lo,
                                   float a, float b, const float *wc, const float *bc,
                                   int stream) {
#if CN_STREAMS
    cn_sv vh = CN_SET(hi), vl = CN_SET(lo), va = CN_SET(a), vb = CN_SET(b), v;
    ptrdiff_t t = 0;
    for (; stream && t < n && ((uintptr_t)(y + t) & (CN_SW * 4 - 1)) != 0; t++)
        y[t] = CN_NRUN(t);
    for (; t + CN_SW <= n; t += CN_SW) {
        v = CN_MUL(CN_SUB(CN_SUB(CN_LD(x + t), vh), vl), va);
        if (wc)
            v = CN_MUL(v, CN_LD(wc + t));
        v = CN_ADD(v, bc ? CN_LD(bc + t) : vb);
        if (stream)
            CN_ST(y + t, v);
        else
            CN_STU(y + t, v);
    }
    for (; t < n; t++)
        y[t] = CN_NRUN(t);
#else
    (void)x; (void)y; (void)n; (void)hi; (void)lo; (void)a; (void)b; (void)wc; (void)bc;
    (void)stream;
#endif
}

/* Rows of the rows layout (channels-last), by _apply_cols' loops operation by operation:
   the forward without epilogue, y = ((x - hi) - lo) * a + b, or (dy given) a training
   backward, dx = dy * a + (((x - hi) - lo) * b + e); for C a multiple of 16. The rows go in
   tiles of about 16 KB, each tile by blocks of up to 64 channels whose coefficients are held
   in registers over the tile's rows. _apply_cols loads every coefficient again for every
   value it stores (GroupNorm(32) channels-last (32, 64, 56, 56) forward: 2.9 -> 2.4 ms on
   one thread, AMD EPYC). */
#if defined(__GNUC__) && CN_STREAMS
__attribute__((always_inline)) static inline void cn_rows_apply_k(
        const float *x, const float *dy, float *y, ptrdiff_t rows, ptrdiff_t stride,
        const float *hi, const float *lo, const float *a, const float *b, const float *e,
        const int K, int stream) {
    cn_sv vh[8], vl[8], va[8], vb[8], ve[8], d;
    const int W = CN_SW, V = K * 16 / CN_SW;  /* vectors of the block's row */
    for (int k = 0; k < V; k++) {
        vh[k] = CN_LD(hi + k * W);
        vl[k] = CN_LD(lo + k * W);
        va[k] = CN_LD(a + k * W);
        vb[k] = CN_LD(b + k * W);
        ve[k] = dy != NULL ? CN_LD(e + k * W) : vb[k];
    }
    for (ptrdiff_t r = 0; r < rows; r++)
        for (int k = 0; k < V; k++) {
            const ptrdiff_t o = r * stride + k * W;
            d = CN_SUB(CN_SUB(CN_LD(x + o), vh[k]), vl[k]);
            d = dy == NULL ? CN_ADD(CN_MUL(d, va[k]), vb[k])
                           : CN_ADD(CN_MUL(CN_LD(dy + o), va[k]), CN_ADD(CN_MUL(d, vb[k]), ve[k]));
            if (stream)
                CN_ST(y + o, d);
            else
                CN_STU(y + o, d);
        }
}
#endif

/* How cn_rows_apply takes C channels, forward or (grad) backward: 0 not at all, 1 by
   ordinary stores, 2 by streaming stores. C a multiple of 16. The backward of at most 64
   channels (one block a row) by ordinary stores; of up to 128 (a row's two blocks read at
   different times, slower than _apply_cols through the cache: BatchNorm2d (16, 128, 28, 28)
   fwd + bwd 2.0 -> 2.2 ms) only where dx may stream (`streamable`: large, its rows
   cache-line aligned), which skips the read of dx's lines and keeps x and dy in cache
   (1.59-1.63 -> 1.42 ms at one thread, 1.0-1.2 -> 0.86-0.96 at two; in L2, (4, 128, 28, 28)
   0.33 -> 0.31 ms; AMD EPYC). 64 channels stream slower (0.60-0.72 -> 0.81-0.91 ms on
   (16, 64, 28, 28)): their arrays stay in cache. */
static inline int cn_rows_plan(ptrdiff_t C, int grad, int streamable) {
#if defined(__GNUC__) && CN_STREAMS
    if (C % 16 != 0 || (grad && C > 128))
        return 0;
    if (!grad || C <= 64)
        return 1;
    return streamable ? 2 : 0;
#else
    (void)C; (void)grad; (void)streamable;
    return 0;
#endif
}

/* `rows` rows of C channels (cn_rows_plan), the coefficient vectors `coef` (hi, lo, a, b,
   and e with dy) C apart; `stream`: the output by streaming stores (y cache-line aligned). */
static inline void cn_rows_apply(const float *x, const float *dy, float *y, ptrdiff_t rows,
                                 ptrdiff_t C, const float *coef, int stream) {
#if defined(__GNUC__) && CN_STREAMS
    const ptrdiff_t tile = C >= 4096 ? 1 : 4096 / C;
    const float *hi = coef, *lo = coef + C, *a = coef + 2 * C, *b = coef + 3 * C;
    const float *e = coef + 4 * C;  /* read only with dy */
    for (ptrdiff_t r = 0; r < rows; r += tile) {
        const ptrdiff_t m = rows - r < tile ? rows - r : tile;
        for (ptrdiff_t c = 0; c < C; c += 64) {
            const ptrdiff_t o = r * C + c;
            const float *g = dy == NULL ? NULL : dy + o;
            /* K a constant in each case, so that the block's loops unroll into registers */
#define CN_ROWS_K(K) cn_rows_apply_k(x + o, g, y + o, m, C, hi + c, lo + c, a + c, b + c, \
                                     e + c, K, stream)
            switch (C - c < 64 ? (C - c) / 16 : 4) {
            case 1: CN_ROWS_K(1); break;
            case 2: CN_ROWS_K(2); break;
            case 3: CN_ROWS_K(3); break;
            default: CN_ROWS_K(4); break;
            }
#undef CN_ROWS_K
        }
    }
#else
    (void)x; (void)dy; (void)y; (void)rows; (void)C; (void)coef;
#endif
}

/* Orders the streaming stores before what follows (another thread's reads of the output). */
static inline void cn_stream_fence(void) {
#if CN_STREAMS
    _mm_sfence();
#endif
}
#endif
