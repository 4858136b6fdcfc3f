# The C-level names every kernel file uses, for the norm kernels (kernels.pxi) and the data
# kernels (data.pxi) alike.
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.float cimport DBL_MAX
from libc.math cimport INFINITY, M_SQRT1_2, NAN, erf, exp, sqrt
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy


cdef extern from "cnorm_exp.h" nogil:
    # exp without a libm call, so that the activation loops vectorize
    double cn_exp(double x)
    float cn_expf(float x)
