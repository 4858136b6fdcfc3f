"""Parity with torch.nn and torch.nn.functional (skipped without torch): outputs, gradients,
running statistics, state_dict and repr, over several steps, for every layer kind."""
import numpy as np
import pytest

import cnorm
from cnorm.testing import KINDS, channels_last, make, make_input, rel_err, torch_twin

torch = pytest.importorskip("torch")

# torch computes in the data type with its own rounding: compare at the data type's accuracy
TORCH_TOL = {np.float32: 3e-5, np.float64: 1e-11}
SHAPES = {"bn1d": [(7, 3), (5, 4, 9), (20000, 5), (100, 2, 50)],
          "bn2d": [(3, 5, 7, 9), (4, 3, 1, 1), (3, 2, 130, 129), (70, 3, 10, 10)],
          "bn3d": [(2, 3, 4, 5, 6)],
          "ln": [(7, 5), (3000, 37), (3, 5000), (1, 9001), (40, 768)],
          "ln2": [(2, 3, 4100), (3, 4, 33)],
          "rms": [(7, 5), (3000, 37), (3, 5000), (40, 768)],
          "gn": [(3, 6, 5), (2, 4, 7, 9), (2, 8, 40, 41), (1, 6, 130, 129), (16, 32, 20, 20),
                 (2, 6, 3, 4, 5)],
          "in1d": [(3, 5, 9)], "in2d": [(2, 3, 7, 9), (1, 4, 130, 129), (8, 16, 30, 30)],
          "in3d": [(2, 3, 4, 5, 6)]}
CASES = [(k, s) for k in KINDS for s in SHAPES[k]]
# constructor variants: (kwargs for batch/instance norm, kwargs for the other kinds)
VARIANTS = [dict(), dict(affine=False), dict(bias=False), dict(momentum=None),
            dict(track_running_stats=False), dict(eps=1e-3)]


def build(kind, shape, dtype, variant, rng):
    """A layer of ``kind`` with the variant's arguments (those it takes), randomized."""
    C = shape[1]
    name = type(KINDS[kind][1](shape, dtype)).__name__
    if kind.startswith("bn") or kind.startswith("in"):
        kw = dict(affine=True, track_running_stats=True) if kind.startswith("in") else {}
        layer = getattr(cnorm, name)(C, dtype=dtype, **dict(kw, **variant))
    elif kind == "gn":
        kw = {k: v for k, v in variant.items() if k in ("affine", "bias", "eps")}
        layer = cnorm.GroupNorm(make(kind, shape, dtype).num_groups, C, dtype=dtype, **kw)
    else:
        ns = shape[-2:] if kind == "ln2" else shape[-1]
        kw = {"elementwise_affine": variant.get("affine", True)}
        if kind != "rms":
            kw.update(bias=variant.get("bias", True), eps=variant.get("eps", 1e-5))
        layer = (cnorm.RMSNorm if kind == "rms" else cnorm.LayerNorm)(ns, dtype=dtype, **kw)
    for p in (layer.weight, getattr(layer, "bias", None)):
        if p is not None:
            p[...] = rng.uniform(0.5, 2, p.shape) * rng.choice([-1, 1], p.shape)
    return layer


@pytest.mark.parametrize("kind,shape", CASES, ids=[f"{k}-{'x'.join(map(str, s))}"
                                                   for k, s in CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(map(str, v)) or "default")
def test_layer_matches_torch(rng, kind, shape, dtype, variant):
    ours = build(kind, shape, dtype, variant, rng)
    theirs = torch_twin(kind, ours, torch)
    assert repr(ours) == repr(theirs)
    tol = TORCH_TOL[dtype]
    for step in range(4):
        if step == 3:
            ours.eval()
            theirs.eval()
        x = make_input(rng, shape, dtype, offset=1.0)
        if step == 1 and len(shape) >= 4:
            x = channels_last(x)
        dy = rng.standard_normal(shape).astype(dtype)
        y, dx = ours(x), ours.backward(dy)
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        yt.backward(torch.tensor(dy))
        assert rel_err(y, yt.detach().numpy()) < tol, f"y step {step}"
        if not (kind == "gn" and shape[2:] == (1, 1)):  # groups of one value: noise in both
            assert rel_err(dx, xt.grad.numpy()) < tol * 5, f"dx step {step}"
        for name in ("weight", "bias"):
            p = getattr(theirs, name, None)
            g = getattr(ours, "grad_" + name)
            assert (g is None) == (p is None), name
            if p is not None:
                assert rel_err(g, p.grad.numpy()) < tol * 5, name
        theirs.zero_grad()
        sd, tsd = ours.state_dict(), theirs.state_dict()
        assert list(sd) == list(tsd)
        for k in sd:
            assert sd[k].dtype == tsd[k].numpy().dtype, k
            assert rel_err(sd[k], tsd[k].numpy()) < tol, k


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_functional_matches_torch(rng, training):
    x = make_input(rng, (4, 3, 5, 6), np.float64, offset=2)
    rm, rv = rng.uniform(-1, 1, 3), rng.uniform(0.5, 2, 3)
    w, b = rng.uniform(0.5, 2, 3), rng.uniform(-1, 1, 3)
    rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
    y = cnorm.batch_norm(x, rm, rv, w, b, training=training, momentum=0.2, eps=1e-3)
    ty = torch.nn.functional.batch_norm(torch.tensor(x), rm_t, rv_t, torch.tensor(w),
                                        torch.tensor(b), training=training, momentum=0.2,
                                        eps=1e-3)
    assert rel_err(y, ty.numpy()) < 1e-12
    assert rel_err(rm, rm_t.numpy()) < 1e-12 and rel_err(rv, rv_t.numpy()) < 1e-12


def test_functional_forms_match_torch(rng):
    F = torch.nn.functional
    x = make_input(rng, (3, 6, 5, 7), np.float64, offset=1.0)
    w, b = rng.uniform(0.5, 2, 6), rng.uniform(-1, 1, 6)
    w2, b2 = rng.uniform(0.5, 2, (5, 7)), rng.uniform(-1, 1, (5, 7))
    t = torch.tensor
    pairs = [(cnorm.layer_norm(x, (5, 7), w2, b2), F.layer_norm(t(x), (5, 7), t(w2), t(b2))),
             (cnorm.rms_norm(x, 7, w2[0]), F.rms_norm(t(x), (7,), t(w2[0]))),
             (cnorm.group_norm(x, 3, w, b), F.group_norm(t(x), 3, t(w), t(b))),
             (cnorm.instance_norm(x, weight=w, bias=b), F.instance_norm(t(x), weight=t(w),
                                                                        bias=t(b)))]
    for ours, theirs in pairs:
        assert rel_err(ours, theirs.numpy()) < 1e-12


def test_state_dict_round_trip_with_torch(rng):
    ours = make("bn2d", (4, 5, 3, 3), np.float32, rng)
    theirs = torch_twin("bn2d", ours, torch)
    theirs(torch.tensor(make_input(rng, (4, 5, 3, 3), np.float32)))
    ours.load_state_dict(theirs.state_dict())  # torch tensors are accepted
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], v.numpy())
    ours(make_input(rng, (4, 5, 3, 3), np.float32))
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    assert int(theirs.num_batches_tracked) == 2
