/* exp(x) in double without a call into libm, so that the loops of the fused activations (silu,
   and gelu's derivative) vectorize: libm's exp is one scalar call per value, and its vector
   forms are only declared under -ffast-math, which this build does not use.

   x = n ln2 + r with |r| <= ln2/2; exp(r) by its Taylor series to r^13 (the first term left
   out is below 5e-18 relative), summed by Estrin's scheme, then times 2^n built in the exponent bits. The error is a few
   ulp of double, far inside the one rounding to the data type that follows. n comes from the
   1.5 * 2^52 rounding trick, so no float-to-integer conversion is needed (AVX2 has none for
   64-bit lanes). At the edges of double's range it is coarser, which the activations do not
   see beyond 1e-305 of absolute error: between 709 and 709.78 it gives exp(709), above that
   +inf; below -708 it gives 0 (exp is near double's least normal there). NaN stays NaN. */
#ifndef CNORM_EXP_H
#define CNORM_EXP_H
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline double cn_exp(double x) {
    const double magic = 6755399441055744.0;  /* 1.5 * 2^52: adding it rounds to an integer */
    const double log2e = 1.4426950408889634, ln2_hi = 0.6931471803691238,
                 ln2_lo = 1.9082149292705877e-10;
    double xc = x > 709.0 ? 709.0 : (x < -708.0 ? -708.0 : x);
    double t = xc * log2e + magic;
    double n = t - magic;
    double r = (xc - n * ln2_hi) - n * ln2_lo;
    /* Estrin's scheme: the terms in pairs, then pairs of pairs, a dependency chain of 8
       operations where Horner's has 26 (without FMA: -ffp-contract=off keeps every SIMD
       target's bits the same) */
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double q0 = 1.0 + r, q1 = 0.5 + r * (1.0 / 6.0), q2 = 1.0 / 24.0 + r * (1.0 / 120.0),
           q3 = 1.0 / 720.0 + r * (1.0 / 5040.0), q4 = 1.0 / 40320.0 + r * (1.0 / 362880.0),
           q5 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0),
           q6 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0);
    double s0 = q0 + q1 * r2, s1 = q2 + q3 * r2, s2 = q4 + q5 * r2;
    double p = (s0 + s1 * r4) + (s2 + q6 * r4) * r8;
    int64_t tb, pb;
    memcpy(&tb, &t, 8);
    memcpy(&pb, &p, 8);
    pb += (tb - (int64_t)0x4338000000000000LL) << 52;  /* n, from t's low bits, into p's exponent */
    memcpy(&p, &pb, 8);
    p = x > 709.782712893384 ? INFINITY : p;
    p = x < -708.0 ? 0.0 : p;
    return x == x ? p : x;
}

/* The same for float data, in float: Taylor to r^7 (the first term left out is below 6e-9
   relative, a tenth of float's ulp), 16 lanes to a 512-bit vector where double has 8. Edges:
   exp(88) between 88 and 88.72, +inf above; 0 below -86. */
static inline float cn_expf(float x) {
    const float magic = 12582912.0f;  /* 1.5 * 2^23 */
    const float log2e = 1.44269504f, ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-06f;
    float xc = x > 88.0f ? 88.0f : (x < -86.0f ? -86.0f : x);
    float t = xc * log2e + magic;
    float n = t - magic;
    float r = (xc - n * ln2_hi) - n * ln2_lo;
    float r2 = r * r, r4 = r2 * r2;
    float p = ((1.0f + r) + (0.5f + r * (1.0f / 6.0f)) * r2)
              + ((1.0f / 24.0f + r * (1.0f / 120.0f))
                 + (1.0f / 720.0f + r * (1.0f / 5040.0f)) * r2) * r4;
    int32_t tb, pb;
    memcpy(&tb, &t, 4);
    memcpy(&pb, &p, 4);
    pb += (int32_t)((uint32_t)(tb - 0x4B400000) << 23);
    memcpy(&p, &pb, 4);
    p = x > 88.7228394f ? INFINITY : p;
    p = x < -86.0f ? 0.0f : p;
    return x == x ? p : x;
}

#endif
