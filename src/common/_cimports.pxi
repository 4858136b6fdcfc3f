# The C-level names every kernel file uses, for the norm kernels (kernels.pxi) and the data
# kernels (data.pxi) alike.
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.float cimport DBL_MAX
from libc.math cimport INFINITY, M_SQRT1_2, NAN, erf, exp, sqrt
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy
