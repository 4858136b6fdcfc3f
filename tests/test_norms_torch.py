"""Parity of LayerNorm, RMSNorm, GroupNorm and InstanceNorm with torch.nn (skipped without
torch): outputs, gradients, running statistics and repr, over several steps."""
import numpy as np
import pytest
from conftest import make_input
from reference import channels_last, rel_err
from test_norms import (
    AFFINE,
    GROUP_CASES,
    INSTANCE_CASES,
    REPRS,
    ROW_CASES,
    cid,
    randomize,
)

import cnorm

torch = pytest.importorskip("torch")
TORCH_TOL = {np.float32: 3e-5, np.float64: 1e-11}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def twin(ours, theirs):
    """theirs with ours' parameters and buffers."""
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                            ours.state_dict().items()})
    return theirs


def compare_pair(rng, ours, theirs_cls, shape, dtype, steps=3, eval_from=2, **kw):
    """ours (randomized) and torch's layer of the same arguments: repr, then the steps."""
    randomize(ours, rng)
    theirs = twin(ours, theirs_cls(dtype=TORCH_DTYPE[dtype], **kw))
    assert repr(ours) == repr(theirs)
    compare_steps(rng, ours, theirs, shape, dtype, steps, eval_from)
    return theirs


def compare_steps(rng, ours, theirs, shape, dtype, steps=3, eval_from=2):
    tol = TORCH_TOL[dtype]
    for step in range(steps):
        if step == eval_from:
            ours.eval()
            theirs.eval()
        x = make_input(rng, shape, dtype, offset=1.0) if len(shape) > 1 else \
            rng.standard_normal(shape).astype(dtype)
        if step == 1 and len(shape) >= 4:
            x = channels_last(x)
        dy = rng.standard_normal(shape).astype(dtype)
        y, dx = ours(x), ours.backward(dy)
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        yt.backward(torch.tensor(dy))
        assert rel_err(y, yt.detach().numpy()) < tol
        assert rel_err(dx, xt.grad.numpy()) < tol * 4
        for name in ("weight", "bias"):
            p = getattr(theirs, name, None)
            g = getattr(ours, "grad_" + name)
            if p is None:
                assert g is None
            else:
                assert rel_err(g, p.grad.numpy()) < tol * 4
        theirs.zero_grad()
        for name in ("running_mean", "running_var"):
            b = getattr(theirs, name, None)
            if b is not None:
                assert rel_err(getattr(ours, name), b.numpy()) < tol


@pytest.mark.parametrize("case", ROW_CASES, ids=cid)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine,bias", AFFINE)
def test_layer_norm_vs_torch(rng, case, dtype, affine, bias):
    shape, ns = case
    kw = dict(elementwise_affine=affine, bias=bias)
    compare_pair(rng, cnorm.LayerNorm(ns, dtype=dtype, **kw),
                 lambda **k: torch.nn.LayerNorm(ns, **k), shape, dtype, **kw)


@pytest.mark.parametrize("case", ROW_CASES, ids=cid)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("eps", [None, 1e-6])
def test_rms_norm_vs_torch(rng, case, dtype, affine, eps):
    shape, ns = case
    kw = dict(eps=eps, elementwise_affine=affine)
    compare_pair(rng, cnorm.RMSNorm(ns, dtype=dtype, **kw),
                 lambda **k: torch.nn.RMSNorm(ns, **k), shape, dtype, **kw)


@pytest.mark.parametrize("case", GROUP_CASES, ids=cid)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine,bias", AFFINE)
def test_group_norm_vs_torch(rng, case, dtype, affine, bias):
    shape, G = case
    if shape[2:] == (1, 1):
        pytest.skip("groups of one value: dx is rounding noise in both")
    kw = dict(affine=affine, bias=bias)
    compare_pair(rng, cnorm.GroupNorm(G, shape[1], dtype=dtype, **kw),
                 lambda **k: torch.nn.GroupNorm(G, shape[1], **k), shape, dtype, **kw)


@pytest.mark.parametrize("case", INSTANCE_CASES, ids=cid)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine,bias", AFFINE)
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("track", [False, True])
def test_instance_norm_vs_torch(rng, case, dtype, affine, bias, momentum, track):
    shape, dim = case
    C = shape[1] if len(shape) == dim + 2 else shape[0]
    kw = dict(momentum=momentum, affine=affine, bias=bias, track_running_stats=track)
    ours = getattr(cnorm, f"InstanceNorm{dim}d")(C, dtype=dtype, **kw)
    theirs = compare_pair(rng, ours,
                          lambda **k: getattr(torch.nn, f"InstanceNorm{dim}d")(C, **k),
                          shape, dtype, steps=4, eval_from=3, **kw)
    if track:
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)


@pytest.mark.parametrize("make,text", REPRS)
def test_repr_strings_are_torchs(make, text):
    layer = make()
    theirs = eval("torch.nn." + text.split("(")[0] + "(" + ctor_args(layer) + ")")
    assert repr(theirs) == text


def ctor_args(layer):
    """The constructor arguments of a cnorm layer, as torch source text."""
    name = type(layer).__name__
    if name == "LayerNorm":
        return (f"{layer.normalized_shape}, elementwise_affine={layer.elementwise_affine}, "
                f"bias={layer.bias is not None}")
    if name == "RMSNorm":
        return (f"{list(layer.normalized_shape)}, eps={layer.eps}, "
                f"elementwise_affine={layer.elementwise_affine}")
    if name == "GroupNorm":
        return f"{layer.num_groups}, {layer.num_channels}, affine={layer.affine}, " \
               f"bias={layer.bias is not None}"
    return (f"{layer.num_features}, momentum={layer.momentum}, affine={layer.affine}, "
            f"bias={layer.bias is not None or not layer.affine}, "
            f"track_running_stats={layer.track_running_stats}")
