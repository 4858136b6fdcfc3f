# Statistics: per-chunk moments (count, mean, M2) around a shift, Chan's merge, and the
# composed whole-array steps (partials in parallel, merged in chunk order). One routine makes
# every chunk's moments, for every op family: _chunk_stats.


cdef extern from "cnorm_finish.h" nogil:
    bint _finish_chunk "cn_finish"(double n, double shift, double s1, double s2, double *mean,
                                   double *m2)
    bint _too_wide "cn_too_wide"(double n, double s1, double m2)
    bint cn_finish_rows(Py_ssize_t k, double n, const double *sh, const double *s1, double *m2,
                        double *mean, bint wide, long long *bad)
# _finish_chunk(n, shift, s1, s2, &mean, &m2): a chunk's mean and M2 from sums around shift;
# True when they lost > 6 digits to a shift far from the mean (then the caller sums again
# around the mean). _too_wide(n, s1, m2): float32 lanes lost the chunk (squares overflowed or
# underflowed in float; NaN data too). Both in C, so a block of rows finishes in one
# vectorized loop (cn_finish_rows).


cdef void _chunk_stats(const real *x, Py_ssize_t C, Py_ssize_t inner, Py_ssize_t c0,
                       Py_ssize_t c1, Py_ssize_t j0, Py_ssize_t j1, double *mean, double *m2,
                       double *work, floating *lanes) noexcept nogil:
    """Mean and M2 of channels [c0, c1) over their flat range [j0, j1), into mean[c - c0] and
    m2[c - c0]: sums around the range's first value; again around the mean when that lost
    digits; float32 chunks lost in float lanes again in double. work: 2*(c1 - c0) doubles;
    lanes: 3*C values (rows layout only)."""
    cdef Py_ssize_t c, m = c1 - c0, o0 = j0 // inner if j0 >= inner else 0
    cdef double *shift = work
    cdef double *s1 = work + m
    cdef double n = <double>(j1 - j0)
    cdef bint redo = False, odd = False
    for c in range(m):
        shift[c] = _d(x[(o0 * C + c0 + c) * inner + (j0 - o0 * inner)])
    _chunk_sums(x, <const real *>NULL, C, inner, c0, c1, j0, j1,
                shift, s1, m2, lanes)
    for c in range(m):
        redo |= _finish_chunk(n, shift[c], s1[c], m2[c], &mean[c], &m2[c])
        odd |= not _finite(mean[c])  # an OR, not a sum: no dependency chain between channels
    if redo:
        for c in range(m):
            shift[c] = <double><floating>mean[c]
        _chunk_sums(x, <const real *>NULL, C, inner, c0, c1, j0,
                    j1, shift, s1, m2, lanes)
        for c in range(m):
            _finish_chunk(n, shift[c], s1[c], m2[c], &mean[c], &m2[c])
    if floating is float:
        for c in range(m):
            if _too_wide(n, s1[c], m2[c]):
                _wide_sums(x, C, inner, c0 + c, j0, j1, shift[c], &s1[c], &m2[c])
                _finish_chunk(n, shift[c], s1[c], m2[c], &mean[c], &m2[c])
    if odd:  # an infinity around a shift gives inf - inf: IEEE's plain mean
        for c in range(m):  # (inf, -inf or NaN, as NumPy's), and M2 NaN
            if not _finite(mean[c]):
                _wide_sums(x, C, inner, c0 + c, j0, j1, 0.0, &s1[c], &m2[c])
                mean[c] = s1[c] / n
                m2[c] = NAN


cdef inline bint _finite(double v) noexcept nogil:
    return v - v == 0.0  # False for an infinity and for NaN


cdef double _least_positive(const double *invstd, Py_ssize_t n) noexcept nogil:
    """The smallest positive of n values (INFINITY when none is): the forward kernels return it
    for their invstd, so that the float32 ops test it against the limit of float32's range in
    one comparison (cnorm/nn/_ops/context.py); 0 is an infinite variance, where float64
    cannot help."""
    cdef double least = INFINITY
    cdef Py_ssize_t i
    for i in range(n):
        if 0.0 < invstd[i] < least:
            least = invstd[i]
    return least


cdef inline void _merge_into(double *n, double *m, double *M, double nb, double mb,
                             double Mb) noexcept nogil:
    """Chan et al.: fold a partial (nb, mb, Mb) into the running (n, m, M). An infinite mean
    on either side makes the merged one IEEE's sum of the two (inf, -inf or NaN, as the mean
    of the values would be) and M NaN; finite data never takes that branch."""
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
    if not _finite(d):
        m[0] = m[0] + mb
        M[0] = NAN
    else:
        m[0] = m[0] + d * (nb / tot)
        M[0] = M[0] + Mb + d * d * (n[0] * nb / tot)
    n[0] = tot


cdef void _merge(Py_ssize_t K, Py_ssize_t C, const double *cnt, const double *pm,
                 const double *pm2, double *mean, double *m2) noexcept nogil:
    """_merge_into over K chunk partials (K, C) in order, for all channels at once: every
    channel has the same count per chunk, so the divisions are made once per chunk (the same
    expressions, the same bits). No values: NaN."""
    cdef Py_ssize_t k, c
    cdef double n = 0.0, nb, tot, fa, fb, d
    cdef bint odd = False
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
            n = nb
            continue
        tot = n + nb
        fa = nb / tot
        fb = n * nb / tot
        for c in range(C):
            d = pm[k * C + c] - mean[c]
            mean[c] = mean[c] + d * fa
            m2[c] = m2[c] + pm2[k * C + c] + d * d * fb
        n = tot
    if n == 0.0:
        for c in range(C):
            mean[c] = NAN
            m2[c] = NAN
        return
    for c in range(C):
        odd |= not _finite(mean[c])
    if not odd:
        return
    for c in range(C):  # an infinite chunk mean made inf - inf above: IEEE's weighted sum of
        if not _finite(mean[c]):  # the chunk means decides (inf, -inf or NaN), M2 is NaN
            d = 0.0
            for k in range(K):
                if cnt[k] > 0.0:
                    d = d + pm[k * C + c] * cnt[k]
            mean[c] = d / n
            m2[c] = NAN


cdef void _plane_stats(const real *x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                       Py_ssize_t c, double *mean, double *m2,
                       const floating *tag) noexcept nogil:
    """Whole-channel moments on one thread: plane chunks merged in order (the bits of _stats
    in the plane layout). Any inner: a row of a row norm is (1, 1, L). ``tag``: any pointer of
    the compute type (its value is unused; float32 for half data)."""
    cdef Py_ssize_t k, n_all = outer * inner, j1
    cdef double n = 0.0, mb, Mb
    cdef double work[2]
    mean[0] = 0.0
    m2[0] = 0.0
    for k in range((n_all + CHUNK - 1) // CHUNK):
        j1 = min((k + 1) * CHUNK, n_all)
        _chunk_stats(x, C, inner, c, c + 1, k * CHUNK, j1, &mb, &Mb, work,
                     <floating *>NULL)
        _merge_into(&n, mean, m2, <double>(j1 - k * CHUNK), mb, Mb)
    if n == 0.0:
        mean[0] = NAN
        m2[0] = NAN


cdef void _plane_dot(const real *x, const real *dy, const floating *w,
                     Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, Py_ssize_t c,
                     double mean, double *s1, double *s2) noexcept nogil:
    """Whole-channel sum(g), sum(g * (x - mean)) on one thread: plane chunk sums added in
    order (the bits of _sums in the plane layout)."""
    cdef Py_ssize_t k, n_all = outer * inner
    cdef double a, b
    s1[0] = 0.0
    s2[0] = 0.0
    for k in range((n_all + CHUNK - 1) // CHUNK):
        _plane_sums(x, dy, w, C, inner, c, k * CHUNK, min((k + 1) * CHUNK, n_all), mean, &a, &b)
        s1[0] += a
        s2[0] += b


cdef inline Py_ssize_t _units(Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner) noexcept nogil:
    """Independent parts of a statistics pass: (channel, chunk) pairs, or chunks."""
    return _nchunks(outer, C, inner) * (C if inner >= GATHER else 1)


cdef inline Py_ssize_t _scratch_stride(Py_ssize_t C) noexcept nogil:
    """Doubles of one thread's scratch in _partials: 2*C doubles and 3*C values (the rows
    layout's lanes, at most 3*C doubles), or a band's lanes (the plane layout), padded so that
    no two threads share a line."""
    return max(5 * C, min(C, <Py_ssize_t>BAND) * BAND_STRIDE) + PAD


cdef void _band_unit(const real *x, const real *dy, Py_ssize_t outer, Py_ssize_t C,
                     Py_ssize_t inner, Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t k0,
                     Py_ssize_t k1, const double *mean, double *p1, double *p2,
                     double *work, const floating *tag) noexcept nogil:
    """The plane-layout partials of chunks [k0, k1) of channels [c0, c1) by _band_sums, each
    finished as _chunk_stats would (a chunk that needs its redo or the wide sums gets
    _chunk_stats itself: the same bits)."""
    cdef Py_ssize_t k, c, j0, j1
    cdef double s1, n
    cdef double w2[2]
    _band_sums(x, dy, outer, C, inner, c0, c1, k0, k1, mean, p1, p2, work, tag)
    if dy != NULL:
        return
    for k in range(k0, k1):
        j0 = k * CHUNK
        j1 = _chunk_end(k, outer, C, inner)
        n = <double>(j1 - j0)
        for c in range(c0, c1):
            s1 = p1[k * C + c]
            if (_finish_chunk(n, _d(x[((j0 // inner) * C + c) * inner + j0 % inner]), s1,
                              p2[k * C + c], &p1[k * C + c], &p2[k * C + c])
                    or (floating is float and _too_wide(n, s1, p2[k * C + c]))
                    or not _finite(p1[k * C + c])):
                _chunk_stats(x, C, inner, c, c + 1, j0, j1, &p1[k * C + c], &p2[k * C + c],
                             w2, <floating *>NULL)


cdef inline void _chunk_partial(const real *x, const real *dy, Py_ssize_t outer, Py_ssize_t C,
                                Py_ssize_t inner, Py_ssize_t k, const double *mean, double *p1,
                                double *p2, double *work, const floating *tag) noexcept nogil:
    """Chunk k's partials of _partials into row k of p1, p2 (``work``: this thread's
    scratch)."""
    cdef Py_ssize_t j0 = _chunk_start(k, outer, C, inner), j1 = _chunk_end(k, outer, C, inner)
    if dy == NULL:
        _chunk_stats(x, C, inner, 0, C, j0, j1, p1 + k * C, p2 + k * C, work,
                     <floating *>(work + 2 * C))
    else:
        _chunk_sums(x, dy, C, inner, 0, C, j0, j1, mean, p1 + k * C, p2 + k * C,
                    <floating *>(work + 2 * C))


cdef void _partials(const real *x, const real *dy, Py_ssize_t outer, Py_ssize_t C,
                    Py_ssize_t inner, const double *mean, double *p1, double *p2,
                    double *scratch, int nt, const floating *tag) noexcept nogil:
    """Chunk partials into (K, C) arrays, in parallel over the units. Without dy: moments
    (p1 = mean, p2 = M2); with dy: sum(dy) and sum(dy * (x - mean)). scratch:
    nt * _scratch_stride(C) doubles. ``tag``: as in _plane_stats. Several planar channels go
    in memory order (_band_unit): per thread a run of chunks, BAND channels at a time."""
    cdef Py_ssize_t K = _nchunks(outer, C, inner), u, k
    cdef Py_ssize_t nb = (C + BAND - 1) // BAND, ng = min(K, <Py_ssize_t>nt)
    if inner >= GATHER:
        if C == 1:  # the plane is one run (as _plane_sums reads it)
            inner = outer * inner
            outer = 1
        for u in prange(ng * nb, schedule="static", num_threads=nt):
            _band_unit(x, dy, outer, C, inner, (u % nb) * BAND, min(C, (u % nb + 1) * BAND),
                       (u // nb) * K // ng, (u // nb + 1) * K // ng, mean, p1, p2,
                       scratch + _scratch_stride(C) * threadid(), tag)
        return
    if nt > 1:
        for k in prange(K, schedule="static", num_threads=nt):
            _chunk_partial(x, dy, outer, C, inner, k, mean, p1, p2,
                           scratch + _scratch_stride(C) * threadid(), tag)
    else:  # no OpenMP region: on one thread its setup costs more than a small call's work
        for k in range(K):
            _chunk_partial(x, dy, outer, C, inner, k, mean, p1, p2, scratch, tag)


cdef int _stats(const real *x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                double *mean, double *m2, int nt, const floating *tag) noexcept nogil:
    """Per-channel mean and M2 of a non-empty array: chunk partials on up to nt threads, then
    their merge in order. Returns -1 when out of memory."""
    cdef Py_ssize_t k, K = _nchunks(outer, C, inner)
    nt = _threads(outer * C * inner, _units(outer, C, inner), nt)
    cdef double *part = <double *>malloc((2 * K * C + K + nt * _scratch_stride(C))
                                         * sizeof(double))
    cdef double *cnt = part + 2 * K * C
    if part == NULL:
        return -1
    _partials(x, <const real *>NULL, outer, C, inner, NULL, part, part + K * C, cnt + K, nt, tag)
    for k in range(K):
        cnt[k] = <double>(_chunk_end(k, outer, C, inner) - _chunk_start(k, outer, C, inner))
    _merge(K, C, cnt, part, part + K * C, mean, m2)
    free(part)
    return 0


cdef int _sums(const real *x, const real *dy, Py_ssize_t outer, Py_ssize_t C,
               Py_ssize_t inner, const double *mean, double *s1, double *s2,
               int nt, const floating *tag) noexcept nogil:
    """Per-channel sum(dy) and sum(dy * (x - mean)) of a non-empty array: chunk partials on up
    to nt threads, added in chunk order. Returns -1 when out of memory."""
    cdef Py_ssize_t k, c, K = _nchunks(outer, C, inner)
    nt = _threads(outer * C * inner, _units(outer, C, inner), nt)
    cdef double *part = <double *>malloc((2 * K * C + nt * _scratch_stride(C)) * sizeof(double))
    if part == NULL:
        return -1
    _partials(x, dy, outer, C, inner, mean, part, part + K * C, part + 2 * K * C, nt, tag)
    for c in range(C):
        s1[c] = 0.0
        s2[c] = 0.0
    for k in range(K):
        for c in range(C):
            s1[c] += part[k * C + c]
            s2[c] += part[K * C + k * C + c]
    free(part)
    return 0
