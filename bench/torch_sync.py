"""cnorm.torch.SyncBatchNorm over torch.distributed (gloo) against the local twin
(cnorm.torch.BatchNorm2d) on the same shard: a training step (forward + backward under
autograd) on every rank at once, in alternating blocks. Rank 0 prints the medians over the
ranks' medians and the ratio (target: at most 1.25).

    python bench/torch_sync.py [--world 2] [--shape 16,64,56,56] [--rounds 5] [--reps 5]
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import cnorm.torch as ct
from cnorm.bench.report import cpu_name


def timed(fn, reps):
    out = []
    for _ in range(reps):
        dist.barrier()  # every rank starts together
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def step(layer, x, dy):
    def run():
        x.grad = None
        layer(x).backward(dy)
    return run


def run(rank, args, folder):
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(folder, 'store')}",
                            rank=rank, world_size=args.world)
    try:
        torch.set_num_threads(args.threads)
        torch.manual_seed(rank)
        shape = tuple(int(s) for s in args.shape.split(","))
        x = torch.randn(shape, requires_grad=True)
        dy = torch.randn(shape)
        layers = {"sync": ct.SyncBatchNorm(shape[1]), "local": ct.BatchNorm2d(shape[1])}
        times = {name: [] for name in layers}
        for _ in range(args.rounds):
            for name, layer in layers.items():
                times[name] += timed(step(layer, x, dy), args.reps)
        mine = torch.tensor([float(np.median(times["sync"])), float(np.median(times["local"]))])
        every = [torch.empty_like(mine) for _ in range(args.world)]
        dist.all_gather(every, mine)
        dist.barrier()
        if rank == 0:
            sync, local = (float(np.median([e[i] for e in every])) for i in (0, 1))
            print(f"{cpu_name()}, {args.world} ranks x {args.threads} thread(s), shard "
                  f"{args.shape}")
            print("step | ms")
            print("---|---")
            print(f"SyncBatchNorm | {sync * 1e3:.2f}")
            print(f"BatchNorm2d (local twin) | {local * 1e3:.2f}")
            print(f"ratio | {sync / local:.2f}")
    finally:
        dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--shape", default="16,64,56,56", help="per-rank input shape (N,C,H,W)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(run, args=(args, folder), nprocs=args.world)


if __name__ == "__main__":
    main()
