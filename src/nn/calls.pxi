# Small calls (issue 24): a call on a small input costs its Python, not its data. The typed
# memoryviews of the kernels' entry points cost some 0.2 µs each to acquire, and the checks in
# Python more; these entries take the arrays as they are, check them in C through the NumPy
# C-API, and run the same cdef kernels on their data pointers, so that their results are the
# bits of the checked path. A layer's calls of any size go through them (from 256 KB up into
# its recycled memory, recycle.entry_out: the checked path's Python cost such a call 11-14 µs).
# They never raise for bad input: they return None before anything is written, and the caller
# takes the checked path, which raises with its messages.
include "_ndarray.pxi"


cdef inline bint _like(object r, cnp.ndarray xa):
    """``r`` is None, or an aligned C-contiguous native-order ndarray of x's type and shape
    (a fused block's residual)."""
    if r is None:
        return True
    if not cnp.PyArray_CheckExact(r):
        return False
    cdef cnp.ndarray ra = <cnp.ndarray>r
    cdef int d, nd = cnp.PyArray_NDIM(xa)
    if (cnp.PyArray_TYPE(ra) != cnp.PyArray_TYPE(xa) or cnp.PyArray_NDIM(ra) != nd
            or not cnp.PyArray_ISCARRAY_RO(ra) or not cnp.PyArray_ISNOTSWAPPED(ra)):
        return False
    for d in range(nd):
        if cnp.PyArray_DIM(ra, d) != cnp.PyArray_DIM(xa, d):
            return False
    return True


cdef inline void *_data(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a) if a is not None else NULL


cdef inline tuple _stat_arrays(Py_ssize_t k, int nd, cnp.npy_intp *dims):
    """k new float64 arrays of shape dims, as a tuple: a context unpacks a tuple of arrays in
    a few ns where the rows of one (k, ...) array cost a view each (0.5 us a small call)."""
    return tuple([cnp.PyArray_EMPTY(nd, dims, cnp.NPY_DOUBLE, 0) for _ in range(k)])


cdef inline double *_ptr(object a):
    return <double *>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline bint _same(object a, cnp.ndarray xa, bint writable):
    """``a`` is an aligned C-contiguous native-order ndarray of x's type and shape (writable
    when asked)."""
    return (a is not None and _like(a, xa)
            and (not writable or cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a)))


cdef inline bint _apart(cnp.ndarray a, object b):
    """``b`` is None, or an ndarray whose bytes do not overlap a's (both contiguous)."""
    if b is None:
        return True
    cdef char *p = <char *>cnp.PyArray_DATA(a)
    cdef char *q = <char *>cnp.PyArray_DATA(<cnp.ndarray>b)
    return (p + cnp.PyArray_NBYTES(a) <= q
            or q + cnp.PyArray_NBYTES(<cnp.ndarray>b) <= p)


cdef inline object _output(object out, cnp.ndarray xa, Py_ssize_t max_bytes, object r):
    """An entry's output, laid out as x: ``out`` when given (a layer's recycled memory, or a
    caller's dx: writable, and apart from x and ``r``), whatever its size; else a new array
    when x holds fewer than ``max_bytes`` bytes (a layer's larger outputs are recycled);
    else None (the entry declines)."""
    if out is not None:
        return out if (_same(out, xa, True) and _apart(<cnp.ndarray>out, xa)
                       and _apart(<cnp.ndarray>out, r)) else None
    if cnp.PyArray_NBYTES(xa) >= max_bytes:
        return None
    return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa), cnp.PyArray_TYPE(xa),
                             0)


cdef inline Py_ssize_t _inner(cnp.ndarray xa):
    """The values per (sample, channel) of an (N, C, *) array."""
    cdef Py_ssize_t inner = 1
    cdef int d
    for d in range(2, cnp.PyArray_NDIM(xa)):
        inner *= cnp.PyArray_DIM(xa, d)
    return inner


cdef inline bint _train_args(object x, int kind, long long ranks, Py_ssize_t C,
                             object weight, object bias, object running_mean,
                             object running_var, object counter):
    """A batch-norm training call's arguments as its entries take them (bn_forward_call,
    sync_train_begin): ``x`` an aligned C-contiguous native-order ndarray (N, C, *) of
    ``kind`` (float32 or float64), of a rank whose bit is set in ``ranks``, C > 0;
    ``weight``, ``bias``, ``running_mean``, ``running_var`` None or contiguous vectors of C
    values of that type (the running ones writable); ``counter`` None or a writable 0-d
    int64."""
    if not cnp.PyArray_CheckExact(x) or (kind != cnp.NPY_FLOAT and kind != cnp.NPY_DOUBLE):
        return False
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(xa)
    if (cnp.PyArray_TYPE(xa) != kind or nd < 2 or nd > 62 or not (ranks >> nd) & 1
            or cnp.PyArray_DIM(xa, 1) != C or C == 0 or not cnp.PyArray_ISCARRAY_RO(xa)
            or not cnp.PyArray_ISNOTSWAPPED(xa)):
        return False
    if not (_vector(weight, kind, C, False) and _vector(bias, kind, C, False)
            and _vector(running_mean, kind, C, True) and _vector(running_var, kind, C, True)):
        return False
    return counter is None or (cnp.PyArray_CheckExact(counter)
                               and cnp.PyArray_TYPE(<cnp.ndarray>counter) == cnp.NPY_INT64
                               and cnp.PyArray_NDIM(<cnp.ndarray>counter) == 0
                               and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>counter))


def bn_forward_call(object x, int kind, long long ranks, Py_ssize_t C, object weight,
                    object bias, object running_mean, object running_var, object counter,
                    bint training, double eps, double factor, object residual, int act,
                    double slope, double least_invstd, object out, Py_ssize_t max_bytes,
                    int n_threads):
    """Batch norm's forward for a call checked in C: ``x`` an aligned C-contiguous
    native-order ndarray (N, C, *) of ``kind`` (float32 or float64), of a rank whose bit
    is set in ``ranks``; the output ``out`` or a new array (_output: x of fewer than
    ``max_bytes`` bytes); ``weight``, ``bias``, ``running_mean``, ``running_var`` None or
    contiguous vectors of C values of that type (the running ones writable); ``counter``
    None or a writable 0-d int64; a fused block's ``residual`` (None, or an array of x's
    type, shape and layout) and activation ``act`` (its ``slope``).

    ``training``: more than one value per channel, normalized with the batch's statistics;
    returns ``(y, stats)``, stats the float64 (mean, m2, invstd), C values each, with the
    running statistics moved by ``factor`` and the counter incremented. Otherwise (eval)
    at least one value per channel and both running statistics, which it normalizes with
    (``counter`` and ``factor`` unused); stats ``(mean, None, invstd)`` as bn_forward_eval
    writes them. None, having written nothing, where any of that does not hold or a
    training call's least invstd is below ``least_invstd`` (float32 data too wide: the
    checked path computes it in float64)."""
    if not _train_args(x, kind, ranks, C, weight, bias, running_mean, running_var, counter):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef Py_ssize_t N = cnp.PyArray_DIM(xa, 0), inner = _inner(xa)
    if N * inner <= <Py_ssize_t>training or not _like(residual, xa):
        return None
    if not training and (running_mean is None or running_var is None):
        return None
    y = _output(out, xa, max_bytes, residual)
    if y is None:
        return None
    cdef cnp.npy_intp sdims[1]
    sdims[0] = C
    cdef tuple stats = _stat_arrays(3 if training else 2, 1, sdims)
    cdef double *mean = _ptr(stats[0])
    cdef double *m2 = _ptr(stats[1])
    cdef double *inv = _ptr(stats[len(stats) - 1])  # wraparound is off: no [-1]
    cdef void *coef = malloc(4 * C * sizeof(double))
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *yp = cnp.PyArray_DATA(<cnp.ndarray>y)
    cdef void *wp = _data(weight)
    cdef void *bp = _data(bias)
    cdef void *rp = _data(residual)
    cdef void *mp = _data(running_mean)
    cdef void *vp = _data(running_var)
    cdef int err = 0
    if coef == NULL:
        raise MemoryError()
    with nogil:
        if not training and kind == cnp.NPY_FLOAT:
            _forward_eval(<const float *>xp, <float *>yp, N, C, inner, <const float *>mp,
                          <const float *>vp, eps, <const float *>wp, <const float *>bp, mean,
                          inv, <float *>coef, n_threads, <const float *>rp, act, slope)
        elif not training:
            _forward_eval(<const double *>xp, <double *>yp, N, C, inner, <const double *>mp,
                          <const double *>vp, eps, <const double *>wp, <const double *>bp,
                          mean, inv, <double *>coef, n_threads, <const double *>rp, act,
                          slope)
        elif kind == cnp.NPY_FLOAT:
            err = _forward(<const float *>xp, <float *>yp, N, C, inner, 1, eps,
                           <const float *>wp, <const float *>bp, mean, m2, inv,
                           <float *>coef, n_threads, <const float *>rp, act, slope)
        else:
            err = _forward(<const double *>xp, <double *>yp, N, C, inner, 1, eps,
                           <const double *>wp, <const double *>bp, mean, m2, inv,
                           <double *>coef, n_threads, <const double *>rp, act, slope)
    free(coef)
    if err:
        raise MemoryError()
    if not training:
        return y, (stats[0], None, stats[1])
    if kind == cnp.NPY_FLOAT and _least_positive(inv, C) < least_invstd:
        return None
    if kind == cnp.NPY_FLOAT:
        _move_running(<float *>mp, 1, <float *>vp, 1, mean, m2, C, <double>(N * inner) - 1.0,
                      factor)
    else:
        _move_running(<double *>mp, 1, <double *>vp, 1, mean, m2, C, <double>(N * inner) - 1.0,
                      factor)
    if counter is not None:
        (<long long *>cnp.PyArray_DATA(<cnp.ndarray>counter))[0] += 1
    return y, stats


def bn_backward_call(object x, object dy, object mean, object invstd, object weight,
                     bint training, bint need_sums, object out, Py_ssize_t max_bytes,
                     int n_threads):
    """The backward of a bn_forward_call forward: ``x`` that forward's input, ``dy`` an array
    of its shape, dtype and C-contiguous layout, ``mean`` and ``invstd`` its float64
    statistics (contiguous), ``weight`` None or its contiguous weight; dx into ``out`` or a
    new array (_output). Returns ``(dx, sum_dy,
    sum_dy_xmu)`` as bn_backward computes them, or None where any of that does not hold."""
    if not (cnp.PyArray_CheckExact(x) and cnp.PyArray_CheckExact(dy)):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int kind = cnp.PyArray_TYPE(xa), nd = cnp.PyArray_NDIM(xa)
    if ((kind != cnp.NPY_FLOAT and kind != cnp.NPY_DOUBLE) or nd < 2 or not _like(x, xa)
            or not _like(dy, xa)):
        return None
    cdef Py_ssize_t N = cnp.PyArray_DIM(xa, 0), C = cnp.PyArray_DIM(xa, 1), inner = _inner(xa)
    if N * inner == 0 or not (_vector(mean, cnp.NPY_DOUBLE, C, False)
                              and _vector(invstd, cnp.NPY_DOUBLE, C, False)
                              and mean is not None and invstd is not None
                              and _vector(weight, kind, C, False)):
        return None
    dx = _output(out, xa, max_bytes, dy)
    if dx is None:
        return None
    cdef cnp.npy_intp sdims[1]
    sdims[0] = C
    cdef cnp.ndarray s1 = cnp.PyArray_ZEROS(1, sdims, cnp.NPY_DOUBLE, 0)
    cdef cnp.ndarray s2 = cnp.PyArray_ZEROS(1, sdims, cnp.NPY_DOUBLE, 0)
    cdef void *coef = malloc(5 * C * sizeof(double))
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *gp = cnp.PyArray_DATA(<cnp.ndarray>dy)
    cdef void *dp = cnp.PyArray_DATA(<cnp.ndarray>dx)
    cdef void *wp = _data(weight)
    cdef const double *mp = <const double *>cnp.PyArray_DATA(<cnp.ndarray>mean)
    cdef const double *ip = <const double *>cnp.PyArray_DATA(<cnp.ndarray>invstd)
    cdef double *p1 = <double *>cnp.PyArray_DATA(s1)
    cdef double *p2 = <double *>cnp.PyArray_DATA(s2)
    cdef int err = 0
    if coef == NULL:
        raise MemoryError()
    with nogil:
        if kind == cnp.NPY_FLOAT:
            err = _backward(<const float *>xp, <const float *>gp, <float *>dp, N, C, inner, 1,
                            training, need_sums, mp, ip, <const float *>wp, p1, p2, <float *>coef,
                            n_threads, NULL)
        else:
            err = _backward(<const double *>xp, <const double *>gp, <double *>dp, N, C, inner,
                            1, training, need_sums, mp, ip, <const double *>wp, p1, p2,
                            <double *>coef, n_threads, NULL)
    free(coef)
    if err:
        raise MemoryError()
    return dx, s1, s2


def row_call(object x, int kind, Py_ssize_t L, object weight, object bias, double eps,
             bint rms, double least_invstd, object out, Py_ssize_t max_bytes, int n_threads):
    """LayerNorm's (``rms`` False) or RMSNorm's forward for a call checked in C, over x's
    last axis: ``x`` an aligned C-contiguous native-order ndarray of ``kind`` (float32 or
    float64) whose last axis holds ``L`` > 0 values, at least one row; ``weight``, ``bias``
    None or contiguous vectors of L values of that type; the output ``out`` or a new array
    (_output: x of fewer than ``max_bytes`` bytes). Returns
    ``(y, stats)``, stats the float64 (mean, invstd) of row_forward, a value per row; or None,
    having written nothing, where any of that does not hold or the least invstd is below
    ``least_invstd`` (float32 data too wide: the checked path computes it in float64)."""
    if not cnp.PyArray_CheckExact(x) or (kind != cnp.NPY_FLOAT and kind != cnp.NPY_DOUBLE):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(xa)
    if (cnp.PyArray_TYPE(xa) != kind or nd < 1 or L <= 0 or cnp.PyArray_DIM(xa, nd - 1) != L
            or not cnp.PyArray_ISCARRAY_RO(xa) or not cnp.PyArray_ISNOTSWAPPED(xa)):
        return None
    cdef Py_ssize_t R = cnp.PyArray_SIZE(xa) // L
    if R == 0 or not (_vector(weight, kind, L, False) and _vector(bias, kind, L, False)):
        return None
    y = _output(out, xa, max_bytes, None)
    if y is None:
        return None
    cdef cnp.npy_intp sdims[1]
    sdims[0] = R
    cdef tuple stats = _stat_arrays(2, 1, sdims)
    cdef double *mean = _ptr(stats[0])
    cdef double *inv = _ptr(stats[1])
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *yp = cnp.PyArray_DATA(<cnp.ndarray>y)
    cdef void *wp = _data(weight)
    cdef void *bp = _data(bias)
    with nogil:
        if kind == cnp.NPY_FLOAT:
            _rows_forward(<const float *>xp, <float *>yp, R, L, eps, rms, <const float *>wp,
                          <const float *>bp, mean, inv, n_threads)
        else:
            _rows_forward(<const double *>xp, <double *>yp, R, L, eps, rms, <const double *>wp,
                          <const double *>bp, mean, inv, n_threads)
    if kind == cnp.NPY_FLOAT and _least_positive(inv, R) < least_invstd:
        return None
    return y, stats


def row_backward_call(object x, object dy, object mean, object invstd, object weight, bint rms,
                      bint param_grads, object out, Py_ssize_t max_bytes, int n_threads):
    """The backward of a row_call forward: ``x`` that forward's input, ``dy`` an array of its
    shape, dtype and C-contiguous layout, ``mean`` and ``invstd`` its float64 statistics (a
    value per row), ``weight`` None or its contiguous weight (L values of x's type); dx into
    ``out`` or a new array (_output). Returns
    ``(dx, grad_weight, grad_bias)`` as row_backward computes them (its chunks of rows shorter
    than LONG_ROW: the same bits; float64 sums, zeros without
    ``param_grads``), or None where any of that does not hold."""
    if not (cnp.PyArray_CheckExact(x) and cnp.PyArray_CheckExact(dy)):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int kind = cnp.PyArray_TYPE(xa), nd = cnp.PyArray_NDIM(xa)
    if ((kind != cnp.NPY_FLOAT and kind != cnp.NPY_DOUBLE) or nd < 1 or not _like(x, xa)
            or not _like(dy, xa)):
        return None
    cdef Py_ssize_t L = cnp.PyArray_DIM(xa, nd - 1), R = cnp.PyArray_SIZE(xa) // L if L else 0
    if R == 0 or L >= LONG_ROW or not (
            _vector(mean, cnp.NPY_DOUBLE, R, False) and mean is not None
            and _vector(invstd, cnp.NPY_DOUBLE, R, False) and invstd is not None
            and _vector(weight, kind, L, False)):
        return None  # rows of LONG_ROW and more: row_backward's column blocks
    dx = _output(out, xa, max_bytes, dy)
    if dx is None:
        return None
    cdef cnp.npy_intp sdims[1]
    sdims[0] = L
    cdef tuple grads = (cnp.PyArray_ZEROS(1, sdims, cnp.NPY_DOUBLE, 0),
                        cnp.PyArray_ZEROS(1, sdims, cnp.NPY_DOUBLE, 0))
    cdef double *gw = _ptr(grads[0])
    cdef double *gb = _ptr(grads[1])
    cdef const double *mp = <const double *>cnp.PyArray_DATA(<cnp.ndarray>mean)
    cdef const double *ip = <const double *>cnp.PyArray_DATA(<cnp.ndarray>invstd)
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *gp = cnp.PyArray_DATA(<cnp.ndarray>dy)
    cdef void *dp = cnp.PyArray_DATA(<cnp.ndarray>dx)
    cdef void *wp = _data(weight)
    cdef int err
    with nogil:  # row_backward's chunks of short rows
        if kind == cnp.NPY_FLOAT:
            err = _short_rows_backward(<const float *>xp, <const float *>gp, <float *>dp, R, L,
                                       mp, ip, <const float *>wp, rms, param_grads, gw, gb,
                                       n_threads)
        else:
            err = _short_rows_backward(<const double *>xp, <const double *>gp, <double *>dp, R,
                                       L, mp, ip, <const double *>wp, rms, param_grads, gw, gb,
                                       n_threads)
    if err:
        raise MemoryError()
    return dx, grads[0], grads[1]


def group_call(object x, int kind, Py_ssize_t G, Py_ssize_t C, object weight, object bias,
               double eps, Py_ssize_t min_inner, object residual, int act, double slope,
               double least_invstd, object out, Py_ssize_t max_bytes, int n_threads):
    """GroupNorm's forward (InstanceNorm's with G = C) for a call checked in C: ``x`` an
    aligned C-contiguous native-order ndarray (N, C, *) of ``kind`` (float32 or float64),
    N >= 1, C > 0 channels in G groups, spatial axes of at least ``min_inner`` values
    (instance norm's statistics need two); ``weight``, ``bias`` None or contiguous vectors of
    C values of that type; a fused block's ``residual`` and ``act`` as bn_forward_call's; the
    output ``out`` or a new array (_output: x of fewer than ``max_bytes`` bytes). Returns
    ``(y, stats)``, stats the float64 (mean, m2, invstd), (N, G) each, of group_forward; or
    None, having written nothing (but out), where any of that does not hold or the
    least invstd is below ``least_invstd``."""
    if not cnp.PyArray_CheckExact(x) or (kind != cnp.NPY_FLOAT and kind != cnp.NPY_DOUBLE):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(xa)
    if (cnp.PyArray_TYPE(xa) != kind or nd < 2 or C <= 0 or G <= 0 or C % G
            or cnp.PyArray_DIM(xa, 1) != C or not cnp.PyArray_ISCARRAY_RO(xa)
            or not cnp.PyArray_ISNOTSWAPPED(xa)):
        return None
    cdef Py_ssize_t N = cnp.PyArray_DIM(xa, 0), inner = _inner(xa)
    if (N == 0 or inner == 0 or inner < min_inner or not _like(residual, xa)
            or not (_vector(weight, kind, C, False) and _vector(bias, kind, C, False))):
        return None
    y = _output(out, xa, max_bytes, residual)
    if y is None:
        return None
    cdef cnp.npy_intp sdims[2]
    sdims[0], sdims[1] = N, G
    cdef tuple stats = _stat_arrays(3, 2, sdims)
    cdef double *mean = _ptr(stats[0])
    cdef double *m2 = _ptr(stats[1])
    cdef double *inv = _ptr(stats[2])
    cdef void *coef = malloc(4 * N * C * sizeof(double))
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *yp = cnp.PyArray_DATA(<cnp.ndarray>y)
    cdef void *wp = _data(weight)
    cdef void *bp = _data(bias)
    cdef void *rp = _data(residual)
    cdef int err = 0
    if coef == NULL:
        raise MemoryError()
    with nogil:
        if kind == cnp.NPY_FLOAT:
            err = _groups_forward(<const float *>xp, <float *>yp, N, 1, C, inner, G, eps,
                                  <const float *>wp, <const float *>bp, mean, m2, inv,
                                  <float *>coef, <const float *>rp, act,
                                  slope, n_threads)
        else:
            err = _groups_forward(<const double *>xp, <double *>yp, N, 1, C, inner, G, eps,
                                  <const double *>wp, <const double *>bp, mean, m2, inv,
                                  <double *>coef, <const double *>rp, act,
                                  slope, n_threads)
    free(coef)
    if err:
        raise MemoryError()
    if kind == cnp.NPY_FLOAT and _least_positive(inv, N * G) < least_invstd:
        return None
    return y, stats
