# The fused blocks' activation gradient: g = dy * act'(pre) with pre = norm(x) + residual, the
# step between the block's output gradient and the norm's backward (which then takes g as its
# dy). relu takes its mask from the forward's output (y > 0, as torch's relu backward); the
# others recompute pre in double from x, the per-channel coefficients and the residual.


cdef inline double _act_slope(double p, int act, double slope) noexcept nogil:
    """act'(p): leaky relu, silu, gelu (erf)."""
    cdef double s, cdf
    if act == ACT_LEAKY:
        return slope if p < 0 else 1.0
    if act == ACT_SILU:
        s = 1.0 / (1.0 + exp(-p))
        return s * (1.0 + p * (1.0 - s))
    cdf = 0.5 * (1.0 + erf(p * M_SQRT1_2))
    return cdf + p * 0.3989422804014327 * exp(-0.5 * p * p)  # Phi(p) + p * phi(p)


def act_grad(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] y,
             const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] residual,
             const double[:, ::1] mean, const double[:, ::1] scale, const double[:, ::1] shift,
             int act, double slope, floating[:, :, :, ::1] g, int n_threads):
    """``g = dy * act'(pre)`` over an (N, outer, C, inner) view. relu: ``y`` (the forward's
    output) gives the mask; otherwise ``pre = (x - mean) * scale + shift (+ residual)`` with
    (N, C) coefficients. ``residual`` may be None. In parallel over (sample, outer) rows."""
    cdef Py_ssize_t N = dy.shape[0], O = dy.shape[1], C = dy.shape[2], I = dy.shape[3]
    cdef Py_ssize_t u, n, o, c, i, off
    cdef double p
    cdef int nt = _threads(N * O * C * I, N * O, n_threads)
    if dy.size == 0:
        return
    cdef const floating *dp = &dy[0, 0, 0, 0]
    cdef floating *gp = &g[0, 0, 0, 0]
    cdef const floating *yp = &y[0, 0, 0, 0] if y is not None else NULL
    cdef const floating *xp = &x[0, 0, 0, 0] if x is not None else NULL
    cdef const floating *rp = &residual[0, 0, 0, 0] if residual is not None else NULL
    with nogil:
        for u in prange(N * O, schedule="static", num_threads=nt):
            n = u // O
            for c in range(C):
                off = (u * C + c) * I
                if act == ACT_RELU:
                    for i in range(I):
                        gp[off + i] = dp[off + i] if yp[off + i] > 0 else 0
                elif act == ACT_NONE:
                    for i in range(I):
                        gp[off + i] = dp[off + i]
                else:
                    for i in range(I):
                        p = (<double>xp[off + i] - mean[n, c]) * scale[n, c] + shift[n, c]
                        if rp != NULL:
                            p = p + <double>rp[off + i]
                        gp[off + i] = <floating>(<double>dp[off + i] * _act_slope(p, act, slope))
