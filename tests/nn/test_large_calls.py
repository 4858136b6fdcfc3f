"""Calls above the small-call size (issue 24): a layer's forward and backward of SPARE_MIN
bytes and more go through the entries checked in C (src/nn/calls.pxi) with the output in the
layer's recycled memory (cnorm/_core/recycle.py entry_out): the checked path's bits, memory
reused only when nothing holds it, and an ``out`` the entries take only when it is laid out
as x, writable and apart from the inputs."""
import numpy as np
import pytest

import cnorm
from cnorm._core import backend, recycle
from cnorm.nn._ops import batch_norm as bn_ops
from cnorm.nn._ops import group_norm as gn_ops
from cnorm.nn._ops import row_norm as row_ops

# kind: (layer factory, shape of SPARE_MIN float32 bytes and more, its entry, its context)
LAYERS = {
    "ln": (lambda: cnorm.LayerNorm(64), (1100, 64), "row_call", row_ops.RowCallContext),
    "bn": (lambda: cnorm.BatchNorm2d(64), (4, 64, 16, 17), "bn_forward_call",
           bn_ops.CallContext),
    "gn": (lambda: cnorm.GroupNorm(8, 64), (4, 64, 16, 17), "group_call",
           gn_ops.GroupCallContext),
    "in": (lambda: cnorm.InstanceNorm2d(64, affine=True), (4, 64, 16, 17), "group_call",
           gn_ops.GroupCallContext),
}
BACKWARD = {"row_call": "row_backward_call", "bn_forward_call": "bn_backward_call"}


def _layer(kind):
    layer = LAYERS[kind][0]()
    n = layer.weight.size
    layer.weight[...] = np.linspace(0.5, 1.5, n)
    layer.bias[...] = np.linspace(-1, 1, n)
    return layer


def _step(layer, x, dy):
    y = layer(x)
    return [y.copy(), layer.backward(dy).copy(), layer.grad_weight.copy(),
            layer.grad_bias.copy()]


@pytest.mark.parametrize("kind", list(LAYERS))
def test_large_layer_calls_take_the_entries_with_the_checked_paths_bits(monkeypatch, rng,
                                                                        kind):
    _, shape, entry, ctx_type = LAYERS[kind]
    x = (3 + 2 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    assert x.nbytes >= recycle.SPARE_MIN
    fast, ref = _layer(kind), _layer(kind)
    taken = []

    def spy(name, real):
        def call(*a):
            got = real(*a)
            taken.append((name, got is not None))
            return got
        return call

    for name in (entry, BACKWARD.get(entry)):
        if name is not None:
            monkeypatch.setattr(backend.kernels, name, spy(name, getattr(backend.kernels, name)))
    got = _step(fast, x, dy)
    assert isinstance(fast._saved, ctx_type)
    assert (entry, True) in taken
    if entry in BACKWARD:
        assert (BACKWARD[entry], True) in taken
    for name in (entry, BACKWARD.get(entry)):
        if name is not None:
            monkeypatch.setattr(backend.kernels, name, lambda *a: None)
    want = _step(ref, x, dy)
    assert not isinstance(ref._saved, ctx_type)  # the checked path's context
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and np.array_equal(g, w)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_large_outputs_reuse_the_layers_memory_only_when_free(rng, kind):
    _, shape, _, _ = LAYERS[kind]
    x = rng.standard_normal(shape).astype(np.float32)
    layer = _layer(kind)
    y = layer(x)
    first = y.ctypes.data
    del y
    y = layer(x)
    assert y.ctypes.data == first  # dropped: the same memory again
    held = y.copy()
    y2 = layer(2 * x)
    assert y2.ctypes.data != y.ctypes.data and np.array_equal(y, held)  # held: left alone


def _bn_backward_args(rng, shape=(4, 8, 5, 5)):
    x = rng.standard_normal(shape).astype(np.float32)
    layer = cnorm.BatchNorm2d(shape[1])
    layer(x)
    ctx = layer._saved
    dy = rng.standard_normal(shape).astype(np.float32)
    return x, dy, ctx


def test_an_out_is_taken_only_laid_out_as_x_writable_and_apart(rng):
    x, dy, ctx = _bn_backward_args(rng)

    def call(out):
        return backend.kernels.bn_backward_call(x, dy, ctx.mean, ctx.invstd, None, True, True,
                                                out, 1 << 18, 1)

    want = call(None)[0]
    out = np.empty_like(x)
    got = call(out)
    assert got[0] is out and np.array_equal(out, want)
    readonly = np.empty_like(x)
    readonly.flags.writeable = False
    both = np.empty((2,) + x.shape, np.float32)
    for bad in (dy, x, readonly, np.empty_like(x, dtype=np.float64), np.empty(x.shape[::-1],
                np.float32).T, np.empty_like(x)[:, :4], both[0].reshape(x.shape[::-1])):
        before = dy.copy()
        assert call(bad) is None
        assert np.array_equal(dy, before)  # a declined call wrote nothing
    # an out that overlaps dy only in part
    buf = np.empty(2 * x.size, np.float32)
    dy_in = buf[: x.size].reshape(x.shape)
    dy_in[...] = dy
    out_half = buf[x.size // 2: x.size // 2 + x.size].reshape(x.shape)
    assert backend.kernels.bn_backward_call(x, dy_in, ctx.mean, ctx.invstd, None, True, True,
                                            out_half, 1 << 18, 1) is None


def test_short_rows_backward_entry_same_bits_on_any_thread_count(rng):
    x = (1 + rng.standard_normal((4096, 64))).astype(np.float32)
    dy = rng.standard_normal((4096, 64)).astype(np.float32)
    w = np.linspace(0.5, 1.5, 64).astype(np.float32)
    layer = cnorm.LayerNorm(64)
    layer.weight[...] = w
    layer(x)
    ctx = layer._saved
    runs = [backend.kernels.row_backward_call(x, dy, ctx.mean, ctx.invstd, w, False, True,
                                              None, 1 << 30, t) for t in (1, 2, 3)]
    for r in runs[1:]:
        for a, b in zip(runs[0], r):
            assert a.tobytes() == b.tobytes()
    # and the checked backward's (row_backward) bits
    dx = np.empty_like(x)
    gw, gb = np.empty(64), np.empty(64)
    kernel = backend.kernel("row_backward", x.dtype)
    kernel(x, dy, ctx.mean, ctx.invstd, w, False, True, dx, gw, gb, 2)
    assert dx.tobytes() == runs[0][0].tobytes() and np.array_equal(gw, runs[0][1])
    # against float64
    x64, dy64, w64 = x.astype(np.float64), dy.astype(np.float64), w.astype(np.float64)
    mu = x64.mean(-1, keepdims=True)
    inv = 1 / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    xh = (x64 - mu) * inv
    g = dy64 * w64
    ref = inv * (g - g.mean(-1, keepdims=True) - xh * (g * xh).mean(-1, keepdims=True))
    assert np.max(np.abs(runs[0][0] - ref)) < 1e-4
    assert np.allclose(runs[0][1], (dy64 * xh).sum(0), rtol=1e-6, atol=1e-4)
