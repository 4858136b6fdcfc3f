# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernels of cnorm, one source for float32 and float64 (fused type ``floating``).

Every op works on a C-contiguous 3-D view ``(outer, C, inner)`` of the input:

* NCHW batch norm: outer = N, inner = H*W ("planar" layout, statistics per channel plane);
* (N, C) and channels-last NHWC: outer = N*H*W, inner = 1 ("rows" layout, vectorized across C).

The steps compose: ``partial_stats`` (count, mean, M2 per fixed-size chunk), ``merge_stats``
(Chan et al.), ``normalize`` (apply), ``backward_sums`` and ``backward_apply``.
``channel_stats`` is partial + merge in one call.

Determinism: the chunking depends only on the shape, never on the thread count; each chunk
writes its own partial and partials are merged serially in chunk order. Results are therefore
bit-identical for any number of threads.

Accuracy: sums are accumulated in double. Each chunk is reduced twice while it is in cache:
first around its first element to estimate its mean, then around that estimate (the corrected
two-pass algorithm), so a large common offset or an outlying first element costs no precision.
The apply step subtracts the mean split into ``hi + lo`` of the data type, which is exact for x
near the mean, so float32 output keeps full accuracy at offsets of 1e6.
"""
import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport NAN
from libc.stdlib cimport free, malloc

cdef extern from "cnorm_omp.h" nogil:
    int cn_max_threads()
    void cn_set_max_threads(int n)
    int cn_openmp_enabled()

cdef enum:
    CHUNK = 16384          # elements per statistics chunk (64 KB of float32: stays in L2)
    PARALLEL_MIN = 32768   # below this many elements an OpenMP region costs more than it saves


def max_threads():
    """The thread count a kernel called now from this thread would use (omp_get_max_threads)."""
    return cn_max_threads()


def set_max_threads(int n):
    """Set OpenMP's thread count for the calling thread (omp_set_num_threads)."""
    cn_set_max_threads(n)


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(cn_openmp_enabled())


cdef inline int _threads(Py_ssize_t work, Py_ssize_t units) noexcept nogil:
    cdef int nt
    if work < PARALLEL_MIN or units < 2:
        return 1
    nt = cn_max_threads()
    if nt > units:
        nt = <int>units
    return nt if nt > 0 else 1


cdef inline Py_ssize_t _nchunks(Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner) noexcept nogil:
    """Chunks per channel (planar) or row blocks (rows layout); depends on the shape only."""
    if inner > 1:
        return (outer * inner + CHUNK - 1) // CHUNK
    return (outer + _rows_per_chunk(C) - 1) // _rows_per_chunk(C)


cdef inline Py_ssize_t _rows_per_chunk(Py_ssize_t C) noexcept nogil:
    return CHUNK // C if C < CHUNK else 1


cdef inline Py_ssize_t _chunk_count(Py_ssize_t k, Py_ssize_t outer, Py_ssize_t C,
                                     Py_ssize_t inner) noexcept nogil:
    """Elements per channel in chunk k."""
    cdef Py_ssize_t total = outer * inner if inner > 1 else outer
    cdef Py_ssize_t size = CHUNK if inner > 1 else _rows_per_chunk(C)
    return min(size, total - k * size)


# ---------------------------------------------------------------------------------------------
# Planar layout: channel c of chunk k is the flat range [j0, j1) of its (outer, inner) plane.
# ---------------------------------------------------------------------------------------------

cdef void _planar_sums(const floating *x, const floating *dy, Py_ssize_t C, Py_ssize_t inner,
                       Py_ssize_t c, Py_ssize_t j0, Py_ssize_t j1, double shift,
                       double *s1, double *s2) noexcept nogil:
    """Without dy: s1 = sum(x - shift), s2 = sum((x - shift)^2).
    With dy:    s1 = sum(dy),        s2 = sum(dy * (x - shift))."""
    cdef Py_ssize_t o = j0 // inner
    cdef Py_ssize_t i = j0 - o * inner
    cdef Py_ssize_t j = j0, t, seg, off
    cdef double a1 = 0.0, a2 = 0.0, d, g
    while j < j1:
        seg = min(inner - i, j1 - j)
        off = (o * C + c) * inner + i
        if dy == NULL:
            for t in range(off, off + seg):
                d = <double>x[t] - shift
                a1 = a1 + d
                a2 = a2 + d * d
        else:
            for t in range(off, off + seg):
                d = <double>x[t] - shift
                g = <double>dy[t]
                a1 = a1 + g
                a2 = a2 + g * d
        j += seg
        o += 1
        i = 0
    s1[0] = a1
    s2[0] = a2


cdef void _planar_chunk_stats(const floating *x, Py_ssize_t C, Py_ssize_t inner, Py_ssize_t c,
                              Py_ssize_t j0, Py_ssize_t j1, double *mean,
                              double *m2) noexcept nogil:
    cdef Py_ssize_t o0 = j0 // inner
    cdef double n = <double>(j1 - j0), s1, s2, m, v
    cdef double shift = x[(o0 * C + c) * inner + (j0 - o0 * inner)]
    _planar_sums(x, <const floating *>NULL, C, inner, c, j0, j1, shift, &s1, &s2)
    m = shift + s1 / n
    if m - m != 0.0:  # NaN or Inf in the chunk: propagate it, a second pass cannot help
        mean[0] = m
        m2[0] = s2 - s1 * s1 / n
        return
    _planar_sums(x, <const floating *>NULL, C, inner, c, j0, j1, m, &s1, &s2)
    mean[0] = m + s1 / n
    v = s2 - s1 * s1 / n
    m2[0] = 0.0 if v < 0.0 else v


# ---------------------------------------------------------------------------------------------
# Rows layout (inner == 1): chunk k is the row block [r0, r1) of an (outer, C) matrix.
# ---------------------------------------------------------------------------------------------

cdef void _rows_chunk_stats(const floating *x, Py_ssize_t C, Py_ssize_t r0, Py_ssize_t r1,
                            double *mean, double *m2, double *s1) noexcept nogil:
    """mean, m2: this chunk's length-C partials; s1: length-C scratch."""
    cdef Py_ssize_t r, c
    cdef double n = <double>(r1 - r0), d, v
    cdef const floating *first = x + r0 * C
    cdef const floating *p
    for c in range(C):
        s1[c] = 0.0
    for r in range(r0, r1):
        p = x + r * C
        for c in range(C):
            s1[c] += <double>p[c] - <double>first[c]
    for c in range(C):
        mean[c] = <double>first[c] + s1[c] / n
        s1[c] = 0.0
        m2[c] = 0.0
    for r in range(r0, r1):
        p = x + r * C
        for c in range(C):
            d = <double>p[c] - mean[c]
            s1[c] += d
            m2[c] += d * d
    for c in range(C):
        mean[c] += s1[c] / n
        v = m2[c] - s1[c] * s1[c] / n
        if v < 0.0:
            m2[c] = 0.0
        else:
            m2[c] = v


cdef void _rows_chunk_sums(const floating *x, const floating *dy, Py_ssize_t C, Py_ssize_t r0,
                           Py_ssize_t r1, const double *mean, double *s1,
                           double *s2) noexcept nogil:
    cdef Py_ssize_t r, c
    cdef double g
    for c in range(C):
        s1[c] = 0.0
        s2[c] = 0.0
    for r in range(r0, r1):
        for c in range(C):
            g = <double>dy[r * C + c]
            s1[c] += g
            s2[c] += g * (<double>x[r * C + c] - mean[c])


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

def partial_stats(const floating[:, :, ::1] x):
    """Per-chunk statistics of each channel of an ``(outer, C, inner)`` array.

    Returns ``(counts, means, m2)``: float64 arrays of shapes (K,), (K, C), (K, C), where chunk k
    holds ``counts[k]`` values of every channel, their mean and their sum of squared deviations.
    The chunking depends on the shape only.
    """
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t K = _nchunks(outer, C, inner) if C > 0 else 0
    cdef Py_ssize_t k, u, c
    counts = np.empty(K, dtype=np.float64)
    means = np.zeros((K, C), dtype=np.float64)
    m2s = np.zeros((K, C), dtype=np.float64)
    scratch = np.empty((K if inner == 1 else 0, C), dtype=np.float64)
    cdef double[::1] cnt = counts
    cdef double[:, ::1] pm = means, pm2 = m2s, ps = scratch
    for k in range(K):
        cnt[k] = <double>_chunk_count(k, outer, C, inner)
    if K == 0:
        return counts, means, m2s
    cdef const floating *xp = &x[0, 0, 0]
    cdef Py_ssize_t rows = _rows_per_chunk(C)
    cdef int nt = _threads(outer * C * inner, K * C if inner > 1 else K)
    if inner > 1:
        for u in prange(K * C, nogil=True, schedule="static", num_threads=nt):
            c = u // K
            k = u - c * K
            _planar_chunk_stats(xp, C, inner, c, k * CHUNK, min((k + 1) * CHUNK, outer * inner),
                                &pm[k, c], &pm2[k, c])
    else:
        for k in prange(K, nogil=True, schedule="static", num_threads=nt):
            _rows_chunk_stats(xp, C, k * rows, min((k + 1) * rows, outer),
                              &pm[k, 0], &pm2[k, 0], &ps[k, 0])
    return counts, means, m2s


def merge_stats(const double[::1] counts, const double[:, ::1] means, const double[:, ::1] m2):
    """Merge chunk partials in order (Chan et al.). Returns ``(count, mean, m2)`` per channel.

    ``count`` is the total count (a float), ``mean`` and ``m2`` are float64 arrays of length C.
    A channel with no values gets mean and m2 NaN.
    """
    cdef Py_ssize_t K = means.shape[0], C = means.shape[1], k, c
    cdef double n, nb, m, M, d, total = 0.0
    mean_out = np.empty(C, dtype=np.float64)
    m2_out = np.empty(C, dtype=np.float64)
    cdef double[::1] mo = mean_out, m2o = m2_out
    for k in range(K):
        total += counts[k]
    with nogil:
        for c in range(C):
            n = 0.0
            m = 0.0
            M = 0.0
            for k in range(K):
                nb = counts[k]
                if nb <= 0.0:
                    continue
                if n == 0.0:
                    m = means[k, c]
                    M = m2[k, c]
                else:
                    d = means[k, c] - m
                    m = m + d * (nb / (n + nb))
                    M = M + m2[k, c] + d * d * (n * nb / (n + nb))
                n = n + nb
            if n == 0.0:
                m = M = NAN
            mo[c] = m
            m2o[c] = M
    return total, mean_out, m2_out


def channel_stats(const floating[:, :, ::1] x):
    """Per-channel ``(count, mean, m2)`` of an ``(outer, C, inner)`` array (partial + merge)."""
    return merge_stats(*partial_stats(x))


# ---------------------------------------------------------------------------------------------
# Apply steps
# ---------------------------------------------------------------------------------------------

cdef void _split(const double[::1] mean, floating *hi, floating *lo) noexcept nogil:
    """hi + lo = mean with hi, lo of the data type: (x - hi) - lo is exact-ish for x near mean."""
    cdef Py_ssize_t c
    for c in range(mean.shape[0]):
        hi[c] = <floating>mean[c]
        lo[c] = <floating>(mean[c] - <double>hi[c])


cdef inline void _norm_row(const floating *x, floating *y, Py_ssize_t n, floating hi, floating lo,
                           floating a, floating b) noexcept nogil:
    cdef Py_ssize_t t
    for t in range(n):
        y[t] = ((x[t] - hi) - lo) * a + b


cdef inline void _norm_cols(const floating *x, floating *y, Py_ssize_t C, const floating *hi,
                            const floating *lo, const floating *a,
                            const floating *b) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(C):
        y[c] = ((x[c] - hi[c]) - lo[c]) * a[c] + b[c]


def normalize(const floating[:, :, ::1] x, const double[::1] mean, const double[::1] scale,
              const double[::1] shift, floating[:, :, ::1] out):
    """``out = (x - mean) * scale + shift`` per channel, with the mean subtracted as hi + lo.

    ``scale`` is invstd * weight and ``shift`` the bias; ``out`` may not overlap ``x``.
    """
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2], r, c
    if x.size == 0:
        return
    cdef floating *coef = <floating *>malloc(4 * C * sizeof(floating))
    if coef == NULL:
        raise MemoryError()
    cdef floating *hi = coef
    cdef floating *lo = coef + C
    cdef floating *a = coef + 2 * C
    cdef floating *b = coef + 3 * C
    cdef const floating *xp = &x[0, 0, 0]
    cdef floating *yp = &out[0, 0, 0]
    cdef int nt = _threads(outer * C * inner, outer * C)
    with nogil:
        _split(mean, hi, lo)
        for c in range(C):
            a[c] = <floating>scale[c]
            b[c] = <floating>shift[c]
        if inner > 1:
            for r in prange(outer * C, schedule="static", num_threads=nt):
                c = r % C
                _norm_row(xp + r * inner, yp + r * inner, inner, hi[c], lo[c], a[c], b[c])
        else:
            for r in prange(outer, schedule="static", num_threads=nt):
                _norm_cols(xp + r * C, yp + r * C, C, hi, lo, a, b)
    free(coef)


def backward_sums(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                  const double[::1] mean):
    """Per-channel ``(sum(dy), sum(dy * (x - mean)))`` as float64 arrays, deterministic."""
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t K = _nchunks(outer, C, inner) if C > 0 else 0
    cdef Py_ssize_t k, u, c
    cdef Py_ssize_t rows = _rows_per_chunk(C)
    p1 = np.zeros((K, C), dtype=np.float64)
    p2 = np.zeros((K, C), dtype=np.float64)
    cdef double[:, ::1] s1 = p1, s2 = p2
    if K == 0:
        return np.zeros(C), np.zeros(C)
    cdef const floating *xp = &x[0, 0, 0]
    cdef const floating *gp = &dy[0, 0, 0]
    cdef const double *mp = &mean[0]
    cdef int nt = _threads(outer * C * inner, K * C if inner > 1 else K)
    if inner > 1:
        for u in prange(K * C, nogil=True, schedule="static", num_threads=nt):
            c = u // K
            k = u - c * K
            _planar_sums(xp, gp, C, inner, c, k * CHUNK, min((k + 1) * CHUNK, outer * inner),
                         mp[c], &s1[k, c], &s2[k, c])
    else:
        for k in prange(K, nogil=True, schedule="static", num_threads=nt):
            _rows_chunk_sums(xp, gp, C, k * rows, min((k + 1) * rows, outer), mp,
                             &s1[k, 0], &s2[k, 0])
    # np.add.reduce over axis 0 of a C-ordered (K, C) array adds rows in order: deterministic.
    return p1.sum(axis=0), p2.sum(axis=0)


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


cdef inline void _bwd_cols(const floating *x, const floating *dy, floating *dx, Py_ssize_t C,
                           const floating *hi, const floating *lo, const floating *k1,
                           const floating *k2, const floating *k3) noexcept nogil:
    cdef Py_ssize_t c
    if x == NULL:
        for c in range(C):
            dx[c] = dy[c] * k1[c]
    else:
        for c in range(C):
            dx[c] = dy[c] * k1[c] + (((x[c] - hi[c]) - lo[c]) * k2[c] + k3[c])


def backward_apply(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                   const double[::1] mean, const double[::1] k1, const double[::1] k2,
                   const double[::1] k3, floating[:, :, ::1] dx, bint use_x=True):
    """``dx = dy * k1 + ((x - mean) * k2 + k3)`` per channel; ``dx = dy * k1`` when not use_x.

    Training mode: k1 = w*invstd, k2 = -w*invstd^3*sum(dy*(x-mean))/M, k3 = -w*invstd*sum(dy)/M.
    Fixed statistics (eval): use_x=False, so NaN/Inf in x do not leak into dx.
    """
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2], r, c
    if x.size == 0:
        return
    cdef floating *coef = <floating *>malloc(5 * C * sizeof(floating))
    if coef == NULL:
        raise MemoryError()
    cdef floating *hi = coef
    cdef floating *lo = coef + C
    cdef floating *a = coef + 2 * C
    cdef floating *b = coef + 3 * C
    cdef floating *e = coef + 4 * C
    cdef const floating *xp = &x[0, 0, 0] if use_x else NULL
    cdef const floating *gp = &dy[0, 0, 0]
    cdef floating *dp = &dx[0, 0, 0]
    cdef int nt = _threads(outer * C * inner, outer * C)
    with nogil:
        _split(mean, hi, lo)
        for c in range(C):
            a[c] = <floating>k1[c]
            b[c] = <floating>k2[c]
            e[c] = <floating>k3[c]
        if inner > 1:
            for r in prange(outer * C, schedule="static", num_threads=nt):
                c = r % C
                _bwd_row(xp + r * inner if use_x else NULL, gp + r * inner, dp + r * inner,
                         inner, hi[c], lo[c], a[c], b[c], e[c])
        else:
            for r in prange(outer, schedule="static", num_threads=nt):
                _bwd_cols(xp + r * C if use_x else NULL, gp + r * C, dp + r * C, C,
                          hi, lo, a, b, e)
    free(coef)
