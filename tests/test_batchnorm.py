"""BatchNorm layers against the independent float64 reference, over a grid of cases."""
import numpy as np
import pytest
from conftest import LAYERS, SHAPE_PARAMS, TOL, make_input
from reference import RefBatchNorm, channels_last, rel_err

AFFINE = [pytest.param((True, True), id="affine"), pytest.param((True, False), id="nobias"),
          pytest.param((False, False), id="noaffine")]


@pytest.mark.parametrize("dim,shape", SHAPE_PARAMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
@pytest.mark.parametrize("track", [True, False])
def test_matches_reference(rng, dim, shape, dtype, affine, momentum, track):
    C = shape[1]
    layer = LAYERS[dim](C, momentum=momentum, affine=affine[0], bias=affine[1],
                        track_running_stats=track, dtype=dtype)
    ref = RefBatchNorm(C, momentum=momentum, affine=affine[0], bias=affine[1], track=track)
    if affine[0]:  # non-trivial parameters, shared by both
        layer.weight[...] = rng.uniform(0.5, 2, C)
        ref.weight = layer.weight.astype(np.float64)
        if affine[1]:
            layer.bias[...] = rng.uniform(-1, 1, C)
            ref.bias = layer.bias.astype(np.float64)
    tol = TOL[dtype]
    for step in range(4):
        if step == 3:
            layer.eval()
            ref.training = False
        x = make_input(rng, shape, dtype)
        x_before = x.copy()
        y = layer(x)
        assert y.dtype == dtype and y.shape == x.shape
        assert rel_err(y, ref.forward(x)) < 4 * tol, f"forward, step {step}"
        dy = rng.standard_normal(shape).astype(dtype)
        dx = layer.backward(dy)
        rdx, rgw, rgb = ref.backward(dy)
        assert dx.dtype == dtype and dx.shape == x.shape
        assert rel_err(dx, rdx) < 20 * tol, f"dx, step {step}"
        if affine[0]:
            assert layer.grad_weight.dtype == dtype
            assert rel_err(layer.grad_weight, rgw) < 20 * tol
        else:
            assert layer.grad_weight is None
        if affine[1]:
            assert rel_err(layer.grad_bias, rgb) < 20 * tol
        else:
            assert layer.grad_bias is None
        if track:
            assert layer.running_mean.dtype == dtype
            assert rel_err(layer.running_mean, ref.running_mean) < 4 * tol
            assert rel_err(layer.running_var, ref.running_var) < 4 * tol
            assert int(layer.num_batches_tracked) == ref.num_batches_tracked
        else:
            assert layer.running_mean is None and layer.num_batches_tracked is None
        np.testing.assert_array_equal(x, x_before)  # inputs are never modified


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 6, 9, 11), (3, 5, 40, 300), (2, 3, 4, 5, 6)])
@pytest.mark.parametrize("training", [True, False])
def test_channels_last_matches_contiguous(rng, dtype, shape, training):
    """Channels-last input gives the same numbers as C order, and keeps its layout."""
    C = shape[1]
    running_mean = rng.uniform(-1, 1, C)

    def make():
        layer = LAYERS[len(shape) - 2](C, dtype=dtype)
        layer.running_mean[...] = running_mean
        return layer.train(training)

    a, b = make(), make()
    ref = RefBatchNorm(C)
    ref.training = training
    ref.running_mean = a.running_mean.astype(np.float64)
    x = make_input(rng, shape, dtype, offset=3.0)
    dy = rng.standard_normal(shape).astype(dtype)
    y_c, dx_c = a(x), a.backward(dy)
    y, dx = b(channels_last(x)), b.backward(channels_last(dy))
    assert rel_err(y, ref.forward(x)) < 4 * TOL[dtype]
    assert rel_err(dx, ref.backward(dy)[0]) < 20 * TOL[dtype]
    assert rel_err(y, y_c) < 4 * TOL[dtype] and rel_err(dx, dx_c) < 20 * TOL[dtype]
    assert rel_err(b.running_var, ref.running_var) < 4 * TOL[dtype]
    assert rel_err(b.grad_weight, a.grad_weight) < 20 * TOL[dtype]
    for out in (y, dx):
        assert np.moveaxis(out, 1, -1).flags.c_contiguous and not out.flags.c_contiguous
    assert y_c.flags.c_contiguous and dx_c.flags.c_contiguous


def test_training_dx_sums_to_zero(rng):
    """Identity: in training mode, sum of dx over each channel is 0 (mean is subtracted)."""
    layer = LAYERS[2](4, dtype=np.float64)
    layer.weight[...] = [0.5, 1, 2, 3]
    x = make_input(rng, (6, 4, 5, 7), np.float64, offset=10)
    layer(x)
    dx = layer.backward(rng.standard_normal(x.shape))
    assert np.max(np.abs(dx.sum(axis=(0, 2, 3)))) < 1e-12
    assert np.max(np.abs(dx)) > 0.1


def test_eval_after_training_uses_running_stats(rng):
    layer = LAYERS[1](3, momentum=None, dtype=np.float64)
    batches = [make_input(rng, (20, 3), np.float64, offset=5) for _ in range(3)]
    for b in batches:
        layer(b)
    allx = np.concatenate(batches)
    # momentum=None: the cumulative average of the batch means / unbiased variances
    np.testing.assert_allclose(layer.running_mean, allx.mean(0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var,
                               np.mean([b.var(0, ddof=1) for b in batches], axis=0), rtol=1e-12)
    layer.eval()
    x = make_input(rng, (1, 3), np.float64)  # one sample is fine in eval mode
    y = layer(x)
    np.testing.assert_allclose(y, (x - layer.running_mean) / np.sqrt(layer.running_var + 1e-5),
                               rtol=1e-12)


def test_empty_batch(rng):
    layer = LAYERS[2](3)
    y = layer(np.zeros((0, 3, 4, 4), np.float32))
    assert y.shape == (0, 3, 4, 4)
    np.testing.assert_array_equal(layer.running_mean, 0)
    np.testing.assert_array_equal(layer.running_var, 1)
    assert int(layer.num_batches_tracked) == 1  # torch counts the call
    dx = layer.backward(np.zeros((0, 3, 4, 4), np.float32))
    assert dx.shape == (0, 3, 4, 4)
    np.testing.assert_array_equal(layer.grad_bias, 0)
    layer.eval()
    assert layer(np.zeros((0, 3, 4, 4), np.float32)).shape == (0, 3, 4, 4)
