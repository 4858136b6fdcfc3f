"""Every error of API.md, for every layer kind and functional form: the error type, a message
naming what was expected and what came, and no state changed by the failed call. Each input
is validated once per call."""
import numpy as np
import pytest

import cnorm
from cnorm._core import checks as _validate
from cnorm.testing import KINDS, make, make_input, same_state, shape_for, state


def bad_inputs(kind):
    """(what, call(layer), error type, message fragments) for ``kind``'s layer."""
    shape = shape_for(kind)
    ok = np.ones(shape, np.float32)
    cases = [
        ("wrong ndim", lambda L: L(np.ones(shape[-1] + 1, np.float32)), ValueError,
         [f"({shape[-1] + 1},)"] if kind in ("ln", "ln2", "rms") else ["got 1D"]),
        ("float64 to a float32 layer", lambda L: L(ok.astype(np.float64)), TypeError,
         ["float32", "float64"]),
        ("int input", lambda L: L(ok.astype(np.int32)), TypeError, ["float32", "int32"]),
        ("float16 input", lambda L: L(ok.astype(np.float16)), TypeError, ["float16"]),
        ("complex input", lambda L: L(ok.astype(np.complex64)), TypeError, ["complex64"]),
        ("list input", lambda L: L(ok.tolist()), TypeError, ["float32", "float64"]),
        ("string input", lambda L: L("abc"), TypeError, []),
        ("dy of another shape", lambda L: L.backward(np.ones(shape[:-1] + (shape[-1] + 1,),
                                                             np.float32)), ValueError, ["shape"]),
        ("dy of another dtype", lambda L: L.backward(ok.astype(np.float64)), TypeError,
         ["float64"]),
    ]
    if kind.startswith(("bn", "in")) or kind == "gn":
        cases.append(("channel count", lambda L: L(np.ones((shape[0], shape[1] + 1) + shape[2:],
                                                           np.float32)), ValueError,
                      [f"{shape[1]} channels", f"got {shape[1] + 1}"]))
    else:
        cases.append(("normalized shape", lambda L: L(np.ones(shape[:-1] + (shape[-1] + 2,),
                                                              np.float32)), ValueError,
                      [str(shape[-1]), str(shape[-1] + 2)]))
    if kind.startswith("bn"):
        cases.append(("one value per channel", lambda L: L(np.ones((1, shape[1]) + (1,) * (
            len(shape) - 2), np.float32)), ValueError, ["Expected more than 1 value"]))
    if kind.startswith("in"):
        cases.append(("one spatial element", lambda L: L(np.ones(shape[:2] + (1,) * (
            len(shape) - 2), np.float32)), ValueError, ["Expected more than 1 spatial"]))
    return cases


BAD_CASES = [(kind, i) for kind in KINDS for i in range(len(bad_inputs(kind)))]


def trained(kind, rng):
    """A layer with moved statistics, a cached forward and gradients."""
    shape = shape_for(kind)
    layer = make(kind, shape, np.float32, rng)
    for _ in range(2):
        layer(rng.standard_normal(shape).astype(np.float32))
    layer.backward(rng.standard_normal(shape).astype(np.float32))
    return layer


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind,i", BAD_CASES)
def test_bad_input_raises_and_changes_nothing(rng, kind, i, training):
    what, call, err, fragments = bad_inputs(kind)[i]
    layer = trained(kind, rng).train(training)
    before = state(layer)
    if not training and what in ("one value per channel", "one spatial element"):
        call(layer)  # eval with running statistics: no error, as torch
        return
    with pytest.raises(err) as info:
        call(layer)
    for f in fragments:
        assert f in str(info.value), (what, str(info.value))
    assert same_state(before, state(layer)), what
    y = layer(rng.standard_normal(shape_for(kind)).astype(np.float32))  # and it still works
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("kind", list(KINDS))
def test_backward_before_forward_changes_nothing(kind):
    layer = make(kind, shape_for(kind), np.float32)
    before = state(layer)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones(shape_for(kind), np.float32))
    assert same_state(before, state(layer))
    assert layer.grad_weight is None and layer.grad_bias is None


@pytest.mark.parametrize("kind,param,bad,err", [
    ("bn2d", "weight", lambda C: np.ones(C + 1, np.float32), ValueError),
    ("bn2d", "bias", lambda C: np.ones(C, np.float64), TypeError),
    ("bn2d", "running_var", lambda C: np.ones((C, 1), np.float32), ValueError),
    ("ln2", "weight", lambda C: np.ones(7, np.float32), ValueError),
    ("ln", "bias", lambda C: np.ones(7, np.float64), TypeError),
    ("rms", "weight", lambda C: np.ones(6, np.float32), ValueError),
    ("gn", "weight", lambda C: np.ones(C - 1, np.float32), ValueError),
    ("in2d", "bias", lambda C: np.ones(C, np.int32), TypeError),
    ("in2d", "running_mean", lambda C: np.ones(C + 2, np.float32), ValueError),
])
def test_bad_reassigned_parameter_changes_nothing(rng, kind, param, bad, err):
    layer = trained(kind, rng)
    setattr(layer, param, bad(shape_for(kind)[1]))
    before = state(layer)
    with pytest.raises(err, match=param):
        layer(rng.standard_normal(shape_for(kind)).astype(np.float32))
    assert same_state(before, state(layer))


def test_read_only_running_array_is_an_error_and_changes_nothing(rng):
    x = make_input(rng, (4, 3, 2, 2), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        cnorm.batch_norm(x, rm, rv, training=True)
    np.testing.assert_array_equal(rv, 1)


def test_load_state_dict_errors_change_nothing(rng):
    layer = trained("bn2d", rng)
    good = layer.state_dict()
    C = good["weight"].shape[0]
    for bad, err in [({k: v for k, v in good.items() if k != "running_var"}, KeyError),
                     (dict(good, extra=np.ones(C)), KeyError),
                     (dict(good, weight=np.ones(C + 1)), ValueError),
                     (dict(good, num_batches_tracked=np.ones(2)), ValueError),
                     (dict(good, bias="abc"), ValueError)]:
        before = state(layer)
        with pytest.raises(err):
            layer.load_state_dict(dict(bad, running_mean=np.full(C, 7.0)))
        assert same_state(before, state(layer))
    # num_batches_tracked may be missing (old torch checkpoints); it then keeps its value
    old = {k: v for k, v in good.items() if k != "num_batches_tracked"}
    layer.load_state_dict(dict(old, running_mean=np.full(C, 7.0)))
    np.testing.assert_array_equal(layer.running_mean, 7.0)
    assert int(layer.num_batches_tracked) == 2


@pytest.mark.parametrize("make_layer,err,match", [
    (lambda: cnorm.BatchNorm2d(0), ValueError, "num_features"),
    (lambda: cnorm.BatchNorm2d(2.5), ValueError, "num_features"),
    (lambda: cnorm.BatchNorm2d(3, dtype=np.int32), TypeError, "int32"),
    (lambda: cnorm.BatchNorm2d(3, momentum="0.1"), TypeError, "momentum"),
    (lambda: cnorm.InstanceNorm2d(0), ValueError, "num_features"),
    (lambda: cnorm.GroupNorm(4, 6), ValueError, "divisible"),
    (lambda: cnorm.GroupNorm(0, 6), ValueError, "num_groups"),
    (lambda: cnorm.LayerNorm(()), ValueError, "normalized_shape"),
    (lambda: cnorm.LayerNorm((3, 0)), ValueError, "normalized_shape"),
    (lambda: cnorm.RMSNorm(-1), ValueError, "normalized_shape"),
    (lambda: cnorm.BatchNorm2d(3).train("yes"), ValueError, "boolean"),
])
def test_constructor_and_mode_errors(make_layer, err, match):
    with pytest.raises(err, match=match):
        make_layer()


def test_functional_errors_leave_arrays(rng):
    x = make_input(rng, (4, 6, 2, 2), np.float32)
    rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)
    cases = [
        (lambda: cnorm.batch_norm(x, np.zeros(4, np.float32), rv, training=True), ValueError),
        (lambda: cnorm.batch_norm(x, rm, np.ones(6), training=True), TypeError),
        (lambda: cnorm.batch_norm(x, rm, rv, np.ones(2, np.float32), training=True), ValueError),
        (lambda: cnorm.batch_norm(x[:1, :, :1, :1], rm, rv, training=True), ValueError),
        (lambda: cnorm.batch_norm(x, None, None, training=False), ValueError),
        (lambda: cnorm.batch_norm(x[0, 0, 0], rm, rv, training=True), ValueError),
        (lambda: cnorm.batch_norm(x.astype(np.int64), rm, rv), TypeError),
        (lambda: cnorm.group_norm(x, 4), ValueError),
        (lambda: cnorm.instance_norm(x, use_input_stats=False), ValueError),
        (lambda: cnorm.instance_norm(x, rm, rv.astype(np.float64)), TypeError),
        (lambda: cnorm.instance_norm(x[:, :, :1, :1], rm, rv), ValueError),
        (lambda: cnorm.layer_norm(x, 2, weight=np.ones(4, np.float32)), ValueError),
        (lambda: cnorm.layer_norm_backward(np.ones(3, np.float32), x, 2), ValueError),
        (lambda: cnorm.moments(np.arange(10), 0), TypeError),
        (lambda: cnorm.moments(np.ones((2, 3)), 2), np.exceptions.AxisError),
    ]
    for call, err in cases:
        with pytest.raises(err):
            call()
        np.testing.assert_array_equal(rm, 0)
        np.testing.assert_array_equal(rv, 1)


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_input_is_validated_once(rng, monkeypatch, kind):
    """One forward checks x once and each parameter or statistic once; one backward checks dy
    once."""
    shape = shape_for(kind)
    layer = make(kind, shape, np.float32, rng)
    x = rng.standard_normal(shape).astype(np.float32).astype(">f4")  # not the fast path
    seen = []
    real = _validate.as_float_array

    def counting(v, dtype=None, what="input"):
        seen.append(what)
        return real(v, dtype, what)

    monkeypatch.setattr(_validate, "as_float_array", counting)
    for module in ("batch_norm", "row_norm", "group_norm", "context"):
        mod = __import__(f"cnorm.nn._ops.{module}", fromlist=["x"])
        if hasattr(mod, "as_float_array"):
            monkeypatch.setattr(mod, "as_float_array", counting)
    layer(x)
    assert seen.count("input") == 1, seen
    seen.clear()
    layer.backward(x)
    assert seen == ["grad_output"], seen
