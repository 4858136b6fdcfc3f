"""Small calls (issue 24): GroupNorm's and InstanceNorm's forward (layers and functional forms)
through the entry checked in C (src/nn/calls.pxi group_call, cnorm/nn/_ops/group_norm.py)
give the checked path's bits, and a backward after them the checked backward's; everything
the entry does not take it declines before writing anything, and the checked path then
raises or computes as before."""
import numpy as np
import pytest

import cnorm
from cnorm._core import backend
from cnorm.nn._ops import group_norm as gn_ops


def _checked_only(monkeypatch):
    monkeypatch.setattr(cnorm.nn.modules, "group_call", lambda *a, **k: None)
    monkeypatch.setattr(cnorm.nn.functional, "group_call", lambda *a, **k: None)


def _run(kind, C, dtype, x, dy):
    if kind == "group":
        layer = cnorm.GroupNorm(4, C, dtype=dtype)
        layer.weight[...] = np.linspace(0.5, 1.5, C)
        layer.bias[...] = np.linspace(-1, 1, C)
        f = cnorm.group_norm(x, 4, layer.weight, layer.bias)
    else:
        layer = cnorm.InstanceNorm2d(C, dtype=dtype) if x.ndim == 4 else cnorm.InstanceNorm1d(
            C, dtype=dtype)
        f = cnorm.instance_norm(x)
    return [layer(x), layer.backward(dy), layer.grad_weight, layer.grad_bias, f], layer


@pytest.mark.parametrize("kind", ["group", "instance"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 8, 4, 4), (3, 8, 5), (1, 8, 2, 1)])
def test_the_entry_gives_the_checked_paths_bits(monkeypatch, rng, kind, dtype, shape):
    x = (3 + 2 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    calls = []
    real = backend.kernels.group_call
    monkeypatch.setattr(backend.kernels, "group_call", lambda *a: calls.append(1) or real(*a))
    got, layer = _run(kind, shape[1], dtype, x, dy)
    assert len(calls) == 2 and isinstance(layer._saved, gn_ops.GroupCallContext)
    _checked_only(monkeypatch)
    want, _ = _run(kind, shape[1], dtype, x, dy)
    for g, w in zip(got, want):
        assert (g is None and w is None) or (g.dtype == w.dtype and np.array_equal(g, w))
    G = 4 if kind == "group" else shape[1]  # and a float64 reference
    x64 = x.astype(np.float64).reshape(shape[0], G, -1)
    ref = ((x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5))
    ref = ref.reshape(shape)
    if kind == "group":
        p = (1, -1) + (1,) * (len(shape) - 2)
        ref = ref * np.linspace(0.5, 1.5, shape[1]).reshape(p) + np.linspace(
            -1, 1, shape[1]).reshape(p)
    assert np.max(np.abs(got[0] - ref)) < (1e-5 if dtype == np.float32 else 1e-12)


def test_the_entry_declines_what_it_does_not_take(rng):
    x = rng.standard_normal((2, 8, 4, 4)).astype(np.float32)
    w = np.ones(8, np.float32)
    take = gn_ops.group_call
    assert take(x, None, None, 4, w, None, 1e-5) is not None
    cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    declined = [
        (x.astype(np.float16), None, None, 4, None, None, 1e-5),  # half data
        (cl, None, None, 4, None, None, 1e-5),                    # channels-last
        (x.astype(">f4"), None, None, 4, None, None, 1e-5),       # byte-swapped
        (x.tolist(), None, None, 4, None, None, 1e-5),            # not an array
        (x, None, None, 3, None, None, 1e-5),                     # 8 channels in 3 groups
        (x, None, None, 4.0, None, None, 1e-5),                   # groups a float
        (x, None, 6, 3, None, None, 1e-5),                        # not the layer's channels
        (x, None, None, 4, w.astype(np.float64), None, 1e-5),     # weight dtype
        (x, None, None, 4, w[:4], None, 1e-5),                    # weight length
        (x, None, None, 4, None, None, 0.0),                      # eps 0
        (x, np.dtype(np.float64), None, 4, None, None, 1e-5),     # not the layer's dtype
        (np.zeros((0, 8, 2, 2), np.float32), None, None, 4, None, None, 1e-5),  # empty
        (np.ones((1 << 14, 8, 2, 2), np.float32), None, None, 4, None, None, 1e-5),  # large
    ]
    for args in declined:
        assert take(*args) is None, args[1:]
    assert take(x[:, :, :1, :1], None, None, None, None, None, 1e-5, instance=True) is None


def test_bad_input_still_raises_the_checked_paths_errors():
    with pytest.raises(ValueError, match="divisible"):
        cnorm.group_norm(np.ones((2, 6, 3), np.float32), 4)
    with pytest.raises(ValueError, match="spatial element"):
        cnorm.instance_norm(np.ones((2, 6, 1), np.float32))
    layer = cnorm.GroupNorm(2, 4)
    with pytest.raises(TypeError, match="dtype"):
        layer(np.ones((2, 4, 3)))  # float64 into a float32 layer
    assert layer._saved is None


@pytest.mark.parametrize("shape,G", [((4096, 64), 16), ((2, 32768), 128)])
def test_short_groups_of_a_2d_input_keep_their_bits_at_any_thread_count(rng, restore_threads,
                                                                        shape, G):
    """Groups of a 2-D (N, C) input are short contiguous rows: their moments as the row norms
    take them, samples to threads (N = 4096) or rows, then samples (N = 2 < threads): the
    same bits at 1-4 threads, forward and backward, and the float64 reference's values
    (offset 100: the shift)."""
    x = (100 + rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    w = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    got, back = {}, {}
    for n in (1, 2, 3, 4):
        cnorm.set_num_threads(n)
        got[n] = cnorm.group_norm(x, G, w).tobytes()
        layer = cnorm.GroupNorm(G, shape[1])
        layer.weight[...] = w
        layer(x)
        back[n] = (layer.backward(dy).tobytes(), layer.grad_weight.tobytes())
    assert all(got[n] == got[1] and back[n] == back[1] for n in got)
    x64 = x.astype(np.float64).reshape(shape[0], G, -1)
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    y = np.frombuffer(got[1], np.float32).reshape(shape)
    assert np.max(np.abs(y - ref.reshape(shape) * w)) < 2e-5
