"""Benchmark report: ``python -m cnorm.bench``.

Times cnorm, a plain NumPy implementation and torch (when installed) over a grid of batch-,
layer-, group-, instance- and RMS-norm cases at 1 and 2 threads, and prints medians, speedups
and the bandwidth achieved as a fraction of a stream copy measured in the same run. The data
group times ``normalize_images``, ``Moments`` and ``Standardizer.transform`` against torch,
OpenCV, scikit-learn and NumPy (those installed), judged against the copy or the read stream.
Writes the results as JSON and, when matplotlib is installed, a PNG chart.

Each implementation runs in worker processes of its own, started fresh for every round of
every case (``--rounds``, 3), and is timed in uninterrupted blocks; the implementations' blocks
alternate in a rotating order and a figure is the median over the rounds. So no
implementation's large temporaries, allocator state or caches disturb another's figure (or
its own in a later case), and slow drift of a shared machine hits all of them alike.
``--verify-torch`` times torch once more alone, in a fresh process per case, and prints the
ratio to the report's figure.
"""
import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
from typing import IO, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import cnorm

from .._core.backend import target as _simd_target
from .._core.runtime import openmp_enabled
from .._version import __version__
from . import cases as _bench_cases
from .cases import IMPLS, OPS, SHAPES, TRAFFIC, ops_for
from .data_cases import CALLS
from .data_cases import CASES as DATA_CASES
from .data_cases import LABELS as DATA_LABELS
from .data_cases import QUICK as DATA_QUICK
from .data_cases import dtype_of as data_dtype

QUICK_SHAPES = [("bn2d", "bn2d", (4, 8, 16, 16), "nchw"), ("bn1d", "bn1d", (8, 16), "nc"),
                ("bn2d-cl", "bn2d", (2, 8, 8, 8), "nhwc"), ("ln", "ln", (16, 64), "nc"),
                ("gn32-cl", "gn32", (2, 64, 4, 4), "nhwc"), ("in2d", "in2d", (2, 4, 8, 8), "nchw"),
                ("rms", "rms", (16, 64), "nc")]
COPY_BYTES = 256 << 20  # larger than any cache


class Worker:
    """One implementation in a process of its own (cases.py run as a script)."""

    def __init__(self, impl: str, path: Optional[str] = None) -> None:
        # the worker imports the cnorm this process runs, unless another build is named
        path = path or os.path.dirname(os.path.dirname(os.path.abspath(cnorm.__file__)))
        self.proc = subprocess.Popen([sys.executable, _bench_cases.__file__, impl, path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        hello = json.loads(self.stdout.readline() or '{"unavailable": "worker died"}')
        self.available = "ready" in hello
        self.version = hello.get("version")

    def ask(self, **request: Any) -> Dict[str, Any]:
        self.stdin.write(json.dumps(request) + "\n")
        self.stdin.flush()
        line = self.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker died on {request}")
        answer: Dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stdin.close()
            self.proc.wait()


class Progress:
    """A progress bar over the cases, on a terminal (or with CNORM_BENCH_PROGRESS=1)."""

    def __init__(self, total: int, stream: IO[str] = sys.stderr) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.enabled = stream.isatty() or os.environ.get("CNORM_BENCH_PROGRESS") == "1"

    def step(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            width = 30
            filled = width * self.done // self.total
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] "
                              f"{self.done}/{self.total} {label:<40.40}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def _ops(kind: str, ops: Sequence[str]) -> List[str]:
    return [op for op in ops if op in ops_for(kind)]


def _spawn(impls: Sequence[str], paths: Optional[Mapping[str, str]],
           nt: int) -> Dict[str, Worker]:
    """Fresh workers {label: Worker} at ``nt`` threads: the implementations that are
    installed, and the other cnorm builds of ``paths``."""
    workers = {i: Worker(i) for i in impls}
    workers.update({label: Worker("cnorm", p) for label, p in (paths or {}).items()})
    for label, w in list(workers.items()):
        if not w.available:
            w.close()
            del workers[label]
        else:
            w.ask(threads=nt)
    return workers


def run(threads: Sequence[int] = (1, 2), shapes: Sequence[Any] = SHAPES,
        ops: Sequence[str] = OPS, impls: Sequence[str] = IMPLS, budget: float = 1.0,
        rounds: int = 3, paths: Optional[Mapping[str, str]] = None,
        data: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Run the grid; returns a dict with the machine, copy bandwidths and one row per case.

    ``budget``: seconds of timed calls per case and implementation, split over ``rounds``
    rounds. Every round starts fresh worker processes, one per implementation, which time
    the case's operations in turn, each in an uninterrupted block, the implementations in a
    rotating order; a figure is the median over the rounds. So no figure depends on what ran
    before it in the same process (a library's allocator and caches carry state), and slow
    drift of a shared machine hits every implementation alike. ``paths``: {label: folder} of
    other cnorm builds to time as well (e.g. the previous version, a before/after
    comparison). ``data``: {name: shape} of data cases (see data_cases.py), timed after the
    norms against their own tools, as rows with "group": "data"."""
    rows: List[Dict[str, Any]] = []
    copy_bw: Dict[int, float] = {}
    probe_bw: Dict[int, Any] = {}
    versions: Dict[str, Any] = {}
    data = data or {}
    progress = Progress(len(threads) * (1 + (len(shapes) + len(data)) * rounds))
    try:
        for nt in threads:
            progress.step(f"stream copy, {nt} thread(s)")
            copier = _spawn(["copy"], None, nt)["copy"]
            copy_bw[nt] = copier.ask(copy=COPY_BYTES)["gbps"] * 1e9
            for name, shape in data.items():  # the probes at the data's own sizes too
                size = int(np.prod(shape)) * data_dtype(name).itemsize
                probes = probe_bw.setdefault(nt, {"read": {}, "copy": {}})
                if DATA_CASES[name][4] == "read":
                    probes["read"][str(size)] = copier.ask(read=size)["gbps"]
                else:
                    moved = size * DATA_CASES[name][3] // 2  # a copy moving as many bytes
                    probes["copy"][str(moved)] = copier.ask(copy=moved)["gbps"]
            if data:
                probe_bw[nt]["read"][str(COPY_BYTES)] = copier.ask(read=COPY_BYTES)["gbps"]
                probe_bw[nt]["copy"][str(COPY_BYTES)] = copy_bw[nt] / 1e9
            copier.close()
            for name, kind, shape, layout in shapes:
                nbytes = int(np.prod(shape)) * 4
                case = [name, kind, list(shape), layout]
                times = _time_rounds(impls, paths, nt, case, _ops(kind, ops), budget, rounds,
                                     versions, progress)
                for op in _ops(kind, ops):
                    row = {"case": name, "op": op, "shape": list(shape), "layout": layout,
                           "threads": nt, "bytes": nbytes}
                    row.update(times[op])
                    row["gbps"] = TRAFFIC[op] * nbytes / row["cnorm"] / 1e9
                    row["copy_fraction"] = row["gbps"] * 1e9 / copy_bw[nt]
                    rows.append(row)
            for name, shape in data.items():
                rows.append(_data_row(name, shape, nt, budget, rounds, versions, progress,
                                      probe_bw[nt]))
    finally:
        progress.close()
    return {"machine": machine_info(versions),
            "copy_gbps": {str(k): v / 1e9 for k, v in copy_bw.items()},
            "probe_gbps": {str(k): v for k, v in probe_bw.items()}, "rows": rows}


def _data_row(name: str, shape: Any, nt: int, budget: float, rounds: int,
              versions: Dict[str, Any], progress: Progress,
              probes: Dict[str, Any]) -> Dict[str, Any]:
    """One data case: every tool of the case in its own workers. cnorm's bandwidth is judged
    against the case's limit (the copy stream, or the read stream for a reduction), probed on
    more bytes than any cache holds ("DRAM") and on as many bytes as the case moves ("same
    size", which caches may hold: the case's own data is cached alike)."""
    shape, (_, dtype, impls, traffic, limit, rivals) = list(shape), DATA_CASES[name]
    nbytes = int(np.prod(shape)) * data_dtype(name).itemsize
    times = _time_rounds(impls, None, nt, ["data", name, shape], [name], budget, rounds,
                         versions, progress)[name]
    row = {"group": "data", "case": name, "op": DATA_LABELS[name], "shape": shape,
           "dtype": dtype, "threads": nt, "bytes": nbytes, "limit": limit, **times}
    row["gbps"] = traffic * nbytes / row["cnorm"] / 1e9
    same = nbytes if limit == "read" else nbytes * traffic // 2
    row["fraction_dram"] = row["gbps"] / probes[limit][str(COPY_BYTES)]
    row["fraction_same_size"] = row["gbps"] / probes[limit][str(same)]
    present = [k for k in rivals if k in row]
    if present:
        best = min(present, key=lambda k: row[k])
        row["rival"], row["speedup"] = best, row[best] / row["cnorm"]
    return row


def _time_rounds(impls: Sequence[str], paths: Optional[Mapping[str, str]], nt: int, case: Any,
                 ops: Sequence[str], budget: float, rounds: int,
                 versions: Optional[Dict[str, Any]] = None,
                 progress: Optional[Progress] = None) -> Dict[str, Dict[str, float]]:
    """{op: {label: seconds}}: the median over ``rounds`` rounds, each in fresh workers."""
    blocks: Dict[str, Dict[str, List[float]]] = {}
    for r in range(rounds):
        if progress is not None:
            progress.step(f"{case[0]} {case[2]} {nt}t, round {r + 1}")
        workers = _spawn(impls, paths, nt)
        if versions is not None:
            versions.update({k: w.version for k, w in workers.items()})
        order = list(workers)
        order = order[r % len(order):] + order[:r % len(order)]
        try:
            for op in ops:
                for k in order:
                    t = workers[k].ask(case=case, op=op, seconds=budget / rounds)["seconds"]
                    blocks.setdefault(op, {}).setdefault(k, []).append(t)
        finally:
            for w in workers.values():
                w.close()
    return {op: {k: float(np.median(v)) for k, v in b.items()} for op, b in blocks.items()}


def verify_torch(result: Dict[str, Any], budget: float = 1.0,
                 rounds: int = 3) -> List[Tuple[Dict[str, Any], float]]:
    """Time torch alone (no other implementation running between its blocks) with the
    report's rounds of fresh processes, for every row of ``result``; returns (row, seconds
    alone) pairs. The report's torch figure should agree within noise."""
    out: List[Tuple[Dict[str, Any], float]] = []
    for row in result["rows"]:
        if "torch" in row and row.get("group") != "data":
            kind = next(c[1] for c in SHAPES + QUICK_SHAPES if c[0] == row["case"])
            case = [row["case"], kind, row["shape"], row["layout"]]
            times = _time_rounds(["torch"], None, row["threads"], case, [row["op"]], budget,
                                 rounds)
            out.append((row, times[row["op"]]["torch"]))
    return out


def machine_info(versions: Dict[str, Any]) -> Dict[str, Any]:
    return {"cnorm": __version__, "simd": _simd_target, "openmp": openmp_enabled(),
            "numpy": np.__version__, "torch": versions.get("torch"),
            "python": platform.python_version(), "cpu": cpu_name(), "cores": os.cpu_count()}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def format_table(result: Dict[str, Any]) -> str:
    """The norms' table, then the data group's (when it ran), then the machine."""
    norms = {**result, "rows": [r for r in result["rows"] if r.get("group") != "data"]}
    data = [r for r in result["rows"] if r.get("group") == "data"]
    lines = [_norms_table(norms)] if norms["rows"] else []
    bulk = [r for r in data if r["case"] not in CALLS]
    calls = [r for r in data if r["case"] in CALLS]
    if bulk:
        lines += ["", _data_table(bulk, result.get("probe_gbps", {}))]
    if calls:
        lines += ["", _calls_table(calls)]
    m = result["machine"]
    copy = ", ".join(f"{k} thread(s): {v:.1f} GB/s" for k, v in result["copy_gbps"].items())
    lines.append("")
    lines.append(f"stream copy (read + write): {copy}")
    lines.append(f"cnorm {m['cnorm']} ({m['simd']}, OpenMP {m['openmp']}), numpy {m['numpy']}, "
                 f"torch {m['torch']}, {m['cpu']}, {m['cores']} cores")
    return "\n".join(lines)


def _data_table(rows: List[Dict[str, Any]], probes: Dict[str, Any]) -> str:
    tools = [t for t in ("torch", "cv2", "sklearn", "numpy", "cnorm-unfused", "cnorm-f32")
             if any(t in r for r in rows)]
    head = ["case", "what", "shape", "thr", "cnorm ms"] + [f"{t} ms" for t in tools]
    head += ["vs target's rivals", "GB/s", "% of limit (DRAM)", "% of limit (same size)"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        cells = [r["case"], r["op"], f"{'x'.join(map(str, r['shape']))} {r['dtype']}",
                 str(r["threads"]), f"{r['cnorm'] * 1e3:.3f}"]
        cells += [f"{r[t] * 1e3:.3f}" if t in r else "" for t in tools]
        cells += [f"{r['speedup']:.1f}x ({r['rival']})" if "speedup" in r else ""]
        cells += [f"{r['gbps']:.1f}", f"{100 * r['fraction_dram']:.0f}% {r['limit']}",
                  f"{100 * r['fraction_same_size']:.0f}% {r['limit']}"]
        lines.append(" | ".join(cells))
    for nt, kinds in probes.items():
        for kind, sizes in kinds.items():
            text = ", ".join(f"{int(k) / 1e6:.3g} MB: {v:.1f} GB/s" for k, v in sizes.items())
            lines.append(f"{kind} stream, {nt} thread(s): {text}")
    return "\n".join(lines)


def _calls_table(rows: List[Dict[str, Any]]) -> str:
    """The small-call cases (issue 24): µs per call, cnorm against each tool of the case."""
    tools = [t for t in ("torch", "cv2", "sklearn", "numpy") if any(t in r for r in rows)]
    head = ["case", "what", "shape", "thr", "cnorm µs"] + [f"{t} µs" for t in tools]
    lines = [" | ".join(head + ["vs target's rival"]), " | ".join("---" for _ in head + [0])]
    for r in rows:
        cells = [r["case"], r["op"], f"{'x'.join(map(str, r['shape']))} {r['dtype']}",
                 str(r["threads"]), f"{r['cnorm'] * 1e6:.1f}"]
        cells += [f"{r[t] * 1e6:.1f}" if t in r else "" for t in tools]
        cells += [f"{r['speedup']:.2f}x ({r['rival']})" if "speedup" in r else ""]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def _norms_table(result: Dict[str, Any]) -> str:
    has_torch = any("torch" in r for r in result["rows"])
    has_twin = any("cnorm.torch" in r for r in result["rows"]) and has_torch
    has_before = any("before" in r for r in result["rows"])
    head = ["case", "op", "shape", "thr", "cnorm ms"]
    head += ["before ms", "before / now"] if has_before else []
    head += ["numpy ms"]
    head += ["torch ms", "vs torch"] if has_torch else []
    head += ["cnorm.torch ms", "twin vs torch"] if has_twin else []
    head += ["vs numpy", "GB/s", "% copy"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in result["rows"]:
        cells = [r["case"], r["op"], "x".join(map(str, r["shape"])), str(r["threads"]),
                 f"{r['cnorm'] * 1e3:.3f}"]
        if has_before:
            cells += [f"{r['before'] * 1e3:.3f}", f"{r['before'] / r['cnorm']:.2f}"]
        cells += [f"{r['numpy'] * 1e3:.3f}"]
        if has_torch:
            cells += [f"{r['torch'] * 1e3:.3f}", f"{r['torch'] / r['cnorm']:.1f}x"]
        if has_twin:
            twin = r.get("cnorm.torch")
            cells += ["", ""] if twin is None else [f"{twin * 1e3:.3f}",
                                                    f"{r['torch'] / twin:.2f}x"]
        cells += [f"{r['numpy'] / r['cnorm']:.1f}x", f"{r['gbps']:.1f}",
                  f"{100 * r['copy_fraction']:.0f}%"]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def plot(result: Dict[str, Any], path: str) -> bool:
    """The :func:`chart` of ``result`` written to ``path`` (PNG); False without matplotlib or
    norm rows."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig = chart(result)
    if fig is None:
        return False
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def chart(result: Dict[str, Any]) -> Any:
    """A matplotlib figure: cnorm's speedup over torch (or NumPy) per norm case of a report
    (``run``'s result, or its JSON), a bar per thread count; None without norm rows."""
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.get("group") != "data"]
    if not rows:
        return None
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
    m = result.get("machine", {})
    ax.set_title(f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores; stream copy "
                 + ", ".join(f"{v:.1f} GB/s at {k}T" for k, v in result["copy_gbps"].items()),
                 fontsize=9)
    fig.tight_layout()
    return fig


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnorm.bench", description=__doc__.split("\n")[0])
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (1,2)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: small shapes, one thread count, short budget")
    p.add_argument("--out", default="bench_results", help="folder for the JSON and PNG")
    p.add_argument("--budget", type=float, default=1.0,
                   help="seconds of timed calls per case and implementation (1.0)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of fresh processes per case and implementation (3)")
    p.add_argument("--cases", default="",
                   help="comma-separated case names to run (default: all), e.g. bn2d,ln; "
                        "'data' for the data group (normalize_images, moments, standardize, "
                        "bn_add_relu, gn_add_relu, bn2d_f16, bn2d_bf16, ln_bf16, and the "
                        "small calls), 'calls' for the small calls alone (bn1d_call, "
                        "bn_functional_call, standardize_call, normalize_image_call, "
                        "moments_call), 'norms' for all the norms")
    p.add_argument("--baseline", metavar="DIR",
                   help="also time the cnorm installed in DIR (a before/after comparison)")
    p.add_argument("--verify-torch", action="store_true",
                   help="afterwards, time torch alone in a fresh process per case")
    args = p.parse_args(argv)
    threads = tuple(int(t) for t in args.threads.split(","))
    shapes, data = SHAPES, {k: v[0] for k, v in DATA_CASES.items()}
    if args.quick:
        shapes, data = QUICK_SHAPES, dict(DATA_QUICK)
        threads, args.budget, args.rounds = threads[:1], 0.05, 1
    if args.cases:
        names = set(args.cases.split(","))
        shapes = [c for c in shapes if c[0] in names or "norms" in names]
        data = {k: v for k, v in data.items()
                if k in names or "data" in names or ("calls" in names and k in CALLS)}
    if importlib.util.find_spec("ml_dtypes") is None:  # the bfloat16 cases need it
        data = {k: v for k, v in data.items() if DATA_CASES[k][1] != "bfloat16"}
    result = run(threads=threads, shapes=shapes, budget=args.budget, rounds=args.rounds,
                 paths={"before": args.baseline} if args.baseline else None, data=data)
    print(format_table(result))
    if args.verify_torch:
        print("\ntorch alone in a fresh process (case | op | shape | thr | alone ms | report ms"
              " | report / alone)")
        ratios = []
        for row, alone in verify_torch(result, args.budget, args.rounds):
            ratios.append(row["torch"] / alone)
            print(f"{row['case']} | {row['op']} | {'x'.join(map(str, row['shape']))} | "
                  f"{row['threads']} | {alone * 1e3:.3f} | {row['torch'] * 1e3:.3f} | "
                  f"{ratios[-1]:.2f}")
        if ratios:
            within = sum(abs(r - 1) <= 0.15 for r in ratios)
            print(f"report / alone: median {np.median(ratios):.2f}, {within} of {len(ratios)} "
                  "within 15%")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(result, f, indent=1)
    png = os.path.join(args.out, "bench.png")
    wrote_png = plot(result, png)
    print(f"\nwrote {os.path.join(args.out, 'bench.json')}" + (f" and {png}" if wrote_png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
