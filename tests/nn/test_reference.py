"""Every layer against the independent float64 NumPy reference: several steps, affine
variants, momentum and tracking, dtypes, layouts, eval mode, and float32 accuracy at large
offsets."""
import numpy as np
import pytest

import cnorm
from cnorm.testing import (
    FAMILY_4D,
    RefBatchNorm,
    RefInstanceNorm,
    channel_axes,
    channels_last,
    check,
    group_norm_ref,
    layer_norm_ref,
    make,
    make_input,
    reference,
    rel_err,
)

BN = {1: cnorm.BatchNorm1d, 2: cnorm.BatchNorm2d, 3: cnorm.BatchNorm3d}
IN = {1: cnorm.InstanceNorm1d, 2: cnorm.InstanceNorm2d, 3: cnorm.InstanceNorm3d}
# Batch-norm shapes: not multiples of SIMD widths, C = 1, H*W = 1, and each layout with several
# chunks per channel: plane (H*W >= 512), block (1 < H*W < 512) and rows (H*W = 1); sizes
# above the parallel cut-off.
BN_SHAPES = [(1, s) for s in [(7, 3), (5, 4, 9), (2, 1, 33), (20000, 5), (3, 5, 1),
                              (100, 2, 50)]] + \
    [(2, s) for s in [(3, 5, 7, 9), (4, 3, 1, 1), (2, 1, 13, 11), (3, 2, 130, 129),
                      (70, 3, 10, 10)]] + [(3, s) for s in [(2, 3, 4, 5, 6), (3, 2, 1, 1, 1)]]
# (x shape, normalized_shape): short rows (several row chunks in the backward), rows of at
# least 4096 values (column-block backward, several blocks), one row, sizes not SIMD multiples.
ROW_CASES = [((7, 5), (5,)), ((3, 4, 33), (33,)), ((2, 3, 5, 7), (3, 5, 7)),
             ((3000, 37), (37,)), ((3, 5000), (5000,)), ((2, 3, 4100), (3, 4100)),
             ((1, 9001), (9001,)), ((40, 768), (768,))]
# (x shape, num_groups): one and many samples, groups over many statistics chunks, 2-D input,
# a group of one value.
GROUP_CASES = [((3, 6, 5), 2), ((2, 4, 7, 9), 4), ((2, 8, 40, 41), 2), ((1, 6, 130, 129), 3),
               ((5, 12, 3, 3), 3), ((4, 8), 2), ((16, 32, 20, 20), 8), ((2, 3, 1, 1), 3),
               ((2, 6, 3, 4, 5), 3)]
# (x shape, dim): batched and unbatched
INSTANCE_CASES = [((3, 5, 9), 1), ((2, 3, 7, 9), 2), ((2, 3, 4, 5, 6), 3),
                  ((1, 4, 130, 129), 2), ((8, 16, 30, 30), 2), ((5, 9), 1), ((4, 7, 9), 2)]
AFFINE = [(True, True), (True, False), (False, False)]


def cid(case):
    return "x".join(map(str, case[0])) + f"-{case[1]}"


def randomize(layer, rng):
    """Parameters away from ones/zeros (and of both signs), so that a missing term shows."""
    for name in ("weight", "bias"):
        p = getattr(layer, name)
        if p is not None:
            p[...] = rng.uniform(0.5, 2, p.shape) * rng.choice([-1, 1], p.shape)


def steps(rng, shape, dtype, n, offset, models=()):
    """n (x, dy) pairs; the second in channels-last memory when the rank allows; before the
    last, ``models`` (layer and float64 model) switch to eval mode."""
    for step in range(n):
        if step == n - 1:
            for m in models:
                m.eval()
        x = make_input(rng, shape, dtype, offset=offset)
        dy = rng.standard_normal(shape).astype(dtype)
        if step == 1 and len(shape) >= 4:
            x, dy = channels_last(x), channels_last(dy)
        yield step, x, dy


def check_step(layer, x, y, dx, want, dtype, dx_scale=0.0):
    """y, dx and the parameter gradients against want = (y, dx, grad_weight, grad_bias), and
    y, dx in x's memory layout."""
    check(y, want[0], dtype, "y")
    check(dx, want[1], dtype, "dx", 4, dx_scale)
    check(layer.grad_weight, want[2], dtype, "grad_weight", 4)
    check(layer.grad_bias, want[3], dtype, "grad_bias", 4)
    assert y.strides == x.strides and dx.strides == x.strides


def paired(layer_cls, model_cls, C, dtype, rng, **kw):
    """A layer with random parameters and the float64 model holding the same ones."""
    layer = layer_cls(C, track_running_stats=kw["track"], dtype=dtype,
                      **{k: v for k, v in kw.items() if k != "track"})
    randomize(layer, rng)
    model = model_cls(C, **kw)
    model.weight = None if layer.weight is None else layer.weight.astype(np.float64)
    model.bias = None if layer.bias is None else layer.bias.astype(np.float64)
    return layer, model


@pytest.mark.parametrize("dim,shape", BN_SHAPES,
                         ids=[f"{d}d-{'x'.join(map(str, s))}" for d, s in BN_SHAPES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine,bias", AFFINE)
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("track", [True, False])
def test_batch_norm(rng, dim, shape, dtype, affine, bias, momentum, track):
    layer, ref = paired(BN[dim], RefBatchNorm, shape[1], dtype, rng, momentum=momentum,
                        affine=affine, bias=bias, track=track)
    for step, x, dy in steps(rng, shape, dtype, 4, 0.0, (layer, ref)):
        x_before = x.copy()
        y, dx = layer(x), layer.backward(dy)
        ry = ref.forward(x)
        rdx, rgw, rgb = ref.backward(dy)
        check(y, ry, dtype, "y", 4)
        check(dx, rdx, dtype, "dx", 20)
        check(layer.grad_weight, None if layer.weight is None else rgw, dtype, "gw", 20)
        check(layer.grad_bias, None if layer.bias is None else rgb, dtype, "gb", 20)
        if track:
            check(layer.running_mean, ref.running_mean, dtype, "running_mean", 4)
            check(layer.running_var, ref.running_var, dtype, "running_var", 4)
            assert int(layer.num_batches_tracked) == ref.num_batches_tracked
        else:
            assert layer.running_mean is None and layer.num_batches_tracked is None
        assert y.strides == x.strides and dx.strides == x.strides  # the input's layout
        np.testing.assert_array_equal(x, x_before)  # inputs are never modified


@pytest.mark.parametrize("case", ROW_CASES, ids=cid)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rms,affine,bias", [(False, *a) for a in AFFINE]
                         + [(True, True, False), (True, False, False)])
def test_row_norms(rng, case, dtype, rms, affine, bias):
    shape, ns = case
    if rms:
        layer = cnorm.RMSNorm(ns, eps=1e-6, elementwise_affine=affine, dtype=dtype)
    else:
        layer = cnorm.LayerNorm(ns, elementwise_affine=affine, bias=bias, dtype=dtype)
    randomize(layer, rng)
    for step, x, dy in steps(rng, shape, dtype, 3, 5.0, (layer,)):  # eval: the same numbers
        y, dx = layer(x), layer.backward(dy)
        check_step(layer, x, y, dx, layer_norm_ref(x, dy, len(ns), layer.weight, layer.bias,
                                                   layer.eps, rms), dtype)


@pytest.mark.parametrize("case", GROUP_CASES, ids=cid)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine,bias", AFFINE)
def test_group_norm(rng, case, dtype, affine, bias):
    shape, G = case
    layer = cnorm.GroupNorm(G, shape[1], affine=affine, bias=bias, dtype=dtype)
    randomize(layer, rng)
    for step, x, dy in steps(rng, shape, dtype, 3, 3.0, (layer,)):
        y, dx = layer(x), layer.backward(dy)
        *want, _, var = group_norm_ref(x, dy, G, layer.weight, layer.bias, layer.eps)
        wmax = 1.0 if layer.weight is None else np.abs(layer.weight).max()
        check_step(layer, x, y, dx, want, dtype,
                   np.abs(dy).max() * wmax / np.sqrt(var.min() + layer.eps))


@pytest.mark.parametrize("case", INSTANCE_CASES, ids=cid)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine,bias", AFFINE)
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("track", [False, True])
def test_instance_norm(rng, case, dtype, affine, bias, momentum, track):
    shape, dim = case
    batched = len(shape) == dim + 2
    layer, ref = paired(IN[dim], RefInstanceNorm, shape[1] if batched else shape[0], dtype,
                        rng, momentum=momentum, affine=affine, bias=bias, track=track)
    for step, x, dy in steps(rng, shape, dtype, 4, 2.0, (layer, ref)):
        y, dx = layer(x), layer.backward(dy)
        xb, dyb = (x, dy) if batched else (x[None], dy[None])
        ry = ref.forward(xb)
        rdx, rgw, rgb = ref.backward(dyb)
        check_step(layer, x, y, dx, (ry if batched else ry[0], rdx if batched else rdx[0], rgw,
                                     rgb), dtype)
        if track:
            check(layer.running_mean, ref.running_mean, dtype, "running_mean")
            check(layer.running_var, ref.running_var, dtype, "running_var")
            assert int(layer.num_batches_tracked) == 0  # torch does not count for instance norm
        else:
            assert layer.running_mean is None and layer.running_var is None


@pytest.mark.parametrize("offset", [1e4, 1e6])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("kind", FAMILY_4D)
def test_float32_accuracy_at_large_offsets(rng, kind, layout, offset):
    """float32 data of std 1 around ``offset``: outputs within 1e-5 of the float64 reference on
    the same data (float32 rounding of the result is 6e-8 relative); torch 2.13 is off by
    about 1e-2 at 1e6."""
    shape = (8, 16, 24, 24)
    x = (offset + rng.standard_normal(shape)).astype(np.float32)
    x = channels_last(x) if layout == "nhwc" else x
    layer = make(kind, shape, np.float32, rng)
    y = layer(x)
    ry, _ = reference(kind, layer, x, x)
    assert np.max(np.abs(y - ry)) < 1e-5 * max(1.0, np.abs(ry).max() / 4)


@pytest.mark.parametrize("offset", [1e4, 1e6])
@pytest.mark.parametrize("shape,layout", [((16, 8, 32, 32), "nchw"), ((16, 8, 32, 32), "nhwc"),
                                          ((4096, 16), "nc"), ((2, 3, 70000), "ncl")])
def test_batch_norm_running_statistics_at_large_offsets(rng, offset, shape, layout):
    """running_var (momentum=None after one batch: the unbiased batch variance) and the eval
    forward with those statistics keep float32 accuracy at large offsets."""
    x = (offset + rng.standard_normal(shape)).astype(np.float32)
    x = channels_last(x) if layout == "nhwc" else x
    layer = BN[max(len(shape) - 2, 1)](shape[1], momentum=None)
    layer(x)
    xd = x.astype(np.float64)
    ax = channel_axes(x)
    uvar = xd.var(axis=ax, ddof=1)
    assert np.max(np.abs(layer.running_var - uvar) / uvar) <= 2e-6
    assert np.max(np.abs(layer.running_mean - xd.mean(axis=ax)) / offset) <= 1e-7
    layer.eval()
    rm, rv = (layer.running_mean.astype(np.float64), layer.running_var.astype(np.float64))
    shp = (1, -1) + (1,) * (x.ndim - 2)
    want = (xd - rm.reshape(shp)) / np.sqrt(rv.reshape(shp) + 1e-5)
    assert np.max(np.abs(layer(x) - want)) <= 1e-5


def test_batch_norm_training_dx_sums_to_zero(rng):
    """In training mode, each channel's dx sums to 0 (the mean is subtracted)."""
    layer = cnorm.BatchNorm2d(4, dtype=np.float64)
    layer.weight[...] = [0.5, 1, 2, 3]
    x = make_input(rng, (6, 4, 5, 7), np.float64, offset=10)
    layer(x)
    dx = layer.backward(rng.standard_normal(x.shape))
    assert np.max(np.abs(dx.sum(axis=(0, 2, 3)))) < 1e-12
    assert np.max(np.abs(dx)) > 0.1


def test_layer_norm_gradient_identities(rng):
    """Each row's dx sums to zero and (with eps = 0) is orthogonal to x_hat."""
    x = make_input(rng, (50, 300), np.float64, offset=7.0)
    dy = rng.standard_normal(x.shape)
    dx, _, _ = cnorm.layer_norm_backward(dy, x, 300, eps=0.0)
    xhat = cnorm.layer_norm(x, 300, eps=0.0)
    np.testing.assert_allclose(dx.sum(axis=1), 0, atol=1e-11)
    np.testing.assert_allclose((dx * xhat).sum(axis=1), 0, atol=1e-10)


def test_batch_norm_momentum_none_is_cumulative(rng):
    layer = cnorm.BatchNorm1d(3, momentum=None, dtype=np.float64)
    batches = [make_input(rng, (20, 3), np.float64, offset=5) for _ in range(3)]
    for b in batches:
        layer(b)
    np.testing.assert_allclose(layer.running_mean, np.concatenate(batches).mean(0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var,
                               np.mean([b.var(0, ddof=1) for b in batches], axis=0), rtol=1e-12)
    layer.eval()
    x = make_input(rng, (1, 3), np.float64)  # one sample is fine in eval mode
    np.testing.assert_allclose(layer(x), (x - layer.running_mean)
                               / np.sqrt(layer.running_var + 1e-5), rtol=1e-12)


def test_instance_norm_momentum_none_leaves_running_stats(rng):
    layer = cnorm.InstanceNorm2d(3, momentum=None, track_running_stats=True)
    layer(make_input(rng, (2, 3, 4, 5), np.float32, offset=4.0))
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)


def test_group_norm_with_one_channel_per_group_is_instance_norm(rng):
    x = make_input(rng, (4, 6, 9, 11), np.float64)
    np.testing.assert_allclose(cnorm.group_norm(x, 6), cnorm.instance_norm(x), atol=1e-12)


def test_rms_norm_default_eps_is_machine_epsilon():
    x = np.full((2, 4), 1e-5, np.float32)  # mean(x^2) = 1e-10, far below eps32 = 1.19e-7
    np.testing.assert_allclose(cnorm.RMSNorm(4)(x),
                               x / np.sqrt(1e-10 + np.finfo(np.float32).eps), rtol=1e-6)
    x64 = np.full((2, 4), 1e-5)
    np.testing.assert_allclose(cnorm.rms_norm(x64, 4),
                               x64 / np.sqrt(1e-10 + np.finfo(np.float64).eps), rtol=1e-12)


def test_batch_norm_empty_batch():
    layer = cnorm.BatchNorm2d(3)
    y = layer(np.zeros((0, 3, 4, 4), np.float32))
    assert y.shape == (0, 3, 4, 4)
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)
    assert int(layer.num_batches_tracked) == 1  # torch counts the call
    dx = layer.backward(np.zeros((0, 3, 4, 4), np.float32))
    assert dx.shape == (0, 3, 4, 4)
    np.testing.assert_array_equal(layer.grad_bias, 0)


@pytest.mark.parametrize("shape,axis", [
    ((4, 3, 5, 6), (0, 2, 3)), ((4, 3, 5, 6), 1), ((4, 3, 5, 6), None), ((4, 3, 5, 6), (1, 3)),
    ((7, 9), 0), ((7, 9), -1), ((100, 200), (0,)), ((2, 3, 4), (0, 2)), ((0, 3), 0),
])
@pytest.mark.parametrize("layout", ["c", "f", "nhwc"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore:Degrees of freedom:RuntimeWarning",
                            "ignore:Mean of empty slice:RuntimeWarning")
def test_moments(rng, shape, axis, layout, dtype):
    x = (rng.standard_normal(shape) * 3 + 50).astype(dtype)
    x = np.asfortranarray(x) if layout == "f" else (channels_last(x) if layout == "nhwc"
                                                     and x.ndim > 2 else x)
    mean, var = cnorm.moments(x, axis)
    xd = x.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty reduction: NaN, like NumPy
        rmean, rvar = xd.mean(axis=axis), xd.var(axis=axis)
    assert mean.dtype == dtype and var.dtype == dtype
    assert mean.shape == np.shape(rmean) and var.shape == np.shape(rvar)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(mean, rmean, rtol=tol)
    np.testing.assert_allclose(var, rvar, rtol=10 * tol)


@pytest.mark.parametrize("offset", [1e4, 1e6])
def test_moments_large_offset(rng, offset):
    x = (offset + 0.5 * rng.standard_normal((64, 3, 50, 50))).astype(np.float32)
    mean, var = cnorm.moments(x, (0, 2, 3))
    xd = x.astype(np.float64)
    assert rel_err(var, xd.var(axis=(0, 2, 3))) < 2e-6
    assert rel_err(mean, xd.mean(axis=(0, 2, 3))) < 1e-7
