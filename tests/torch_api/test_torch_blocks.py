"""cnorm.torch's fused blocks (timm's constructors, a residual): act(norm(x) + residual) against
torch's norm, + residual, then the activation module; gradients of x, the residual and the
parameters, and the running statistics."""
import copy

import pytest

torch = pytest.importorskip("torch")
import cnorm.torch as ct  # noqa: E402

ACTS = ["relu", "silu", "gelu", torch.nn.LeakyReLU, "identity", torch.nn.Hardswish]


def compare(block, norm, x, residual):
    act = copy.deepcopy(block.act)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    rs = [None if residual is None else residual.clone().requires_grad_() for _ in range(2)]
    y0 = block(xs[0], residual=rs[0])
    y1 = norm(xs[1])
    y1 = act(y1 if rs[1] is None else y1 + rs[1])
    torch.testing.assert_close(y0, y1, atol=1e-5, rtol=1e-5)
    y0.square().sum().backward()
    y1.square().sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad, atol=1e-4, rtol=1e-4)
    if residual is not None:
        torch.testing.assert_close(rs[0].grad, rs[1].grad, atol=1e-4, rtol=1e-4)
    for p, q in zip(block.parameters(), norm.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-3, rtol=1e-4)
    for name, buf in norm.named_buffers():
        torch.testing.assert_close(getattr(block, name).double(), buf.double())


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("act", ACTS, ids=str)
def test_batch_norm_act(act, residual):
    torch.manual_seed(0)
    block = ct.BatchNormAct2d(4, act_layer=act)
    norm = torch.nn.BatchNorm2d(4)
    norm.load_state_dict(block.state_dict())  # the keys of BatchNorm2d, as timm's
    x = 2 + torch.randn(3, 4, 5, 5)
    compare(block, norm, x, torch.randn_like(x) if residual else None)
    assert block.act_name == (None if act in ("identity", torch.nn.Hardswish) else
                              {torch.nn.LeakyReLU: "leaky_relu"}.get(act, act))


@pytest.mark.parametrize("act", ["silu", torch.nn.Hardswish], ids=str)
def test_group_norm_act_takes_timms_argument_order(act):
    torch.manual_seed(0)
    block = ct.GroupNormAct(8, num_groups=2, act_layer=act)  # num_channels first, as timm
    assert (block.num_channels, block.num_groups) == (8, 2)
    norm = torch.nn.GroupNorm(2, 8)
    norm.load_state_dict(block.state_dict())
    x = torch.randn(2, 8, 4, 4).to(memory_format=torch.channels_last)
    compare(block, norm, x, torch.randn_like(x))


class _Residual(torch.nn.Module):
    """conv, then a BatchNormAct2d with the input as residual, then a GroupNormAct."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.bn = ct.BatchNormAct2d(4, act_layer="silu")
        self.gn = ct.GroupNormAct(4, num_groups=2, act_layer="leaky_relu")

    def forward(self, x):
        return self.gn(self.bn(self.conv(x), residual=x), residual=x)


def test_blocks_compile_without_graph_break_and_equal_eager():
    torch.manual_seed(0)
    model, x = _Residual(), torch.randn(3, 4, 5, 5)
    explained = torch._dynamo.explain(copy.deepcopy(model))(x)
    assert explained.graph_break_count == 0
    code = explained.graphs[0].code
    assert "cnorm.batch_norm" in code and "cnorm.group_norm" in code
    eager = copy.deepcopy(model)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    ys = [torch.compile(model)(xs[0]), eager(xs[1])]
    for y in ys:
        y.square().sum().backward()
    torch.testing.assert_close(ys[0], ys[1])
    torch.testing.assert_close(xs[0].grad, xs[1].grad)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    torch.testing.assert_close(model.bn.running_var, eager.bn.running_var)
    assert int(model.bn.num_batches_tracked) == int(eager.bn.num_batches_tracked) == 1
