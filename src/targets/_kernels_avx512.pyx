# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""cnorm kernels built for the avx512 SIMD target (see kernels.pxi)."""
include "kernels.pxi"
