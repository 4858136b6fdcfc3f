"""pytest-benchmark suite: cnorm vs NumPy vs torch on the report's grid (every layer kind).

    pytest bench/ --benchmark-only          # measure (groups: op and shape)
    pytest bench/ --benchmark-disable       # smoke: run each case once

The cases and runners are those of ``python -m cnorm.bench`` (cnorm/bench.py).
"""
import pytest

from cnorm import bench

CASES = [pytest.param(c, op, id=f"{c[0]}-{'x'.join(map(str, c[2]))}-{op}")
         for c in bench.SHAPES for op in bench.ops_for(c[1])]


@pytest.mark.parametrize("impl", bench.IMPLS)
@pytest.mark.parametrize("case,op", CASES)
def test_norm(benchmark, case, op, impl):
    name, kind, shape, layout = case
    fn = bench.make_runner(impl, op, kind, bench.make_input(shape, layout))
    if fn is None:
        pytest.skip(f"{impl} is not installed")
    benchmark.group = f"{op} {name} {'x'.join(map(str, shape))}"
    benchmark(fn)
