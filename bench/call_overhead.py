"""The cost of a call itself (issue 24): µs per training forward, and per forward + backward,
of every layer, functional form and fused block on an input of a few values, where the
kernel's work is negligible; and the cost of each optional array argument (batch_norm's
weight, bias, running_mean, running_var). Each library times in a process of its own, one
thread; cnorm against torch.nn's twin (no autograd graph for the forward alone: its
parameters do not require a gradient), and against an earlier cnorm build with --baseline.

    python bench/call_overhead.py [--baseline DIR] [--threads N] [--budget SECONDS]
"""
import argparse
import json
import subprocess
import sys

import numpy as np

if "--path" in sys.argv:  # a baseline's worker: that build's cnorm, before anything imports one
    sys.path.insert(0, sys.argv[sys.argv.index("--path") + 1])

from cnorm.bench.cases import block_median  # noqa: E402
from cnorm.bench.report import cpu_name  # noqa: E402

# (name, input shape): every case's input is float32, its layer over 16 channels/features
CASES = [
    ("BatchNorm1d(16)", (8, 16)), ("BatchNorm2d(16)", (2, 16, 4, 4)),
    ("LayerNorm(16)", (8, 16)), ("RMSNorm(16)", (8, 16)), ("GroupNorm(4, 16)", (2, 16, 4, 4)),
    ("InstanceNorm2d(16)", (2, 16, 4, 4)), ("BatchNormAct2d(16, relu)", (2, 16, 4, 4)),
    ("GroupNormAct(4, 16, relu)", (2, 16, 4, 4)), ("batch_norm", (8, 16)),
    ("layer_norm", (8, 16)), ("rms_norm", (8, 16)), ("group_norm", (2, 16, 4, 4)),
    ("instance_norm", (2, 16, 4, 4)),
]
ARGS = ("x", "+weight", "+bias", "+running_mean +running_var")  # torch takes both or neither


def _cnorm_case(name, x):
    """(forward, forward + backward) callables of a cnorm case (None: no backward form)."""
    import cnorm
    C = x.shape[1]
    F = {"batch_norm": lambda: cnorm.batch_norm(x, None, None, training=True),
         "layer_norm": lambda: cnorm.layer_norm(x, (C,)),
         "rms_norm": lambda: cnorm.rms_norm(x, (C,)),
         "group_norm": lambda: cnorm.group_norm(x, 4),
         "instance_norm": lambda: cnorm.instance_norm(x)}
    if name in F:
        return F[name], None
    layer = {"BatchNorm1d(16)": lambda: cnorm.BatchNorm1d(C),
             "BatchNorm2d(16)": lambda: cnorm.BatchNorm2d(C),
             "LayerNorm(16)": lambda: cnorm.LayerNorm(C), "RMSNorm(16)": lambda: cnorm.RMSNorm(C),
             "GroupNorm(4, 16)": lambda: cnorm.GroupNorm(4, C),
             "InstanceNorm2d(16)": lambda: cnorm.InstanceNorm2d(C),
             "BatchNormAct2d(16, relu)": lambda: cnorm.BatchNormAct2d(C, act="relu"),
             "GroupNormAct(4, 16, relu)": lambda: cnorm.GroupNormAct(4, C, act="relu")}[name]()
    dy = np.ones_like(x)
    return (lambda: layer(x)), (lambda: (layer(x), layer.backward(dy)))


def _torch_case(name, x):
    import torch
    import torch.nn.functional as tf
    C = x.shape[1]
    xt = torch.from_numpy(x)
    F = {"batch_norm": lambda: tf.batch_norm(xt, None, None, training=True),
         "layer_norm": lambda: tf.layer_norm(xt, (C,)), "rms_norm": lambda: tf.rms_norm(xt, (C,)),
         "group_norm": lambda: tf.group_norm(xt, 4), "instance_norm": lambda: tf.instance_norm(xt)}
    if name in F:
        return F[name], None
    nn = torch.nn
    make = {"BatchNorm1d(16)": lambda: nn.BatchNorm1d(C),
            "BatchNorm2d(16)": lambda: nn.BatchNorm2d(C), "LayerNorm(16)": lambda: nn.LayerNorm(C),
            "RMSNorm(16)": lambda: nn.RMSNorm(C), "GroupNorm(4, 16)": lambda: nn.GroupNorm(4, C),
            "InstanceNorm2d(16)": lambda: nn.InstanceNorm2d(C),
            "BatchNormAct2d(16, relu)": lambda: nn.Sequential(nn.BatchNorm2d(C), nn.ReLU()),
            "GroupNormAct(4, 16, relu)": lambda: nn.Sequential(nn.GroupNorm(4, C),
                                                               nn.ReLU())}[name]
    fwd_layer, bwd_layer = make(), make()
    for p in fwd_layer.parameters():
        p.requires_grad_(False)  # the forward alone: no graph, as cnorm's layer keeps none
    xg = xt.clone().requires_grad_(True)
    dy = torch.ones_like(xt)

    def step():
        y = bwd_layer(xg)
        y.backward(dy)
    return (lambda: fwd_layer(xt)), step


def _args_cases(lib):
    """batch_norm with 0, 1, 2 and 4 optional arrays, (8, 16) float32."""
    x = np.random.default_rng(0).standard_normal((8, 16), dtype=np.float32)
    arrays = [np.ones(16, np.float32), np.zeros(16, np.float32), np.zeros(16, np.float32),
              np.ones(16, np.float32)]
    out = []
    for k in range(len(ARGS)):
        n = (0, 1, 2, 4)[k]
        w, b, rm, rv = arrays[:n] + [None] * (4 - n)
        if lib == "torch":
            import torch
            import torch.nn.functional as tf
            t = [None if a is None else torch.from_numpy(a) for a in (w, b, rm, rv)]
            xt = torch.from_numpy(x)
            out.append(lambda t=t: tf.batch_norm(xt, t[2], t[3], t[0], t[1], training=True))
        else:
            import cnorm
            out.append(lambda w=w, b=b, rm=rm, rv=rv: cnorm.batch_norm(
                x, rm, rv, w, b, training=True))
    return out


def _us(f, budget):
    return None if f is None else block_median(f, budget, max_rounds=20000)[0] * 1e6


def worker(lib, threads, budget):
    """Times every case with ``lib`` (cnorm, the --path build when given, or torch); prints
    JSON."""
    if lib == "torch":
        import torch
        torch.set_num_threads(threads)
        make = _torch_case
    else:
        import cnorm
        cnorm.set_num_threads(threads)
        make = _cnorm_case
    res = {}
    for name, shape in CASES:
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        fwd, both = make(name, x)
        res[name] = (_us(fwd, budget), _us(both, budget))
    res["args"] = [_us(f, budget) for f in _args_cases(lib)]
    print(json.dumps(res))


def _run(lib, path, threads, budget):
    cmd = [sys.executable, __file__, "--worker", lib, "--threads", str(threads), "--budget",
           str(budget)]
    if path:
        cmd += ["--path", path]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _cell(v):
    return "" if v is None else f"{v:.1f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", metavar="DIR", help="also time the cnorm built in DIR")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget", type=float, default=0.5, help="seconds per case (0.5)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker, a.threads, a.budget)
    libs = {"cnorm": _run("cnorm", None, a.threads, a.budget)}
    if a.baseline:
        libs["cnorm before"] = _run("cnorm", a.baseline, a.threads, a.budget)
    try:
        libs["torch"] = _run("torch", None, a.threads, a.budget)
    except subprocess.CalledProcessError:
        print("(torch not installed: its columns are left out)")
    names = list(libs)
    print(f"CPU: {cpu_name()}, {a.threads} thread(s); µs per call (median), float32")
    print("| call | " + " | ".join(f"{n} fwd | {n} fwd+bwd" for n in names) + " |")
    print("|---" * (1 + 2 * len(names)) + "|")
    for name, _ in CASES:
        cells = [c for n in names for c in map(_cell, libs[n][name])]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nbatch_norm (8, 16) training forward by its array arguments, µs per call:")
    print("| arguments | " + " | ".join(names) + " |")
    print("|---" * (1 + len(names)) + "|")
    for k, arg in enumerate(ARGS):
        label = " ".join(ARGS[:k + 1])
        print(f"| {label} | " + " | ".join(_cell(libs[n]["args"][k]) for n in names) + " |")
    for n in names:
        a_ = libs[n]["args"]
        print(f"{n}: {(a_[-1] - a_[0]) / 4:.2f} µs per optional array")


if __name__ == "__main__":
    main()
