"""pytest-benchmark suite, data group: normalize_images against torch ops, OpenCV's
blobFromImages and NumPy; Moments against NumPy's mean + std; Standardizer.transform against
scikit-learn's StandardScaler; the fused norm + residual + relu blocks against torch's sequence
under autograd and cnorm's unfused one; batch and layer norm in float16 and bfloat16 against
cnorm in float32 and torch in the half type (the cases of cnorm/bench/data_cases.py, as in the
report).

    pytest bench/test_bench_data.py --benchmark-only
"""
import importlib

import pytest

from cnorm.bench import data_cases as data

CASES = [pytest.param(name, impl, id=f"{name}-{impl}")
         for name, case in data.CASES.items() for impl in case[2]]


@pytest.mark.parametrize("name,impl", CASES)
def test_data(benchmark, name, impl):
    try:
        lib = None if impl == "numpy" else importlib.import_module(data.module_of(impl))
    except ImportError:
        pytest.skip(f"{impl} is not installed")
    try:
        x = data.make_input(name)
    except ImportError:
        pytest.skip("ml_dtypes (the half extra) is not installed")
    fn = data.make_runner(impl, name, x, lib)
    benchmark.group = f"{name} {'x'.join(map(str, data.CASES[name][0]))} {data.CASES[name][1]}"
    benchmark(fn)
