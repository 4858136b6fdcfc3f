"""Data-parallel training of a small NumPy MLP with SyncBatchNorm.

    mpiexec -n 2 python examples/train_mpi.py            # 2 processes on this machine
    mpiexec -n 2 python examples/train_mpi.py --check    # ... and compare with one process
    python examples/train_mpi.py                         # one process (BatchNorm semantics)

Every rank holds the same parameters and takes its own share of each global mini-batch (the
shares differ in size). Linear -> SyncBatchNorm -> ReLU -> Linear -> softmax cross-entropy,
the loss averaged over the global batch. SyncBatchNorm normalizes with the statistics of the
whole batch; the other parameters' gradients are summed over the ranks with one allreduce, as
DDP does, so every rank takes the same SGD step. ``--check``: rank 0 also trains the same model
with BatchNorm1d on the full batches in one process and asserts that the loss curves agree
within 1e-5 (relative).
"""
import argparse
import sys

import numpy as np

import cnorm

try:
    from mpi4py import MPI
    COMM = MPI.COMM_WORLD
except ImportError:  # one process
    COMM = None


def dataset(n=512, d=16, k=4, seed=0):
    """Points from four Gaussian blobs, labelled by blob."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, (k, d))
    labels = rng.integers(0, k, n)
    return (centers[labels] + rng.normal(0, 1.5, (n, d))).astype(np.float32), labels


def init(d=16, h=32, k=4, seed=1):
    rng = np.random.default_rng(seed)
    return {"w1": (rng.normal(0, 1, (d, h)) / np.sqrt(d)).astype(np.float32),
            "b1": np.zeros(h, np.float32),
            "w2": (rng.normal(0, 1, (h, k)) / np.sqrt(h)).astype(np.float32),
            "b2": np.zeros(k, np.float32)}


def step(params, norm, x, labels, batch):
    """Forward and backward on this process's rows; the loss and gradients are this process's
    parts of the global batch's mean (they sum over processes to the full values)."""
    h = x @ params["w1"] + params["b1"]
    z = norm(h)
    a = np.maximum(z, 0)
    logits = a @ params["w2"] + params["b2"]
    logits = logits - logits.max(axis=1, keepdims=True) if len(logits) else logits
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    loss = -np.log(p[rows, labels]).sum() / batch
    g = p.copy()
    g[rows, labels] -= 1
    g /= batch
    grads = {"w2": a.T @ g, "b2": g.sum(axis=0)}
    dz = (g @ params["w2"].T) * (z > 0)
    dh = norm.backward(dz.astype(np.float32))
    grads.update(w1=x.T @ dh, b1=dh.sum(axis=0), gamma=norm.grad_weight, beta=norm.grad_bias)
    return loss, grads


def train(comm, epochs, batch=64, lr=0.5, full=False, show=True):
    """Returns the global loss of every step. ``full``: one process, BatchNorm1d on the whole
    batch (the reference); otherwise this rank's share with SyncBatchNorm."""
    x_all, y_all = dataset()
    params = init()
    rank, size = (0, 1) if full or comm is None else (comm.rank, comm.size)
    norm = cnorm.BatchNorm1d(32) if full else cnorm.SyncBatchNorm(32, comm=comm)
    losses = []
    for epoch in range(epochs):
        order = np.random.default_rng(100 + epoch).permutation(len(x_all))
        for start in range(0, len(x_all), batch):
            idx = order[start:start + batch]
            cuts = np.linspace(0, len(idx), size + 1).astype(int)  # unequal shares
            cuts[1:-1] += np.arange(1, size)  # rank r gets a little more than rank r - 1
            mine = idx[cuts[rank]:cuts[rank + 1]]
            loss, grads = step(params, norm, x_all[mine], y_all[mine], len(idx))
            if not full and comm is not None and size > 1:  # DDP: sum the gradients
                flat = np.concatenate([grads[k].ravel().astype(np.float64)
                                       for k in sorted(grads)] + [[loss]])
                comm.Allreduce(MPI.IN_PLACE, flat)
                loss = flat[-1]
                off = 0
                for k in sorted(grads):
                    n = grads[k].size
                    grads[k] = flat[off:off + n].reshape(grads[k].shape)
                    off += n
            for k in params:
                params[k] -= (lr * grads[k]).astype(np.float32)
            norm.weight -= (lr * grads["gamma"]).astype(np.float32)
            norm.bias -= (lr * grads["beta"]).astype(np.float32)
            losses.append(float(loss))
        if show and rank == 0:
            print(f"epoch {epoch + 1}: mean loss {np.mean(losses[-(len(x_all) // batch):]):.4f}",
                  flush=True)
    return np.array(losses)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--check", action="store_true",
                    help="compare with one process on the full batches (rank 0)")
    args = ap.parse_args(argv)
    losses = train(COMM, args.epochs)
    rank = 0 if COMM is None else COMM.rank
    if args.check and rank == 0:
        ref = train(None, args.epochs, full=True, show=False)
        err = np.max(np.abs(losses - ref) / np.abs(ref))
        size = 1 if COMM is None else COMM.size
        print(f"{size} processes: loss {losses[0]:.4f} -> {losses[-1]:.4f}; largest relative "
              f"difference from one process: {err:.2e}")
        if not err <= 1e-5:
            print("the loss curve does NOT match the one-process run", flush=True)
            return 1
        print("the loss curve matches the one-process run within 1e-5", flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    if code and COMM is not None and COMM.size > 1:
        COMM.Abort(code)
    sys.exit(code)
