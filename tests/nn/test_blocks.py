"""Fused blocks (BatchNormAct1d/2d/3d, GroupNormAct, batch_norm_act): act(norm(x) + residual)
against a float64 NumPy reference (reference.py's norms composed with textbook activations)
and against torch's norm -> add -> activation sequence under autograd; layouts, modes,
threads, bad input."""
import math

import numpy as np
import pytest

import cnorm
from cnorm.testing import RefBatchNorm, channels_last, group_norm_ref, rel_err

ACTS = ["relu", "leaky_relu", "silu", "gelu", None]
TOL = {np.float32: 3e-5, np.float64: 1e-12}
_erf = np.vectorize(math.erf)


def act_ref(p, act, slope=0.01):
    """(act(p), act'(p)) in float64."""
    if act is None:
        return p, np.ones_like(p)
    if act == "relu":
        return np.where(p > 0, p, 0.0), (p > 0).astype(float)
    if act == "leaky_relu":
        return np.where(p > 0, p, slope * p), np.where(p > 0, 1.0, slope)
    if act == "silu":
        s = 1.0 / (1.0 + np.exp(-p))
        return p * s, s * (1.0 + p * (1.0 - s))
    cdf = 0.5 * (1.0 + _erf(p / np.sqrt(2.0)))
    return p * cdf, cdf + p * np.exp(-0.5 * p * p) / np.sqrt(2.0 * np.pi)


def make(kind, C, dtype, act, **kw):
    if kind == "gn":
        layer = cnorm.GroupNormAct(2, C, dtype=dtype, act=act, **kw)
    else:
        layer = getattr(cnorm, f"BatchNormAct{kind[2:]}")(C, dtype=dtype, act=act, **kw)
    if layer.weight is not None:
        layer.weight[...] = np.linspace(0.5, 2.0, C)
    if layer.bias is not None:
        layer.bias[...] = np.linspace(-0.5, 0.5, C)
    return layer


SHAPES = {"bn1d": (7, 4), "bn2d": (3, 4, 5, 6), "bn3d": (2, 4, 3, 2, 5), "gn": (3, 4, 5, 6)}


def reference(kind, layer, x, r, dy, training):
    """(y, dx, grad_residual, grad_weight, grad_bias, running_var) in float64."""
    C = x.shape[1]
    w = None if layer.weight is None else layer.weight.astype(np.float64)
    b = None if layer.bias is None else layer.bias.astype(np.float64)
    if kind == "gn":
        pre, _, _, _, _, _ = group_norm_ref(x, np.zeros_like(x, np.float64), 2, w, b,
                                            layer.eps)
        ref = None
    else:
        ref = RefBatchNorm(C, eps=layer.eps, affine=w is not None, bias=b is not None)
        ref.weight, ref.bias = w, b
        if not training:
            ref.running_mean = layer.running_mean.astype(np.float64)
            ref.running_var = layer.running_var.astype(np.float64)
            ref.eval()
        pre = ref.forward(x)
    if r is not None:
        pre = pre + r
    y, d = act_ref(pre, layer.act, layer.negative_slope)
    g = np.asarray(dy, np.float64) * d
    if kind == "gn":
        _, dx, gw, gb, _, _ = group_norm_ref(x, g, 2, w, b, layer.eps)
        rv = None
    else:
        dx, gw, gb = ref.backward(g)
        rv = ref.running_var
    return y, dx, (g if r is not None else None), gw, gb, rv


@pytest.mark.parametrize("kind", list(SHAPES))
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("with_residual", [True, False])
def test_matches_the_float64_reference(rng, kind, act, dtype, layout, with_residual):
    shape = SHAPES[kind]
    x = (2.0 + 1.5 * rng.standard_normal(shape)).astype(dtype)
    r = rng.standard_normal(shape).astype(dtype) if with_residual else None
    dy = rng.standard_normal(shape).astype(dtype)
    if layout == "nhwc" and x.ndim > 3:
        x, dy = channels_last(x), channels_last(dy)
        r = None if r is None else channels_last(r)
    layer = make(kind, shape[1], dtype, act)
    before = layer.running_var.copy() if kind != "gn" else None
    y = layer(x, r)
    dx = layer.backward(dy)
    want = reference(kind, layer, x, r, dy, True)
    assert y.dtype == dx.dtype == dtype and y.shape == x.shape
    assert y.flags.c_contiguous == x.flags.c_contiguous  # the input's layout
    for got, ref, what in zip((y, dx, layer.grad_residual, layer.grad_weight, layer.grad_bias),
                              want, ("y", "dx", "grad_residual", "grad_weight", "grad_bias")):
        if ref is None:
            assert got is None, what
        else:
            assert rel_err(got, ref) <= TOL[dtype], (what, rel_err(got, ref))
    if kind != "gn":
        assert rel_err(layer.running_var, 0.9 * before + 0.1 * (
            x.astype(np.float64).var(axis=(0,) + tuple(range(2, x.ndim)), ddof=1))) <= 1e-6


@pytest.mark.parametrize("act", ACTS)
def test_eval_mode_uses_the_running_statistics(rng, act):
    x = rng.standard_normal((6, 3, 4, 4))
    r = rng.standard_normal(x.shape)
    dy = rng.standard_normal(x.shape)
    layer = make("bn2d", 3, np.float64, act)
    layer(x + 1.0)  # running statistics away from the defaults
    layer.eval()
    y = layer(x, r)
    dx = layer.backward(dy)
    want = reference("bn2d", layer, x, r, dy, False)
    assert rel_err(y, want[0]) <= 1e-12 and rel_err(dx, want[1]) <= 1e-12


@pytest.mark.parametrize("kind", ["bn2d", "gn"])
@pytest.mark.parametrize("act", ACTS)
def test_matches_torch_under_autograd(rng, kind, act):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    tact = {"relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.01), "silu": F.silu,
            "gelu": F.gelu, None: lambda t: t}[act]
    x = rng.standard_normal((4, 4, 6, 6)).astype(np.float32)
    r = rng.standard_normal(x.shape).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    layer = make(kind, 4, np.float32, act)
    tnorm = torch.nn.GroupNorm(2, 4) if kind == "gn" else torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        tnorm.weight.copy_(torch.from_numpy(layer.weight))
        tnorm.bias.copy_(torch.from_numpy(layer.bias))
    xt = torch.from_numpy(x).requires_grad_()
    rt = torch.from_numpy(r).requires_grad_()
    yt = tact(tnorm(xt) + rt)
    yt.backward(torch.from_numpy(dy))
    y = layer(x, r)
    dx = layer.backward(dy)
    assert rel_err(y, yt.detach().numpy()) <= 2e-6
    assert rel_err(dx, xt.grad.numpy()) <= 3e-5
    assert rel_err(layer.grad_residual, rt.grad.numpy()) <= 2e-6
    assert rel_err(layer.grad_weight, tnorm.weight.grad.numpy()) <= 3e-5
    assert rel_err(layer.grad_bias, tnorm.bias.grad.numpy()) <= 3e-5
    if kind != "gn":
        assert rel_err(layer.running_var, tnorm.running_var.numpy()) <= 1e-6


def test_functional_form_matches_the_layer(rng):
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    r = rng.standard_normal(x.shape).astype(np.float32)
    layer = make("bn1d", 3, np.float32, "silu")
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y = cnorm.batch_norm_act(x, rm, rv, layer.weight, layer.bias, training=True, residual=r,
                             act="silu")
    assert y.tobytes() == layer(x, r).tobytes()
    assert rm.tobytes() == layer.running_mean.tobytes()
    ye = cnorm.batch_norm_act(x, rm, rv, act="relu")
    assert np.array_equal(ye, np.maximum(cnorm.batch_norm(x, rm, rv), 0))


@pytest.mark.openmp
def test_threads_do_not_change_the_bits(rng, restore_threads):
    x = rng.standard_normal((8, 16, 40, 40)).astype(np.float32)
    r = rng.standard_normal(x.shape).astype(np.float32)
    runs = []
    for n in (1, 2, 3):
        cnorm.set_num_threads(n)
        layer = make("bn2d", 16, np.float32, "gelu")
        y = layer(x, r)
        runs.append(y.tobytes() + layer.backward(x).tobytes() + layer.grad_residual.tobytes())
    assert runs[0] == runs[1] == runs[2]


def test_bad_input_raises_and_changes_nothing(rng):
    with pytest.raises(ValueError, match="act must be one of"):
        cnorm.BatchNormAct2d(3, act="tanh")
    layer = make("bn2d", 3, np.float32, "relu")
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    saved = {k: v.copy() for k, v in layer.state_dict().items()}
    with pytest.raises(ValueError, match="residual has shape"):
        layer(x, x[:1])
    with pytest.raises(TypeError, match="residual"):
        layer(x, x.astype(np.float64))
    assert all(np.array_equal(saved[k], v) for k, v in layer.state_dict().items())
    assert repr(cnorm.GroupNormAct(2, 4, act="leaky_relu", negative_slope=0.2)) == (
        "GroupNormAct(2, 4, eps=1e-05, affine=True, bias=True, act='leaky_relu', "
        "negative_slope=0.2)")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_over_the_whole_range(dtype):
    """silu's exp (src/common/cnorm_exp.h, a polynomial so that the loops vectorize) against
    NumPy's over every magnitude to the edges of the type, with inf and NaN: forward in eval
    mode (pre-activation = x exactly), and its gradient s (1 + p (1 - s)), whose error is
    measured against the size of its terms (it cancels to 0 near p = -1.28)."""
    top = 700.0 if dtype is np.float64 else 85.0
    p = np.concatenate([np.linspace(-top, top, 20001), [-np.inf, np.inf, np.nan, 0.0, -0.0],
                        np.linspace(-1e-3, 1e-3, 101)]).astype(dtype)
    x = p.reshape(-1, 1)
    layer = cnorm.BatchNormAct1d(1, eps=0.0, affine=False, dtype=dtype, act="silu").eval()
    layer.running_var[...] = 1.0
    y, dx = layer(x).ravel(), layer.backward(np.ones_like(x)).ravel()
    p64 = p.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(-p64)
        want = p64 / (1.0 + e)
        s = 1.0 / (1.0 + e)  # and 1 - s = e s, exact where s rounds to 1
        want_grad = s * (1.0 + p64 * (e * s))
        terms = s * (1.0 + np.abs(p64) * (e * s))
    ulp = np.finfo(dtype).eps
    for got, ref, size in ((y, want, np.abs(want)), (dx, want_grad, terms)):
        ref_t = ref.astype(dtype)
        assert np.array_equal(np.isnan(got), np.isnan(ref_t))
        ok = ~np.isnan(ref_t)
        assert np.array_equal(np.isinf(got[ok]), np.isinf(ref_t[ok]))
        fin = ok & np.isfinite(ref_t) & (np.abs(ref) > np.finfo(dtype).tiny)
        rel = np.abs(got[fin] - ref[fin]) / size[fin]
        assert rel.max() <= 4 * ulp, rel.max() / ulp
