"""pytest-benchmark: a training step of torch's norm layers and of their cnorm.torch twins
(the cases of bench/torch_twins.py, which times them side by side in alternating blocks).

    pytest bench/test_bench_torch.py --benchmark-only --benchmark-group-by=param:case
"""
import copy

import pytest

torch = pytest.importorskip("torch")
from torch_twins import CASES, QUICK, inputs, step  # noqa: E402 - beside this file

import cnorm.torch as ct  # noqa: E402


@pytest.mark.parametrize("impl", ["torch", "cnorm.torch"])
@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[0] for c in CASES])
def test_training_step(benchmark, case, impl, request):
    quick = request.config.getoption("benchmark_disable")  # a smoke pass: small shapes
    label, make, shape, channels_last = (QUICK if quick else CASES)[case]
    layer = make().train()
    if impl == "cnorm.torch":
        layer = ct.convert(copy.deepcopy(layer))
    x, dy = inputs(shape, channels_last)
    benchmark(step(layer, x, dy))
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("impl", ["torch", "cnorm.torch"])
def test_efficientnet_style_step(benchmark, impl, request):
    """A whole training step of bench/torch_model.py's network (batch 16, 128x128; 32x32 in
    the smoke pass), plain and converted."""
    from torch_model import network

    size = 32 if request.config.getoption("benchmark_disable") else 128
    model = network().train()
    if impl == "cnorm.torch":
        ct.convert(model)
    x, target = torch.randn(16, 3, size, size), torch.randint(0, 10, (16,))

    def step():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), target).backward()
    benchmark(step)
    assert all(p.grad is not None for p in model.parameters())
