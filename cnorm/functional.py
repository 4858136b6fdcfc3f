"""Stateless (functional) forms: ``batch_norm``, ``batch_norm_backward`` and ``moments``.

The layer classes in :mod:`cnorm.modules` are built on the private helpers here, so a layer
and its functional form always run the same code.
"""
from math import prod

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from ._backend import kernels as _kernels
from ._layout import ChannelLayout, as_float_array, check_channel_vector, contiguous

__all__ = ["batch_norm", "batch_norm_backward", "moments"]


class _Saved:
    """A batch-norm forward pass (``saved.y``) and what its backward needs.

    Training (``batch_stats``) runs the fused statistics + normalize kernel; otherwise the
    given running statistics normalize in one pass. Per-channel statistics are float64.
    """

    __slots__ = ("layout", "x3", "count", "mean", "m2", "invstd", "weight", "has_bias",
                 "batch_stats", "y")

    def __init__(self, x, running_mean, running_var, weight, bias, eps, batch_stats,
                 compute_y=True):
        self.layout = layout = ChannelLayout(x)
        self.x3 = x3 = layout.view(x)
        self.batch_stats = batch_stats
        self.weight = None if weight is None else weight.copy()  # as it was at forward time
        self.has_bias = bias is not None
        bias = contiguous(bias)
        C = x3.shape[1]
        self.count = float(x3.shape[0] * x3.shape[2])
        self.mean, self.m2, self.invstd = stats = np.empty((3, C))
        y3, self.y = layout.empty() if compute_y else (None, None)
        if not compute_y:  # backward only (functional form): statistics, no output
            if batch_stats:
                self.count, self.mean, self.m2 = _kernels.channel_stats(x3)
                var = self.m2 / self.count
            else:
                self.mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                self.invstd = 1.0 / np.sqrt(var + eps)
        elif batch_stats:
            _kernels.bn_forward_train(x3, self.weight, bias, eps, y3, stats[0], stats[1],
                                      stats[2])
        else:
            _kernels.bn_forward_eval(x3, contiguous(running_mean), contiguous(running_var),
                                     self.weight, bias, eps, y3, stats[0], stats[2])
            self.m2 = None  # running statistics: no batch M2

    def backward(self, grad_output):
        """Returns ``(dx, grad_weight, grad_bias)``; the grads are float64 or None."""
        dy = as_float_array(grad_output, self.layout.dtype, what="grad_output")
        if dy.shape != self.layout.shape:
            raise ValueError(f"grad_output has shape {dy.shape}, expected the forward input's "
                             f"shape {self.layout.shape}")
        dy3 = self.layout.view(dy)
        sdy, sdyx = np.empty((2, self.mean.shape[0]))
        dx3, dx = self.layout.empty()
        _kernels.bn_backward(self.x3, dy3, self.mean, self.invstd, self.weight,
                             self.batch_stats, self.weight is not None or self.has_bias,
                             dx3, sdy, sdyx)
        grad_weight = None if self.weight is None else self.invstd * sdyx
        grad_bias = sdy if self.has_bias else None
        return dx, grad_weight, grad_bias


def _update_running(running_mean, running_var, saved, factor):
    """running = (1 - factor) * running + factor * batch (unbiased variance), in place."""
    if saved.count <= 0 or (running_mean is None and running_var is None):
        return  # an empty batch leaves the running statistics alone, as torch does
    dtype = (running_mean if running_mean is not None else running_var).dtype
    _kernels.update_running[_CTYPES[dtype.type]](running_mean, running_var, saved.mean,
                                                 saved.m2, saved.count, factor)


_CTYPES = {np.float32: "float", np.float64: "double"}


def _check_bn_args(x, running_mean, running_var, weight, bias, training, update):
    """The functional forms' checks; returns the validated arrays. ``update``: the running
    arrays will be written in place."""
    x = as_float_array(x)
    if x.ndim < 2:
        raise ValueError(f"expected 2D or higher input (N, C, ...) (got {x.ndim}D input)")
    C, dt = x.shape[1], x.dtype
    running_mean = check_channel_vector(running_mean, C, dt, "running_mean", writeable=update)
    running_var = check_channel_vector(running_var, C, dt, "running_var", writeable=update)
    weight = check_channel_vector(weight, C, dt, "weight")
    bias = check_channel_vector(bias, C, dt, "bias")
    if training:
        _check_batch_size(x)
    elif running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required when training=False")
    return x, running_mean, running_var, weight, bias


def _check_batch_size(x):
    """torch's rule: batch statistics need more than one value per channel."""
    if x.size == x.shape[1]:
        raise ValueError("Expected more than 1 value per channel when training, "
                         f"got input size {x.shape}")


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalization with ``torch.nn.functional.batch_norm`` semantics.

    Parameters
    ----------
    x : ndarray, float32 or float64, shape (N, C, ...)
        Any memory layout; the output has the layout of ``x`` (C order or channels-last).
    running_mean, running_var : ndarray (C,) of x's dtype, or None
        Used for normalizing when ``training`` is False (then both are required). When
        ``training`` is True they are updated in place:
        ``running = (1 - momentum) * running + momentum * batch_stat`` (unbiased variance).
    weight, bias : ndarray (C,) of x's dtype, or None
        The affine transform ``y = x_hat * weight + bias``.
    training : bool
        Normalize with the batch statistics (biased variance) instead of the running ones.
    momentum, eps : float

    Returns
    -------
    y : ndarray shaped like ``x``.

    Raises ``TypeError`` for a non-float input or mismatched dtypes and ``ValueError`` for bad
    shapes; nothing is modified when an error is raised.
    """
    x, running_mean, running_var, weight, bias = _check_bn_args(
        x, running_mean, running_var, weight, bias, training, update=training)
    saved = _Saved(x, running_mean, running_var, weight, bias, eps, batch_stats=training)
    if training:
        _update_running(running_mean, running_var, saved, float(momentum))
    return saved.y


def batch_norm_backward(grad_output, x, running_mean, running_var, weight=None, bias=None,
                        training=False, eps=1e-5):
    """Gradients of :func:`batch_norm` with respect to ``x``, ``weight`` and ``bias``.

    Takes the forward's arguments (without ``momentum``) and the gradient of the loss with
    respect to its output. With ``training=True`` the batch statistics are recomputed from
    ``x`` and differentiated through, as torch autograd does; otherwise the running statistics
    are constants. Nothing is updated.

    Returns ``(dx, grad_weight, grad_bias)``: ``dx`` shaped like ``x`` in its memory layout,
    the parameter gradients of x's dtype, or None where ``weight`` / ``bias`` is None.
    """
    x, running_mean, running_var, weight, bias = _check_bn_args(
        x, running_mean, running_var, weight, bias, training, update=False)
    saved = _Saved(x, running_mean, running_var, weight, bias, eps, batch_stats=training,
                   compute_y=False)
    dx, gw, gb = saved.backward(grad_output)
    return dx, _cast(gw, x.dtype), _cast(gb, x.dtype)


def _cast(v, dtype):
    return None if v is None else v.astype(dtype)


def moments(x, axis):
    """Mean and biased variance of ``x`` over ``axis`` (an int, a tuple of ints, or None).

    Returns ``(mean, var)`` of x's dtype (float32 or float64), shaped like ``x`` without the
    reduced axes. Accumulated in float64 around a shift, in fixed-order chunks: accurate for
    data with a large offset and bit-identical for any thread count. An empty reduction gives
    NaN.
    """
    x = as_float_array(x)
    red = normalize_axis_tuple(tuple(range(x.ndim)) if axis is None else axis, x.ndim)
    kept = [a for a in range(x.ndim) if a not in red]
    red = sorted(red)
    K = prod(x.shape[a] for a in kept)
    R = prod(x.shape[a] for a in red)
    first, last = (kept[0], kept[-1] + 1) if kept else (0, 0)
    if x.flags.c_contiguous and last - first == len(kept):  # kept axes adjacent: a free view
        x3 = x.reshape(prod(x.shape[:first]), K, prod(x.shape[last:]))
    elif x.transpose(red + kept).flags.c_contiguous:       # e.g. channels-last statistics
        x3 = x.transpose(red + kept).reshape(R, K, 1)
    else:
        x3 = np.ascontiguousarray(x.transpose(kept + red)).reshape(1, K, R)
    n, mean, m2 = _kernels.channel_stats(x3)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = m2 / n
    shape = tuple(x.shape[a] for a in kept)
    return mean.astype(x.dtype).reshape(shape), var.astype(x.dtype).reshape(shape)
