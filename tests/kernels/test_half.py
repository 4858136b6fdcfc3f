"""The float16 and bfloat16 run conversions (src/common/cnorm_half.h) in every SIMD target: every
float16 and bfloat16 value to float32, and float32 values (specials, ties, subnormals, random
bit patterns) to both, against NumPy and ml_dtypes: round to nearest even, NaN kept a NaN."""
import numpy as np
import pytest

from cnorm._core import backend as _backend

TARGETS = _backend.available_targets()


def floats(rng):
    """Specials, ties at both half precisions, subnormals, overflow edges, random patterns."""
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65520.0, 65519.99,
                        6e-8, 3e-8, 2.0 ** -24, 2.0 ** -25, 1e-45, 3.4e38], np.float32)
    ties16 = (np.arange(1, 2049, dtype=np.float32) + 0.5) * np.float32(2.0 ** -10) + 1.0
    ties_b = np.array([1.0 + k * 2.0 ** -8 for k in range(1, 255, 2)], np.float32)
    bits = rng.integers(0, 2 ** 32, 200000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return np.concatenate([special, -special, ties16, ties_b, bits]).astype(np.float32)


@pytest.mark.parametrize("target", TARGETS)
def test_run_conversions_match_numpy_and_ml_dtypes(rng, target):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    k = _backend.module_for(target, "_data")
    every = np.arange(65536, dtype=np.uint16)
    x = floats(rng)
    f16_f, bf16_f = np.empty(65536, np.float32), np.empty(65536, np.float32)
    x16, xb = np.empty(len(x), np.uint16), np.empty(len(x), np.uint16)
    k.half_conversions(every, every, x, f16_f, bf16_f, x16, xb)
    want16 = every.view(np.float16).astype(np.float32)
    wantb = every.view(ml_dtypes.bfloat16).astype(np.float32)
    for got, want in ((f16_f, want16), (bf16_f, wantb)):
        nan = np.isnan(want)
        assert np.array_equal(np.isnan(got), nan)
        assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))
    with np.errstate(over="ignore", invalid="ignore"):
        w16 = x.astype(np.float16)
        wb = x.astype(ml_dtypes.bfloat16)
    for got, want in ((x16.view(np.float16), w16), (xb.view(ml_dtypes.bfloat16), wb)):
        g, w = got.astype(np.float32), want.astype(np.float32)
        nan = np.isnan(w)
        assert np.array_equal(np.isnan(g), nan)
        assert np.array_equal(g[~nan].view(np.uint32), w[~nan].view(np.uint32))
