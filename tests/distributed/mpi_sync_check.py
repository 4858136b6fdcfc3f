"""Run under MPI (``mpiexec -n 2|3 python tests/distributed/mpi_sync_check.py``;
test_sync_batchnorm.py launches it with a timeout). Every rank checks its SyncBatchNorm
against BatchNorm on the concatenated batch, the float64 reference (cnorm.testing) and torch
when installed; then the error cases, bit-identity across ranks and runs, and
Moments.allreduce. Rank 0 prints "ALL OK
on ranks [...]"; any failure aborts every rank at once (no rank is left waiting)."""
import sys
import traceback

import numpy as np
from mpi4py import MPI

import cnorm
from cnorm.testing import RefBatchNorm

try:
    import torch
except ImportError:
    torch = None

comm = MPI.COMM_WORLD
rank, size = comm.rank, comm.size
TOL = {np.float32: 2e-5, np.float64: 1e-10}
SHAPES = {2: (6,), 3: (6, 7), 4: (6, 5, 4), 5: (6, 3, 2, 4)}  # (C, *spatial)


def shards(empty):
    """Unequal shard sizes, [3, 5, 7, ...]; ``empty``: rank 1 has none ([3, 0, 7, ...])."""
    sizes = [3 + 2 * r for r in range(size)]
    if empty:
        sizes[1] = 0
    return sizes


def rel(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    scale = max(np.max(np.abs(ref), initial=0.0), 1e-300)
    return np.max(np.abs(a - ref), initial=0.0) / scale


def close(a, ref, dtype, what):
    err = rel(a, ref)
    assert err <= TOL[dtype], (what, err, TOL[dtype])


def same_everywhere(arr, what):
    """The same bits on every rank."""
    got = comm.allgather(np.ascontiguousarray(arr).tobytes())
    assert all(g == got[0] for g in got), f"{what} differs between ranks"


def make_full(ndim, dtype, seed, empty=False, width=None):
    C, *spatial = SHAPES[ndim]
    C = width or C
    sizes = shards(empty)
    rng = np.random.default_rng(seed)
    x = (5.0 + 3.0 * rng.standard_normal((sum(sizes), C, *spatial))).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    lo = sum(sizes[:rank])
    return x, dy, slice(lo, lo + sizes[rank])


def to_layout(a, channels_last):
    if not channels_last or a.ndim < 4:
        return a
    return np.ascontiguousarray(np.moveaxis(a, 1, -1)).transpose(
        (0, a.ndim - 1) + tuple(range(1, a.ndim - 1)))


def check_case(ndim, dtype, momentum, affine, bias, channels_last, empty=False, seed=0,
               width=None):
    x, dy, mine = make_full(ndim, dtype, seed, empty, width)
    C = x.shape[1]
    kw = dict(momentum=momentum, affine=affine, dtype=dtype, bias=bias)
    sync = cnorm.SyncBatchNorm(C, **kw)
    full = {1: cnorm.BatchNorm1d, 2: cnorm.BatchNorm2d, 3: cnorm.BatchNorm3d}
    bn = full[max(1, ndim - 2)](C, **kw)
    ref = RefBatchNorm(C, momentum=momentum, affine=affine, bias=bias)
    if affine:  # parameters that are not ones and zeros
        for layer in (sync, bn, ref):
            layer.weight[...] = np.linspace(0.5, 2.0, C)
            if layer.bias is not None:
                layer.bias[...] = np.linspace(-1.0, 1.0, C)
    tbn = None
    if torch is not None:
        tbn = getattr(torch.nn, f"BatchNorm{max(1, ndim - 2)}d")(
            C, momentum=momentum, affine=affine, bias=bias, dtype=torch.float64)
        if affine:
            with torch.no_grad():
                tbn.weight.copy_(torch.from_numpy(np.linspace(0.5, 2.0, C)))
                if bias:
                    tbn.bias.copy_(torch.from_numpy(np.linspace(-1.0, 1.0, C)))
    what = f"{ndim}D {np.dtype(dtype).name} momentum={momentum} affine={affine} bias={bias} " \
           f"channels_last={channels_last} empty={empty} C={C}"
    mixed = channels_last == "mixed"
    if mixed:  # even ranks take the entries checked in C, odd ones the checked path
        channels_last = rank % 2 == 1
    for step in range(2):  # two steps: the running statistics move twice
        xs = to_layout(x[mine], channels_last)
        y = sync(xs)
        if mixed:
            path = "SyncContext" if channels_last else "SyncCallContext"
            assert type(sync._saved).__name__ == path, (rank, type(sync._saved))
        dx = sync.backward(to_layout(dy[mine], channels_last))
        yb = bn(x)
        dxb = bn.backward(dy)
        yr = ref.forward(x)
        dxr, gwr, gbr = ref.backward(dy)
        close(y, yr[mine], dtype, ("y vs reference", what, step))
        close(dx, dxr[mine], dtype, ("dx vs reference", what, step))
        close(y, yb[mine], dtype, ("y vs BatchNorm", what, step))
        close(dx, dxb[mine], dtype, ("dx vs BatchNorm", what, step))
        assert y.flags.c_contiguous == xs.flags.c_contiguous  # the input's layout kept
        if affine:
            gw = comm.allreduce(sync.grad_weight.astype(np.float64))
            close(gw, gwr, dtype, ("sum of grad_weight", what))
            if bias:
                gb = comm.allreduce(sync.grad_bias.astype(np.float64))
                close(gb, gbr, dtype, ("sum of grad_bias", what))
        close(sync.running_mean, ref.running_mean, dtype, ("running_mean", what))
        close(sync.running_var, ref.running_var, dtype, ("running_var", what))
        assert sync.num_batches_tracked == step + 1
        same_everywhere(sync.running_mean, "running_mean")
        same_everywhere(sync.running_var, "running_var")
        if tbn is not None:
            xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
            yt = tbn(xt)
            yt.backward(torch.from_numpy(dy.astype(np.float64)))
            close(y, yt.detach().numpy()[mine], dtype, ("y vs torch", what))
            close(dx, xt.grad.numpy()[mine], dtype, ("dx vs torch", what))
            close(sync.running_var, tbn.running_var.numpy(), dtype, ("running_var vs torch",
                                                                     what))
    sync.eval()  # eval: running statistics, no communication (rank 0 alone could run it)
    ye = sync(to_layout(x[mine], channels_last))
    bn.eval()
    close(ye, bn(x)[mine], dtype, ("eval", what))


def check_sub_communicator():
    """comm=a sub-communicator from Split: the statistics of that group's batches only."""
    sub = comm.Split(rank % 2, rank)
    members = [r for r in range(size) if r % 2 == rank % 2]
    rng = np.random.default_rng(5)
    data = [rng.standard_normal((2 + r, 4, 6)) for r in range(size)]  # every rank's shard
    layer = cnorm.SyncBatchNorm(4, dtype=np.float64, comm=sub)
    y = layer(data[rank])
    group = np.concatenate([data[r] for r in members])
    ref = RefBatchNorm(4)
    yr = ref.forward(group)
    lo = sum(len(data[r]) for r in members if r < rank)
    close(y, yr[lo:lo + len(data[rank])], np.float64, "sub-communicator")
    close(layer.running_var, ref.running_var, np.float64, "sub-communicator running_var")
    sub.Free()


def check_bits_across_runs():
    outs = []
    for _ in range(2):
        x, dy, mine = make_full(4, np.float32, 3)
        layer = cnorm.SyncBatchNorm(x.shape[1])
        y = layer(x[mine])
        dx = layer.backward(dy[mine])
        outs.append((y.tobytes(), dx.tobytes(), layer.running_var.tobytes()))
    assert outs[0] == outs[1], "SyncBatchNorm differs between runs"


def expect_everywhere(kind, fn, layer):
    """fn raises kind on every rank; the layer's state is unchanged."""
    before = {k: np.array(v, copy=True) for k, v in layer.state_dict().items()}
    try:
        fn()
    except kind:
        pass
    else:
        raise AssertionError(f"rank {rank}: no {kind.__name__}")
    after = layer.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before), "state changed"
    comm.Barrier()  # every rank got here: nobody hangs


def check_errors():
    C = 4
    layer = cnorm.SyncBatchNorm(C)
    good = np.random.default_rng(rank).standard_normal((3, C, 5)).astype(np.float32)
    wrong_c = np.zeros((3, C + 1, 5), np.float32)
    expect_everywhere(ValueError, lambda: layer(wrong_c if rank == size - 1 else good), layer)
    expect_everywhere(TypeError, lambda: layer(good.astype(np.float64) if rank == 0 else good),
                      layer)
    expect_everywhere(ValueError, lambda: layer(good[0, 0] if rank == 1 else good), layer)
    odd = cnorm.SyncBatchNorm(C + (rank == 0))
    expect_everywhere(ValueError, lambda: odd(np.zeros((3, C + (rank == 0), 5), np.float32)),
                      odd)
    # widths on either side of the forward's first message (256 channels whole in it): every
    # rank learns of the difference from that message, before a wider layer's second one
    wide = 300 if rank == 0 else 200
    odd = cnorm.SyncBatchNorm(wide)
    expect_everywhere(ValueError, lambda: odd(np.zeros((3, wide, 2), np.float32)), odd)
    odd = cnorm.SyncBatchNorm(300)  # a wide layer whose part fails on one rank
    expect_everywhere(TypeError, lambda: odd(np.zeros((3, 300, 2), np.float64 if rank == 1
                                                      else np.float32)), odd)
    one = np.zeros((1 if rank == 0 else 0, C), np.float32)  # one value per channel in all
    expect_everywhere(ValueError, lambda: layer(one), layer)
    layer(good)
    expect_everywhere(ValueError, lambda: layer.backward(good[:2] if rank == 0 else good), layer)
    layer.backward(good)  # the layer still works after the failed calls
    check_faults(layer, good)


class Refuses:
    """An array-like whose conversion fails with ``kind`` (issue 20, item 5)."""

    def __init__(self, kind):
        self.kind = kind

    def __array__(self, dtype=None, copy=None):
        raise self.kind("this input cannot be read")


def check_faults(layer, good):
    """Any exception on one rank, of any type, raises on every rank and hangs none: the
    failing rank its own, the others the same built-in type (else RuntimeError) naming it."""
    for kind in (RuntimeError, KeyError, ZeroDivisionError, MemoryError):
        bad = rank == size - 1
        expect_everywhere(kind, lambda: layer(Refuses(kind) if bad else good), layer)
    class Custom(Exception):
        pass
    expect_everywhere(Custom if rank == 0 else RuntimeError,
                      lambda: layer(Refuses(Custom) if rank == 0 else good), layer)
    if torch is not None:  # a tensor that requires grad: np.asarray raises RuntimeError
        t = torch.from_numpy(good).requires_grad_()
        expect_everywhere(RuntimeError, lambda: layer(t if rank == 1 else good), layer)
    layer(good)
    expect_everywhere(RuntimeError,
                      lambda: layer.backward(Refuses(RuntimeError) if rank == 0 else good),
                      layer)
    layer.backward(good)


def check_fused_block():
    """SyncBatchNormAct (what convert_sync_batchnorm makes of a BatchNormAct2d) against
    BatchNormAct2d on the concatenated batch, with a residual: y, dx, grad_residual, the summed
    parameter gradients and the running statistics."""
    x, dy, mine = make_full(4, np.float64, seed=21)
    r = np.random.default_rng(22).standard_normal(x.shape)
    whole = cnorm.BatchNormAct2d(6, act="silu", dtype=np.float64)
    whole.weight[...] = np.linspace(0.5, 2, 6)
    local = cnorm.SyncBatchNorm.convert_sync_batchnorm(
        cnorm.BatchNormAct2d(6, act="silu", dtype=np.float64))
    assert type(local) is cnorm.SyncBatchNormAct
    local.weight[...] = whole.weight
    y_all, y = whole(x, r), local(x[mine], r[mine])
    dx_all, dx = whole.backward(dy), local.backward(dy[mine])
    close(y, y_all[mine], np.float64, "block y")
    close(dx, dx_all[mine], np.float64, "block dx")
    close(local.grad_residual, whole.grad_residual[mine], np.float64, "block grad_residual")
    for name in ("grad_weight", "grad_bias"):
        close(comm.allreduce(getattr(local, name)), getattr(whole, name), np.float64, name)
    close(local.running_var, whole.running_var, np.float64, "block running_var")
    same_everywhere(local.running_var, "block running_var")


def check_moments():
    rng = np.random.default_rng(11)
    full = rng.integers(0, 256, (4 * size + 3, 9, 3), dtype=np.uint8)
    parts = np.array_split(full, size)
    m = cnorm.Moments(channel_axis=-1)
    if rank != 1:  # rank 1 has no data: it takes part all the same
        m.update(parts[rank])
    assert m.allreduce(comm) is m
    rows = np.concatenate([p for r, p in enumerate(parts) if r != 1])
    whole = cnorm.Moments.from_array(rows, channel_axis=-1)
    assert m.count == whole.count
    assert np.allclose(m.mean, whole.mean, rtol=1e-12) and np.allclose(m.var, whole.var,
                                                                      rtol=1e-12)
    assert np.array_equal(m.min, whole.min) and np.array_equal(m.max, whole.max)
    same_everywhere(m.var, "Moments.allreduce")
    bad = cnorm.Moments.from_array(np.zeros((2, 3 + (rank == 0)), np.float32))
    try:
        bad.allreduce(comm)
    except ValueError:
        assert bad.channels == 3 + (rank == 0) and bad.count == 2
    else:
        raise AssertionError("channel mismatch not raised")


def main():
    for ndim in (2, 3, 4, 5):
        for dtype in (np.float32, np.float64):
            check_case(ndim, dtype, 0.1, True, True, channels_last=False)
    check_case(4, np.float32, 0.1, True, True, channels_last=True)
    for dtype in (np.float32, np.float64):
        check_case(4, dtype, 0.1, True, True, channels_last="mixed")
    check_case(5, np.float64, 0.1, True, True, channels_last=True)
    for dtype in (np.float32, np.float64):  # statistics in two messages, on either path
        check_case(4, dtype, 0.1, True, True, channels_last="mixed", width=300)
    check_case(4, np.float64, None, True, True, channels_last=False)
    check_case(3, np.float32, 0.1, False, True, channels_last=False)
    check_case(4, np.float64, 0.1, True, False, channels_last=True)
    for dtype in (np.float32, np.float64):  # one rank without samples
        check_case(4, dtype, 0.1, True, True, channels_last=False, empty=True)
        check_case(2, dtype, None, True, True, channels_last=False, empty=True)
    check_bits_across_runs()
    check_sub_communicator()
    check_errors()
    check_fused_block()
    check_moments()
    done = comm.gather(rank, root=0)  # every rank finished every check
    if rank == 0:
        print(f"ALL OK on ranks {done}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        comm.Abort(1)
