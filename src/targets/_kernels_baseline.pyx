# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""cnorm kernels built for the baseline SIMD target (see kernels.pxi)."""
include "kernels.pxi"
