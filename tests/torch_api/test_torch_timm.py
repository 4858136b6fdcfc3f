"""convert/revert on timm's models and norm layers: BatchNormAct2d, GroupNormAct and
LayerNorm2d become cnorm.torch twins (subclasses of timm's classes), give timm's outputs,
gradients and running statistics, and revert to timm's classes with a state_dict that loads.

timm comes through cnorm.testing.timm.import_timm (a stand-in for torchvision, which cannot
load beside torch 2.13 on these machines); without timm these tests skip.
"""
import copy

import pytest

torch = pytest.importorskip("torch")
import cnorm.torch as ct  # noqa: E402
from cnorm.testing.timm import import_timm  # noqa: E402


@pytest.fixture(scope="module")
def timm():
    module = import_timm()
    if module is None:
        pytest.skip("timm is not installed")
    return module


def _same(model, twin, x):
    """One training step of each: outputs, input and parameter gradients, buffers."""
    xs = [x.clone().requires_grad_() for _ in range(2)]
    ys = [model(xs[0]), twin(xs[1])]
    for y in ys:
        y.square().mean().backward()
    torch.testing.assert_close(ys[1], ys[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(xs[1].grad, xs[0].grad, atol=1e-4, rtol=1e-3)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-4, rtol=1e-3, msg=name)
    for (name, b), c in zip(model.named_buffers(), twin.buffers()):
        torch.testing.assert_close(c, b, atol=1e-5, rtol=1e-5, msg=name)


def test_timm_norm_layers_convert_and_revert(timm):
    L = timm.layers
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), L.BatchNormAct2d(8, act_layer="silu"),
        L.GroupNormAct(8, 4, act_layer="gelu"), L.LayerNorm2d(8),
        L.BatchNormAct2d(8, act_layer="hard_swish"))  # not fused: timm's module after
    twin = ct.convert(copy.deepcopy(model))
    kinds = [type(m) for m in twin[1:]]
    assert [k.__name__ for k in kinds] == ["BatchNormAct2d", "GroupNormAct", "LayerNorm2d",
                                           "BatchNormAct2d"]
    assert all(k.__module__ == "cnorm.torch._convert" for k in kinds)
    assert all(isinstance(t, type(m)) for t, m in zip(twin[1:], model[1:]))
    assert (twin[1].act_name, twin[2].act_name, twin[4].fusable) == ("silu", "gelu", False)
    x = torch.randn(4, 3, 9, 9)
    _same(model, twin, x)
    _same(model, twin, x.to(memory_format=torch.channels_last))
    ct.revert(twin)
    assert [type(t) for t in twin] == [type(m) for m in model]
    assert not hasattr(twin[1], "act_name")
    model.load_state_dict(twin.state_dict())


def test_timm_efficientnet_converts_whole(timm):
    torch.manual_seed(0)
    # float64: 49 batch norms deep, down to 1x1 planes, float32 rounding would differ visibly
    model = timm.create_model("efficientnet_b0", num_classes=10).double().train()
    twin = ct.convert(copy.deepcopy(model))
    blocks = [m for m in twin.modules() if type(m).__name__ == "BatchNormAct2d"]
    assert len(blocks) == 49 and all(isinstance(m, ct.BatchNormAct2d) for m in blocks)
    _same(model, twin, torch.randn(4, 3, 32, 32, dtype=torch.float64))
