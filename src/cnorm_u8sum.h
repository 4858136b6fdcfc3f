/* Exact sums of uint8 data by position: the fast path of the 8-bit moments (data_moments.pxi).
   cn_u8_sums adds n8 = n - n % 192 values from p into 48 position lanes (value j goes to lane
   j % 48: with C | 48 interleaved channels, lane l holds channel l % C) of s1 (sum) and s2
   (sum of squares), and folds min and max into 192 byte lanes (j % 192). Integer sums are
   exact, so every target gives the same bits. Returns n8. The caller keeps n small enough for
   the 32-bit lanes: at most 16384 blocks per call. */
#ifndef CNORM_U8SUM_H
#define CNORM_U8SUM_H
#include <stdint.h>
#include <stddef.h>
#if defined(__AVX512BW__) || defined(__AVX2__)
#include <immintrin.h>
#endif
/* The accumulators must live in registers: unroll the short loops over them fully. */
#if defined(__GNUC__) && !defined(__clang__)
#define CN_UNROLL _Pragma("GCC unroll 32")
#elif defined(__clang__)
#define CN_UNROLL _Pragma("unroll")
#else
#define CN_UNROLL
#endif

static ptrdiff_t cn_u8_sums(const uint8_t *p, ptrdiff_t n, int64_t *s1, uint64_t *s2,
                            uint8_t *lo, uint8_t *hi) {
    ptrdiff_t nb = n / 192, b;
    int l;
#if defined(__AVX512BW__)
    /* Named accumulators (not arrays), so that they stay in registers. */
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, q0 = a0, q1 = a0, q2 = a0;
    __m512i n0 = _mm512_loadu_si512(lo), n1 = _mm512_loadu_si512(lo + 64);
    __m512i n2 = _mm512_loadu_si512(lo + 128), m0 = _mm512_loadu_si512(hi);
    __m512i m1 = _mm512_loadu_si512(hi + 64), m2 = _mm512_loadu_si512(hi + 128);
#define CN_ADD16(acc, sq, off) do { \
        __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(x + (off)))); \
        acc = _mm512_add_epi32(acc, w); \
        sq = _mm512_add_epi32(sq, _mm512_madd_epi16(w, w)); /* w < 2^8: the square */ \
    } while (0)
    for (b = 0; b < nb; b++) {
        const uint8_t *x = p + 192 * b;
        __m512i v0 = _mm512_loadu_si512(x), v1 = _mm512_loadu_si512(x + 64);
        __m512i v2 = _mm512_loadu_si512(x + 128);
        n0 = _mm512_min_epu8(n0, v0); m0 = _mm512_max_epu8(m0, v0);
        n1 = _mm512_min_epu8(n1, v1); m1 = _mm512_max_epu8(m1, v1);
        n2 = _mm512_min_epu8(n2, v2); m2 = _mm512_max_epu8(m2, v2);
        CN_ADD16(a0, q0, 0);   CN_ADD16(a1, q1, 16);  CN_ADD16(a2, q2, 32);
        CN_ADD16(a0, q0, 48);  CN_ADD16(a1, q1, 64);  CN_ADD16(a2, q2, 80);
        CN_ADD16(a0, q0, 96);  CN_ADD16(a1, q1, 112); CN_ADD16(a2, q2, 128);
        CN_ADD16(a0, q0, 144); CN_ADD16(a1, q1, 160); CN_ADD16(a2, q2, 176);
    }
#undef CN_ADD16
    {
        __m512i av[3] = {a0, a1, a2}, qv[3] = {q0, q1, q2};
        for (l = 0; l < 3; l++) {
            int32_t ta[16], tq[16];
            _mm512_storeu_si512(ta, av[l]);
            _mm512_storeu_si512(tq, qv[l]);
            for (int k = 0; k < 16; k++) {
                s1[16 * l + k] += ta[k];
                s2[16 * l + k] += (uint32_t)tq[k];
            }
        }
        _mm512_storeu_si512(lo, n0); _mm512_storeu_si512(lo + 64, n1);
        _mm512_storeu_si512(lo + 128, n2);
        _mm512_storeu_si512(hi, m0); _mm512_storeu_si512(hi + 64, m1);
        _mm512_storeu_si512(hi + 128, m2);
    }
#elif defined(__AVX2__)
    __m256i a[6], q[6], mn[6], mx[6];
    for (l = 0; l < 6; l++) {
        a[l] = q[l] = _mm256_setzero_si256();
        mn[l] = _mm256_loadu_si256((const __m256i *)(lo + 32 * l));
        mx[l] = _mm256_loadu_si256((const __m256i *)(hi + 32 * l));
    }
    for (b = 0; b < nb; b++) {
        const uint8_t *x = p + 192 * b;
        CN_UNROLL
        for (l = 0; l < 6; l++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(x + 32 * l));
            mn[l] = _mm256_min_epu8(mn[l], v);
            mx[l] = _mm256_max_epu8(mx[l], v);
        }
        CN_UNROLL
        for (l = 0; l < 24; l++) {  /* 8 values each: lane group l % 6 */
            __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(x + 8 * l)));
            a[l % 6] = _mm256_add_epi32(a[l % 6], w);
            q[l % 6] = _mm256_add_epi32(q[l % 6], _mm256_madd_epi16(w, w));
        }
    }
    for (l = 0; l < 6; l++) {
        int32_t ta[8], tq[8];
        _mm256_storeu_si256((__m256i *)ta, a[l]);
        _mm256_storeu_si256((__m256i *)tq, q[l]);
        for (int k = 0; k < 8; k++) {
            s1[8 * l + k] += ta[k];
            s2[8 * l + k] += (uint32_t)tq[k];
        }
        _mm256_storeu_si256((__m256i *)(lo + 32 * l), mn[l]);
        _mm256_storeu_si256((__m256i *)(hi + 32 * l), mx[l]);
    }
#else
    int32_t a[48] = {0};
    uint32_t q[48] = {0};
    for (b = 0; b < nb; b++) {
        const uint8_t *x = p + 192 * b;
        for (l = 0; l < 192; l++) {
            lo[l] = x[l] < lo[l] ? x[l] : lo[l];
            hi[l] = x[l] > hi[l] ? x[l] : hi[l];
        }
        for (int k = 0; k < 4; k++)
            for (l = 0; l < 48; l++) {
                int32_t v = x[48 * k + l];
                a[l] += v;
                q[l] += (uint32_t)(v * v);
            }
    }
    for (l = 0; l < 48; l++) {
        s1[l] += a[l];
        s2[l] += q[l];
    }
#endif
    return 192 * nb;
}
#endif
