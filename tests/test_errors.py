"""Every error of API.md, with the layer's state unchanged after it."""
import copy

import numpy as np
import pytest
from conftest import make_input

import cnorm


def snapshot(layer):
    state = {k: v.copy() for k, v in layer.state_dict().items()}
    extra = (layer.training, layer._saved, copy.copy(layer.grad_weight),
             copy.copy(layer.grad_bias))
    return state, extra


def assert_unchanged(layer, snap):
    state, extra = snapshot(layer)
    assert state.keys() == snap[0].keys()
    for k in state:
        assert state[k].tobytes() == snap[0][k].tobytes(), k
    assert extra[0] == snap[1][0] and extra[1] is snap[1][1]
    for a, b in zip(extra[2:], snap[1][2:]):
        assert (a is None and b is None) or a.tobytes() == b.tobytes()


@pytest.fixture
def trained(rng):
    """A BatchNorm2d(4) with non-trivial state: two steps and a backward done."""
    layer = cnorm.BatchNorm2d(4, momentum=None)
    for _ in range(2):
        layer(make_input(rng, (3, 4, 5, 5), np.float32))
    layer.backward(np.ones((3, 4, 5, 5), np.float32))
    return layer


FORWARD_ERRORS = [
    (np.zeros((3, 4, 5), np.float32), ValueError, r"expected 4D input \(got 3D input\)"),
    (np.zeros((3, 4, 5, 5, 5), np.float32), ValueError, r"expected 4D input \(got 5D input\)"),
    (np.zeros((3, 5, 2, 2), np.float32), ValueError, r"4 channels.*got 5"),
    (np.zeros((1, 4, 1, 1), np.float32), ValueError, "Expected more than 1 value per channel"),
    (np.zeros((3, 4, 2, 2), np.float64), TypeError, "float32.*float64"),
    (np.zeros((3, 4, 2, 2), np.int32), TypeError, "float32.*int32"),
    (np.zeros((3, 4, 2, 2), np.float16), TypeError, "float32.*float16"),
    ([[1.0, 2.0]], TypeError, "float32.*float64"),
]


@pytest.mark.parametrize("x,err,match", FORWARD_ERRORS)
@pytest.mark.parametrize("training", [True, False])
def test_forward_errors_leave_state(trained, x, err, match, training):
    trained.train(training)
    snap = snapshot(trained)
    if "more than 1" in match and not training:  # eval with running stats: allowed
        trained(x)
        return
    with pytest.raises(err, match=match):
        trained(x)
    assert_unchanged(trained, snap)


def test_single_value_also_rejected_without_running_stats():
    layer = cnorm.BatchNorm1d(3, track_running_stats=False).eval()  # uses batch stats
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(np.ones((1, 3), np.float32))


def test_batchnorm1d_ndim_message():
    with pytest.raises(ValueError, match=r"expected 2D or 3D input \(got 4D input\)"):
        cnorm.BatchNorm1d(3)(np.ones((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"expected 5D input \(got 4D input\)"):
        cnorm.BatchNorm3d(3)(np.ones((2, 3, 4, 4), np.float32))


def test_backward_before_forward():
    layer = cnorm.BatchNorm2d(3)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((2, 3, 2, 2), np.float32))
    assert layer.grad_weight is None and layer.grad_bias is None


@pytest.mark.parametrize("dy,err", [
    (np.ones((3, 4, 5, 4), np.float32), ValueError),
    (np.ones((3, 4, 5), np.float32), ValueError),
    (np.ones((3, 4, 5, 5), np.float64), TypeError),
])
def test_backward_errors_leave_state(trained, dy, err):
    snap = snapshot(trained)
    with pytest.raises(err):
        trained.backward(dy)
    assert_unchanged(trained, snap)


@pytest.mark.parametrize("name,value,err", [
    ("weight", np.ones(5, np.float32), ValueError),
    ("bias", np.ones(4, np.float64), TypeError),
    ("running_var", np.ones((4, 1), np.float32), ValueError),
])
def test_bad_reassigned_parameter(trained, rng, name, value, err):
    setattr(trained, name, value)
    snap = snapshot(trained)
    with pytest.raises(err, match=name):
        trained(make_input(rng, (3, 4, 5, 5), np.float32))
    assert_unchanged(trained, snap)


def test_load_state_dict_errors_leave_state(trained):
    good = trained.state_dict()
    cases = [({k: v for k, v in good.items() if k != "running_var"}, KeyError),
             (dict(good, extra=np.ones(4)), KeyError),
             (dict(good, weight=np.ones(5)), ValueError),
             (dict(good, num_batches_tracked=np.ones(2)), ValueError),
             (dict(good, bias="abc"), ValueError)]
    for bad, err in cases:
        mutated = dict(bad, running_mean=np.full(4, 7.0))  # would change state if applied
        snap = snapshot(trained)
        with pytest.raises(err):
            trained.load_state_dict(mutated)
        assert_unchanged(trained, snap)
    # num_batches_tracked may be missing (old torch checkpoints); it then keeps its value
    old = {k: v for k, v in good.items() if k != "num_batches_tracked"}
    trained.load_state_dict(dict(old, running_mean=np.full(4, 7.0)))
    np.testing.assert_array_equal(trained.running_mean, 7.0)
    assert int(trained.num_batches_tracked) == 2


@pytest.mark.parametrize("kwargs,err", [
    (dict(num_features=0), ValueError), (dict(num_features=2.5), ValueError),
    (dict(num_features=3, dtype=np.int32), TypeError),
    (dict(num_features=3, momentum="0.1"), TypeError),
])
def test_constructor_errors(kwargs, err):
    with pytest.raises(err):
        cnorm.BatchNorm2d(**kwargs)


def test_train_mode_must_be_bool():
    with pytest.raises(ValueError):
        cnorm.BatchNorm2d(3).train("yes")


def test_functional_errors_leave_arrays(rng):
    x = make_input(rng, (4, 3, 2, 2), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    cases = [
        (dict(x=x, running_mean=np.zeros(4, np.float32), running_var=rv, training=True),
         ValueError),
        (dict(x=x, running_mean=rm, running_var=np.ones(3), training=True), TypeError),
        (dict(x=x, running_mean=rm, running_var=rv, weight=np.ones(2, np.float32),
              training=True), ValueError),
        (dict(x=x[:1, :, :1, :1], running_mean=rm, running_var=rv, training=True), ValueError),
        (dict(x=x, running_mean=None, running_var=None, training=False), ValueError),
        (dict(x=x[0, 0, 0], running_mean=rm, running_var=rv, training=True), ValueError),
        (dict(x=x.astype(np.int64), running_mean=rm, running_var=rv), TypeError),
    ]
    for kw, err in cases:
        with pytest.raises(err):
            cnorm.batch_norm(**kw)
        np.testing.assert_array_equal(rm, 0)
        np.testing.assert_array_equal(rv, 1)
    ro = np.zeros(3, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        cnorm.batch_norm(x, ro, rv, training=True)
    np.testing.assert_array_equal(rv, 1)
