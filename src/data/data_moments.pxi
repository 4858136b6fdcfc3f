# Moments of a dataset: per-channel (count, mean, M2, min, max) of a canonical View (see
# _data_types.pxi) of any dtype and strides, read in place. The chunk plan depends on the view's
# shape only and partials merge in chunk order (Chan), so results do not depend on threads.
#   8-bit data: exact integer sums per chunk (int32 lanes, no shift), then mean = S1/n and
#               M2 = (n*S2 - S1^2)/n from exact integers: one rounding each;
#   float32:    float lanes around the chunk's first pixel, flushed into double every
#               MOMENT_FLUSH blocks, again around the mean when that lost digits (the norm
#               kernels' scheme, see _moments.pxi); double lanes where float squares overflow;
#   other data: double lanes, the same way.
# A chunk is MOMENT_CHUNK pixels (planar) or ROW_CHUNK values (interleaved), of whole rows or a
# piece of one row. Values go through a tile of TILE pixels: converted (and gathered, when
# strided) there, so contiguous and strided views of the same data give the same bits.

cdef enum:
    MOMENT_CHUNK = 4096   # pixels per chunk when planar (as CHUNK)
    MOMENT_FLUSH = 32     # float lanes' blocks between flushes: float32 moments are compute-bound
                          # and the norms' FLUSH (8) cost a fifth of the time (28 -> 34 GB/s
                          # in L2, AMD EPYC); a partial of 32 values rounds at ~1e-7 typically
    TILE = 2048           # values per tile step (rounded to whole lane blocks)


cdef struct Plan:
    Py_ssize_t W        # lanes
    Py_ssize_t pc       # pixels per chunk
    Py_ssize_t pieces   # chunks per row (rows at least pc long), else 0
    Py_ssize_t rpc      # rows per chunk (shorter rows)
    Py_ssize_t K        # chunks
    Py_ssize_t tp       # pixels per tile step
    Py_ssize_t ce       # channels per unit: C (interleaved) or 1 (planar)


cdef void _plan(const View *v, Plan *p) noexcept nogil:
    p.ce = v.C if v.inter else 1
    p.W = _lane_width(v.C, v.inter)
    p.pc = max(1, ROW_CHUNK // v.C) if v.inter else MOMENT_CHUNK
    p.tp = max(1, TILE // p.W) * p.W // p.ce
    p.pieces = 0
    p.rpc = 0
    if v.L >= p.pc:
        p.pieces = (v.L + p.pc - 1) // p.pc
        p.K = v.rows * p.pieces
    else:
        p.rpc = p.pc // v.L if v.L > 0 else 1
        p.K = (v.rows + p.rpc - 1) // p.rpc if v.L > 0 else 0


cdef inline Py_ssize_t _scratch_bytes(const Plan *p) noexcept nogil:
    """One thread's scratch, in doubles' bytes: lanes (5W), the converted tile (TILE + W),
    the gathered tile (TILE + W values of up to 8 bytes), the shifts and sums (2ce), padded
    against false sharing."""
    return (7 * p.W + 2 * TILE + 2 * p.ce + PAD) * 8


cdef inline void _chunk_span(const View *v, const Plan *p, Py_ssize_t k, Py_ssize_t *r0,
                             Py_ssize_t *r1, Py_ssize_t *i0, Py_ssize_t *i1) noexcept nogil:
    """Chunk k: rows [r0, r1), pixels [i0, i1) of each."""
    if p.pieces:
        r0[0] = k // p.pieces
        r1[0] = r0[0] + 1
        i0[0] = (k - r0[0] * p.pieces) * p.pc
        i1[0] = min(v.L, i0[0] + p.pc)
    else:
        r0[0] = k * p.rpc
        r1[0] = min(v.rows, r0[0] + p.rpc)
        i0[0] = 0
        i1[0] = v.L


cdef inline bint _dense(const View *v, Py_ssize_t isz) noexcept nogil:
    """The unit's values are contiguous along a run: planar runs of unit stride, or
    interleaved pixels of C adjacent channels."""
    if v.inter:
        return v.cs == isz and v.rs == v.C * isz
    return v.rs == isz


cdef inline const pixel_t *_gather(const View *v, const char *src, Py_ssize_t n, Py_ssize_t ce,
                                   pixel_t *tile) noexcept nogil:
    """n pixels of ce channels from src (the first pixel's first channel), contiguous."""
    cdef Py_ssize_t i, c
    if _dense(v, sizeof(pixel_t)):
        return <const pixel_t *>src
    for i in range(n):
        for c in range(ce):
            tile[i * ce + c] = (<const pixel_t *>(src + i * v.rs + c * v.cs))[0]
    return tile


# --- 8-bit data: exact integer lanes -------------------------------------------------------
# A lane never holds more than pc (<= ROW_CHUNK / 2 for C >= 2, MOMENT_CHUNK otherwise) values
# of at most 255^2: the int32 / uint32 lanes cannot overflow within a chunk.

cdef inline void _int_lanes(const pixel_t *x, Py_ssize_t n, Py_ssize_t W, int32_t *s1,
                            uint32_t *s2, int32_t *lo, int32_t *hi) noexcept nogil:
    cdef Py_ssize_t b, l, nb = n // W, t
    cdef int32_t e
    for b in range(nb):
        for l in range(W):
            e = _small(x[b * W + l])
            s1[l] += e
            s2[l] += <uint32_t>(e * e)
            lo[l] = e if e < lo[l] else lo[l]
            hi[l] = e if e > hi[l] else hi[l]
    t = nb * W
    for l in range(n - t):
        e = _small(x[t + l])
        s1[l] += e
        s2[l] += <uint32_t>(e * e)
        lo[l] = e if e < lo[l] else lo[l]
        hi[l] = e if e > hi[l] else hi[l]


cdef extern from "cnorm_u8sum.h" nogil:
    Py_ssize_t cn_u8_sums(const uint8_t *p, Py_ssize_t n, int ce, int64_t *s1, uint64_t *s2,
                          uint8_t *lo, uint8_t *hi)
    int cn_u8_dot_allowed


def allow_u8_dot_products(bint allowed):
    """Let (True) or keep (False) the uint8 moments from the VBMI/VNNI route; tests use it to
    check the lane route on a CPU that has both. Returns the previous setting."""
    global cn_u8_dot_allowed
    cdef bint before = cn_u8_dot_allowed
    cn_u8_dot_allowed = allowed
    return before


cdef void _int_chunk(const View *v, const Plan *p, Py_ssize_t k, Py_ssize_t c0,
                     double *mean, double *m2, double *mn, double *mx, char *scratch,
                     pixel_t *tag) noexcept nogil:
    """Chunk k's moments of channels [c0, c0 + ce) into mean[c - c0]..., exactly. Dense uint8
    with ce dividing 48 (RGB, RGBA, planes...) takes the SIMD sums of cnorm_u8sum.h, 48
    position lanes (and 192 byte lanes for min and max) besides the W generic ones."""
    cdef Py_ssize_t W = p.W, ce = p.ce, r, r0, r1, i0, i1, i, l, c, step, done
    cdef int32_t *s1 = <int32_t *>scratch
    cdef uint32_t *s2 = <uint32_t *>(s1 + W)
    cdef int32_t *lo = <int32_t *>(s2 + W)
    cdef int32_t *hi = lo + W
    cdef pixel_t *tile = <pixel_t *>(hi + W)
    cdef int64_t *f1 = <int64_t *>(<double *>scratch + 3 * W + TILE)
    cdef uint64_t *f2 = <uint64_t *>(f1 + 48)
    cdef uint8_t *flo = <uint8_t *>(f2 + 48)
    cdef uint8_t *fhi = flo + 192
    cdef bint fast = pixel_t is uint8_t and 48 % ce == 0 and _dense(v, 1)
    cdef const char *src
    cdef int64_t S1, n
    cdef uint64_t S2
    cdef int32_t vlo, vhi
    for l in range(W):
        s1[l] = 0
        s2[l] = 0
        lo[l] = 2147483647
        hi[l] = -2147483647
    for l in range(48):
        f1[l] = 0
        f2[l] = 0
    for l in range(192):
        flo[l] = 255
        fhi[l] = 0
    _chunk_span(v, p, k, &r0, &r1, &i0, &i1)
    for r in range(r0, r1):
        src = _row(v, r) + c0 * v.cs
        if fast:
            src += i0 * v.rs
            done = cn_u8_sums(<const uint8_t *>src, (i1 - i0) * ce, <int>ce, f1, f2, flo, fhi)
            _int_lanes(<const pixel_t *>src + done, (i1 - i0) * ce - done, W, s1, s2, lo, hi)
            continue
        i = i0
        while i < i1:
            step = min(p.tp, i1 - i)
            _int_lanes(_gather(v, src + i * v.rs, step, ce, tile), step * ce, W, s1, s2, lo, hi)
            i += step
    n = (r1 - r0) * (i1 - i0)
    for c in range(ce):  # in locals: mn and mx point into the partials other threads write
        S1 = 0
        S2 = 0
        vlo = 2147483647
        vhi = -2147483647
        l = c
        while l < W:  # the lanes of channel c
            S1 += s1[l]
            S2 += s2[l]
            vlo = min(vlo, lo[l])
            vhi = max(vhi, hi[l])
            l += ce
        if fast:
            l = c
            while l < 192:
                if l < 48:
                    S1 += f1[l]
                    S2 += f2[l]
                vlo = min(vlo, <int32_t>flo[l])
                vhi = max(vhi, <int32_t>fhi[l])
                l += ce
        mn[c] = vlo
        mx[c] = vhi
        mean[c] = <double>S1 / <double>n
        m2[c] = <double>(n * <int64_t>S2 - S1 * S1) / <double>n


# --- other data: double lanes around a shift -----------------------------------------------

cdef extern from "cnorm_lanes.h" nogil:
    bint CN_HAVE_LANES8
    void cn_lanes32(const double *x, Py_ssize_t nb, Py_ssize_t W, const double *sh, double *s1,
                    double *s2, double *lo, double *hi)
    void cn_lanes32f(const float *x, Py_ssize_t nb, Py_ssize_t W, const double *sh, double *s1,
                     double *s2, double *lo, double *hi)
    void cn_lanes8(const double *x, Py_ssize_t nb, Py_ssize_t W, const double *sh, double *s1,
                   double *s2, double *lo, double *hi)
    Py_ssize_t cn_flanes32(const float *x, Py_ssize_t nb, Py_ssize_t W, const double *sh,
                           Py_ssize_t flush, Py_ssize_t done, bint last, float *fa, float *fq,
                           double *s1, double *s2, double *lo, double *hi)
    Py_ssize_t cn_flanes96(const float *x, Py_ssize_t nb, Py_ssize_t W, const double *sh,
                           Py_ssize_t flush, Py_ssize_t done, bint last, float *fa, float *fq,
                           double *s1, double *s2, double *lo, double *hi)


ctypedef fused lane_t:   # what the double lanes read: float converts in registers
    float
    double


cdef inline void _dbl_lanes(const lane_t *x, Py_ssize_t n, Py_ssize_t W, const double *sh,
                            double *s1, double *s2, double *lo, double *hi) noexcept nogil:
    """n values into W lanes around the lanes' shifts sh: lane l gets x[l], x[W + l], ...
    in order. 32 lanes at a time (then eight, for double) through all blocks in vector
    registers (cnorm_lanes.h); the same operations lane by lane for the lanes left."""
    cdef Py_ssize_t b, l, nb = n // W, t = n - nb * W
    cdef Py_ssize_t l32 = (W // 32) * 32 if CN_HAVE_LANES8 else 0
    cdef Py_ssize_t l8 = l32 if lane_t is float or not CN_HAVE_LANES8 else (W // 8) * 8
    cdef double e, d
    for l in range(0, l32, 32):
        if lane_t is float:
            cn_lanes32f(x + l, nb, W, sh + l, s1 + l, s2 + l, lo + l, hi + l)
        else:
            cn_lanes32(x + l, nb, W, sh + l, s1 + l, s2 + l, lo + l, hi + l)
    for l in range(l32, l8, 8):
        if lane_t is double:
            cn_lanes8(x + l, nb, W, sh + l, s1 + l, s2 + l, lo + l, hi + l)
    for b in range(nb + 1):
        for l in range(l8 if b < nb else 0, W if b < nb else t):
            e = x[b * W + l]
            d = e - sh[l]
            s1[l] += d
            s2[l] += d * d
            lo[l] = e if e < lo[l] else lo[l]
            hi[l] = e if e > hi[l] else hi[l]


cdef inline Py_ssize_t _flt_lanes(const float *x, Py_ssize_t n, Py_ssize_t W, const double *sh,
                                  Py_ssize_t done, bint last, float *fa, double *s1, double *s2,
                                  double *lo, double *hi) noexcept nogil:
    """_dbl_lanes in float lanes (W a multiple of 32; fa: their 2W partial sums) flushed into
    double after every MOMENT_FLUSH blocks of a run, ``done`` of them already in fa (returns
    the new count); ``last``: the run's last step, flushed whole, the values of a partial
    block straight into the double sums (_dbl_lanes' own loop)."""
    cdef Py_ssize_t l, nb = n // W, left = done
    if W == 96:  # RGB: one pass in memory order
        left = cn_flanes96(x, nb, W, sh, MOMENT_FLUSH, done, last, fa, fa + W, s1, s2, lo, hi)
    else:
        for l in range(0, W, 32):
            left = cn_flanes32(x + l, nb, W, sh + l, MOMENT_FLUSH, done, last, fa + l,
                               fa + W + l, s1 + l, s2 + l, lo + l, hi + l)
    if n > nb * W:
        _dbl_lanes(x + nb * W, n - nb * W, W, sh, s1, s2, lo, hi)
    return left


cdef inline const double *_as_double(const pixel_t *x, Py_ssize_t n,
                                     double *tile) noexcept nogil:
    cdef Py_ssize_t i
    if pixel_t is double:
        return x
    for i in range(n):
        tile[i] = _dbl(x[i])
    return tile


cdef void _dbl_pass(const View *v, const Plan *p, Py_ssize_t k, Py_ssize_t c0, double *sh,
                    double *S1, double *S2, double *mn, double *mx, char *scratch, bint flt,
                    pixel_t *tag) noexcept nogil:
    """Sums around sh of chunk k's channels [c0, c0 + ce), and their min and max; in float
    lanes when flt (float data)."""
    cdef Py_ssize_t W = p.W, ce = p.ce, r, r0, r1, i0, i1, i, l, c, step
    cdef double *s1 = <double *>scratch
    cdef double *s2 = s1 + W
    cdef double *lo = s2 + W
    cdef double *hi = lo + W
    cdef double *shl = hi + W
    cdef double *dtile = shl + W
    cdef pixel_t *tile = <pixel_t *>(dtile + TILE + W)
    cdef float *fa = <float *>dtile  # float data: the float lanes' partials (dtile unused)
    cdef const char *src
    cdef double a, q, vlo, vhi
    cdef Py_ssize_t tp = p.tp, done
    for l in range(W):
        s1[l] = 0.0
        s2[l] = 0.0
        lo[l] = INFINITY
        hi[l] = -INFINITY
        shl[l] = sh[l % ce]
    if flt:
        for l in range(2 * W):
            fa[l] = 0.0
    _chunk_span(v, p, k, &r0, &r1, &i0, &i1)
    if ((pixel_t is float or pixel_t is double) and (W <= 32 or flt and W == 96)
            and _dense(v, sizeof(pixel_t))):
        tp = i1 - i0  # one lane set (or RGB's one pass) needs no tile: one step a run (the
                      # same sums either way: steps hold whole blocks, and float lanes flush
                      # on the run's blocks); more sets keep the L1-sized step
    for r in range(r0, r1):
        src = _row(v, r) + c0 * v.cs
        i = i0
        done = 0
        while i < i1:
            step = min(tp, i1 - i)
            if pixel_t is float and flt:
                done = _flt_lanes(_gather(v, src + i * v.rs, step, ce, tile), step * ce, W,
                                  shl, done, i + step == i1, fa, s1, s2, lo, hi)
            elif pixel_t is float:  # converted in the lanes' registers
                _dbl_lanes(_gather(v, src + i * v.rs, step, ce, tile), step * ce, W, shl,
                           s1, s2, lo, hi)
            else:
                _dbl_lanes(_as_double(_gather(v, src + i * v.rs, step, ce, tile), step * ce,
                                      dtile), step * ce, W, shl, s1, s2, lo, hi)
            i += step
    for c in range(ce):  # in locals: mn and mx point into the partials other threads write
        a = 0.0
        q = 0.0
        vlo = INFINITY
        vhi = -INFINITY
        l = c
        while l < W:
            a = a + s1[l]
            q = q + s2[l]
            vlo = min(vlo, lo[l])
            vhi = max(vhi, hi[l])
            l += ce
        S1[c] = a
        S2[c] = q
        mn[c] = vlo
        mx[c] = vhi


cdef bint _shifted_chunk(const View *v, const Plan *p, Py_ssize_t k, Py_ssize_t c0,
                         double n, double *sh, double *s1, double *mean, double *m2,
                         double *mn, double *mx, char *scratch, bint flt,
                         pixel_t *tag) noexcept nogil:
    """Chunk k's moments of channels [c0, c0 + ce) around the chunk's first pixel, again around
    the mean when that lost digits. Float lanes (flt): returns True when a channel's squares
    left float's range (then the caller sums in double lanes)."""
    cdef Py_ssize_t ce = p.ce, c, r0, r1, i0, i1
    cdef bint redo = False, wide = False
    cdef const char *first
    _chunk_span(v, p, k, &r0, &r1, &i0, &i1)
    first = _row(v, r0) + c0 * v.cs + i0 * v.rs
    for c in range(ce):
        sh[c] = _dbl((<const pixel_t *>(first + c * v.cs))[0])
    _dbl_pass(v, p, k, c0, sh, s1, m2, mn, mx, scratch, flt, tag)
    for c in range(ce):
        redo |= _finish_chunk(n, sh[c], s1[c], m2[c], &mean[c], &m2[c])
    if redo:
        for c in range(ce):
            sh[c] = <float>mean[c] if flt else mean[c]
        _dbl_pass(v, p, k, c0, sh, s1, m2, mn, mx, scratch, flt, tag)
        for c in range(ce):
            _finish_chunk(n, sh[c], s1[c], m2[c], &mean[c], &m2[c])
    if flt:
        for c in range(ce):
            wide |= _too_wide(n, s1[c], m2[c])
    return wide


cdef void _dbl_chunk(const View *v, const Plan *p, Py_ssize_t k, Py_ssize_t c0,
                     double *mean, double *m2, double *mn, double *mx, char *scratch,
                     pixel_t *tag) noexcept nogil:
    """Chunk k's moments of channels [c0, c0 + ce): float data in float lanes (as the norm
    kernels), in double lanes where those lost it; other data in double lanes."""
    cdef Py_ssize_t r0, r1, i0, i1
    cdef double *sh = <double *>scratch + 7 * p.W + 2 * TILE
    # (a compiler without vector extensions sums float data in double lanes: its own bits)
    cdef bint flt = pixel_t is float and CN_HAVE_LANES8 and p.W % 32 == 0
    _chunk_span(v, p, k, &r0, &r1, &i0, &i1)
    cdef double n = <double>((r1 - r0) * (i1 - i0))
    if flt and not _shifted_chunk(v, p, k, c0, n, sh, sh + p.ce, mean, m2, mn, mx, scratch,
                                  True, tag):
        return
    _shifted_chunk(v, p, k, c0, n, sh, sh + p.ce, mean, m2, mn, mx, scratch, False, tag)


cdef int _data_moments(const View *v, double *mean, double *m2, double *mn, double *mx,
                       int nt, pixel_t *tag) noexcept nogil:
    """Per-channel mean, M2, min and max of a non-empty view. Returns -1 when out of memory."""
    cdef Plan p
    _plan(v, &p)
    cdef Py_ssize_t K = p.K, C = v.C, units = K * (1 if v.inter else C), u, k, c, c0, kk
    cdef Py_ssize_t sb = _scratch_bytes(&p)
    nt = _threads(v.rows * v.L * C, units, nt)
    cdef double *part = <double *>malloc((4 * K * C + K) * sizeof(double))
    cdef char *scratch = <char *>malloc(nt * sb)
    cdef double *cnt = part + 4 * K * C
    cdef char *mine
    cdef Py_ssize_t r0, r1, i0, i1
    if part == NULL or scratch == NULL:
        free(part)
        free(scratch)
        return -1
    for u in prange(units, schedule="static", num_threads=nt):
        mine = scratch + sb * threadid()
        c0 = 0 if v.inter else u // K
        k = u - c0 * K
        kk = k * C + c0
        if pixel_t is uint8_t or pixel_t is int8_t:
            _int_chunk(v, &p, k, c0, part + kk, part + K * C + kk, part + 2 * K * C + kk,
                       part + 3 * K * C + kk, mine, tag)
        else:
            _dbl_chunk(v, &p, k, c0, part + kk, part + K * C + kk, part + 2 * K * C + kk,
                       part + 3 * K * C + kk, mine, tag)
    for k in range(K):
        _chunk_span(v, &p, k, &r0, &r1, &i0, &i1)
        cnt[k] = <double>((r1 - r0) * (i1 - i0))
    _merge(K, C, cnt, part, part + K * C, mean, m2)
    for c in range(C):
        mn[c] = INFINITY
        mx[c] = -INFINITY
        for k in range(K):
            mn[c] = min(mn[c], part[2 * K * C + k * C + c])
            mx[c] = max(mx[c], part[3 * K * C + k * C + c])
    free(part)
    free(scratch)
    return 0


def data_moments(Py_ssize_t addr, int kind, const Py_ssize_t[::1] shape,
                 const Py_ssize_t[::1] strides, Py_ssize_t C, Py_ssize_t cs, double[::1] mean,
                 double[::1] m2, double[::1] mn, double[::1] mx, int n_threads):
    """Per-channel mean, M2 (sum of squared deviations), min and max of the canonical view at
    ``addr`` (see cnorm._data_view): outer ``shape``/``strides`` (bytes), the run last; C
    channels ``cs`` bytes apart. The view must hold at least one value."""
    cdef View v
    cdef int err = 0
    _view(&v, addr, shape, strides, C, cs)
    with nogil:
        if kind == K_U8:
            err = _data_moments(&v, &mean[0], &m2[0], &mn[0], &mx[0], n_threads, <uint8_t *>NULL)
        elif kind == K_I8:
            err = _data_moments(&v, &mean[0], &m2[0], &mn[0], &mx[0], n_threads, <int8_t *>NULL)
        elif kind == K_U16:
            err = _data_moments(&v, &mean[0], &m2[0], &mn[0], &mx[0], n_threads, <uint16_t *>NULL)
        elif kind == K_I16:
            err = _data_moments(&v, &mean[0], &m2[0], &mn[0], &mx[0], n_threads, <int16_t *>NULL)
        elif kind == K_U32:
            err = _data_moments(&v, &mean[0], &m2[0], &mn[0], &mx[0], n_threads, <uint32_t *>NULL)
        elif kind == K_I32:
            err = _data_moments(&v, &mean[0], &m2[0], &mn[0], &mx[0], n_threads, <int32_t *>NULL)
        elif kind == K_I64:
            err = _data_moments(&v, &mean[0], &m2[0], &mn[0], &mx[0], n_threads, <int64_t *>NULL)
        elif kind == K_F16:
            err = _data_moments(&v, &mean[0], &m2[0], &mn[0], &mx[0], n_threads, <cn_f16 *>NULL)
        elif kind == K_BF16:
            err = _data_moments(&v, &mean[0], &m2[0], &mn[0], &mx[0], n_threads, <cn_bf16 *>NULL)
        elif kind == K_F32:
            err = _data_moments(&v, &mean[0], &m2[0], &mn[0], &mx[0], n_threads, <float *>NULL)
        elif kind == K_F64:
            err = _data_moments(&v, &mean[0], &m2[0], &mn[0], &mx[0], n_threads, <double *>NULL)
        else:
            err = -2
    if err == -1:
        raise MemoryError()
    if err == -2:
        raise ValueError(f"unknown element kind {kind}")
