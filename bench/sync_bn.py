"""SyncBatchNorm at 2 (or more) ranks against BatchNorm on one rank's shard.

    mpiexec -n 2 python bench/sync_bn.py [--shape 16,64,56,56] [--rounds 7] [--threads 1]

Every rank times, in alternating blocks, a training step (forward + backward) of SyncBatchNorm2d
on its shard and of a local BatchNorm2d on the same shard, all ranks at once (so both see the
same memory contention); then the collectives alone. Rank 0 prints the medians over ranks'
medians, the ratio (target: <= 1.1) and whether the results are bit-identical on every rank and
across two runs. ``python -m cnorm.bench`` cannot launch MPI, hence this script.
"""
import argparse
import time

import numpy as np
from mpi4py import MPI

import cnorm


def timed(fn, reps):
    out = []
    for _ in range(reps):
        MPI.COMM_WORLD.Barrier()  # every rank starts together
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="16,64,56,56", help="per-rank input shape (N,C,H,W)")
    ap.add_argument("--rounds", type=int, default=7, help="alternating blocks of each")
    ap.add_argument("--reps", type=int, default=10, help="steps per block")
    ap.add_argument("--threads", type=int, default=1, help="threads per rank")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    cnorm.set_num_threads(args.threads)
    shape = tuple(int(s) for s in args.shape.split(","))
    rng = np.random.default_rng(comm.rank)
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    C = shape[1]
    sync, local = cnorm.SyncBatchNorm(C, comm=comm), cnorm.BatchNorm2d(C)

    def step(layer):
        return lambda: (layer(x), layer.backward(dy))

    results = {"sync": [], "local": []}
    for _ in range(args.rounds):
        for name, layer in (("local", local), ("sync", sync)):
            results[name] += timed(step(layer), args.reps)
    row = np.zeros(3 * C)
    comm_times = timed(lambda: comm.Allgather(row, np.empty((comm.size, 3 * C))), 200)
    med = {k: float(np.median(v)) for k, v in results.items()}
    all_med = comm.gather(med, root=0)
    # bits: two fresh runs, every rank's running statistics and outputs
    runs = []
    for _ in range(2):
        layer = cnorm.SyncBatchNorm(C, comm=comm)
        y = layer(x)
        dx = layer.backward(dy)
        runs.append(hash((y.tobytes(), dx.tobytes(), layer.running_var.tobytes())))
    same_runs = comm.allreduce(int(runs[0] == runs[1]), op=MPI.MIN)
    stats = comm.allgather(layer.running_var.tobytes() + layer.running_mean.tobytes())
    if comm.rank == 0:
        s = np.median([m["sync"] for m in all_med])
        loc = np.median([m["local"] for m in all_med])
        print(f"{comm.size} ranks x {shape} float32, {args.threads} thread(s) per rank, "
              f"{MPI.Get_library_version().splitlines()[0].strip()}")
        print(f"BatchNorm2d on the shard, forward + backward: {loc * 1e3:.3f} ms")
        print(f"SyncBatchNorm, forward + backward:            {s * 1e3:.3f} ms")
        print(f"ratio: {s / loc:.3f} (target <= 1.1)")
        print(f"Allgather of 3C doubles alone: {np.median(comm_times) * 1e6:.1f} us")
        print(f"bit-identical across two runs: {bool(same_runs)}; running statistics "
              f"identical on every rank: {all(st == stats[0] for st in stats)}")


if __name__ == "__main__":
    main()
