# Storage types of the norm kernels' data (x, y, dy, dx, residual): float32, float64, and the
# two 2-byte floats held as integer bits, f16_t (IEEE float16) and bf16_t (bfloat16: the top
# half of a float32). Distinct integer types, so that Cython's fused types and NumPy buffers
# tell them apart (cnorm/_core/layout.py passes uint16 / int16 views of float16 / bfloat16 data).
# Half data is computed in float32: the leaves that read or write data (_sums.pxi, _apply.pxi,
# act.pxi) convert HALF_TILE values at a time in L1, vectorized per SIMD target (cnorm_half.h), and
# run their float32 code on the tile. The lanes, chunks and formulas are those of float32 data,
# so a half result is the float32 kernels' result on x.astype(float32), rounded once.
from libc.stdint cimport int16_t, uint16_t


cdef extern from "cnorm_half.h" nogil:
    ctypedef struct cn_f16:
        uint16_t bits
    ctypedef struct cn_bf16:
        uint16_t bits
    float cn_f16_float(cn_f16 h)
    cn_f16 cn_float_f16(float x)
    float cn_bf16_float(cn_bf16 h)
    cn_bf16 cn_float_bf16(float x)
    void cn_f16_to_f32_n(const cn_f16 *src, float *dst, Py_ssize_t n)
    void cn_f32_to_f16_n(const float *src, cn_f16 *dst, Py_ssize_t n)
    void cn_bf16_to_f32_n(const cn_bf16 *src, float *dst, Py_ssize_t n)
    void cn_f32_to_bf16_n(const float *src, cn_bf16 *dst, Py_ssize_t n)

ctypedef uint16_t f16_t   # float16 bits
ctypedef int16_t bf16_t   # bfloat16 bits

ctypedef fused real:
    float
    double
    f16_t
    bf16_t

cdef enum:
    HALF_TILE = 256            # half values converted per step: a few KB of float tiles in L1


cdef inline double _d(real v) noexcept nogil:
    """A stored value in double (exact)."""
    if real is f16_t:
        return cn_f16_float((<cn_f16 *>&v)[0])
    elif real is bf16_t:
        return cn_bf16_float((<cn_bf16 *>&v)[0])
    else:
        return v


cdef inline void _put_value(real *dst, double v) noexcept nogil:
    """Store v, rounded to nearest even (halves: through float)."""
    if real is f16_t:
        (<cn_f16 *>dst)[0] = cn_float_f16(<float>v)
    elif real is bf16_t:
        (<cn_bf16 *>dst)[0] = cn_float_bf16(<float>v)
    else:
        dst[0] = <real>v


cdef inline void _tile_in(const real *src, floating *dst, Py_ssize_t n) noexcept nogil:
    """n stored values into a tile of the compute type."""
    cdef Py_ssize_t i
    if real is f16_t and floating is float:
        cn_f16_to_f32_n(<const cn_f16 *>src, dst, n)
    elif real is bf16_t and floating is float:
        cn_bf16_to_f32_n(<const cn_bf16 *>src, dst, n)
    else:
        for i in range(n):
            dst[i] = <floating>_d(src[i])


cdef inline void _tile_out(const floating *src, real *dst, Py_ssize_t n) noexcept nogil:
    """A tile of the compute type into n stored values, rounded to nearest even."""
    cdef Py_ssize_t i
    if real is f16_t and floating is float:
        cn_f32_to_f16_n(src, <cn_f16 *>dst, n)
    elif real is bf16_t and floating is float:
        cn_f32_to_bf16_n(src, <cn_bf16 *>dst, n)
    else:
        for i in range(n):
            _put_value(dst + i, src[i])


# The entry points are fused on the storage and the compute type: float64 data computes in
# float64, every other type in float32 (cnorm/_core/backend.py calls the matching pair). The other
# pairs raise this, and their code is pruned when compiling.
WRONG_PAIR = "float64 data computes in float64, float32 and half data in float32"
