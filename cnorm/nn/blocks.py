"""Fused training blocks: ``act(norm(x) + residual)`` as one layer, as timm's BatchNormAct2d
and GroupNormAct, computed by the norm kernels with the activation and the residual in their
apply step (no extra pass forward), and ``batch_norm_act``, the functional form.

Activations: "relu", "leaky_relu" (``negative_slope``), "silu", "gelu" (the exact erf form) or
None. The results follow torch's BatchNorm2d -> add -> activation sequence under autograd:
the running statistics, ``grad_weight``/``grad_bias`` and ``grad_residual`` included.
"""
import functools
from typing import Optional

import numpy as np

from .._core.types import Array, ArrayLike, DTypeLike, OptArray
from ._ops.act import Block, act_code
from ._ops.batch_norm import batch_norm_call
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormBase, GroupNorm, _Module


class _Fused(_Module):
    """What a fused block adds to its norm: the activation, ``forward(x, residual)`` and
    ``grad_residual``."""

    def _init_act(self, act: Optional[str], negative_slope: float) -> None:
        act_code(act)  # ValueError for an unknown activation
        self.act = act
        self.negative_slope = float(negative_slope)
        self.grad_residual: OptArray = None

    def forward(self, x: ArrayLike, residual: Optional[ArrayLike] = None) -> Array:
        """``act(norm(x) + residual)``: ``residual`` (optional) shaped like x, of its dtype
        (copied into x's memory layout when it has another). Returns a new array in x's
        layout. The output is kept for relu's backward: do not modify it in place before."""
        return self._run(x, functools.partial(self._block, residual))

    def __call__(self, x: ArrayLike, residual: Optional[ArrayLike] = None) -> Array:
        return self.forward(x, residual)

    def _block(self, residual: Optional[ArrayLike], x: Array) -> Block:
        return Block(x, residual, self.act, self.negative_slope)

    def backward(self, grad_output: ArrayLike) -> Array:
        """dx; also sets ``grad_weight``, ``grad_bias`` and ``grad_residual`` (None when the
        forward had no residual)."""
        dx = super().backward(grad_output)
        block = None if self._saved is None else self._saved.block
        self.grad_residual = None if block is None else block.grad_residual
        return dx

    def _act_repr(self) -> str:
        slope = f", negative_slope={self.negative_slope}" if self.act == "leaky_relu" else ""
        return f", act={self.act!r}{slope}"


class _BatchNormAct(_Fused, BatchNormBase):
    """The constructor of the BatchNormAct layers, each a subclass of its BatchNorm (as timm's
    BatchNormAct2d is of BatchNorm2d): the ranks and everything else come from there."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: DTypeLike = np.float32, *, bias: bool = True,
                 act: Optional[str] = "relu", negative_slope: float = 0.01) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype,
                         bias=bias)
        self._init_act(act, negative_slope)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._act_repr()


class BatchNormAct1d(_BatchNormAct, BatchNorm1d):
    """BatchNorm1d, then + residual, then the activation, in one pass: (N, C) or (N, C, L)."""


class BatchNormAct2d(_BatchNormAct, BatchNorm2d):
    """BatchNorm2d, then + residual, then the activation, in one pass: (N, C, H, W)."""


class BatchNormAct3d(_BatchNormAct, BatchNorm3d):
    """BatchNorm3d, then + residual, then the activation, in one pass: (N, C, D, H, W)."""


class GroupNormAct(_Fused, GroupNorm):
    """GroupNorm, then + residual, then the activation, in one pass: (N, C, ...). The
    arguments are torch's GroupNorm's, ``num_groups`` first (timm's GroupNormAct takes
    ``num_channels`` first)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 dtype: DTypeLike = np.float32, *, bias: bool = True,
                 act: Optional[str] = "relu", negative_slope: float = 0.01) -> None:
        super().__init__(num_groups, num_channels, eps, affine, dtype, bias=bias)
        self._init_act(act, negative_slope)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._act_repr()


def batch_norm_act(x: ArrayLike, running_mean: OptArray, running_var: OptArray,
                   weight: OptArray = None, bias: OptArray = None, training: bool = False,
                   momentum: float = 0.1, eps: float = 1e-5, *,
                   residual: Optional[ArrayLike] = None, act: Optional[str] = "relu",
                   negative_slope: float = 0.01, out: OptArray = None) -> Array:
    """``act(batch_norm(x, ...) + residual)`` in one pass: :func:`cnorm.batch_norm`'s
    arguments and semantics (the running arrays move in place when training, ``out`` a
    preallocated output), plus the optional ``residual`` (shaped like x) and the activation
    (see the module). Returns y."""
    block = Block(np.asarray(x) if not isinstance(x, np.ndarray) else x, residual, act,
                  negative_slope)
    return batch_norm_call(x, running_mean, running_var, weight, bias, training, momentum, eps,
                           out, block)
