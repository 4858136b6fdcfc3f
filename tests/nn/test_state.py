"""Failed calls change nothing (issue 20, item 9): load_state_dict stages every value first;
num_batches_tracked takes any integer; a KeyboardInterrupt anywhere in a training forward
leaves num_batches_tracked and the running statistics together (both moved or neither)."""
import os
import sys

import numpy as np
import pytest

import cnorm
from cnorm.testing import same_state, state

PKG = os.path.dirname(os.path.abspath(cnorm.__file__))


def test_a_failed_load_changes_nothing(rng):
    layer = cnorm.BatchNorm2d(3)
    layer.running_var = np.ones(3, np.float32)
    layer.running_var.flags.writeable = False  # a read-only array the user assigned
    sd = {k: v + 2 for k, v in layer.state_dict().items()}
    bad = dict(sd, running_var=np.ones(4))  # the last key fails
    before = state(layer)
    with pytest.raises(ValueError, match="running_var"):
        layer.load_state_dict(bad)
    assert same_state(before, state(layer))
    layer.load_state_dict(sd)  # the read-only array is replaced, the others written in place
    for k, v in sd.items():
        assert np.array_equal(layer.state_dict()[k], v), k


@pytest.mark.parametrize("value", [5, np.int32(5), np.array(5.0), np.array(5, np.int64)])
def test_num_batches_tracked_takes_any_integer(value, rng):
    layer = cnorm.BatchNorm2d(3, momentum=None)
    layer.num_batches_tracked = value
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    layer(x)
    assert layer.num_batches_tracked == 6 and layer.num_batches_tracked.dtype == np.int64
    layer.num_batches_tracked = value
    layer.load_state_dict(layer.state_dict())
    layer.reset_running_stats()
    assert layer.num_batches_tracked == 0 and np.all(layer.running_var == 1)
    with pytest.raises(ValueError, match="integer"):
        layer.num_batches_tracked = 2.5


def _traced(fn, k=None):
    """Run ``fn()`` counting the line events of cnorm's Python code; with ``k``, raise
    KeyboardInterrupt at the k-th. Returns the count (None when the interrupt was raised)."""
    seen = 0

    def tracer(frame, event, arg):
        nonlocal seen
        if not frame.f_code.co_filename.startswith(PKG):
            return None
        if event == "line":
            seen += 1
            if seen == k:
                raise KeyboardInterrupt
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    except KeyboardInterrupt:
        return None
    finally:
        sys.settrace(None)
    return seen


LAYERS = {
    "bn": lambda m: cnorm.BatchNorm2d(3, momentum=m),
    "sync": lambda m: cnorm.SyncBatchNorm(3, momentum=m, comm=cnorm._core.comm.OneProcess()),
    "bnact": lambda m: cnorm.BatchNormAct2d(3, momentum=m),
}


@pytest.mark.parametrize("momentum", [None, 0.1])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_an_interrupted_forward_keeps_count_and_statistics_together(kind, momentum):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32) + 3
    template = LAYERS[kind](momentum)
    template(x[::-1] * 2)  # one other batch tracked already: momentum=None averages over it
    after = LAYERS[kind](momentum)
    after.load_state_dict(template.state_dict())
    after(x)
    n = _traced(lambda: LAYERS[kind](momentum)(x))
    assert n > 10
    for k in range(1, n + 1):
        layer = LAYERS[kind](momentum)
        layer.load_state_dict(template.state_dict())
        interrupted = _traced(lambda: layer(x), k) is None
        got = layer.state_dict()
        want = after.state_dict() if got["num_batches_tracked"] == 2 else template.state_dict()
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            assert got[key].tobytes() == want[key].tobytes(), (k, interrupted, key)
