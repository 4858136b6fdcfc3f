"""Small calls (issue 24): LayerNorm's and RMSNorm's forward (layers and functional forms)
through the entry checked in C (src/nn/calls.pxi row_call, cnorm/nn/_ops/row_norm.py) give
the checked path's bits, and a backward after them the checked backward's; everything the
entry does not take it declines before writing anything, and the checked path then raises or
computes as before."""
import numpy as np
import pytest

import cnorm
from cnorm._core import backend
from cnorm.nn._ops import row_norm as row_ops

SHAPES = [(8, 16), (3, 5, 16), (16,), (1, 1)]


def _checked_only(monkeypatch):
    monkeypatch.setattr(cnorm.nn.modules, "row_call", lambda *a, **k: None)
    monkeypatch.setattr(cnorm.nn.functional, "row_call", lambda *a, **k: None)


def _layer(rms, L, dtype, eps):
    if rms:
        layer = cnorm.RMSNorm(L, eps=eps, dtype=dtype)
    else:
        layer = cnorm.LayerNorm(L, dtype=dtype) if eps is not None else cnorm.LayerNorm(
            L, eps=None, dtype=dtype)
        layer.bias[...] = np.linspace(-1, 1, L)
    layer.weight[...] = np.linspace(0.5, 1.5, L)
    return layer


@pytest.mark.parametrize("eps", [1e-5, None])
@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_entry_gives_the_checked_paths_bits(monkeypatch, rng, shape, dtype, rms, eps):
    L = shape[-1]
    x = (3 + 2 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    fast, ref = (_layer(rms, L, dtype, eps) for _ in range(2))
    calls, back = [], []
    real, real_back = backend.kernels.row_call, backend.kernels.row_backward_call
    monkeypatch.setattr(backend.kernels, "row_call", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(backend.kernels, "row_backward_call",
                        lambda *a: back.append(1) or real_back(*a))
    got = [fast(x), fast.backward(dy), fast.grad_weight, fast.grad_bias]
    got_f = (cnorm.rms_norm(x, L, fast.weight, eps) if rms
             else cnorm.layer_norm(x, (L,), fast.weight, fast.bias, 1e-5 if eps is None else eps))
    assert len(calls) == 2 and isinstance(fast._saved, row_ops.RowCallContext)
    assert len(back) == 1  # the backward by its entry too
    _checked_only(monkeypatch)
    want = [ref(x), ref.backward(dy), ref.grad_weight, ref.grad_bias]
    want_f = (cnorm.rms_norm(x, L, ref.weight, eps) if rms
              else cnorm.layer_norm(x, (L,), ref.weight, ref.bias, 1e-5 if eps is None else eps))
    for g, w in zip(got + [got_f], want + [want_f]):
        assert (g is None and w is None) or (g.dtype == w.dtype and np.array_equal(g, w))
    # and a float64 reference
    x64 = x.astype(np.float64)
    e = (np.finfo(dtype).eps if eps is None else eps)
    if rms:
        ref_y = x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + e) * fast.weight
    else:
        ref_y = ((x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + e)
                 * fast.weight + fast.bias)
    assert np.max(np.abs(got[0] - ref_y)) < (1e-5 if dtype == np.float32 else 1e-12)


def test_the_entry_declines_what_it_does_not_take(rng):
    x = rng.standard_normal((8, 16)).astype(np.float32)
    w = np.ones(16, np.float32)
    take = lambda *a, **k: row_ops.row_call(*a, **k)  # noqa: E731
    assert take(x, None, 16, w, None, 1e-5, False) is not None
    declined = [
        (x.astype(np.float16), None, 16, None, None, 1e-5, False),  # half data
        (x[:, ::2], None, 8, None, None, 1e-5, False),               # not contiguous
        (x.astype(">f4"), None, 16, None, None, 1e-5, False),        # byte-swapped
        (x.view(np.matrix), None, 16, None, None, 1e-5, False),     # a subclass
        (x.tolist(), None, 16, None, None, 1e-5, False),             # not an array
        (x, None, (4, 4), None, None, 1e-5, False),                  # two normalized axes
        (x, None, 8, None, None, 1e-5, False),                       # shape mismatch
        (x, None, 16, w.astype(np.float64), None, 1e-5, False),      # weight dtype
        (x, None, 16, w[:8], None, 1e-5, False),                     # weight length
        (x, None, 16, list(w), None, 1e-5, False),                   # weight a list
        (x, None, 16, None, None, 0.0, False),                       # eps 0
        (x, None, 16, None, None, 1, False),                         # eps an int
        (x, np.dtype(np.float64), 16, None, None, 1e-5, False),      # not the layer's dtype
        (np.zeros((0, 16), np.float32), None, 16, None, None, 1e-5, False),  # no rows
        (np.ones((1 << 17, 16), np.float32), None, 16, None, None, 1e-5, False),  # large
    ]
    for args in declined:
        assert take(*args) is None, args


def test_wide_float32_rows_go_to_the_checked_path():
    """A float32 row whose spread is near float32's range: the entry declines (nothing is
    written), and the checked path computes it in float64."""
    x = np.array([[-3e38, 3e38, 0.0, 1.0]], np.float32)
    assert row_ops.row_call(x, None, 4, None, None, 1e-5, False) is None
    y = cnorm.LayerNorm(4)(x)
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean()) / np.sqrt(x64.var() + 1e-5)
    assert np.allclose(y, ref, rtol=1e-6, atol=1e-6)


def test_bad_input_still_raises_the_checked_paths_errors():
    layer = cnorm.LayerNorm(16)
    with pytest.raises(TypeError, match="dtype"):
        layer(np.ones((2, 16)))  # float64 into a float32 layer
    with pytest.raises(ValueError, match="normalized_shape"):
        layer(np.ones((2, 8), np.float32))
    with pytest.raises(ValueError, match="normalized_shape"):
        cnorm.layer_norm(np.ones((2, 8), np.float32), 16)
    assert layer._saved is None  # the failed calls kept nothing


def test_the_backward_entry_declines_what_it_does_not_take(rng):
    """A grad_output the backward entry does not take (Fortran order, a strided view) goes to
    the checked backward: the same bits for the same values; a wrong dtype or shape
    raises there, leaving the gradients as they were."""
    x = rng.standard_normal((6, 16)).astype(np.float32)
    dy = rng.standard_normal((6, 16)).astype(np.float32)
    layer = cnorm.LayerNorm(16)
    layer(x)
    want = (layer.backward(dy).tobytes(), layer.grad_weight.tobytes())
    for given in (np.asfortranarray(dy), np.repeat(dy, 2, axis=1)[:, ::2]):
        layer(x)
        assert isinstance(layer._saved, row_ops.RowCallContext)
        assert (layer.backward(given).tobytes(), layer.grad_weight.tobytes()) == want
    ctx = layer._saved
    assert backend.kernels.row_backward_call(x, dy[:3], ctx.mean, ctx.invstd, None, False,
                                             True, None, 1 << 18, 1) is None
    assert backend.kernels.row_backward_call(x, dy.astype(np.float64), ctx.mean, ctx.invstd,
                                             None, False, True, None, 1 << 18, 1) is None
    for bad, kind in ((dy[:3], ValueError), (dy.astype(np.float64), TypeError)):
        layer(x)
        with pytest.raises(kind):
            layer.backward(bad)
        assert layer.grad_weight.tobytes() == want[1]
