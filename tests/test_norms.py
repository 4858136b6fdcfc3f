"""LayerNorm, RMSNorm, GroupNorm and InstanceNorm against the float64 NumPy reference, and
against torch when it is installed: several steps, affine variants, layouts, dtypes."""
import numpy as np
import pytest
from conftest import TOL, make_input
from reference import (
    RefInstanceNorm,
    channels_last,
    group_norm_ref,
    layer_norm_ref,
    rel_err,
)

import cnorm

# (x shape, normalized_shape): short rows (several row chunks in the backward), rows of at
# least 4096 values (column-block backward, several blocks), one row, sizes not SIMD multiples.
ROW_CASES = [((7, 5), (5,)), ((3, 4, 33), (33,)), ((2, 3, 5, 7), (3, 5, 7)),
             ((3000, 37), (37,)), ((3, 5000), (5000,)), ((2, 3, 4100), (3, 4100)),
             ((1, 9001), (9001,)), ((40, 768), (768,))]
# (x shape, num_groups): one and many samples (samples in parallel, or one sample's steps in
# parallel), groups over many statistics chunks, 2-D input, a group of one value.
GROUP_CASES = [((3, 6, 5), 2), ((2, 4, 7, 9), 4), ((2, 8, 40, 41), 2), ((1, 6, 130, 129), 3),
               ((5, 12, 3, 3), 3), ((4, 8), 2), ((16, 32, 20, 20), 8), ((2, 3, 1, 1), 3),
               ((2, 6, 3, 4, 5), 3)]
INSTANCE_CASES = [((3, 5, 9), 1), ((2, 3, 7, 9), 2), ((2, 3, 4, 5, 6), 3),
                  ((1, 4, 130, 129), 2), ((8, 16, 30, 30), 2), ((5, 9), 1), ((4, 7, 9), 2)]
AFFINE = [(True, True), (True, False), (False, False)]
INSTANCE_LAYERS = {1: cnorm.InstanceNorm1d, 2: cnorm.InstanceNorm2d, 3: cnorm.InstanceNorm3d}


def cid(case):
    return "x".join(map(str, case[0])) + f"-{case[1]}"


def randomize(layer, rng):
    """Parameters away from ones/zeros, so that a missing affine term shows."""
    for name in ("weight", "bias"):
        p = getattr(layer, name)
        if p is not None:
            p[...] = rng.uniform(0.5, 2, p.shape) * rng.choice([-1, 1], p.shape)


def check(got, want, dtype, what, factor=1.0, scale=0.0):
    """Error relative to max|want|, or to ``scale`` where that is larger (a gradient that is
    zero in exact arithmetic is only zero to rounding of its terms' size)."""
    if want is None:
        assert got is None, what
        return
    assert got is not None and got.dtype == dtype and got.shape == np.shape(want), what
    denom = max(np.max(np.abs(want), initial=0.0), scale)
    assert rel_err(got, want) * np.max(np.abs(want), initial=0.0) <= TOL[dtype] * factor * \
        max(denom, 1e-300), what


def inputs(rng, shape, dtype, step, offset=0.0):
    x = make_input(rng, shape, dtype, offset=offset) if len(shape) > 1 else \
        rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    if step == 1 and len(shape) >= 4:  # the second step in channels-last memory
        x, dy = channels_last(x), channels_last(dy)
    return x, dy


@pytest.mark.parametrize("case", ROW_CASES, ids=cid)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rms,affine,bias", [(False, *a) for a in AFFINE]
                         + [(True, True, False), (True, False, False)])
def test_row_norms_match_reference(rng, case, dtype, rms, affine, bias):
    shape, ns = case
    if rms:
        layer = cnorm.RMSNorm(ns, eps=1e-6, elementwise_affine=affine, dtype=dtype)
    else:
        layer = cnorm.LayerNorm(ns, elementwise_affine=affine, bias=bias, dtype=dtype)
    randomize(layer, rng)
    for step in range(3):
        if step == 2:
            layer.eval()  # no running statistics: the same computation
        x, dy = inputs(rng, shape, dtype, step, offset=5.0)
        x_before = x.copy()
        y, dx = layer(x), layer.backward(dy)
        ry, rdx, rgw, rgb = layer_norm_ref(x, dy, len(ns), layer.weight, layer.bias,
                                           layer.eps, rms)
        check(y, ry, dtype, "y")
        check(dx, rdx, dtype, "dx", 4)
        check(layer.grad_weight, rgw, dtype, "grad_weight", 4)
        check(layer.grad_bias, rgb, dtype, "grad_bias", 4)
        assert y.strides == x.strides and dx.strides == x.strides  # the input's layout
        np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("case", GROUP_CASES, ids=cid)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine,bias", AFFINE)
def test_group_norm_matches_reference(rng, case, dtype, affine, bias):
    shape, G = case
    layer = cnorm.GroupNorm(G, shape[1], affine=affine, bias=bias, dtype=dtype)
    randomize(layer, rng)
    for step in range(3):
        if step == 2:
            layer.eval()
        x, dy = inputs(rng, shape, dtype, step, offset=3.0)
        y, dx = layer(x), layer.backward(dy)
        ry, rdx, rgw, rgb, _, var = group_norm_ref(x, dy, G, layer.weight, layer.bias,
                                                   layer.eps)
        wmax = 1.0 if layer.weight is None else np.abs(layer.weight).max()
        check(y, ry, dtype, "y")
        check(dx, rdx, dtype, "dx", 4, np.abs(dy).max() * wmax / np.sqrt(var.min() + layer.eps))
        check(layer.grad_weight, rgw, dtype, "grad_weight", 4)
        check(layer.grad_bias, rgb, dtype, "grad_bias", 4)
        assert y.strides == x.strides and dx.strides == x.strides


@pytest.mark.parametrize("case", INSTANCE_CASES, ids=cid)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine,bias", AFFINE)
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("track", [False, True])
def test_instance_norm_matches_reference(rng, case, dtype, affine, bias, momentum, track):
    shape, dim = case
    C = shape[1] if len(shape) == dim + 2 else shape[0]  # unbatched: (C, *spatial)
    layer = INSTANCE_LAYERS[dim](C, momentum=momentum, affine=affine, bias=bias,
                                 track_running_stats=track, dtype=dtype)
    randomize(layer, rng)
    ref = RefInstanceNorm(C, momentum=momentum, affine=affine, bias=bias, track=track)
    ref.weight = None if layer.weight is None else layer.weight.astype(np.float64)
    ref.bias = None if layer.bias is None else layer.bias.astype(np.float64)
    for step in range(4):
        if step == 3:
            layer.eval()
            ref.training = False
        x, dy = inputs(rng, shape, dtype, step, offset=2.0)
        y, dx = layer(x), layer.backward(dy)
        batched = len(shape) == dim + 2
        xb, dyb = (x, dy) if batched else (x[None], dy[None])
        ry = ref.forward(xb)
        rdx, rgw, rgb = ref.backward(dyb)
        ry, rdx = (ry, rdx) if batched else (ry[0], rdx[0])
        check(y, ry, dtype, "y")
        check(dx, rdx, dtype, "dx", 4)
        check(layer.grad_weight, rgw, dtype, "grad_weight", 4)
        check(layer.grad_bias, rgb, dtype, "grad_bias", 4)
        if track:
            check(layer.running_mean, ref.running_mean, dtype, "running_mean")
            check(layer.running_var, ref.running_var, dtype, "running_var")
            assert int(layer.num_batches_tracked) == 0  # torch does not count for instance norm
        else:
            assert layer.running_mean is None and layer.running_var is None


def test_momentum_none_leaves_instance_running_stats(rng):
    layer = cnorm.InstanceNorm2d(3, momentum=None, track_running_stats=True)
    layer(make_input(rng, (2, 3, 4, 5), np.float32, offset=4.0))
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)


def test_group_norm_with_one_group_per_channel_is_instance_norm(rng):
    x = make_input(rng, (4, 6, 9, 11), np.float64)
    np.testing.assert_allclose(cnorm.group_norm(x, 6), cnorm.instance_norm(x), atol=1e-12)


def test_layer_norm_gradient_identities(rng):
    """Each row's dx sums to zero and (with eps = 0) is orthogonal to x_hat, without affine
    parameters."""
    x = make_input(rng, (50, 300), np.float64, offset=7.0)
    dy = rng.standard_normal(x.shape)
    dx, _, _ = cnorm.layer_norm_backward(dy, x, 300, eps=0.0)
    xhat = cnorm.layer_norm(x, 300, eps=0.0)
    np.testing.assert_allclose(dx.sum(axis=1), 0, atol=1e-11)
    np.testing.assert_allclose((dx * xhat).sum(axis=1), 0, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_forms_match_layers(rng, dtype):
    x = make_input(rng, (3, 6, 5, 7), dtype, offset=1.0)
    dy = rng.standard_normal(x.shape).astype(dtype)
    w = rng.uniform(0.5, 2, 6).astype(dtype)
    b = rng.uniform(-1, 1, 6).astype(dtype)
    cases = [
        (cnorm.LayerNorm((5, 7), dtype=dtype), lambda: cnorm.layer_norm(x, (5, 7), w2, b2),
         lambda: cnorm.layer_norm_backward(dy, x, (5, 7), w2, b2)),
        (cnorm.RMSNorm(7, dtype=dtype), lambda: cnorm.rms_norm(x, 7, w1),
         lambda: cnorm.rms_norm_backward(dy, x, 7, w1) + (None,)),
        (cnorm.GroupNorm(3, 6, dtype=dtype), lambda: cnorm.group_norm(x, 3, w, b),
         lambda: cnorm.group_norm_backward(dy, x, 3, w, b)),
        (cnorm.InstanceNorm2d(6, affine=True, dtype=dtype),
         lambda: cnorm.instance_norm(x, weight=w, bias=b),
         lambda: cnorm.instance_norm_backward(dy, x, weight=w, bias=b)),
    ]
    w2 = rng.uniform(0.5, 2, (5, 7)).astype(dtype)
    b2 = rng.uniform(-1, 1, (5, 7)).astype(dtype)
    w1 = rng.uniform(0.5, 2, 7).astype(dtype)
    for layer, fwd, bwd in cases:
        params = {"LayerNorm": (w2, b2), "RMSNorm": (w1, None)}.get(type(layer).__name__, (w, b))
        layer.weight[...] = params[0]
        if params[1] is not None:
            layer.bias[...] = params[1]
        y = layer(x)
        dx = layer.backward(dy)
        fdx, fgw, fgb = bwd()
        np.testing.assert_array_equal(fwd(), y)
        np.testing.assert_array_equal(fdx, dx)
        np.testing.assert_array_equal(fgw, layer.grad_weight)
        if fgb is not None:
            np.testing.assert_array_equal(fgb, layer.grad_bias)


def test_instance_norm_functional_updates_running_arrays(rng):
    x = make_input(rng, (4, 3, 6, 7), np.float64, offset=2.0)
    rm, rv = np.zeros(3), np.ones(3)
    cnorm.instance_norm(x, rm, rv, momentum=0.25)
    ref = RefInstanceNorm(3, momentum=0.25, track=True)
    ref.forward(x)
    np.testing.assert_allclose(rm, ref.running_mean, rtol=1e-13)
    np.testing.assert_allclose(rv, ref.running_var, rtol=1e-13)
    y = cnorm.instance_norm(x, rm, rv, use_input_stats=False)
    np.testing.assert_allclose(y, (x - rm.reshape(1, 3, 1, 1)) / np.sqrt(rv.reshape(1, 3, 1, 1)
                                                                         + 1e-5), atol=1e-12)


def test_rms_norm_default_eps_is_machine_epsilon(rng):
    x = np.full((2, 4), 1e-5, np.float32)  # mean(x^2) = 1e-10, far below eps32 = 1.19e-7
    want = x / np.sqrt(1e-10 + np.finfo(np.float32).eps)
    np.testing.assert_allclose(cnorm.RMSNorm(4)(x), want, rtol=1e-6)
    x64 = np.full((2, 4), 1e-5)
    np.testing.assert_allclose(cnorm.rms_norm(x64, 4),
                               x64 / np.sqrt(1e-10 + np.finfo(np.float64).eps), rtol=1e-12)


REPRS = [
    (lambda: cnorm.LayerNorm(768), "LayerNorm((768,), eps=1e-05, elementwise_affine=True, "
     "bias=True)"),
    (lambda: cnorm.LayerNorm((3, 4), bias=False),
     "LayerNorm((3, 4), eps=1e-05, elementwise_affine=True, bias=False)"),
    (lambda: cnorm.LayerNorm(5, elementwise_affine=False),
     "LayerNorm((5,), eps=1e-05, elementwise_affine=False, bias=False)"),
    (lambda: cnorm.GroupNorm(32, 64), "GroupNorm(32, 64, eps=1e-05, affine=True, bias=True)"),
    (lambda: cnorm.GroupNorm(2, 4, affine=False),
     "GroupNorm(2, 4, eps=1e-05, affine=False, bias=False)"),
    (lambda: cnorm.InstanceNorm2d(64), "InstanceNorm2d(64, eps=1e-05, momentum=0.1, "
     "affine=False, bias=False, track_running_stats=False)"),
    (lambda: cnorm.InstanceNorm1d(3, affine=True, bias=False), "InstanceNorm1d(3, eps=1e-05, "
     "momentum=0.1, affine=True, bias=False, track_running_stats=False)"),
    (lambda: cnorm.InstanceNorm3d(3, momentum=None, track_running_stats=True),
     "InstanceNorm3d(3, eps=1e-05, momentum=None, affine=False, bias=False, "
     "track_running_stats=True)"),
    (lambda: cnorm.RMSNorm(768), "RMSNorm((768,), eps=None, elementwise_affine=True)"),
    (lambda: cnorm.RMSNorm([3, 4], eps=1e-6, elementwise_affine=False),
     "RMSNorm((3, 4), eps=1e-06, elementwise_affine=False)"),
]


@pytest.mark.parametrize("make,text", REPRS)
def test_repr_is_torchs(make, text):
    """The strings torch 2.13 prints for the same constructors (checked against torch in
    test_norms_torch.py)."""
    assert repr(make()) == text


@pytest.mark.parametrize("make,keys", [
    (lambda: cnorm.LayerNorm(4), ["weight", "bias"]),
    (lambda: cnorm.LayerNorm(4, bias=False), ["weight"]),
    (lambda: cnorm.RMSNorm(4), ["weight"]),
    (lambda: cnorm.GroupNorm(2, 4), ["weight", "bias"]),
    (lambda: cnorm.InstanceNorm2d(4), []),
    (lambda: cnorm.InstanceNorm2d(4, affine=True, track_running_stats=True),
     ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]),
])
def test_state_dict_round_trip(rng, make, keys):
    layer = make()
    state = layer.state_dict()
    assert list(state) == keys
    new = {k: rng.uniform(0.5, 2, v.shape).astype(v.dtype) for k, v in state.items()}
    other = make()
    other.load_state_dict(new)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, new[k])
