"""Parity with torch.nn.BatchNormNd (skipped when torch is not installed)."""
import numpy as np
import pytest
from conftest import LAYERS, SHAPE_PARAMS, make_input
from reference import channels_last, rel_err

torch = pytest.importorskip("torch")

# torch computes in the data type with its own rounding: compare at the data type's accuracy.
TORCH_TOL = {np.float32: 2e-5, np.float64: 1e-11}
TORCH_NN = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def pair(dim, C, dtype, rng, **kw):
    ours = LAYERS[dim](C, dtype=dtype, **kw)
    theirs = TORCH_NN[dim](C, dtype=TORCH_DTYPE[dtype], **kw)
    if ours.weight is not None:
        ours.weight[...] = rng.uniform(0.5, 2, C)
        if ours.bias is not None:
            ours.bias[...] = rng.uniform(-1, 1, C)
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    return ours, theirs


def torch_step(layer, x, dy):
    xt = torch.tensor(x, requires_grad=True)
    yt = layer(xt)
    yt.backward(torch.tensor(dy))
    gw = None if layer.weight is None else layer.weight.grad.numpy().copy()
    gb = None if layer.bias is None else layer.bias.grad.numpy().copy()
    layer.zero_grad()
    return yt.detach().numpy(), xt.grad.numpy(), gw, gb


def assert_close(a, b, tol, what):
    if b is None:
        assert a is None, what
    else:
        assert rel_err(a, b) < tol, what


@pytest.mark.parametrize("dim,shape", SHAPE_PARAMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
@pytest.mark.parametrize("track", [True, False])
def test_torch_parity(rng, dim, shape, dtype, affine, bias, momentum, track):
    ours, theirs = pair(dim, shape[1], dtype, rng, momentum=momentum, affine=affine, bias=bias,
                        track_running_stats=track)
    assert repr(ours) == repr(theirs)
    tol = TORCH_TOL[dtype]
    for step in range(4):
        if step == 3:
            ours.eval()
            theirs.eval()
        x = make_input(rng, shape, dtype)
        if step == 2 and len(shape) > 3:
            x = channels_last(x)
        dy = rng.standard_normal(shape).astype(dtype)
        y, dx = ours(x), ours.backward(dy)
        ty, tdx, tgw, tgb = torch_step(theirs, x, dy)
        assert_close(y, ty, tol, f"y step {step}")
        assert_close(dx, tdx, 5 * tol, f"dx step {step}")
        assert_close(ours.grad_weight, tgw, 5 * tol, "grad_weight")
        assert_close(ours.grad_bias, tgb, 5 * tol, "grad_bias")
        sd, tsd = ours.state_dict(), theirs.state_dict()
        assert list(sd) == list(tsd)
        for k in sd:
            assert sd[k].dtype == tsd[k].numpy().dtype, k
            assert rel_err(sd[k], tsd[k].numpy()) < tol, k


@pytest.mark.parametrize("training", [True, False])
def test_functional_matches_torch(rng, training):
    x = make_input(rng, (4, 3, 5, 6), np.float64, offset=2)
    rm, rv = rng.uniform(-1, 1, 3), rng.uniform(0.5, 2, 3)
    w, b = rng.uniform(0.5, 2, 3), rng.uniform(-1, 1, 3)
    import cnorm
    rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
    y = cnorm.batch_norm(x, rm, rv, w, b, training=training, momentum=0.2, eps=1e-3)
    ty = torch.nn.functional.batch_norm(torch.tensor(x), rm_t, rv_t, torch.tensor(w),
                                        torch.tensor(b), training=training, momentum=0.2, eps=1e-3)
    assert rel_err(y, ty.numpy()) < 1e-12
    assert rel_err(rm, rm_t.numpy()) < 1e-12 and rel_err(rv, rv_t.numpy()) < 1e-12


def test_state_dict_round_trip_with_torch(rng):
    ours, theirs = pair(2, 5, np.float32, rng)
    x = make_input(rng, (4, 5, 3, 3), np.float32)
    theirs(torch.tensor(x))
    ours.load_state_dict(theirs.state_dict())  # torch tensors are accepted
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], v.numpy())
    ours(x)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    assert int(theirs.num_batches_tracked) == 2
