"""pytest-benchmark suite: cnorm vs NumPy vs torch on the report's grid (every layer kind).

    pytest bench/ --benchmark-only          # measure (groups: op and shape)
    pytest bench/ --benchmark-disable       # smoke: run each case once

The cases and runners are those of ``python -m cnorm.bench`` (cnorm/bench/cases.py). Here all
implementations share one process; the report runs each in its own.
"""
import importlib

import pytest

from cnorm.bench import cases

CASES = [pytest.param(c, op, id=f"{c[0]}-{'x'.join(map(str, c[2]))}-{op}")
         for c in cases.SHAPES for op in cases.ops_for(c[1])]


@pytest.mark.parametrize("impl", cases.IMPLS)
@pytest.mark.parametrize("case,op", CASES)
def test_norm(benchmark, case, op, impl):
    name, kind, shape, layout = case
    try:
        lib = None if impl == "numpy" else importlib.import_module(impl)
    except ImportError:
        pytest.skip(f"{impl} is not installed")
    fn = cases.make_runner(impl, op, kind, cases.make_input(shape, layout), lib)
    benchmark.group = f"{op} {name} {'x'.join(map(str, shape))}"
    benchmark(fn)


@pytest.mark.parametrize("reuse", [False, True], ids=["new-output", "out="])
def test_out(benchmark, reuse):
    """batch_norm's training forward writing a new output each call, or a reused ``out=``
    buffer (no fresh pages to fault in): (32, 64, 56, 56) float32."""
    import numpy as np

    import cnorm
    x = cases.make_input((32, 64, 56, 56), "nchw")
    rm, rv = np.zeros(64, np.float32), np.ones(64, np.float32)
    out = np.empty_like(x) if reuse else None
    benchmark.group = "batch_norm train_fwd 32x64x56x56, out="
    benchmark(lambda: cnorm.batch_norm(x, rm, rv, training=True, out=out))
