"""Functional forms, kernel steps, memory layouts, state_dict and repr."""
import numpy as np
import pytest
from conftest import make_input
from reference import RefBatchNorm, bn_backward, bn_forward, channels_last, rel_err

import cnorm
from cnorm._backend import kernels as _kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_functional(rng, dtype, training):
    x = make_input(rng, (5, 3, 4, 6), dtype, offset=3)
    rm, rv = rng.uniform(-1, 1, 3).astype(dtype), rng.uniform(0.5, 2, 3).astype(dtype)
    w, b = rng.uniform(0.5, 2, 3).astype(dtype), rng.uniform(-1, 1, 3).astype(dtype)
    rm0, rv0 = rm.astype(np.float64), rv.astype(np.float64)
    y = cnorm.batch_norm(x, rm, rv, w, b, training=training, momentum=0.25, eps=1e-3)
    xd = x.astype(np.float64)
    if training:
        mean, var = xd.mean(axis=(0, 2, 3)), xd.var(axis=(0, 2, 3))
        n = xd.size // 3
        assert rel_err(rm, 0.75 * rm0 + 0.25 * mean) < 1e-6
        assert rel_err(rv, 0.75 * rv0 + 0.25 * var * n / (n - 1)) < 1e-6
    else:
        mean, var = rm0, rv0
        np.testing.assert_array_equal(rm, rm0.astype(dtype))  # untouched in eval
    assert y.dtype == dtype
    assert rel_err(y, bn_forward(xd, mean, var, w, b, 1e-3)) < 1e-5
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx, gw, gb = cnorm.batch_norm_backward(dy, x, rm0.astype(dtype), rv0.astype(dtype), w, b,
                                           training=training, eps=1e-3)
    rdx, rgw, rgb = bn_backward(xd, dy, mean, var, w, 1e-3, training)
    assert rel_err(dx, rdx) < 1e-5 and rel_err(gw, rgw) < 1e-5 and rel_err(gb, rgb) < 1e-5
    assert gw.dtype == dtype and dx.dtype == dtype
    _, gw_none, gb_none = cnorm.batch_norm_backward(dy, x, rm, rv, training=training)
    assert gw_none is None and gb_none is None


@pytest.mark.parametrize("shape,axis", [
    ((4, 3, 5, 6), (0, 2, 3)), ((4, 3, 5, 6), 1), ((4, 3, 5, 6), None), ((4, 3, 5, 6), (1, 3)),
    ((7, 9), 0), ((7, 9), -1), ((100, 200), (0,)), ((2, 3, 4), (0, 2)), ((0, 3), 0),
])
@pytest.mark.parametrize("layout", ["c", "f", "channels_last"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore:Degrees of freedom:RuntimeWarning",
                            "ignore:Mean of empty slice:RuntimeWarning")
def test_moments(rng, shape, axis, layout, dtype):
    x = (rng.standard_normal(shape) * 3 + 50).astype(dtype)
    if layout == "f":
        x = np.asfortranarray(x)
    elif layout == "channels_last" and x.ndim > 2:
        x = channels_last(x)
    mean, var = cnorm.moments(x, axis)
    xd = x.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty reduction: NaN, like NumPy
        rmean, rvar = xd.mean(axis=axis), xd.var(axis=axis)
    assert mean.dtype == dtype and var.dtype == dtype
    assert mean.shape == np.shape(rmean) and var.shape == np.shape(rvar)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(mean, rmean, rtol=tol)
    np.testing.assert_allclose(var, rvar, rtol=10 * tol)


def test_moments_rejects():
    with pytest.raises(TypeError):
        cnorm.moments(np.arange(10), 0)
    with pytest.raises(np.exceptions.AxisError):
        cnorm.moments(np.ones((2, 3)), 2)


def test_partial_merge_steps_compose(rng):
    """Statistics of a batch = merge of the partials of its parts (streamed in chunks)."""
    x = make_input(rng, (6, 4, 50, 70), np.float64, offset=1e3)
    parts = [x[:2], x[2:3], x[3:]]
    counts, means, m2 = [], [], []
    for p in parts:
        c, m, s = _kernels.partial_stats(p.reshape(p.shape[0], 4, -1))
        counts.append(c)
        means.append(m)
        m2.append(s)
    n, mean, M2 = _kernels.merge_stats(np.concatenate(counts), np.concatenate(means),
                                       np.concatenate(m2))
    assert n == x.size // 4
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-14)
    np.testing.assert_allclose(M2 / n, x.var(axis=(0, 2, 3)), rtol=1e-12)


def awkward_layouts(x):
    yield "c", x
    yield "fortran", np.asfortranarray(x)
    yield "negative-strides", x[::-1, ..., ::-1].copy()[::-1, ..., ::-1]
    big = np.zeros((x.shape[0] * 2,) + x.shape[1:-1] + (x.shape[-1] + 3,), x.dtype)
    big[::2, ..., 1:-2] = x
    yield "strided-slice", big[::2, ..., 1:-2]
    ro = x.copy()
    ro.flags.writeable = False
    yield "read-only", ro
    yield "byte-swapped", x.astype(x.dtype.newbyteorder())
    if x.ndim > 2:
        yield "channels-last", channels_last(x)


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (6, 5), (3, 4, 7)])
def test_awkward_layouts_give_same_results(rng, shape):
    x = make_input(rng, shape, np.float32, offset=5)
    dy = rng.standard_normal(shape).astype(np.float32)
    ref = RefBatchNorm(shape[1])
    y_ref, dx_ref = ref.forward(x), ref.backward(dy)[0]
    cls = {2: cnorm.BatchNorm1d, 3: cnorm.BatchNorm1d, 4: cnorm.BatchNorm2d}[len(shape)]
    for name, xa in awkward_layouts(x):
        before = xa.copy()
        layer = cls(shape[1])
        y = layer(xa)
        dx = layer.backward(dy)
        assert rel_err(y, y_ref) < 1e-5, name
        assert rel_err(dx, dx_ref) < 1e-5, name
        assert y.dtype == np.float32 and y.dtype.isnative, name
        np.testing.assert_array_equal(xa, before)


def test_output_is_new_array(rng):
    x = make_input(rng, (4, 3, 5, 6), np.float32)
    layer = cnorm.BatchNorm2d(3)
    y = layer(x)
    assert not np.shares_memory(x, y)
    assert not np.shares_memory(layer(x), y)


@pytest.mark.parametrize("kwargs,expected", [
    (dict(), "BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, bias=True, "
             "track_running_stats=True)"),
    (dict(momentum=None, bias=False), "BatchNorm2d(64, eps=1e-05, momentum=None, affine=True, "
                                      "bias=False, track_running_stats=True)"),
    (dict(eps=1e-3, affine=False, track_running_stats=False),
     "BatchNorm2d(64, eps=0.001, momentum=0.1, affine=False, bias=False, "
     "track_running_stats=False)"),
])
def test_repr(kwargs, expected):
    assert repr(cnorm.BatchNorm2d(64, **kwargs)) == expected


@pytest.mark.parametrize("kwargs,keys", [
    (dict(), ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]),
    (dict(bias=False), ["weight", "running_mean", "running_var", "num_batches_tracked"]),
    (dict(affine=False), ["running_mean", "running_var", "num_batches_tracked"]),
    (dict(track_running_stats=False), ["weight", "bias"]),
])
def test_state_dict(rng, kwargs, keys):
    layer = cnorm.BatchNorm1d(3, **kwargs)
    layer(make_input(rng, (8, 3), np.float32))
    sd = layer.state_dict()
    assert list(sd) == keys
    for k, v in sd.items():
        assert isinstance(v, np.ndarray)
        assert not np.shares_memory(v, getattr(layer, k))  # a snapshot, not a view
    if "num_batches_tracked" in sd:
        assert sd["num_batches_tracked"].dtype == np.int64 and sd["num_batches_tracked"] == 1
    other = cnorm.BatchNorm1d(3, **kwargs)
    other.load_state_dict(sd)
    for k in keys:
        np.testing.assert_array_equal(getattr(other, k), sd[k])


def test_train_eval_return_layer():
    layer = cnorm.BatchNorm2d(2)
    assert layer.training is True
    assert layer.eval() is layer and layer.training is False
    assert layer.train() is layer and layer.training is True
    assert layer.train(False).training is False


def test_batch_norm_training_without_running_stats(rng):
    x = make_input(rng, (6, 3, 4), np.float64)
    y = cnorm.batch_norm(x, None, None, training=True)
    np.testing.assert_allclose(y, bn_forward(x, x.mean(axis=(0, 2)), x.var(axis=(0, 2)),
                                             None, None, 1e-5), rtol=1e-12, atol=1e-12)
    rv = np.ones(3)
    cnorm.batch_norm(x, None, rv, training=True, momentum=1.0)  # only the variance tracked
    np.testing.assert_allclose(rv, x.var(axis=(0, 2), ddof=1), rtol=1e-12)


@pytest.mark.parametrize("shape,layout", [((5, 6, 30, 40), "nchw"), ((5, 6, 30, 40), "nhwc"),
                                          ((40, 7, 9), "nchw"), ((300, 20), "nchw")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_steps_compose_to_the_fused_kernels(rng, shape, layout, dtype):
    """partial -> merge -> finalize -> normalize, and backward_sums -> backward_apply, give
    bit for bit what the fused layer kernels give (the steps are the same code)."""
    x = make_input(rng, shape, dtype, offset=20)
    if layout == "nhwc":
        x = channels_last(x)
    C = shape[1]
    w = rng.uniform(0.5, 2, C).astype(dtype)
    layer = (cnorm.BatchNorm1d if x.ndim < 4 else cnorm.BatchNorm2d)(C, dtype=dtype)
    layer.weight[...] = w
    y = layer(x)
    dy = rng.standard_normal(shape).astype(dtype)
    dx = layer.backward(dy)

    x3 = layer._saved.x3
    n, mean, m2 = _kernels.merge_stats(*_kernels.partial_stats(x3))
    invstd = 1.0 / np.sqrt(m2 / n + layer.eps)
    y3 = np.empty_like(x3)
    _kernels.normalize(x3, mean, invstd * w, np.zeros(C), y3)
    assert y3.tobytes() == layer._saved.layout.view(y).tobytes()

    dy3 = layer._saved.layout.view(dy)
    sdy, sdyx = _kernels.backward_sums(x3, dy3, mean)
    k1 = w.astype(np.float64) * invstd
    dx3 = np.empty_like(x3)
    _kernels.backward_apply(x3, dy3, mean, k1, -k1 * invstd * invstd * sdyx / n, -k1 * sdy / n,
                            dx3)
    assert dx3.tobytes() == layer._saved.layout.view(dx).tobytes()
    np.testing.assert_array_equal(layer.grad_bias, sdy.astype(dtype))
