"""pytest-benchmark suite: cnorm vs NumPy vs torch on the report's grid.

    pytest bench/ --benchmark-only          # measure (groups: op and shape)
    pytest bench/ --benchmark-disable       # smoke: run each case once

The cases and runners are those of ``python -m cnorm.bench`` (cnorm/bench.py).
"""
import pytest

from cnorm import bench

CASES = [pytest.param(c, id=f"{c[0]}-{'x'.join(map(str, c[2]))}") for c in bench.SHAPES]


@pytest.mark.parametrize("impl", bench.IMPLS)
@pytest.mark.parametrize("op", bench.OPS)
@pytest.mark.parametrize("case", CASES)
def test_batchnorm(benchmark, case, op, impl):
    name, dim, shape, layout = case
    fn = bench.make_runner(impl, op, dim, bench.make_input(shape, layout))
    if fn is None:
        pytest.skip(f"{impl} is not installed")
    benchmark.group = f"{op} {name} {'x'.join(map(str, shape))}"
    benchmark(fn)
