/* The pairwise tree that ends every lane sum: 32 double lanes to one value, in a fixed order
   (lanes l and l + 16, then l and l + 8, then l and l + 4, then (0 + 2) + (1 + 3)). Written
   with vector types where the compiler has them: written as scalar code, GCC spills the lanes
   and adds them one load at a time (a quarter of a short row's LayerNorm). The scalar form
   below adds in the same order: the same bits on every target. */
#ifndef CNORM_TREE_H
#define CNORM_TREE_H
#include <string.h>

#if defined(__GNUC__)
typedef double cn_td8 __attribute__((vector_size(64)));

/* The first two levels of four vectors of lanes: lanes l and l + 16, then l and l + 8. */
static inline cn_td8 cn_tree_half(const cn_td8 *q) {
    return (q[0] + q[2]) + (q[1] + q[3]);
}

/* The last three levels of the eight lanes left: l and l + 4, then l + 2, then l + 1. */
static inline double cn_tree_last(cn_td8 u) {
    return ((u[0] + u[4]) + (u[2] + u[6])) + ((u[1] + u[5]) + (u[3] + u[7]));
}
#endif

static inline double cn_tree32(const double *a) {
#if defined(__GNUC__)
    cn_td8 q[4];
    memcpy(q, a, sizeof q);
    return cn_tree_last(cn_tree_half(q));
#else
    double t[16];
    for (int l = 0; l < 16; l++) t[l] = a[l] + a[l + 16];
    for (int l = 0; l < 8; l++) t[l] += t[l + 8];
    return ((t[0] + t[4]) + (t[2] + t[6])) + ((t[1] + t[5]) + (t[3] + t[7]));
#endif
}

#endif
