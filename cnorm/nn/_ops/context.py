"""What every op family's forward context shares: the backward's checks and the finish of
the parameter gradients, and the running-statistics update."""
from typing import Any, Callable, Optional, Tuple

import numpy as np

from ..._core import backend as _backend
from ..._core.checks import as_float_array
from ..._core.dtypes import param_dtype
from ..._core.layout import check_out
from ..._core.types import Array, ArrayLike, OptArray
from .act import Block

# float32 data whose spread nears float32's range: x - mean can overflow (|x - mean| reaches
# sqrt(M2)) and 1/std falls among float32's subnormals, so the float32 apply gives inf or loses
# digits. Any group whose 1/std is below this (a variance above 1e64) sends the op to a float64
# copy of the input, its results rounded once to float32 (torch gives 0 or NaN there).
WIDE_INVSTD = 1e-32


class Context:
    """A forward pass (``y``) and what its backward needs. A subclass sets ``layout`` (the
    input's shape and dtype), calls :meth:`keep_params`, and implements ``_backward(dy, out)
    -> (dx, grad_weight, grad_bias)`` with float64 gradients (dx into ``out`` when given).
    ``wide``: the float64 twin that computed a too-wide float32 op (see :meth:`widen`), or
    unset."""

    __slots__ = ("wide", "weight", "has_bias", "block", "shift")
    layout: Any  # a ChannelLayout or RowLayout, set by the subclass
    y: Any       # the output (None: statistics only)
    wide: "Context"
    weight: OptArray
    has_bias: bool
    block: Optional[Block]
    shift: OptArray

    def keep_params(self, weight: OptArray, bias: OptArray, block: Optional[Block] = None) -> None:
        """What the backward needs of the parameters: the weight as it was at forward time (a
        copy: an optimizer step may change it before backward), whether there is a bias, and a
        fused block's activation and residual (nn/_ops/act.py), whose epilogue adds the bias
        in float64 (``shift``)."""
        self.weight = None if weight is None else weight.flatten()  # a 1-D copy
        self.has_bias = bias is not None
        self.block = block
        self.shift = None if bias is None or block is None else bias.astype(np.float64)

    def widen(self, make: Callable[[Array], "Context"], x: Array) -> None:
        """Called when the least positive invstd of a forward (as its kernel returns it) is
        below WIDE_INVSTD: for float32 data, run ``make(x64)`` (this op's context on a float64
        copy of x), round its output into ``self.y``, take its statistics and keep it for
        backward (other dtypes: nothing to do)."""
        if x.dtype.type is not np.float32:
            return
        self.wide = wide = make(x.astype(np.float64))
        np.copyto(self.y, wide.y, casting="unsafe")
        for name in ("mean", "m2", "invstd"):  # the twin's statistics (the running update's)
            if hasattr(wide, name):
                setattr(self, name, getattr(wide, name))

    def check_grad(self, grad_output: ArrayLike) -> Array:
        """``grad_output`` as an array of the forward input's dtype and shape (TypeError or
        ValueError otherwise)."""
        dy = as_float_array(grad_output, self.layout.dtype, what="grad_output")
        if dy.shape != self.layout.shape:
            raise ValueError(f"grad_output has shape {dy.shape}, expected the forward input's "
                             f"shape {self.layout.shape}")
        return dy

    def _backward(self, dy: Array, out: OptArray = None) -> Tuple[Array, Array, Array]:
        raise NotImplementedError  # each family's kernels

    def backward(self, grad_output: ArrayLike,
                 out: OptArray = None) -> Tuple[Array, OptArray, OptArray]:
        """Returns ``(dx, grad_weight, grad_bias)``: the parameter gradients in the input's
        parameter dtype (float32 for half data), None where the parameter does not exist.
        ``out``: a preallocated dx (see cnorm._core.layout.check_out)."""
        layout = self.layout
        dy = self.check_grad(grad_output)
        wide = getattr(self, "wide", None)
        if wide is None:
            dx, gw, gb = self._backward(dy, out)
        else:  # the float64 twin's gradients, dx rounded once to float32
            dx64, gw, gb = wide._backward(dy.astype(np.float64))
            dx = np.empty_like(dx64, dtype=layout.dtype) if out is None else check_out(
                out, layout.shape, layout.dtype, layout.channels_last, (dy,))
            np.copyto(dx, dx64, casting="unsafe")
        pdt = param_dtype(layout.dtype)
        return (dx, None if self.weight is None else gw.astype(pdt),
                gb.astype(pdt) if self.has_bias else None)


def as_f64(v: OptArray) -> OptArray:
    """A parameter as float64 (None stays None): the float64 twin's parameters (widen)."""
    return None if v is None else v.astype(np.float64)


def running_factor(momentum: Optional[float], counter: Any) -> float:
    """The running statistics' update factor, by torch's rule: ``momentum``, or when it is
    None a cumulative average, 1 / (the batches counted including this one); 0.0 without a
    ``counter`` (a layer's num_batches_tracked, an array or a tensor)."""
    if momentum is not None:
        return float(momentum)
    return 0.0 if counter is None else 1.0 / (int(counter) + 1)


def update_running(running_mean: OptArray, running_var: OptArray, mean: Array, m2: Array,
                   divisor: float, factor: float, counter: OptArray = None) -> None:
    """In place, in float64 then rounded: ``running = (1 - factor) * running + factor * batch``
    with the unbiased batch variance ``m2 / divisor``. Either array may be None. ``counter``: a
    layer's ``num_batches_tracked`` (a 0-d int64 array), incremented by the same kernel call."""
    run = running_mean if running_mean is not None else running_var
    if run is not None or counter is not None:
        float32 = run is not None and run.dtype.type is np.float32
        kernel = _backend.kernels.update_running["float" if float32 else "double"]
        kernel(running_mean, running_var, mean, m2, divisor, factor,
               None if counter is None else counter.reshape(1))


def write_back(*pairs: Tuple[Any, OptArray]) -> None:
    """For each (given, used) running array: when the checks converted the caller's array (a
    byte-swapped one into a native copy), the update went into the copy; write it back."""
    for given, used in pairs:
        if used is not None and used is not given:
            given[...] = used
