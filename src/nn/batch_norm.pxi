# Batch norm: statistics per channel of an (outer, C, inner) array (a group of one channel in
# the passes of _apply.pxi), and the eval forward with running statistics. The entry points
# take data of a storage type (``real``) and parameters of its compute type (``floating``);
# cnorm/_core/backend.py calls the matching specialization.


def bn_forward_train(const real[:, :, ::1] x, const floating[::1] weight,
                     const floating[::1] bias, double eps, real[:, :, ::1] out,
                     double[::1] mean, double[::1] m2, double[::1] invstd,
                     const real[:, :, ::1] residual, int act, double slope,
                     int n_threads):
    """Training forward: batch statistics, then ``out = (x - mean) * invstd * weight + bias``,
    or with ``residual`` (None or laid out as x) and ``act`` (ACT_*, ``slope`` for leaky
    relu) the fused block ``act(that + residual)``.

    ``weight`` / ``bias`` may be None. Writes the per-channel ``mean``, ``m2`` (sum of squared
    deviations) and ``invstd = 1/sqrt(m2/count + eps)``; NaN for an empty batch. Returns the
    least positive invstd (see _least_positive).
    """
    if (real is double and floating is float) or (real is not double and floating is double):
        raise TypeError(WRONG_PAIR)  # decided when compiling: nothing below is built for it
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    cdef int err = 0
    if x.size == 0:
        mean[:] = NAN
        m2[:] = NAN
        invstd[:] = NAN
        return INFINITY
    cdef floating *coef = <floating *>malloc(4 * C * sizeof(floating))
    if coef == NULL:
        raise MemoryError()
    with nogil:
        err = _forward(&x[0, 0, 0], &out[0, 0, 0], outer, C, inner, 1, eps,
                       &weight[0] if weight is not None else NULL,
                       &bias[0] if bias is not None else NULL, &mean[0], &m2[0], &invstd[0],
                       coef, n_threads, &residual[0, 0, 0] if residual is not None else NULL,
                       act, slope)
    free(coef)
    if err:
        raise MemoryError()
    return _least_positive(&invstd[0], C)


cdef void _forward_eval(const real *x, real *y, Py_ssize_t outer, Py_ssize_t C,
                        Py_ssize_t inner, const floating *running_mean,
                        const floating *running_var, double eps, const floating *w,
                        const floating *b, double *mean, double *invstd, floating *coef,
                        int n_threads, const real *residual, int act,
                        double slope) noexcept nogil:
    """bn_forward_eval's work, for it and bn_forward_call: ``mean`` and ``invstd`` from the
    running statistics, then one pass over x (none when it is empty)."""
    cdef Py_ssize_t c
    for c in range(C):
        mean[c] = running_mean[c]
        _fwd_coefs(coef, C, 1, c, inner == 1, running_var[c], eps, mean, invstd, w, b)
    if outer * inner > 0:
        _apply(x, <const real *>NULL, y, outer, C, inner, coef, 0, C, n_threads, residual, act,
               slope)


def bn_forward_eval(const real[:, :, ::1] x, const floating[::1] running_mean,
                    const floating[::1] running_var, const floating[::1] weight,
                    const floating[::1] bias, double eps, real[:, :, ::1] out,
                    double[::1] mean, double[::1] invstd, const real[:, :, ::1] residual,
                    int act, double slope, int n_threads):
    """Eval forward with the running statistics, one pass over x (with ``residual`` and
    ``act`` as in bn_forward_train). Writes ``mean`` (the running mean in float64) and
    ``invstd = 1/sqrt(running_var + eps)`` for the backward."""
    if (real is double and floating is float) or (real is not double and floating is double):
        raise TypeError(WRONG_PAIR)  # decided when compiling: nothing below is built for it
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    if C == 0:
        return
    cdef bint empty = x.size == 0
    cdef floating *coef = <floating *>malloc(4 * C * sizeof(floating))
    if coef == NULL:
        raise MemoryError()
    with nogil:
        _forward_eval(NULL if empty else &x[0, 0, 0], NULL if empty else &out[0, 0, 0],
                      outer, C, inner, &running_mean[0], &running_var[0], eps,
                      &weight[0] if weight is not None else NULL,
                      &bias[0] if bias is not None else NULL, &mean[0], &invstd[0], coef,
                      n_threads, &residual[0, 0, 0] if residual is not None else NULL, act,
                      slope)
    free(coef)


def bn_backward(const real[:, :, ::1] x, const real[:, :, ::1] dy,
                const double[::1] mean, const double[::1] invstd, const floating[::1] weight,
                bint training, bint need_sums, real[:, :, ::1] dx, double[::1] sum_dy,
                double[::1] sum_dy_xmu, const real[:, :, ::1] y,
                const real[:, :, ::1] residual, const double[::1] shift, int act,
                double slope, real[:, :, ::1] g, int n_threads):
    """Backward of batch norm: ``dx`` and the per-channel ``sum_dy``, ``sum_dy_xmu =
    sum(dy * (x - mean))`` for the parameter gradients.

    ``training``: the forward used batch statistics (differentiate through them); otherwise
    they were constants. ``need_sums`` False skips the sums (fixed statistics, no parameters).
    A fused block (``g`` not None): ``dy`` is the block's output gradient; ``g = dy *
    act'(pre)`` (``y``: the forward's output; ``residual``, ``shift`` = bias, or None) is
    written to ``g`` and the sums and dx are those of g.
    """
    if (real is double and floating is float) or (real is not double and floating is double):
        raise TypeError(WRONG_PAIR)  # decided when compiling: nothing below is built for it
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    cdef int err = 0
    sum_dy[:] = 0.0
    sum_dy_xmu[:] = 0.0
    if x.size == 0:
        return
    cdef floating *coef = <floating *>malloc(5 * C * sizeof(floating))
    cdef Epi e
    if g is not None:
        e = _epi(&y[0, 0, 0], &residual[0, 0, 0] if residual is not None else NULL, shift,
                 &g[0, 0, 0], act, slope)
    if coef == NULL:
        raise MemoryError()
    with nogil:
        err = _backward(&x[0, 0, 0], &dy[0, 0, 0], &dx[0, 0, 0], outer, C, inner, 1, training,
                        need_sums, &mean[0], &invstd[0],
                        &weight[0] if weight is not None else NULL, &sum_dy[0],
                        &sum_dy_xmu[0], coef, n_threads, &e if g is not None else NULL)
    free(coef)
    if err:
        raise MemoryError()


def channel_stats(const real[:, :, ::1] x, int n_threads):
    """Per-channel ``(count, mean, m2)`` of an ``(outer, C, inner)`` array (partials merged in
    order). A channel with no values gets mean and m2 NaN."""
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2]
    mean = np.full(C, np.nan)
    m2 = np.full(C, np.nan)
    cdef double[::1] mv = mean, m2v = m2
    cdef int err = 0
    if x.size > 0:
        with nogil:
            if real is double:
                err = _stats(&x[0, 0, 0], outer, C, inner, &mv[0], &m2v[0], n_threads,
                             <double *>NULL)
            else:
                err = _stats(&x[0, 0, 0], outer, C, inner, &mv[0], &m2v[0], n_threads,
                             <float *>NULL)
        if err:
            raise MemoryError()
    return float(outer * inner), mean, m2


cdef void _move_running(floating *rm, Py_ssize_t sm, floating *rv, Py_ssize_t sv,
                        const double *mean, const double *m2, Py_ssize_t C, double divisor,
                        double factor) noexcept nogil:
    """``running = (1 - factor) * running + factor * batch`` in double, rounded once, over C
    values ``sm`` / ``sv`` apart: the running mean toward ``mean``, the running variance toward
    ``m2 / divisor`` (either may be NULL). update_running's and the small-call entry's."""
    cdef Py_ssize_t c
    if rm != NULL:
        for c in range(C):
            rm[c * sm] = <floating>((1.0 - factor) * <double>rm[c * sm] + factor * mean[c])
    if rv != NULL:
        for c in range(C):
            rv[c * sv] = <floating>((1.0 - factor) * <double>rv[c * sv]
                                    + factor * (m2[c] / divisor))


def update_running(floating[:] running_mean, floating[:] running_var, const double[::1] mean,
                   const double[::1] m2, double divisor, double factor,
                   long long[::1] counter=None):
    """In place, in double then rounded: ``running = (1 - factor) * running + factor * batch``
    with the batch variance ``m2 / divisor``. Either array may be None. ``counter`` (one
    int64, or None) is incremented in the same call: no Python code runs between the two, so
    a KeyboardInterrupt cannot leave the count and the statistics apart."""
    if counter is not None:
        counter[0] += 1
    if running_mean is not None:
        _move_running(&running_mean[0], running_mean.strides[0] // sizeof(floating),
                      <floating *>NULL, 0, &mean[0], &m2[0], running_mean.shape[0], divisor,
                      factor)
    if running_var is not None:
        _move_running(<floating *>NULL, 0, &running_var[0],
                      running_var.strides[0] // sizeof(floating), &mean[0], &m2[0],
                      running_var.shape[0], divisor, factor)
