# The kernels of cnorm: one source for float32, float64, float16 and bfloat16 data (fused type
# ``real``, computed in ``floating``: float32, or float64 for float64 data), included
# by one small .pyx per SIMD target (_kernels_baseline/_avx2/_avx512.pyx) that setup.py builds
# with that target's flags; cnorm._backend imports the best one the CPU runs. Each concern has
# its own file, included in order of use:
#   _config    constants, each with its reason
#   _storage   the storage types of the data and their conversions to the compute type
#   _threads   thread counts (every kernel takes n_threads)
#   _chunks    the chunk plan: the determinism contract
#   _sums      lane sums, for x and for dy: the one summation loop
#   _moments   per-chunk moments, Chan's merge, whole-array statistics steps
#   act        the fused blocks' activation gradient (used by the backward passes)
#   _apply     finalize, coefficients, output and gradient loops, the fused and split passes
#   batch_norm, row_norm, group_norm: the op families' entry points (group_norm takes the
#              row norms' moments for its short groups)
#   calls      entry points for small calls, checked in C (the NumPy C-API)
#   sync       SyncBatchNorm's rank-order merges and its training step's entries
#   _steps     the steps on their own (SyncBatchNorm, Moments, tests, new ops)
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
include "batch_norm.pxi"
include "row_norm.pxi"
include "group_norm.pxi"
include "calls.pxi"
include "sync.pxi"
include "_steps.pxi"
