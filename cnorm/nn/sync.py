"""SyncBatchNorm: batch norm over the union of every rank's batch, over MPI (mpi4py).

Forward, training: each rank checks its input and computes its per-channel (count, mean, M2)
with the batch-norm kernels; one ``Allgather`` of a message of fixed size carries a failure
flag, num_features and those 1 + 2C doubles (up to C = 256; a wider layer's rest follows in a
second one), so a bad input on any rank, or widths that differ, raise the same error on every
rank with no rank left in a collective; every rank merges the statistics in rank order (Chan),
so all ranks hold the same bits; then the local normalize step. Backward: local sum(dy) and
sum(dy * (x - mean)), one ``Allgather`` with the flag, summed in rank order, then the local dx
step: two collectives a training step. A plain training step (a
C-contiguous float32/float64 input, no fused block) runs its local steps by entries checked in
C (src/nn/sync.pxi), which send the same messages as the checked path: on a shard that fits in
L2 the Python around the kernels was a third of the step. mpi4py is imported only when a
layer without ``comm`` first runs; without mpi4py the layer is BatchNorm in a one-process world.
"""
import builtins
import functools
import types
from typing import Any, Callable, Dict, NoReturn, Optional, Tuple, Type, TypeVar, cast

import numpy as np

from .._core import backend as _backend
from .._core.comm import world
from .._core.layout import ChannelLayout
from .._core.recycle import take
from .._core.types import Array, ArrayLike, DTypeLike, OptArray
from . import grad as _grad
from ._docs import (
    BLOCK_PARAMETERS,
    COMM_PARAMETER,
    GRAD_RESIDUAL,
    LAYER_RAISES,
    NORM_ATTRIBUTES,
    norm_parameters,
    sections,
)
from ._ops.act import Block
from ._ops.batch_norm import ANY_RANK, check_batch_norm
from ._ops.context import Context, running_factor, update_running
from .blocks import _Fused
from .modules import BatchNormBase

_check_local = functools.partial(check_batch_norm, local_batch=False)


def _error_type(name: str) -> Type[Exception]:
    """The built-in exception class called ``name`` (other ranks raise one of the failing
    rank's type), or RuntimeError when there is none."""
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        return kind
    return RuntimeError


def agree(comm: Any, error: Optional[BaseException], message: Array) -> Array:
    """Every rank passes its error (None, or the exception its part raised) and its
    ``message``, a 1-D float64 array of the same length on every rank whose first value is the
    failure flag (set here; the rest any values when this rank failed); returns every rank's
    messages, a (size, len(message)) array in rank order. When any rank failed, every rank
    raises: the first failing rank its own exception, the others one of its type when it is a
    built-in (else RuntimeError) naming that rank and its message. One Allgather when all is
    well (the flag travels with the data: a collective costs a few µs over shared memory and
    a few hundred over gloo); the messages travel only when something failed. Call it with
    every exception of the work before a collective, so that no rank is left waiting in one
    (or sending a message of another size)."""
    message[0] = error is not None
    rows = np.empty((comm.size, message.shape[0]))
    comm.Allgather(message, rows)
    settle(comm, error, rows)
    return rows


def settle(comm: Any, error: Optional[BaseException], rows: Array) -> None:
    """agree's raising, from every rank's gathered messages ``rows`` (the entries checked in C
    gather them themselves): nothing when no rank's flag is set."""
    flags = rows[:, 0].tolist()  # a few ranks: Python is quicker than NumPy here
    if any(flags):
        told = comm.allgather(None if error is None else (type(error).__name__, str(error)))
        bad = flags.index(1.0)
        if bad == comm.rank and error is not None:
            raise error
        name, text = told[bad]
        kind = _error_type(name)
        raise kind(f"on rank {bad}: {text}" if kind.__name__ == name else
                   f"on rank {bad}: {name}: {text}")


# The forward's first message: (failure flag, num_features, count, mean[C], m2[C]) in HEAD
# doubles, padded with zeros, whatever the width: ranks whose layers differ in width (or fail)
# still exchange one message each and all learn of it; up to C = 256 (a message of about 4 KB,
# within an MPI library's eager limit) the statistics travel in it whole, a wider layer's rest
# in a second message once the width is agreed.
HEAD = 3 + 2 * 256


def _forward_message(C: int, local: OptArray) -> Array:
    """The forward's message of a layer of width ``C``, with this rank's statistics row
    ``local`` (count, mean, m2), or zeros when its part failed (None)."""
    message = np.zeros(max(HEAD, 3 + 2 * C))
    message[1] = C
    if local is not None:
        message[2:3 + 2 * C] = local
    return message


class SyncContext(Context):
    """A training forward with statistics of the union of all ranks' batches. Made in two
    steps: the constructor does this rank's part (it may fail: the caller agrees on that
    before any collective), :meth:`normalize` the collective part and the output."""

    __slots__ = ("layout", "x3", "comm", "local", "total", "mean", "m2", "invstd", "y", "sums",
                 "gathered")
    gathered: Array  # every rank's backward sums, set by the layer's backward

    def __init__(self, comm: Any, x: Array, weight: OptArray, bias: OptArray,
                 block: Optional[Block] = None) -> None:
        self.comm = comm
        self.layout = layout = ChannelLayout(x)
        self.x3 = x3 = layout.view(x)
        self.keep_params(weight, bias, block)
        self.shift = np.zeros(x3.shape[1]) if bias is None else bias.astype(np.float64)
        C = x3.shape[1]
        count, mean, m2 = _backend.kernel("channel_stats", x.dtype)(x3, _backend.threads())
        self.local = np.zeros(1 + 2 * C)  # an empty shard: count 0 (and no NaN to carry)
        if count:
            self.local[0], self.local[1:C + 1], self.local[C + 1:] = count, mean, m2

    @classmethod
    def restored(cls, comm: Any, x: Array, mean: Array, invstd: Array, total: float,
                 weight: OptArray, bias: OptArray, block: Optional[Block] = None,
                 y: OptArray = None) -> "SyncContext":
        """The context of a forward already run (kept by a caller, as torch's autograd keeps
        its float64 ``mean`` and ``invstd`` and the union's count ``total``), for its
        collective backward; a fused block's needs its ``block`` and output ``y``."""
        ctx = cls.__new__(cls)
        ctx.comm = comm
        ctx.layout = layout = ChannelLayout(x)
        ctx.x3 = layout.view(x)
        ctx.keep_params(weight, bias, block)
        ctx.shift = np.zeros(ctx.x3.shape[1]) if bias is None else bias.astype(np.float64)
        if block is not None:
            assert y is not None, "a fused block's backward needs its output"
            block.kernel_args(layout, layout.view(y))
        ctx.mean, ctx.invstd, ctx.total, ctx.y = mean, invstd, float(total), None
        return ctx

    def normalize(self, parts: Array, eps: float, out: OptArray = None) -> None:
        """Merge every rank's statistics ``parts`` (each rank's ``local`` row, gathered by
        the caller) in rank order, so that every rank holds the same bits, and normalize this
        rank's part (with the block's residual and activation)."""
        self.total, self.mean, self.m2, self.invstd, scale = _backend.kernels.sync_stats(
            parts, eps, None if self.weight is None else self.weight.astype(np.float64))
        inputs = (self.x3, None if self.block is None else self.block.r)
        y3, self.y = self.layout.empty(out, inputs)
        epilogue = () if self.block is None else self.block.kernel_args(self.layout, y3)
        _backend.kernel("normalize", self.layout.dtype)(self.x3, self.mean, scale, self.shift,
                                                        y3, _backend.threads(), *epilogue)

    def update_running(self, running_mean: OptArray, running_var: OptArray, factor: float,
                       counter: OptArray = None) -> None:
        """The running statistics toward the union's, the same on every rank."""
        update_running(running_mean, running_var, self.mean, self.m2, self.total - 1.0, factor,
                       counter)

    def local_sums(self, dy: Array) -> Array:
        """This rank's part of the backward (it may fail: the caller agrees before the
        collective): Σg and Σg·(x - mean) per channel, g = dy through the block's activation;
        returns them as one row, for the caller to gather into ``self.gathered``."""
        dy3 = self.layout.view(dy)
        if self.block is not None:
            dy3 = self._through_block(dy3)
        s1, s2 = _backend.kernel("backward_sums", self.layout.dtype)(
            self.x3, dy3, self.mean, _backend.threads())
        self.sums = (dy3, s1, s2)
        return np.concatenate([s1, s2])

    def _through_block(self, dy3: Array) -> Array:
        """g = dy * act'(pre) (also the residual's gradient), by the batch-norm backward
        kernel in eval form, whose epilogue writes g (its dx is not used)."""
        assert self.block is not None
        epilogue, _ = self.block.kernel_grad_args(self.layout, self.shift)
        C = self.x3.shape[1]
        scratch, _ = self.layout.empty()
        _backend.kernel("bn_backward", self.layout.dtype)(
            self.x3, dy3, self.mean, self.invstd, self.weight, False, True, scratch,
            np.empty(C), np.empty(C), *epilogue, _backend.threads())
        g: Array = epilogue[-1]
        return g

    def _backward(self, dy: Array, out: OptArray = None) -> Tuple[Array, Array, Array]:
        """Every rank's sums (``self.gathered``), added in rank order, then this rank's dx."""
        dt = self.layout.dtype
        dy3, s1, s2 = self.sums
        k1, k2, k3 = _backend.kernels.sync_coefficients(
            self.gathered, self.invstd, self.total,
            None if self.weight is None else self.weight.astype(np.float64))
        dx3, dx = self.layout.empty(out, (self.x3, dy))
        _backend.kernel("backward_apply", dt)(self.x3, dy3, self.mean, k1, k2, k3, dx3, True,
                                              _backend.threads())
        return dx, self.invstd * s2, s1  # this rank's parameter gradients


class SyncCallContext(SyncContext):
    """The context of a training forward run by the entries checked in C (sync_train_call,
    src/nn/sync.pxi): the union's statistics they returned; the views
    of x are made only when the checked backward asks for them."""

    __slots__ = ("x",)

    def __init__(self, comm: Any, x: Array, stats: Array, total: float, weight: OptArray,
                 bias: OptArray) -> None:
        self.comm, self.x, self.total, self.y = comm, x, total, None
        self.mean, self.m2, self.invstd = stats
        self.keep_params(weight, bias)

    def __getattr__(self, name: str) -> Any:  # only for slots not set yet
        if name in ("layout", "x3"):
            self.layout = layout = ChannelLayout(self.x)
            self.x3 = layout.view(self.x)
            return getattr(self, name)
        raise AttributeError(name)


S = TypeVar("S", bound="SyncBatchNorm")


def _sync_twin(cls: Type[S], bn: BatchNormBase, comm: Any) -> BatchNormBase:
    """A synchronized layer with the state of ``bn``: a SyncBatchNormAct for a fused block
    (its activation kept), else ``cls``."""
    args = (bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, bn.dtype)
    new: SyncBatchNorm
    if isinstance(bn, _Fused):
        new = SyncBatchNormAct(*args, bias=bn.bias is not None, comm=comm, act=bn.act,
                               negative_slope=bn.negative_slope)
    else:
        new = cls(*args, bias=bn.bias is not None, comm=comm)
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        value = getattr(bn, name)
        setattr(new, name, None if value is None else value.copy())
    return new.train(bn.training)


_NOT_WALKED = (type, types.ModuleType, types.FunctionType, types.MethodType, np.ndarray)


def _convert(cls: Type[S], obj: Any, comm: Any, seen: Dict[int, Any]) -> Any:
    """convert_sync_batchnorm's walk; ``seen``: id -> what each object met became (shared
    layers stay shared, cycles end)."""
    if id(obj) in seen:
        return seen[id(obj)]
    seen[id(obj)] = obj
    if isinstance(obj, BatchNormBase):
        if not isinstance(obj, SyncBatchNorm):
            seen[id(obj)] = _sync_twin(cls, obj, comm)
    elif isinstance(obj, dict):
        pairs = [(k, _convert(cls, v, comm, seen)) for k, v in obj.items()]
        seen[id(obj)] = dict(pairs) if type(obj) is dict else type(obj)(pairs)
    elif isinstance(obj, (list, tuple)):
        items = [_convert(cls, v, comm, seen) for v in obj]
        seen[id(obj)] = type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    elif hasattr(obj, "__dict__") and not isinstance(obj, _NOT_WALKED):
        for name, value in list(vars(obj).items()):  # an object holding layers: in place
            new = _convert(cls, value, comm, seen)
            if new is not value:
                setattr(obj, name, new)
    return seen[id(obj)]


@sections(norm_parameters(affine=True, track=True) + COMM_PARAMETER, NORM_ATTRIBUTES,
          LAYER_RAISES)
class SyncBatchNorm(BatchNormBase):
    """Batch norm with statistics over all ranks of an MPI communicator (torch's SyncBatchNorm,
    on the CPU).

    Input ``(N, C, *)``; N may differ between ranks and may be 0 on some. In training every
    rank normalizes with the statistics of the union of all batches and updates identical
    running statistics; ``backward`` returns this rank's dx of the full-batch gradient, and
    ``grad_weight``/``grad_bias`` hold this rank's contributions (their sum over ranks is the
    full-batch gradient, as under DDP). Eval mode needs no communication. Without mpi4py (or
    in a one-process world) this is BatchNorm. Every rank must call ``forward`` and
    ``backward`` together; a bad input on any rank makes every rank raise the same error.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> bn = cnorm.SyncBatchNorm(3)          # under mpiexec: statistics over every rank
    >>> y = bn(np.random.default_rng(0).standard_normal((4, 3, 2, 2), np.float32))
    >>> y.shape, bn.running_mean.shape
    ((4, 3, 2, 2), (3,))
    """

    _ndims = 2

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: DTypeLike = np.float32, *, bias: bool = True, comm: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype,
                         bias=bias)
        self.comm = comm

    @classmethod
    def convert_sync_batchnorm(cls, layer: Any, comm: Any = None) -> Any:
        """The layers in ``layer`` with their batch norms synchronized, as torch converts a
        module's children: a BatchNorm1d/2d/3d becomes a SyncBatchNorm, a BatchNormAct1d/2d/3d
        a SyncBatchNormAct (its activation kept), each with the state of the original
        (parameters, running statistics, mode). Lists, tuples (named ones too) and dicts are
        converted item by item into new containers; any other object has its attributes
        converted in place, at any depth (``model.block.bn``); anything else is returned as it
        is. Objects met twice are converted once."""
        return _convert(cls, layer, comm, {})

    def _collective(self, comm: Any) -> bool:
        """Whether forward and backward run over all ranks (batch statistics, several ranks)."""
        return comm.size > 1 and (self.training or not self.track_running_stats)

    def forward(self, x: ArrayLike) -> Array:
        """Normalize ``x`` ``(N, C, *)`` with the statistics of every rank's batch (training), or
        with the running statistics (eval, no communication)."""
        return self._run(x)

    def _entry(self, x: ArrayLike, epi: Optional[Tuple[Any, Optional[str], float]] = None
               ) -> OptArray:
        if self.training:
            return None  # the statistics are every rank's: no local small call
        return super()._entry(x, epi)  # eval: the running statistics, no communication

    def _gather_stats(self, comm: Any, error: Optional[Exception], message: Array) -> Array:
        """Every rank's statistics rows ``(count, mean[C], m2[C])``, a (size, 1 + 2C) array in
        rank order, from this rank's forward ``message`` (_forward_message's layout). Any
        rank's failure, a width that differs between ranks (it would send statistics of
        another size, which no collective can take) or a union of at most one value per
        channel (torch's rule) makes every rank raise, from the first message alone (the
        collectives of sync_train_call's, src/nn/sync.pxi)."""
        message[0] = error is not None
        ok, rows = _backend.kernels.sync_gather(comm, message, self.num_features, HEAD)
        if not ok:
            self._disagree(comm, error, rows)
        return cast(Array, rows)

    def _disagree(self, comm: Any, error: Optional[Exception], heads: Array) -> NoReturn:
        """Raise on every rank what the gathered ``heads`` of the forward's messages say: a
        rank's failure (settle), else the ranks' widths or their count."""
        settle(comm, error, heads)
        C = self.num_features
        facts = heads[:, 1:3].tolist()  # (width, count) of each rank
        if any(width != C for width, _ in facts):
            raise ValueError("num_features differs between ranks: "
                             f"{[int(width) for width, _ in facts]}")
        total = sum(count for _, count in facts)
        if total <= 1:
            raise ValueError("Expected more than 1 value per channel when training, got "
                             f"{int(total)} over {comm.size} ranks")
        raise AssertionError(f"heads that the entry refused and the checks passed: {facts}")

    def _sync_entry(self, comm: Any, x: ArrayLike) -> OptArray:
        """A training forward by the entries checked in C (sync_train_call), with the checked
        path's messages (so ranks on either path work together) and its results; None,
        having sent nothing, where they do not take the call or run out of memory (the
        checked path then agrees on any failure with the other ranks)."""
        if not (self.training and type(self.eps) is float and self.eps > 0.0):
            return None
        counter = self._num_batches_tracked if self.track_running_stats else None
        rm, rv = (self.running_mean, self.running_var) if counter is not None else (None, None)
        out = take(self, "_y", x) if type(x) is np.ndarray else None
        got = _backend.kernels.sync_train_call(
            comm, x, self.dtype.num, ANY_RANK, self.num_features, self.weight, self.bias, rm,
            rv, counter, HEAD, self.eps, running_factor(self.momentum, counter), out,
            _backend.threads())
        if got is None:
            return None
        if type(got) is np.ndarray:  # a rank failed, or the ranks disagree: every rank raises
            self._disagree(comm, None, got)
        assert type(got) is tuple, "sync_train_finish refused what sync_train_begin took"
        y: Array
        y, stats, total = got
        self._saved = SyncCallContext(comm, cast(Array, x), stats, total, self.weight,
                                      self.bias) if _grad.enabled() else None
        return y

    def _sync_grad(self, ctx: SyncCallContext, grad_output: ArrayLike) -> OptArray:
        """The backward of an entry's forward by the entries checked in C (sync_grad_call),
        with the checked path's message; None, having sent nothing, where they do not take
        it or run out of memory."""
        got = _backend.kernels.sync_grad_call(ctx.comm, ctx.x, grad_output, ctx.mean,
                                              ctx.invstd, ctx.total, ctx.weight,
                                              take(self, "_dx", ctx.x), _backend.threads())
        if got is None:
            return None
        if type(got) is np.ndarray:  # another rank failed: every rank raises
            settle(ctx.comm, None, got)
        assert type(got) is tuple, "sync_grad_finish refused what sync_grad_begin took"
        dx: Array
        dx, gw, gb = got
        self.grad_weight = gw if ctx.weight is not None else None
        self.grad_bias = gb if ctx.has_bias else None
        return dx

    def _run(self, x: ArrayLike, block: Optional[Callable[[Array], Block]] = None) -> Array:
        """The forward, with a fused block's epilogue (SyncBatchNormAct) when given. Every
        failure of this rank's part (checks, its statistics, memory) is agreed on before the
        collective, so no rank is left waiting in it."""
        comm = world(self.comm)
        if not self._collective(comm):
            return super()._run(x, block)
        y = self._sync_entry(comm, x) if block is None else None
        if y is not None:
            return y
        error: Optional[Exception] = None
        ctx = None
        try:
            update, (a, rm, rv, w, b) = self._checked(_check_local, x, True, eps=self.eps)
            ctx = SyncContext(comm, a, w, b, None if block is None else block(a))
        except Exception as e:  # noqa: BLE001 - every rank must hear of any failure
            error = e
        parts = self._gather_stats(comm, error, _forward_message(
            self.num_features, None if ctx is None else ctx.local))
        assert ctx is not None  # else _gather_stats raised
        made = ctx
        self._with_spare("_y", a, lambda out: made.normalize(parts, self.eps, out))
        if update:  # every rank moves its running statistics the same way
            self._update_running(ctx, rm, rv)
        return self._ran(ctx)

    def backward(self, grad_output: ArrayLike) -> Array:
        """This rank's dx of the full-batch gradient; ``grad_weight``/``grad_bias``: this
        rank's contributions. Collective when the forward was (every rank must call it)."""
        ctx = self._saved
        if type(ctx) is SyncCallContext:
            fast = self._sync_grad(ctx, grad_output)
            if fast is not None:
                return fast
        if not isinstance(ctx, SyncContext):
            if ctx is None and self._collective(world(self.comm)):  # others may be waiting
                agree(world(self.comm), RuntimeError("backward called before forward"),
                      np.zeros(1 + 2 * self.num_features))  # the size the others send
            return super().backward(grad_output)
        error: Optional[Exception] = None
        message = np.zeros(1 + 2 * ctx.x3.shape[1])  # the flag, then this rank's sums
        try:  # this rank's sums, gathered with the agreement
            dy = ctx.check_grad(grad_output)
            message[1:] = ctx.local_sums(dy)
        except Exception as e:  # noqa: BLE001 - every rank must hear of any failure
            error = e
        ctx.gathered = agree(ctx.comm, error, message)[:, 1:]
        saved = ctx
        dx: Array
        dx, self.grad_weight, self.grad_bias = self._with_spare(
            "_dx", saved.layout, lambda out: saved.backward(dy, out))
        return dx


@sections(norm_parameters(affine=True, track=True) + COMM_PARAMETER + BLOCK_PARAMETERS,
          NORM_ATTRIBUTES + GRAD_RESIDUAL, LAYER_RAISES)
class SyncBatchNormAct(_Fused, SyncBatchNorm):
    """SyncBatchNorm, then + residual, then the activation, in one pass (BatchNormAct over
    MPI): the statistics of every rank's batch, with the block's ``act``, ``negative_slope``,
    ``forward(x, residual)`` and ``grad_residual``. What ``convert_sync_batchnorm`` makes of a
    BatchNormAct1d/2d/3d.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> block = cnorm.SyncBatchNorm.convert_sync_batchnorm(cnorm.BatchNormAct2d(3, act="silu"))
    >>> type(block).__name__, block.act
    ('SyncBatchNormAct', 'silu')
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: DTypeLike = np.float32, *, bias: bool = True, comm: Any = None,
                 act: Optional[str] = "relu", negative_slope: float = 0.01) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype,
                         bias=bias, comm=comm)
        self._init_act(act, negative_slope)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._act_repr()
