"""Half precision (float16, and ml_dtypes' bfloat16 when installed) in every layer kind and
functional form: data, outputs and input gradients in the half type; parameters, running
statistics and parameter gradients in float32; all arithmetic in float32 or wider.

The kernels compute half data exactly as float32 data (the same lanes, chunks and formulas on
float tiles), so every half result must be the float32 layer's result on the upcast input,
rounded once: bit for bit. An independent float64 reference bounds it to 1 ulp, and torch's
half-precision layers (where the CPU build runs them) agree to its own rounding."""
import numpy as np
import pytest

import cnorm
from cnorm._core.layout import is_channels_last
from cnorm.testing import (
    HALVES,
    KINDS,
    eps_of,
    in_layout,
    make,
    make_input,
    reference,
    torch_twin,
)

F32 = np.dtype(np.float32)
MANTISSA = {"float16": 10, "bfloat16": 7}
SMALLEST_NORMAL = {"float16": 2.0 ** -14, "bfloat16": 2.0 ** -126}
SHAPES = {2: (40, 12), 3: (6, 8, 600), 4: (4, 8, 24, 30), 5: (2, 4, 6, 8, 10)}
CASES = [(kind, SHAPES[ranks[-1]], layout) for kind, (ranks, _) in KINDS.items()
         for layout in (("nchw", "nhwc") if ranks[-1] > 3 else ("nchw",))]


def ids(v):
    return v.name if isinstance(v, np.dtype) else None


def ulp(ref, dtype):
    """The spacing of ``dtype`` at each value of ref (float64)."""
    a = np.maximum(np.abs(ref), SMALLEST_NORMAL[dtype.name])
    return 2.0 ** (np.floor(np.log2(a)) - MANTISSA[dtype.name])


def same_bits(got, want, what):
    assert got.dtype == want.dtype and got.shape == want.shape, what
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), what


def run(layer, x, dy):
    """Training forward and backward, then eval forward and backward: outputs, gradients and
    running statistics."""
    out = {"y": layer(x), "dx": layer.backward(dy), "gw": layer.grad_weight,
           "gb": layer.grad_bias, "rm": getattr(layer, "running_mean", None),
           "rv": getattr(layer, "running_var", None)}
    layer.eval()
    out.update(y_eval=layer(x), dx_eval=layer.backward(dy))
    return {k: v.copy(order="K") for k, v in out.items() if v is not None}


@pytest.mark.parametrize("dtype", HALVES, ids=ids)
@pytest.mark.parametrize("kind,shape,layout", CASES)
def test_half_is_the_float32_result_rounded_once(rng, kind, shape, layout, dtype):
    x = in_layout(make_input(rng, shape, np.float32, offset=3.0).astype(dtype), layout)
    dy = in_layout(make_input(rng, shape, np.float32).astype(dtype), layout)
    half = make(kind, shape, dtype)
    assert half.weight.dtype == F32
    full = make(kind, shape, np.float32)
    if kind == "rms":  # eps=None is the data type's epsilon: give float32 the half type's
        full.eps = eps_of(dtype)
    got = run(half, x, dy)
    want = run(full, x.astype(np.float32), dy.astype(np.float32))
    assert got.keys() == want.keys()
    for k in got:
        if k in ("y", "dx", "y_eval", "dx_eval"):
            assert is_channels_last(got[k]) == is_channels_last(x), k
            same_bits(got[k], want[k].astype(dtype), k)
        else:  # parameters' gradients and running statistics stay float32
            same_bits(got[k], want[k], k)


@pytest.mark.parametrize("dtype", HALVES, ids=ids)
@pytest.mark.parametrize("kind", list(KINDS))
def test_within_one_ulp_of_a_float64_reference(rng, kind, dtype):
    shape = SHAPES[KINDS[kind][0][-1]]
    x = make_input(rng, shape, np.float32, offset=-2.0, scale=4.0).astype(dtype)
    dy = make_input(rng, shape, np.float32).astype(dtype)
    layer = make(kind, shape, dtype)
    y, dx = layer(x), layer.backward(dy)
    y_ref, dx_ref = reference(kind, layer, x.astype(np.float64), dy.astype(np.float64))
    assert y.dtype == dx.dtype == dtype
    # 1 ulp of the half type, plus the float32 arithmetic's rounding at the outputs' scale
    # (it decides near zero, where the half type's spacing is finer than float32's error)
    for got, ref in ((y, y_ref), (dx, dx_ref)):
        slack = 2.0 ** -21 * np.max(np.abs(ref))
        assert np.all(np.abs(got.astype(np.float64) - ref) <= ulp(ref, dtype) + slack)


@pytest.mark.filterwarnings("ignore:Mismatch dtype:UserWarning")  # torch's RMSNorm, mixed
@pytest.mark.parametrize("dtype", HALVES, ids=ids)
@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_torchs_half_precision_layers(rng, kind, dtype):
    """torch runs each layer with half input and float32 parameters (mixed): the same outputs
    to within the half type's rounding, float32 parameter gradients and running statistics
    to float32 accuracy."""
    torch = pytest.importorskip("torch")
    tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype.name]
    shape = SHAPES[KINDS[kind][0][-1]]
    x = make_input(rng, shape, np.float32, offset=1.0).astype(dtype)
    dy = make_input(rng, shape, np.float32).astype(dtype)
    ours = make(kind, shape, dtype)
    theirs = torch_twin(kind, ours, torch)
    y, dx = ours(x), ours.backward(dy)
    xt = torch.from_numpy(x.astype(np.float32)).to(tdt).requires_grad_()
    yt = theirs(xt)
    yt.backward(torch.from_numpy(dy.astype(np.float32)).to(tdt))
    assert yt.dtype == tdt and xt.grad.dtype == tdt
    refs = reference(kind, ours, x.astype(np.float64), dy.astype(np.float64))
    for got, want, ref, k in ((y, yt, refs[0], 1), (dx, xt.grad, refs[1], 2)):
        got, want = got.astype(np.float64), want.detach().float().numpy().astype(np.float64)
        bound = k * ulp(want, dtype) + 2.0 ** -16 * np.max(np.abs(want))
        # k ulps of torch's, or (torch's RMSNorm backward rounds its sums in the half type)
        # closer than torch's to the float64 reference
        assert (np.all(np.abs(got - want) <= bound)
                or np.max(np.abs(got - ref)) < np.max(np.abs(want - ref)))
    for name in ("weight", "bias"):  # some of torch's mixed kernels sum these in the half type
        if getattr(theirs, name, None) is None:  # RMSNorm has no bias
            continue
        g = getattr(theirs, name).grad.numpy()
        assert getattr(ours, f"grad_{name}").dtype == F32
        bound = 16 * 2.0 ** -MANTISSA[dtype.name] * np.max(np.abs(g))
        assert np.max(np.abs(getattr(ours, f"grad_{name}") - g)) <= bound
    if getattr(ours, "running_var", None) is not None:
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-5)
        np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("dtype", HALVES, ids=ids)
def test_functional_forms_take_half_data_and_float32_parameters(rng, dtype):
    x = make_input(rng, (4, 6, 5, 7), np.float32).astype(dtype)
    xf = x.astype(np.float32)
    w, b = np.linspace(0.5, 2, 6, dtype=np.float32), np.linspace(-1, 1, 6, dtype=np.float32)
    rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)
    rm32, rv32 = rm.copy(), rv.copy()
    pairs = [
        (cnorm.batch_norm(x, rm, rv, w, b, training=True),
         cnorm.batch_norm(xf, rm32, rv32, w, b, training=True)),
        (cnorm.group_norm(x, 3, w, b), cnorm.group_norm(xf, 3, w, b)),
        (cnorm.instance_norm(x, weight=w, bias=b), cnorm.instance_norm(xf, weight=w, bias=b)),
        (cnorm.layer_norm(x, (7,)), cnorm.layer_norm(xf, (7,))),
        (cnorm.rms_norm(x, (5, 7), eps=1e-5), cnorm.rms_norm(xf, (5, 7), eps=1e-5)),
        (cnorm.batch_norm_act(x, rm, rv, w, b, residual=x, act="silu"),
         cnorm.batch_norm_act(xf, rm32, rv32, w, b, residual=xf, act="silu")),
    ]
    for i, (got, want) in enumerate(pairs):
        same_bits(got, want.astype(dtype), f"form {i}")
    same_bits(rm, rm32, "running_mean")
    dy = (x.astype(np.float32) * 0.5).astype(dtype)
    got = cnorm.batch_norm_backward(dy, x, rm, rv, w, b, training=True)
    want = cnorm.batch_norm_backward(dy.astype(np.float32), xf, rm, rv, w, b, training=True)
    same_bits(got[0], want[0].astype(dtype), "dx")
    same_bits(got[1], want[1], "grad_weight")


@pytest.mark.parametrize("dtype", HALVES, ids=ids)
def test_half_dtype_errors(dtype):
    bn = cnorm.BatchNorm2d(3, dtype=dtype)
    x = np.ones((2, 3, 4, 4), np.float32)
    with pytest.raises(TypeError, match=dtype.name):
        bn(x)  # a half layer given float32 input
    with pytest.raises(TypeError, match="float32"):
        cnorm.BatchNorm2d(3)(x.astype(dtype))  # and the other way round
    with pytest.raises(TypeError, match="weight"):  # half data takes float32 parameters
        cnorm.batch_norm(x.astype(dtype), None, None, np.ones(3, dtype), training=True)
    assert bn.running_mean.dtype == bn.weight.dtype == F32
    bn.load_state_dict({k: v.astype(np.float64) for k, v in bn.state_dict().items()})
    assert bn.running_var.dtype == F32  # loaded values are cast to the parameters' dtype


@pytest.mark.parametrize("dtype", HALVES, ids=ids)
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_fused_blocks_in_half_precision(rng, dtype, act):
    """The forward is the float32 block's rounded once; the backward rounds g = dy * act'(pre)
    to the half type (it is grad_residual), so it is compared within half-precision error."""
    x = make_input(rng, (4, 8, 12, 12), np.float32).astype(dtype)
    r = make_input(rng, (4, 8, 12, 12), np.float32).astype(dtype)
    dy = make_input(rng, (4, 8, 12, 12), np.float32).astype(dtype)
    for half, full in ((cnorm.BatchNormAct2d(8, dtype=dtype, act=act),
                        cnorm.BatchNormAct2d(8, act=act)),
                       (cnorm.GroupNormAct(4, 8, dtype=dtype, act=act),
                        cnorm.GroupNormAct(4, 8, act=act))):
        same_bits(half(x, r), full(x.astype(np.float32), r.astype(np.float32)).astype(dtype),
                  type(half).__name__)
        dx, dx32 = half.backward(dy), full.backward(dy.astype(np.float32))
        tol = 4 * 2.0 ** -MANTISSA[dtype.name] * np.max(np.abs(dx32))
        assert dx.dtype == half.grad_residual.dtype == dtype
        assert np.max(np.abs(dx.astype(np.float32) - dx32)) <= tol
        assert half.grad_weight.dtype == F32
        gw_tol = 4 * 2.0 ** -MANTISSA[dtype.name] * np.max(np.abs(full.grad_weight))
        assert np.max(np.abs(half.grad_weight - full.grad_weight)) <= gw_tol


@pytest.mark.parametrize("dtype", HALVES, ids=ids)
def test_sync_batchnorm_in_half_precision_on_one_process(rng, dtype):
    x = make_input(rng, (6, 5, 9, 9), np.float32, offset=2.0).astype(dtype)
    dy = make_input(rng, (6, 5, 9, 9), np.float32).astype(dtype)
    half, full = cnorm.SyncBatchNorm(5, dtype=dtype), cnorm.SyncBatchNorm(5)
    same_bits(half(x), full(x.astype(np.float32)).astype(dtype), "y")
    same_bits(half.backward(dy), full.backward(dy.astype(np.float32)).astype(dtype), "dx")
    same_bits(half.running_var, full.running_var, "running_var")


@pytest.mark.parametrize("dtype", HALVES, ids=ids)
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "silu", "gelu", None])
def test_fused_block_matches_torchs_half_precision_sequence(rng, dtype, act):
    """torch in the half type: BatchNorm2d (float32 parameters) -> + residual -> activation
    under autograd, each step rounded to the half type; the fused block rounds once."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype.name]
    shape = (4, 6, 10, 10)
    x, r, dy = (make_input(rng, shape, np.float32).astype(dtype) for _ in range(3))
    block = cnorm.BatchNormAct2d(6, dtype=dtype, act=act)
    block.weight[:] = rng.uniform(0.5, 1.5, 6)
    y, dx = block(x, r), block.backward(dy)
    bn = torch.nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(block.weight))
    fn = {"relu": F.relu, "leaky_relu": F.leaky_relu, "silu": F.silu, "gelu": F.gelu,
          None: lambda v: v}[act]
    xt, rt = (torch.from_numpy(a.astype(np.float32)).to(tdt).requires_grad_() for a in (x, r))
    yt = fn(bn(xt) + rt)
    yt.backward(torch.from_numpy(dy.astype(np.float32)).to(tdt))
    # torch rounds the norm's output before the add: an error of an ulp of |norm| + |r|
    size = np.abs(r.astype(np.float64)) + np.abs(yt.detach().float().numpy())
    # ... which can move a value that is 0 to rounding across relu's kink: there the two
    # gradients differ by the whole dy (a handful of elements; their sums shift the rest)
    kink = np.zeros(shape, bool)
    if act in ("relu", "leaky_relu"):
        kink = (y.astype(np.float32) > 0) != (yt.detach().float().numpy() > 0)
    assert np.mean(kink) < 0.01
    assert np.all(np.abs(y.astype(np.float64))[kink] <= ulp(size, dtype)[kink])
    # a kink moves its channel's sums by dy / M: dx = w * invstd * (g - mean(g) - x_hat *
    # mean(g * x_hat)) moves by up to about 10 |dx| / M per kink (|x_hat| below 3)
    moved = kink.sum(axis=(0, 2, 3)).reshape(1, -1, 1, 1) * 10 / (shape[0] * 100)
    for got, want, k in ((y, yt, 1), (dx, xt.grad, 4), (block.grad_residual, rt.grad, 1)):
        want = want.detach().float().numpy().astype(np.float64)
        bound = k * ulp(want, dtype) + 2 * ulp(size, dtype) + 2.0 ** -14 * np.max(np.abs(want))
        if got is dx:
            bound = bound + moved * np.max(np.abs(want), axis=(0, 2, 3), keepdims=True)
        assert got.dtype == dtype
        assert np.all((np.abs(got.astype(np.float64) - want) <= bound) | kink)
    np.testing.assert_allclose(block.running_var, bn.running_var.numpy(), rtol=1e-5)
    assert block.grad_weight.dtype == F32
    g = bn.weight.grad.numpy()
    assert np.max(np.abs(block.grad_weight - g)) <= 16 * 2.0 ** -MANTISSA[dtype.name] * np.max(
        np.abs(g))


def test_storage_and_compute_types_pair_as_documented():
    """The entry points are fused on (storage, compute): float64 data computes in float64,
    float32 and half data in float32; the other pairs refuse to run."""
    from cnorm._core import backend as _backend
    k = _backend.kernels
    x = np.ones((2, 3, 4), np.float64)
    args = (None, None, 1e-5, x.copy(), *np.empty((3, 3)), None, 0, 0.0, 1)
    with pytest.raises(TypeError, match="float64 data computes in float64"):
        k.bn_forward_train["double", "float"](x, *args)
    with pytest.raises(TypeError, match="float64 data computes in float64"):
        k.bn_forward_train["f16_t", "double"](x.astype(np.float16).view(np.uint16),
                                              None, None, 1e-5,
                                              np.empty((2, 3, 4), np.uint16),
                                              *np.empty((3, 3)), None, 0, 0.0, 1)
