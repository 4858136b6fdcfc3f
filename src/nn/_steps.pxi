# ---------------------------------------------------------------------------------------------
# The composable steps on their own: partial statistics -> merge -> (finalize) -> normalize,
# and backward sums -> backward apply. SyncBatchNorm runs them around its collectives
# (channel_stats, sync_stats, normalize; backward_sums, sync_coefficients, backward_apply),
# Moments merges with merge_stats, and a new op can be built from them. They run the same
# routines as the fused kernels, so they give the same bits (tests/kernels/test_layouts.py
# checks it). Their signatures are documented in docs/api.md ("Kernel steps"), which
# tests/test_docs.py keeps in step with this file.
# ---------------------------------------------------------------------------------------------


def partial_stats(const real[:, :, ::1] x, int n_threads=1):
    """Per-chunk moments of each channel of an ``(outer, C, inner)`` array.

    Returns ``(counts, means, m2)``: float64 arrays of shapes (K,), (K, C), (K, C); chunk k
    holds ``counts[k]`` values of every channel. The chunks depend on the shape only.
    """
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t K = _nchunks(outer, C, inner) if x.size > 0 else 0, k
    cdef int nt = _threads(outer * C * inner, _units(outer, C, inner), n_threads)
    counts = np.empty(K, dtype=np.float64)
    means = np.zeros((K, C), dtype=np.float64)
    m2s = np.zeros((K, C), dtype=np.float64)
    scratch = np.empty(nt * _scratch_stride(C) + 1, dtype=np.float64)
    cdef double[::1] cnt = counts, sc = scratch
    cdef double[:, ::1] pm = means, pm2 = m2s
    for k in range(K):
        cnt[k] = <double>(_chunk_end(k, outer, C, inner) - _chunk_start(k, outer, C, inner))
    if K > 0:
        with nogil:
            if real is double:
                _partials(&x[0, 0, 0], <const real *>NULL, outer, C, inner, NULL, &pm[0, 0],
                          &pm2[0, 0], &sc[0], nt, <double *>NULL)
            else:
                _partials(&x[0, 0, 0], <const real *>NULL, outer, C, inner, NULL, &pm[0, 0],
                          &pm2[0, 0], &sc[0], nt, <float *>NULL)
    return counts, means, m2s


def plane_moments(const real[:, :, ::1] x):
    """Per-channel ``(mean, m2)`` as the in-cache passes make them (_plane_stats: one channel
    at a time on one thread); channel_stats must give the same bits."""
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2], c
    mean = np.full(C, np.nan)
    m2 = np.full(C, np.nan)
    cdef double[::1] mv = mean, m2v = m2
    if x.size > 0:
        for c in range(C):
            if real is double:
                _plane_stats(&x[0, 0, 0], outer, C, inner, c, &mv[c], &m2v[c], <double *>NULL)
            else:
                _plane_stats(&x[0, 0, 0], outer, C, inner, c, &mv[c], &m2v[c], <float *>NULL)
    return mean, m2


def plane_sums(const real[:, :, ::1] x, const real[:, :, ::1] dy, const double[::1] mean):
    """Per-channel ``(sum(dy), sum(dy * (x - mean)))`` as the in-cache passes make them
    (_plane_dot); backward_sums must give the same bits."""
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2], c
    s1 = np.zeros(C, dtype=np.float64)
    s2 = np.zeros(C, dtype=np.float64)
    cdef double[::1] v1 = s1, v2 = s2
    if x.size > 0:
        for c in range(C):
            if real is double:
                _plane_dot(&x[0, 0, 0], &dy[0, 0, 0], <const double *>NULL, outer, C, inner, c,
                           mean[c], &v1[c], &v2[c])
            else:
                _plane_dot(&x[0, 0, 0], &dy[0, 0, 0], <const float *>NULL, outer, C, inner, c,
                           mean[c], &v1[c], &v2[c])
    return s1, s2


def merge_stats(const double[::1] counts, const double[:, ::1] means, const double[:, ::1] m2):
    """Merge chunk partials in order (Chan et al.). Returns ``(count, mean, m2)``: the total
    count and float64 arrays of length C (NaN for a channel with no values)."""
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



def sync_stats(object rows, double eps, const double[::1] weight=None):
    """SyncBatchNorm's merge: ``rows`` holds every rank's ``(count, mean[C], m2[C])`` in rank
    order, merged in that order as merge_stats merges chunks; then ``invstd = 1 / sqrt(m2 /
    count + eps)`` and ``scale = invstd * weight`` (invstd without a weight), as NumPy would
    round them. Returns ``(count, mean, m2, invstd, scale)``."""
    cdef const double[:, ::1] r = np.ascontiguousarray(rows, dtype=np.float64)
    cdef Py_ssize_t C = (r.shape[1] - 1) // 2, c
    cdef double total
    stats = np.empty((4, C), dtype=np.float64)
    cdef double[:, ::1] s = stats
    if r.shape[0] == 0 or r.shape[1] != 1 + 2 * C or (weight is not None
                                                      and weight.shape[0] != C):
        raise ValueError("rows must be (ranks, 1 + 2C), weight None or of C values")
    _merge_rows(&r[0, 0], r.shape[0], r.shape[1], C, eps, &total, &s[0, 0], &s[1, 0],
                &s[2, 0])
    for c in range(C):
        s[3, c] = s[2, c] * weight[c] if weight is not None else s[2, c]
    return total, stats[0], stats[1], stats[2], stats[3]


def sync_coefficients(object rows, const double[::1] invstd, double count,
                      const double[::1] weight=None):
    """SyncBatchNorm's backward coefficients: ``rows`` holds every rank's ``(sum(g)[C],
    sum(g * (x - mean))[C])`` in rank order, added in that order (the same bits on every
    rank); then backward_apply's ``k1 = w * invstd``, ``k2 = -invstd**3 * (w * S2) / count``
    and ``k3 = -invstd * (w * S1) / count`` (w = 1 without a weight), rounded as NumPy would
    evaluate those expressions left to right. Returns ``(k1, k2, k3)``."""
    cdef const double[:, ::1] r = np.ascontiguousarray(rows, dtype=np.float64)
    cdef Py_ssize_t C = r.shape[1] // 2
    if (r.shape[0] == 0 or r.shape[1] != 2 * C or invstd.shape[0] != C
            or (weight is not None and weight.shape[0] != C)):
        raise ValueError("rows must be (ranks, 2C), invstd and weight of C values")
    k = np.empty((3, C), dtype=np.float64)
    cdef double[:, ::1] kv = k
    if C > 0:
        _sync_coefs(&r[0, 0], r.shape[0], r.shape[1], C, &invstd[0], count,
                    &weight[0] if weight is not None else NULL, &kv[0, 0], &kv[1, 0],
                    &kv[2, 0])
    return k[0], k[1], k[2]


cdef int _coef_apply(const real *x, const real *dy, real *out, Py_ssize_t outer,
                     Py_ssize_t C, Py_ssize_t inner, const double *mean, const double *a,
                     const double *b, const double *e, int n_threads,
                     const floating *tag, const real *residual=NULL, int act=ACT_NONE,
                     double slope=0.0) except -1:
    cdef Py_ssize_t c
    cdef int width = 4 if dy == NULL else 5
    cdef floating *coef = <floating *>malloc(width * C * sizeof(floating))
    if coef == NULL:
        raise MemoryError()
    with nogil:
        for c in range(C):
            _set_coef(coef, C, c, inner == 1, width, mean[c], a[c], b[c],
                      e[c] if width == 5 else 0.0)
        _apply(x, dy, out, outer, C, inner, coef, 0, C, n_threads, residual, act, slope)
    free(coef)
    return 0


def normalize(const real[:, :, ::1] x, const double[::1] mean, const double[::1] scale,
              const double[::1] shift, real[:, :, ::1] out, int n_threads=1,
              const real[:, :, ::1] residual=None, int act=ACT_NONE, double slope=0.0):
    """``out = (x - mean) * scale + shift`` per channel (the apply step); with a fused block's
    epilogue, ``out = act(that + residual)`` (``residual`` may be None)."""
    if x.size == 0:
        return
    cdef const real *r = &residual[0, 0, 0] if residual is not None else NULL
    if real is double:
        _coef_apply(&x[0, 0, 0], NULL, &out[0, 0, 0], x.shape[0], x.shape[1], x.shape[2],
                    &mean[0], &scale[0], &shift[0], NULL, n_threads, <double *>NULL, r, act,
                    slope)
    else:
        _coef_apply(&x[0, 0, 0], NULL, &out[0, 0, 0], x.shape[0], x.shape[1], x.shape[2],
                    &mean[0], &scale[0], &shift[0], NULL, n_threads, <float *>NULL, r, act,
                    slope)


def backward_sums(const real[:, :, ::1] x, const real[:, :, ::1] dy,
                  const double[::1] mean, int n_threads=1):
    """Per-channel ``(sum(dy), sum(dy * (x - mean)))`` as float64 arrays."""
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    s1 = np.zeros(C, dtype=np.float64)
    s2 = np.zeros(C, dtype=np.float64)
    cdef double[::1] v1 = s1, v2 = s2
    cdef int err = 0
    if x.size > 0:
        with nogil:
            if real is double:
                err = _sums(&x[0, 0, 0], &dy[0, 0, 0], outer, C, inner, &mean[0], &v1[0],
                            &v2[0], n_threads, <double *>NULL)
            else:
                err = _sums(&x[0, 0, 0], &dy[0, 0, 0], outer, C, inner, &mean[0], &v1[0],
                            &v2[0], n_threads, <float *>NULL)
        if err:
            raise MemoryError()
    return s1, s2


def backward_apply(const real[:, :, ::1] x, const real[:, :, ::1] dy,
                   const double[::1] mean, const double[::1] k1, const double[::1] k2,
                   const double[::1] k3, real[:, :, ::1] dx, bint use_x=True,
                   int n_threads=1):
    """``dx = dy * k1 + ((x - mean) * k2 + k3)`` per channel; ``dx = dy * k1`` without use_x
    (fixed statistics)."""
    if x.size == 0:
        return
    if real is double:
        _coef_apply(&x[0, 0, 0] if use_x else NULL, &dy[0, 0, 0], &dx[0, 0, 0], x.shape[0],
                    x.shape[1], x.shape[2], &mean[0], &k1[0], &k2[0], &k3[0], n_threads,
                    <double *>NULL)
    else:
        _coef_apply(&x[0, 0, 0] if use_x else NULL, &dy[0, 0, 0], &dx[0, 0, 0], x.shape[0],
                    x.shape[1], x.shape[2], &mean[0], &k1[0], &k2[0], &k3[0], n_threads,
                    <float *>NULL)
