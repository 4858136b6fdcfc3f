/* Exact sums of uint8 data by position: the fast path of the 8-bit moments (data_moments.pxi).
   cn_u8_sums (ce channels interleaved, ce | 48) adds n8 = n - n % 192 values from p into 48
   position lanes (value j goes to lane j % 48: lane l holds channel l % ce) of s1 (sum) and s2
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

#if defined(__AVX512BW__)
/* Min and max of the 192 bytes of a block, byte j in lane j of n0..n2 / m0..m2 (both routes). */
#define CN_MINMAX_INIT \
    __m512i n0 = _mm512_loadu_si512(lo), n1 = _mm512_loadu_si512(lo + 64); \
    __m512i n2 = _mm512_loadu_si512(lo + 128), m0 = _mm512_loadu_si512(hi); \
    __m512i m1 = _mm512_loadu_si512(hi + 64), m2 = _mm512_loadu_si512(hi + 128)
#define CN_MINMAX_FOLD(x) \
    __m512i v0 = _mm512_loadu_si512(x), v1 = _mm512_loadu_si512((x) + 64); \
    __m512i v2 = _mm512_loadu_si512((x) + 128); \
    n0 = _mm512_min_epu8(n0, v0); m0 = _mm512_max_epu8(m0, v0); \
    n1 = _mm512_min_epu8(n1, v1); m1 = _mm512_max_epu8(m1, v1); \
    n2 = _mm512_min_epu8(n2, v2); m2 = _mm512_max_epu8(m2, v2)
#define CN_MINMAX_STORE do { \
        _mm512_storeu_si512(lo, n0); _mm512_storeu_si512(lo + 64, n1); \
        _mm512_storeu_si512(lo + 128, n2); _mm512_storeu_si512(hi, m0); \
        _mm512_storeu_si512(hi + 64, m1); _mm512_storeu_si512(hi + 128, m2); \
    } while (0)
#endif

static ptrdiff_t cn_u8_lanes(const uint8_t *p, ptrdiff_t n, int64_t *s1, uint64_t *s2,
                             uint8_t *lo, uint8_t *hi) {
    ptrdiff_t nb = n / 192, b;
    int l;
#if defined(__AVX512BW__)
    /* Named accumulators (not arrays), so that they stay in registers. */
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, q0 = a0, q1 = a0, q2 = a0;
    CN_MINMAX_INIT;
#define CN_ADD16(acc, sq, off) do { \
        __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(x + (off)))); \
        acc = _mm512_add_epi32(acc, w); \
        sq = _mm512_add_epi32(sq, _mm512_madd_epi16(w, w)); /* w < 2^8: the square */ \
    } while (0)
    for (b = 0; b < nb; b++) {
        const uint8_t *x = p + 192 * b;
        CN_MINMAX_FOLD(x);
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
        CN_MINMAX_STORE;
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

#if defined(__AVX512BW__) && defined(__GNUC__)
/* With VBMI and VNNI (Ice Lake and later, Zen 4 and later): RGB pixels are split into planes
   by two byte permutes per plane, then each plane's sum and sum of squares are dot products
   of 4 bytes per int32 lane: sum = dpbusd(x, 1), and sum of squares = dpbusd(x, x - 128) +
   128 * sum (x - 128 fits a signed byte). About 24 operations per 64 pixels instead of 57. */
/* Byte permutes that split 64 RGB pixels (192 bytes, v0 v1 v2) into planes: plane c byte i is
   byte 3i + c, taken from v0 | v1 by CN_IA, then kept or replaced from v2 by CN_IB. */
static const uint8_t CN_IA[3][64] = {
    {0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45, 48, 51, 54, 57, 60, 63, 66,
     69, 72, 75, 78, 81, 84, 87, 90, 93, 96, 99, 102, 105, 108, 111, 114, 117, 120, 123, 126,
     0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34, 37, 40, 43, 46, 49, 52, 55, 58, 61, 64, 67,
     70, 73, 76, 79, 82, 85, 88, 91, 94, 97, 100, 103, 106, 109, 112, 115, 118, 121, 124, 127,
     0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 35, 38, 41, 44, 47, 50, 53, 56, 59, 62, 65, 68,
     71, 74, 77, 80, 83, 86, 89, 92, 95, 98, 101, 104, 107, 110, 113, 116, 119, 122, 125, 0, 0,
     0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}};
static const uint8_t CN_IB[3][64] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
     25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 65, 68, 71, 74,
     77, 80, 83, 86, 89, 92, 95, 98, 101, 104, 107, 110, 113, 116, 119, 122, 125},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
     25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 66, 69, 72, 75,
     78, 81, 84, 87, 90, 93, 96, 99, 102, 105, 108, 111, 114, 117, 120, 123, 126},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
     25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 64, 67, 70, 73, 76,
     79, 82, 85, 88, 91, 94, 97, 100, 103, 106, 109, 112, 115, 118, 121, 124, 127}};
__attribute__((target("avx512f,avx512bw,avx512vbmi,avx512vnni")))
static ptrdiff_t cn_u8_vnni(const uint8_t *p, ptrdiff_t n, int ce, int64_t *s1, uint64_t *s2,
                            uint8_t *lo, uint8_t *hi) {
    ptrdiff_t nb = n / 192, b;
    int c, i;
    const __m512i one = _mm512_set1_epi8(1), flip = _mm512_set1_epi8((char)0x80);
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, q0 = a0, q1 = a0, q2 = a0;
    CN_MINMAX_INIT;
    __m512i ja0 = _mm512_loadu_si512(CN_IA[0]), ja1 = _mm512_loadu_si512(CN_IA[1]);
    __m512i ja2 = _mm512_loadu_si512(CN_IA[2]), jb0 = _mm512_loadu_si512(CN_IB[0]);
    __m512i jb1 = _mm512_loadu_si512(CN_IB[1]), jb2 = _mm512_loadu_si512(CN_IB[2]);
#define CN_DOT(acc, sq, v) do { \
        acc = _mm512_dpbusd_epi32(acc, v, one); \
        sq = _mm512_dpbusd_epi32(sq, v, _mm512_xor_si512(v, flip)); \
    } while (0)
    for (b = 0; b < nb; b++) {
        const uint8_t *x = p + 192 * b;
        CN_MINMAX_FOLD(x);
        if (ce == 3) {
            __m512i r = _mm512_permutex2var_epi8(_mm512_permutex2var_epi8(v0, ja0, v1), jb0, v2);
            __m512i g = _mm512_permutex2var_epi8(_mm512_permutex2var_epi8(v0, ja1, v1), jb1, v2);
            __m512i u = _mm512_permutex2var_epi8(_mm512_permutex2var_epi8(v0, ja2, v1), jb2, v2);
            CN_DOT(a0, q0, r); CN_DOT(a1, q1, g); CN_DOT(a2, q2, u);
        } else {  /* one channel: no planes to make */
            CN_DOT(a0, q0, v0); CN_DOT(a0, q0, v1); CN_DOT(a0, q0, v2);
        }
    }
#undef CN_DOT
    {
        __m512i av[3] = {a0, a1, a2}, qv[3] = {q0, q1, q2};
        for (c = 0; c < ce; c++) {  /* channel c's totals into lane c (lane l: channel l % ce) */
            int64_t sum = _mm512_reduce_add_epi32(av[c]) & 0xffffffffLL;  /* < 2^31: exact */
            int64_t qq = 0;
            int32_t t[16];
            _mm512_storeu_si512(t, qv[c]);
            for (i = 0; i < 16; i++) qq += t[i];
            s1[c] += sum;
            s2[c] += (uint64_t)(qq + 128 * sum);
        }
        CN_MINMAX_STORE;
    }
    return 192 * nb;
}
#endif

/* Tests switch the dot-product route off to check the lane route on the same CPU. */
static int cn_u8_dot_allowed = 1;

/* The sums of cn_u8_lanes, by the fastest route this CPU has (the same exact integers). */
static ptrdiff_t cn_u8_sums(const uint8_t *p, ptrdiff_t n, int ce, int64_t *s1, uint64_t *s2,
                            uint8_t *lo, uint8_t *hi) {
#if defined(__AVX512BW__) && defined(__GNUC__)
    static int vnni = -1;  /* a benign race: every thread computes the same value */
    if (vnni < 0)
        vnni = __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vnni");
    if (vnni && cn_u8_dot_allowed && (ce == 1 || ce == 3))
        return cn_u8_vnni(p, n, ce, s1, s2, lo, hi);
#endif
    (void)ce;
    return cn_u8_lanes(p, n, s1, s2, lo, hi);
}
#endif
