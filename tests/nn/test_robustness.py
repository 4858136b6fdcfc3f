"""Robustness of every layer: empty and size-1 inputs, NaN/Inf, extreme magnitudes, many
Python threads at once, the GIL, memory, 64-bit sizes. (Awkward arrays: test_layouts.py; bad
input: test_errors.py.)

Cases that could crash the interpreter (odd strides, threads, huge arrays) run in a child
process (``isolated``), so that a segfault fails one test and not the run.
"""
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cnorm.testing import (
    FAMILY_4D,
    KINDS,
    channels_last,
    isolated,
    make,
    reference,
    rel_err,
    same_state,
    shape_for,
    stat_groups,
    state,
    torch_twin,
)
from cnorm.testing.tree import tree_path

try:
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

HERE = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------------------------ empty and size-1

@pytest.mark.parametrize("kind", list(KINDS))
def test_empty_batch_in_eval(kind):
    shape = shape_for(kind)
    layer = make(kind, shape, np.float32)
    layer(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    layer.eval()
    before = state(layer)
    x = np.zeros((0,) + shape[1:], np.float32)
    y = layer(x)
    dx = layer.backward(np.ones_like(x))
    assert y.shape == x.shape and dx.shape == x.shape and y.dtype == x.dtype
    if layer.weight is not None:  # sums over nothing
        assert np.all(layer.grad_weight == 0)
    after = state(layer)
    for key in ("running_mean", "running_var", "num_batches_tracked", "weight", "bias"):
        if key in before:
            assert same_state({key: before[key]}, {key: after[key]}), key


@pytest.mark.parametrize("shape", [(2, 1, 1, 5), (1, 3, 5, 1), (3, 2, 1, 1, 4), (5, 1, 2)])
@pytest.mark.parametrize("kind", list(KINDS))
def test_size_one_dims(kind, shape):
    if len(shape) not in KINDS[kind][0]:
        pytest.skip("kind takes other ranks")
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    layer = make(kind, shape, np.float64)
    y, dx = layer(x), layer.backward(dy)
    ry, rdx = reference(kind, layer, x, dy)
    assert rel_err(y, ry) < 1e-11
    # dx is rounding noise where the true one is ~0 (a row of one value): scale by dy
    assert np.max(np.abs(dx - rdx)) < 1e-9 * max(np.abs(rdx).max(), np.abs(dy).max())


# ------------------------------------------------------------------ NaN and Inf

def poisoned(kind, value, layout):
    rng = np.random.default_rng(3)
    shape = (3, 4, 6, 7)
    x = rng.standard_normal(shape).astype(np.float32)
    bad = x.copy()
    bad[1, 2, 3, 4] = value
    if layout == "nhwc":
        x, bad = channels_last(x), channels_last(bad)
    mask = stat_groups(kind, shape) == stat_groups(kind, shape)[1, 2, 3, 4]
    return x, bad, mask


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("kind", FAMILY_4D)
def test_nan_and_inf_stay_in_their_statistics_group(kind, value, layout):
    """One bad value makes its own channel (batch norm), row (layer/RMS norm) or group
    non-finite, and leaves every other output bit-identical to the clean run."""
    x, bad, mask = poisoned(kind, value, layout)
    dy = np.ones_like(x) * 0.5
    clean, dirty = make(kind, x.shape, np.float32), make(kind, x.shape, np.float32)
    y0, dx0 = clean(x), clean.backward(dy)
    y1, dx1 = dirty(bad), dirty.backward(dy)
    hit = mask
    if kind == "rms" and np.isinf(value):  # mean(x^2) = inf: the row's other outputs are 0
        hit = np.zeros_like(mask)
        hit[1, 2, 3, 4] = True
        assert np.all(y1[mask & ~hit] == 0)
    assert np.array_equal(~np.isfinite(y1), hit)
    assert np.array_equal(y1[~mask], y0[~mask])
    assert np.all(~np.isfinite(dx1[mask]))
    assert np.array_equal(dx1[~mask], dx0[~mask])
    if kind.startswith("bn"):  # only channel 2's running statistics are poisoned
        assert np.array_equal(np.isfinite(dirty.running_mean), np.arange(4) != 2)
    if torch is not None:
        t_layer = torch_twin(kind, make(kind, x.shape, np.float32), torch)
        xt = torch.from_numpy(np.ascontiguousarray(bad)).requires_grad_()
        yt = t_layer(xt)
        yt.backward(torch.from_numpy(np.ascontiguousarray(dy)))
        assert np.array_equal(np.isnan(yt.detach().numpy()), np.isnan(y1))
        assert np.array_equal(np.isfinite(xt.grad.numpy()), np.isfinite(dx1))


# ------------------------------------------------------------------ extreme magnitudes

@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("scale", [1e30, 1e-30, 1e19, 1e-19])
@pytest.mark.parametrize("kind", FAMILY_4D)
def test_extreme_magnitudes_float32(kind, scale, layout):
    """float32 data near 1e30 (squares overflow float) and near 1e-30 (squares underflow)
    normalize as in float64: no inf in a sum of squares, no all-zero output."""
    rng = np.random.default_rng(4)
    shape = (3, 4, 30, 50)
    x = (scale * (rng.standard_normal(shape) + rng.uniform(-3, 3, (1, 4, 1, 1)))).astype(
        np.float32)
    x = channels_last(x) if layout == "nhwc" else x
    layer = make(kind, shape, np.float32)
    y = layer(x)
    ry, _ = reference(kind, layer, x, x)
    assert np.all(np.isfinite(y))
    assert rel_err(y, ry) < 1e-5
    assert np.std(y.astype(np.float64)) > 0.1 * np.std(ry)


# ------------------------------------------------------------------ concurrency

def check_threads():
    """Many Python threads running every layer at once give the bits of sequential calls."""
    rng = np.random.default_rng(6)
    jobs = []
    for kind in KINDS:
        for j, shape in enumerate([shape_for(kind), tuple(2 * d for d in shape_for(kind))]):
            x = (rng.standard_normal(shape) + j).astype(np.float32)
            jobs.append((kind, x, rng.standard_normal(shape).astype(np.float32)))
    big = (rng.standard_normal((8, 16, 64, 64)) + 5).astype(np.float32)
    jobs += [("bn2d", big, big * 0.5), ("gn", big, big), ("ln2", big, big),
             (("in2d"), channels_last(big), big)]

    def run(job):
        kind, x, dy = job
        layer = make(kind, x.shape, np.float32)
        out = []
        for _ in range(3):
            out += [layer(x), layer.backward(dy), layer.grad_weight.copy()]
        layer.eval()
        return out + [layer(x)]

    want = [run(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(3):
            got = list(pool.map(run, jobs * 2))
            for a_list, b_list in zip(got, want * 2):
                for a, b in zip(a_list, b_list):
                    assert a.tobytes() == b.tobytes()


def test_many_python_threads_match_sequential():
    isolated("""
        import test_robustness as t
        t.check_threads()
    """, path=os.path.dirname(os.path.abspath(__file__)))


def test_thread_count_setting_is_per_thread():
    """set_num_threads applies to the calling thread only (OpenMP's rule): no shared
    mutable module state that one thread's call could change under another."""
    isolated("""
        from concurrent.futures import ThreadPoolExecutor
        import cnorm
        with ThreadPoolExecutor(max_workers=1) as pool:
            default = pool.submit(cnorm.get_num_threads).result()
            cnorm.set_num_threads(1)
            other = pool.submit(cnorm.get_num_threads).result()
        assert cnorm.get_num_threads() == 1 and other == default, (default, other)
    """)


def test_kernels_release_the_gil():
    """A long kernel in one thread lets another Python thread run meanwhile."""
    isolated("""
        import threading, time, numpy as np, cnorm
        x = np.random.default_rng(0).standard_normal((16, 64, 128, 128)).astype(np.float32)
        layer = cnorm.GroupNorm(8, 64)
        layer(x)
        t0 = time.perf_counter(); layer(x); alone = time.perf_counter() - t0
        ticks = []
        stop = threading.Event()
        def spin():
            while not stop.is_set():
                ticks.append(time.perf_counter())
                time.sleep(0.0005)
        th = threading.Thread(target=spin); th.start()
        time.sleep(0.01)
        n0 = len(ticks)
        for _ in range(5):
            layer(x); layer.backward(x)
        n1 = len(ticks)
        stop.set(); th.join()
        # with the GIL held through the kernels the spinner would get ~no ticks in between
        assert n1 - n0 >= 20, (n0, n1, alone)
    """)


# ------------------------------------------------------------------ memory

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer keeps freed memory in quarantine")
def test_no_memory_growth_over_thousands_of_calls():
    rng = np.random.default_rng(7)
    layers = []
    for kind in KINDS:
        for layout in ("nchw", "nhwc"):
            shape = shape_for(kind)
            x = rng.standard_normal(shape).astype(np.float32)
            if layout == "nhwc" and x.ndim > 2:
                x = channels_last(x)
            layers.append((make(kind, shape, np.float32), x))

    def loop(n):
        for _ in range(n):
            for layer, x in layers:
                layer.train()
                layer(x)
                layer.backward(x)
                layer.eval()
                layer(x)
                layer.backward(x)

    loop(200)
    start = rss_bytes()
    loop(2000)  # 2000 x 20 layers x 4 calls = 160,000 kernel calls
    grown = rss_bytes() - start
    assert grown < 4 << 20, f"RSS grew by {grown / 2**20:.1f} MB"


# ------------------------------------------------------------------ 64-bit sizes

def mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CNORM_SLOW") != "1", reason="slow: set CNORM_SLOW=1")
@pytest.mark.skipif(mem_available() < 19 << 30, reason="needs 19 GB of free memory")
def test_more_than_2_31_elements():
    """LayerNorm over rows of a float32 array of 2^31 + 2048 elements (8.6 GB in, 8.6 out):
    the rows past element 2^31 come out as the float64 reference says."""
    isolated("""
        import numpy as np, cnorm
        from cnorm.testing import layer_norm_ref
        L = 4096
        R = (2**31 + 2048) // L
        x = np.empty((R, L), np.float32)
        x[:] = np.arange(L, dtype=np.float32) * 1e-3
        x[-1] = np.linspace(-5, 5, L, dtype=np.float32) + 100
        x[-2] *= -1
        y = cnorm.layer_norm(x, (L,))
        for r in (0, R - 2, R - 1):
            want = layer_norm_ref(x[r:r + 1], x[r:r + 1], 1, None, None, 1e-5)[0]
            assert np.max(np.abs(y[r] - want[0])) < 1e-4, r
    """, timeout=1200)


def kernel_int_names(src):
    """Names declared C ``int`` in Cython source: variables (``cdef int a = f(x), b``) and
    parameters (``int n``), but not the names of functions returning int."""
    names = set()
    for decl in re.findall(r"^\s*cdef (?:inline )?int (.+)$", src, flags=re.M):
        if re.match(r"\s*\w+\(", decl):
            continue  # a function returning int; its parameters are read below
        depth, part, parts = 0, "", []
        for ch in decl:  # split at top-level commas only
            depth += (ch == "(") - (ch == ")")
            if ch == "," and depth == 0:
                parts.append(part)
                part = ""
            else:
                part += ch
        parts.append(part)
        names.update(p.split("=")[0].strip() for p in parts)
    names.update(re.findall(r"[(,]\s*int (\w+)", src))
    return names


def test_kernel_int_lint_sees_every_declaration():
    src = "cdef int nt = _threads(N * S, N), err = 0\ncdef int _f(int a, Py_ssize_t b):\n"
    assert kernel_int_names(src) == {"nt", "err", "a"}


def test_kernel_indices_are_64_bit_by_construction():
    """Every C ``int`` in the kernels is a lane, block, thread, width, dimension (d, nd: at
    most 32) or flag count or an element kind, never an index or a size: all index arithmetic
    is Py_ssize_t (64-bit)."""
    src_dir = tree_path(__file__, "src")
    src = "".join(open(os.path.join(d, f)).read() for d, _, files in sorted(os.walk(src_dir))
                  for f in sorted(files) if f.endswith((".pxi", ".pyx")))
    allowed = {"l", "blocks", "nt", "err", "w", "n", "n_threads", "width", "d", "nd", "found",
               "*found", "kind", "in_kind", "out_kind", "ce", "act"}  # ce: 1 or 3; act: a code
    names = kernel_int_names(src)
    assert names and names <= allowed, names - allowed
