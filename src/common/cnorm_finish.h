/* The end of a chunk's sums (_moments.pxi's _finish_chunk and _too_wide): mean and M2 from the
   sums s1 = sum(x - shift), s2 = sum((x - shift)^2) of n values. Written in C without branches
   (& and | for and and or), so that the rows of a row norm's block finish in one vectorized
   loop (cn_finish_rows): in Cython's code GCC kept a scalar loop, a tenth of LayerNorm
   (4096, 64)'s forward. The same operations in every form: the same bits. */
#ifndef CNORM_FINISH_H
#define CNORM_FINISH_H
#include <float.h>
#include <stddef.h>

/* mean and M2 (clamped at 0); 1 when they lost > 6 digits to a shift far from the mean (the
   caller sums again around the mean) */
static inline int cn_finish(double n, double shift, double s1, double s2, double *mean,
                            double *m2) {
    const double mu = s1 / n, corr = s1 * mu, v = s2 - corr, m = shift + mu;
    *mean = m;
    *m2 = v < 0.0 ? 0.0 : v;
    return (corr > 1e6 * v) & (m - m == 0.0);
}

/* float32 lanes lost a chunk: (x - shift)^2 overflowed (|x - shift| above ~1e19) or
   underflowed (below ~1e-19) in float. NaN data also lands here, and stays NaN. */
static inline int cn_too_wide(double n, double s1, double m2) {
    return !(m2 <= DBL_MAX) | ((m2 < 1e-30 * n) & ((m2 != 0.0) | (s1 != 0.0)));
}

/* k rows of n values each: mean[i] and m2[i] (in place of the row's s2) from s1[i], m2[i]
   around sh[i]; bad[i] when the row lost digits, or (float lanes: wide) cn_too_wide, or its
   mean is not finite (an infinity in the row). Returns whether any row is bad. Two loops:
   GCC 12 vectorizes neither as one (the flags' compares of the clamped M2 in the loop that
   clamps it). */
static inline int cn_finish_rows(ptrdiff_t k, double n, const double *sh, const double *s1,
                                 double *m2, double *mean, int wide, long long *bad) {
    long long any = 0;
    for (ptrdiff_t i = 0; i < k; i++)
        bad[i] = cn_finish(n, sh[i], s1[i], m2[i], &mean[i], &m2[i]);
    for (ptrdiff_t i = 0; i < k; i++) {
        bad[i] |= (wide & cn_too_wide(n, s1[i], m2[i])) | !(mean[i] - mean[i] == 0.0);
        any |= bad[i];
    }
    return any != 0;
}
#endif
