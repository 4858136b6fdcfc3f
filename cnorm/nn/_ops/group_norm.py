"""Group norm and instance norm (group norm with one channel per group): argument checks and
the forward/backward context, shared by ``cnorm.group_norm`` / ``cnorm.instance_norm`` and
the GroupNorm / InstanceNorm layers."""
from math import prod
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from ..._core import backend as _backend
from ..._core import recycle
from ..._core.checks import (
    as_float_array,
    check_channels,
    check_ndim,
    check_vector,
    check_vectors,
    positive_int,
)
from ..._core.dtypes import param_dtype
from ..._core.layout import ChannelLayout, contiguous
from ..._core.types import Array, ArrayLike, OptArray
from .act import Block, act_code
from .batch_norm import BatchNormContext
from .context import WIDE_INVSTD, Context, as_f64, update_running


def check_group_norm(x: ArrayLike, num_groups: int, weight: Any, bias: Any, dtype: Any = None,
                     num_channels: Optional[int] = None
                     ) -> Tuple[Array, int, OptArray, OptArray]:
    """Validate a group-norm call once; returns (x, num_groups, weight, bias)."""
    x = as_float_array(x, dtype)
    check_ndim(x, 2)
    check_channels(x, num_channels, "num_channels")
    G, C = positive_int(num_groups, "num_groups"), x.shape[1]
    if C % G:
        raise ValueError(f"the input's {C} channels must be divisible by num_groups ({G})")
    pdt = param_dtype(x.dtype)
    return x, G, check_vector(weight, C, pdt, "weight"), check_vector(bias, C, pdt, "bias")


def check_instance_norm(x: ArrayLike, running_mean: Any, running_var: Any, weight: Any,
                        bias: Any, use_input_stats: bool, update: bool, *, dtype: Any = None,
                        ndims: Union[int, Sequence[int]] = 3,
                        num_features: Optional[int] = None
                        ) -> Tuple[Array, OptArray, OptArray, OptArray, OptArray]:
    """Validate an instance-norm call once; returns (x, running_mean, running_var, weight,
    bias). ``ndims``: the layers' ranks, batched first; an unbatched input (without N) comes
    back with N = 1."""
    x = as_float_array(x, dtype)
    check_ndim(x, ndims)
    if not isinstance(ndims, int) and x.ndim == ndims[0]:
        x = x[None]
    check_channels(x, num_features, "num_features")
    running_mean, running_var, weight, bias = check_vectors(x, running_mean, running_var,
                                                            weight, bias, update)
    if use_input_stats:
        if prod(x.shape[2:]) == 1:
            raise ValueError("Expected more than 1 spatial element when training, "
                             f"got input size {x.shape}")
    elif running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required when "
                         "use_input_stats=False")
    return x, running_mean, running_var, weight, bias


class GroupNormContext(Context):
    """A group-norm forward with the input's statistics, and what its backward needs."""

    __slots__ = ("layout", "x4", "G", "mean", "m2", "invstd", "y")

    def __init__(self, x: Array, G: int, weight: OptArray, bias: OptArray, eps: float,
                 block: Optional[Block] = None, out: OptArray = None) -> None:
        self.layout = layout = ChannelLayout(x, per_sample=True)
        self.x4 = x4 = layout.view(x)
        self.G = G
        self.keep_params(weight, bias, block)
        self.mean, self.m2, self.invstd = np.empty((3, x.shape[0], G))
        y4, self.y = layout.empty(out, (x, None if block is None else block.r))
        epilogue = (None, 0, 0.0) if block is None else block.kernel_args(layout, y4)
        kernel = _backend.kernel("group_forward", x.dtype)
        least = kernel(x4, G, self.weight, contiguous(bias), float(eps), y4, self.mean,
                       self.m2, self.invstd, *epilogue, _backend.threads())
        if least < WIDE_INVSTD and block is None:
            self.widen(lambda x64: GroupNormContext(x64, G, as_f64(weight), as_f64(bias),
                                                    eps), x)

    def update_running(self, running_mean: OptArray, running_var: OptArray,
                       factor: float) -> None:
        """Instance norm's running statistics (G = C), as torch keeps them: toward the batch
        mean of the per-instance mean and unbiased variance."""
        S = prod(self.layout.shape[2:])
        if self.layout.shape[0] > 0 and S > 0:
            update_running(running_mean, running_var, self.mean.mean(axis=0),
                           (self.m2 / (S - 1)).mean(axis=0), 1.0, factor)

    def _backward(self, dy: Array, out: OptArray = None) -> Tuple[Array, Array, Array]:
        dx4, dx = self.layout.empty(out, (self.x4, dy))
        N, C = self.layout.shape[:2]
        epilogue = (None, None, None, 0, 0.0, None)  # a fused block: act and residual
        if self.block is not None:
            epilogue, _ = self.block.kernel_grad_args(self.layout, self.shift)
        dy4 = self.layout.view(dy)
        sdy, sdyx = np.empty((2, N, C))
        kernel = _backend.kernel("group_backward", self.layout.dtype)
        kernel(self.x4, dy4, self.G, self.mean, self.invstd, self.weight, dx4, sdy, sdyx,
               *epilogue, _backend.threads())
        if dx.size == 0:  # empty samples or groups: no gradient (torch's 0, not NaN * 0)
            return dx, np.zeros(C), np.zeros(C)
        gw = (np.repeat(self.invstd, C // self.G, axis=1) * sdyx).sum(axis=0)
        return dx, gw, sdy.sum(axis=0)


def instance_norm_context(x: Array, running_mean: OptArray, running_var: OptArray,
                          weight: OptArray, bias: OptArray, use_input_stats: bool,
                          momentum: float, eps: float, out: OptArray = None) -> Context:
    """Instance norm's forward on checked arguments: the input's statistics (given running
    arrays move toward them, in place) or the running ones (batch norm's eval)."""
    if not use_input_stats:
        return BatchNormContext(x, running_mean, running_var, weight, bias, eps, False, out=out)
    ctx = GroupNormContext(x, x.shape[1], weight, bias, eps, out=out)
    ctx.update_running(running_mean, running_var, float(momentum))
    return ctx


class GroupCallContext(GroupNormContext):
    """The context of a forward run by the entry checked in C (``group_call``,
    src/nn/calls.pxi): the statistics it returned; its views of x are made when a backward
    first asks (a fused block's context keeps its block and output, as CallContext)."""

    __slots__ = ("x",)

    def __init__(self, x: Array, stats: Array, G: int, weight: OptArray, bias: OptArray,
                 block: Optional[Block] = None, y: OptArray = None) -> None:
        self.x, self.G, self.y = x, G, y
        self.mean, self.m2, self.invstd = stats
        self.keep_params(weight, bias, block)

    def __getattr__(self, name: str) -> Any:  # only for slots not set yet
        if name in ("layout", "x4"):
            self.layout = layout = ChannelLayout(self.x, per_sample=True)
            self.x4 = layout.view(self.x)
            if self.block is not None:
                self.block.kernel_args(layout, layout.view(self.y))
            return getattr(self, name)
        raise AttributeError(name)


def group_call(x: Any, dtype: Any, C: Any, G: Any, weight: OptArray, bias: OptArray, eps: Any,
               instance: bool = False,
               epi: Optional[Tuple[Any, Optional[str], float]] = None, context: bool = True,
               holder: Any = None) -> Optional[Tuple[Array, Optional[GroupCallContext]]]:
    """A group-norm forward by the entry checked in C (``instance``: instance norm's, G = C,
    whose statistics need two spatial values; ``epi``: a fused block's residual, activation
    name and slope): ``(y, context)``, or None, having changed nothing, where the entry does
    not take the call (the checked path then runs, with its errors). ``dtype``, ``C``: the
    layer's, or None: x's. ``holder``: the layer, whose memory takes a large output
    (recycle.entry_out)."""
    if type(x) is not np.ndarray or x.ndim < 2 or type(eps) is not float or not eps > 0.0:
        return None
    C = x.shape[1] if C is None else C
    G = C if instance else G
    if type(G) is not int:
        return None
    residual, act, slope = (None, None, 0.0) if epi is None else epi
    out, limit = recycle.entry_out(holder, x)
    got = _backend.kernels.group_call(x, (x.dtype if dtype is None else dtype).num, G, C,
                                      weight, bias, eps, 2 if instance else 1, residual,
                                      act_code(act), slope, WIDE_INVSTD, out, limit,
                                      _backend.threads())
    if got is None or not context:  # a functional form's call: no context to make
        return None if got is None else (got[0], None)
    block = None if epi is None else Block(x, residual, act, slope)
    return got[0], GroupCallContext(x, got[1], G, weight, bias, block,
                                    None if block is None else got[0])
