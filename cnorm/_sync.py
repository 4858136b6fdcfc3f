"""SyncBatchNorm: batch norm over the union of every rank's batch, over MPI (mpi4py).

Forward, training: each rank checks its input; one small ``allgather`` agrees on validity (so a
bad input on any rank raises the same error on every rank, before any collective that could
block); local per-channel (count, mean, M2) from the batch-norm kernels; one ``Allgather`` of
those 1 + 2C doubles; every rank merges them in rank order (Chan), so all ranks hold the same
bits; then the local normalize step. Backward: local sum(dy) and sum(dy * (x - mean)), one
``Allgather``, summed in rank order, then the local dx step. mpi4py is imported only when a
layer without ``comm`` first runs; without mpi4py the layer is BatchNorm in a one-process world.
"""
import functools

import numpy as np

from . import _backend
from ._batch_norm import check_batch_norm
from ._context import Context, update_running
from ._layout import ChannelLayout
from ._validate import as_float_array
from .modules import _BatchNorm

_check_local = functools.partial(check_batch_norm, local_batch=False)


class _OneProcess:
    """The world without mpi4py (or a communicator of one): no communication at all."""

    size, rank = 1, 0

    def allgather(self, obj):
        return [obj]

    def Allgather(self, send, recv):
        recv[...] = np.reshape(send, recv.shape)


def world(comm):
    """The communicator to use: ``comm``, else mpi4py's COMM_WORLD, else a one-process world."""
    if comm is not None:
        return comm
    try:
        from mpi4py import MPI
    except ImportError:
        return _OneProcess()
    return MPI.COMM_WORLD


_ERRORS = (ValueError, TypeError, RuntimeError)


def agree(comm, error, *facts):
    """Every rank passes its error (None, or one of _ERRORS) and some integer facts; returns
    every rank's facts, a (size, len(facts)) array in rank order. When any rank failed, every
    rank raises the first failing rank's error type with its message. One Allgather of a few
    integers when all is well; the messages travel only when something failed."""
    code = 0 if error is None else 1 + _ERRORS.index(type(error))
    rows = np.empty((comm.size, 1 + len(facts)), dtype=np.int64)
    comm.Allgather(np.array([code, *facts], dtype=np.int64), rows)
    if rows[:, 0].any():
        messages = comm.allgather(None if error is None else str(error))
        bad = int(np.flatnonzero(rows[:, 0])[0])
        if bad == comm.rank:
            raise error
        raise _ERRORS[rows[bad, 0] - 1](f"on rank {bad}: {messages[bad]}")
    return rows[:, 1:]


def gather_rows(comm, row):
    """``Allgather`` of one float64 row per rank: a (size, len(row)) array in rank order."""
    out = np.empty((comm.size, row.shape[0]))
    comm.Allgather(np.ascontiguousarray(row, dtype=np.float64), out)
    return out


class SyncContext(Context):
    """A training forward with statistics of the union of all ranks' batches."""

    __slots__ = ("layout", "x3", "comm", "total", "mean", "m2", "invstd", "weight", "has_bias",
                 "y")

    def __init__(self, comm, x, weight, bias, eps):
        k = _backend.kernels
        self.comm = comm
        self.layout = layout = ChannelLayout(x)
        self.x3 = x3 = layout.view(x)
        self.weight = None if weight is None else weight.copy()  # as it was at forward time
        self.has_bias = bias is not None
        C = x3.shape[1]
        count, mean, m2 = _backend.kernel("channel_stats", x.dtype)(x3, _backend.threads())
        local = np.zeros(1 + 2 * C)  # an empty shard: count 0 (and no NaN to carry)
        if count:
            local[0], local[1:C + 1], local[C + 1:] = count, mean, m2
        parts = gather_rows(comm, local)  # rank order: every rank merges the same bits
        self.total, self.mean, self.m2 = k.merge_stats(
            np.ascontiguousarray(parts[:, 0]), np.ascontiguousarray(parts[:, 1:C + 1]),
            np.ascontiguousarray(parts[:, C + 1:]))
        self.invstd = 1.0 / np.sqrt(self.m2 / self.total + eps)
        scale = self.invstd * (1.0 if weight is None else weight.astype(np.float64))
        shift = np.zeros(C) if bias is None else bias.astype(np.float64)
        y3, self.y = layout.empty()
        _backend.kernel("normalize", x.dtype)(x3, self.mean, scale, shift, y3,
                                              _backend.threads())

    def update_running(self, running_mean, running_var, factor, counter=None):
        """The running statistics toward the union's, the same on every rank."""
        update_running(running_mean, running_var, self.mean, self.m2, self.total - 1.0, factor,
                       counter)

    def _backward(self, dy, out=None):
        dy3 = self.layout.view(dy)
        dt = self.layout.dtype
        s1, s2 = _backend.kernel("backward_sums", dt)(self.x3, dy3, self.mean, _backend.threads())
        C = s1.shape[0]
        sums = gather_rows(self.comm, np.concatenate([s1, s2]))
        S1, S2 = np.zeros(C), np.zeros(C)
        for r in range(sums.shape[0]):  # in rank order, the same bits on every rank
            S1 += sums[r, :C]
            S2 += sums[r, C:]
        w = 1.0 if self.weight is None else self.weight.astype(np.float64)
        inv, M = self.invstd, self.total
        k1 = w * inv
        k2 = -inv * inv * inv * (w * S2) / M
        k3 = -inv * (w * S1) / M
        dx3, dx = self.layout.empty(out, (self.x3, dy))
        _backend.kernel("backward_apply", dt)(self.x3, dy3, self.mean, k1, k2, k3, dx3, True,
                                              _backend.threads())
        return dx, self.invstd * s2, s1  # this rank's parameter gradients


class SyncBatchNorm(_BatchNorm):
    """Batch norm with statistics over all ranks of an MPI communicator (torch's SyncBatchNorm,
    on the CPU).

    Input ``(N, C, *)``; N may differ between ranks and may be 0 on some. In training every
    rank normalizes with the statistics of the union of all batches and updates identical
    running statistics; ``backward`` returns this rank's dx of the full-batch gradient, and
    ``grad_weight``/``grad_bias`` hold this rank's contributions (their sum over ranks is the
    full-batch gradient, as under DDP). Eval mode needs no communication. ``comm``: an mpi4py
    communicator (None: COMM_WORLD when mpi4py is installed, else a one-process world, where
    this is BatchNorm). Every rank must call ``forward`` and ``backward`` together; a bad
    input on any rank makes every rank raise the same error.
    """

    _ndims = 2

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, *, bias=True, comm=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype,
                         bias=bias)
        self.comm = comm

    @classmethod
    def convert_sync_batchnorm(cls, layer, comm=None):
        """A SyncBatchNorm with the state of a BatchNorm1d/2d/3d (parameters, running
        statistics, mode). Containers (list, tuple, dict) are converted item by item, and an
        object holding layers as attributes has them replaced in place, as torch converts a
        module's children; anything else is returned as it is."""
        if isinstance(layer, _BatchNorm) and not isinstance(layer, SyncBatchNorm) and \
                not hasattr(layer, "act"):  # a fused block would lose its activation, residual
            new = cls(layer.num_features, layer.eps, layer.momentum, layer.affine,
                      layer.track_running_stats, layer.dtype, bias=layer.bias is not None,
                      comm=comm)
            for name in ("weight", "bias", "running_mean", "running_var",
                         "num_batches_tracked"):
                value = getattr(layer, name)
                setattr(new, name, None if value is None else value.copy())
            return new.train(layer.training)
        if isinstance(layer, (list, tuple)):
            return type(layer)(cls.convert_sync_batchnorm(v, comm) for v in layer)
        if isinstance(layer, dict):
            return {k: cls.convert_sync_batchnorm(v, comm) for k, v in layer.items()}
        if hasattr(layer, "__dict__") and not isinstance(layer, type):
            for name, value in list(vars(layer).items()):
                if isinstance(value, (_BatchNorm, list, tuple, dict)):
                    setattr(layer, name, cls.convert_sync_batchnorm(value, comm))
        return layer

    def _collective(self, comm):
        """Whether forward and backward run over all ranks (batch statistics, several ranks)."""
        return comm.size > 1 and (self.training or not self.track_running_stats)

    def forward(self, x):
        """Normalize ``x`` (N, C, *) with the statistics of every rank's batch (training), or
        with the running statistics (eval, no communication)."""
        comm = world(self.comm)
        if not self._collective(comm):
            return super().forward(x)
        error, n = None, -1
        try:
            update, (x, rm, rv, w, b) = self._checked(_check_local, x, True)
            n = x.size // x.shape[1] if x.shape[1] else 0
        except (ValueError, TypeError) as e:
            error = e
        facts = agree(comm, error, self.num_features, n)
        if (facts[:, 0] != self.num_features).any():
            raise ValueError(f"num_features differs between ranks: {facts[:, 0].tolist()}")
        if facts[:, 1].sum() <= 1:  # torch's rule, on the union of the batches
            raise ValueError("Expected more than 1 value per channel when training, got "
                             f"{int(facts[:, 1].sum())} over {comm.size} ranks")
        ctx = SyncContext(comm, x, w, b, self.eps)
        if update:  # every rank moves its running statistics the same way
            self._update_running(ctx, rm, rv)
        return self._ran(ctx)

    def backward(self, grad_output):
        """This rank's dx of the full-batch gradient; ``grad_weight``/``grad_bias``: this
        rank's contributions. Collective when the forward was (every rank must call it)."""
        ctx = self._saved
        if not isinstance(ctx, SyncContext):
            if ctx is None and self._collective(world(self.comm)):  # others may be waiting
                agree(world(self.comm), RuntimeError("backward called before forward"))
            return super().backward(grad_output)
        error = None
        try:
            dy = as_float_array(grad_output, ctx.layout.dtype, what="grad_output")
            if dy.shape != ctx.layout.shape:
                raise ValueError(f"grad_output has shape {dy.shape}, expected the forward "
                                 f"input's shape {ctx.layout.shape}")
        except (ValueError, TypeError) as e:
            error = e
        agree(ctx.comm, error)
        dx, self.grad_weight, self.grad_bias = ctx.backward(dy)
        return dx
