"""Row norms on short rows (issue 24): float rows of at most SHORT_ROW (4096) values take their
sums in one inlined loop, ROW_BLOCK (16) rows a step, and fall back to the careful path for a
row whose shift lost digits, whose float squares overflow, or which holds an infinity. Checked
against a float64 NumPy reference, and a row's bits against the same row normalized alone."""
import numpy as np
import pytest

import cnorm


def _reference(x, rms, dy):
    """LayerNorm / RMSNorm (no affine) forward and input gradient in float64."""
    x = x.astype(np.float64)
    L = x.shape[-1]
    mean = np.zeros((x.shape[0], 1)) if rms else x.mean(-1, keepdims=True)
    var = (x * x).mean(-1, keepdims=True) if rms else x.var(-1, keepdims=True)
    inv = 1.0 / np.sqrt(var + 1e-5)
    xhat = (x - mean) * inv
    g = dy.astype(np.float64)
    if rms:
        dx = inv * (g - xhat * (g * xhat).mean(-1, keepdims=True))
    else:
        dx = inv * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).sum(-1, keepdims=True) / L)
    return xhat, dx


def _layer(rms, L, dtype=np.float32):
    if rms:
        return cnorm.RMSNorm(L, eps=1e-5, dtype=dtype)
    return cnorm.LayerNorm(L, elementwise_affine=False, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("L", [1, 7, 31, 32, 33, 64, 255, 300, 4096, 4097])
@pytest.mark.parametrize("rms", [False, True])
def test_short_rows_match_float64_reference(rng, dtype, L, rms):
    R = 37  # not a multiple of the 16 rows of a step
    x = (rng.standard_normal((R, L)) * 3 + 2).astype(dtype)
    dy = rng.standard_normal((R, L)).astype(dtype)
    layer = _layer(rms, L, dtype)
    y = layer(x)
    dx = layer.backward(dy)
    ry, rdx = _reference(x, rms, dy)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert y.dtype == dtype and dx.dtype == dtype
    if L == 1 and not rms:
        assert np.all(y == 0)  # one value per row: x - mean is 0
    else:
        assert np.max(np.abs(y - ry)) < tol * 10
        assert np.max(np.abs(dx - rdx)) < tol * 10 * max(1.0, np.abs(rdx).max())


@pytest.mark.parametrize("rms", [False, True])
def test_a_row_keeps_its_bits_beside_any_neighbours(rng, rms):
    """Rows that take the careful path (an outlier first value, values whose float32 squares
    overflow, an infinity, a NaN) beside plain rows: every row equals itself normalized alone,
    bit for bit, and the plain rows stay finite."""
    L = 64
    x = rng.standard_normal((20, L)).astype(np.float32)
    x[1, 0] = 3e7  # the row's shift far from its mean
    x[2] *= np.float32(1e20)  # (x - shift)^2 overflows float32
    x[3, 5] = np.inf
    x[4, 9] = np.nan
    x[5] += np.float32(1e6)  # a large offset
    layer = _layer(rms, L)
    y = layer(x)
    alone = np.concatenate([_layer(rms, L)(x[i:i + 1]) for i in range(len(x))])
    assert np.array_equal(y, alone, equal_nan=True)
    plain = [i for i in range(len(x)) if i not in (3, 4)]
    assert np.all(np.isfinite(y[plain]))
    assert np.all(np.isnan(y[4]))
    ry, _ = _reference(x[[0, 1, 2, 5, 6]], rms, np.zeros((5, L)))
    assert np.max(np.abs(y[[0, 1, 2, 5, 6]] - ry)) < 2e-4


def test_short_rows_do_not_depend_on_threads(rng):
    x = rng.standard_normal((1000, 48)).astype(np.float32) + 5
    dy = rng.standard_normal(x.shape).astype(np.float32)
    outs = []
    before = cnorm.get_num_threads()
    try:
        for nt in (1, 2):
            cnorm.set_num_threads(nt)
            layer = cnorm.LayerNorm(48)
            outs.append((layer(x), layer.backward(dy), layer.grad_weight))
    finally:
        cnorm.set_num_threads(before)
    for a, b in zip(*outs):
        assert np.array_equal(a, b)
