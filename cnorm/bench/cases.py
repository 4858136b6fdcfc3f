"""The benchmark cases (shapes, operations, a plain NumPy implementation, runners), and the
worker process that times one implementation.

The report (``python -m cnorm.bench``) and the pytest-benchmark suite (``bench/``) share these
definitions. The report runs each implementation in a worker of its own (this file run as a
script), so that no implementation's allocations or caches disturb another's timings. This
module imports neither cnorm nor torch at the top: a worker imports only what it times.
"""
import importlib
import importlib.util
import json
import os
import sys
import time
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]
Runner = Callable[[], Any]  # one call of the timed operation
Shape = Tuple[int, ...]


def _load_data_cases() -> Any:
    """data_cases.py by its path: a torch or OpenCV worker must not import cnorm."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_cases.py")
    spec = importlib.util.spec_from_file_location("cnorm_bench_data", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


data_cases = _load_data_cases()

EPS = 1e-5

# (name, layer kind, shape, memory layout); float32 throughout. Kinds: see LAYERS.
SHAPES = [
    ("bn2d", "bn2d", (32, 64, 56, 56), "nchw"),
    ("bn2d", "bn2d", (32, 256, 14, 14), "nchw"),
    ("bn2d", "bn2d", (8, 32, 128, 128), "nchw"),
    ("bn2d", "bn2d", (2, 64, 224, 224), "nchw"),
    ("bn2d", "bn2d", (64, 512, 7, 7), "nchw"),
    ("bn2d", "bn2d", (128, 64, 32, 32), "nchw"),  # issue 14's held-out shapes
    ("bn2d", "bn2d", (16, 128, 28, 28), "nchw"),
    ("bn1d", "bn1d", (256, 1024), "nc"),
    ("bn1d", "bn1d", (1024, 256), "nc"),
    ("bn2d-cl", "bn2d", (16, 128, 28, 28), "nhwc"),
    ("bn3d", "bn3d", (2, 16, 16, 32, 32), "nchw"),  # issue 24's held-out shape
    ("bn1d", "bn1d", (8, 16), "nc"),
    ("ln", "ln", (64, 196, 768), "nc"),
    ("ln", "ln", (4096, 64), "nc"),
    ("ln-chw", "ln-chw", (32, 64, 56, 56), "nchw"),
    ("gn32", "gn32", (32, 64, 56, 56), "nchw"),
    ("gn32", "gn32", (16, 128, 28, 28), "nchw"),
    ("gn32-cl", "gn32", (32, 64, 56, 56), "nhwc"),
    ("gn32-cl", "gn32", (16, 128, 28, 28), "nhwc"),
    ("in2d", "in2d", (16, 64, 56, 56), "nchw"),
    ("rms", "rms", (64, 196, 768), "nc"),
]
OPS = ("train_fwd", "train_fwd_bwd", "eval_fwd")


def ops_for(kind: str) -> Tuple[str, ...]:
    """Batch norm has an eval path of its own; the other layers compute the same either way."""
    return OPS if kind.startswith("bn") else OPS[:2]


def make_layer(lib: Any, kind: str, shape: Shape) -> Any:
    """The layer of ``kind`` for ``shape`` from ``lib``: cnorm or torch.nn (same names and
    constructor arguments)."""
    C = shape[1]
    makers: Dict[str, Callable[[], Any]] = {
            "bn1d": lambda: lib.BatchNorm1d(C), "bn2d": lambda: lib.BatchNorm2d(C),
            "bn3d": lambda: lib.BatchNorm3d(C),
            "ln": lambda: lib.LayerNorm(shape[-1]), "ln-chw": lambda: lib.LayerNorm(shape[1:]),
            "gn32": lambda: lib.GroupNorm(32, C), "in2d": lambda: lib.InstanceNorm2d(C),
            "rms": lambda: lib.RMSNorm(shape[-1])}
    return makers[kind]()


# the norm cases' implementations (cnorm.torch: torch's layer converted, on torch tensors);
# the data cases name their own
IMPLS = ("cnorm", "numpy", "torch", "cnorm.torch")
# bytes that must cross memory, in units of the input's size: read x + write y forward,
# read x and dy + write dx backward
TRAFFIC = {"train_fwd": 2, "train_fwd_bwd": 5, "eval_fwd": 2}


def make_input(shape: Shape, layout: str, seed: int = 0) -> Array:
    x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    if layout == "nhwc":
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1)).transpose(0, 3, 1, 2)
    return x


# --- a plain NumPy implementation (what a NumPy user writes), the "numpy" columns -----------

def _np_axes(x: Array) -> Shape:
    return (0,) + tuple(range(2, x.ndim))


def numpy_train_forward(x: Array, weight: Array, bias: Array,
                        eps: float = EPS) -> Tuple[Array, Tuple[Array, Array]]:
    ax = _np_axes(x)
    mean = x.mean(axis=ax, keepdims=True)
    var = x.var(axis=ax, keepdims=True)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    shp = mean.shape
    return xhat * weight.reshape(shp) + bias.reshape(shp), (xhat, invstd)


def numpy_train_backward(dy: Array, weight: Array,
                         saved: Tuple[Array, Array]) -> Tuple[Array, Array, Array]:
    xhat, invstd = saved
    ax = _np_axes(dy)
    m = dy.size // dy.shape[1]
    shp = invstd.shape
    dbias = dy.sum(axis=ax)
    dweight = (dy * xhat).sum(axis=ax)
    dx = (weight.reshape(shp) * invstd / m) * (
        m * dy - dbias.reshape(shp) - xhat * dweight.reshape(shp))
    return dx, dweight, dbias


def numpy_eval_forward(x: Array, mean: Array, var: Array, weight: Array, bias: Array,
                       eps: float = EPS) -> Array:
    shp = (1, -1) + (1,) * (x.ndim - 2)
    scale = (weight / np.sqrt(var + eps)).reshape(shp)
    return (x - mean.reshape(shp)) * scale + bias.reshape(shp)


def numpy_rows(kind: str, x: Array) -> Tuple[Array, Shape]:
    """The (rows, L) view whose rows a per-row norm normalizes, and the shape its (per-channel
    or per-column) parameters broadcast to over x."""
    N, C = x.shape[:2]
    rows: Shape = {"ln": (-1, x.shape[-1]), "rms": (-1, x.shape[-1]), "ln-chw": (N, -1),
            "gn32": (N * 32, -1), "in2d": (N * C, -1)}[kind]
    pshape: Shape = x.shape[1:] if kind == "ln-chw" else (
        (x.shape[-1],) if kind in ("ln", "rms") else (C,) + (1,) * (x.ndim - 2))
    return x.reshape(rows), pshape


def numpy_rows_train(kind: str, x: Array, dy: Optional[Array] = None, eps: float = EPS) -> Any:
    """Forward (and, given dy, backward with parameter gradients) of a per-row norm."""
    rms = kind == "rms"
    X, pshape = numpy_rows(kind, x)
    if rms:
        inv = 1.0 / np.sqrt((X * X).mean(axis=1, keepdims=True) + eps)
        xhat = X * inv
    else:
        inv = 1.0 / np.sqrt(X.var(axis=1, keepdims=True) + eps)
        xhat = (X - X.mean(axis=1, keepdims=True)) * inv
    affine = kind != "in2d"  # torch's defaults: InstanceNorm2d has no parameters
    w, b = np.ones(pshape, x.dtype), np.zeros(pshape, x.dtype)
    y = xhat.reshape(x.shape) * w + b if affine else xhat.reshape(x.shape)
    if dy is None:
        return y
    G = (dy * w if affine else dy).reshape(X.shape)
    gx = G * xhat
    corr = xhat * gx.mean(axis=1, keepdims=True)
    dx = inv * (G - corr if rms else G - G.mean(axis=1, keepdims=True) - corr)
    if not affine:
        return dx
    lead = x.ndim - len(pshape)  # parameter gradients: sums over the broadcast axes
    ax = tuple(i for i in range(x.ndim) if i < lead or pshape[i - lead] == 1)
    return dx, (dy * xhat.reshape(x.shape)).sum(axis=ax), dy.sum(axis=ax)


# --- runners: a zero-argument callable per (impl, op, case) ----------------------------------

def make_runner(impl: str, op: str, kind: str, x: Array, lib: Any) -> Runner:
    """A callable running ``op`` once with ``impl`` on ``x``; ``lib`` is the imported cnorm or
    torch module (None for numpy)."""
    C = x.shape[1]
    dy = np.ones_like(x)
    if impl == "numpy" and not kind.startswith("bn"):
        if op == "train_fwd":
            return lambda: numpy_rows_train(kind, x)
        return lambda: numpy_rows_train(kind, x, dy)
    if impl == "cnorm":
        layer = make_layer(lib, kind, x.shape)
        if op == "train_fwd":
            return lambda: layer(x)
        if op == "train_fwd_bwd":
            return lambda: (layer(x), layer.backward(dy))
        layer.eval()
        return lambda: layer(x)
    if impl == "numpy":
        w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
        if op == "train_fwd":
            return lambda: numpy_train_forward(x, w, b)
        if op == "train_fwd_bwd":
            return lambda: numpy_train_backward(dy, w, numpy_train_forward(x, w, b)[1])
        rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
        return lambda: numpy_eval_forward(x, rm, rv, w, b)
    if impl in ("torch", "cnorm.torch"):  # torch's layer, or its cnorm.torch twin
        import torch

        layer = make_layer(torch.nn, kind, x.shape)
        if impl == "cnorm.torch":
            layer = lib.convert(layer)
        xt = torch.from_numpy(x)
        if op == "train_fwd_bwd":
            xg = xt.detach().clone().requires_grad_()
            dyt = torch.from_numpy(dy)

            def fwd_bwd() -> None:
                layer(xg).backward(dyt)
            return fwd_bwd
        if op == "eval_fwd":
            layer.eval()

        def fwd() -> None:
            with torch.no_grad():
                layer(xt)
        return fwd
    raise ValueError(impl)


def block_median(fn: Runner, seconds: float, min_rounds: int = 5,
                 max_rounds: int = 200) -> Tuple[float, int]:
    """Median seconds of ``fn`` over an uninterrupted block of rounds, as many as fit in
    ``seconds`` within the bounds. First a warm-up of at least 3 calls and a fifth of the
    time: a library's first calls (lazy initialization, allocator growth, autograd's first
    graph) can cost a hundred times a steady one."""
    warm: List[float] = []
    start = time.perf_counter()
    while len(warm) < 3 or (time.perf_counter() - start < 0.2 * seconds
                             and len(warm) < max_rounds):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    per_call = float(np.median(warm[-3:]))
    rounds = int(min(max_rounds, max(min_rounds, 0.8 * seconds / max(per_call, 1e-9))))
    times: List[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), rounds


def warm_malloc() -> None:
    """Put glibc's malloc in the state of a long-running process: its mmap threshold starts
    at 128 KB and only rises when a large block is freed, until then every output above
    128 KB is fresh pages and page faults. Freeing one 30 MB array does what any training
    loop does in its first steps."""
    np.ones(30 << 18, np.float32).sum()


def _import(impl: str, path: Optional[str]) -> Optional[ModuleType]:
    """The library a worker times: cnorm (from ``path`` when given), torch, or None."""
    if impl == "numpy":
        return None
    if path:
        sys.path.insert(0, path)
    return importlib.import_module(impl)


def worker(impl: str, path: Optional[str] = None) -> None:
    """Serve timing requests for ``impl`` on stdin/stdout, one JSON object a line:
    {"threads": n}, {"case": [name, kind, shape, layout], "op": op, "seconds": s} (a data
    case: {"case": ["data", name, shape], ...}), {"copy": nbytes} and {"read": nbytes} (the
    stream-copy and read bandwidths, with cnorm's probes)."""
    try:
        lib = _import(data_cases.module_of(impl) if impl != "copy" else "cnorm", path)
        copy: Any = importlib.import_module("cnorm.bench._stream") if impl == "copy" else None
    except ImportError as e:
        print(json.dumps({"unavailable": str(e)}), flush=True)
        return
    print(json.dumps({"ready": impl, "version": getattr(lib, "__version__", np.__version__)}),
          flush=True)
    warm_malloc()
    threads = 1
    cached: Tuple[Any, Optional[Runner]] = (None, None)  # the last case and its runner
    for line in sys.stdin:
        req = json.loads(line)
        if "threads" in req:
            threads = req["threads"]
            data_cases.set_threads(impl, lib, threads)
            out = {"threads": threads}
        elif "copy" in req:
            src = np.ones(req["copy"] // 4, np.float32)
            dst = np.empty_like(src)
            t, _ = block_median(lambda: copy.stream_copy(src, dst, threads), 0.5, 10)
            out = {"gbps": 2 * src.nbytes / t / 1e9}
        elif "read" in req:
            words = np.ones(req["read"] // 8, np.uint64)
            t, _ = block_median(lambda: copy.stream_read(words, threads), 0.5, 10)
            out = {"gbps": words.nbytes / t / 1e9}
        elif req["case"][0] == "data":
            _, name, shape = req["case"]
            if cached[0] != (name, tuple(shape)):
                x = data_cases.make_input(name, shape)
                cached = ((name, tuple(shape)), data_cases.make_runner(impl, name, x, lib))
            assert cached[1] is not None
            t, rounds = block_median(cached[1], req["seconds"])
            out = {"seconds": t, "rounds": rounds}
        else:
            name, kind, shape, layout = req["case"]
            key = (tuple(req["case"][1:3]) + (layout, req["op"]))
            if cached[0] != key:
                x = make_input(tuple(shape), layout)
                cached = (key, make_runner(impl, req["op"], kind, x, lib))
            assert cached[1] is not None
            t, rounds = block_median(cached[1], req["seconds"])
            out = {"seconds": t, "rounds": rounds}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.path.pop(0)  # this file's folder (cnorm/bench/) must not shadow anything
    worker(*sys.argv[1:])
