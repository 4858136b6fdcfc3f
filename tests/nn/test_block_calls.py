"""Small calls of the fused blocks (issue 24): BatchNormAct and GroupNormAct through the
entries checked in C (bn_forward_call, group_call with a residual and an activation) give the
checked path's bits, in training and in eval: output, running statistics, and the backward
after them (dx, grad_weight, grad_bias, grad_residual). A residual the entry does not take
sends the call down the checked path; SyncBatchNormAct never takes a local entry in
training."""
import numpy as np
import pytest

import cnorm
from cnorm._core import backend


def _checked_only(monkeypatch):
    monkeypatch.setattr(backend.kernels, "bn_forward_call", lambda *a: None)
    monkeypatch.setattr(backend.kernels, "group_call", lambda *a: None)


def _make(kind, act, dtype):
    if kind == "bn":
        layer = cnorm.BatchNormAct2d(8, act=act, negative_slope=0.2, dtype=dtype)
    else:
        layer = cnorm.GroupNormAct(4, 8, act=act, negative_slope=0.2, dtype=dtype)
    layer.weight[...] = np.linspace(0.5, 1.5, 8)
    layer.bias[...] = np.linspace(-1, 1, 8)
    return layer


def _steps(layer, x, r, dy):
    """Two training steps, then an eval one (batch norm: the running statistics)."""
    out = []
    for train in (True, True, False):
        layer.train(train)
        out += [layer(x, r), layer.backward(dy), layer.grad_weight, layer.grad_bias,
                layer.grad_residual]
    if hasattr(layer, "running_mean"):
        out += [layer.running_mean, layer.running_var]
    return out


@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "silu", "gelu", None])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["bn", "gn"])
def test_the_entry_gives_the_checked_paths_bits(monkeypatch, rng, kind, dtype, act,
                                                with_residual):
    shape = (2, 8, 3, 4)
    x = rng.standard_normal(shape).astype(dtype)
    r = rng.standard_normal(shape).astype(dtype) if with_residual else None
    dy = rng.standard_normal(shape).astype(dtype)
    name = "bn_forward_call" if kind == "bn" else "group_call"
    calls = []
    real = getattr(backend.kernels, name)
    monkeypatch.setattr(backend.kernels, name, lambda *a: calls.append(1) or real(*a))
    got = _steps(_make(kind, act, dtype), x, r, dy)
    assert len(calls) == 3  # every forward took the entry
    _checked_only(monkeypatch)
    want = _steps(_make(kind, act, dtype), x, r, dy)
    for g, w in zip(got, want):
        assert (g is None and w is None) or (g.dtype == w.dtype and np.array_equal(g, w))
    assert (got[4] is not None) == with_residual  # grad_residual


def test_a_residual_the_entry_does_not_take_goes_the_checked_way(rng):
    x = rng.standard_normal((2, 8, 3, 4)).astype(np.float32)
    r = rng.standard_normal((2, 3, 4, 8)).astype(np.float32).transpose(0, 3, 1, 2)  # NHWC
    a, b = _make("bn", "relu", np.float32), cnorm.BatchNorm2d(8)
    b.weight[...], b.bias[...] = a.weight, a.bias
    y = a(x, r)
    ref = np.maximum(b(x) + r, 0)  # norm, + residual, relu: the definition
    assert np.allclose(y, ref, atol=1e-6)
    with pytest.raises(ValueError, match="residual"):
        a(x, r[:, :, :2])  # the checked path's error, nothing kept from before changed


def test_sync_batch_norm_act_takes_no_local_entry(monkeypatch, rng):
    monkeypatch.setattr(backend.kernels, "bn_forward_call",
                        lambda *a: pytest.fail("a local entry for SyncBatchNormAct"))
    layer = cnorm.SyncBatchNormAct(8, act="relu")
    layer(rng.standard_normal((2, 8, 3, 4)).astype(np.float32))
