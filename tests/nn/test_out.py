"""``out=``: every functional form and every ``*_backward`` writes into a preallocated array of
the right shape, dtype and memory layout and returns it, with the same bits as without it. A
wrong one is a ValueError (TypeError for a non-array) raised before anything is written or
updated."""
import numpy as np
import pytest

import cnorm
from cnorm.testing import in_layout, make_input

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
