# Per-channel affine maps between canonical Views (see _data_types.pxi), with the dtype
# conversion and the layout change fused in one pass:
#     y = ((x - hi[c]) - lo[c]) * a[c] + b[c]
# (hi + lo: a mean split so that x - hi is exact for x near it). The output is another View of
# the same logical shape: NHWC -> NCHW is only a change of output strides. ``mirror`` flips the
# run (a row of an image) for the chosen indices of the first outer dimension.
# Computed in double for float64 outputs, else in float. Three routes, by the strides: RGB pixels
# straight into three planes (images); dense input into output of the same layout and compute
# type (Standardizer); anything else through a tile of up to TILE values, gathered, mapped, then
# stored converted and reordered. Elementwise, so threads never change the bits.

cdef enum:
    PIECE = 16384         # values per unit of work: long rows are split so threads share them

cdef void _store(const floating *t, Py_ssize_t tsp, Py_ssize_t tsc, Py_ssize_t n,
                 Py_ssize_t ce, char *y, Py_ssize_t yps, Py_ssize_t ycs,
                 out_t *tag) noexcept nogil:
    """n pixels of ce channels from the tile (element (p, c) at t[p*tsp + c*tsc]) to y (at
    y + p*yps + c*ycs bytes), converted. Contiguous and deinterleaving (NHWC -> NCHW) cases
    run as plain loops the compiler vectorizes."""
    cdef Py_ssize_t p, c, m = n * ce, osz = sizeof(out_t)
    cdef out_t *o = <out_t *>y
    cdef out_t *o1
    if tsp == ce and tsc == 1 and ycs == osz and yps == ce * osz:  # same interleaving
        for p in range(m):
            _put(&o[p], t[p])
    elif tsp == 1 and ce == 1 and yps == osz:  # one planar run
        for p in range(n):
            _put(&o[p], t[p])
    elif tsc == 1 and yps == osz:  # interleaved -> planes
        for c in range(ce):
            o1 = <out_t *>(y + c * ycs)
            for p in range(n):
                _put(&o1[p], t[p * tsp + c])
    else:
        for p in range(n):
            for c in range(ce):
                _put(<out_t *>(y + p * yps + c * ycs), t[p * tsp + c * tsc])


cdef inline int _map_lanes(const pixel_t *x, Py_ssize_t n, Py_ssize_t W, const floating *q,
                           floating *t) noexcept nogil:
    """t = ((x - hi) - lo) * a + b for n contiguous values, coefficients q = [hi, lo, a, b]
    as W periodic lanes each. Returns 1 when a float input was NaN or infinite (x - x is then
    NaN: one subtraction and one compare per value, no extra pass), else 0."""
    cdef Py_ssize_t b, l, nb = n // W, s
    cdef floating e
    cdef int found = 0
    for b in range(nb):
        for l in range(W):
            e = <floating>_dbl(x[b * W + l]) if floating is double else _flt(x[b * W + l])
            t[b * W + l] = ((e - q[l]) - q[W + l]) * q[2 * W + l] + q[3 * W + l]
            if not (pixel_t is uint8_t or pixel_t is int8_t or pixel_t is uint16_t or
                    pixel_t is int16_t or pixel_t is uint32_t or pixel_t is int32_t or
                    pixel_t is int64_t):
                found |= (e - e) != 0
    s = nb * W
    for l in range(n - s):
        e = <floating>_dbl(x[s + l]) if floating is double else _flt(x[s + l])
        t[s + l] = ((e - q[l]) - q[W + l]) * q[2 * W + l] + q[3 * W + l]
        found |= (e - e) != 0
    return found


cdef void _rgb_planes(const pixel_t *x, Py_ssize_t n, const float *q, Py_ssize_t W,
                      out_t *o0, out_t *o1, out_t *o2, Py_ssize_t step) noexcept nogil:
    """The image hot path: n interleaved 3-channel pixels straight into three planes (step -1
    writes them mirrored), no tile, in float; q: the lanes of the coefficients (see
    _affine_unit), channel c in lane c."""
    cdef Py_ssize_t p
    cdef float h0 = q[0], h1 = q[1], h2 = q[2], l0 = q[W], l1 = q[W + 1], l2 = q[W + 2]
    cdef float a0 = q[2 * W], a1 = q[2 * W + 1], a2 = q[2 * W + 2]
    cdef float b0 = q[3 * W], b1 = q[3 * W + 1], b2 = q[3 * W + 2]
    if step == 1:
        for p in range(n):
            _put(&o0[p], ((_flt(x[3 * p]) - h0) - l0) * a0 + b0)
            _put(&o1[p], ((_flt(x[3 * p + 1]) - h1) - l1) * a1 + b1)
            _put(&o2[p], ((_flt(x[3 * p + 2]) - h2) - l2) * a2 + b2)
    else:
        for p in range(n):
            _put(&o0[-p], ((_flt(x[3 * p]) - h0) - l0) * a0 + b0)
            _put(&o1[-p], ((_flt(x[3 * p + 1]) - h1) - l1) * a1 + b1)
            _put(&o2[-p], ((_flt(x[3 * p + 2]) - h2) - l2) * a2 + b2)


cdef enum:
    RGB_TILE = 512        # pixels per float16 step: three float runs of 2 KB, in L1


cdef void _rgb_half(const pixel_t *x, Py_ssize_t n, const float *q, Py_ssize_t W,
                    cn_f16 *o0, cn_f16 *o1, cn_f16 *o2, float *tile) noexcept nogil:
    """_rgb_planes into float16 planes (step 1): float runs in an L1 tile, then converted a run
    at a time by F16C (one conversion per value is not vectorized by the compiler)."""
    cdef Py_ssize_t p0 = 0, m
    while p0 < n:
        m = min(RGB_TILE, n - p0)
        _rgb_planes(x + 3 * p0, m, q, W, tile, tile + RGB_TILE, tile + 2 * RGB_TILE, 1)
        cn_f32_to_f16_n(tile, o0 + p0, m)
        cn_f32_to_f16_n(tile + RGB_TILE, o1 + p0, m)
        cn_f32_to_f16_n(tile + 2 * RGB_TILE, o2 + p0, m)
        p0 += m


cdef int _affine_unit(const View *x, const View *y, Py_ssize_t r, Py_ssize_t g,
                      Py_ssize_t i0, Py_ssize_t i1, bint flip, const void *coef, char *scratch,
                      pixel_t *tag, out_t *otag) noexcept nogil:
    """Row r's pixels [i0, i1), channel group g (interleaved: the one group of all channels;
    planar: channel g). coef: per group, 4W periodic lanes of the compute type. Returns 1 when
    an input was NaN or infinite."""
    cdef Py_ssize_t W = _lane_width(x.C, x.inter), ce = x.C if x.inter else 1
    cdef Py_ssize_t tp = max(1, TILE // W) * W // ce, i, step, yps
    cdef pixel_t *tile = <pixel_t *>(<double *>scratch + TILE + W)
    cdef const pixel_t *src
    cdef const char *xr = _row(x, r) + g * x.cs
    cdef char *yr = _row(y, r) + g * y.cs
    cdef char *yp
    cdef int found = 0
    if (out_t is not double and x.C == 3 and x.inter and _dense(x, sizeof(pixel_t))
            and y.rs == sizeof(out_t)):  # RGB -> planes (float compute)
        yp = yr + ((y.L - i0 - 1) if flip else i0) * y.rs
        if out_t is cn_f16:
            if not flip:
                _rgb_half(<const pixel_t *>(xr + i0 * x.rs), i1 - i0, <const float *>coef, W,
                          <cn_f16 *>yp, <cn_f16 *>(yp + y.cs), <cn_f16 *>(yp + 2 * y.cs),
                          <float *>scratch)
                return 0
        _rgb_planes(<const pixel_t *>(xr + i0 * x.rs), i1 - i0, <const float *>coef, W,
                    <out_t *>yp, <out_t *>(yp + y.cs), <out_t *>(yp + 2 * y.cs),
                    -1 if flip else 1)
        return 0
    if (not flip and x.inter == y.inter and _dense(x, sizeof(pixel_t))
            and _dense(y, sizeof(out_t))):  # straight into y: same layout, no tile
        if out_t is float:
            return _map_lanes(<const pixel_t *>(xr + i0 * x.rs), (i1 - i0) * ce, W,
                              <const float *>coef + 4 * W * g, <float *>(yr + i0 * y.rs))
        if out_t is double:
            return _map_lanes(<const pixel_t *>(xr + i0 * x.rs), (i1 - i0) * ce, W,
                              <const double *>coef + 4 * W * g, <double *>(yr + i0 * y.rs))
    i = i0
    while i < i1:  # through a tile: gathered input, converted or reordered output
        step = min(tp, i1 - i)
        src = _gather(x, xr + i * x.rs, step, ce, tile)
        yp = yr + ((y.L - i - 1) if flip else i) * y.rs
        yps = -y.rs if flip else y.rs  # flipped: pixel p goes to L - 1 - p
        if out_t is double:
            found |= _map_lanes(src, step * ce, W, <const double *>coef + 4 * W * g,
                                <double *>scratch)
            _store(<const double *>scratch, ce, 1, step, ce, yp, yps, y.cs, otag)
        else:
            found |= _map_lanes(src, step * ce, W, <const float *>coef + 4 * W * g,
                                <float *>scratch)
            _store(<const float *>scratch, ce, 1, step, ce, yp, yps, y.cs, otag)
        i += step
    return found


cdef inline int _affine_piece(const View *x, const View *y, Py_ssize_t u, Py_ssize_t groups,
                              Py_ssize_t per_row, Py_ssize_t piece, Py_ssize_t plane,
                              const unsigned char *mirror, const void *coef, char *scratch,
                              pixel_t *tag, out_t *otag) noexcept nogil:
    """Unit u of _affine's plan: a piece of a row (interleaved) or of a channel's row."""
    cdef Py_ssize_t r = u // (groups * per_row)
    cdef Py_ssize_t g = (u - r * groups * per_row) // per_row
    cdef Py_ssize_t i0 = (u - (r * groups + g) * per_row) * piece
    return _affine_unit(x, y, r, g, i0, min(x.L, i0 + piece),
                        mirror != NULL and mirror[r // plane] != 0, coef, scratch, tag, otag)


cdef int _affine(const View *x, const View *y, const unsigned char *mirror,
                 const void *coef, int nt, pixel_t *tag, out_t *otag) noexcept nogil:
    """The map over the whole view, in parallel over units of about PIECE values: pieces of
    rows (interleaved), of a channel's rows (planar). Returns 1 when an input value was NaN or
    infinite, 0 when none was, -1 when out of memory."""
    cdef Py_ssize_t W = _lane_width(x.C, x.inter), per_row, u, units, plane, t
    cdef Py_ssize_t sb = (2 * TILE + 2 * W + PAD) * 8
    cdef Py_ssize_t groups = 1 if x.inter else x.C
    cdef Py_ssize_t piece = max(1, PIECE // x.C) if x.inter else PIECE
    cdef char *scratch
    cdef int *found
    per_row = (x.L + piece - 1) // piece
    units = x.rows * groups * per_row
    plane = x.rows // x.shape[0] if x.nd >= 1 and x.shape[0] > 0 else 1
    nt = _threads(x.rows * x.L * x.C, units, nt)
    scratch = <char *>malloc(nt * sb + nt * PAD * 8)
    if scratch == NULL:
        return -1
    found = <int *>(scratch + nt * sb)  # one flag per thread, PAD doubles apart
    for t in range(nt):
        found[t * 2 * PAD] = 0
    if nt == 1:  # no OpenMP region: libgomp sets up a team even for one thread
        for u in range(units):
            found[0] |= _affine_piece(x, y, u, groups, per_row, piece, plane, mirror, coef,
                                      scratch, tag, otag)
    else:
        for u in prange(units, schedule="static", num_threads=nt):
            found[threadid() * 2 * PAD] |= _affine_piece(
                x, y, u, groups, per_row, piece, plane, mirror, coef,
                scratch + sb * threadid(), tag, otag)
    u = 0
    for t in range(nt):
        u |= found[t * 2 * PAD]
    free(scratch)
    return <int>u


cdef int _affine_to(int out_kind, const View *x, const View *y, const unsigned char *mirror,
                    const void *coef, int nt, pixel_t *tag) noexcept nogil:
    """_affine for the output kind (second level of the dispatch)."""
    if out_kind == K_F32:
        return _affine(x, y, mirror, coef, nt, tag, <float *>NULL)
    if out_kind == K_F64:
        return _affine(x, y, mirror, coef, nt, tag, <double *>NULL)
    if out_kind == K_F16:
        return _affine(x, y, mirror, coef, nt, tag, <cn_f16 *>NULL)
    if out_kind == K_BF16:
        return _affine(x, y, mirror, coef, nt, tag, <cn_bf16 *>NULL)
    return -2


cdef void _coef_lanes(floating *q, Py_ssize_t W, Py_ssize_t C, bint inter,
                      const double *mean, const double *a, const double *b) noexcept nogil:
    """Per group, W lanes each of hi, lo, a, b (lane l of an interleaved view: channel l % C)."""
    cdef Py_ssize_t g, l, c, groups = 1 if inter else C
    for g in range(groups):
        for l in range(W):
            c = l % C if inter else g
            _split(mean[c], &q[4 * W * g + l], &q[4 * W * g + W + l])
            q[4 * W * g + 2 * W + l] = <floating>a[c]
            q[4 * W * g + 3 * W + l] = <floating>b[c]


def data_affine(Py_ssize_t xaddr, int in_kind, Py_ssize_t yaddr, int out_kind,
                const Py_ssize_t[::1] shape, const Py_ssize_t[::1] xstrides,
                const Py_ssize_t[::1] ystrides, Py_ssize_t C, Py_ssize_t xcs, Py_ssize_t ycs,
                const double[::1] mean, const double[::1] a, const double[::1] b,
                const unsigned char[::1] mirror, int n_threads):
    """``y = (x - mean[c]) * a[c] + b[c]`` from the canonical view at ``xaddr`` into the one at
    ``yaddr`` (same outer ``shape``, run last; strides in bytes), converted to the output
    kind; the mean is applied as hi + lo in the compute type (double for float64 output, else
    float). ``mirror`` (None or one flag per index of the first outer dimension) reverses the
    run. Any size, empty included. Returns True when an input value was NaN or infinite (the
    output is written all the same)."""
    cdef View x, y
    cdef int err = 0
    _view(&x, xaddr, shape, xstrides, C, xcs)
    _view(&y, yaddr, shape, ystrides, C, ycs)
    if x.rows * x.L * C == 0:
        return False
    cdef Py_ssize_t W = _lane_width(C, x.inter), groups = 1 if x.inter else C
    cdef void *coef = malloc(4 * W * groups * sizeof(double))
    cdef const unsigned char *mp = &mirror[0] if mirror is not None else NULL
    if coef == NULL:
        raise MemoryError()
    if out_kind == K_F64:
        _coef_lanes(<double *>coef, W, C, x.inter, &mean[0], &a[0], &b[0])
    else:
        _coef_lanes(<float *>coef, W, C, x.inter, &mean[0], &a[0], &b[0])
    with nogil:
        if in_kind == K_U8:
            err = _affine_to(out_kind, &x, &y, mp, coef, n_threads, <uint8_t *>NULL)
        elif in_kind == K_I8:
            err = _affine_to(out_kind, &x, &y, mp, coef, n_threads, <int8_t *>NULL)
        elif in_kind == K_U16:
            err = _affine_to(out_kind, &x, &y, mp, coef, n_threads, <uint16_t *>NULL)
        elif in_kind == K_I16:
            err = _affine_to(out_kind, &x, &y, mp, coef, n_threads, <int16_t *>NULL)
        elif in_kind == K_U32:
            err = _affine_to(out_kind, &x, &y, mp, coef, n_threads, <uint32_t *>NULL)
        elif in_kind == K_I32:
            err = _affine_to(out_kind, &x, &y, mp, coef, n_threads, <int32_t *>NULL)
        elif in_kind == K_I64:
            err = _affine_to(out_kind, &x, &y, mp, coef, n_threads, <int64_t *>NULL)
        elif in_kind == K_F16:
            err = _affine_to(out_kind, &x, &y, mp, coef, n_threads, <cn_f16 *>NULL)
        elif in_kind == K_BF16:
            err = _affine_to(out_kind, &x, &y, mp, coef, n_threads, <cn_bf16 *>NULL)
        elif in_kind == K_F32:
            err = _affine_to(out_kind, &x, &y, mp, coef, n_threads, <float *>NULL)
        elif in_kind == K_F64:
            err = _affine_to(out_kind, &x, &y, mp, coef, n_threads, <double *>NULL)
        else:
            err = -2
    free(coef)
    if err == -1:
        raise MemoryError()
    if err == -2:
        raise ValueError(f"unknown element kinds {in_kind} -> {out_kind}")
    return err == 1
