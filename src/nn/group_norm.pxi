# Group norms (GroupNorm, InstanceNorm = one channel per group): each sample n of an
# (N, outer, C, inner) view is a batch-norm problem over its (outer, C, inner) part, with
# statistics per group of Cg = C // G channels (the passes of _apply.pxi). NCHW is
# (N, 1, C, H*W); channels-last (N, H*W, C, 1). Samples go to threads whole (each sample's
# passes on one thread, while it is in cache) or, with fewer samples than threads, one by one
# with the passes in parallel: the same bits either way.


cdef void _group_rows(const real *x, Py_ssize_t k, Py_ssize_t R, Py_ssize_t L, double *mean,
                      double *m2, const floating *tag) noexcept nogil:
    """Block k of ROW_BLOCK rows (of R) of L values: the row norms' moments (_rows_stats)."""
    cdef floating q[4 * ROW_BLOCK]
    cdef Py_ssize_t r = k * ROW_BLOCK
    _rows_stats(x + r * L, min(<Py_ssize_t>ROW_BLOCK, R - r), L, &mean[r], &m2[r], q)


cdef inline void _short_groups_apply(const real *xp, real *yp, Py_ssize_t r0, Py_ssize_t r1,
                                     Py_ssize_t C, Py_ssize_t inner, const floating *coef,
                                     const real *rp, int act, double slope) noexcept nogil:
    """The output of runs [r0, r1) (run r: channel r % C of sample r // C, inner values, its
    coefficients at coef + 4 * r); inner 1: runs [r0, r1) are whole samples' rows of C
    channels, against coefficient vectors over them."""
    cdef Py_ssize_t r
    if inner == 1:
        for r in range(r0 // C, r1 // C):
            _apply_cols(xp + r * C, <const real *>NULL, yp + r * C, C, coef + 4 * r * C, C,
                        rp + r * C if rp != NULL else NULL, act, slope)
        return
    for r in range(r0, r1):
        _norm_run(xp + r * inner, yp + r * inner, inner, coef + 4 * r, NULL, NULL,
                  rp + r * inner if rp != NULL else NULL, act, slope)


cdef void _short_groups_sample(const real *xp, real *yp, Py_ssize_t n, Py_ssize_t C,
                               Py_ssize_t inner, Py_ssize_t G, double eps, const floating *w,
                               const floating *b, double *mean, double *m2, double *invstd,
                               floating *coef, const real *rp, int act,
                               double slope) noexcept nogil:
    """Sample n whole on this thread (while it is in cache): its G rows' moments, then its
    coefficients and output."""
    cdef Py_ssize_t Cg = C // G, L = Cg * inner, g, k
    for k in range((G + ROW_BLOCK - 1) // ROW_BLOCK):
        _group_rows(xp + n * C * inner, k, G, L, &mean[n * G], &m2[n * G], coef)
    for g in range(G):
        _fwd_coefs(coef + 4 * n * C, C, Cg, g, inner == 1, m2[n * G + g] / <double>L, eps,
                   &mean[n * G], &invstd[n * G], w, b)
    _short_groups_apply(xp, yp, n * C, (n + 1) * C, C, inner, coef, rp, act, slope)


cdef void _short_groups_forward(const real *xp, real *yp, Py_ssize_t N, Py_ssize_t C,
                                Py_ssize_t inner, Py_ssize_t G, double eps, const floating *w,
                                const floating *b, double *mean, double *m2, double *invstd,
                                floating *coef, const real *rp, int act, double slope,
                                int n_threads) noexcept nogil:
    """NCHW groups of fewer than GATHER values, each a contiguous row of L = Cg * inner: their
    moments as the row norms take them, then every channel's run. The chunk plan of _forward
    cost a small call more than its values (GroupNorm(4, 16) on (8, 16): 5.9 -> 2.7 us a
    functional call). Samples whole to threads; with fewer samples than threads, rows in
    blocks to threads, then runs: each row and run one thread's, the same bits either way."""
    cdef Py_ssize_t Cg = C // G, L = Cg * inner, R = N * G, S = C * inner, k, n, g, t
    cdef Py_ssize_t K = (R + ROW_BLOCK - 1) // ROW_BLOCK
    cdef int nt = _threads(N * S, K, n_threads)
    if nt == 1:  # no OpenMP region: on one thread its setup costs more than a small call's work
        for n in range(N):
            _short_groups_sample(xp, yp, n, C, inner, G, eps, w, b, mean, m2, invstd, coef, rp,
                                 act, slope)
    elif N >= nt:
        for n in prange(N, schedule="static", num_threads=nt):
            _short_groups_sample(xp, yp, n, C, inner, G, eps, w, b, mean, m2, invstd, coef, rp,
                                 act, slope)
    else:
        for k in prange(K, schedule="static", num_threads=nt):
            _group_rows(xp, k, R, L, mean, m2, coef)
        for n in range(N):
            for g in range(G):
                _fwd_coefs(coef + 4 * n * C, C, Cg, g, inner == 1, m2[n * G + g] / <double>L,
                           eps, &mean[n * G], &invstd[n * G], w, b)
        nt = _threads(N * S, N * C if inner > 1 else N, n_threads)
        for t in prange(nt, schedule="static", num_threads=nt):
            _short_groups_apply(xp, yp, t * N * C // nt, (t + 1) * N * C // nt, C, inner,
                                coef, rp, act, slope)


cdef int _groups_forward(const real *xp, real *yp, Py_ssize_t N, Py_ssize_t outer,
                         Py_ssize_t C, Py_ssize_t inner, Py_ssize_t G, double eps,
                         const floating *w, const floating *b, double *mean, double *m2,
                         double *invstd, floating *coef, const real *rp, int act,
                         double slope, int n_threads) noexcept nogil:
    """group_forward on data pointers (N >= 1, a non-empty sample): mean, m2, invstd (N, G);
    coef: 4 * N * C values. Returns -1 when out of memory."""
    cdef Py_ssize_t S = outer * C * inner, n
    cdef Py_ssize_t whole = N * S * <Py_ssize_t>sizeof(real)  # the samples' outputs together
    cdef int nt = _threads(N * S, N, n_threads), err = 0
    if outer == 1 and (C // G) * inner < GATHER:
        _short_groups_forward(xp, yp, N, C, inner, G, eps, w, b, mean, m2, invstd, coef, rp,
                              act, slope, n_threads)
        return 0
    if nt > 1:
        for n in prange(N, schedule="static", num_threads=nt):
            err |= _forward(xp + n * S, yp + n * S, outer, C, inner, C // G, eps, w, b,
                            &mean[n * G], &m2[n * G], &invstd[n * G], coef + 4 * n * C, 1,
                            rp + n * S if rp != NULL else NULL, act, slope, whole)
    else:
        for n in range(N):
            err |= _forward(xp + n * S, yp + n * S, outer, C, inner, C // G, eps, w, b,
                            &mean[n * G], &m2[n * G], &invstd[n * G], coef + 4 * n * C,
                            n_threads, rp + n * S if rp != NULL else NULL, act, slope, whole)
    return err


def group_forward(const real[:, :, :, ::1] x, Py_ssize_t G, const floating[::1] weight,
                  const floating[::1] bias, double eps, real[:, :, :, ::1] out,
                  double[:, ::1] mean, double[:, ::1] m2, double[:, ::1] invstd,
                  const real[:, :, :, ::1] residual, int act, double slope, int n_threads):
    """Forward: per (sample, group) ``mean``, ``m2`` and ``invstd`` (N, G), and
    ``out = (x - mean) * invstd * weight + bias`` per channel, or with ``residual`` and
    ``act`` the fused block act(that + residual). ``weight`` / ``bias`` may be None. Returns
    the least positive invstd (see _least_positive)."""
    if (real is double and floating is float) or (real is not double and floating is double):
        raise TypeError(WRONG_PAIR)  # decided when compiling: nothing below is built for it
    cdef Py_ssize_t N = x.shape[0], outer = x.shape[1], C = x.shape[2], inner = x.shape[3]
    cdef const floating *w = &weight[0] if weight is not None else NULL
    cdef const floating *b = &bias[0] if bias is not None else NULL
    if N == 0:
        return INFINITY
    if outer * C * inner == 0:
        mean[:, :] = NAN
        m2[:, :] = NAN
        invstd[:, :] = NAN
        return INFINITY
    cdef int err = 0
    cdef floating *coef = <floating *>malloc(4 * N * C * sizeof(floating))
    if coef == NULL:
        raise MemoryError()
    with nogil:
        err = _groups_forward(&x[0, 0, 0, 0], &out[0, 0, 0, 0], N, outer, C, inner, G, eps, w,
                              b, &mean[0, 0], &m2[0, 0], &invstd[0, 0], coef,
                              &residual[0, 0, 0, 0] if residual is not None else NULL, act,
                              slope, n_threads)
    free(coef)
    if err:
        raise MemoryError()
    return _least_positive(&invstd[0, 0], N * G)


cdef void _short_groups_backward(const real *x, const real *dy, real *dx, Py_ssize_t C,
                                 Py_ssize_t inner, Py_ssize_t G, const double *mean,
                                 const double *invstd, const floating *w, double *s1,
                                 double *s2, floating *coef, const Epi *epi) noexcept nogil:
    """One NCHW sample of float data whose groups have fewer than GATHER values, on this
    thread: each channel's run summed as the row norms sum a row around their mean
    (_short_sums; inner 1: the value itself), then the coefficients and dx (the chunk plan of
    _backward cost a small call more than its values)."""
    cdef Py_ssize_t Cg = C // G, c, g
    cdef floating fs
    cdef double m
    if real is f16_t or real is bf16_t:
        return  # half data takes _backward (group_backward's condition)
    if epi != NULL:  # the fused block's g = dy * act'(pre) first, read from cache below
        _act_grad_rows(x, dy, 0, 1, C, inner, Cg, 0, C, mean, invstd, w, epi)
        dy = <const real *>epi.g
    for c in range(C):
        m = mean[c // Cg]
        fs = <floating>m
        if inner == 1:
            s1[c] = 0.0 + <double>dy[c]
            s2[c] = 0.0 + <double>dy[c] * (<double>x[c] - <double>fs)
        else:
            _short_sums(<const floating *>x + c * inner, <const floating *>dy + c * inner,
                        <const floating *>NULL, inner, fs, &s1[c], &s2[c])
        s2[c] += (<double>fs - m) * s1[c]  # the sums were around fs: to the exact mean
    for g in range(G):
        _bwd_coefs(coef, C, Cg, g, inner == 1, True, <double>(Cg * inner), mean, invstd, w,
                   s1, s2)
    if inner == 1:
        _apply_cols(x, dy, dx, C, coef, C, NULL, ACT_NONE, 0.0)
        return
    for c in range(C):
        _grad_run(x + c * inner, dy + c * inner, dx + c * inner, inner, coef + 5 * c, NULL,
                  0.0, NULL, NULL, False)


def group_backward(const real[:, :, :, ::1] x, const real[:, :, :, ::1] dy,
                   Py_ssize_t G, const double[:, ::1] mean, const double[:, ::1] invstd,
                   const floating[::1] weight, real[:, :, :, ::1] dx, double[:, ::1] sum_dy,
                   double[:, ::1] sum_dy_xmu, const real[:, :, :, ::1] y,
                   const real[:, :, :, ::1] residual, const double[::1] shift, int act,
                   double slope, real[:, :, :, ::1] g, int n_threads):
    """Backward of :func:`group_forward`: ``dx`` and the per (sample, channel) ``sum_dy`` and
    ``sum_dy_xmu = sum(dy * (x - mean))`` (N, C) for the parameter gradients; with ``g`` the
    fused block's, as in bn_backward."""
    if (real is double and floating is float) or (real is not double and floating is double):
        raise TypeError(WRONG_PAIR)  # decided when compiling: nothing below is built for it
    cdef Py_ssize_t N = x.shape[0], outer = x.shape[1], C = x.shape[2], inner = x.shape[3]
    cdef Py_ssize_t S = outer * C * inner, n
    cdef const floating *w = &weight[0] if weight is not None else NULL
    sum_dy[:, :] = 0.0
    sum_dy_xmu[:, :] = 0.0
    if N == 0 or S == 0:
        return
    cdef int nt = _threads(N * S, N, n_threads), err = 0
    cdef floating *coef = <floating *>malloc(5 * N * C * sizeof(floating))
    cdef const real *xp = &x[0, 0, 0, 0]
    cdef const real *gp = &dy[0, 0, 0, 0]
    cdef real *dp = &dx[0, 0, 0, 0]
    cdef Epi *epis = <Epi *>malloc(N * sizeof(Epi)) if g is not None else NULL
    if coef == NULL or (g is not None and epis == NULL):
        free(coef)
        free(epis)
        raise MemoryError()
    if g is not None:  # each sample's pointers
        for n in range(N):
            epis[n] = _epi(&y[n, 0, 0, 0],
                           &residual[n, 0, 0, 0] if residual is not None else NULL, shift,
                           &g[n, 0, 0, 0], act, slope)
    # short groups: samples whole to threads at any thread count (the other path's sums of a
    # one-value run are not these bits)
    cdef bint short = ((real is float or real is double) and outer == 1
                       and (C // G) * inner < GATHER)
    with nogil:
        if short and nt > 1:
            for n in prange(N, schedule="static", num_threads=nt):
                _short_groups_backward(xp + n * S, gp + n * S, dp + n * S, C, inner, G,
                                       &mean[n, 0], &invstd[n, 0], w, &sum_dy[n, 0],
                                       &sum_dy_xmu[n, 0], coef + 5 * n * C,
                                       epis + n if epis != NULL else NULL)
        elif short:
            for n in range(N):
                _short_groups_backward(xp + n * S, gp + n * S, dp + n * S, C, inner, G,
                                       &mean[n, 0], &invstd[n, 0], w, &sum_dy[n, 0],
                                       &sum_dy_xmu[n, 0], coef + 5 * n * C,
                                       epis + n if epis != NULL else NULL)
        elif nt > 1:
            for n in prange(N, schedule="static", num_threads=nt):
                err |= _backward(xp + n * S, gp + n * S, dp + n * S, outer, C, inner, C // G,
                                 True, True, &mean[n, 0], &invstd[n, 0], w, &sum_dy[n, 0],
                                 &sum_dy_xmu[n, 0], coef + 5 * n * C, 1,
                                 epis + n if epis != NULL else NULL)
        else:
            for n in range(N):
                err |= _backward(xp + n * S, gp + n * S, dp + n * S, outer, C, inner, C // G,
                                 True, True, &mean[n, 0], &invstd[n, 0], w, &sum_dy[n, 0],
                                 &sum_dy_xmu[n, 0], coef + 5 * n * C, n_threads,
                                 epis + n if epis != NULL else NULL)
    free(coef)
    free(epis)
    if err:
        raise MemoryError()
