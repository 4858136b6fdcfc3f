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
from ._docs import (
    BLOCK_PARAMETERS,
    GRAD_RESIDUAL,
    LAYER_RAISES,
    NORM_ATTRIBUTES,
    norm_parameters,
    sections,
)
from ._ops.act import Block, act_code
from ._ops.batch_norm import batch_norm_call
from .base import _Module
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormBase, GroupNorm


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
        y = self._entry(x, (residual, self.act, self.negative_slope))  # a small call, in C
        if y is not None:
            return y
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


# the BatchNormAct layers' shared docstring sections
_block_doc = sections(norm_parameters(affine=True, track=True) + BLOCK_PARAMETERS,
                      NORM_ATTRIBUTES + GRAD_RESIDUAL, LAYER_RAISES)


@_block_doc
class BatchNormAct1d(_BatchNormAct, BatchNorm1d):
    """BatchNorm1d, then + residual, then the activation, in one pass: (N, C) or (N, C, L).
    ``forward(x, residual=None)``.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> block = cnorm.BatchNormAct1d(3, act="relu")
    >>> y = block(np.random.default_rng(0).standard_normal((16, 3), np.float32))
    >>> bool((y >= 0).all())
    True
    """


@_block_doc
class BatchNormAct2d(_BatchNormAct, BatchNorm2d):
    """BatchNorm2d, then + residual, then the activation, in one pass: (N, C, H, W), as timm's
    BatchNormAct2d. ``forward(x, residual=None)``; ``backward`` also sets ``grad_residual``.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> rng = np.random.default_rng(0)
    >>> x, r = rng.standard_normal((2, 4, 3, 5, 5), np.float32)
    >>> block = cnorm.BatchNormAct2d(3, act="silu")
    >>> y = block(x, residual=r)                       # silu(bn(x) + r), one pass
    >>> dx = block.backward(np.ones_like(y))
    >>> block.grad_residual.shape
    (4, 3, 5, 5)
    """


@_block_doc
class BatchNormAct3d(_BatchNormAct, BatchNorm3d):
    """BatchNorm3d, then + residual, then the activation, in one pass: (N, C, D, H, W).

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> block = cnorm.BatchNormAct3d(2, act="leaky_relu", negative_slope=0.1)
    >>> block.act, block.negative_slope, block(np.ones((2, 2, 2, 2, 2), np.float32)).shape
    ('leaky_relu', 0.1, (2, 2, 2, 2, 2))
    """


class GroupNormAct(_Fused, GroupNorm):
    """GroupNorm, then + residual, then the activation, in one pass: (N, C, ...).
    ``forward(x, residual=None)``; ``backward`` also sets ``grad_residual``.

    Parameters
    ----------
    num_groups, num_channels, eps, affine, dtype, bias
        As :class:`cnorm.GroupNorm`'s, ``num_groups`` first (timm's GroupNormAct takes
        ``num_channels`` first).
    act : {"relu", "leaky_relu", "silu", "gelu"} or None, default "relu"
        The activation.
    negative_slope : float, default 0.01
        leaky_relu's slope.

    Attributes
    ----------
    weight, bias, grad_weight, grad_bias
        As :class:`cnorm.GroupNorm`'s.
    grad_residual : ndarray or None
        Set by ``backward`` when the forward had a residual.

    Raises
    ------
    ValueError
        An unknown ``act``, or GroupNorm's errors.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.random.default_rng(0).standard_normal((2, 8, 4, 4), np.float32)
    >>> y = cnorm.GroupNormAct(4, 8, act="gelu")(x, residual=x)
    >>> y.shape
    (2, 8, 4, 4)
    """

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
    """``act(batch_norm(x, ...) + residual)`` in one pass.

    Parameters
    ----------
    x, running_mean, running_var, weight, bias, training, momentum, eps, out
        As :func:`cnorm.batch_norm`'s (the running arrays move in place when training).
    residual : ndarray or None
        Added after the normalization, before the activation: x's shape and dtype.
    act : {"relu", "leaky_relu", "silu", "gelu"} or None, default "relu"
        The activation.
    negative_slope : float, default 0.01
        leaky_relu's slope.

    Returns
    -------
    ndarray
        ``y``, shaped like ``x`` in its memory layout (``out`` when given).

    Raises
    ------
    TypeError, ValueError
        As :func:`cnorm.batch_norm`, and for an unknown ``act`` or a residual of another
        shape or dtype.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.random.default_rng(0).standard_normal((8, 3), np.float32)
    >>> y = cnorm.batch_norm_act(x, None, None, training=True, act="relu")
    >>> bool((y >= 0).all()), bool((y == 0).any())
    (True, True)
    """
    block = Block(np.asarray(x) if not isinstance(x, np.ndarray) else x, residual, act,
                  negative_slope)
    return batch_norm_call(x, running_mean, running_var, weight, bias, training, momentum, eps,
                           out, block)
