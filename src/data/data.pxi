# The data kernels of cnorm (Moments, Standardizer, normalize_images), included by one small .pyx
# per SIMD target (_data_baseline/_avx2/_avx512.pyx) as the norm kernels are (kernels.pxi), and
# sharing their constants, thread counts, summation and merge steps:
#   _data_types    element types and their conversions, the canonical strided View
#   data_moments   per-channel count, mean, M2, min, max of a View of any dtype
#   data_affine    per-channel affine maps between Views: dtype and layout change in one pass
#   data_calls     small calls: normalize_images, Moments.update, Standardizer.transform in C
import numpy as np

include "_cimports.pxi"
include "_config.pxi"
include "_storage.pxi"
include "_threads.pxi"
include "_chunks.pxi"
include "_sums.pxi"
include "_moments.pxi"
include "act.pxi"
include "_apply.pxi"
include "_data_types.pxi"
include "data_moments.pxi"
include "data_affine.pxi"
include "data_calls.pxi"
