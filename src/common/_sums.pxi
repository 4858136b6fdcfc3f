# Lane sums: the one summation loop of the kernels, for x (statistics) and for dy (backward).
#   without g:  s1 = sum(x - shift),   s2 = sum((x - shift)^2)
#   with g:     s1 = sum(g),           s2 = sum(g * (x - shift)),  g = dy (times w when given)
# Values go into lanes of the data type in blocks (no sum is reassociated, so every SIMD target
# gives the same bits); float32 lanes are flushed into double every FLUSH blocks. Data is of a
# storage type (``real``), lanes of the compute type (``floating``: float32 for half data).


cdef extern from "cnorm_prefetch.h" nogil:
    void cn_prefetch(const void *p, Py_ssize_t nbytes)

cdef extern from "cnorm_runs.h" nogil:
    bint CN_HAVE_SHORT  # cnorm_short.h's, which it includes
    void cn_runs_f32(const float *x, const float *dy, Py_ssize_t C, Py_ssize_t inner,
                     Py_ssize_t c, Py_ssize_t j0, Py_ssize_t j1, float sh, Py_ssize_t flush,
                     double *s1, double *s2)
    bint cn_rows_sums_takes(Py_ssize_t C)
    void cn_rows_sums_f32(const float *x, const float *dy, Py_ssize_t C, Py_ssize_t r0,
                          Py_ssize_t r1, const float *fs, Py_ssize_t flush, double *s1,
                          double *s2)


cdef inline void _add_block(const real *p, const real *g, const floating *w,
                            Py_ssize_t width, const floating *s, floating *f1,
                            floating *f2) noexcept nogil:
    """One block of ``width`` values into ``width`` lanes (s: the lanes' shifts). Half data:
    through float tiles, the same lanes and sums as its float32 values."""
    cdef Py_ssize_t l, k, o, m
    cdef floating d, e
    cdef floating pt[HALF_TILE]
    cdef floating gt[HALF_TILE]
    if real is f16_t or real is bf16_t:
        for k in range((width + HALF_TILE - 1) // HALF_TILE):
            o = k * HALF_TILE
            m = min(<Py_ssize_t>HALF_TILE, width - o)
            _tile_in(p + o, pt, m)
            if g != NULL:
                _tile_in(g + o, gt, m)
            _add_block(pt, &gt[0] if g != NULL else <floating *>NULL,
                       w + o if w != NULL else <const floating *>NULL, m, s + o, f1 + o, f2 + o)
    elif g == NULL:
        for l in range(width):
            d = p[l] - s[l]
            f1[l] += d
            f2[l] += d * d
    elif w == NULL:
        for l in range(width):
            e = g[l]
            f1[l] += e
            f2[l] += e * (p[l] - s[l])
    else:
        for l in range(width):
            e = g[l] * w[l]
            f1[l] += e
            f2[l] += e * (p[l] - s[l])


cdef inline void _flush(floating *f1, floating *f2, double *a1, double *a2,
                        Py_ssize_t width) noexcept nogil:
    cdef Py_ssize_t l
    for l in range(width):
        a1[l] += <double>f1[l]
        a2[l] += <double>f2[l]
        f1[l] = 0.0
        f2[l] = 0.0


cdef extern from "cnorm_tree.h" nogil:
    double cn_tree32(const double *a)


cdef inline double _tree(double *a) noexcept nogil:
    """Sum of LANES (= 32) double lanes by a fixed pairwise tree (cnorm_tree.h)."""
    return cn_tree32(a)


cdef inline void _seg_add(const real *p, const real *g, const floating *wp, Py_ssize_t seg,
                          const floating *sh, floating *f1, floating *f2, double *a1,
                          double *a2, int *blocks) noexcept nogil:
    """One run's piece of ``seg`` values into the lanes: whole blocks into the float lanes
    (flushed every FLUSH blocks, the count carried over runs in ``blocks``), the tail into the
    double lanes. sh: the lanes' shift (all equal)."""
    cdef Py_ssize_t b, t, nb = seg // LANES
    cdef floating fs = sh[0], e
    cdef int l
    for b in range(nb):
        _add_block(p + b * LANES, g + b * LANES if g != NULL else NULL,
                   wp + b * LANES if wp != NULL else NULL, LANES, sh, f1, f2)
        blocks[0] += 1
        if floating is double or blocks[0] == FLUSH:
            _flush(f1, f2, a1, a2, LANES)
            blocks[0] = 0
    t = nb * LANES
    for l in range(seg - t):
        if g == NULL:
            a1[l] += _d(p[t + l]) - <double>fs
            a2[l] += (_d(p[t + l]) - <double>fs) * (_d(p[t + l]) - <double>fs)
        else:  # a product rounded once: that of the compute type
            e = <floating>(_d(g[t + l]) * wp[t + l]) if wp != NULL else <floating>_d(g[t + l])
            a1[l] += <double>e
            a2[l] += <double>e * (_d(p[t + l]) - <double>fs)


cdef void _plane_sums(const real *x, const real *dy, const floating *w, Py_ssize_t C,
                      Py_ssize_t inner, Py_ssize_t c, Py_ssize_t j0, Py_ssize_t j1,
                      double shift, double *s1, double *s2) noexcept nogil:
    """Sums over channel c's flat range [j0, j1) of its (outer, inner) plane in an
    (outer, C, inner) array, run by run (a run: the part of one outer row; C == 1 makes the
    plane one run). ``w`` is indexed by the inner position. Without dy the shift must be of
    the data type; with dy any double. Each run's tail goes into the double lanes. Float
    data's short runs: the same loop with its lanes in registers (cnorm_runs.h)."""
    cdef double a1[LANES]
    cdef double a2[LANES]
    cdef floating f1[LANES]
    cdef floating f2[LANES]
    cdef floating sh[LANES]
    cdef floating fs = <floating>shift
    cdef Py_ssize_t run = j1 if C == 1 else inner
    cdef Py_ssize_t o = j0 // run if j0 >= run else 0  # no division for a short row's run
    cdef Py_ssize_t i = j0 - o * run
    cdef Py_ssize_t j = j0, seg, nxt, nbytes
    cdef const real *p
    cdef int l, blocks = 0
    if (real is float and floating is float and CN_HAVE_SHORT and C > 1 and inner < GATHER
            and w == NULL):
        cn_runs_f32(<const float *>x, <const float *>dy, C, inner, c, j0, j1, fs, FLUSH, s1, s2)
    else:
        for l in range(LANES):
            a1[l] = 0.0
            a2[l] = 0.0
            f1[l] = 0.0
            f2[l] = 0.0
            sh[l] = fs
        while j < j1:
            seg = min(run - i, j1 - j)
            p = x + (o * C + c) * run + i
            if C > 1 and j + seg < j1:  # the next run, C runs on: ask for it while this sums
                nxt = ((o + 1) * C + c) * run
                nbytes = min(run, j1 - j - seg) * sizeof(real)
                cn_prefetch(x + nxt, nbytes)
                if dy != NULL:
                    cn_prefetch(dy + nxt, nbytes)
            _seg_add(p, dy + (p - x) if dy != NULL else NULL, w + i if w != NULL else NULL,
                     seg, sh, f1, f2, a1, a2, &blocks)
            j += seg
            o += 1
            i = 0
        _flush(f1, f2, a1, a2, LANES)
        s1[0] = _tree(a1)
        s2[0] = _tree(a2)
    if dy != NULL:  # sums were around fs; move them to the exact shift
        s2[0] += (<double>fs - shift) * s1[0]


cdef enum:
    BAND_STRIDE = 4 * LANES + 8  # doubles of one channel's lanes in _band_sums: a1, a2, f1,
                                 # f2 (f1 and f2 in at most 2 * LANES doubles), the block count
                                 # and the shift; a multiple of 8 (64-byte lines)
    BAND = 64                    # channels per unit of _band_sums (their lanes: 68 KB)


cdef void _band_sums(const real *x, const real *dy, Py_ssize_t outer, Py_ssize_t C,
                     Py_ssize_t inner, Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t k0,
                     Py_ssize_t k1, const double *mean, double *p1, double *p2,
                     double *state, const floating *tag) noexcept nogil:
    """_plane_sums of the plane chunks [k0, k1) of channels [c0, c1), all at once in memory
    order: row by row, each channel's piece of the row into lanes of its own (kept in
    ``state``: (c1 - c0) * BAND_STRIDE doubles). A channel of NCHW data is ``outer`` short
    runs C runs apart; read one channel at a time, every run starts the hardware prefetchers
    cold (AMD EPYC, (32, 64, 56, 56): 1.5 ms against 0.7 ms for the same bytes in order).
    Each (channel, chunk) sees the same values in the same order as _plane_sums: the same
    bits. Writes the raw sums into p1[k * C + c], p2[k * C + c]; the shift is the chunk's
    first value without dy, else mean[c] (with _plane_sums' correction). ``tag``: any pointer
    of the compute type (its value is unused)."""
    cdef double a1[LANES]
    cdef double a2[LANES]
    cdef floating f1[LANES]
    cdef floating f2[LANES]
    cdef floating sh[LANES]
    cdef Py_ssize_t n_all = outer * inner, c, jj, ii, e, kb, k
    cdef Py_ssize_t j = k0 * CHUNK, jend = min(k1 * CHUNK, n_all)
    cdef Py_ssize_t o = j // inner, i = j - o * inner, row_end
    cdef double shift
    cdef double *st
    cdef floating *fl
    cdef int l, blocks
    while j < jend:
        row_end = min(j + inner - i, jend)
        for c in range(c0, c1):
            st = state + (c - c0) * BAND_STRIDE
            fl = <floating *>(st + 2 * LANES)
            jj = j
            ii = i
            while jj < row_end:
                k = jj // CHUNK
                if jj == k * CHUNK:  # a chunk opens: zero lanes, its shift
                    shift = mean[c] if dy != NULL else _d(x[(o * C + c) * inner + ii])
                    for l in range(LANES):
                        a1[l] = 0.0
                        a2[l] = 0.0
                        f1[l] = 0.0
                        f2[l] = 0.0
                        sh[l] = <floating>shift
                    blocks = 0
                else:  # go on with this channel's lanes
                    for l in range(LANES):
                        a1[l] = st[l]
                        a2[l] = st[LANES + l]
                        f1[l] = fl[l]
                        f2[l] = fl[LANES + l]
                        sh[l] = <floating>st[4 * LANES + 1]
                    blocks = <int>st[4 * LANES]
                kb = min((k + 1) * CHUNK, n_all)
                e = min(row_end, kb)
                _seg_add(x + (o * C + c) * inner + ii,
                         dy + (o * C + c) * inner + ii if dy != NULL else NULL,
                         <const floating *>NULL, e - jj, sh, f1, f2, a1, a2, &blocks)
                if e == kb:  # the chunk closes
                    _flush(f1, f2, a1, a2, LANES)
                    p1[k * C + c] = _tree(a1)
                    p2[k * C + c] = _tree(a2)
                    if dy != NULL:
                        p2[k * C + c] += (<double>sh[0] - mean[c]) * p1[k * C + c]
                else:
                    for l in range(LANES):
                        st[l] = a1[l]
                        st[LANES + l] = a2[l]
                        fl[l] = f1[l]
                        fl[LANES + l] = f2[l]
                    st[4 * LANES] = <double>blocks
                    st[4 * LANES + 1] = <double>sh[0]
                ii += e - jj
                jj = e
        j = row_end
        o += 1
        i = 0


cdef inline void _rows_block(const real *x, const real *dy, Py_ssize_t C, Py_ssize_t c,
                             Py_ssize_t r, Py_ssize_t rn, const floating *fs, floating *f1,
                             floating *f2) noexcept nogil:
    """Rows [r, rn) of channels [c, c + LANES) (or to C) into float lanes f1, f2 from zero."""
    cdef Py_ssize_t l, cw = min(<Py_ssize_t>LANES, C - c)
    for l in range(LANES):
        f1[l] = 0.0
        f2[l] = 0.0
    if cw == LANES:  # a constant width: the lanes stay in registers
        for l in range(r, rn):
            _add_block(x + l * C + c, dy + l * C + c if dy != NULL else NULL,
                       <const floating *>NULL, LANES, fs + c, f1, f2)
    else:
        for l in range(r, rn):
            _add_block(x + l * C + c, dy + l * C + c if dy != NULL else NULL,
                       <const floating *>NULL, cw, fs + c, f1, f2)


cdef void _rows_sums(const real *x, const real *dy, Py_ssize_t C, Py_ssize_t r0,
                     Py_ssize_t r1, const double *shift, double *s1, double *s2,
                     floating *lanes) noexcept nogil:
    """Per-channel sums over rows [r0, r1) of an (outer, C) matrix: the lanes are the channels.
    FLUSH rows at a time (one row for double lanes), LANES channels at a time, into float
    lanes in registers, then into the double sums. Each channel sees its rows in order with a
    flush after every FLUSH of them: the bits of a row-by-row sweep, without a store of every
    lane at every row (AMD EPYC, (256, 1024): 55 against 25 us). 2 * LANES channels: whole
    rows in memory order, every lane in registers (a sweep per channel block read every row's
    lines apart, which the prefetchers follow badly: GroupNorm channels-last (32, 64, 56, 56)
    forward 4.1 -> 2.7 ms); fewer: LANES channels over all the rows, the double sums in
    registers too; wider rows in row order. lanes: 3*C values."""
    cdef floating *fs = lanes + 2 * C
    cdef floating f1[LANES]
    cdef floating f2[LANES]
    cdef double a1[LANES]
    cdef double a2[LANES]
    cdef floating g1[2 * LANES]
    cdef floating g2[2 * LANES]
    cdef double w1[2 * LANES]
    cdef double w2[2 * LANES]
    cdef Py_ssize_t r, rn, c, l, step = 1 if floating is double else FLUSH
    for c in range(C):
        s1[c] = 0.0
        s2[c] = 0.0
        fs[c] = <floating>shift[c]
    if real is float and floating is float and cn_rows_sums_takes(C):  # the same, in C
        cn_rows_sums_f32(x, dy, C, r0, r1, fs, FLUSH, s1, s2)
    elif C == 2 * LANES:  # whole rows in memory order, float lanes in registers
        for l in range(2 * LANES):
            w1[l] = 0.0
            w2[l] = 0.0
        r = r0
        while r < r1:
            rn = min(r + step, r1)
            for c in range(2 * LANES):
                g1[c] = 0.0
                g2[c] = 0.0
            for l in range(r, rn):
                _add_block(x + l * C, dy + l * C if dy != NULL else NULL,
                           <const floating *>NULL, 2 * LANES, fs, g1, g2)
            _flush(g1, g2, w1, w2, 2 * LANES)
            r = rn
        for l in range(2 * LANES):
            s1[l] = w1[l]
            s2[l] = w2[l]
    elif C <= 2 * LANES:
        c = 0
        while c < C:
            for l in range(LANES):
                a1[l] = 0.0
                a2[l] = 0.0
            r = r0
            while r < r1:
                rn = min(r + step, r1)
                _rows_block(x, dy, C, c, r, rn, fs, f1, f2)
                _flush(f1, f2, a1, a2, LANES)
                r = rn
            for l in range(min(<Py_ssize_t>LANES, C - c)):
                s1[c + l] = a1[l]
                s2[c + l] = a2[l]
            c += LANES
    else:
        r = r0
        while r < r1:
            rn = min(r + step, r1)
            c = 0
            while c < C:
                _rows_block(x, dy, C, c, r, rn, fs, f1, f2)
                _flush(f1, f2, s1 + c, s2 + c, min(<Py_ssize_t>LANES, C - c))
                c += LANES
            r = rn
    if dy != NULL:
        for c in range(C):
            s2[c] += (<double>fs[c] - shift[c]) * s1[c]


cdef void _chunk_sums(const real *x, const real *dy, Py_ssize_t C, Py_ssize_t inner,
                      Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t j0, Py_ssize_t j1,
                      const double *shift, double *s1, double *s2,
                      floating *lanes) noexcept nogil:
    """Sums of channels [c0, c1) over their flat range [j0, j1), into s1[c - c0], s2[c - c0]
    (shift likewise): across channels in the rows layout (all channels), else per channel."""
    cdef Py_ssize_t c
    if inner == 1 and C > 1:
        _rows_sums(x, dy, C, j0, j1, shift, s1, s2, lanes)
        return
    for c in range(c0, c1):
        _plane_sums(x, dy, <const floating *>NULL, C, inner, c, j0, j1, shift[c - c0],
                    &s1[c - c0], &s2[c - c0])


cdef void _wide_sums(const real *x, Py_ssize_t C, Py_ssize_t inner, Py_ssize_t c,
                     Py_ssize_t j0, Py_ssize_t j1, double shift, double *s1,
                     double *s2) noexcept nogil:
    """The x sums of _plane_sums with every step in double, in any layout: the rare fallback
    for float32 chunks whose squares overflow or underflow in float (see _moments.pxi)."""
    cdef Py_ssize_t j, o, i
    cdef double d, a = 0.0, b = 0.0
    for j in range(j0, j1):
        o = j // inner
        i = j - o * inner
        d = _d(x[(o * C + c) * inner + i]) - shift
        a = a + d
        b = b + d * d
    s1[0] = a
    s2[0] = b
