"""A training step (forward + backward under autograd) of torch's norm layers against their
cnorm.torch twins, timed in alternating blocks in one process (the issue's method), at 1 and 2
threads. Prints medians, the ratio and, for the large cases, the fraction of the same run's
stream copy the twin's step reaches (5 passes over the input: x and y forward, x, dy, dx back).

    python bench/torch_twins.py [--quick]
"""
import argparse
import copy
import time

import numpy as np
import torch

import cnorm.torch as ct
from cnorm.bench._stream import stream_copy
from cnorm.bench.report import cpu_name

CASES = [  # (label, torch layer, input shape, channels_last)
    ("BatchNorm2d", lambda: torch.nn.BatchNorm2d(64), (32, 64, 56, 56), False),
    ("BatchNorm2d channels_last", lambda: torch.nn.BatchNorm2d(128), (16, 128, 28, 28), True),
    ("GroupNorm(32, 64)", lambda: torch.nn.GroupNorm(32, 64), (32, 64, 56, 56), False),
    ("LayerNorm(768)", lambda: torch.nn.LayerNorm(768), (64, 196, 768), False),
    ("BatchNorm1d (per-call overhead)", lambda: torch.nn.BatchNorm1d(16), (8, 16), False),
]
# the same layers on small inputs: fewer samples and smaller planes (or rows), same channels
QUICK = [(label, make, (max(2, shape[0] // 8), shape[1], *(max(2, d // 8) for d in shape[2:]))
          if len(shape) == 4 else (8, 24, shape[2]) if len(shape) == 3 else shape, cl)
         for label, make, shape, cl in CASES]


def step(layer, x, dy):
    def run():
        x.grad = None
        layer(x).backward(dy)
    return run


def inputs(shape, channels_last):
    """x (requiring its gradient; channels_last memory when asked) and dy shaped like it."""
    x = torch.randn(shape)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    return x, torch.randn_like(x)


def block(fn, seconds):
    """Median seconds per call over a block of calls filling ``seconds`` (after warm-up)."""
    for _ in range(3):
        fn()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.2 * seconds:
        fn()
        n += 1
    times = []
    for _ in range(max(5, int(4 * n))):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def copy_gbps(threads):
    src = np.ones(64 << 20, np.float32)
    dst = np.empty_like(src)
    return 2 * src.nbytes / block(lambda: stream_copy(src, dst, threads), 0.5) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes, short blocks")
    args = p.parse_args()
    cases, seconds = (QUICK, 0.05) if args.quick else (CASES, 0.5)
    print(f"{cpu_name()}; torch {torch.__version__}")
    print("case | shape | threads | torch ms | cnorm.torch ms | speedup | % copy (twin)")
    print("---|---|---|---|---|---|---")
    for nt in (1, 2):
        torch.set_num_threads(nt)
        bw = copy_gbps(nt)
        for label, make, shape, cl in cases:
            plain = make().train()
            twin = ct.convert(copy.deepcopy(plain))
            x, dy = inputs(shape, cl)
            times = {"torch": [], "twin": []}
            for _ in range(3):  # alternating blocks
                times["torch"].append(block(step(plain, x, dy), seconds / 3))
                times["twin"].append(block(step(twin, x, dy), seconds / 3))
            t0, t1 = float(np.median(times["torch"])), float(np.median(times["twin"]))
            frac = 5 * x.numel() * x.element_size() / t1 / 1e9 / bw
            print(f"{label} | {'x'.join(map(str, shape))} | {nt} | {t0 * 1e3:.3f} | "
                  f"{t1 * 1e3:.3f} | {t0 / t1:.2f}x | {100 * frac:.0f}%")
        print(f"(stream copy at {nt} thread(s): {bw:.1f} GB/s)")


if __name__ == "__main__":
    main()
