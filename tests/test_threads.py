"""Thread control, and bit-identical results for any thread count."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import all_outputs, layout_input

import cnorm

needs_openmp = pytest.mark.skipif(not cnorm.openmp_enabled(), reason="serial build")

# Large enough to run in parallel and to span several chunks per channel.
CASES = [((8, 16, 40, 40), "nchw"), ((8, 16, 40, 40), "nhwc"), ((3, 2, 150, 151), "nchw"),
         ((6000, 33), "nc"), ((4, 5, 20000), "ncl"), ((200, 24, 7, 7), "nchw"),
         ((150, 40, 9), "ncl")]


@pytest.fixture
def restore_threads():
    n = cnorm.get_num_threads()
    yield
    cnorm.set_num_threads(n)


@needs_openmp
@pytest.mark.parametrize("shape,layout", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_across_thread_counts(rng, restore_threads, shape, layout, dtype):
    x = layout_input(rng, shape, layout, dtype, offset=100.0)
    results = {}
    for n in (1, 2, 3):
        cnorm.set_num_threads(n)
        assert cnorm.get_num_threads() == n
        results[n] = all_outputs(x)
    for n in (2, 3):
        for a, b in zip(results[1], results[n]):
            assert a.tobytes() == b.tobytes(), f"{n} threads differ from 1"


def test_set_num_threads_returns_previous(restore_threads):
    if not cnorm.openmp_enabled():
        assert cnorm.set_num_threads(3) == 1 and cnorm.get_num_threads() == 1
        return
    cnorm.set_num_threads(3)
    assert cnorm.set_num_threads(2) == 3
    assert cnorm.get_num_threads() == 2


@pytest.mark.parametrize("bad,err", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                     ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects(restore_threads, bad, err):
    before = cnorm.get_num_threads()
    with pytest.raises(err):
        cnorm.set_num_threads(bad)
    assert cnorm.get_num_threads() == before


@needs_openmp
def test_threadpoolctl_is_respected(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    cnorm.set_num_threads(2)
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cnorm.get_num_threads() == 1
    assert cnorm.get_num_threads() == 2


@needs_openmp
def test_omp_num_threads_env_is_respected(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="3")
    # cwd away from the source tree, so the installed package is imported
    out = subprocess.run([sys.executable, "-c", "import cnorm; print(cnorm.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "3"
