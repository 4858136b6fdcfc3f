# Element types of the data kernels (Moments, Standardizer, normalize_images): every real dtype
# a dataset comes in, read natively (no converted copy), and the output types. The kind codes
# are those of cnorm._data_view.KINDS.
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


# cn_f16, cn_bf16 and their conversions: _storage.pxi


def half_conversions(const uint16_t[::1] f16, const uint16_t[::1] bf16, const float[::1] x,
                     float[::1] f16_as_float, float[::1] bf16_as_float, uint16_t[::1] x_as_f16,
                     uint16_t[::1] x_as_bf16):
    """The run conversions of cnorm_half.h in this SIMD target (tests compare them with NumPy
    and ml_dtypes): half bits -> float, and float -> half bits."""
    with nogil:
        cn_f16_to_f32_n(<const cn_f16 *>&f16[0], &f16_as_float[0], f16.shape[0])
        cn_bf16_to_f32_n(<const cn_bf16 *>&bf16[0], &bf16_as_float[0], bf16.shape[0])
        cn_f32_to_f16_n(&x[0], <cn_f16 *>&x_as_f16[0], x.shape[0])
        cn_f32_to_bf16_n(&x[0], <cn_bf16 *>&x_as_bf16[0], x.shape[0])


ctypedef fused pixel_t:   # input elements
    uint8_t
    int8_t
    uint16_t
    int16_t
    uint32_t
    int32_t
    int64_t
    cn_f16
    cn_bf16
    float
    double

ctypedef fused out_t:     # output elements
    float
    double
    cn_f16
    cn_bf16

cdef enum:
    K_U8, K_I8, K_U16, K_I16, K_U32, K_I32, K_I64, K_F16, K_BF16, K_F32, K_F64
    MAX_DIMS = 32         # outer dimensions of a canonical view (NumPy's limit is 64: more
                          # than 32 non-unit dimensions do not collapse in any real array)


cdef inline double _dbl(pixel_t v) noexcept nogil:
    if pixel_t is cn_f16:
        return cn_f16_float(v)
    elif pixel_t is cn_bf16:
        return cn_bf16_float(v)
    else:
        return <double>v


cdef inline float _flt(pixel_t v) noexcept nogil:
    if pixel_t is cn_f16:
        return cn_f16_float(v)
    elif pixel_t is cn_bf16:
        return cn_bf16_float(v)
    else:
        return <float>v


cdef inline int32_t _small(pixel_t v) noexcept nogil:
    """An 8-bit value as int32 (other types never take the exact 8-bit path)."""
    if pixel_t is uint8_t or pixel_t is int8_t:
        return <int32_t>v
    else:
        return 0


cdef inline void _put(out_t *y, floating v) noexcept nogil:
    """Store one computed value (rounded to nearest even)."""
    if out_t is cn_f16:
        y[0] = cn_float_f16(<float>v)
    elif out_t is cn_bf16:
        y[0] = cn_float_bf16(<float>v)
    else:
        y[0] = <out_t>v


cdef struct View:
    # A canonical strided view: outer dimensions (memory order, outermost first), then a run of
    # L pixels (stride rs bytes), each pixel C channels (stride cs bytes). Strides may be
    # negative. ``inter``: the channels of a pixel are adjacent (cs < rs), as in NHWC or (N, C).
    char *base
    int nd
    Py_ssize_t shape[MAX_DIMS]
    Py_ssize_t stride[MAX_DIMS]
    Py_ssize_t rows
    Py_ssize_t L
    Py_ssize_t rs
    Py_ssize_t C
    Py_ssize_t cs
    bint inter


cdef int _view(View *v, Py_ssize_t addr, const Py_ssize_t[::1] shape,
               const Py_ssize_t[::1] strides, Py_ssize_t C, Py_ssize_t cs) except -1:
    """Fill a View from the outer shape and strides followed by the run's (last entry)."""
    cdef int nd = shape.shape[0] - 1
    if nd > MAX_DIMS or nd < 0:
        raise ValueError(f"a view with {nd} outer dimensions (at most {MAX_DIMS})")
    _view_at(v, <char *>addr, nd, &shape[0], &strides[0], C, cs)
    return 0


cdef void _view_at(View *v, char *base, int nd, const Py_ssize_t *shape,
                   const Py_ssize_t *strides, Py_ssize_t C, Py_ssize_t cs) noexcept:
    """_view on pointers: nd (at most MAX_DIMS) outer dimensions, then the run."""
    cdef int d
    v.base = base
    v.nd = nd
    v.rows = 1
    for d in range(nd):
        v.shape[d] = shape[d]
        v.stride[d] = strides[d]
        v.rows *= shape[d]
    v.L = shape[nd]
    v.rs = strides[nd]
    v.C = C
    v.cs = cs
    v.inter = C > 1 and abs(cs) < abs(v.rs)


cdef inline char *_row(const View *v, Py_ssize_t r) noexcept nogil:
    """Address of row r's first pixel (row-major over the outer dimensions)."""
    cdef Py_ssize_t off = 0, q
    cdef int d
    for d in range(v.nd - 1, -1, -1):
        q = r // v.shape[d]
        off += (r - q * v.shape[d]) * v.stride[d]
        r = q
    return v.base + off


cdef inline Py_ssize_t _lane_width(Py_ssize_t C, bint inter) noexcept nogil:
    """Lanes of the lane loops: a multiple of C when the channels interleave (lane l holds
    channel l % C), wide enough to vectorize."""
    if not inter:
        return LANES
    return C * LANES if C < LANES else C
