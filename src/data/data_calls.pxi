# Small calls (issue 24) of the data kernels, by the rule of src/nn/calls.pxi: the arrays are
# checked in C through the NumPy C-API and the same cdef kernels run on their data pointers, so
# the results are the bits of the checked path; for anything else they return None having
# written nothing, and the caller takes the checked path, which raises with its messages.
include "_ndarray.pxi"

cdef enum:
    CALL_MAX_C = 64  # channels a small call takes (its coefficients live on the stack)


cdef bint _floats(object v, Py_ssize_t C, double *out):
    """``v`` a float, or a tuple or list of C floats, or a contiguous float64 vector of C
    values, into ``out``; False for anything else (ints, NumPy scalars: the checked path)."""
    cdef Py_ssize_t c
    cdef cnp.ndarray a
    if type(v) is float:
        for c in range(C):
            out[c] = <double>v
        return True
    if type(v) is tuple or type(v) is list:
        if len(v) != C:
            return False
        for c in range(C):
            if type(v[c]) is not float:
                return False
            out[c] = <double>v[c]
        return True
    if not cnp.PyArray_CheckExact(v):
        return False
    a = <cnp.ndarray>v
    if (cnp.PyArray_TYPE(a) != cnp.NPY_DOUBLE or cnp.PyArray_NDIM(a) != 1
            or cnp.PyArray_DIM(a, 0) != C or not cnp.PyArray_ISCARRAY_RO(a)
            or not cnp.PyArray_ISNOTSWAPPED(a)):
        return False
    memcpy(out, cnp.PyArray_DATA(a), C * sizeof(double))
    return True


cdef int _map_call(int in_kind, View *xv, View *yv, const double *m, const double *a,
                   const double *b, int n_threads) except -2:
    """The small calls' affine map of xv into yv with the checked path's coefficient lanes of
    (m, a, b): float64 output for float64 input (K_F64), else float32 (K_U8, K_F32). Returns
    _affine_to's code (1: a non-finite value where the map refuses them)."""
    cdef Py_ssize_t lanes = _lane_width(xv.C, xv.inter), groups = 1 if xv.inter else xv.C
    cdef void *coef = malloc(4 * lanes * groups * sizeof(double))
    cdef int err
    if coef == NULL:
        raise MemoryError()
    if in_kind == K_F64:
        _coef_lanes(<double *>coef, lanes, xv.C, xv.inter, m, a, b)
    else:
        _coef_lanes(<float *>coef, lanes, xv.C, xv.inter, m, a, b)
    with nogil:
        if in_kind == K_U8:
            err = _affine_to(K_F32, xv, yv, NULL, coef, n_threads, <uint8_t *>NULL)
        elif in_kind == K_F64:
            err = _affine_to(K_F64, xv, yv, NULL, coef, n_threads, <double *>NULL)
        else:
            err = _affine_to(K_F32, xv, yv, NULL, coef, n_threads, <float *>NULL)
    free(coef)
    if err == -1:
        raise MemoryError()
    return err


def images_call(object images, object mean, object std, object scale, object out,
                int n_threads):
    """normalize_images for the common call: ``images`` an aligned C-contiguous native-order
    ndarray of uint8 or float32, (N, H, W, C) or one (H, W, C) image with 1 to CALL_MAX_C
    channels and at least one pixel; ``mean`` and ``std`` as ``_floats`` takes them, no std
    zero; ``scale`` None or a non-zero float; ``out`` None or an aligned writable C-contiguous
    float32 ndarray of the result's shape apart from the images' memory. Returns the float32
    (N, C, H, W) (or (C, H, W)) result (``out``, when given), or None, having written
    nothing, where any of that does not hold."""
    if not cnp.PyArray_CheckExact(images):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>images
    cdef int nd = cnp.PyArray_NDIM(xa), kind
    cdef double s
    if cnp.PyArray_TYPE(xa) == cnp.NPY_UBYTE:
        kind, s = K_U8, 1.0 / 255.0
    elif cnp.PyArray_TYPE(xa) == cnp.NPY_FLOAT:
        kind, s = K_F32, 1.0
    else:
        return None
    if ((nd != 3 and nd != 4) or not cnp.PyArray_ISCARRAY_RO(xa)
            or not cnp.PyArray_ISNOTSWAPPED(xa)):
        return None
    cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(xa)
    cdef Py_ssize_t N = dims[0] if nd == 4 else 1, H = dims[nd - 3], W = dims[nd - 2]
    cdef Py_ssize_t C = dims[nd - 1], isz = cnp.PyArray_ITEMSIZE(xa), c
    if C < 1 or C > CALL_MAX_C or N * H * W == 0:
        return None
    if scale is not None:
        if type(scale) is not float or <double>scale == 0.0:
            return None
        s = <double>scale
    cdef double m[CALL_MAX_C]
    cdef double a[CALL_MAX_C]
    cdef double b[CALL_MAX_C]
    if not (_floats(mean, C, m) and _floats(std, C, a)):
        return None
    for c in range(C):  # the checked path's coefficients: mean / scale, scale / std, 0
        if a[c] == 0.0:
            return None
        m[c] = m[c] / s
        a[c] = s / a[c]
        b[c] = 0.0
    cdef cnp.npy_intp ydims[4]
    if nd == 4:
        ydims[0], ydims[1], ydims[2], ydims[3] = N, C, H, W
    else:
        ydims[0], ydims[1], ydims[2] = C, H, W
    cdef cnp.ndarray y
    cdef char *x0 = <char *>cnp.PyArray_DATA(xa)
    cdef char *y0
    if out is None:
        y = cnp.PyArray_EMPTY(nd, ydims, cnp.NPY_FLOAT, 0)
    else:
        if not cnp.PyArray_CheckExact(out):
            return None
        y = <cnp.ndarray>out
        if (cnp.PyArray_TYPE(y) != cnp.NPY_FLOAT or cnp.PyArray_NDIM(y) != nd
                or not cnp.PyArray_ISCARRAY(y) or not cnp.PyArray_ISNOTSWAPPED(y)):
            return None
        for c in range(nd):
            if cnp.PyArray_DIM(y, c) != ydims[c]:
                return None
        y0 = <char *>cnp.PyArray_DATA(y)  # overlapping memory: the checked path copies first
        if y0 < x0 + cnp.PyArray_NBYTES(xa) and x0 < y0 + cnp.PyArray_NBYTES(y):
            return None
    # both as canonical views over (N, H, W): NHWC input, the NCHW output seen as NHWC
    cdef Py_ssize_t shape[3]
    cdef Py_ssize_t xst[3]
    cdef Py_ssize_t yst[3]
    shape[0], shape[1], shape[2] = N, H, W
    xst[0], xst[1], xst[2] = H * W * C * isz, W * C * isz, C * isz
    yst[0], yst[1], yst[2] = C * H * W * 4, W * 4, 4
    cdef View xv, yv
    _view_at(&xv, x0, 2, shape, xst, C, isz)
    _view_at(&yv, <char *>cnp.PyArray_DATA(y), 2, shape, yst, C, H * W * 4)
    _map_call(kind, &xv, &yv, m, a, b, n_threads)
    return y


def moments_call(object x, object channel_axis, Py_ssize_t C, double count, object mean,
                 object m2, object mn, object mx, int n_threads):
    """Moments.update for the common call on statistics that hold values: ``x`` an aligned
    C-contiguous native-order ndarray of uint8, float32 or float64 with at least one value,
    its channels on the last axis (``channel_axis`` that axis as an int; None: the whole array
    is one channel), C of them (1 to CALL_MAX_C); ``mean``, ``m2``, ``mn``, ``mx`` the
    statistics' own writable float64 vectors over ``count`` > 0 values. Merges the batch into them
    in place, as ``Moments._add`` does (the chunk plan of the checked path's canonical view,
    Chan's merge of merge_stats, NumPy's minimum and maximum), and returns the batch's count;
    or None, having written nothing, where any of that does not hold."""
    if count <= 0.0 or not cnp.PyArray_CheckExact(x):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(xa), kind = cnp.PyArray_TYPE(xa)
    if kind != cnp.NPY_UBYTE and kind != cnp.NPY_FLOAT and kind != cnp.NPY_DOUBLE:
        return None
    if not cnp.PyArray_ISCARRAY_RO(xa) or not cnp.PyArray_ISNOTSWAPPED(xa):
        return None
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(xa), axis, n, c
    if channel_axis is not None:
        if type(channel_axis) is not int or nd == 0:
            return None
        axis = <Py_ssize_t>channel_axis
        if axis != nd - 1 and axis != -1:
            return None
        if cnp.PyArray_DIM(xa, nd - 1) != C:
            return None
    elif C != 1:
        return None
    n = cnp.PyArray_SIZE(xa) // C if C > 0 else 0
    if C < 1 or C > CALL_MAX_C or n == 0:
        return None
    if (mean is None or m2 is None or mn is None or mx is None
            or not (_vector(mean, cnp.NPY_DOUBLE, C, True) and _vector(m2, cnp.NPY_DOUBLE, C, True)
                    and _vector(mn, cnp.NPY_DOUBLE, C, True)
                    and _vector(mx, cnp.NPY_DOUBLE, C, True))):
        return None
    # the checked path's canonical view: the pixels merged into one run (stride C values; one
    # pixel: one value), the channels adjacent
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]
    shape[0], strides[0] = n, C * isz if n > 1 else isz
    cdef View v
    _view_at(&v, <char *>cnp.PyArray_DATA(xa), 0, shape, strides, C, isz)
    cdef double cnt[2]
    cdef double pm[2 * CALL_MAX_C]
    cdef double pm2[2 * CALL_MAX_C]
    cdef double bmn[CALL_MAX_C]
    cdef double bmx[CALL_MAX_C]
    cdef double *sm = <double *>cnp.PyArray_DATA(<cnp.ndarray>mean)
    cdef double *sm2 = <double *>cnp.PyArray_DATA(<cnp.ndarray>m2)
    cdef double *smn = <double *>cnp.PyArray_DATA(<cnp.ndarray>mn)
    cdef double *smx = <double *>cnp.PyArray_DATA(<cnp.ndarray>mx)
    cdef int err
    with nogil:  # the batch's statistics beside the state's, then merged in that order
        if kind == cnp.NPY_UBYTE:
            err = _data_moments(&v, pm + C, pm2 + C, bmn, bmx, n_threads, <uint8_t *>NULL)
        elif kind == cnp.NPY_FLOAT:
            err = _data_moments(&v, pm + C, pm2 + C, bmn, bmx, n_threads, <float *>NULL)
        else:
            err = _data_moments(&v, pm + C, pm2 + C, bmn, bmx, n_threads, <double *>NULL)
    if err == -1:
        raise MemoryError()
    cnt[0], cnt[1] = count, <double>n
    memcpy(pm, sm, C * sizeof(double))
    memcpy(pm2, sm2, C * sizeof(double))
    _merge(2, C, cnt, pm, pm2, sm, sm2)
    for c in range(C):  # NumPy's minimum and maximum: NaN wins, a tie gives the second
        smn[c] = smn[c] if (smn[c] < bmn[c] or smn[c] != smn[c]) else bmn[c]
        smx[c] = smx[c] if (smx[c] > bmx[c] or smx[c] != smx[c]) else bmx[c]
    return n


def standardize_call(object X, object channel_axis, Py_ssize_t C, object mean, object scale,
                     int n_threads):
    """Standardizer.transform for the common call into a new array: ``X`` an aligned
    C-contiguous native-order float32 or float64 ndarray with at least one value, its C
    features (1 to CALL_MAX_C) on the last axis (``channel_axis`` that axis as an int; None:
    one feature); ``mean`` and ``scale`` None (0 and 1) or float64 vectors of C values.
    Returns ``(X - mean) * (1 / scale)`` in X's dtype, on the checked path's canonical view;
    ValueError as the checked path for NaN or infinity in X; None, having written nothing,
    for anything else."""
    if not cnp.PyArray_CheckExact(X):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>X
    cdef int nd = cnp.PyArray_NDIM(xa), kind = cnp.PyArray_TYPE(xa)
    if (nd == 0 or (kind != cnp.NPY_FLOAT and kind != cnp.NPY_DOUBLE)
            or not cnp.PyArray_ISCARRAY_RO(xa) or not cnp.PyArray_ISNOTSWAPPED(xa)):
        return None
    cdef Py_ssize_t isz = cnp.PyArray_ITEMSIZE(xa), n, c
    if channel_axis is not None:
        if (type(channel_axis) is not int or cnp.PyArray_DIM(xa, nd - 1) != C
                or (<Py_ssize_t>channel_axis != nd - 1 and <Py_ssize_t>channel_axis != -1)):
            return None
    elif C != 1:
        return None
    if C < 1 or C > CALL_MAX_C:
        return None
    n = cnp.PyArray_SIZE(xa) // C
    cdef double m[CALL_MAX_C]
    cdef double a[CALL_MAX_C]
    cdef double b[CALL_MAX_C]
    if n == 0 or not ((mean is None or _floats(mean, C, m))
                      and (scale is None or _floats(scale, C, a))):
        return None
    for c in range(C):  # the checked path's coefficients: mean_ (or 0), 1 / scale_ (or 1), 0
        if mean is None:
            m[c] = 0.0
        a[c] = 1.0 / (a[c] if scale is not None else 1.0)
        b[c] = 0.0
    cdef cnp.ndarray y = cnp.PyArray_EMPTY(nd, cnp.PyArray_DIMS(xa), kind, 0)
    # the checked path's canonical view of both: the rows merged into one run (one row: one
    # value apart), the features adjacent
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]
    shape[0], strides[0] = n, C * isz if n > 1 else isz
    cdef View xv, yv
    _view_at(&xv, <char *>cnp.PyArray_DATA(xa), 0, shape, strides, C, isz)
    _view_at(&yv, <char *>cnp.PyArray_DATA(y), 0, shape, strides, C, isz)
    if _map_call(K_F64 if kind == cnp.NPY_DOUBLE else K_F32, &xv, &yv, m, a, b,
                 n_threads) == 1:
        raise ValueError("Input X contains NaN or infinity.")
    return y
