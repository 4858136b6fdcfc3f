"""cnorm.torch: every module and functional form against torch's own (forward, input and
parameter gradients, running statistics; NCHW and channels_last; float32, float64 and the half
types), gradcheck in float64, opcheck of every custom op, convert/revert, torch.compile, the
thread count, errors that change nothing."""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import cnorm  # noqa: E402
import cnorm.torch as ct  # noqa: E402
from cnorm.testing import formulas  # noqa: E402

# kind -> (torch constructor arguments, input shape); the twin class has the same name
KINDS = {
    "BatchNorm1d": ((5,), (8, 5, 7)),
    "BatchNorm2d": ((6,), (4, 6, 5, 5)),
    "BatchNorm3d": ((3,), (2, 3, 4, 3, 5)),
    "LayerNorm": (((5, 5),), (4, 6, 5, 5)),
    "GroupNorm": ((3, 6), (4, 6, 5, 5)),
    "InstanceNorm1d": ((5,), (4, 5, 9)),
    "InstanceNorm2d": ((6,), (4, 6, 5, 5)),
    "InstanceNorm3d": ((3,), (2, 3, 4, 3, 5)),
    "RMSNorm": ((5,), (4, 6, 5, 5)),
}
TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-12, 1e-12),
       torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 2e-3)}


def pair(kind, dtype, **kw):
    """A torch layer with non-trivial parameters and its cnorm.torch twin with the same state."""
    args, shape = KINDS[kind]
    pdt = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    if kind.startswith("InstanceNorm"):
        kw = {"affine": True, "track_running_stats": True, **kw}
    plain = getattr(torch.nn, kind)(*args, dtype=pdt, **kw)
    with torch.no_grad():
        for p in plain.parameters():
            p.copy_(torch.rand_like(p) + 0.5)
    return plain, ct.convert(copy.deepcopy(plain)), shape


def run(layer, x, dy):
    x = x.detach().clone().requires_grad_()
    y = layer(x)
    y.backward(dy)
    return y.detach(), x.grad, [p.grad.clone() for p in layer.parameters()]


def close(a, b, dtype):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a.double(), b.double(), atol=atol * 10, rtol=rtol * 10)


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", list(KINDS))
def test_twin_matches_torch(kind, dtype, fmt):
    """Two training steps and an eval step: outputs, input and parameter gradients and the
    running statistics agree with torch's layer; channels_last stays channels_last."""
    torch.manual_seed(0)
    plain, twin, shape = pair(kind, dtype)
    assert type(twin).__module__ == "cnorm.torch.modules"
    if fmt == "channels_last" and len(shape) not in (4, 5):
        pytest.skip("no channels_last format for this rank")
    memory = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    for step in range(2):
        x = (3 + 2 * torch.randn(shape, dtype=torch.float64)).to(dtype)
        if fmt == "channels_last":
            x = x.to(memory_format=memory)
        dy = torch.randn(shape, dtype=torch.float64).to(dtype)
        for layer in (plain, twin):
            for p in layer.parameters():
                p.grad = None
        (y0, dx0, g0), (y1, dx1, g1) = run(plain, x, dy), run(twin, x, dy)
        close(y1, y0, dtype)
        close(dx1, dx0, dtype)
        for a, b in zip(g1, g0):
            close(a, b, dtype)
        if fmt == "channels_last":
            assert y1.is_contiguous(memory_format=memory)
    for name, buf in plain.named_buffers():
        torch.testing.assert_close(getattr(twin, name).double(), buf.double(), atol=1e-5,
                                   rtol=1e-5)
    plain.eval(), twin.eval()
    close(twin(x), plain(x), dtype)


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradcheck_in_float64(kind):
    torch.manual_seed(0)
    _, twin, shape = pair(kind, torch.float64)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    params = list(twin.parameters())
    assert torch.autograd.gradcheck(lambda x: twin(x), (x,))
    assert params  # the layers above have parameters: their gradients are checked here
    for p in params:
        p.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *ps: torch.func.functional_call(
        twin, dict(zip([n for n, _ in twin.named_parameters()], ps)), (x.detach(),)),
        tuple(p.detach().clone().requires_grad_() for p in params))


@pytest.mark.parametrize("kind", ["BatchNorm2d", "LayerNorm", "GroupNorm", "RMSNorm"])
def test_double_backward_is_torchs(kind):
    """create_graph=True: the backward runs torch's graph of the same forward, so second
    derivatives are right (a NumPy backward alone would give none)."""
    _, twin, shape = pair(kind, torch.float64)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: twin(x), (x,))
    block = ct.BatchNormAct2d(6, act_layer="silu").double()
    r = torch.randn(4, 6, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, r: block(x, residual=r), (x[:, :, :, :5], r))


OPCHECK_CASES = {
    "batch_norm": lambda x: (torch.ops.cnorm.batch_norm.default,
                             (x, _p(x, 6), _p(x, 6), None, None, None, True, 1e-5, None, 0.0)),
    "batch_norm_eval": lambda x: (torch.ops.cnorm.batch_norm.default,
                                  (x, _p(x, 6), None, _p(x, 6, grad=False),
                                   _p(x, 6, grad=False), None, False, 1e-5, None, 0.0)),
    "batch_norm_act": lambda x: (torch.ops.cnorm.batch_norm.default,
                                 (x, _p(x, 6), _p(x, 6), None, None, _r(x), True, 1e-5,
                                  "silu", 0.0)),
    "layer_norm": lambda x: (torch.ops.cnorm.layer_norm.default,
                             (x, [5, 5], _p(x, (5, 5)), _p(x, (5, 5)), 1e-5)),
    "rms_norm": lambda x: (torch.ops.cnorm.rms_norm.default, (x, [5], _p(x, 5), None)),
    "group_norm": lambda x: (torch.ops.cnorm.group_norm.default,
                             (x, 3, _p(x, 6), _p(x, 6), None, 1e-5, None, 0.0)),
    "group_norm_act": lambda x: (torch.ops.cnorm.group_norm.default,
                                 (x, 3, _p(x, 6), None, _r(x), 1e-5, "leaky_relu", 0.1)),
}


def _r(x):
    """A residual like x (its layout too), requiring its gradient."""
    return torch.randn_like(x).requires_grad_()


def _p(x, shape, grad=True):
    dt = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return (torch.rand(shape, dtype=dt) + 0.5).requires_grad_(grad)


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", list(OPCHECK_CASES))
def test_opcheck(case, dtype, fmt):
    """torch.library.opcheck: schema, autograd registration, fake kernel, AOT dispatch."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, 5, 5).to(dtype)
    if fmt == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    op, args = OPCHECK_CASES[case](x.requires_grad_())
    torch.library.opcheck(op, args)


def test_failed_call_changes_nothing():
    """torch's _BatchNorm increments num_batches_tracked before it validates; the twin
    changes nothing when the call raises, and raises torch's error type."""
    plain, twin, _ = pair("BatchNorm2d", torch.float32)
    bad = torch.randn(4, 5, 3, 3)  # 5 channels, 6 expected
    with pytest.raises(RuntimeError):
        plain(bad)
    assert int(plain.num_batches_tracked) == 1  # torch's: moved anyway
    before = {k: v.clone() for k, v in twin.state_dict().items()}
    with pytest.raises(RuntimeError, match="running_mean"):
        twin(bad)
    with pytest.raises(ValueError, match="Expected more than 1 value"):
        twin(torch.randn(1, 6, 1, 1))
    for k, v in twin.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_convert_and_revert_keep_state_hooks_and_identity():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6),
                                torch.nn.ReLU(), torch.nn.GroupNorm(2, 6))
    bn = model[1]
    model.eval()
    ref = copy.deepcopy(model)
    seen = []
    bn.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert ct.convert(model) is model and model[1] is bn
    assert type(bn) is ct.BatchNorm2d and type(model[3]) is ct.GroupNorm
    assert not bn.training
    x = torch.randn(2, 3, 7, 7)
    torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)
    assert seen == [torch.Size([2, 6, 5, 5])]
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6),
                                torch.nn.ReLU(), torch.nn.GroupNorm(2, 6))
    plain.load_state_dict(model.state_dict())  # same keys, loads into the plain model
    assert ct.revert(model) is model and type(model[1]) is torch.nn.BatchNorm2d
    root = torch.nn.LayerNorm(4)
    assert type(ct.convert(root)) is ct.LayerNorm


def test_anything_else_runs_torch():
    """A layer and input on the meta device (as on a GPU) run torch's own kernel."""
    layer = ct.BatchNorm2d(3, device="meta")
    layer.train()
    y = layer(torch.empty(2, 3, 4, 4, device="meta"))
    assert y.device.type == "meta"


def test_threads_follow_torch_and_results_do_not_depend_on_them():
    if not cnorm.openmp_enabled():
        pytest.skip("serial build")
    x = torch.randn(16, 32, 24, 24)
    before = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(ct.functional.group_norm(x, 4))
            assert cnorm.get_num_threads() == n
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1])


def test_functional_forms_match_a_float64_reference():
    """Independent of torch: cnorm.torch.functional.batch_norm against the formulas."""
    x = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    w, b = torch.rand(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    y = ct.functional.batch_norm(x, None, None, w, b, training=True)
    xa = x.numpy()
    ax = formulas.channel_axes(xa)
    want = formulas.bn_forward(xa, xa.mean(axis=ax), xa.var(axis=ax), w.numpy(), b.numpy(),
                               1e-5)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-12, atol=1e-12)


def test_compile_has_no_graph_break_and_equals_eager():
    torch.manual_seed(0)
    model = ct.convert(torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.GroupNorm(2, 8),
        torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LayerNorm(8 * 4 * 4)))
    x = torch.randn(4, 3, 6, 6)
    assert torch._dynamo.explain(copy.deepcopy(model))(x).graph_break_count == 0
    eager = copy.deepcopy(model)
    y1, y2 = torch.compile(model)(x), eager(x)
    torch.testing.assert_close(y1, y2)
    y1.sum().backward()
    y2.sum().backward()
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    torch.testing.assert_close(model[1].running_var, eager[1].running_var)


def test_the_docstring_examples_run():
    import doctest
    import importlib

    failures, tried = doctest.testmod(importlib.import_module("cnorm.torch._convert"))
    assert tried >= 4 and failures == 0


@pytest.mark.parametrize("kind", ["BatchNorm2d", "GroupNorm", "LayerNorm"])
def test_outputs_are_recycled_only_when_nothing_holds_them(kind, tmp_path):
    """A module writes a step's large y and dx into the memory of the last step's once
    nothing made of it is alive (no page faults), and never into memory a tensor still
    holds; the memory is not carried by copies or pickles of the module."""
    layer = {"BatchNorm2d": lambda: ct.BatchNorm2d(16), "GroupNorm": lambda: ct.GroupNorm(4, 16),
             "LayerNorm": lambda: ct.LayerNorm(32)}[kind]()
    x = torch.randn(32, 16, 32, 32, requires_grad=True)  # 2 MB: above the recycling size
    y = layer(x)
    y.backward(torch.ones_like(y))
    ptrs = (y.data_ptr(), x.grad.data_ptr())
    kept = y.detach()  # a view of y holds its memory
    y2 = layer(x)
    assert y2.data_ptr() != ptrs[0] and torch.equal(kept, y.detach())
    ptrs = (y2.data_ptr(), ptrs[1])  # the slot's memory now: y2's
    del y, kept, y2
    x.grad = None
    y3 = layer(x)
    y3.backward(torch.ones_like(y3))
    assert (y3.data_ptr(), x.grad.data_ptr()) == ptrs  # reused: nothing held them
    twin = copy.deepcopy(layer)
    torch.save(layer, tmp_path / "layer.pt")
    assert torch.equal(twin(x.detach()), layer(x.detach()))
