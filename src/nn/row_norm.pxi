# Row norms (LayerNorm, RMSNorm): statistics per row of an (R, L) matrix (a row is a plane
# (1, 1, L) for the statistics steps), per-column weight and bias.


cdef bint _has_nan(const real *x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t t
    for t in range(n):
        if _d(x[t]) != _d(x[t]):
            return True
    return False


cdef extern from "cnorm_short.h" nogil:
    void cn_short_sums_f32(const float *x, const float *dy, const float *w, Py_ssize_t L,
                           float sh, Py_ssize_t flush, double *s1, double *s2)
    void cn_short_rows_f32(const float *x, const float *dy, const float *w, Py_ssize_t n,
                           Py_ssize_t L, const float *sh, Py_ssize_t flush, double *s1,
                           double *s2)


cdef inline void _short_sums(const floating *x, const floating *dy, const floating *w,
                             Py_ssize_t L, floating sh, double *s1, double *s2) noexcept nogil:
    """The sums of _plane_sums for one row of L <= SHORT_ROW values, in one inlined loop
    (_plane_sums' lanes and order: the same bits): blocks into lanes of the data type, flushed
    into double every FLUSH blocks; the tail into the double lanes. Without dy:
    s1 = sum(x - sh), s2 = sum((x - sh)^2); with dy: s1 = sum(g), s2 = sum(g * (x - sh)),
    g = dy * w (w by column, or NULL). Float rows: the same loop in registers (cnorm_short.h)."""
    cdef floating f1[LANES]
    cdef floating f2[LANES]
    cdef double a1[LANES]
    cdef double a2[LANES]
    cdef const floating *p
    cdef floating e
    cdef Py_ssize_t b, b0 = 0, nb = L // LANES, t = nb * LANES
    cdef int l
    if floating is float and CN_HAVE_SHORT:
        cn_short_sums_f32(x, dy, w, L, sh, FLUSH, s1, s2)
        return
    for l in range(LANES):
        f1[l] = 0.0
        f2[l] = 0.0
        a1[l] = 0.0
        a2[l] = 0.0
    while b0 < nb:
        for b in range(b0, min(b0 + FLUSH, nb)):
            p = x + b * LANES
            if dy == NULL:
                for l in range(LANES):
                    e = p[l] - sh
                    f1[l] += e
                    f2[l] += e * e
            elif w == NULL:
                for l in range(LANES):
                    e = dy[b * LANES + l]
                    f1[l] += e
                    f2[l] += e * (p[l] - sh)
            else:
                for l in range(LANES):
                    e = dy[b * LANES + l] * w[b * LANES + l]
                    f1[l] += e
                    f2[l] += e * (p[l] - sh)
        for l in range(LANES):
            a1[l] += <double>f1[l]
            a2[l] += <double>f2[l]
            f1[l] = 0.0
            f2[l] = 0.0
        b0 += FLUSH
    for l in range(L - t):  # as _seg_add's tail: in double, a product rounded once
        if dy == NULL:
            a1[l] += <double>x[t + l] - <double>sh
            a2[l] += (<double>x[t + l] - <double>sh) * (<double>x[t + l] - <double>sh)
        else:
            e = dy[t + l] * w[t + l] if w != NULL else dy[t + l]
            a1[l] += <double>e
            a2[l] += <double>e * (<double>x[t + l] - <double>sh)
    s1[0] = _tree(a1)
    s2[0] = _tree(a2)


cdef void _rows_stats(const real *x, Py_ssize_t n, Py_ssize_t L, double *mean, double *m2,
                      floating *q) noexcept nogil:
    """Moments of n <= ROW_BLOCK rows. Float rows of at most SHORT_ROW values: _short_sums around
    each row's first value, finished in one vectorized loop (cnorm_finish.h); a row that lost
    digits to that shift, or whose float squares overflowed, or that holds an infinity, again
    by _plane_stats (its careful path). Other rows: one by one (_plane_stats). q: scratch of
    4 * ROW_BLOCK values."""
    cdef double s1[ROW_BLOCK]
    cdef double sh[ROW_BLOCK]
    cdef long long bad[ROW_BLOCK]
    cdef Py_ssize_t i
    cdef const floating *xf = <const floating *>x
    if (real is float or real is double) and L <= SHORT_ROW:
        for i in range(n):
            q[i] = xf[i * L]
            sh[i] = <double>q[i]
        if floating is float and CN_HAVE_SHORT:  # the rows' last tree levels side by side
            cn_short_rows_f32(xf, NULL, NULL, n, L, <const float *>q, FLUSH, s1, m2)
        else:
            for i in range(n):
                _short_sums(xf + i * L, <const floating *>NULL, <const floating *>NULL, L,
                            q[i], &s1[i], &m2[i])
        if cn_finish_rows(n, <double>L, sh, s1, m2, mean, floating is float, bad):
            for i in range(n):
                if bad[i]:
                    _plane_stats(x + i * L, 1, 1, L, 0, &mean[i], &m2[i], q)
        return
    for i in range(n):
        _plane_stats(x + i * L, 1, 1, L, 0, &mean[i], &m2[i], q)


cdef void _row_forward(const real *x, real *y, Py_ssize_t n, Py_ssize_t L, double eps,
                       bint rms, const floating *w, const floating *b, double *mean,
                       double *invstd, bint stream) noexcept nogil:
    """n <= ROW_BLOCK rows: statistics, then the outputs while the rows are in cache (their
    divisions and square roots overlap). RMSNorm: mean 0 and invstd = 1/sqrt(mean(x^2) + eps),
    mean(x^2) = M2/L + mean^2 (no cancellation: both terms are positive). ``stream``: float
    outputs by streaming stores (the caller fences)."""
    cdef double m2[ROW_BLOCK]
    cdef floating q[4 * ROW_BLOCK]
    cdef double dL = <double>L
    cdef Py_ssize_t i
    _rows_stats(x, n, L, mean, m2, q)
    for i in range(n):  # m2 becomes the variance (RMSNorm: mean(x^2))
        m2[i] = m2[i] / dL + (mean[i] * mean[i] if rms else 0.0)
    if rms:
        for i in range(n):
            if m2[i] != m2[i] and not _has_nan(x + i * L, L):
                m2[i] = INFINITY  # infinite values (M2 is inf - inf): mean(x^2) is inf, as torch
            mean[i] = 0.0
    for i in range(n):
        _fwd_coefs(q + 4 * i, 1, 1, 0, False, m2[i], eps, &mean[i], &invstd[i],
                   <const floating *>NULL, <const floating *>NULL)
    for i in range(n):
        if real is float and floating is float and CN_STREAMS:
            cn_norm_run_vec(<const float *>x + i * L, <float *>y + i * L, L, q[4 * i],
                            q[4 * i + 1], q[4 * i + 2], q[4 * i + 3], <const float *>w,
                            <const float *>b, stream)
        else:
            _norm_run(x + i * L, y + i * L, L, q + 4 * i, w, b, NULL, ACT_NONE, 0.0)


cdef void _rows_forward(const real *xp, real *yp, Py_ssize_t R, Py_ssize_t L, double eps,
                        bint rms, const floating *w, const floating *b, double *mean,
                        double *invstd, int n_threads) noexcept nogil:
    """row_forward on data pointers (R >= 1, L >= 1): blocks of whole rows to each thread."""
    cdef Py_ssize_t B = min(<Py_ssize_t>ROW_BLOCK, max(1, CHUNK // L)), r, k
    cdef Py_ssize_t K = (R + B - 1) // B
    # long rows in a call of a backward row block's bytes or more: y goes to memory anyway,
    # so it streams (as dx does), and the next row still finds x in L2
    cdef bint stream = (L >= LONG_ROW and _streams(xp, R * L)
                        and R * L * <Py_ssize_t>sizeof(real) >= ROWS_L3)
    for k in prange(K, schedule="static", num_threads=_threads(R * L, K, n_threads)):
        r = k * B
        _row_forward(xp + r * L, yp + r * L, min(B, R - r), L, eps, rms, w, b, &mean[r],
                     &invstd[r], stream)
        if stream:
            cn_stream_fence()


def row_forward(const real[:, ::1] x, const floating[::1] weight, const floating[::1] bias,
                double eps, bint rms, real[:, ::1] out, double[::1] mean,
                double[::1] invstd, int n_threads):
    """LayerNorm (``rms`` False) or RMSNorm forward of each row of ``x`` (R, L).

    LayerNorm: ``out = (x - mean) * invstd * weight + bias`` with the row's biased variance.
    RMSNorm: ``out = x * invstd * weight`` with ``invstd = 1/sqrt(mean(x^2) + eps)`` and
    ``mean`` set to 0. ``weight`` / ``bias`` (length L) may be None. Each thread takes
    blocks of whole rows. Returns the least positive invstd (see _least_positive).
    """
    if (real is double and floating is float) or (real is not double and floating is double):
        raise TypeError(WRONG_PAIR)  # decided when compiling: nothing below is built for it
    cdef Py_ssize_t R = x.shape[0], L = x.shape[1]
    cdef const floating *w = &weight[0] if weight is not None else NULL
    cdef const floating *b = &bias[0] if bias is not None else NULL
    if R == 0:
        return INFINITY
    if L == 0:
        mean[:] = NAN
        invstd[:] = NAN
        return INFINITY
    with nogil:
        _rows_forward(&x[0, 0], &out[0, 0], R, L, eps, rms, w, b, &mean[0], &invstd[0],
                      n_threads)
    return _least_positive(&invstd[0], R)


cdef inline void _coefs_of_sums(Py_ssize_t L, bint rms, const double *mean,
                                 const double *invstd, double *s, floating *q) noexcept nogil:
    """A row's backward coefficients from its sums s around its mean (see _row_coefs)."""
    if rms:
        s[0] = 0.0
    _bwd_coefs(q, 1, 1, 0, False, True, <double>L, mean, invstd, <const floating *>NULL,
               &s[0], &s[1])


cdef inline void _row_coefs(const real *x, const real *dy, const floating *w,
                            Py_ssize_t L, bint rms, const double *mean, const double *invstd,
                            double *s, floating *q) noexcept nogil:
    """A row's sums s = [sum(g), sum(g * (x - mean))] (g = dy * w) and backward coefficients
    (RMSNorm: the mean is 0 and not differentiated: no sum(g) term)."""
    cdef floating fs = <floating>mean[0]
    if (real is float or real is double) and L <= SHORT_ROW:
        _short_sums(<const floating *>x, <const floating *>dy, w, L, fs, &s[0], &s[1])
        s[1] += (<double>fs - mean[0]) * s[0]  # sums were around fs: to the exact mean
    else:
        _plane_dot(x, dy, w, 1, 1, L, 0, mean[0], &s[0], &s[1])
    _coefs_of_sums(L, rms, mean, invstd, s, q)


cdef inline void _flush_cols(floating *f, double *p, Py_ssize_t n) noexcept nogil:
    """p += f, f = 0: column sums kept in the data type for a few rows, then in double."""
    cdef Py_ssize_t t
    for t in range(n):
        p[t] += <double>f[t]
        f[t] = 0.0


cdef inline void _short_rows_chunk(const real *xp, const real *gp, real *dp, Py_ssize_t k,
                                   Py_ssize_t B, Py_ssize_t R, Py_ssize_t L, const double *mean,
                                   const double *invstd, const floating *w, bint rms,
                                   floating *f, double *part, double *s,
                                   floating *q) noexcept nogil:
    """Chunk k of B short rows: each row's sums and dx while it is in cache, its column sums
    into the thread's f (or NULL), flushed into the chunk's partial every FLUSH rows. Float
    rows go eight at a time: their sums side by side (cnorm_short.h), their coefficients
    (whose divisions then overlap), then their dx."""
    cdef Py_ssize_t r, r0 = k * B, r1 = min(R, (k + 1) * B), i, m
    cdef bint eight = real is float and CN_HAVE_SHORT
    cdef float fs[8]
    cdef double t1[8]
    cdef double t2[8]
    while r0 < r1:
        m = min(8, r1 - r0) if eight else 1
        if eight:
            for i in range(m):
                fs[i] = <float>mean[r0 + i]
            cn_short_rows_f32(<const float *>xp + r0 * L, <const float *>gp + r0 * L,
                              <const float *>w, m, L, fs, FLUSH, t1, t2)
            for i in range(m):
                r = r0 + i
                s[2 * r] = t1[i]
                s[2 * r + 1] = t2[i] + (<double>fs[i] - mean[r]) * t1[i]  # as _row_coefs
                _coefs_of_sums(L, rms, &mean[r], &invstd[r], &s[2 * r], q + 5 * r)
        else:
            _row_coefs(xp + r0 * L, gp + r0 * L, w, L, rms, &mean[r0], &invstd[r0],
                       &s[2 * r0], q + 5 * r0)
        for r in range(r0, r0 + m):
            _grad_run(xp + r * L, gp + r * L, dp + r * L, L, q + 5 * r, w,
                      <floating>invstd[r], f, f + L if f != NULL else NULL, False)
            if f != NULL and ((r + 1 - k * B) % FLUSH == 0 or r + 1 == r1):
                _flush_cols(f, part + 2 * k * L, 2 * L)
        r0 += m


cdef int _short_rows_backward(const real *xp, const real *gp, real *dp, Py_ssize_t R,
                              Py_ssize_t L, const double *mean, const double *invstd,
                              const floating *w, bint rms, bint param_grads, double *gw,
                              double *gb, int n_threads) noexcept nogil:
    """row_backward of R >= 1 rows shorter than LONG_ROW: chunks of B rows, each thread a
    chunk (_short_rows_chunk), the column sums in one partial per chunk, added into gw, gb
    (zeroed by the caller) in chunk order: the same bits on any thread count. Returns -1 when
    out of memory."""
    cdef Py_ssize_t B = max(1, ROW_CHUNK // L), K = (R + B - 1) // B, k, j
    cdef int nt = _threads(R * L, K, n_threads)
    cdef Py_ssize_t P = K if param_grads else 0, F = 2 * L + 2 * PAD if param_grads else 0
    # column partials and row sums, row coefficients, each thread's data-type column sums
    cdef double *part = <double *>calloc(2 * P * L + 2 * R + 1, sizeof(double))
    cdef floating *q = <floating *>malloc(5 * R * sizeof(floating))
    cdef floating *fbuf = <floating *>calloc(nt * F + 1, sizeof(floating))
    cdef bint err = part == NULL or q == NULL or fbuf == NULL
    if not err and nt > 1:
        for k in prange(K, schedule="static", num_threads=nt):
            _short_rows_chunk(xp, gp, dp, k, B, R, L, mean, invstd, w, rms,
                              fbuf + F * threadid() if param_grads else NULL, part,
                              part + 2 * P * L, q)
    elif not err:  # no OpenMP region: on one thread its setup costs a small call more
        for k in range(K):
            _short_rows_chunk(xp, gp, dp, k, B, R, L, mean, invstd, w, rms,
                              fbuf if param_grads else NULL, part, part + 2 * P * L, q)
    for k in range(P if not err else 0):
        for j in range(L):
            gw[j] += part[2 * k * L + j]
            gb[j] += part[2 * k * L + L + j]
    free(part)
    free(q)
    free(fbuf)
    return -1 if err else 0


def row_backward(const real[:, ::1] x, const real[:, ::1] dy, const double[::1] mean,
                 const double[::1] invstd, const floating[::1] weight, bint rms,
                 bint param_grads, real[:, ::1] dx, double[::1] grad_weight,
                 double[::1] grad_bias, int n_threads):
    """Backward of :func:`row_forward`: ``dx`` and, with ``param_grads``, the per-column
    ``grad_weight = sum(dy * x_hat)`` and ``grad_bias = sum(dy)`` over rows (float64).

    Rows shorter than LONG_ROW: chunks of rows, each thread a chunk (row sums, dx while the
    row is in cache), the column sums in one partial per chunk, added in chunk order.
    Longer rows: in blocks of rows (their x and dy stay in L3 between the two passes), the
    rows' sums, then dx by blocks of columns over the block's rows in order, each column block
    owning its columns' sums (flushed every FLUSH rows, as without row blocks: the same bits
    at any thread count). Both orders depend on the shape only.
    """
    if (real is double and floating is float) or (real is not double and floating is double):
        raise TypeError(WRONG_PAIR)  # decided when compiling: nothing below is built for it
    cdef Py_ssize_t R = x.shape[0], L = x.shape[1], r, k, j0, n, K, t
    cdef const floating *w = &weight[0] if weight is not None else NULL
    grad_weight[:] = 0.0
    grad_bias[:] = 0.0
    if R == 0 or L == 0:
        return
    cdef const real *xp = &x[0, 0]
    cdef const real *gp = &dy[0, 0]
    cdef real *dp = &dx[0, 0]
    cdef double *gw = &grad_weight[0]
    cdef double *gb = &grad_bias[0]
    cdef int err = 0
    if L < LONG_ROW:
        with nogil:
            err = _short_rows_backward(xp, gp, dp, R, L, &mean[0], &invstd[0], w, rms,
                                       param_grads, gw, gb, n_threads)
        if err:
            raise MemoryError()
        return
    cdef bint stream = _streams(xp, R * L)
    K = (L + COL_BLOCK - 1) // COL_BLOCK
    cdef int nt = _threads(R * L, K, n_threads)
    cdef Py_ssize_t F = 2 * min(L, <Py_ssize_t>COL_BLOCK) + 2 * PAD if param_grads else 0
    # rows per block, a multiple of FLUSH (the column sums flush at its end) and of the
    # threads (rows share out evenly in the row sums)
    cdef Py_ssize_t Rb = FLUSH * nt * max(1, ROWS_L3 // (2 * L * <Py_ssize_t>sizeof(real))
                                                // (FLUSH * nt))
    cdef Py_ssize_t rb, re
    # every buffer is made here, before the parallel regions: row sums, row coefficients and
    # each thread's data-type column sums (into grad_* directly)
    cdef double *s = <double *>malloc((2 * R + 1) * sizeof(double))
    cdef floating *q = <floating *>malloc(5 * R * sizeof(floating))
    cdef floating *fbuf = <floating *>calloc(nt * F + 1, sizeof(floating))
    cdef floating *f
    if s == NULL or q == NULL or fbuf == NULL:
        free(s)
        free(q)
        free(fbuf)
        raise MemoryError()
    with nogil:
        rb = 0
        while rb < R:  # blocks of rows whose x and dy stay in cache between the passes
            re = min(R, rb + Rb)
            for r in prange(rb, re, schedule="static",
                            num_threads=_threads((re - rb) * L, re - rb, n_threads)):
                _row_coefs(xp + r * L, gp + r * L, w, L, rms, &mean[r], &invstd[r],
                           &s[2 * r], q + 5 * r)
            for t in prange(nt, schedule="static", num_threads=nt):  # blocks of columns
                f = fbuf + F * threadid() if param_grads else NULL
                for k in range(t * K // nt, (t + 1) * K // nt):
                    j0 = k * COL_BLOCK
                    n = min(COL_BLOCK, L - j0)
                    for r in range(rb, re):
                        _grad_run(xp + r * L + j0, gp + r * L + j0, dp + r * L + j0, n,
                                  q + 5 * r, w + j0 if w != NULL else NULL,
                                  <floating>invstd[r], f, f + n if f != NULL else NULL,
                                  stream)
                        if f != NULL and ((r + 1) % FLUSH == 0 or r + 1 == R):
                            _flush_cols(f, gw + j0, n)
                            _flush_cols(f + n, gb + j0, n)
                cn_stream_fence()
            rb = re
    free(s)
    free(q)
    free(fbuf)
