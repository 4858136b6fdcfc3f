"""The fused blocks' epilogue: ``y = act(norm(x) + residual)``, computed by the norm kernels'
apply step while each run is in cache, and its gradient ``g = dy * act'(pre)``, made by the
norm's backward kernels group by group before they differentiate through g."""
from typing import Any, Optional, Tuple, Union

from ..._core.checks import as_float_array
from ..._core.layout import ChannelLayout, RowLayout
from ..._core.types import Array, OptArray

# codes of the kernels (src/common/_config.pxi)
ACTS = {None: 0, "relu": 1, "leaky_relu": 2, "silu": 3, "gelu": 4}


def act_code(act: Optional[str]) -> int:
    """The kernel code of an activation name; ValueError naming the choices otherwise."""
    if act not in ACTS:
        raise ValueError(f"act must be one of {list(ACTS)}, got {act!r}")
    return ACTS[act]


class Block:
    """The epilogue of one forward: the activation, its slope, the residual (checked and in
    the kernels' layout) and, after the backward, ``grad_residual``."""

    __slots__ = ("code", "slope", "r", "y", "grad_residual")

    def __init__(self, x: Array, residual: Any, act: Optional[str], slope: float) -> None:
        self.code, self.slope = act_code(act), float(slope)
        self.y: OptArray = None
        self.grad_residual: OptArray = None
        if residual is not None:
            residual = as_float_array(residual, x.dtype, what="residual")
            if residual.shape != x.shape:
                raise ValueError(f"residual has shape {residual.shape}, expected the input's "
                                 f"shape {x.shape}")
        self.r: OptArray = residual

    def kernel_args(self, layout: Union[ChannelLayout, RowLayout],
                    y_view: OptArray) -> Tuple[OptArray, int, float]:
        """(residual view, act, slope) for the forward kernel; keeps the output view (relu's
        backward reads its mask from it)."""
        self.y = y_view
        return (None if self.r is None else layout.view(self.r)), self.code, self.slope

    def kernel_grad_args(self, layout: ChannelLayout,
                         shift: OptArray) -> Tuple[Tuple[Any, ...], Array]:
        """The backward kernels' epilogue arguments (y, residual, shift, act, slope, g) and
        the user-facing g: the norm's backward writes g = dy * act'(pre) there and
        differentiates through it; g is also the residual's gradient."""
        g_view, g = layout.empty()
        if self.r is not None:
            self.grad_residual = g
        r = None if self.r is None else layout.view(self.r)
        return (self.y, r, shift, self.code, self.slope, g_view), g


def no_block(x: Array) -> Block:
    """The plain norm: no activation, no residual."""
    return Block(x, None, None, 0.0)
