# The fused blocks' activation gradient: g = dy * act'(pre), pre = norm(x) + residual, made
# inside the norm's backward (see _backward in _apply.pxi): a group's slab at a time, so that
# the norm's sums and dx read g from cache. relu takes its mask from the forward's output
# (y > 0, as torch's relu backward); the others recompute pre in double from x, the
# per-channel coefficients and the residual.


cdef struct Epi:
    # A fused block's backward epilogue; the pointers are of the data type, laid out as x.
    const void *y        # the forward's output (relu's mask)
    const void *r        # the residual, or NULL
    const double *shift  # per-channel bias, or NULL
    void *g              # where g goes (the residual's gradient, or a scratch array)
    int act
    double slope


cdef inline double _silu_slope(double p) noexcept nogil:
    """silu'(p) = s (1 + p (1 - s)), s = 1 / (1 + e), e = exp(-p), in double and branch-free
    (its loop vectorizes); 1 - s as e s, which keeps its digits where s rounds near 1."""
    cdef double e = cn_exp(-p)
    cdef double s = 1.0 / (1.0 + e)
    return s * (1.0 + p * (e * s))


cdef inline float _silu_slopef(float p) noexcept nogil:
    """silu'(p) as _silu_slope, in float, for float and half data (16 lanes to a 512-bit
    vector)."""
    cdef float one = 1.0
    cdef float e = cn_expf(-p)
    cdef float s = one / (one + e)
    return s * (one + p * (e * s))


cdef inline double _act_slope(double p, int act, double slope) noexcept nogil:
    """act'(p): leaky relu, silu, gelu (erf)."""
    cdef double cdf
    if act == ACT_LEAKY:
        return slope if p < 0 else 1.0
    if act == ACT_SILU:
        return _silu_slope(p)
    cdf = 0.5 * (1.0 + erf(p * M_SQRT1_2))
    return cdf + p * 0.3989422804014327 * cn_exp(-0.5 * p * p)  # Phi(p) + p * phi(p)


cdef inline bint _positive(real v) noexcept nogil:
    """v > 0 (False for NaN); for half bits an integer test: sign clear, not zero, not NaN."""
    if real is f16_t:
        return 0 < v <= 0x7c00
    elif real is bf16_t:
        return 0 < v <= 0x7f80
    else:
        return v > 0


cdef void _act_grad_run(const real *dy, Py_ssize_t off, Py_ssize_t n, double mean,
                        double scale, double shift, const real *x,
                        const Epi *e) noexcept nogil:
    """g = dy * act'(pre) for the n values at ``off`` of one channel (planar run), stored in
    the data type."""
    cdef Py_ssize_t i
    cdef const real *y = <const real *>e.y + off
    cdef const real *r = <const real *>e.r + off if e.r != NULL else NULL
    cdef real *g = <real *>e.g + off
    cdef double p
    dy = dy + off
    x = x + off
    if e.act == ACT_RELU:
        for i in range(n):
            g[i] = dy[i] if _positive(y[i]) else 0  # 0: +0.0 in every storage type
    elif e.act == ACT_NONE:
        for i in range(n):
            g[i] = dy[i]
    elif e.act == ACT_SILU and r == NULL:  # the common block: loops that vectorize
        if real is double:
            for i in range(n):
                p = (x[i] - mean) * scale + shift
                g[i] = dy[i] * _silu_slope(p)
        else:  # float and half data: the slope in float
            for i in range(n):
                p = (_d(x[i]) - mean) * scale + shift
                _put_value(g + i, _d(dy[i]) * <double>_silu_slopef(<float>p))
    else:
        for i in range(n):
            p = (_d(x[i]) - mean) * scale + shift
            if r != NULL:
                p = p + _d(r[i])
            _put_value(g + i, _d(dy[i]) * _act_slope(p, e.act, e.slope))


cdef void _act_grad_rows(const real *x, const real *dy, Py_ssize_t o0, Py_ssize_t o1,
                         Py_ssize_t C, Py_ssize_t inner, Py_ssize_t Cg, Py_ssize_t c0,
                         Py_ssize_t c1, const double *mean, const double *invstd,
                         const floating *w, const Epi *e) noexcept nogil:
    """g of channels [c0, c1) over outer rows [o0, o1) of an (outer, C, inner) array, into
    e.g (the channels-last layout is inner == 1)."""
    cdef Py_ssize_t o, c, k
    for o in range(o0, o1):
        for c in range(c0, c1):
            k = c // Cg
            _act_grad_run(dy, (o * C + c) * inner, inner, mean[k],
                          invstd[k] * (<double>w[c] if w != NULL else 1.0),
                          e.shift[c] if e.shift != NULL else 0.0, x, e)


cdef void _act_grad(const real *x, const real *dy, Py_ssize_t outer, Py_ssize_t C,
                    Py_ssize_t inner, Py_ssize_t Cg, const double *mean, const double *invstd,
                    const floating *w, const Epi *e, int nt) noexcept nogil:
    """g of every channel, outer rows in parallel on up to nt threads."""
    cdef Py_ssize_t o
    for o in prange(outer, schedule="static", num_threads=nt):
        _act_grad_rows(x, dy, o, o + 1, C, inner, Cg, 0, C, mean, invstd, w, e)


cdef Epi _epi(const void *y, const void *r, const double[::1] shift, void *g, int act,
              double slope) noexcept:
    cdef Epi e
    e.y, e.r, e.g, e.act, e.slope = y, r, g, act, slope
    e.shift = &shift[0] if shift is not None else NULL
    return e
