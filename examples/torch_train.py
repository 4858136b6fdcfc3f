"""Train a small torch CNN on scikit-learn's digits, plain and converted to cnorm.torch.

    python examples/torch_train.py                 # torch's norms, then cnorm's, same start
    python examples/torch_train.py --ddp 2         # 2 processes, gloo, SyncBatchNorm under DDP

The network is torch code (Conv2d, BatchNorm2d, GroupNorm, ReLU, Linear); ``cnorm.torch.convert``
swaps its norm layers for cnorm's in place. The script prints each epoch's loss and step time
for both, and checks that the loss curves agree. With ``--ddp N`` every rank trains on its
share of each batch through ``DistributedDataParallel`` with ``convert(model, sync=True)``, and
rank 0 checks its curve against one process on the whole batches.
"""
import argparse
import copy
import os
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812

import cnorm.torch as ct


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    return x, torch.tensor(d.target)


def network():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.GroupNorm(8, 64), torch.nn.ReLU(),
        torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64 * 16, 10))


def train(model, x, y, epochs, batch=64, shard=None):
    """SGD over fixed batches; returns (loss per epoch, median step seconds). ``shard``:
    (rank, world) -- this process trains on its share of each batch (DDP averages)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses, times = [], []
    for _ in range(epochs):
        total = 0.0
        for i in range(0, len(x) - batch + 1, batch):
            xb, yb = x[i:i + batch], y[i:i + batch]
            if shard is not None:
                rank, world = shard
                xb, yb = xb.chunk(world)[rank], yb.chunk(world)[rank]
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb, reduction="sum") / batch
            if shard is not None:
                loss = loss * shard[1]  # DDP averages the ranks' gradients
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            total += float(loss.detach()) / (shard[1] if shard is not None else 1)
        losses.append(total / (len(x) // batch))
    return losses, sorted(times)[len(times) // 2]


def ddp_rank(rank, world, folder, epochs, queue):
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(folder, 'store')}",
                            rank=rank, world_size=world)
    x, y = digits()
    model = torch.nn.parallel.DistributedDataParallel(ct.convert(network(), sync=True))
    losses, _ = train(model, x, y, epochs, shard=(rank, world))
    total = torch.tensor(losses)
    dist.all_reduce(total)  # each rank's share of the loss: their sum is the batch's loss
    if rank == 0:
        queue.put(total.tolist())
    del model  # DDP's reducer holds the process group: gone before the group is
    dist.barrier()
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--ddp", type=int, default=0, help="processes (gloo); 0: one process")
    args = p.parse_args()
    x, y = digits()
    plain = network()
    if args.ddp:
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        queue = ctx.SimpleQueue()
        with tempfile.TemporaryDirectory() as folder:
            mp.start_processes(ddp_rank, args=(args.ddp, folder, args.epochs, queue),
                               nprocs=args.ddp, start_method="spawn")
        ranks = queue.get()
        ref, _ = train(ct.convert(plain), x, y, args.epochs)
        print("one process:", " ".join(f"{v:.4f}" for v in ref))
        print(f"{args.ddp} ranks:    ", " ".join(f"{v:.4f}" for v in ranks))
        agree = all(abs(a - b) <= 1e-3 * abs(b) for a, b in zip(ranks, ref))
    else:
        converted = ct.convert(copy.deepcopy(plain))
        ref, t_ref = train(plain, x, y, args.epochs)
        got, t_got = train(converted, x, y, args.epochs)
        print("torch norms:", " ".join(f"{v:.4f}" for v in ref), f"(step {t_ref * 1e3:.2f} ms)")
        print("cnorm norms:", " ".join(f"{v:.4f}" for v in got), f"(step {t_got * 1e3:.2f} ms)")
        agree = all(abs(a - b) <= 1e-3 * abs(b) for a, b in zip(got, ref))
    print("the loss curves agree" if agree else "the loss curves DIFFER")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
