# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""cnorm data kernels built for the avx2 SIMD target (see data.pxi)."""
include "data.pxi"
