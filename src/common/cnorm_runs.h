/* The sums of one channel's short runs of float32 data in a plane chunk (_sums.pxi's
   _plane_sums where inner < GATHER: a chunk of a (64, 512, 7, 7) batch norm is 8 runs of 49
   values). The operations are _plane_sums' own, lane by lane and in the same order (each run:
   its whole blocks into the float lanes, flushed into double every `flush` blocks counted
   over the runs; its tail into the double lanes; at the end a last flush and the tree of
   cnorm_tree.h): the same bits on every target. The lanes stay in registers across the runs;
   blocks and tails go in by cnorm_short.h's cn_lanes_block and cn_lanes_tail: in Cython each
   run's tail stored double lanes one by one that the next run's loop loaded again as
   vectors, and every such load waited for the stores to leave (a quarter of that forward's
   samples). The rows layout's sums of 65 to 128 channels keep their lanes in registers too
   (cn_rows_sums_f32, below). */
#ifndef CNORM_RUNS_H
#define CNORM_RUNS_H
#include <stddef.h>
#include <string.h>
#include "cnorm_prefetch.h"
#include "cnorm_short.h"

/* s1, s2: the sums of channel c over its flat range [j0, j1) of an (outer, C, inner) array,
   around sh (without dy: of x - sh and (x - sh)^2; with dy: of dy and dy * (x - sh)). */
static inline void cn_runs_f32(const float *x, const float *dy, ptrdiff_t C, ptrdiff_t inner,
                               ptrdiff_t c, ptrdiff_t j0, ptrdiff_t j1, float sh,
                               ptrdiff_t flush, double *s1, double *s2) {
#if CN_HAVE_SHORT
    cn_sf16 f1[2] = {{0}}, f2[2] = {{0}}, z = {0};
    cn_sd8 a1[4] = {{0}}, a2[4] = {{0}};
    ptrdiff_t o = j0 / inner, i = j0 - o * inner, j = j0, blocks = 0;
    while (j < j1) {
        const ptrdiff_t seg = inner - i < j1 - j ? inner - i : j1 - j, nb = seg / 32;
        const ptrdiff_t at = (o * C + c) * inner + i;
        if (j + seg < j1) {  /* the next run, C runs on: ask for it while this one sums */
            const ptrdiff_t nxt = ((o + 1) * C + c) * inner;
            const ptrdiff_t bytes = (inner < j1 - j - seg ? inner : j1 - j - seg) * 4;
            cn_prefetch(x + nxt, bytes);
            if (dy != NULL)
                cn_prefetch(dy + nxt, bytes);
        }
        for (ptrdiff_t b = 0; b < nb; b++) {
            cn_lanes_block(x + at + 32 * b, dy == NULL ? NULL : dy + at + 32 * b, NULL, sh,
                           f1, f2);
            if (++blocks == flush) {
                for (int h = 0; h < 2; h++) {
                    cn_sflush(f1[h], a1 + 2 * h, 0);
                    cn_sflush(f2[h], a2 + 2 * h, 0);
                    f1[h] = f2[h] = z;
                }
                blocks = 0;
            }
        }
        if (seg > 32 * nb)
            cn_lanes_tail(x + at + 32 * nb, dy == NULL ? NULL : dy + at + 32 * nb, NULL,
                          seg - 32 * nb, (double)sh, a1, a2);
        j += seg;
        o += 1;
        i = 0;
    }
    for (int h = 0; h < 2; h++) {
        cn_sflush(f1[h], a1 + 2 * h, 0);
        cn_sflush(f2[h], a2 + 2 * h, 0);
    }
    *s1 = cn_tree_last(cn_tree_half(a1));
    *s2 = cn_tree_last(cn_tree_half(a2));
#else
    (void)x; (void)dy; (void)C; (void)inner; (void)c; (void)j0; (void)j1; (void)sh;
    (void)flush; (void)s1; (void)s2;
#endif
}

/* The rows layout's sums (_sums.pxi's _rows_sums) of float32 data, 16 K channels of a row (K
   up to 8, cn_rows_sums_takes): every `flush` rows, the float lanes from zero in registers
   over those rows, then added into the double sums s1[c], s2[c] (cn_sflush). The order of
   _rows_sums' other branches, channel by channel: the same bits. A row's block of up to 128
   channels is read whole in memory order (by blocks of 32, a row's lines were read apart,
   which the prefetchers follow badly: BatchNorm2d channels-last (16, 128, 28, 28) fwd + bwd
   1.9-2.1 -> 1.6-1.7 ms at one thread, 1.0-1.1 -> 0.89 ms at two, AMD EPYC). fs: the shifts,
   in float. */
__attribute__((always_inline)) static inline void cn_rows_block_k(
        const float *x, const float *dy, ptrdiff_t rows, ptrdiff_t C, const float *fs,
        double *s1, double *s2, const int K) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    cn_sf16 f1[8], f2[8], sv[8], z = {0};
    cn_sd8 a[2];
    for (int k = 0; k < K; k++) {
        sv[k] = cn_sload(fs + 16 * k);
        f1[k] = f2[k] = z;
    }
    for (ptrdiff_t r = 0; r < rows; r++)
        for (int k = 0; k < K; k++) {
            const cn_sf16 e = cn_sload(x + r * C + 16 * k) - sv[k];
            const cn_sf16 g = dy == NULL ? e : cn_sload(dy + r * C + 16 * k);
            f1[k] += g;
            f2[k] += g * e;
        }
    /* the sums by intrinsic loads and stores, s1's and s2's written out: through memcpy or a
       loop over both, BatchNorm1d (256, 1024) fwd + bwd ran 217 -> 248 us (AMD EPYC) */
    for (int k = 0; k < K; k++) {
        a[0] = (cn_sd8)_mm512_loadu_pd(s1 + 16 * k);
        a[1] = (cn_sd8)_mm512_loadu_pd(s1 + 16 * k + 8);
        cn_sflush(f1[k], a, 0);
        _mm512_storeu_pd(s1 + 16 * k, (__m512d)a[0]);
        _mm512_storeu_pd(s1 + 16 * k + 8, (__m512d)a[1]);
        a[0] = (cn_sd8)_mm512_loadu_pd(s2 + 16 * k);
        a[1] = (cn_sd8)_mm512_loadu_pd(s2 + 16 * k + 8);
        cn_sflush(f2[k], a, 0);
        _mm512_storeu_pd(s2 + 16 * k, (__m512d)a[0]);
        _mm512_storeu_pd(s2 + 16 * k + 8, (__m512d)a[1]);
    }
#else
    (void)x; (void)dy; (void)rows; (void)C; (void)fs; (void)s1; (void)s2; (void)K;
#endif
}

/* Whether cn_rows_sums_f32 takes C channels: with AVX-512's 32 registers (AVX2's 16 spill the
   lanes, 2.2 -> 3.4 ms on that BatchNorm2d), 16 K of them from 65 up. */
static inline int cn_rows_sums_takes(ptrdiff_t C) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    return CN_HAVE_SHORT && C % 16 == 0 && C > 64;
#else
    (void)C;
    return 0;
#endif
}

/* Rows [r0, r1) of the (outer, C) matrix (cn_rows_sums_takes), `flush` rows at a time, 128
   channels at a time; s1, s2 (C each) are added to. Wider rows by 128-channel blocks rather
   than _rows_sums' 16-channel ones with the flush through memory: the statistics' share of
   perf samples against the apply's, BatchNorm1d (256, 1024) fwd 1.15 -> 0.76, fwd + bwd
   1.35 -> 0.68, (1024, 256) 0.97 -> 0.71, channels-last (32, 256, 14, 14) 1.02 -> 0.83
   (AMD EPYC). */
__attribute__((always_inline)) static inline void cn_rows_sums_body(
        const float *x, const float *dy, ptrdiff_t C, ptrdiff_t r0, ptrdiff_t r1,
        const float *fs, ptrdiff_t flush, double *s1, double *s2) {
    for (ptrdiff_t r = r0; r < r1; r += flush) {
        const ptrdiff_t m = r1 - r < flush ? r1 - r : flush;
        for (ptrdiff_t c = 0; c < C; c += 128) {
            const float *p = x + r * C + c, *g = dy == NULL ? NULL : dy + r * C + c;
            /* K a constant in each case, so that the lanes stay in registers */
#define CN_SUMS_K(K) cn_rows_block_k(p, g, m, C, fs + c, s1 + c, s2 + c, K)
            switch ((C - c) / 16) {
            case 1: CN_SUMS_K(1); break;
            case 2: CN_SUMS_K(2); break;
            case 3: CN_SUMS_K(3); break;
            case 4: CN_SUMS_K(4); break;
            case 5: CN_SUMS_K(5); break;
            case 6: CN_SUMS_K(6); break;
            case 7: CN_SUMS_K(7); break;
            default: CN_SUMS_K(8); break;
            }
#undef CN_SUMS_K
        }
    }
}

/* The same, with and without dy compiled apart (the test out of every row's loop). */
static inline void cn_rows_sums_f32(const float *x, const float *dy, ptrdiff_t C,
                                    ptrdiff_t r0, ptrdiff_t r1, const float *fs,
                                    ptrdiff_t flush, double *s1, double *s2) {
    if (dy == NULL)
        cn_rows_sums_body(x, NULL, C, r0, r1, fs, flush, s1, s2);
    else
        cn_rows_sums_body(x, dy, C, r0, r1, fs, flush, s1, s2);
}
#endif
