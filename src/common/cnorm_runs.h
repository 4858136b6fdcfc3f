/* The sums of one channel's short runs of float32 data in a plane chunk (_sums.pxi's
   _plane_sums where inner < GATHER: a chunk of a (64, 512, 7, 7) batch norm is 8 runs of 49
   values). The operations are _plane_sums' own, lane by lane and in the same order (each run:
   its whole blocks into the float lanes, flushed into double every `flush` blocks counted
   over the runs; its tail into the double lanes; at the end a last flush and the tree of
   cnorm_tree.h): the same bits on every target. The lanes stay in registers across the runs;
   blocks and tails go in by cnorm_short.h's cn_lanes_block and cn_lanes_tail: in Cython each run's tail stored
   double lanes one by one that the next run's loop loaded again as vectors, and every such
   load waited for the stores to leave (a quarter of that forward's samples). */
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
#endif
