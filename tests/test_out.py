"""``out=``: every functional form and every ``*_backward`` writes into a preallocated array of
the right shape, dtype and memory layout and returns it, with the same bits as without it. A
wrong one is a ValueError (TypeError for a non-array) raised before anything is written or
updated."""
import numpy as np
import pytest
from conftest import in_layout, make_input
from zoo import KINDS, make, shape_for

import cnorm

C = 6
W, B = np.linspace(0.5, 2, C, dtype=np.float32), np.linspace(-1, 1, C, dtype=np.float32)


def forms(x, dy):
    """name -> call(out): the functional forms on x (and dy), each with fresh running arrays
    where it updates them."""
    def run():
        return np.zeros(C, np.float32), np.ones(C, np.float32)
    return {
        "batch_norm": lambda out: cnorm.batch_norm(x, *run(), W, B, training=True, out=out),
        "batch_norm eval": lambda out: cnorm.batch_norm(x, *run(), W, B, out=out),
        "batch_norm_act": lambda out: cnorm.batch_norm_act(x, *run(), W, B, training=True,
                                                           residual=x * 0, out=out),
        "group_norm": lambda out: cnorm.group_norm(x, 3, W, B, out=out),
        "instance_norm": lambda out: cnorm.instance_norm(x, *run(), W, B, out=out),
        "layer_norm": lambda out: cnorm.layer_norm(x, x.shape[-1:], out=out),
        "rms_norm": lambda out: cnorm.rms_norm(x, x.shape[-2:], out=out),
        "batch_norm_backward": lambda out: cnorm.batch_norm_backward(
            dy, x, *run(), W, B, training=True, out=out)[0],
        "group_norm_backward": lambda out: cnorm.group_norm_backward(dy, x, 3, W, B,
                                                                     out=out)[0],
        "instance_norm_backward": lambda out: cnorm.instance_norm_backward(
            dy, x, weight=W, bias=B, out=out)[0],
        "layer_norm_backward": lambda out: cnorm.layer_norm_backward(
            dy, x, x.shape[-1:], out=out)[0],
        "rms_norm_backward": lambda out: cnorm.rms_norm_backward(dy, x, x.shape[-2:],
                                                                 out=out)[0],
    }


NAMES = list(forms(np.ones((2, C, 3, 4), np.float32), None))


def like(x, layout):
    """An empty array of x's shape and dtype in ``layout``."""
    return in_layout(np.full(x.shape, 7, x.dtype), layout)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("name", NAMES)
def test_out_is_written_and_returned(rng, name, layout, dtype):
    x = in_layout(make_input(rng, (4, C, 5, 7), np.float32).astype(dtype), layout)
    dy = in_layout(make_input(rng, (4, C, 5, 7), np.float32).astype(dtype), layout)
    call = forms(x, dy)[name]
    want = call(None)
    out = like(x, layout)
    got = call(out)
    assert got is out
    assert np.ascontiguousarray(out).tobytes() == np.ascontiguousarray(want).tobytes()


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_out_raises_before_anything_is_written(rng, name):
    x = make_input(rng, (4, C, 5, 7), np.float32)
    dy = make_input(rng, (4, C, 5, 7), np.float32)
    bad = {"shape": np.full((4, C, 5, 6), 7, np.float32),
           "dtype": np.full(x.shape, 7, np.float64),
           "layout": in_layout(np.full(x.shape, 7, np.float32), "nhwc"),
           "read-only": np.full(x.shape, 7, np.float32)}
    bad["read-only"].flags.writeable = False
    for what, out in bad.items():
        rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
        call = {"batch_norm": lambda o: cnorm.batch_norm(x, rm, rv, W, B, training=True, out=o),
                "instance_norm": lambda o: cnorm.instance_norm(x, rm, rv, out=o)}.get(
            name, forms(x, dy)[name])
        with pytest.raises(ValueError):
            call(out)
        assert np.all(out == 7), (name, what)  # nothing written
        assert np.all(rm == 0) and np.all(rv == 1), (name, what)  # nothing updated
    with pytest.raises(ValueError, match="share memory"):
        forms(x, dy)[name](x)  # the input itself
    with pytest.raises(TypeError):
        forms(x, dy)[name]([[0.0]])


def layer_pair(kind, shape, layout):
    """Two layers alike (a second as the reference) and two inputs in ``layout``."""
    rng = np.random.default_rng(5)
    x1, x2 = (in_layout(make_input(rng, shape, np.float32, offset=1.0), layout)
              for _ in range(2))
    return make(kind, shape, np.float32), make(kind, shape, np.float32), x1, x2


SPARE_CASES = [(k, l) for k in KINDS for l in ("nchw", "nhwc")
               if l == "nchw" or KINDS[k][0][-1] > 2]


@pytest.fixture
def spare_small(monkeypatch):
    """Layers recycle outputs of any size (the threshold spares small ones the checks)."""
    monkeypatch.setattr(cnorm.modules, "SPARE_MIN", 0)


@pytest.mark.parametrize("kind,layout", SPARE_CASES)
def test_a_layer_writes_into_its_dropped_output(kind, layout, spare_small):
    """A training loop that drops each step's output and dx gets the same memory back at the
    next step (no fresh pages), with the values of a layer that allocates anew."""
    layer, fresh, x1, x2 = layer_pair(kind, shape_for(kind), layout)
    dy = x1 * 0.5
    y = layer(x1)
    dx = layer.backward(dy)
    y_addr, dx_addr = y.ctypes.data, dx.ctypes.data
    del y, dx
    y, dx = layer(x2), layer.backward(dy)
    assert (y.ctypes.data, dx.ctypes.data) == (y_addr, dx_addr)
    fresh(x1)
    want_y, want_dx = fresh(x2), fresh.backward(dy)
    assert y.tobytes() == want_y.tobytes() and y.strides == want_y.strides
    assert dx.tobytes() == want_dx.tobytes() and dx.strides == want_dx.strides


@pytest.mark.parametrize("hold", ["variable", "view", "buffer"])
@pytest.mark.parametrize("kind,layout", SPARE_CASES)
def test_a_held_output_is_never_written_again(kind, layout, hold, spare_small):
    """An output or dx that anything still refers to (a variable, a view of it, an exported
    buffer) keeps its values when the layer runs again."""
    layer, _, x1, x2 = layer_pair(kind, shape_for(kind), layout)
    keep = {"variable": lambda a: a, "view": lambda a: a[:1],
            "buffer": lambda a: memoryview(a)}[hold]
    y = keep(layer(x1))
    dx = keep(layer.backward(x1 * 0.5))
    y_bytes, dx_bytes = np.asarray(y).tobytes(), np.asarray(dx).tobytes()
    y2, dx2 = layer(x2), layer.backward(x2 * 0.25)
    assert np.asarray(y).tobytes() == y_bytes and np.asarray(dx).tobytes() == dx_bytes
    assert not np.shares_memory(np.asarray(y), y2) and not np.shares_memory(np.asarray(dx), dx2)


def test_a_failed_call_keeps_the_spare(rng, spare_small):
    """A forward that fails after taking its spare puts it back: the next one reuses it."""
    layer = cnorm.BatchNorm2d(4)
    x = rng.standard_normal((3, 4, 5, 5)).astype(np.float32)
    addr = layer(x).ctypes.data
    with pytest.raises(ValueError):
        layer(x[:1, :, :1, :1])  # one value per channel in training
    assert layer(x).ctypes.data == addr


def test_large_outputs_are_recycled_by_default(rng):
    """Without the fixture: a 1 MB output (and dx) comes back at the next step."""
    layer = cnorm.BatchNorm2d(4)
    x = rng.standard_normal((8, 4, 64, 128)).astype(np.float32)
    addr = layer(x).ctypes.data, layer.backward(x).ctypes.data
    assert (layer(x).ctypes.data, layer.backward(x).ctypes.data) == addr
