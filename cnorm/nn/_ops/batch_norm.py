"""Batch norm: argument checks and the forward/backward context, shared by
``cnorm.batch_norm`` and the BatchNorm layers (and by instance norm's eval mode)."""
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from ..._core import backend as _backend
from ..._core import recycle
from ..._core.checks import as_float_array, check_channels, check_eps, check_ndim, check_vectors
from ..._core.dtypes import param_dtype
from ..._core.layout import ChannelLayout, contiguous, reduction_view, storage
from ..._core.types import Array, ArrayLike, AxisLike, OptArray
from .act import Block, act_code
from .context import WIDE_INVSTD, Context, as_f64, update_running, write_back


def reduce_moments(x: Array, axis: AxisLike) -> Tuple[Array, Array]:
    """``cnorm.moments``: the batch-norm statistics kernel over the axes ``axis`` of a checked
    ``x``, on the view :func:`reduction_view` makes; (mean, biased var) in x's parameter
    dtype, shaped like x without the reduced axes."""
    x3, shape = reduction_view(x, axis)
    n, mean, m2 = _backend.kernel("channel_stats", x.dtype)(storage(x3), _backend.threads())
    with np.errstate(invalid="ignore", divide="ignore"):
        var = m2 / n
    dt = param_dtype(x.dtype)
    return mean.astype(dt).reshape(shape), var.astype(dt).reshape(shape)


def check_batch_norm(x: ArrayLike, running_mean: Any, running_var: Any, weight: Any, bias: Any,
                     training: bool, update: bool, *, eps: float, dtype: Any = None,
                     ndims: Union[int, Sequence[int]] = 2, num_features: Optional[int] = None,
                     local_batch: bool = True
                     ) -> Tuple[Array, OptArray, OptArray, OptArray, OptArray]:
    """Validate a batch-norm call once; returns (x, running_mean, running_var, weight, bias).
    ``update``: the running arrays will be written in place. The layers add their dtype,
    ranks and channel count. ``local_batch=False``: the batch is one rank's part of a larger
    one (SyncBatchNorm), so the one-value rule is the caller's."""
    check_eps(eps, training)
    x = as_float_array(x, dtype)
    check_ndim(x, ndims)
    check_channels(x, num_features, "num_features")
    running_mean, running_var, weight, bias = check_vectors(x, running_mean, running_var,
                                                            weight, bias, update)
    if training:
        if local_batch and x.size == x.shape[1]:  # torch's rule: statistics need two values
            raise ValueError("Expected more than 1 value per channel when training, "
                             f"got input size {x.shape}")
    elif running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required when training=False")
    return x, running_mean, running_var, weight, bias


def batch_norm_call(x: ArrayLike, running_mean: OptArray, running_var: OptArray,
                    weight: OptArray, bias: OptArray, training: bool, momentum: float,
                    eps: float, out: OptArray, block: Optional[Block] = None) -> Array:
    """``cnorm.batch_norm`` and ``cnorm.batch_norm_act``: check, normalize, and when training
    move the caller's running arrays (written back when the checks converted them). A call
    of the plain norm goes to the entry checked in C first, without a context."""
    if (block is None and out is None and type(x) is np.ndarray and type(eps) is float
            and eps > 0.0 and (type(momentum) is float or not training)):
        got = forward_call(x, x.dtype, ANY_RANK, x.shape[1] if x.ndim > 1 else 0, weight,
                           bias, running_mean, running_var, None, eps,
                           momentum if training else 0.0, context=False,
                           training=bool(training))
        if got is not None:
            return got[0]
    x, rm, rv, weight, bias = check_batch_norm(
        x, running_mean, running_var, weight, bias, training, update=training, eps=eps)
    ctx = BatchNormContext(x, rm, rv, weight, bias, eps, training, block=block, out=out)
    if training:
        ctx.update_running(rm, rv, float(momentum))
        if rm is not running_mean or rv is not running_var:  # converted by the checks
            write_back((running_mean, rm), (running_var, rv))
    y: Array = ctx.y
    return y


class BatchNormContext(Context):
    """A batch-norm forward: with ``batch_stats`` the fused statistics + normalize kernel,
    otherwise one pass with the given running statistics. ``compute_y=False``: statistics
    only (a functional backward)."""

    __slots__ = ("layout", "x3", "count", "mean", "m2", "invstd", "batch_stats", "y")
    m2: OptArray  # None with running statistics

    def __init__(self, x: Array, running_mean: OptArray, running_var: OptArray,
                 weight: OptArray, bias: OptArray, eps: float, batch_stats: bool,
                 compute_y: bool = True, block: Optional[Block] = None,
                 out: OptArray = None) -> None:
        dt = x.dtype
        self.layout = layout = ChannelLayout(x)
        self.x3 = x3 = layout.view(x)
        self.batch_stats = batch_stats
        self.keep_params(weight, bias, block)
        C = x3.shape[1]
        self.count = float(x3.shape[0] * x3.shape[2])
        self.mean, self.m2, self.invstd = np.empty((3, C))
        inputs = (x, None if block is None else block.r)
        y3: OptArray = None
        if compute_y:
            y3, self.y = layout.empty(out, inputs)
        else:
            self.y = None
        epilogue = (None, 0, 0.0) if block is None else block.kernel_args(layout, y3)
        if batch_stats and compute_y:
            kernel = _backend.kernel("bn_forward_train", dt)
            least = kernel(x3, self.weight, contiguous(bias), eps, y3, self.mean, self.m2,
                           self.invstd, *epilogue, _backend.threads())
            if least < WIDE_INVSTD and block is None:
                self.widen(lambda x64: BatchNormContext(
                    x64, None, None, as_f64(weight), as_f64(bias), eps, True), x)
            return
        if not batch_stats and compute_y:
            kernel = _backend.kernel("bn_forward_eval", dt)
            kernel(x3, contiguous(running_mean), contiguous(running_var), self.weight,
                   contiguous(bias), eps, y3, self.mean, self.invstd, *epilogue,
                   _backend.threads())
            self.m2 = None  # running statistics: no batch M2
            return
        if batch_stats:  # statistics only (a functional backward)
            _, self.mean, self.m2 = _backend.kernel("channel_stats", dt)(x3, _backend.threads())
            var = self.m2 / self.count
        else:
            assert running_mean is not None and running_var is not None  # checked: eval
            self.mean, var, self.m2 = (running_mean.astype(np.float64),
                                       running_var.astype(np.float64), None)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.invstd = 1.0 / np.sqrt(var + eps)

    @classmethod
    def restored(cls, x: Array, mean: Array, invstd: Array, weight: OptArray, bias: OptArray,
                 batch_stats: bool, block: Optional[Block] = None,
                 y: OptArray = None) -> "BatchNormContext":
        """The context of a forward already run, from the float64 ``mean`` and ``invstd`` it
        normalized with (kept by a caller, as torch's autograd keeps them): for its backward,
        without a second pass over ``x`` for the statistics. A fused block's backward needs
        its ``block`` and output ``y``."""
        ctx = cls.__new__(cls)
        ctx.layout = layout = ChannelLayout(x)
        ctx.x3 = layout.view(x)
        ctx.batch_stats = batch_stats
        ctx.keep_params(weight, bias, block)
        if block is not None:
            assert y is not None, "a fused block's backward needs its output"
            block.kernel_args(layout, layout.view(y))
        ctx.count = float(ctx.x3.shape[0] * ctx.x3.shape[2])
        ctx.mean, ctx.m2, ctx.invstd, ctx.y = mean, None, invstd, None
        return ctx

    def update_running(self, running_mean: OptArray, running_var: OptArray, factor: float,
                       counter: OptArray = None) -> None:
        """Move the running statistics toward this batch's (an empty batch leaves them, and
        counts, as torch); ``counter``: see context.update_running. Batch statistics only."""
        assert self.m2 is not None
        if self.count > 0:
            update_running(running_mean, running_var, self.mean, self.m2, self.count - 1.0,
                           factor, counter)
        elif counter is not None:  # nothing else moves: one step alone is atomic
            counter[...] += 1

    def _backward(self, dy: Array, out: OptArray = None) -> Tuple[Array, Array, Array]:
        dx3, dx = self.layout.empty(out, (self.x3, dy))
        epilogue = (None, None, None, 0, 0.0, None)  # a fused block: act and residual
        if self.block is not None:
            epilogue, _ = self.block.kernel_grad_args(self.layout, self.shift)
        dy3 = self.layout.view(dy)
        sdy, sdyx = np.empty((2, self.mean.shape[0]))
        kernel = _backend.kernel("bn_backward", self.layout.dtype)
        kernel(self.x3, dy3, self.mean, self.invstd, self.weight, self.batch_stats,
               self.weight is not None or self.has_bias, dx3, sdy, sdyx, *epilogue,
               _backend.threads())
        if self.count == 0:  # an empty batch: no gradient (torch's 0, not NaN * 0)
            return dx, np.zeros_like(sdyx), sdy
        return dx, self.invstd * sdyx, sdy


class CallContext(BatchNormContext):
    """The context of a forward run by the entry checked in C (``bn_forward_call``,
    src/nn/calls.pxi): the statistics it returned (``batch_stats``: the batch's, else the
    running ones, as BatchNormContext's); its views of x are made when a backward
    first asks for them, so that the forward pays for none. A fused block's context keeps its
    block and output ``y`` (relu's backward reads its mask there)."""

    __slots__ = ("x",)

    def __init__(self, x: Array, stats: Tuple[Array, OptArray, Array], weight: OptArray,
                 bias: OptArray, block: Optional[Block] = None, y: OptArray = None,
                 batch_stats: bool = True) -> None:
        self.x = x
        self.mean, self.m2, self.invstd = stats
        self.batch_stats, self.y = batch_stats, y
        self.keep_params(weight, bias, block)

    def backward(self, grad_output: ArrayLike,
                 out: OptArray = None) -> Tuple[Array, OptArray, OptArray]:
        """Context.backward's results; by the entry checked in C where it takes them (a fused
        block's by the checked path: its epilogue's gradient)."""
        need = self.weight is not None or self.has_bias
        got = None if self.block is not None else \
            _backend.kernels.bn_backward_call(self.x, grad_output, self.mean, self.invstd,
                                              self.weight, self.batch_stats, need, out,
                                              recycle.SPARE_MIN, _backend.threads())
        if got is None:
            return super().backward(grad_output, out)
        dx, sdy, sdyx = got  # as _backward and Context.backward finish them
        pdt = self.x.dtype
        return (dx, None if self.weight is None else (self.invstd * sdyx).astype(pdt),
                sdy.astype(pdt) if self.has_bias else None)

    def __getattr__(self, name: str) -> Any:  # only for slots not set yet
        if name in ("layout", "x3", "count"):
            self.layout = layout = ChannelLayout(self.x)
            self.x3 = layout.view(self.x)
            self.count = float(self.x3.shape[0] * self.x3.shape[2])
            if self.block is not None:
                self.block.kernel_args(layout, layout.view(self.y))
            return getattr(self, name)
        raise AttributeError(name)


def ranks_mask(ndims: Union[int, Sequence[int]]) -> int:
    """check_ndim's ``allowed`` (the ranks, or an int: the least rank) as the bit mask
    ``bn_forward_call`` takes."""
    ranks = range(ndims, 63) if isinstance(ndims, int) else ndims
    return sum(1 << r for r in ranks)


ANY_RANK = ranks_mask(2)  # the functional form's: (N, C, ...)


def forward_call(x: Any, dtype: np.dtype[Any], ranks: int, C: int, weight: OptArray,
                 bias: OptArray, running_mean: OptArray, running_var: OptArray,
                 counter: OptArray, eps: float, factor: float,
                 epi: Optional[Tuple[Any, Optional[str], float]] = None, context: bool = True,
                 holder: Any = None, training: bool = True) -> Optional[Tuple[Array, Any]]:
    """A forward by the entry checked in C: ``(y, context)``, in training with the running
    statistics (and ``counter``) moved, in eval (``training=False``) normalized with the
    running statistics; or None, having changed nothing, where the entry does not take the
    call (the checked path then runs, with its errors). ``epi``: a fused block's (residual,
    activation name, slope); ``context=False``: a functional form's call, which no backward
    asks for (``(y, None)``); ``holder``: the layer, whose memory takes a large output
    (recycle.entry_out)."""
    residual, act, slope = (None, None, 0.0) if epi is None else epi
    out, limit = recycle.entry_out(holder, x)
    got = _backend.kernels.bn_forward_call(x, dtype.num, ranks, C, weight, bias, running_mean,
                                           running_var, counter, training, eps, factor,
                                           residual, act_code(act), slope, WIDE_INVSTD, out,
                                           limit, _backend.threads())
    if got is None or not context:
        return None if got is None else (got[0], None)
    y, stats = got
    block = None if epi is None else Block(x, residual, act, slope)
    return y, CallContext(x, stats, weight, bias, block, None if block is None else y,
                          training)
