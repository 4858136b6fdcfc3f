"""LayerNorm, RMSNorm, GroupNorm, InstanceNorm: finite-difference gradients, accuracy at large
offsets, bit-identical results across thread counts, and every error of API.md with the
layer's state unchanged."""
import numpy as np
import pytest
from conftest import make_input
from reference import channels_last, group_norm_ref, layer_norm_ref
from test_errors import assert_unchanged, snapshot
from test_gradcheck import numeric_grad

import cnorm

needs_openmp = pytest.mark.skipif(not cnorm.openmp_enabled(), reason="serial build")


def make_layers(dtype=np.float32, C=6):
    return {
        "layer": cnorm.LayerNorm((4, 5), dtype=dtype),
        "rms": cnorm.RMSNorm(5, dtype=dtype),
        "group": cnorm.GroupNorm(3, C, dtype=dtype),
        "instance": cnorm.InstanceNorm2d(C, affine=True, track_running_stats=True, dtype=dtype),
    }


# ------------------------------------------------------------------ finite differences

@pytest.mark.parametrize("name", ["layer", "rms", "group", "instance"])
@pytest.mark.parametrize("training", [True, False])
def test_finite_differences(rng, name, training):
    layer = make_layers(np.float64, C=6)[name]
    if layer.weight is not None:
        layer.weight[...] = rng.uniform(0.5, 2, layer.weight.shape)
    if layer.bias is not None:
        layer.bias[...] = rng.uniform(-1, 1, layer.bias.shape)
    if name == "instance":
        layer.running_mean[...] = rng.uniform(-1, 1, 6)
        layer.running_var[...] = rng.uniform(0.5, 2, 6)
    shape = (2, 6, 4, 5)
    x = make_input(rng, shape, np.float64, offset=1.0)
    R = rng.standard_normal(shape)  # loss = sum(y * R)
    layer.train(training)
    buffers = {k: v for k, v in layer.state_dict().items() if k.startswith("running")}

    def loss():
        for k, v in buffers.items():  # instance norm's running statistics move in training
            getattr(layer, k)[...] = v
        return float(np.sum(layer(x) * R))

    loss()
    dx = layer.backward(R)
    gw, gb = layer.grad_weight, layer.grad_bias
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-7)
    if layer.weight is not None:
        np.testing.assert_allclose(gw, numeric_grad(loss, layer.weight), rtol=1e-6, atol=1e-7)
    if layer.bias is not None:
        np.testing.assert_allclose(gb, numeric_grad(loss, layer.bias), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ accuracy

@pytest.mark.parametrize("offset", [1e4, 1e6])
@pytest.mark.parametrize("case", ["layer-last", "layer-chw", "rms", "group", "group-nhwc",
                                  "instance"])
def test_float32_accuracy_at_large_offsets(rng, offset, case):
    """Float32 data of std 1 around ``offset``: outputs within 1e-5 of the float64 reference
    on the same data (float32 rounding of the result is 6e-8 relative)."""
    shape = (8, 16, 24, 24)
    x = (offset + rng.standard_normal(shape)).astype(np.float32)
    if case == "layer-last":
        y, ref = cnorm.layer_norm(x, 24), layer_norm_ref(x, x, 1, None, None, 1e-5)[0]
    elif case == "layer-chw":
        y, ref = cnorm.layer_norm(x, shape[1:]), layer_norm_ref(x, x, 3, None, None, 1e-5)[0]
    elif case == "rms":
        y, ref = cnorm.rms_norm(x, 24), layer_norm_ref(x, x, 1, None, None, 1.2e-7, True)[0]
    elif case.startswith("group"):
        xi = channels_last(x) if case.endswith("nhwc") else x
        y, ref = cnorm.group_norm(xi, 4), group_norm_ref(x, x, 4, None, None, 1e-5)[0]
    else:
        y, ref = cnorm.instance_norm(x), group_norm_ref(x, x, 16, None, None, 1e-5)[0]
    assert np.max(np.abs(y - ref)) < 1e-5


# ------------------------------------------------------------------ threads

def all_norm_outputs(x):
    """Forward, backward and parameter gradients of every new layer (and functional form)."""
    C, dt = x.shape[1], x.dtype
    layers = [cnorm.LayerNorm(x.shape[-1], dtype=dt), cnorm.LayerNorm(x.shape[1:], dtype=dt),
              cnorm.RMSNorm(x.shape[-1], dtype=dt), cnorm.GroupNorm(4, C, dtype=dt),
              cnorm.GroupNorm(1, C, dtype=dt),
              cnorm.InstanceNorm2d(C, affine=True, track_running_stats=True, dtype=dt)]
    out = []
    dy = x * 0.5 + 1
    for layer in layers:
        layer.weight[...] = np.linspace(0.5, 2, layer.weight.size).reshape(layer.weight.shape)
        out += [layer(x), layer.backward(dy), layer.grad_weight]
        if layer.bias is not None:
            out.append(layer.grad_bias)
        if getattr(layer, "running_mean", None) is not None:
            out += [layer.running_mean.copy(), layer.running_var.copy()]
    return out


@needs_openmp
@pytest.mark.parametrize("shape", [(8, 16, 40, 40), (1, 8, 100, 101), (3, 8, 7, 7),
                                   (2, 4, 3, 6000)])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_across_thread_counts(rng, shape, layout, dtype):
    x = make_input(rng, shape, dtype, offset=100.0)
    if layout == "nhwc":
        x = channels_last(x)
    previous = cnorm.get_num_threads()
    try:
        results = {}
        for n in (1, 2, 3, 4):
            cnorm.set_num_threads(n)
            results[n] = all_norm_outputs(x)
    finally:
        cnorm.set_num_threads(previous)
    for n in (2, 3, 4):
        for a, b in zip(results[1], results[n]):
            assert a.tobytes() == b.tobytes(), f"{n} threads differ from 1"


# ------------------------------------------------------------------ errors

def trained(name, rng):
    layer = make_layers()[name]
    for _ in range(2):
        layer(make_input(rng, (3, 6, 4, 5), np.float32))
    layer.backward(np.ones((3, 6, 4, 5), np.float32))
    return layer


ERRORS = [
    ("layer", np.zeros((3, 6, 4, 4), np.float32), ValueError, r"normalized_shape \(4, 5\)"),
    ("layer", np.zeros((5,), np.float32), ValueError, "normalized_shape"),
    ("layer", np.zeros((3, 6, 4, 5), np.float64), TypeError, "float32.*float64"),
    ("rms", np.zeros((3, 6, 4, 4), np.float32), ValueError, r"normalized_shape \(5,\)"),
    ("rms", np.zeros((3, 5), np.int64), TypeError, "float32.*int64"),
    ("group", np.zeros((3, 9, 4, 5), np.float32), ValueError, "6 channels.*got 9"),
    ("group", np.zeros((6,), np.float32), ValueError, r"expected 2D or higher input \(N, C"),
    ("group", np.zeros((3, 6, 4, 5), np.float16), TypeError, "float32.*float16"),
    ("instance", np.zeros((3, 6, 4, 5, 2), np.float32), ValueError,
     r"expected 3D or 4D input \(got 5D input\)"),
    ("instance", np.zeros((3, 7, 4, 5), np.float32), ValueError, "6 channels.*got 7"),
    ("instance", np.zeros((3, 6, 1, 1), np.float32), ValueError,
     "Expected more than 1 spatial element"),
    ("instance", np.zeros((3, 6, 4, 5), np.float64), TypeError, "float32.*float64"),
]


@pytest.mark.parametrize("name,x,err,match", ERRORS)
def test_forward_errors_leave_state(rng, name, x, err, match):
    layer = trained(name, rng)
    snap = snapshot(layer)
    with pytest.raises(err, match=match):
        layer(x)
    assert_unchanged(layer, snap)


@pytest.mark.parametrize("name", ["layer", "rms", "group", "instance"])
def test_backward_errors_leave_state(rng, name):
    layer = make_layers()[name]
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((3, 6, 4, 5), np.float32))
    layer = trained(name, rng)
    snap = snapshot(layer)
    for dy, err in [(np.ones((3, 6, 4, 4), np.float32), ValueError),
                    (np.ones((3, 6, 4, 5), np.float64), TypeError)]:
        with pytest.raises(err):
            layer.backward(dy)
        assert_unchanged(layer, snap)


@pytest.mark.parametrize("name,param,value,err", [
    ("layer", "weight", np.ones(5, np.float32), ValueError),
    ("layer", "bias", np.ones((4, 5), np.float64), TypeError),
    ("rms", "weight", np.ones(6, np.float32), ValueError),
    ("group", "weight", np.ones(5, np.float32), ValueError),
    ("instance", "bias", np.ones(6, np.int32), TypeError),
    ("instance", "running_var", np.ones(3, np.float32), ValueError),
])
def test_bad_reassigned_parameter(rng, name, param, value, err):
    layer = trained(name, rng)
    setattr(layer, param, value)
    snap = snapshot(layer) if param != "running_var" else None
    with pytest.raises(err):
        layer(make_input(rng, (3, 6, 4, 5), np.float32))
    if snap is not None:
        assert_unchanged(layer, snap)


@pytest.mark.parametrize("make,err", [
    (lambda: cnorm.GroupNorm(4, 6), "divisible"),
    (lambda: cnorm.GroupNorm(0, 6), "num_groups"),
    (lambda: cnorm.LayerNorm(()), "normalized_shape"),
    (lambda: cnorm.LayerNorm((3, 0)), "normalized_shape"),
    (lambda: cnorm.RMSNorm(-1), "normalized_shape"),
    (lambda: cnorm.InstanceNorm2d(0), "num_features"),
])
def test_constructor_errors(make, err):
    with pytest.raises(ValueError, match=err):
        make()


def test_functional_errors_leave_arrays(rng):
    x = make_input(rng, (3, 6, 4, 5), np.float32)
    rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)
    with pytest.raises(ValueError, match="divisible"):
        cnorm.group_norm(x, 4)
    with pytest.raises(ValueError, match="required"):
        cnorm.instance_norm(x, use_input_stats=False)
    with pytest.raises(TypeError):
        cnorm.instance_norm(x, rm, rv.astype(np.float64))
    with pytest.raises(ValueError, match="spatial"):
        cnorm.instance_norm(x[:, :, :1, :1], rm, rv)
    np.testing.assert_array_equal(rm, 0)
    np.testing.assert_array_equal(rv, 1)
    with pytest.raises(ValueError, match="shape"):
        cnorm.layer_norm(x, 5, weight=np.ones(4, np.float32))
    with pytest.raises(ValueError, match="grad_output"):
        cnorm.layer_norm_backward(np.ones(3, np.float32), x, 5)
