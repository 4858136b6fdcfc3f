# Apply: finalize statistics into per-channel coefficients of the compute type, and the output and
# gradient loops. The mean is subtracted as hi + lo, (x - hi) - lo, exact for x near the mean.
#   forward   y  = _epilogue(((x - hi) - lo) * a + b)            coef [hi, lo, a, b]
#   backward  dx = g * k1 + (((x - hi) - lo) * k2 + k3)            coef [hi, lo, k1, k2, k3]
# (g = dy, times a per-column weight in the row norms). Planar layouts store a channel's
# coefficients together; the rows layout stores each coefficient as a vector over channels.
# A "group" is Cg channels sharing statistics: a batch-norm channel is a group of one.


cdef inline floating _epilogue(floating v) noexcept nogil:
    """The one place an elementwise epilogue of the forward output plugs in (every forward
    loop stores through it); the identity for now."""
    return v


cdef void _act_run(floating *y, const floating *r, Py_ssize_t n, int act,
                   double slope) noexcept nogil:
    """The fused block's epilogue, in place on a run just written (still in cache):
    y = act(y + r), each step rounded as torch's separate ops round (r NULL: no residual). The
    activation is a switch outside the loops. silu is computed in the compute type by
    cnorm_exp.h's exp, whose loops vectorize (float: 16 lanes to a 512-bit vector, each result
    within a few ulp of float); gelu (erf) in double."""
    cdef Py_ssize_t t
    cdef floating s = <floating>slope
    cdef double v
    if r != NULL:
        for t in range(n):
            y[t] = y[t] + r[t]
    if act == ACT_RELU:  # y < 0 is False for NaN: NaN propagates, as in torch
        for t in range(n):
            y[t] = 0 if y[t] < 0 else y[t]
    elif act == ACT_LEAKY:
        for t in range(n):
            y[t] = y[t] * s if y[t] < 0 else y[t]
    elif act == ACT_SILU and floating is float:
        for t in range(n):
            y[t] = y[t] / (<float>1.0 + cn_expf(-y[t]))
    elif act == ACT_SILU:
        for t in range(n):
            y[t] = y[t] / (1.0 + cn_exp(-y[t]))
    elif act == ACT_GELU:
        for t in range(n):
            v = y[t]
            y[t] = <floating>(0.5 * v * (1.0 + erf(v * M_SQRT1_2)))


cdef inline void _split(double mean, floating *hi, floating *lo) noexcept nogil:
    """hi + lo = mean in the data type, so (x - hi) - lo loses nothing for x near the mean."""
    hi[0] = <floating>mean
    lo[0] = <floating>(mean - <double>hi[0])


cdef inline void _set_coef(floating *coef, Py_ssize_t C, Py_ssize_t c, bint rows, int width,
                           double mean, double a, double b, double e) noexcept nogil:
    """Channel c's coefficients: interleaved (planar) or vectors over channels (rows)."""
    cdef Py_ssize_t s = C if rows else 1
    cdef floating *q = coef + (c if rows else width * c)
    _split(mean, q, q + s)
    q[2 * s] = <floating>a
    q[3 * s] = <floating>b
    if width == 5:
        q[4 * s] = <floating>e


cdef inline void _fwd_coefs(floating *coef, Py_ssize_t C, Py_ssize_t Cg, Py_ssize_t g,
                            bint rows, double var, double eps, const double *mean,
                            double *invstd, const floating *w, const floating *b) noexcept nogil:
    """Finalize group g (invstd from its variance) and store its channels' forward
    coefficients: y = (x - mean) * (invstd * w) + b."""
    cdef Py_ssize_t c
    invstd[g] = 1.0 / sqrt(var + eps)
    for c in range(g * Cg, (g + 1) * Cg):
        _set_coef(coef, C, c, rows, 4, mean[g], invstd[g] * (<double>w[c] if w else 1.0),
                  <double>b[c] if b else 0.0, 0.0)


cdef inline void _bwd_coefs(floating *coef, Py_ssize_t C, Py_ssize_t Cg, Py_ssize_t g,
                            bint rows, bint training, double M, const double *mean,
                            const double *invstd, const floating *w, const double *s1,
                            const double *s2) noexcept nogil:
    """Group g's channels' backward coefficients from their sums s1 = sum(dy),
    s2 = sum(dy * (x - mean)): k1 = w * invstd and, through batch statistics of M values,
    k2 = -invstd^3 * sum_c(w * s2) / M, k3 = -invstd * sum_c(w * s1) / M."""
    cdef Py_ssize_t c
    cdef double A = 0.0, B = 0.0, inv = invstd[g], wc
    if training:
        for c in range(g * Cg, (g + 1) * Cg):
            wc = <double>w[c] if w else 1.0
            A = A + wc * s1[c]
            B = B + wc * s2[c]
    for c in range(g * Cg, (g + 1) * Cg):
        _set_coef(coef, C, c, rows, 5, mean[g], (<double>w[c] if w else 1.0) * inv,
                  -inv * inv * inv * B / M, -inv * A / M)


cdef inline void _norm_run(const real *x, real *y, Py_ssize_t n, const floating *q,
                           const floating *wc, const floating *bc, const real *r, int act,
                           double slope) noexcept nogil:
    """Forward of n values with coefficients q = [hi, lo, a, b]; wc, bc: per-value weight and
    bias (row norms) or NULL; then the fused block's epilogue (r, act) while in cache. Half
    data: through float tiles, rounded once at the store."""
    cdef Py_ssize_t t, k, o, m
    cdef floating hi = q[0], lo = q[1], a = q[2], b = q[3]
    cdef floating xt[HALF_TILE]
    cdef floating rt[HALF_TILE]
    if real is f16_t or real is bf16_t:
        for k in range((n + HALF_TILE - 1) // HALF_TILE):
            o = k * HALF_TILE
            m = min(<Py_ssize_t>HALF_TILE, n - o)
            _tile_in(x + o, xt, m)
            if r != NULL:
                _tile_in(r + o, rt, m)
            _norm_run(xt, xt, m, q, wc + o if wc != NULL else NULL,
                      bc + o if bc != NULL else NULL, &rt[0] if r != NULL else <floating *>NULL,
                      act, slope)
            _tile_out(xt, y + o, m)
        return
    if wc != NULL and bc != NULL:
        for t in range(n):
            y[t] = _epilogue((((x[t] - hi) - lo) * a) * wc[t] + bc[t])
    elif wc != NULL:
        for t in range(n):
            y[t] = _epilogue((((x[t] - hi) - lo) * a) * wc[t] + b)
    elif bc != NULL:
        for t in range(n):
            y[t] = _epilogue(((x[t] - hi) - lo) * a + bc[t])
    else:
        for t in range(n):
            y[t] = _epilogue(((x[t] - hi) - lo) * a + b)
    if r != NULL or act != ACT_NONE:
        _act_run(y, r, n, act, slope)


cdef extern from "cnorm_stream.h" nogil:
    bint CN_STREAMS
    void cn_grad_run_stream(const float *x, const float *dy, float *dx, Py_ssize_t n, float hi,
                            float lo, float k1, float k2, float k3, const float *wc)
    void cn_norm_run_vec(const float *x, float *y, Py_ssize_t n, float hi, float lo, float a,
                         float b, const float *wc, const float *bc, bint stream)
    int cn_rows_plan(Py_ssize_t C, bint grad, bint streamable)
    void cn_rows_apply(const float *x, const float *dy, float *y, Py_ssize_t rows,
                       Py_ssize_t C, const float *coef, bint stream)
    void cn_stream_fence()


cdef inline bint _streams(const real *x, Py_ssize_t n) noexcept nogil:
    """Whether an output over n values of x may be stored streaming (a training backward's
    dx; the long-row forward's y, under its own size rule): float data of STREAM_MIN bytes
    and more (the output leaves the cache anyway), on a target that streams."""
    return real is float and CN_STREAMS and n * <Py_ssize_t>sizeof(real) >= STREAM_MIN


# Planar forward outputs of this many bytes and more are stored streaming (set_stream_out:
# backend.py sets three quarters of the last-level cache). Below it the report's loop keeps x
# and y in L3, where ordinary stores are faster (BatchNorm2d eval (8, 32, 128, 128), 17 MB,
# at two threads: 0.47 -> 0.66 ms streaming); above it y goes to memory anyway and streaming
# skips the read of its lines ((32, 64, 56, 56), 26 MB, training forward 2.90 -> 2.08 ms at
# one thread, 1.89 -> 1.50 at two; eval 2.21 -> 1.49 and 1.30 -> 1.06; AMD EPYC, L3 32 MB).
cdef Py_ssize_t _stream_out = 24 << 20


def set_stream_out(Py_ssize_t nbytes):
    """Planar forward outputs of ``nbytes`` and more are written by streaming stores."""
    global _stream_out
    _stream_out = nbytes


def get_stream_out():
    """The size from which planar forward outputs are written by streaming stores."""
    return _stream_out


cdef inline bint _norm_run_stream(const real *x, real *y, Py_ssize_t n,
                                  const floating *q) noexcept nogil:
    """_norm_run without weights or epilogue by streaming stores (cn_norm_run_vec; the caller
    fences); False, nothing done, for other than float data."""
    if real is float and floating is float:
        cn_norm_run_vec(x, y, n, q[0], q[1], q[2], q[3], NULL, NULL, True)
        return True
    return False


cdef inline void _grad_run(const real *x, const real *dy, real *dx, Py_ssize_t n,
                           const floating *q, const floating *wc, floating a, floating *pw,
                           floating *pb, bint stream) noexcept nogil:
    """Backward of n values with q = [hi, lo, k1, k2, k3]; x NULL: dx = g * k1 (fixed
    statistics). wc: per-value weight or NULL. pw, pb (or NULL): per-value sums of dy * x_hat
    (x_hat = (x - mean) * a) and dy, for the row norms' parameter gradients. ``stream``: float
    dx by streaming stores (cnorm_stream.h; the caller fences). Half data: float tiles."""
    cdef Py_ssize_t t, k, o, m
    cdef floating hi = q[0], lo = q[1], k1 = q[2], k2 = q[3], k3 = q[4]
    cdef floating xt[HALF_TILE]
    cdef floating gt[HALF_TILE]
    cdef floating ot[HALF_TILE]
    if real is f16_t or real is bf16_t:
        for k in range((n + HALF_TILE - 1) // HALF_TILE):
            o = k * HALF_TILE
            m = min(<Py_ssize_t>HALF_TILE, n - o)
            if x != NULL:
                _tile_in(x + o, xt, m)
            _tile_in(dy + o, gt, m)
            _grad_run(&xt[0] if x != NULL else <floating *>NULL, gt, ot, m, q,
                      wc + o if wc != NULL else NULL, a, pw + o if pw != NULL else NULL,
                      pb + o if pb != NULL else NULL, False)
            _tile_out(ot, dx + o, m)
        return
    if x == NULL:
        for t in range(n):
            dx[t] = dy[t] * k1
    elif real is float and floating is float and stream:
        cn_grad_run_stream(<const float *>x, <const float *>dy, <float *>dx, n, hi, lo, k1, k2,
                           k3, <const float *>wc)
    elif wc != NULL:
        for t in range(n):
            dx[t] = (dy[t] * wc[t]) * k1 + (((x[t] - hi) - lo) * k2 + k3)
    else:
        for t in range(n):
            dx[t] = dy[t] * k1 + (((x[t] - hi) - lo) * k2 + k3)
    if pw != NULL:
        for t in range(n):
            pw[t] += dy[t] * (((x[t] - hi) - lo) * a)
            pb[t] += dy[t]


cdef void _apply_cols(const real *x, const real *dy, real *out, Py_ssize_t n,
                      const floating *coef, Py_ssize_t stride, const real *r, int act,
                      double slope) noexcept nogil:
    """n channels of one row of the rows layout: coefficient vectors [hi | lo | a | b (| e)],
    ``stride`` apart. Forward: then the fused block's epilogue. Half data: float tiles."""
    cdef Py_ssize_t c, k, o, m
    cdef const floating *hi = coef
    cdef const floating *lo = coef + stride
    cdef const floating *a = coef + 2 * stride
    cdef const floating *b = coef + 3 * stride
    cdef const floating *e = coef + 4 * stride
    cdef floating xt[HALF_TILE]
    cdef floating gt[HALF_TILE]
    cdef floating rt[HALF_TILE]
    cdef floating *t
    if real is f16_t or real is bf16_t:
        for k in range((n + HALF_TILE - 1) // HALF_TILE):
            o = k * HALF_TILE
            m = min(<Py_ssize_t>HALF_TILE, n - o)
            if x != NULL:
                _tile_in(x + o, xt, m)
            if dy != NULL:
                _tile_in(dy + o, gt, m)
            if r != NULL:
                _tile_in(r + o, rt, m)
            t = &xt[0] if dy == NULL else &gt[0]  # the output, in place
            _apply_cols(&xt[0] if x != NULL else <floating *>NULL,
                        &gt[0] if dy != NULL else <floating *>NULL, t, m, coef + o, stride,
                        &rt[0] if r != NULL else <floating *>NULL, act, slope)
            _tile_out(t, out + o, m)
        return
    if dy == NULL:
        for c in range(n):
            out[c] = _epilogue(((x[c] - hi[c]) - lo[c]) * a[c] + b[c])
        if r != NULL or act != ACT_NONE:
            _act_run(out, r, n, act, slope)
    elif x == NULL:
        for c in range(n):
            out[c] = dy[c] * a[c]
    else:
        for c in range(n):
            out[c] = dy[c] * a[c] + (((x[c] - hi[c]) - lo[c]) * b[c] + e[c])


cdef inline void _apply_group(const real *x, const real *dy, real *out, Py_ssize_t outer,
                              Py_ssize_t C, Py_ssize_t k, Py_ssize_t u, const floating *coef,
                              const real *res, int act, double slope) noexcept nogil:
    """Rows [u k, u k + k) of _apply_rows (coef repeated k times when k > 1)."""
    cdef Py_ssize_t o = u * k
    cdef Py_ssize_t m = min(k, outer - o)
    _apply_cols(x + o * C if x != NULL else NULL, dy + o * C if dy != NULL else NULL,
                out + o * C, m * C, coef, k * C, res + o * C if res != NULL else NULL, act,
                slope)


cdef bint _rows_apply(const float *x, const float *dy, float *y, Py_ssize_t outer,
                      Py_ssize_t C, const float *coef, int nt) noexcept nogil:
    """_apply_rows' forward without epilogue (dy NULL) or training backward, for the C that
    cnorm_stream.h's cn_rows_plan takes: the same operations with the coefficients in
    registers (cn_rows_apply), dx streaming where it plans so (then fenced). False (nothing
    done) for other C or targets."""
    cdef Py_ssize_t t, r0
    cdef Py_ssize_t plan = cn_rows_plan(C, dy != NULL, _streams(x, outer * C)
                                        and (<size_t>y) % 64 == 0
                                        and (C * sizeof(float)) % 64 == 0)
    cdef bint stream = plan == 2
    if plan == 0:
        return False
    nt = _threads(outer * C, outer, nt)
    if nt > 1:
        for t in prange(nt, schedule="static", num_threads=nt):
            r0 = t * outer // nt
            cn_rows_apply(x + r0 * C, dy + r0 * C if dy != NULL else NULL, y + r0 * C,
                          (t + 1) * outer // nt - r0, C, coef, stream)
            cn_stream_fence()
    else:  # no OpenMP region: on one thread its setup costs more than a small call's work
        cn_rows_apply(x, dy, y, outer, C, coef, stream)
        cn_stream_fence()
    return True


cdef void _apply_rows(const real *x, const real *dy, real *out, Py_ssize_t outer,
                      Py_ssize_t C, const floating *coef, int w, int nt, const real *res,
                      int act, double slope) noexcept nogil:
    """The rows layout of _apply: k rows per call, k * C >= ROW_TILE values, against the
    coefficient vectors repeated k times (the same operations on every value: the same bits).
    One row of a few channels is too short a loop to pay its entry (GroupNorm channels-last,
    C = 64: a quarter of the time)."""
    cdef Py_ssize_t k = max(1, ROW_TILE // C) if C > 0 else 1, t, v, u
    cdef Py_ssize_t ng = (outer + k - 1) // k
    if (real is float and floating is float and x != NULL and res == NULL
            and act == ACT_NONE and _rows_apply(<const float *>x, <const float *>dy,
                                                <float *>out, outer, C, <const float *>coef,
                                                nt)):
        return
    cdef floating *rep = <floating *>malloc(w * k * C * sizeof(floating)) if k > 1 else NULL
    if rep == NULL:  # one row per call
        k = 1
        ng = outer
    else:
        for v in range(w):
            for t in range(k):
                memcpy(rep + (v * k + t) * C, coef + v * C, C * sizeof(floating))
    nt = _threads(outer * C, ng, nt)
    if nt > 1:
        for u in prange(ng, schedule="static", num_threads=nt):
            _apply_group(x, dy, out, outer, C, k, u, rep if rep != NULL else coef, res, act,
                         slope)
    else:  # no OpenMP region: on one thread its setup costs more than a small call's work
        for u in range(ng):
            _apply_group(x, dy, out, outer, C, k, u, rep if rep != NULL else coef, res, act,
                         slope)
    free(rep)


cdef void _apply(const real *x, const real *dy, real *out, Py_ssize_t outer,
                 Py_ssize_t C, Py_ssize_t inner, const floating *coef, Py_ssize_t c0,
                 Py_ssize_t c1, int nt, const real *res, int act, double slope,
                 Py_ssize_t whole=0) noexcept nogil:
    """Forward (dy NULL) or backward (x NULL: fixed statistics) of an (outer, C, inner) array.
    Planar: channels [c0, c1) serially when that is not all of them, else all rows in
    parallel; rows layout (inner == 1): all channels, rows in parallel. Forward only: ``res``
    (laid out as x, or NULL) and ``act`` make the output act(norm(x) + res), each run finished
    while in cache. A float training backward of a planar array (outer, C, inner) of
    STREAM_MIN bytes and more, in runs of STREAM_RUN values and more, stores dx streaming; a
    forward's y streams from _stream_out bytes of the array, or of ``whole``, the bytes of
    the call's whole output (a group norm's sample is one part of it)."""
    cdef Py_ssize_t r, c, o, off, t
    cdef Py_ssize_t nbytes = max(whole, outer * C * inner * <Py_ssize_t>sizeof(real))
    cdef int w = 4 if dy == NULL else 5
    cdef bint big = inner >= STREAM_RUN and _streams(x, outer * C * inner)
    cdef bint stream = big and dy != NULL and x != NULL
    cdef bint ystream = (big and dy == NULL and res == NULL and act == ACT_NONE
                         and nbytes >= _stream_out)
    if inner > 1 and c1 - c0 < C:  # one thread's channels (a fused group)
        for o in range(outer):
            for c in range(c0, c1):
                off = (o * C + c) * inner
                if dy != NULL:
                    _grad_run(x + off if x != NULL else NULL, dy + off, out + off, inner,
                              coef + w * c, NULL, 0.0, NULL, NULL, stream)
                elif not (ystream and _norm_run_stream(x + off, out + off, inner, coef + w * c)):
                    _norm_run(x + off, out + off, inner, coef + w * c, NULL, NULL,
                              res + off if res != NULL else NULL, act, slope)
        if stream or ystream:
            cn_stream_fence()
    elif inner > 1:  # each thread a block of runs (its streaming stores fenced at its end)
        nt = _threads(outer * C * inner, outer * C, nt)
        for t in prange(nt, schedule="static", num_threads=nt):
            for r in range(t * outer * C // nt, (t + 1) * outer * C // nt):
                off = r * inner
                if dy != NULL:
                    _grad_run(x + off if x != NULL else NULL, dy + off, out + off, inner,
                              coef + w * (r % C), NULL, 0.0, NULL, NULL, stream)
                elif not (ystream and _norm_run_stream(x + off, out + off, inner,
                                                       coef + w * (r % C))):
                    _norm_run(x + off, out + off, inner, coef + w * (r % C), NULL, NULL,
                              res + off if res != NULL else NULL, act, slope)
            if stream or ystream:
                cn_stream_fence()
    else:
        _apply_rows(x, dy, out, outer, C, coef, w, nt, res, act, slope)


# ---------------------------------------------------------------------------------------------
# The passes of a batch-norm problem (outer, C, inner) with statistics per group of Cg channels:
# batch norm (Cg = 1) and one sample of group/instance norm. Planar groups of at least GATHER
# values go group by group, each normalized while in cache ("fused"); otherwise the statistics
# step over the whole array, then the apply step. Both give the same bits.
# ---------------------------------------------------------------------------------------------

cdef inline bint _fused(Py_ssize_t outer, Py_ssize_t inner, Py_ssize_t run, Py_ssize_t G,
                        int nt) noexcept nogil:
    """Group by group, each normalized while in cache, when a group is contiguous (outer ==
    1: one sample of group/instance norm) or its runs are long, and the groups share out
    evenly over the threads. Otherwise the two whole-array passes, which read in memory order
    (_band_sums): a batch-norm channel of short runs, read alone, starts the hardware
    prefetchers cold at every run, and its output goes out as ``outer`` short streams (AMD
    EPYC, (32, 64, 56, 56) forward: 2.6 against 3.3 ms on one thread, 1.6 against 2.0 ms on
    two)."""
    return (run >= GATHER and (nt == 1 or G % nt == 0 or G >= 8 * nt)
            and (outer == 1 or inner >= LONG_RUN))


cdef void _fused_forward(const real *x, real *y, Py_ssize_t outer, Py_ssize_t C,
                         Py_ssize_t inner, Py_ssize_t Cg, Py_ssize_t g, double eps,
                         const floating *w, const floating *b, double *mean, double *m2,
                         double *invstd, floating *coef, const real *res, int act,
                         double slope, Py_ssize_t whole) noexcept nogil:
    _plane_stats(x, outer, C // Cg, Cg * inner, g, &mean[g], &m2[g], coef)
    _fwd_coefs(coef, C, Cg, g, False, m2[g] / <double>(outer * Cg * inner), eps, mean, invstd,
               w, b)
    _apply(x, <const real *>NULL, y, outer, C, inner, coef, g * Cg, (g + 1) * Cg, 1, res, act,
           slope, whole)


cdef int _forward(const real *x, real *y, Py_ssize_t outer, Py_ssize_t C,
                  Py_ssize_t inner, Py_ssize_t Cg, double eps, const floating *w,
                  const floating *b, double *mean, double *m2, double *invstd, floating *coef,
                  int nt, const real *res, int act, double slope,
                  Py_ssize_t whole=0) noexcept nogil:
    """Training forward: per-group mean, M2, invstd and the output act(norm(x) + res) (res
    NULL, act ACT_NONE: the norm alone), on up to nt threads. Channels-last groups of several
    channels: each channel's statistics (rows layout), merged over the group in order.
    ``whole``: the bytes of the call's output when x is one sample of it (see _apply).
    Returns -1 when out of memory."""
    cdef Py_ssize_t G = C // Cg, g, c
    cdef double n
    cdef double *cs
    nt = _threads(outer * C * inner, _nchunks(outer, G, Cg * inner) * G, nt)
    if inner > 1 and _fused(outer, inner, Cg * inner, G, nt):
        for g in prange(G, schedule="static", num_threads=nt):
            _fused_forward(x, y, outer, C, inner, Cg, g, eps, w, b, mean, m2, invstd, coef, res,
                           act, slope, whole)
        return 0
    if inner == 1 and Cg > 1:
        cs = <double *>malloc(2 * C * sizeof(double))
        if cs == NULL or _stats(x, outer, C, 1, cs, cs + C, nt, coef):
            free(cs)
            return -1
        for g in range(G):
            n = 0.0
            mean[g] = 0.0
            m2[g] = 0.0
            for c in range(g * Cg, (g + 1) * Cg):
                _merge_into(&n, &mean[g], &m2[g], <double>outer, cs[c], cs[C + c])
        free(cs)
    elif _stats(x, outer, G, Cg * inner, mean, m2, nt, coef):
        return -1
    for g in range(G):
        _fwd_coefs(coef, C, Cg, g, inner == 1, m2[g] / <double>(outer * Cg * inner), eps, mean,
                   invstd, w, b)
    _apply(x, <const real *>NULL, y, outer, C, inner, coef, 0, C, nt, res, act, slope, whole)
    return 0


cdef void _fused_backward(const real *x, const real *dy, real *dx,
                          Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, Py_ssize_t Cg,
                          Py_ssize_t g, bint training, bint need_sums, const double *mean,
                          const double *invstd, const floating *w, double *s1, double *s2,
                          floating *coef, const Epi *epi) noexcept nogil:
    cdef Py_ssize_t c
    if epi != NULL:  # a fused block: this group's g first, read from cache below
        _act_grad_rows(x, dy, 0, outer, C, inner, Cg, g * Cg, (g + 1) * Cg, mean, invstd, w,
                       epi)
        dy = <const real *>epi.g
    if need_sums:
        for c in range(g * Cg, (g + 1) * Cg):
            _plane_dot(x, dy, <const floating *>NULL, outer, C, inner, c, mean[g], &s1[c],
                       &s2[c])
    _bwd_coefs(coef, C, Cg, g, False, training, <double>(outer * Cg * inner), mean, invstd, w,
               s1, s2)
    _apply(x if training else NULL, dy, dx, outer, C, inner, coef, g * Cg, (g + 1) * Cg, 1,
           NULL, ACT_NONE, 0.0)


cdef int _backward(const real *x, const real *dy, real *dx, Py_ssize_t outer,
                   Py_ssize_t C, Py_ssize_t inner, Py_ssize_t Cg, bint training,
                   bint need_sums, const double *mean, const double *invstd, const floating *w,
                   double *s1, double *s2, floating *coef, int nt,
                   const Epi *epi) noexcept nogil:
    """Backward: per-channel s1 = sum(dy), s2 = sum(dy * (x - mean)) (when ``need_sums`` or
    ``training``), then dx, on up to nt threads. ``training``: the statistics were the
    batch's (differentiate through them). ``epi`` (or NULL): a fused block's activation and
    residual; dy is then the block's output gradient and g = dy * act'(pre) goes to epi.g,
    group by group while in cache on the fused path. Returns -1 when out of memory."""
    cdef Py_ssize_t G = C // Cg, g, c, t
    cdef double *mc = NULL
    need_sums = need_sums or training
    nt = _threads(outer * C * inner, _nchunks(outer, C, inner) * C, nt)
    if inner > 1 and _fused(outer, inner, inner, G, nt):
        for t in prange(nt, schedule="static", num_threads=nt):  # a block of groups a thread
            for g in range(t * G // nt, (t + 1) * G // nt):
                _fused_backward(x, dy, dx, outer, C, inner, Cg, g, training, need_sums, mean,
                                invstd, w, s1, s2, coef, epi)
            cn_stream_fence()  # its streaming stores (_apply), if any, before others read dx
        return 0
    if epi != NULL:  # the whole g first
        _act_grad(x, dy, outer, C, inner, Cg, mean, invstd, w, epi,
                  _threads(outer * C * inner, outer, nt))
        dy = <const real *>epi.g
    if need_sums:
        if Cg > 1:
            mc = <double *>malloc(C * sizeof(double))
            if mc == NULL:
                return -1
            for c in range(C):
                mc[c] = mean[c // Cg]
        if _sums(x, dy, outer, C, inner, mc if Cg > 1 else mean, s1, s2, nt, coef):
            free(mc)
            return -1
        free(mc)
    for g in range(G):
        _bwd_coefs(coef, C, Cg, g, inner == 1, training, <double>(outer * Cg * inner), mean,
                   invstd, w, s1, s2)
    _apply(x if training else NULL, dy, dx, outer, C, inner, coef, 0, C, nt, NULL, ACT_NONE,
           0.0)
    return 0
