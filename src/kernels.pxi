# The kernels of cnorm: one source for float32 and float64 (fused type ``floating``), included
# by one small .pyx per SIMD target (_kernels_baseline/_avx2/_avx512.pyx) that setup.py
# compiles with that target's flags. cnorm._backend imports the best one the CPU runs.
#
# Every op works on a C-contiguous 3-D view ``(outer, C, inner)`` of the input, with statistics
# chunks in one of three modes, chosen by the shape:
#   * plane (inner >= GATHER, e.g. NCHW with large H*W): chunks of CHUNK values of one channel;
#     training forward and backward are fused per channel (the channel's slab is read from
#     DRAM once and re-read from L2: about 2 bytes of traffic per input byte forward, 3 back);
#   * block (1 < inner < GATHER, short rows): chunks of whole outer rows, in memory order;
#   * rows (inner == 1: (N, C) and channels-last NHWC): chunks of rows, vectorized across C.
#
# Steps that compose: partial_stats -> merge_stats -> (finalize) -> normalize, and
# backward_sums -> backward_apply; the fused kernels give the same bits (tested).
#
# Determinism: chunks depend on the shape only; each chunk's partial is computed by the same
# function whatever the thread count or path (fused or split), and partials are merged in chunk
# order. Results are bit-identical for any thread count and any SIMD target.
#
# Accuracy: sums in LANES independent accumulators (vectorized without reassociating any sum;
# float32 data in float lanes flushed into double every FLUSH blocks), around a shift: the
# chunk's first value. When the shift turns out far from the chunk's mean (cancellation of more
# than 6 digits) the chunk is summed again around its mean. The apply step subtracts the mean
# as hi + lo of the data type: exact for x near the mean, so float32 output keeps full accuracy
# at offsets of 1e6.
import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.float cimport DBL_MAX
from libc.math cimport INFINITY, NAN, sqrt
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

cdef extern from "cnorm_omp.h" nogil:
    int cn_max_threads()
    void cn_set_max_threads(int n)
    int cn_openmp_enabled()
    int cn_cpu_supports(const char *target)

cdef enum:
    CHUNK = 4096          # plane mode: values of one channel per statistics chunk (16 KB)
    ROW_CHUNK = 65536     # rows mode: values (rows x C) per statistics chunk
    LANES = 32            # independent accumulators per sum (a fixed lane structure: the
                          # same sums on every SIMD target)
    GATHER = 512          # inner sizes below this use block mode: chunks of whole outer
                          # rows visited in memory order (short rows of one channel are
                          # scattered over many pages)
    FLUSH = 8             # float32: blocks of LANES summed in float before flushing to double
    PARALLEL_MIN = 32768  # below this many values an OpenMP region costs more than it saves


def max_threads():
    """The thread count a kernel called now from this thread would use (omp_get_max_threads)."""
    return cn_max_threads()


def set_max_threads(int n):
    """Set OpenMP's thread count for the calling thread (omp_set_num_threads)."""
    cn_set_max_threads(n)


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(cn_openmp_enabled())


def cpu_supports(str target):
    """True when this CPU (and OS) can run code built for ``target``: baseline, avx2, avx512."""
    return bool(cn_cpu_supports(target.encode()))


cdef inline int _threads(Py_ssize_t work, Py_ssize_t units) noexcept nogil:
    cdef int nt
    if work < PARALLEL_MIN or units < 2:
        return 1
    nt = cn_max_threads()
    if nt > units:
        nt = <int>units
    return nt if nt > 0 else 1


cdef inline Py_ssize_t _block_rows(Py_ssize_t outer, Py_ssize_t C,
                                   Py_ssize_t inner) noexcept nogil:
    """Outer rows per chunk in block mode (inner < GATHER): all channels of those rows.
    Rows mode (inner == 1) sizes chunks by all channels' values, as its lanes span channels;
    short rows size them by one channel's values, about CHUNK, and at least 8 chunks so the
    statistics spread over threads. Depends on the shape only."""
    if inner == 1:
        return max(1, ROW_CHUNK // C) if C > 0 else 1
    return max(1, min(CHUNK // inner, (outer + 7) // 8))


cdef inline Py_ssize_t _nchunks(Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner) noexcept nogil:
    """Statistics chunks: per channel in plane mode (inner >= GATHER: CHUNK values of one
    channel), or blocks of outer rows in block mode. Depends on the shape only."""
    if C == 0 or outer == 0 or inner == 0:
        return 0
    if inner >= GATHER:
        return (outer * inner + CHUNK - 1) // CHUNK
    return (outer + _block_rows(outer, C, inner) - 1) // _block_rows(outer, C, inner)


cdef inline Py_ssize_t _chunk_start(Py_ssize_t k, Py_ssize_t outer, Py_ssize_t C,
                                    Py_ssize_t inner) noexcept nogil:
    return k * CHUNK if inner >= GATHER else k * _block_rows(outer, C, inner)


cdef inline Py_ssize_t _chunk_end(Py_ssize_t k, Py_ssize_t outer, Py_ssize_t C,
                                  Py_ssize_t inner) noexcept nogil:
    if inner >= GATHER:
        return min((k + 1) * CHUNK, outer * inner)
    return min((k + 1) * _block_rows(outer, C, inner), outer)


cdef inline double _chunk_count(Py_ssize_t k, Py_ssize_t outer, Py_ssize_t C,
                                Py_ssize_t inner) noexcept nogil:
    """Values of each channel in chunk k."""
    cdef Py_ssize_t span = _chunk_end(k, outer, C, inner) - _chunk_start(k, outer, C, inner)
    return <double>(span if inner >= GATHER else span * inner)


cdef inline double _lane_sum(const double *a) noexcept nogil:
    cdef double s = 0.0
    cdef int l
    for l in range(LANES):
        s = s + a[l]
    return s


cdef inline void _merge_into(double *n, double *m, double *M, double nb, double mb,
                             double Mb) noexcept nogil:
    """Chan et al.: fold a partial (nb, mb, Mb) into the running (n, m, M)."""
    cdef double tot, d
    if nb <= 0.0:
        return
    if n[0] == 0.0:
        n[0] = nb
        m[0] = mb
        M[0] = Mb
        return
    tot = n[0] + nb
    d = mb - m[0]
    m[0] = m[0] + d * (nb / tot)
    M[0] = M[0] + Mb + d * d * (n[0] * nb / tot)
    n[0] = tot


cdef inline bint _finish_chunk(double n, double shift, double s1, double s2, double *mean,
                               double *m2) noexcept nogil:
    """Chunk mean and M2 from sums around ``shift``; True when they lost > 6 digits."""
    cdef double mu = s1 / n
    cdef double corr = s1 * mu
    cdef double v = s2 - corr
    mean[0] = shift + mu
    m2[0] = 0.0 if v < 0.0 else v
    return corr > 1e6 * v and mean[0] - mean[0] == 0.0


cdef inline bint _too_wide(double n, double s1, double m2) noexcept nogil:
    """float32 lanes lost a chunk: (x - shift)^2 overflowed (|x - shift| above ~1e19) or
    underflowed (below ~1e-19) in float. NaN data also lands here, and stays NaN."""
    return not (m2 <= DBL_MAX) or (m2 < 1e-30 * n and (m2 != 0.0 or s1 != 0.0))


cdef void _chunk_wide(const floating *x, Py_ssize_t C, Py_ssize_t inner, Py_ssize_t c,
                      Py_ssize_t j0, Py_ssize_t j1, double shift, double *s1,
                      double *s2) noexcept nogil:
    """The sums of _plane_sums (no dy) over channel c's flat range [j0, j1) of its
    (outer, inner) plane, every step in double: the rare fallback for _too_wide chunks, in any
    layout (block mode: j = o * inner; rows mode: inner = 1)."""
    cdef Py_ssize_t j, o, i
    cdef double d, a = 0.0, b = 0.0
    for j in range(j0, j1):
        o = j // inner
        i = j - o * inner
        d = <double>x[(o * C + c) * inner + i] - shift
        a = a + d
        b = b + d * d
    s1[0] = a
    s2[0] = b


# ---------------------------------------------------------------------------------------------
# Planar layout: channel c of chunk k is the flat range [j0, j1) of its (outer, inner) plane.
# ---------------------------------------------------------------------------------------------

cdef inline int _lane_loop(const floating *p, const floating *g, Py_ssize_t stride,
                           Py_ssize_t nblocks, const floating *shift, floating *f1o,
                           floating *f2o, double *a1, double *a2, int blocks) noexcept nogil:
    """Add nblocks blocks of LANES values (block b at p + b*stride) into the lanes.

    Without g: f1 += x - shift, f2 += (x - shift)^2; with g: f1 += g, f2 += g * (x - shift).
    float32 lanes are flushed into the double lanes a1, a2 every FLUSH blocks (a float lane
    then adds at most FLUSH values, so its rounding stays near 1e-7 of the sum); float64
    lanes are flushed every block. Returns the blocks not yet flushed. The loop keeps its
    lanes in registers: no branch but the flush."""
    cdef floating f1[LANES]
    cdef floating f2[LANES]
    cdef floating s[LANES]
    cdef floating d, e
    cdef Py_ssize_t b
    cdef int l
    for l in range(LANES):
        f1[l] = f1o[l]
        f2[l] = f2o[l]
        s[l] = shift[l]
    for b in range(nblocks):
        if g == NULL:
            for l in range(LANES):
                d = p[l] - s[l]
                f1[l] += d
                f2[l] += d * d
        else:
            for l in range(LANES):
                e = g[l]
                f1[l] += e
                f2[l] += e * (p[l] - s[l])
            g += stride
        p += stride
        blocks += 1
        if floating is double or blocks == FLUSH:
            for l in range(LANES):
                a1[l] += <double>f1[l]
                a2[l] += <double>f2[l]
                f1[l] = 0.0
                f2[l] = 0.0
            blocks = 0
    for l in range(LANES):
        f1o[l] = f1[l]
        f2o[l] = f2[l]
    return blocks


cdef void _plane_sums(const floating *x, const floating *dy, Py_ssize_t C, Py_ssize_t inner,
                        Py_ssize_t c, Py_ssize_t j0, Py_ssize_t j1, double shift,
                        double *s1, double *s2) noexcept nogil:
    """Without dy: s1 = sum(x - shift), s2 = sum((x - shift)^2), shift of the data type.
    With dy:    s1 = sum(dy),        s2 = sum(dy * (x - shift)), any double shift.
    Each row segment runs full lane blocks, and its tail goes straight into the double lanes."""
    cdef double a1[LANES]
    cdef double a2[LANES]
    cdef floating f1[LANES]
    cdef floating f2[LANES]
    cdef floating sh[LANES]
    cdef Py_ssize_t o = j0 // inner
    cdef Py_ssize_t i = j0 - o * inner
    cdef Py_ssize_t j = j0, t, seg, nb
    cdef int l, blocks = 0
    cdef const floating *p
    cdef const floating *g
    cdef floating fs = <floating>shift
    for l in range(LANES):
        a1[l] = 0.0
        a2[l] = 0.0
        f1[l] = 0.0
        f2[l] = 0.0
        sh[l] = fs
    while j < j1:
        seg = min(inner - i, j1 - j)
        p = x + (o * C + c) * inner + i
        g = dy + (p - x) if dy != NULL else NULL
        nb = seg // LANES
        blocks = _lane_loop(p, g, LANES, nb, sh, f1, f2, a1, a2, blocks)
        t = nb * LANES
        for l in range(seg - t):
            if dy == NULL:
                a1[l] += <double>p[t + l] - <double>fs
                a2[l] += (<double>p[t + l] - <double>fs) * (<double>p[t + l] - <double>fs)
            else:
                a1[l] += <double>g[t + l]
                a2[l] += <double>g[t + l] * (<double>p[t + l] - <double>fs)
        j += seg
        o += 1
        i = 0
    for l in range(LANES):
        a1[l] += <double>f1[l]
        a2[l] += <double>f2[l]
    s1[0] = _lane_sum(a1)
    s2[0] = _lane_sum(a2)
    if dy != NULL:  # sums were around fs; move them to the exact shift
        s2[0] += (<double>fs - shift) * s1[0]


cdef void _plane_chunk_stats(const floating *x, Py_ssize_t C, Py_ssize_t inner, Py_ssize_t c,
                             Py_ssize_t j0, Py_ssize_t j1, double *mean,
                             double *m2) noexcept nogil:
    cdef Py_ssize_t o0 = j0 // inner
    cdef double n = <double>(j1 - j0), s1, s2
    cdef double shift = x[(o0 * C + c) * inner + (j0 - o0 * inner)]
    _plane_sums(x, <const floating *>NULL, C, inner, c, j0, j1, shift, &s1, &s2)
    if _finish_chunk(n, shift, s1, s2, mean, m2):
        shift = <double><floating>mean[0]
        _plane_sums(x, <const floating *>NULL, C, inner, c, j0, j1, shift, &s1, &s2)
        _finish_chunk(n, shift, s1, s2, mean, m2)
    if floating is float and _too_wide(n, s1, m2[0]):
        _chunk_wide(x, C, inner, c, j0, j1, shift, &s1, &s2)
        _finish_chunk(n, shift, s1, s2, mean, m2)


cdef void _plane_stats(const floating *x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                       Py_ssize_t c, double *mean, double *m2) noexcept nogil:
    """Whole-channel statistics: chunks of CHUNK values merged in order (plane mode's chunks,
    so the same bits as merge_stats there). Any inner: also the per-row statistics of the
    row norms (outer = 1)."""
    cdef Py_ssize_t k, n_all = outer * inner, j1
    cdef double n = 0.0, mb, Mb
    mean[0] = 0.0
    m2[0] = 0.0
    for k in range((n_all + CHUNK - 1) // CHUNK):
        j1 = min((k + 1) * CHUNK, n_all)
        _plane_chunk_stats(x, C, inner, c, k * CHUNK, j1, &mb, &Mb)
        _merge_into(&n, mean, m2, <double>(j1 - k * CHUNK), mb, Mb)
    if n == 0.0:
        mean[0] = NAN
        m2[0] = NAN


cdef void _plane_dot(const floating *x, const floating *dy, Py_ssize_t outer, Py_ssize_t C,
                     Py_ssize_t inner, Py_ssize_t c, double mean, double *s1,
                     double *s2) noexcept nogil:
    """Whole-channel sum(dy), sum(dy*(x-mean)): chunk sums added in order (= backward_sums
    in plane mode). Any inner, as _plane_stats."""
    cdef Py_ssize_t k, n_all = outer * inner
    cdef double a, b
    s1[0] = 0.0
    s2[0] = 0.0
    for k in range((n_all + CHUNK - 1) // CHUNK):
        _plane_sums(x, dy, C, inner, c, k * CHUNK, min((k + 1) * CHUNK, n_all), mean, &a, &b)
        s1[0] += a
        s2[0] += b


# ---------------------------------------------------------------------------------------------
# Rows layout (inner == 1): chunk k is the row block [r0, r1) of an (outer, C) matrix; the
# channel loop is the vectorized one.
# ---------------------------------------------------------------------------------------------

cdef void _rows_sums(const floating *x, const floating *dy, Py_ssize_t C, Py_ssize_t r0,
                     Py_ssize_t r1, const double *shift, double *s1, double *s2) noexcept nogil:
    """Per channel, as _plane_sums, with per-channel shifts (of the data type without dy).
    Row by row in memory order (a channel's values are C apart: a page apart for C = 1024,
    where the prefetcher would not follow), vectorized across channels, into data-type
    accumulators flushed into the double sums every FLUSH rows."""
    cdef floating *buf = <floating *>malloc(3 * C * sizeof(floating))
    cdef floating *f1 = buf
    cdef floating *f2 = buf + C
    cdef floating *fs = buf + 2 * C
    cdef const floating *p
    cdef const floating *g
    cdef floating d, e
    cdef Py_ssize_t r, c
    cdef int blocks = 0
    for c in range(C):
        s1[c] = 0.0
        s2[c] = 0.0
        f1[c] = 0.0
        f2[c] = 0.0
        fs[c] = <floating>shift[c]
    for r in range(r0, r1):
        p = x + r * C
        if dy == NULL:
            for c in range(C):
                d = p[c] - fs[c]
                f1[c] += d
                f2[c] += d * d
        else:
            g = dy + r * C
            for c in range(C):
                e = g[c]
                f1[c] += e
                f2[c] += e * (p[c] - fs[c])
        blocks += 1
        if floating is double or blocks == FLUSH or r == r1 - 1:
            for c in range(C):
                s1[c] += <double>f1[c]
                s2[c] += <double>f2[c]
                f1[c] = 0.0
                f2[c] = 0.0
            blocks = 0
    if dy != NULL:  # sums were around fs; move them to the exact shift
        for c in range(C):
            s2[c] += (<double>fs[c] - shift[c]) * s1[c]
    free(buf)


cdef void _short_sums(const floating *p, const floating *g, Py_ssize_t n, double shift,
                      double *s1, double *s2) noexcept nogil:
    """A short row in double, in 8 lanes (block mode with 1 < inner < GATHER)."""
    cdef double a1[8]
    cdef double a2[8]
    cdef double d, e
    cdef Py_ssize_t t = 0
    cdef int l
    for l in range(8):
        a1[l] = 0.0
        a2[l] = 0.0
    if g == NULL:
        while t + 8 <= n:
            for l in range(8):
                d = <double>p[t + l] - shift
                a1[l] += d
                a2[l] += d * d
            t += 8
        for l in range(n - t):
            d = <double>p[t + l] - shift
            a1[l] += d
            a2[l] += d * d
    else:
        while t + 8 <= n:
            for l in range(8):
                e = <double>g[t + l]
                a1[l] += e
                a2[l] += e * (<double>p[t + l] - shift)
            t += 8
        for l in range(n - t):
            e = <double>g[t + l]
            a1[l] += e
            a2[l] += e * (<double>p[t + l] - shift)
    d = 0.0
    e = 0.0
    for l in range(8):
        d = d + a1[l]
        e = e + a2[l]
    s1[0] = d
    s2[0] = e


cdef void _block_sums(const floating *x, const floating *dy, Py_ssize_t C, Py_ssize_t inner,
                      Py_ssize_t o0, Py_ssize_t o1, const double *shift, double *s1,
                      double *s2) noexcept nogil:
    """Per-channel sums over outer rows [o0, o1) (block mode). Rows of at least 4*LANES
    values: a channel's lanes run on across its few rows in the chunk (few streams, which
    the prefetcher follows). Shorter rows: each row summed on its own, in memory order
    (measured faster: the LANES-wide blocks would leave long scalar tails)."""
    cdef Py_ssize_t o, c, off
    cdef double a, b
    if inner == 1:
        _rows_sums(x, dy, C, o0, o1, shift, s1, s2)
        return
    if inner >= 4 * LANES:
        for c in range(C):
            _plane_sums(x, dy, C, inner, c, o0 * inner, o1 * inner, shift[c], &s1[c], &s2[c])
        return
    for c in range(C):
        s1[c] = 0.0
        s2[c] = 0.0
    for o in range(o0, o1):
        for c in range(C):
            off = (o * C + c) * inner
            _short_sums(x + off, dy + off if dy != NULL else NULL, inner, shift[c], &a, &b)
            s1[c] += a
            s2[c] += b


cdef void _block_chunk_stats(const floating *x, Py_ssize_t C, Py_ssize_t inner, Py_ssize_t o0,
                             Py_ssize_t o1, double *mean, double *m2,
                             double *scratch) noexcept nogil:
    """mean, m2: this chunk's length-C partials; scratch: 2*C doubles."""
    cdef Py_ssize_t c
    cdef double *shift = scratch
    cdef double *s1 = scratch + C
    cdef double n = <double>((o1 - o0) * inner)
    cdef bint redo = False
    for c in range(C):
        shift[c] = x[(o0 * C + c) * inner]
    _block_sums(x, <const floating *>NULL, C, inner, o0, o1, shift, s1, m2)
    for c in range(C):
        redo |= _finish_chunk(n, shift[c], s1[c], m2[c], &mean[c], &m2[c])
    if redo:
        for c in range(C):
            shift[c] = <double><floating>mean[c]
        _block_sums(x, <const floating *>NULL, C, inner, o0, o1, shift, s1, m2)
        for c in range(C):
            _finish_chunk(n, shift[c], s1[c], m2[c], &mean[c], &m2[c])
    if floating is float:
        for c in range(C):
            if _too_wide(n, s1[c], m2[c]):
                _chunk_wide(x, C, inner, c, o0 * inner, o1 * inner, shift[c], &s1[c], &m2[c])
                _finish_chunk(n, shift[c], s1[c], m2[c], &mean[c], &m2[c])


cdef inline bint _fused(Py_ssize_t C, Py_ssize_t inner, int nt) noexcept nogil:
    """Whole channels per thread, normalized right after their statistics while in cache,
    when a channel's rows are long (plane mode) and channels share out evenly. Short rows
    (block and rows modes) go in memory order instead: measured faster, as one channel's
    short rows are scattered over many pages."""
    return inner >= GATHER and (nt == 1 or C % nt == 0 or C >= 8 * nt)


# ---------------------------------------------------------------------------------------------
# Statistics: the composable steps
# ---------------------------------------------------------------------------------------------

cdef void _partials(const floating *x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                    double *pm, double *pm2, double *scratch, int nt) noexcept nogil:
    """Chunk partials into (K, C) arrays; scratch: K*2*C doubles (block mode)."""
    cdef Py_ssize_t K = _nchunks(outer, C, inner), u, k, c
    if inner >= GATHER:
        for u in prange(K * C, schedule="static", num_threads=nt):
            c = u // K
            k = u - c * K
            _plane_chunk_stats(x, C, inner, c, k * CHUNK, _chunk_end(k, outer, C, inner),
                               pm + k * C + c, pm2 + k * C + c)
    else:
        for k in prange(K, schedule="static", num_threads=nt):
            _block_chunk_stats(x, C, inner, _chunk_start(k, outer, C, inner),
                               _chunk_end(k, outer, C, inner), pm + k * C, pm2 + k * C,
                               scratch + 2 * k * C)


cdef void _merge(Py_ssize_t K, Py_ssize_t C, const double *cnt, const double *pm,
                 const double *pm2, double *mean, double *m2) noexcept nogil:
    """_merge_into over chunks in order, for all channels at once: every channel has the
    same count per chunk, so the two divisions are made once per chunk (same expressions,
    same bits as _merge_into)."""
    cdef Py_ssize_t k, c
    cdef double n = 0.0, nb, tot, fa, fb, d
    for c in range(C):
        mean[c] = 0.0
        m2[c] = 0.0
    for k in range(K):
        nb = cnt[k]
        if nb <= 0.0:
            continue
        if n == 0.0:
            for c in range(C):
                mean[c] = pm[k * C + c]
                m2[c] = pm2[k * C + c]
        else:
            tot = n + nb
            fa = nb / tot
            fb = n * nb / tot
            for c in range(C):
                d = pm[k * C + c] - mean[c]
                mean[c] = mean[c] + d * fa
                m2[c] = m2[c] + pm2[k * C + c] + d * d * fb
        n = tot if n != 0.0 else nb
    if n == 0.0:
        for c in range(C):
            mean[c] = NAN
            m2[c] = NAN


def partial_stats(const floating[:, :, ::1] x):
    """Per-chunk statistics of each channel of an ``(outer, C, inner)`` array.

    Returns ``(counts, means, m2)``: float64 arrays of shapes (K,), (K, C), (K, C), where chunk k
    holds ``counts[k]`` values of every channel, their mean and their sum of squared deviations.
    The chunking depends on the shape only.
    """
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t K = _nchunks(outer, C, inner) if x.size > 0 else 0, k
    counts = np.empty(K, dtype=np.float64)
    means = np.zeros((K, C), dtype=np.float64)
    m2s = np.zeros((K, C), dtype=np.float64)
    scratch = np.empty(2 * K * C if inner < GATHER else 1, dtype=np.float64)
    cdef double[::1] cnt = counts, sc = scratch
    cdef double[:, ::1] pm = means, pm2 = m2s
    for k in range(K):
        cnt[k] = _chunk_count(k, outer, C, inner)
    if K > 0:
        with nogil:
            _partials(&x[0, 0, 0], outer, C, inner, &pm[0, 0], &pm2[0, 0], &sc[0],
                      _threads(outer * C * inner, K * C if inner >= GATHER else K))
    return counts, means, m2s


def merge_stats(const double[::1] counts, const double[:, ::1] means, const double[:, ::1] m2):
    """Merge chunk partials in order (Chan et al.). Returns ``(count, mean, m2)`` per channel.

    ``count`` is the total count (a float), ``mean`` and ``m2`` are float64 arrays of length C.
    A channel with no values gets mean and m2 NaN.
    """
    cdef Py_ssize_t K = means.shape[0], C = means.shape[1], k
    cdef double total = 0.0
    mean_out = np.empty(C, dtype=np.float64)
    m2_out = np.empty(C, dtype=np.float64)
    cdef double[::1] mo = mean_out, m2o = m2_out
    for k in range(K):
        total += counts[k]
    if C > 0:
        with nogil:
            _merge(K, C, &counts[0] if K > 0 else NULL, &means[0, 0] if K > 0 else NULL,
                   &m2[0, 0] if K > 0 else NULL, &mo[0], &m2o[0])
    return total, mean_out, m2_out


cdef int _stats(const floating *x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                double *mean, double *m2, bint serial=False) noexcept nogil:
    """Per-channel mean and M2 of a non-empty array: chunk partials (in parallel unless
    ``serial``), then their merge in order. Returns -1 when out of memory."""
    cdef Py_ssize_t k, K = _nchunks(outer, C, inner)
    cdef Py_ssize_t scratch = 2 * K * C if inner < GATHER else 1
    cdef double *part = <double *>malloc((2 * K * C + scratch + K) * sizeof(double))
    cdef double *cnt = part + 2 * K * C + scratch
    if part == NULL:
        return -1
    _partials(x, outer, C, inner, part, part + K * C, part + 2 * K * C,
              1 if serial else _threads(outer * C * inner, K if inner < GATHER else K * C))
    for k in range(K):
        cnt[k] = _chunk_count(k, outer, C, inner)
    _merge(K, C, cnt, part, part + K * C, mean, m2)
    free(part)
    return 0


def channel_stats(const floating[:, :, ::1] x):
    """Per-channel ``(count, mean, m2)`` of an ``(outer, C, inner)`` array (partial + merge).
    A channel with no values gets mean and m2 NaN."""
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    mean = np.full(C, np.nan)
    m2 = np.full(C, np.nan)
    cdef double[::1] mv = mean, m2v = m2
    cdef int err = 0
    if x.size > 0:
        with nogil:
            err = _stats(&x[0, 0, 0], outer, C, inner, &mv[0], &m2v[0])
        if err:
            raise MemoryError()
    return float(outer * inner), mean, m2


# ---------------------------------------------------------------------------------------------
# Apply steps. Per-channel coefficients are made once, in the data type.
# ---------------------------------------------------------------------------------------------

cdef inline void _norm_row(const floating *x, floating *y, Py_ssize_t n, floating hi,
                           floating lo, floating a, floating b) noexcept nogil:
    cdef Py_ssize_t t
    for t in range(n):
        y[t] = ((x[t] - hi) - lo) * a + b


cdef inline void _bwd_row(const floating *x, const floating *dy, floating *dx, Py_ssize_t n,
                          floating hi, floating lo, floating k1, floating k2,
                          floating k3) noexcept nogil:
    cdef Py_ssize_t t
    if x == NULL:
        for t in range(n):
            dx[t] = dy[t] * k1
    else:
        for t in range(n):
            dx[t] = dy[t] * k1 + (((x[t] - hi) - lo) * k2 + k3)


cdef inline void _split(double mean, floating *hi, floating *lo) noexcept nogil:
    """hi + lo = mean in the data type, so (x - hi) - lo loses nothing for x near the mean."""
    hi[0] = <floating>mean
    lo[0] = <floating>(mean - <double>hi[0])


cdef void _apply(const floating *x, const floating *dy, floating *out, Py_ssize_t outer,
                 Py_ssize_t C, Py_ssize_t inner, const floating *coef, Py_ssize_t c0,
                 Py_ssize_t c1, int nt) noexcept nogil:
    """Forward (dy == NULL): out = (x - mean) * a + b.
    Backward: out = dy * k1 + ((x - mean) * k2 + k3), or dy * k1 when x == NULL.
    coef holds per channel [hi, lo, a, b] (forward) or [hi, lo, k1, k2, k3] (backward);
    planar layout: channels [c0, c1) (serially, when that is not all of them);
    rows layout: all channels."""
    cdef Py_ssize_t r, c, o, off, R = outer * C
    cdef int w = 4 if dy == NULL else 5
    cdef const floating *q
    if inner > 1 and c1 - c0 < C:
        for o in range(outer):
            for c in range(c0, c1):
                q = coef + w * c
                off = (o * C + c) * inner
                if dy == NULL:
                    _norm_row(x + off, out + off, inner, q[0], q[1], q[2], q[3])
                else:
                    _bwd_row(x + off if x != NULL else NULL, dy + off, out + off, inner,
                             q[0], q[1], q[2], q[3], q[4])
    elif inner > 1:
        for r in prange(R, schedule="static", num_threads=nt):
            q = coef + w * (r % C)
            if dy == NULL:
                _norm_row(x + r * inner, out + r * inner, inner, q[0], q[1], q[2], q[3])
            else:
                _bwd_row(x + r * inner if x != NULL else NULL, dy + r * inner, out + r * inner,
                         inner, q[0], q[1], q[2], q[3], q[4])
    else:
        for o in prange(outer, schedule="static", num_threads=nt):
            _apply_cols(x + o * C if x != NULL else NULL, dy + o * C if dy != NULL else NULL,
                        out + o * C, C, coef)


cdef void _apply_cols(const floating *x, const floating *dy, floating *out, Py_ssize_t C,
                      const floating *coef) noexcept nogil:
    """One row of the rows layout. coef is channel-major: [hi | lo | a | b (| e)] blocks of C."""
    cdef Py_ssize_t c
    cdef const floating *hi = coef
    cdef const floating *lo = coef + C
    cdef const floating *a = coef + 2 * C
    cdef const floating *b = coef + 3 * C
    cdef const floating *e = coef + 4 * C
    if dy == NULL:
        for c in range(C):
            out[c] = ((x[c] - hi[c]) - lo[c]) * a[c] + b[c]
    elif x == NULL:
        for c in range(C):
            out[c] = dy[c] * a[c]
    else:
        for c in range(C):
            out[c] = dy[c] * a[c] + (((x[c] - hi[c]) - lo[c]) * b[c] + e[c])


cdef void _set_coef(floating *coef, Py_ssize_t C, Py_ssize_t c, bint rows, int w, double mean,
                    double a, double b, double e) noexcept nogil:
    """Store channel c's coefficients: interleaved (planar) or channel-major blocks (rows)."""
    cdef Py_ssize_t s = C if rows else 1
    cdef floating *q = coef + (c if rows else w * c)
    _split(mean, q, q + s)
    q[2 * s] = <floating>a
    q[3 * s] = <floating>b
    if w == 5:
        q[4 * s] = <floating>e


def normalize(const floating[:, :, ::1] x, const double[::1] mean, const double[::1] scale,
              const double[::1] shift, floating[:, :, ::1] out):
    """``out = (x - mean) * scale + shift`` per channel, with the mean subtracted as hi + lo.

    ``scale`` is invstd * weight and ``shift`` the bias; ``out`` may not overlap ``x``.
    This is the eval-mode forward: one pass over x.
    """
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2], c
    if x.size == 0:
        return
    cdef floating *coef = <floating *>malloc(4 * C * sizeof(floating))
    if coef == NULL:
        raise MemoryError()
    with nogil:
        for c in range(C):
            _set_coef(coef, C, c, inner == 1, 4, mean[c], scale[c], shift[c], 0.0)
        _apply(&x[0, 0, 0], <const floating *>NULL, &out[0, 0, 0], outer, C, inner, coef, 0, C,
               _threads(outer * C * inner, outer * C if inner > 1 else outer))
    free(coef)


# ---------------------------------------------------------------------------------------------
# Fused training forward and backward
# ---------------------------------------------------------------------------------------------

cdef inline void _fwd_coef(floating *coef, Py_ssize_t C, Py_ssize_t c, bint rows, double n,
                           double eps, const double *mean, const double *m2, double *invstd,
                           const floating *w, const floating *b) noexcept nogil:
    """Finalize channel c (invstd from the biased variance) and store its forward
    coefficients: y = (x - mean) * (invstd * w) + b."""
    invstd[c] = 1.0 / sqrt(m2[c] / n + eps)
    _set_coef(coef, C, c, rows, 4, mean[c], invstd[c] * (<double>w[c] if w else 1.0),
              <double>b[c] if b else 0.0, 0.0)


cdef void _fused_forward(const floating *x, floating *y, Py_ssize_t outer, Py_ssize_t C,
                         Py_ssize_t inner, Py_ssize_t c, double eps, const floating *w,
                         const floating *b, double *mean, double *m2, double *invstd,
                         floating *coef) noexcept nogil:
    """Training forward of channel c: statistics (the split path's chunks, merged in the same
    order: same bits), then normalize while the channel is in cache."""
    _plane_stats(x, outer, C, inner, c, &mean[c], &m2[c])
    _fwd_coef(coef, C, c, False, <double>(outer * inner), eps, mean, m2, invstd, w, b)
    _apply(x, <const floating *>NULL, y, outer, C, inner, coef, c, c + 1, 1)


cdef void _fused_backward(const floating *x, const floating *dy, floating *dx, Py_ssize_t outer,
                          Py_ssize_t C, Py_ssize_t inner, Py_ssize_t c, const double *mean,
                          const double *invstd, const floating *w, bint training,
                          bint need_sums, double *sdy, double *sdyx,
                          floating *coef) noexcept nogil:
    """Backward of channel c: the sums (chunk sums added in chunk order, as in the split
    path), then dx while x and dy of the channel are in cache."""
    if need_sums:
        _plane_dot(x, dy, outer, C, inner, c, mean[c], &sdy[c], &sdyx[c])
    _bwd_coef(coef, C, c, False, training, <double>(outer * inner), mean[c], invstd[c],
              <double>w[c] if w else 1.0, sdy[c], sdyx[c])
    _apply(x if training else NULL, dy, dx, outer, C, inner, coef, c, c + 1, 1)


def bn_forward_train(const floating[:, :, ::1] x, const floating[::1] weight,
                     const floating[::1] bias, double eps, floating[:, :, ::1] out,
                     double[::1] mean, double[::1] m2, double[::1] invstd):
    """Training forward: batch statistics, then ``out = (x - mean) * invstd * weight + bias``.

    ``weight`` / ``bias`` may be None. Writes the per-channel ``mean``, ``m2`` (sum of squared
    deviations) and ``invstd = 1/sqrt(m2/count + eps)``; returns the count per channel.
    With enough channels each thread takes whole channels and normalizes a channel right
    after its statistics, while the channel is in cache.
    """
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t c
    cdef double n = <double>(outer * inner)
    if x.size == 0:
        mean[:] = NAN
        m2[:] = NAN
        invstd[:] = NAN
        return 0.0
    cdef bint rows = inner == 1
    # units (channel x chunk): with fewer channels than threads the split path spreads chunks
    cdef int nt = _threads(outer * C * inner, _nchunks(outer, C, inner) * C), err = 0
    cdef const floating *w = &weight[0] if weight is not None else NULL
    cdef const floating *b = &bias[0] if bias is not None else NULL
    cdef const floating *xp = &x[0, 0, 0]
    cdef floating *yp = &out[0, 0, 0]
    cdef floating *coef = <floating *>malloc(4 * C * sizeof(floating))
    if coef == NULL:
        raise MemoryError()
    with nogil:
        if _fused(C, inner, nt):
            for c in prange(C, schedule="static", num_threads=nt):
                _fused_forward(xp, yp, outer, C, inner, c, eps, w, b, &mean[0], &m2[0],
                               &invstd[0], coef)
        else:
            err = _stats(xp, outer, C, inner, &mean[0], &m2[0])
            if not err:
                for c in range(C):
                    _fwd_coef(coef, C, c, rows, n, eps, &mean[0], &m2[0], &invstd[0], w, b)
                _apply(xp, <const floating *>NULL, yp, outer, C, inner, coef, 0, C,
                       _threads(outer * C * inner, outer if rows else outer * C))
    free(coef)
    if err:
        raise MemoryError()
    return n


def bn_forward_eval(const floating[:, :, ::1] x, const floating[::1] running_mean,
                    const floating[::1] running_var, const floating[::1] weight,
                    const floating[::1] bias, double eps, floating[:, :, ::1] out,
                    double[::1] mean, double[::1] invstd):
    """Eval forward with running statistics, one pass over x. ``weight`` / ``bias`` may be
    None. Writes ``mean`` (the running mean in float64) and ``invstd`` for the backward."""
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2], c
    cdef const floating *w = &weight[0] if weight is not None else NULL
    cdef const floating *b = &bias[0] if bias is not None else NULL
    for c in range(C):
        mean[c] = running_mean[c]
        invstd[c] = 1.0 / sqrt(<double>running_var[c] + eps)
    if x.size == 0:
        return
    cdef floating *coef = <floating *>malloc(4 * C * sizeof(floating))
    if coef == NULL:
        raise MemoryError()
    with nogil:
        for c in range(C):
            _set_coef(coef, C, c, inner == 1, 4, mean[c],
                      invstd[c] * (<double>w[c] if w else 1.0), <double>b[c] if b else 0.0, 0.0)
        _apply(&x[0, 0, 0], <const floating *>NULL, &out[0, 0, 0], outer, C, inner, coef, 0, C,
               _threads(outer * C * inner, outer * C if inner > 1 else outer))
    free(coef)


cdef void _sums_partials(const floating *x, const floating *dy, Py_ssize_t outer, Py_ssize_t C,
                         Py_ssize_t inner, const double *mean, double *p1, double *p2,
                         int nt) noexcept nogil:
    """Chunk partials of sum(dy) and sum(dy*(x-mean)) into (K, C) arrays."""
    cdef Py_ssize_t K = _nchunks(outer, C, inner), u, k, c
    if inner >= GATHER:
        for u in prange(K * C, schedule="static", num_threads=nt):
            c = u // K
            k = u - c * K
            _plane_sums(x, dy, C, inner, c, k * CHUNK, _chunk_end(k, outer, C, inner), mean[c],
                        p1 + k * C + c, p2 + k * C + c)
    else:
        for k in prange(K, schedule="static", num_threads=nt):
            _block_sums(x, dy, C, inner, _chunk_start(k, outer, C, inner),
                        _chunk_end(k, outer, C, inner), mean, p1 + k * C, p2 + k * C)


cdef void _add_partials(Py_ssize_t K, Py_ssize_t C, const double *p, double *s) noexcept nogil:
    cdef Py_ssize_t k, c
    for c in range(C):
        s[c] = 0.0
    for k in range(K):
        for c in range(C):
            s[c] += p[k * C + c]


cdef int _sums(const floating *x, const floating *dy, Py_ssize_t outer, Py_ssize_t C,
               Py_ssize_t inner, const double *mean, double *s1, double *s2,
               bint serial=False) noexcept nogil:
    """Per-channel sum(dy) and sum(dy*(x-mean)) of a non-empty array: chunk partials (in
    parallel unless ``serial``), added in chunk order. Returns -1 when out of memory."""
    cdef Py_ssize_t K = _nchunks(outer, C, inner)
    cdef double *part = <double *>malloc(2 * K * C * sizeof(double))
    if part == NULL:
        return -1
    _sums_partials(x, dy, outer, C, inner, mean, part, part + K * C,
                   1 if serial else _threads(outer * C * inner, K if inner < GATHER else K * C))
    _add_partials(K, C, part, s1)
    _add_partials(K, C, part + K * C, s2)
    free(part)
    return 0


def backward_sums(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                  const double[::1] mean):
    """Per-channel ``(sum(dy), sum(dy * (x - mean)))`` as float64 arrays, deterministic."""
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    s1 = np.zeros(C, dtype=np.float64)
    s2 = np.zeros(C, dtype=np.float64)
    cdef double[::1] v1 = s1, v2 = s2
    cdef int err = 0
    if x.size > 0:
        with nogil:
            err = _sums(&x[0, 0, 0], &dy[0, 0, 0], outer, C, inner, &mean[0], &v1[0], &v2[0])
        if err:
            raise MemoryError()
    return s1, s2


cdef inline void _bwd_coef(floating *coef, Py_ssize_t C, Py_ssize_t c, bint rows,
                           bint training, double n, double mean, double invstd, double w,
                           double s1, double s2) noexcept nogil:
    """dx = dy*k1 + (x-mean)*k2 + k3: k1 = w*invstd and, for batch statistics,
    k2 = -k1*invstd^2*s2/n, k3 = -k1*s1/n (s1 = sum dy, s2 = sum dy*(x-mean))."""
    cdef double k1 = w * invstd
    if training:
        _set_coef(coef, C, c, rows, 5, mean, k1, -k1 * invstd * invstd * s2 / n, -k1 * s1 / n)
    else:
        _set_coef(coef, C, c, rows, 5, mean, k1, 0.0, 0.0)


def backward_apply(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                   const double[::1] mean, const double[::1] k1, const double[::1] k2,
                   const double[::1] k3, floating[:, :, ::1] dx, bint use_x=True):
    """``dx = dy * k1 + ((x - mean) * k2 + k3)`` per channel; ``dx = dy * k1`` when not use_x.

    Training mode: k1 = w*invstd, k2 = -w*invstd^3*sum(dy*(x-mean))/M, k3 = -w*invstd*sum(dy)/M.
    Fixed statistics (eval): use_x=False, so NaN/Inf in x do not leak into dx.
    """
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2], c
    if x.size == 0:
        return
    cdef floating *coef = <floating *>malloc(5 * C * sizeof(floating))
    if coef == NULL:
        raise MemoryError()
    with nogil:
        for c in range(C):
            _set_coef(coef, C, c, inner == 1, 5, mean[c], k1[c], k2[c], k3[c])
        _apply(&x[0, 0, 0] if use_x else NULL, &dy[0, 0, 0], &dx[0, 0, 0], outer, C, inner,
               coef, 0, C, _threads(outer * C * inner, outer * C if inner > 1 else outer))
    free(coef)


def bn_backward(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                const double[::1] mean, const double[::1] invstd, const floating[::1] weight,
                bint training, bint need_sums, floating[:, :, ::1] dx, double[::1] sum_dy,
                double[::1] sum_dy_xmu):
    """Backward of batch norm: ``dx`` and the per-channel sums for the parameter gradients.

    ``training``: the forward used batch statistics (differentiate through them); otherwise the
    statistics were constants. ``need_sums`` False skips the sums (eval without parameters).
    With enough channels each thread takes whole channels: sums, then dx while x and dy of that
    channel are in cache.
    """
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t c
    cdef double n = <double>(outer * inner)
    need_sums = need_sums or training
    sum_dy[:] = 0.0
    sum_dy_xmu[:] = 0.0
    if x.size == 0:
        return
    cdef bint rows = inner == 1
    # units (channel x chunk): with fewer channels than threads the split path spreads chunks
    cdef int nt = _threads(outer * C * inner, _nchunks(outer, C, inner) * C), err = 0
    cdef const floating *w = &weight[0] if weight is not None else NULL
    cdef const floating *xp = &x[0, 0, 0]
    cdef const floating *gp = &dy[0, 0, 0]
    cdef floating *dp = &dx[0, 0, 0]
    cdef floating *coef = <floating *>malloc(5 * C * sizeof(floating))
    if coef == NULL:
        raise MemoryError()
    with nogil:
        if _fused(C, inner, nt):
            for c in prange(C, schedule="static", num_threads=nt):
                _fused_backward(xp, gp, dp, outer, C, inner, c, &mean[0], &invstd[0], w,
                                training, need_sums, &sum_dy[0], &sum_dy_xmu[0], coef)
        else:
            if need_sums:
                err = _sums(xp, gp, outer, C, inner, &mean[0], &sum_dy[0], &sum_dy_xmu[0])
            if not err:
                for c in range(C):
                    _bwd_coef(coef, C, c, rows, training, n, mean[c], invstd[c],
                              w[c] if w else 1.0, sum_dy[c], sum_dy_xmu[c])
                _apply(xp if training else NULL, gp, dp, outer, C, inner, coef, 0, C,
                       _threads(outer * C * inner, outer if rows else outer * C))
    free(coef)
    if err:
        raise MemoryError()


def stream_copy(const float[::1] src, float[::1] dst):
    """``dst[:] = src`` in parallel blocks: the stream-copy bandwidth probe of the report."""
    cdef Py_ssize_t n = src.shape[0], b, B = 1 << 16
    cdef Py_ssize_t nb = (n + B - 1) // B
    if n == 0:
        return
    with nogil:
        for b in prange(nb, schedule="static", num_threads=_threads(n, nb)):
            memcpy(&dst[b * B], &src[b * B], min(B, n - b * B) * sizeof(float))


def update_running(floating[:] running_mean, floating[:] running_var, const double[::1] mean,
                   const double[::1] m2, double count, double factor):
    """In place, in double then rounded: ``running = (1 - factor) * running + factor * batch``,
    with the unbiased batch variance ``m2 / (count - 1)``. Either array may be None."""
    cdef Py_ssize_t c
    if running_mean is not None:
        for c in range(running_mean.shape[0]):
            running_mean[c] = <floating>((1.0 - factor) * <double>running_mean[c]
                                         + factor * mean[c])
    if running_var is not None:
        for c in range(running_var.shape[0]):
            running_var[c] = <floating>((1.0 - factor) * <double>running_var[c]
                                        + factor * (m2[c] / (count - 1.0)))


# ---------------------------------------------------------------------------------------------
# Row norms (LayerNorm, RMSNorm): statistics per row of an (R, L) matrix, affine per column.
# A row's sums run over chunks of CHUNK values in RLANES lanes, reduced by a fixed pairwise tree:
# rows are often short (64 values), where the batch-norm planes' 32 lanes and serial lane sum
# cost more than the data.
# ---------------------------------------------------------------------------------------------

cdef enum:
    LONG_ROW = 4096       # rows at least this long: backward by column blocks (see row_backward)
    RLANES = 16           # lanes of a row sum (the tree in _row_sums assumes 16)
    ROW_BLOCK = 8         # at most this many rows, of at most CHUNK values together, per
                          # forward step (their scalar steps overlap, and they stay in cache)


cdef void _row_sums(const floating *x, const floating *dy, const floating *w, Py_ssize_t n,
                    double shift, double *s1, double *s2) noexcept nogil:
    """As _plane_sums for n contiguous values, with g = dy * w (dy without w): without dy
    s1 = sum(x - shift), s2 = sum((x - shift)^2) (shift of the data type); with dy
    s1 = sum(g), s2 = sum(g * (x - shift)). float32 lanes are flushed into double every FLUSH
    blocks; the tail is added in double after the lanes' tree."""
    cdef double a1[RLANES]
    cdef double a2[RLANES]
    cdef double c1, c2
    cdef floating f1[RLANES]
    cdef floating f2[RLANES]
    cdef floating fs = <floating>shift, d, e
    cdef Py_ssize_t b, t, nb = n // RLANES
    cdef const floating *p
    cdef int l, blocks = 0
    for l in range(RLANES):
        a1[l] = 0.0
        a2[l] = 0.0
        f1[l] = 0.0
        f2[l] = 0.0
    for b in range(nb):
        p = x + b * RLANES
        if dy == NULL:
            for l in range(RLANES):
                d = p[l] - fs
                f1[l] += d
                f2[l] += d * d
        elif w == NULL:
            for l in range(RLANES):
                e = dy[b * RLANES + l]
                f1[l] += e
                f2[l] += e * (p[l] - fs)
        else:
            for l in range(RLANES):
                e = dy[b * RLANES + l] * w[b * RLANES + l]
                f1[l] += e
                f2[l] += e * (p[l] - fs)
        blocks += 1
        if floating is double or blocks == FLUSH:
            for l in range(RLANES):
                a1[l] += <double>f1[l]
                a2[l] += <double>f2[l]
                f1[l] = 0.0
                f2[l] = 0.0
            blocks = 0
    for l in range(RLANES):
        a1[l] += <double>f1[l]
        a2[l] += <double>f2[l]
    for l in range(8):
        a1[l] += a1[l + 8]
        a2[l] += a2[l + 8]
    for l in range(4):
        a1[l] += a1[l + 4]
        a2[l] += a2[l + 4]
    c1 = (a1[0] + a1[2]) + (a1[1] + a1[3])
    c2 = (a2[0] + a2[2]) + (a2[1] + a2[3])
    for t in range(nb * RLANES, n):  # the tail, in double
        if dy == NULL:
            c1 += <double>x[t] - <double>fs
            c2 += (<double>x[t] - <double>fs) * (<double>x[t] - <double>fs)
        else:
            e = dy[t] * w[t] if w != NULL else dy[t]
            c1 += <double>e
            c2 += <double>e * (<double>x[t] - <double>fs)
    if dy != NULL:  # sums were around fs; move them to the exact shift
        c2 += (<double>fs - shift) * c1
    s1[0] = c1
    s2[0] = c2


cdef void _row_moments(const floating *x, Py_ssize_t L, double *mean, double *m2) noexcept nogil:
    """Mean and M2 of a row: chunks of CHUNK values around their first value (again around
    the chunk's mean when that lost digits), merged in order."""
    cdef Py_ssize_t k, j0, n
    cdef double cnt = 0.0, shift, s1, s2, mb, Mb
    mean[0] = 0.0
    m2[0] = 0.0
    for k in range((L + CHUNK - 1) // CHUNK):
        j0 = k * CHUNK
        n = min(CHUNK, L - j0)
        shift = x[j0]
        _row_sums(x + j0, <const floating *>NULL, NULL, n, shift, &s1, &s2)
        if _finish_chunk(<double>n, shift, s1, s2, &mb, &Mb):
            shift = <double><floating>mb
            _row_sums(x + j0, <const floating *>NULL, NULL, n, shift, &s1, &s2)
            _finish_chunk(<double>n, shift, s1, s2, &mb, &Mb)
        if floating is float and _too_wide(<double>n, s1, Mb):
            _chunk_wide(x + j0, 1, n, 0, 0, n, shift, &s1, &s2)
            _finish_chunk(<double>n, shift, s1, s2, &mb, &Mb)
        _merge_into(&cnt, mean, m2, <double>n, mb, Mb)


cdef void _row_apply(const floating *x, floating *y, Py_ssize_t n, floating hi, floating lo,
                     floating a, const floating *w, const floating *b) noexcept nogil:
    """y = ((x - hi) - lo) * a, times w and plus b per column when given."""
    cdef Py_ssize_t t
    if w != NULL and b != NULL:
        for t in range(n):
            y[t] = (((x[t] - hi) - lo) * a) * w[t] + b[t]
    elif w != NULL:
        for t in range(n):
            y[t] = (((x[t] - hi) - lo) * a) * w[t]
    elif b != NULL:
        for t in range(n):
            y[t] = ((x[t] - hi) - lo) * a + b[t]
    else:
        for t in range(n):
            y[t] = ((x[t] - hi) - lo) * a


cdef bint _has_nan(const floating *x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t t
    for t in range(n):
        if x[t] != x[t]:
            return True
    return False


cdef void _row_forward(const floating *x, floating *y, Py_ssize_t n, Py_ssize_t L, double eps,
                       bint rms, const floating *w, const floating *b, double *mean,
                       double *invstd) noexcept nogil:
    """n <= ROW_BLOCK rows: statistics, then the outputs while the rows are in cache. The rows'
    scalar steps (division, square root) run side by side, not as one chain per row.
    RMSNorm keeps mean = 0 and invstd = 1/sqrt(mean(x^2) + eps), where mean(x^2) =
    M2/L + mean^2 (no cancellation: both terms are positive)."""
    cdef double m2[ROW_BLOCK]
    cdef double v
    cdef floating hi = 0.0, lo = 0.0
    cdef Py_ssize_t i
    for i in range(n):
        _row_moments(x + i * L, L, &mean[i], &m2[i])
    for i in range(n):
        v = m2[i] / <double>L + (mean[i] * mean[i] if rms else 0.0)
        if rms and v != v and not _has_nan(x + i * L, L):
            v = INFINITY  # infinite values (M2 is inf - inf): mean(x^2) is inf, as in torch
        invstd[i] = 1.0 / sqrt(v + eps)
    for i in range(n):
        if rms:
            mean[i] = 0.0
        else:
            _split(mean[i], &hi, &lo)
        _row_apply(x + i * L, y + i * L, L, hi, lo, <floating>invstd[i], w, b)


def row_forward(const floating[:, ::1] x, const floating[::1] weight, const floating[::1] bias,
                double eps, bint rms, floating[:, ::1] out, double[::1] mean,
                double[::1] invstd):
    """LayerNorm (``rms`` False) or RMSNorm forward of each row of ``x`` (R, L).

    LayerNorm: ``out = (x - mean) * invstd * weight + bias`` with the row's biased variance.
    RMSNorm: ``out = x * invstd * weight`` with ``invstd = 1/sqrt(mean(x^2) + eps)`` and
    ``mean`` set to 0. ``weight`` / ``bias`` (length L) may be None. Rows are independent:
    each thread takes whole rows, statistics then output while the row is in cache.
    """
    cdef Py_ssize_t R = x.shape[0], L = x.shape[1], r, k
    cdef const floating *w = &weight[0] if weight is not None else NULL
    cdef const floating *b = &bias[0] if bias is not None else NULL
    if R == 0:
        return
    if L == 0:
        mean[:] = NAN
        invstd[:] = NAN
        return
    cdef const floating *xp = &x[0, 0]
    cdef floating *yp = &out[0, 0]
    cdef Py_ssize_t B = min(<Py_ssize_t>ROW_BLOCK, max(1, CHUNK // L))
    cdef Py_ssize_t K = (R + B - 1) // B
    with nogil:
        for k in prange(K, schedule="static", num_threads=_threads(R * L, K)):
            r = k * B
            _row_forward(xp + r * L, yp + r * L, min(B, R - r), L, eps, rms, w, b,
                         &mean[r], &invstd[r])


cdef void _row_dot(const floating *x, const floating *dy, const floating *w, Py_ssize_t L,
                   double shift, double *s1, double *s2) noexcept nogil:
    """s1 = sum(g), s2 = sum(g * (x - shift)) over a row, g = dy * w (dy without w): chunk
    sums added in order."""
    cdef Py_ssize_t k, j0
    cdef double a, c
    s1[0] = 0.0
    s2[0] = 0.0
    for k in range((L + CHUNK - 1) // CHUNK):
        j0 = k * CHUNK
        _row_sums(x + j0, dy + j0, w + j0 if w != NULL else NULL, min(CHUNK, L - j0), shift,
                  &a, &c)
        s1[0] += a
        s2[0] += c


cdef void _row_grad(const floating *x, const floating *dy, const floating *w, floating *dx,
                    Py_ssize_t n, const floating *q, floating *pw, floating *pb) noexcept nogil:
    """A row segment: dx = g*k1 + ((x - hi) - lo)*k2 + k3 with g = dy*w, q = [hi, lo, k1, k2,
    k3, invstd]; and, when pw is given, pw += dy * x_hat, pb += dy per column, in the data
    type (the caller flushes them into double every FLUSH rows, see _flush_cols)."""
    cdef Py_ssize_t t
    cdef floating hi = q[0], lo = q[1], k1 = q[2], k2 = q[3], k3 = q[4], a = q[5]
    if w != NULL:
        for t in range(n):
            dx[t] = (dy[t] * w[t]) * k1 + (((x[t] - hi) - lo) * k2 + k3)
    else:
        for t in range(n):
            dx[t] = dy[t] * k1 + (((x[t] - hi) - lo) * k2 + k3)
    if pw != NULL:
        for t in range(n):
            pw[t] += dy[t] * (((x[t] - hi) - lo) * a)
            pb[t] += dy[t]


cdef inline void _flush_cols(floating *f, double *p, Py_ssize_t n) noexcept nogil:
    """p += f, f = 0: column sums kept in the data type for a few rows, then in double."""
    cdef Py_ssize_t t
    for t in range(n):
        p[t] += <double>f[t]
        f[t] = 0.0


cdef void _row_coef(floating *q, Py_ssize_t L, bint rms, double mean, double invstd, double s1,
                    double s2) noexcept nogil:
    """LayerNorm: dx = invstd*g - invstd*s1/L - (x - mean)*invstd^3*s2/L; RMSNorm (mean 0,
    invstd = 1/rms): dx = invstd*g - x*invstd^3*s2/L."""
    _split(mean, q, q + 1)
    q[2] = <floating>invstd
    q[3] = <floating>(-invstd * invstd * invstd * s2 / <double>L)
    q[4] = <floating>(0.0 if rms else -invstd * s1 / <double>L)
    q[5] = <floating>invstd


def row_backward(const floating[:, ::1] x, const floating[:, ::1] dy, const double[::1] mean,
                 const double[::1] invstd, const floating[::1] weight, bint rms,
                 bint param_grads, floating[:, ::1] dx, double[::1] grad_weight,
                 double[::1] grad_bias):
    """Backward of :func:`row_forward`: ``dx`` and, with ``param_grads``, the per-column
    ``grad_weight = sum(dy * x_hat)`` and ``grad_bias = sum(dy)`` over rows (float64).

    Rows shorter than LONG_ROW: chunks of rows, each thread a chunk (row sums, dx while the
    row is in cache), the column sums in one partial per chunk, added in chunk order.
    Longer rows: the row sums first, then dx by blocks of columns over all rows in order,
    each block owning its columns' sums. Both orders depend on the shape only.
    """
    cdef Py_ssize_t R = x.shape[0], L = x.shape[1], r, k, j0, n, K
    cdef Py_ssize_t B = max(1, ROW_CHUNK // L) if L > 0 else 1
    cdef const floating *w = &weight[0] if weight is not None else NULL
    grad_weight[:] = 0.0
    grad_bias[:] = 0.0
    if R == 0 or L == 0:
        return
    cdef const floating *xp = &x[0, 0]
    cdef const floating *gp = &dy[0, 0]
    cdef floating *dp = &dx[0, 0]
    cdef bint short = L < LONG_ROW
    K = (R + B - 1) // B if short else (L + CHUNK - 1) // CHUNK
    cdef Py_ssize_t P = K if short and param_grads else (1 if param_grads else 0)
    cdef double *part = <double *>calloc(2 * P * L + 2 * R + 1, sizeof(double))
    cdef floating *q = <floating *>malloc(6 * R * sizeof(floating))
    cdef double *s = part + 2 * P * L
    cdef floating *f
    cdef int err = 0, nt = _threads(R * L, K)
    if part == NULL or q == NULL:
        free(part)
        free(q)
        raise MemoryError()
    with nogil:
        if short:
            for k in prange(K, schedule="static", num_threads=nt):
                f = <floating *>calloc(2 * L, sizeof(floating)) if param_grads else NULL
                if param_grads and f == NULL:
                    err |= 1
                    continue
                for r in range(k * B, min(R, (k + 1) * B)):
                    _row_dot(xp + r * L, gp + r * L, w, L, mean[r], &s[2 * r], &s[2 * r + 1])
                    _row_coef(q + 6 * r, L, rms, mean[r], invstd[r], s[2 * r], s[2 * r + 1])
                    _row_grad(xp + r * L, gp + r * L, w, dp + r * L, L, q + 6 * r, f,
                              f + L if f != NULL else NULL)
                    if f != NULL and ((r + 1 - k * B) % FLUSH == 0
                                      or r + 1 == min(R, (k + 1) * B)):
                        _flush_cols(f, part + 2 * k * L, 2 * L)
                free(f)
        else:
            for r in prange(R, schedule="static", num_threads=_threads(R * L, R)):
                _row_dot(xp + r * L, gp + r * L, w, L, mean[r], &s[2 * r], &s[2 * r + 1])
                _row_coef(q + 6 * r, L, rms, mean[r], invstd[r], s[2 * r], s[2 * r + 1])
            for k in prange(K, schedule="static", num_threads=nt):
                j0 = k * CHUNK
                n = min(CHUNK, L - j0)
                f = <floating *>calloc(2 * n, sizeof(floating)) if param_grads else NULL
                if param_grads and f == NULL:
                    err |= 1
                    continue
                for r in range(R):
                    _row_grad(xp + r * L + j0, gp + r * L + j0, w + j0 if w != NULL else NULL,
                              dp + r * L + j0, n, q + 6 * r, f, f + n if f != NULL else NULL)
                    if f != NULL and ((r + 1) % FLUSH == 0 or r + 1 == R):
                        _flush_cols(f, part + j0, n)
                        _flush_cols(f + n, part + L + j0, n)
                free(f)
        for k in range(P):
            for j0 in range(L):
                grad_weight[j0] += part[2 * k * L + j0]
                grad_bias[j0] += part[2 * k * L + L + j0]
    free(part)
    free(q)
    if err:
        raise MemoryError()


# ---------------------------------------------------------------------------------------------
# Group norms (GroupNorm, InstanceNorm): each sample n of an (N, outer, C, inner) view is a
# batch-norm problem over its (outer, C, inner) part, with statistics per group of C // G
# channels (the (outer, G, C/G * inner) view) and coefficients per (sample, channel).
# NCHW: (N, 1, C, H*W); channels-last: (N, H*W, C, 1). Samples go to threads whole (the
# sample's steps run serially, while it is in cache) or, with fewer samples than threads,
# one by one with the steps in parallel: the same bits either way.
# ---------------------------------------------------------------------------------------------

cdef void _group_fwd_coef(floating *coef, Py_ssize_t C, Py_ssize_t Cg, Py_ssize_t g, bint rows,
                          double cnt, double eps, const double *mean, const double *m2,
                          double *invstd, const floating *w, const floating *b) noexcept nogil:
    """Finalize group g and store its channels' forward coefficients."""
    cdef Py_ssize_t c
    invstd[g] = 1.0 / sqrt(m2[g] / cnt + eps)
    for c in range(g * Cg, (g + 1) * Cg):
        _set_coef(coef, C, c, rows, 4, mean[g], invstd[g] * (<double>w[c] if w else 1.0),
                  <double>b[c] if b else 0.0, 0.0)


cdef void _group_fused_forward(const floating *x, floating *y, Py_ssize_t outer, Py_ssize_t C,
                               Py_ssize_t inner, Py_ssize_t G, Py_ssize_t g, double eps,
                               const floating *w, const floating *b, double *mean, double *m2,
                               double *invstd, floating *coef) noexcept nogil:
    """Planar group g of one sample: statistics (plane chunks: the bits of _stats), then its
    output while the group's slab is in cache."""
    cdef Py_ssize_t Cg = C // G
    _plane_stats(x, outer, G, Cg * inner, g, &mean[g], &m2[g])
    _group_fwd_coef(coef, C, Cg, g, False, <double>(outer * Cg * inner), eps, mean, m2, invstd,
                    w, b)
    _apply(x, <const floating *>NULL, y, outer, C, inner, coef, g * Cg, (g + 1) * Cg, 1)


cdef int _group_forward(const floating *x, floating *y, Py_ssize_t outer, Py_ssize_t C,
                        Py_ssize_t inner, Py_ssize_t G, double eps, const floating *w,
                        const floating *b, double *mean, double *m2, double *invstd,
                        floating *coef, int nt) noexcept nogil:
    """One sample, on nt threads: group statistics, then the output with per-channel
    coefficients. Planar groups of at least GATHER values: group by group (in parallel when
    there are enough groups), each normalized while in cache. Channels-last (inner == 1):
    the statistics of each channel (rows mode, vectorized across channels), merged over the
    group's channels in order. Otherwise the steps over the whole sample."""
    cdef Py_ssize_t Cg = C // G, c, g
    cdef double cnt = <double>(outer * Cg * inner), n
    cdef double *cs
    if inner > 1 and Cg * inner >= GATHER and (nt == 1 or G >= nt):
        if nt == 1:
            for g in range(G):
                _group_fused_forward(x, y, outer, C, inner, G, g, eps, w, b, mean, m2, invstd,
                                     coef)
        else:
            for g in prange(G, schedule="static", num_threads=nt):
                _group_fused_forward(x, y, outer, C, inner, G, g, eps, w, b, mean, m2, invstd,
                                     coef)
        return 0
    if inner == 1 and Cg > 1:
        cs = <double *>malloc(2 * C * sizeof(double))
        if cs == NULL or _stats(x, outer, C, 1, cs, cs + C, nt == 1):
            free(cs)
            return -1
        for g in range(G):
            n = 0.0
            mean[g] = 0.0
            m2[g] = 0.0
            for c in range(g * Cg, (g + 1) * Cg):
                _merge_into(&n, &mean[g], &m2[g], <double>outer, cs[c], cs[C + c])
        free(cs)
    elif _stats(x, outer, G, Cg * inner, mean, m2, nt == 1):
        return -1
    for g in range(G):
        _group_fwd_coef(coef, C, Cg, g, inner == 1, cnt, eps, mean, m2, invstd, w, b)
    _apply(x, <const floating *>NULL, y, outer, C, inner, coef, 0, C,
           1 if nt == 1 else _threads(outer * C * inner, outer if inner == 1 else outer * C))
    return 0


def group_forward(const floating[:, :, :, ::1] x, Py_ssize_t G, const floating[::1] weight,
                  const floating[::1] bias, double eps, floating[:, :, :, ::1] out,
                  double[:, ::1] mean, double[:, ::1] m2, double[:, ::1] invstd):
    """GroupNorm forward on an (N, outer, C, inner) view: per (sample, group) ``mean``, ``m2``
    and ``invstd`` (N, G), and ``out = (x - mean) * invstd * weight + bias`` per channel.
    InstanceNorm is G = C. ``weight`` / ``bias`` may be None."""
    cdef Py_ssize_t N = x.shape[0], outer = x.shape[1], C = x.shape[2], inner = x.shape[3]
    cdef Py_ssize_t S = outer * C * inner, n
    cdef const floating *w = &weight[0] if weight is not None else NULL
    cdef const floating *b = &bias[0] if bias is not None else NULL
    if N == 0:
        return
    if S == 0:
        mean[:, :] = NAN
        m2[:, :] = NAN
        invstd[:, :] = NAN
        return
    cdef int nt = _threads(N * S, N), err = 0
    cdef floating *coef = <floating *>malloc(4 * N * C * sizeof(floating))
    cdef const floating *xp = &x[0, 0, 0, 0]
    cdef floating *yp = &out[0, 0, 0, 0]
    if coef == NULL:
        raise MemoryError()
    with nogil:
        if nt > 1:
            for n in prange(N, schedule="static", num_threads=nt):
                err |= _group_forward(xp + n * S, yp + n * S, outer, C, inner, G, eps, w, b,
                                      &mean[n, 0], &m2[n, 0], &invstd[n, 0], coef + 4 * n * C,
                                      1)
        else:
            for n in range(N):
                err |= _group_forward(xp + n * S, yp + n * S, outer, C, inner, G, eps, w, b,
                                      &mean[n, 0], &m2[n, 0], &invstd[n, 0], coef + 4 * n * C,
                                      _threads(S, S))
    free(coef)
    if err:
        raise MemoryError()


cdef void _group_bwd_coef(floating *coef, Py_ssize_t C, Py_ssize_t Cg, Py_ssize_t g, bint rows,
                          double M, const double *mean, const double *invstd,
                          const floating *w, const double *s1, const double *s2) noexcept nogil:
    """Group g's channels' backward coefficients from their sums, combined with the weights:
    dx = dy*w*invstd - invstd^3 * sum(w*dy*(x-mean)) / M * (x - mean) - invstd * sum(w*dy) / M."""
    cdef Py_ssize_t c
    cdef double A = 0.0, Bw = 0.0, inv = invstd[g], wc
    for c in range(g * Cg, (g + 1) * Cg):
        wc = <double>w[c] if w else 1.0
        A = A + wc * s1[c]
        Bw = Bw + wc * s2[c]
    for c in range(g * Cg, (g + 1) * Cg):
        _set_coef(coef, C, c, rows, 5, mean[g], (<double>w[c] if w else 1.0) * inv,
                  -inv * inv * inv * Bw / M, -inv * A / M)


cdef void _group_fused_backward(const floating *x, const floating *dy, floating *dx,
                                Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, Py_ssize_t G,
                                Py_ssize_t g, const double *mean, const double *invstd,
                                const floating *w, double *s1, double *s2,
                                floating *coef) noexcept nogil:
    """Planar group g of one sample: its channels' sums (plane chunks: the bits of _sums),
    then dx while x and dy of the group are in cache."""
    cdef Py_ssize_t Cg = C // G, c
    for c in range(g * Cg, (g + 1) * Cg):
        _plane_dot(x, dy, outer, C, inner, c, mean[g], &s1[c], &s2[c])
    _group_bwd_coef(coef, C, Cg, g, False, <double>(outer * Cg * inner), mean, invstd, w, s1, s2)
    _apply(x, dy, dx, outer, C, inner, coef, g * Cg, (g + 1) * Cg, 1)


cdef int _group_backward(const floating *x, const floating *dy, floating *dx, Py_ssize_t outer,
                         Py_ssize_t C, Py_ssize_t inner, Py_ssize_t G, const double *mean,
                         const double *invstd, const floating *w, double *s1, double *s2,
                         double *mc, floating *coef, int nt) noexcept nogil:
    """One sample, on nt threads: per-channel sum(dy), sum(dy * (x - mean)), combined per
    group with the weights; then dx = dy*k1 + (x - mean)*k2 + k3 per channel. Planar
    channels of at least GATHER values go group by group, as the forward."""
    cdef Py_ssize_t Cg = C // G, c, g
    cdef double M = <double>(outer * Cg * inner)
    if inner >= GATHER and (nt == 1 or G >= nt):
        if nt == 1:
            for g in range(G):
                _group_fused_backward(x, dy, dx, outer, C, inner, G, g, mean, invstd, w, s1,
                                      s2, coef)
        else:
            for g in prange(G, schedule="static", num_threads=nt):
                _group_fused_backward(x, dy, dx, outer, C, inner, G, g, mean, invstd, w, s1,
                                      s2, coef)
        return 0
    for c in range(C):
        mc[c] = mean[c // Cg]
    if _sums(x, dy, outer, C, inner, mc, s1, s2, nt == 1):
        return -1
    for g in range(G):
        _group_bwd_coef(coef, C, Cg, g, inner == 1, M, mean, invstd, w, s1, s2)
    _apply(x, dy, dx, outer, C, inner, coef, 0, C,
           1 if nt == 1 else _threads(outer * C * inner, outer if inner == 1 else outer * C))
    return 0


def group_backward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] dy,
                   Py_ssize_t G, const double[:, ::1] mean, const double[:, ::1] invstd,
                   const floating[::1] weight, floating[:, :, :, ::1] dx, double[:, ::1] sum_dy,
                   double[:, ::1] sum_dy_xmu):
    """Backward of :func:`group_forward` (batch statistics): ``dx`` and the per (sample,
    channel) ``sum_dy`` and ``sum_dy_xmu = sum(dy * (x - mean))`` (N, C) for the parameter
    gradients: grad_bias = sum over n of sum_dy, grad_weight = sum over n of
    invstd * sum_dy_xmu."""
    cdef Py_ssize_t N = x.shape[0], outer = x.shape[1], C = x.shape[2], inner = x.shape[3]
    cdef Py_ssize_t S = outer * C * inner, n
    cdef const floating *w = &weight[0] if weight is not None else NULL
    sum_dy[:, :] = 0.0
    sum_dy_xmu[:, :] = 0.0
    if N == 0 or S == 0:
        return
    cdef int nt = _threads(N * S, N), err = 0
    cdef floating *coef = <floating *>malloc(5 * N * C * sizeof(floating))
    cdef double *mc = <double *>malloc(N * C * sizeof(double))
    cdef const floating *xp = &x[0, 0, 0, 0]
    cdef const floating *gp = &dy[0, 0, 0, 0]
    cdef floating *dp = &dx[0, 0, 0, 0]
    if coef == NULL or mc == NULL:
        free(coef)
        free(mc)
        raise MemoryError()
    with nogil:
        if nt > 1:
            for n in prange(N, schedule="static", num_threads=nt):
                err |= _group_backward(xp + n * S, gp + n * S, dp + n * S, outer, C, inner, G,
                                       &mean[n, 0], &invstd[n, 0], w, &sum_dy[n, 0],
                                       &sum_dy_xmu[n, 0], mc + n * C, coef + 5 * n * C, 1)
        else:
            for n in range(N):
                err |= _group_backward(xp + n * S, gp + n * S, dp + n * S, outer, C, inner, G,
                                       &mean[n, 0], &invstd[n, 0], w, &sum_dy[n, 0],
                                       &sum_dy_xmu[n, 0], mc + n * C, coef + 5 * n * C,
                                       _threads(S, S))
    free(coef)
    free(mc)
    if err:
        raise MemoryError()
