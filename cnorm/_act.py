"""The fused blocks' epilogue: ``y = act(norm(x) + residual)``, computed by the norm kernels'
apply step while each run is in cache, and its gradient ``g = dy * act'(pre)`` before the
norm's own backward (which takes g as its output gradient)."""
import numpy as np

from . import _backend
from ._validate import as_float_array

# codes of the kernels (src/_config.pxi)
ACTS = {None: 0, "relu": 1, "leaky_relu": 2, "silu": 3, "gelu": 4}


def act_code(act):
    """The kernel code of an activation name; ValueError naming the choices otherwise."""
    if act not in ACTS:
        raise ValueError(f"act must be one of {list(ACTS)}, got {act!r}")
    return ACTS[act]


def as4(a):
    """A kernel view as (N, outer, C, inner): batch norm's (outer, C, inner) is one sample."""
    return a if a.ndim == 4 else a[None]


class Block:
    """The epilogue of one forward: the activation, its slope, the residual (checked and in
    the kernels' layout) and, after the backward, ``grad_residual``."""

    __slots__ = ("code", "slope", "r", "y", "grad_residual")

    def __init__(self, x, residual, act, slope):
        self.code, self.slope = act_code(act), float(slope)
        self.r = self.y = self.grad_residual = None
        if residual is not None:
            residual = as_float_array(residual, x.dtype, what="residual")
            if residual.shape != x.shape:
                raise ValueError(f"residual has shape {residual.shape}, expected the input's "
                                 f"shape {x.shape}")
        self.r = residual

    def kernel_args(self, layout, y_view):
        """(residual view, act, slope) for the forward kernel; keeps the output view (relu's
        backward reads its mask from it)."""
        self.y = y_view
        return (None if self.r is None else layout.view(self.r)), self.code, self.slope

    def grad(self, layout, x_view, dy, mean, scale, shift):
        """g = dy * act'(pre) in dy's user layout; sets grad_residual (g itself: the norm's
        backward only reads it) when the forward had a residual. mean, scale, shift: (N, C)
        float64 coefficients of the norm."""
        g_view, g = layout.empty()
        _backend.kernels.act_grad(
            as4(layout.view(dy)), None if self.y is None else as4(self.y), as4(x_view),
            None if self.r is None else as4(layout.view(self.r)),
            np.ascontiguousarray(mean), np.ascontiguousarray(scale),
            np.ascontiguousarray(shift), self.code, self.slope, as4(g_view), _backend.threads())
        if self.r is not None:
            self.grad_residual = g
        return g


def no_block(x):
    """The plain norm: no activation, no residual."""
    return Block(x, None, None, 0.0)
