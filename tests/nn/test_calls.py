"""Small calls (issue 24): batch norm's training forward through the entry checked in C
(src/nn/calls.pxi, cnorm/nn/_ops/batch_norm.py forward_call) gives the checked path's bits and
state, against a float64 reference too; everything the entry does not take it declines
before writing anything, and the checked path then raises or computes as before."""
import numpy as np
import pytest

import cnorm
from cnorm._core import backend
from cnorm.nn._ops import batch_norm as bn_ops
from cnorm.testing import formulas

SHAPES = {"BatchNorm1d": [(8, 16), (4, 6, 5)], "BatchNorm2d": [(4, 6, 3, 3)],
          "BatchNorm3d": [(2, 3, 2, 3, 2)]}
CASES = [(kind, shape) for kind, shapes in SHAPES.items() for shape in shapes]


def _checked_only(monkeypatch):
    """Send every call down the checked path (the entry declines all)."""
    monkeypatch.setattr(bn_ops, "forward_call", lambda *a, **k: None)
    monkeypatch.setattr(cnorm.nn.modules, "forward_call", lambda *a, **k: None)


def _step(layer, x, dy, steps=2):
    out = []
    for _ in range(steps):
        y = layer(x)
        out += [y, layer.backward(dy), layer.grad_weight, layer.grad_bias]
    return out + [layer.running_mean, layer.running_var, layer.num_batches_tracked]


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,shape", CASES)
def test_the_entry_gives_the_checked_paths_bits(monkeypatch, rng, kind, shape, dtype,
                                                momentum):
    x = (3 + 2 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    fast, ref = (getattr(cnorm, kind)(shape[1], momentum=momentum, dtype=dtype)
                 for _ in range(2))
    for layer in (fast, ref):
        layer.weight[...] = np.linspace(0.5, 1.5, shape[1])
        layer.bias[...] = np.linspace(-1, 1, shape[1])
    calls = []
    real, real_back = bn_ops.forward_call, backend.kernels.bn_backward_call
    monkeypatch.setattr(cnorm.nn.modules, "forward_call",
                        lambda *a, **k: calls.append("forward") or real(*a, **k))
    monkeypatch.setattr(backend.kernels, "bn_backward_call",
                        lambda *a: calls.append("backward") or real_back(*a))
    got = _step(fast, x, dy)
    assert calls == ["forward", "backward"] * 2 and isinstance(fast._saved, bn_ops.CallContext)
    monkeypatch.setattr(backend.kernels, "bn_backward_call", real_back)
    _checked_only(monkeypatch)
    want = _step(ref, x, dy)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and np.array_equal(g, w)
    ax = formulas.channel_axes(x)
    x64 = x.astype(np.float64)
    y_ref = formulas.bn_forward(x64, x64.mean(axis=ax), x64.var(axis=ax), fast.weight,
                                fast.bias, fast.eps)
    assert np.abs(got[4] - y_ref).max() < (1e-5 if dtype is np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_functional_form_takes_the_entry_with_the_same_bits(monkeypatch, rng, dtype):
    x = (1 + rng.standard_normal((8, 16))).astype(dtype)
    w, b = rng.random(16).astype(dtype), rng.standard_normal(16).astype(dtype)
    runs = []
    for _ in range(2):
        rm, rv = np.zeros(16, dtype), np.ones(16, dtype)
        y = cnorm.batch_norm(x, rm, rv, w, b, training=True, momentum=0.3)
        runs.append((y, rm, rv))
        _checked_only(monkeypatch)
    for g, w_ in zip(*runs):
        assert np.array_equal(g, w_)


def _entry(x, C=None, weight=None, running=(None, None), counter=None, ranks=None,
           kind=None, max_bytes=1 << 18, training=True):
    kind = x.dtype.num if kind is None else kind
    ranks = bn_ops.ranks_mask(2) if ranks is None else ranks
    return backend.kernels.bn_forward_call(
        x, kind, ranks, x.shape[1] if C is None else C, weight, None, running[0], running[1],
        counter, training, 1e-5, 0.1, None, 0, 0.0, 1e-32, None, max_bytes, 1)


def test_the_entry_declines_what_it_does_not_take(rng):
    x = rng.standard_normal((8, 4)).astype(np.float32)
    assert _entry(x) is not None
    swapped = x.astype(x.dtype.newbyteorder())
    declined = {
        "not contiguous": _entry(np.asfortranarray(rng.standard_normal((8, 4, 3)),
                                                   np.float32)),
        "byte-swapped": _entry(swapped, kind=np.dtype(np.float32).num),
        "a subclass": _entry(np.ma.masked_array(x)),
        "another dtype": _entry(x, kind=np.dtype(np.float64).num),
        "half data": _entry(x.astype(np.float16)),
        "a rank not allowed": _entry(x, ranks=bn_ops.ranks_mask((3,))),
        "another channel count": _entry(x, C=5),
        "one value per channel": _entry(x[:1]),
        "large": _entry(x, max_bytes=x.nbytes),
        "a weight of another dtype": _entry(x, weight=np.ones(4)),
        "a counter not int64": _entry(x, counter=np.array(0, np.int32)),
    }
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    declined["a read-only running mean"] = _entry(x, running=(ro, None))
    assert all(v is None for v in declined.values()), [k for k, v in declined.items() if v]


def test_a_declined_call_writes_nothing_and_wide_data_goes_to_float64():
    """float32 data whose spread nears float32's range: the entry declines before moving the
    running statistics or the counter, and the checked path computes it in float64."""
    x = np.array([[-3e34, 1.0], [3e34, 2.0], [1e34, 3.0]], np.float32)
    rm, rv, counter = np.zeros(2, np.float32), np.ones(2, np.float32), np.array(0, np.int64)
    assert _entry(x, running=(rm, rv), counter=counter) is None
    assert (rm == 0).all() and (rv == 1).all() and counter == 0
    layer = cnorm.BatchNorm1d(2)
    y = layer(x)
    assert np.isfinite(y).all() and int(layer.num_batches_tracked) == 1


def test_bad_input_still_raises_the_checked_paths_errors():
    layer = cnorm.BatchNorm2d(3)
    before = {k: np.copy(v) for k, v in layer.state_dict().items()}
    with pytest.raises(ValueError, match="channels"):
        layer(np.ones((2, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="4D"):
        layer(np.ones((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="more than 1 value"):
        layer(np.ones((1, 3, 1, 1), np.float32))
    with pytest.raises(TypeError):
        layer(np.ones((2, 3, 3, 3), np.float64))
    for k, v in layer.state_dict().items():
        assert np.array_equal(v, before[k]), k


def _eval_layer(kind, C, dtype, track=True):
    layer = getattr(cnorm, kind)(C, dtype=dtype, track_running_stats=track)
    layer.weight[...] = np.linspace(0.5, 1.5, C)
    layer.bias[...] = np.linspace(-1, 1, C)
    if track:
        layer.running_mean[...] = np.linspace(-2, 2, C)
        layer.running_var[...] = np.linspace(0.25, 4, C)
    return layer.eval()


@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,shape", CASES + [("BatchNorm1d", (1, 16))])
def test_an_eval_forward_takes_the_entry_with_the_checked_paths_bits(monkeypatch, rng, kind,
                                                                      shape, dtype, track):
    """Eval: with running statistics (any number of values per channel, one included), or
    without them the batch's, moving nothing; its backward as the checked path's."""
    x = (3 + 2 * rng.standard_normal(shape)).astype(dtype)
    if not track and shape[0] * int(np.prod(shape[2:])) == 1:  # the checked path's error
        with pytest.raises(ValueError, match="more than 1 value"):
            _eval_layer(kind, shape[1], dtype, track)(x)
        return
    dy = rng.standard_normal(shape).astype(dtype)
    calls = []
    real = backend.kernels.bn_forward_call
    monkeypatch.setattr(backend.kernels, "bn_forward_call",
                        lambda *a: calls.append(a[9]) or real(*a))
    fast = _eval_layer(kind, shape[1], dtype, track)
    got = [fast(x), fast.backward(dy), fast.grad_weight, fast.grad_bias]
    assert calls == [not track] and isinstance(fast._saved, bn_ops.CallContext)
    _checked_only(monkeypatch)
    monkeypatch.setattr(backend.kernels, "bn_forward_call", real)
    ref = _eval_layer(kind, shape[1], dtype, track)
    want = [ref(x), ref.backward(dy), ref.grad_weight, ref.grad_bias]
    for g, w in zip(got + fast.state_dict()["running_mean" if track else "weight"].tolist(),
                    want + ref.state_dict()["running_mean" if track else "weight"].tolist()):
        assert np.array_equal(g, w)
    if track:  # against the definition, in float64
        y_ref = formulas.bn_forward(x.astype(np.float64), fast.running_mean,
                                    fast.running_var, fast.weight, fast.bias, fast.eps)
        assert np.abs(got[0] - y_ref).max() < (1e-5 if dtype is np.float32 else 1e-12)
        assert int(fast.num_batches_tracked) == 0


def test_the_functional_eval_form_takes_the_entry_with_the_same_bits(monkeypatch, rng):
    x = (1 + rng.standard_normal((8, 16))).astype(np.float32)
    w, b = rng.random(16).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    rm, rv = rng.standard_normal(16).astype(np.float32), rng.random(16).astype(np.float32)
    calls = []
    real = backend.kernels.bn_forward_call
    monkeypatch.setattr(backend.kernels, "bn_forward_call",
                        lambda *a: calls.append(1) or real(*a))
    got = cnorm.batch_norm(x, rm, rv, w, b, training=False)
    assert calls == [1]
    _checked_only(monkeypatch)
    assert np.array_equal(got, cnorm.batch_norm(x, rm, rv, w, b, training=False))
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        cnorm.batch_norm(x, None, None, w, b, training=False)


def test_the_eval_entry_declines_without_running_statistics_and_writes_nothing(rng):
    x = rng.standard_normal((8, 4)).astype(np.float32)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    y, stats = _entry(x, running=(rm, rv), training=False)
    assert np.allclose(y, x / np.sqrt(1 + 1e-5)) and stats[1] is None
    assert _entry(x, running=(rm, None), training=False) is None
    assert _entry(x, running=(None, rv), training=False) is None
    assert _entry(x[:0], running=(rm, rv), training=False) is None  # empty: the checked path
    assert (rm == 0).all() and (rv == 1).all()
