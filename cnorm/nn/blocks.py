"""Fused training blocks: ``act(norm(x) + residual)`` as one layer, as timm's BatchNormAct2d
and GroupNormAct, computed by the norm kernels with the activation and the residual in their
apply step (no extra pass forward), and ``batch_norm_act``, the functional form.

Activations: "relu", "leaky_relu" (``negative_slope``), "silu", "gelu" (the exact erf form) or
None. The results follow torch's BatchNorm2d -> add -> activation sequence under autograd:
the running statistics, ``grad_weight``/``grad_bias`` and ``grad_residual`` included.
"""
import functools

import numpy as np

from ._ops.act import Block, act_code
from ._ops.batch_norm import BatchNormContext, check_batch_norm
from ._ops.context import write_back
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm


class _Fused:
    """What a fused block adds to its norm: the activation, ``forward(x, residual)`` and
    ``grad_residual``."""

    def _init_act(self, act, negative_slope):
        act_code(act)  # ValueError for an unknown activation
        self.act = act
        self.negative_slope = float(negative_slope)
        self.grad_residual = None

    def forward(self, x, residual=None):
        """``act(norm(x) + residual)``: ``residual`` (optional) shaped like x, of its dtype
        (copied into x's memory layout when it has another). Returns a new array in x's
        layout. The output is kept for relu's backward: do not modify it in place before."""
        return self._run(x, functools.partial(self._block, residual))

    def __call__(self, x, residual=None):
        return self.forward(x, residual)

    def _block(self, residual, x):
        return Block(x, residual, self.act, self.negative_slope)

    def backward(self, grad_output):
        """dx; also sets ``grad_weight``, ``grad_bias`` and ``grad_residual`` (None when the
        forward had no residual)."""
        dx = super().backward(grad_output)
        self.grad_residual = self._saved.block.grad_residual
        return dx

    def _act_repr(self):
        slope = f", negative_slope={self.negative_slope}" if self.act == "leaky_relu" else ""
        return f", act={self.act!r}{slope}"


class _BatchNormAct(_Fused):
    """The constructor of the BatchNormAct layers, each a subclass of its BatchNorm (as timm's
    BatchNormAct2d is of BatchNorm2d): the ranks and everything else come from there."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, *, bias=True, act="relu",
                 negative_slope=0.01):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype,
                         bias=bias)
        self._init_act(act, negative_slope)

    def extra_repr(self):
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

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=np.float32, *,
                 bias=True, act="relu", negative_slope=0.01):
        super().__init__(num_groups, num_channels, eps, affine, dtype, bias=bias)
        self._init_act(act, negative_slope)

    def extra_repr(self):
        return super().extra_repr() + self._act_repr()


def batch_norm_act(x, running_mean, running_var, weight=None, bias=None, training=False,
                   momentum=0.1, eps=1e-5, *, residual=None, act="relu", negative_slope=0.01,
                   out=None):
    """``act(batch_norm(x, ...) + residual)`` in one pass: :func:`cnorm.batch_norm`'s
    arguments and semantics (the running arrays move in place when training, ``out`` a
    preallocated output), plus the optional ``residual`` (shaped like x) and the activation
    (see the module). Returns y."""
    block = Block(np.asarray(x) if not isinstance(x, np.ndarray) else x, residual, act,
                  negative_slope)
    x, rm, rv, weight, bias = check_batch_norm(
        x, running_mean, running_var, weight, bias, training, update=training, eps=eps)
    ctx = BatchNormContext(x, rm, rv, weight, bias, eps, training, block=block, out=out)
    if training:
        ctx.update_running(rm, rv, float(momentum))
        if rm is not running_mean or rv is not running_var:  # converted by the checks
            write_back((running_mean, rm), (running_var, rv))
    return ctx.y
