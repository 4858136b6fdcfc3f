/* 2-byte float storage types for the data kernels: IEEE float16 and bfloat16 (the top half of
   a float32, as ml_dtypes and torch store it). Distinct struct types so that Cython's fused
   types tell them apart from uint16. Conversions round to nearest even and keep NaN a NaN. */
#ifndef CNORM_HALF_H
#define CNORM_HALF_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__F16C__) || defined(__AVX2__) || defined(__AVX512F__)
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

/* Runs of n values, vectorized in each SIMD target: F16C (AVX2 target) and AVX-512 for
   float16; integer shifts and the rounding add in vector registers for bfloat16. The same
   values as the scalar conversions above (round to nearest even, NaN kept a NaN). */
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
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
        _mm512_storeu_si512((void *)(dst + i), _mm512_slli_epi32(w, 16));
    }
#elif defined(__AVX2__)
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_slli_epi32(w, 16));
    }
#endif
    for (; i < n; i++) dst[i] = cn_bf16_float(src[i]);
}

/* u + 0x7fff + (bit 16 of u), shifted down: round to nearest even; a NaN is quieted instead
   (its top bits with the quiet bit set), as in cn_float_bf16. */
static inline void cn_f32_to_bf16_n(const float *src, cn_bf16 *dst, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff);
    const __m512i quiet = _mm512_set1_epi32(0x40);
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(src + i);
        __m512i u = _mm512_castps_si512(v), top = _mm512_srli_epi32(u, 16);
        __m512i r = _mm512_srli_epi32(
            _mm512_add_epi32(_mm512_add_epi32(u, half), _mm512_and_si512(top, one)), 16);
        r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q),
                                  _mm512_or_si512(top, quiet));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(r));
    }
#elif defined(__AVX2__)
    const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7fff);
    const __m256i quiet = _mm256_set1_epi32(0x40);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(src + i);
        __m256i u = _mm256_castps_si256(v), top = _mm256_srli_epi32(u, 16);
        __m256i r = _mm256_srli_epi32(
            _mm256_add_epi32(_mm256_add_epi32(u, half), _mm256_and_si256(top, one)), 16);
        r = _mm256_blendv_epi8(r, _mm256_or_si256(top, quiet),
                               _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
        /* 8 values of at most 0xffff: an unsigned saturating pack is exact */
        _mm_storeu_si128((__m128i *)(dst + i), _mm_packus_epi32(_mm256_castsi256_si128(r),
                                                                _mm256_extracti128_si256(r, 1)));
    }
#endif
    for (; i < n; i++) dst[i] = cn_float_bf16(src[i]);
}
#endif
