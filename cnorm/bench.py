"""Benchmark report: ``python -m cnorm.bench``.

Times cnorm, a plain NumPy implementation and torch (when installed) side by side in one run,
over a default grid of batch-, layer-, group-, instance- and RMS-norm cases, at 1 and 2
threads. Prints a table of medians,
speedups and the bandwidth achieved as a fraction of a stream copy measured in the same run,
and writes the results as JSON and, when matplotlib is installed, a PNG chart.

The same case definitions drive the pytest-benchmark suite in ``bench/``.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import cnorm

from ._backend import kernels as _kernels
from ._backend import target as _simd_target

try:  # optional comparison
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

EPS = 1e-5

# (name, layer kind, shape, memory layout); float32 throughout. Kinds: see LAYERS.
SHAPES = [
    ("bn2d", "bn2d", (32, 64, 56, 56), "nchw"),
    ("bn2d", "bn2d", (32, 256, 14, 14), "nchw"),
    ("bn2d", "bn2d", (8, 32, 128, 128), "nchw"),
    ("bn2d", "bn2d", (2, 64, 224, 224), "nchw"),
    ("bn2d", "bn2d", (64, 512, 7, 7), "nchw"),
    ("bn1d", "bn1d", (256, 1024), "nc"),
    ("bn2d-cl", "bn2d", (16, 128, 28, 28), "nhwc"),
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


def ops_for(kind):
    """Batch norm has an eval path of its own; the other layers compute the same either way."""
    return OPS if kind.startswith("bn") else OPS[:2]


def make_layer(lib, kind, shape):
    """The layer of ``kind`` for ``shape`` from ``lib``: cnorm or torch.nn (same names and
    constructor arguments)."""
    C = shape[1]
    return {"bn1d": lambda: lib.BatchNorm1d(C), "bn2d": lambda: lib.BatchNorm2d(C),
            "ln": lambda: lib.LayerNorm(shape[-1]), "ln-chw": lambda: lib.LayerNorm(shape[1:]),
            "gn32": lambda: lib.GroupNorm(32, C), "in2d": lambda: lib.InstanceNorm2d(C),
            "rms": lambda: lib.RMSNorm(shape[-1])}[kind]()
IMPLS = ("cnorm", "numpy", "torch")
# bytes that must cross memory, in units of the input's size: read x + write y forward,
# read x and dy + write dx backward
TRAFFIC = {"train_fwd": 2, "train_fwd_bwd": 5, "eval_fwd": 2}


def make_input(shape, layout, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    if layout == "nhwc":
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1)).transpose(0, 3, 1, 2)
    return x


# --- a plain NumPy implementation (what a NumPy user writes), the "numpy" columns -----------

def _np_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def numpy_train_forward(x, weight, bias, eps=EPS):
    ax = _np_axes(x)
    mean = x.mean(axis=ax, keepdims=True)
    var = x.var(axis=ax, keepdims=True)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    shp = mean.shape
    return xhat * weight.reshape(shp) + bias.reshape(shp), (xhat, invstd)


def numpy_train_backward(dy, weight, saved):
    xhat, invstd = saved
    ax = _np_axes(dy)
    m = dy.size // dy.shape[1]
    shp = invstd.shape
    dbias = dy.sum(axis=ax)
    dweight = (dy * xhat).sum(axis=ax)
    dx = (weight.reshape(shp) * invstd / m) * (
        m * dy - dbias.reshape(shp) - xhat * dweight.reshape(shp))
    return dx, dweight, dbias


def numpy_eval_forward(x, mean, var, weight, bias, eps=EPS):
    shp = (1, -1) + (1,) * (x.ndim - 2)
    scale = (weight / np.sqrt(var + eps)).reshape(shp)
    return (x - mean.reshape(shp)) * scale + bias.reshape(shp)


def numpy_rows(kind, x):
    """The (rows, L) view whose rows a per-row norm normalizes, and the shape its (per-channel
    or per-column) parameters broadcast to over x."""
    N, C = x.shape[:2]
    rows = {"ln": (-1, x.shape[-1]), "rms": (-1, x.shape[-1]), "ln-chw": (N, -1),
            "gn32": (N * 32, -1), "in2d": (N * C, -1)}[kind]
    pshape = x.shape[1:] if kind == "ln-chw" else (
        (x.shape[-1],) if kind in ("ln", "rms") else (C,) + (1,) * (x.ndim - 2))
    return x.reshape(rows), pshape


def numpy_rows_train(kind, x, dy=None, eps=EPS):
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

def make_runner(impl, op, kind, x):
    """A callable running ``op`` once with ``impl`` on ``x``, or None if impl is unavailable."""
    C = x.shape[1]
    dy = np.ones_like(x)
    if impl == "numpy" and not kind.startswith("bn"):
        if op == "train_fwd":
            return lambda: numpy_rows_train(kind, x)
        return lambda: numpy_rows_train(kind, x, dy)
    if impl == "cnorm":
        layer = make_layer(cnorm, kind, x.shape)
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
    if impl == "torch":
        if torch is None:
            return None
        layer = make_layer(torch.nn, kind, x.shape)
        xt = torch.from_numpy(x)
        if op == "train_fwd_bwd":
            xg = xt.detach().clone().requires_grad_()
            dyt = torch.from_numpy(dy)

            def fwd_bwd():
                layer(xg).backward(dyt)
            return fwd_bwd
        if op == "eval_fwd":
            layer.eval()

        def fwd():
            with torch.no_grad():
                layer(xt)
        return fwd
    raise ValueError(impl)


def warm_malloc():
    """Put glibc's malloc in the state of a long-running process: its mmap threshold starts
    at 128 KB and only rises when a large block is freed, until then every output above
    128 KB is fresh pages and page faults, whatever library made it. Freeing one 30 MB
    array does what any training loop does in its first steps. It applies to every
    implementation alike."""
    np.ones(30 << 18, np.float32).sum()


def set_threads(n):
    cnorm.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


def _once(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_times(fns, budget=1.0, min_rounds=5, max_rounds=200):
    """Median seconds of each callable in ``fns`` (a dict), measured side by side: rounds in
    which each runs once, in turn, so that a burst of noise on a shared machine hits all of
    them alike. As many rounds as fit in ``budget`` seconds, within the bounds."""
    first = {k: _once(f) for k, f in fns.items()}  # warm-up, and a cost estimate
    rounds = int(min(max_rounds, max(min_rounds, budget / max(sum(first.values()), 1e-9))))
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            times[k].append(_once(f))
    return {k: float(np.median(v)) for k, v in times.items()}


def stream_copy_bandwidth(nbytes=256 << 20):
    """Read + write bandwidth (bytes/s) of a parallel copy of a buffer larger than the
    caches, with the current thread count."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    t = median_times({"copy": lambda: _kernels.stream_copy(src, dst)}, min_rounds=10)["copy"]
    return 2 * src.nbytes / t


class Progress:
    def __init__(self, total, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.enabled = stream.isatty() or os.environ.get("CNORM_BENCH_PROGRESS") == "1"

    def step(self, label):
        self.done += 1
        if self.enabled:
            width = 30
            filled = width * self.done // self.total
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] "
                              f"{self.done}/{self.total} {label:<40.40}")
            self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")


def _ops(kind, ops):
    return [op for op in ops if op in ops_for(kind)]


def run(threads=(1, 2), shapes=SHAPES, ops=OPS, impls=IMPLS, budget=1.0):
    """Run the grid; returns a dict with the machine, copy bandwidths and one row per case."""
    impls = [i for i in impls if i != "torch" or torch is not None]
    warm_malloc()
    rows, copy_bw = [], {}
    progress = Progress(len(threads) * (1 + sum(len(_ops(c[1], ops)) for c in shapes)))
    previous = cnorm.get_num_threads()
    try:
        for nt in threads:
            set_threads(nt)
            progress.step(f"stream copy, {nt} thread(s)")
            copy_bw[nt] = stream_copy_bandwidth()
            for name, kind, shape, layout in shapes:
                x = make_input(shape, layout)
                for op in _ops(kind, ops):
                    progress.step(f"{op} {shape} {nt}t")
                    row = {"case": name, "op": op, "shape": list(shape), "layout": layout,
                           "threads": nt, "bytes": x.nbytes}
                    row.update(median_times({i: make_runner(i, op, kind, x) for i in impls},
                                            budget=budget))
                    row["gbps"] = TRAFFIC[op] * x.nbytes / row["cnorm"] / 1e9
                    row["copy_fraction"] = TRAFFIC[op] * x.nbytes / row["cnorm"] / copy_bw[nt]
                    rows.append(row)
    finally:
        progress.close()
        set_threads(previous)
    return {"machine": machine_info(), "copy_gbps": {str(k): v / 1e9 for k, v in copy_bw.items()},
            "rows": rows}


def machine_info():
    return {"cnorm": cnorm.__version__, "simd": _simd_target, "openmp": cnorm.openmp_enabled(),
            "numpy": np.__version__, "torch": None if torch is None else torch.__version__,
            "python": platform.python_version(), "cpu": _cpu_name(), "cores": os.cpu_count()}


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def format_table(result):
    has_torch = any("torch" in r for r in result["rows"])
    head = ["case", "op", "shape", "thr", "cnorm ms", "numpy ms"]
    head += ["torch ms", "vs torch"] if has_torch else []
    head += ["vs numpy", "GB/s", "% copy"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in result["rows"]:
        cells = [r["case"], r["op"], "x".join(map(str, r["shape"])), str(r["threads"]),
                 f"{r['cnorm'] * 1e3:.3f}", f"{r['numpy'] * 1e3:.3f}"]
        if has_torch:
            cells += [f"{r['torch'] * 1e3:.3f}", f"{r['torch'] / r['cnorm']:.1f}x"]
        cells += [f"{r['numpy'] / r['cnorm']:.1f}x", f"{r['gbps']:.1f}",
                  f"{100 * r['copy_fraction']:.0f}%"]
        lines.append(" | ".join(cells))
    m = result["machine"]
    copy = ", ".join(f"{k} thread(s): {v:.1f} GB/s" for k, v in result["copy_gbps"].items())
    lines.append("")
    lines.append(f"stream copy (read + write): {copy}")
    lines.append(f"cnorm {m['cnorm']} ({m['simd']}, OpenMP {m['openmp']}), numpy {m['numpy']}, "
                 f"torch {m['torch']}, {m['cpu']}, {m['cores']} cores")
    return "\n".join(lines)


def plot(result, path):
    """Bar chart of cnorm's speedup over torch (or NumPy) per case; needs matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = result["rows"]
    base = "torch" if all("torch" in r for r in rows) else "numpy"
    threads = sorted({r["threads"] for r in rows})
    labels = sorted({(r["case"], r["op"], tuple(r["shape"])) for r in rows},
                    key=lambda k: [(x["case"], x["op"], tuple(x["shape"])) for x in rows].index(k))
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(labels) + 1.5))
    h = 0.8 / len(threads)
    for i, nt in enumerate(threads):
        speed = {(r["case"], r["op"], tuple(r["shape"])): r[base] / r["cnorm"]
                 for r in rows if r["threads"] == nt}
        ax.barh([j + i * h for j in range(len(labels))], [speed.get(k, 0) for k in labels],
                height=h, label=f"{nt} thread(s)")
    ax.set_yticks([j + h * (len(threads) - 1) / 2 for j in range(len(labels))])
    ax.set_yticklabels([f"{c} {o} {'x'.join(map(str, s))}" for c, o, s in labels], fontsize=7)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel(f"speedup of cnorm over {base} (median time ratio)")
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m cnorm.bench", description=__doc__.split("\n")[0])
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (1,2)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: small shapes, one thread count, short budget")
    p.add_argument("--out", default="bench_results", help="folder for the JSON and PNG")
    p.add_argument("--budget", type=float, default=1.0,
                   help="seconds of timed rounds per case (all implementations)")
    args = p.parse_args(argv)
    threads = tuple(int(t) for t in args.threads.split(","))
    shapes = SHAPES
    if args.quick:
        shapes = [("bn2d", "bn2d", (4, 8, 16, 16), "nchw"), ("bn1d", "bn1d", (8, 16), "nc"),
                  ("bn2d-cl", "bn2d", (2, 8, 8, 8), "nhwc"), ("ln", "ln", (16, 64), "nc"),
                  ("gn32-cl", "gn32", (2, 64, 4, 4), "nhwc"), ("in2d", "in2d", (2, 4, 8, 8),
                                                                "nchw"),
                  ("rms", "rms", (16, 64), "nc")]
        threads, args.budget = threads[:1], 0.05
    result = run(threads=threads, shapes=shapes, budget=args.budget)
    print(format_table(result))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(result, f, indent=1)
    png = os.path.join(args.out, "bench.png")
    wrote_png = plot(result, png)
    print(f"\nwrote {os.path.join(args.out, 'bench.json')}" + (f" and {png}" if wrote_png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
