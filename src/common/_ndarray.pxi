# The NumPy C-API checks the small-call entries share (src/nn/calls.pxi and
# src/data/data_calls.pxi): they take an argument only as an aligned, contiguous, native-order
# ndarray of the expected type and length.
cimport numpy as cnp

cnp.import_array()


cdef inline bint _vector(object a, int kind, Py_ssize_t n, bint writable):
    """``a`` is None, or an aligned contiguous 1-D ndarray of ``kind`` and ``n`` values
    (writable when asked)."""
    if a is None:
        return True
    if not cnp.PyArray_CheckExact(a):
        return False
    cdef cnp.ndarray v = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(v) == kind and cnp.PyArray_NDIM(v) == 1
            and cnp.PyArray_DIM(v, 0) == n and cnp.PyArray_ISCARRAY_RO(v)
            and cnp.PyArray_ISNOTSWAPPED(v) and (not writable or cnp.PyArray_ISWRITEABLE(v)))
