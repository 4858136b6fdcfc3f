# Small calls (issue 24) of the data kernels, by the rule of src/nn/calls.pxi: the arrays are
# checked in C through the NumPy C-API and the same cdef kernels run on their data pointers, so
# the results are the bits of the checked path; for anything else they return None having
# written nothing, and the caller takes the checked path, which raises with its messages.
cimport numpy as cnp

cnp.import_array()

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


def images_call(object images, object mean, object std, object scale, int n_threads):
    """normalize_images for the common call: ``images`` an aligned C-contiguous native-order
    ndarray of uint8 or float32, (N, H, W, C) or one (H, W, C) image with 1 to CALL_MAX_C
    channels and at least one pixel; ``mean`` and ``std`` as ``_floats`` takes them, no std
    zero; ``scale`` None or a non-zero float. Returns the float32 (N, C, H, W) (or (C, H, W))
    result, or None where any of that does not hold."""
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
    cdef cnp.ndarray y = cnp.PyArray_EMPTY(nd, ydims, cnp.NPY_FLOAT, 0)
    # both as canonical views over (N, H, W): NHWC input, the NCHW output seen as NHWC
    cdef Py_ssize_t shape[3]
    cdef Py_ssize_t xst[3]
    cdef Py_ssize_t yst[3]
    shape[0], shape[1], shape[2] = N, H, W
    xst[0], xst[1], xst[2] = H * W * C * isz, W * C * isz, C * isz
    yst[0], yst[1], yst[2] = C * H * W * 4, W * 4, 4
    cdef View xv, yv
    _view_at(&xv, <char *>cnp.PyArray_DATA(xa), 2, shape, xst, C, isz)
    _view_at(&yv, <char *>cnp.PyArray_DATA(y), 2, shape, yst, C, H * W * 4)
    cdef Py_ssize_t lanes = _lane_width(C, xv.inter), groups = 1 if xv.inter else C
    cdef void *coef = malloc(4 * lanes * groups * sizeof(double))
    cdef int err
    if coef == NULL:
        raise MemoryError()
    _coef_lanes(<float *>coef, lanes, C, xv.inter, m, a, b)
    with nogil:
        if kind == K_U8:
            err = _affine_to(K_F32, &xv, &yv, NULL, coef, n_threads, <uint8_t *>NULL)
        else:
            err = _affine_to(K_F32, &xv, &yv, NULL, coef, n_threads, <float *>NULL)
    free(coef)
    if err == -1:
        raise MemoryError()
    return y
