/* 2-byte float storage types for the data kernels: IEEE float16 and bfloat16 (the top half of
   a float32, as ml_dtypes and torch store it). Distinct struct types so that Cython's fused
   types tell them apart from uint16. Conversions round to nearest even and keep NaN a NaN. */
#ifndef CNORM_HALF_H
#define CNORM_HALF_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef struct { uint16_t bits; } cn_f16;
typedef struct { uint16_t bits; } cn_bf16;

static inline float cn_bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t cn_float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

#if defined(__FLT16_MAX__)  /* GCC >= 12 and clang on x86-64 and aarch64: the hardware type */
static inline float cn_f16_float(cn_f16 h) { _Float16 f; memcpy(&f, &h.bits, 2); return (float)f; }
static inline cn_f16 cn_float_f16(float x) {
    _Float16 f = (_Float16)x; cn_f16 h; memcpy(&h.bits, &f, 2); return h;
}
#else  /* portable bit arithmetic, same results */
static inline float cn_f16_float(cn_f16 h) {
    uint32_t s = (uint32_t)(h.bits & 0x8000u) << 16;
    uint32_t e = (h.bits >> 10) & 0x1fu, m = h.bits & 0x3ffu;
    if (e == 0x1f) return cn_bits_float(s | 0x7f800000u | (m << 13));  /* Inf, NaN */
    if (e == 0) {  /* zero, subnormal: m * 2^-24 is exact in float */
        float v = (float)m * 5.9604644775390625e-08f; return s ? -v : v;
    }
    return cn_bits_float(s | ((e + 112u) << 23) | (m << 13));
}
static inline cn_f16 cn_float_f16(float x) {
    uint32_t u = cn_float_bits(x), s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    cn_f16 h;
    if (a > 0x7f800000u) { h.bits = (uint16_t)(s | 0x7e00u | ((a >> 13) & 0x3ffu)); return h; }
    if (a >= 0x477ff000u) { h.bits = (uint16_t)(s | 0x7c00u); return h; }  /* rounds to Inf */
    if (a < 0x38800000u) {  /* subnormal or zero: round a * 2^24 to an integer, ties even */
        float v = cn_bits_float(a) * 16777216.0f;
        uint32_t q = (uint32_t)v; float r = v - (float)q;
        if (r > 0.5f || (r == 0.5f && (q & 1u))) q++;
        h.bits = (uint16_t)(s | q); return h;
    }
    uint32_t m = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
    h.bits = (uint16_t)(s | (m >> 13)); return h;
}
#endif

static inline float cn_bf16_float(cn_bf16 h) { return cn_bits_float((uint32_t)h.bits << 16); }
static inline cn_bf16 cn_float_bf16(float x) {
    uint32_t u = cn_float_bits(x);
    cn_bf16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) h.bits = (uint16_t)((u >> 16) | 0x40u);  /* quiet NaN */
    else h.bits = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return h;
}

/* Runs of n values, vectorized in each SIMD target: F16C (AVX2 target) and AVX-512 for float16,
   plain integer arithmetic the compiler vectorizes for bfloat16. The same values as the scalar
   conversions above (round to nearest even, NaN kept a NaN). */
static inline void cn_f16_to_f32_n(const cn_f16 *src, float *dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++) dst[i] = cn_f16_float(src[i]);
}

static inline void cn_f32_to_f16_n(const float *src, cn_f16 *dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) dst[i] = cn_float_f16(src[i]);
}

static inline void cn_bf16_to_f32_n(const cn_bf16 *src, float *dst, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) dst[i] = cn_bf16_float(src[i]);
}

static inline void cn_f32_to_bf16_n(const float *src, cn_bf16 *dst, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) dst[i] = cn_float_bf16(src[i]);
}
#endif
