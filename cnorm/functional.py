"""Stateless (functional) forms: ``batch_norm``, ``layer_norm``, ``group_norm``,
``instance_norm``, ``rms_norm``, their ``*_backward`` counterparts, and ``moments``.

The layer classes in :mod:`cnorm.modules` are built on the private helpers here (the argument
checks and the ``_*Saved`` forward passes), so a layer and its functional form always run the
same code. Every ``_*Saved`` object holds a forward's output ``y`` and has
``backward(grad_output) -> (dx, grad_weight, grad_bias)`` with float64 parameter gradients
(None where the parameter does not exist).
"""
import numbers
from math import prod

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from ._backend import kernels as _kernels
from ._layout import (
    ChannelLayout,
    RowLayout,
    as_float_array,
    check_channel_vector,
    contiguous,
)

__all__ = ["batch_norm", "batch_norm_backward", "layer_norm", "layer_norm_backward",
           "group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward",
           "rms_norm", "rms_norm_backward", "moments"]


def _grad_array(grad_output, layout):
    """grad_output checked against the forward's input: same dtype and shape."""
    dy = as_float_array(grad_output, layout.dtype, what="grad_output")
    if dy.shape != layout.shape:
        raise ValueError(f"grad_output has shape {dy.shape}, expected the forward input's "
                         f"shape {layout.shape}")
    return dy


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
        dy3 = self.layout.view(_grad_array(grad_output, self.layout))
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
    running_mean, running_var, weight, bias = _check_channel_arrays(
        x, running_mean, running_var, weight, bias, update)
    if training:
        _check_batch_size(x)
    elif running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required when training=False")
    return x, running_mean, running_var, weight, bias


def _check_channel_arrays(x, running_mean, running_var, weight, bias, update):
    """Per-channel statistics and parameters: (C,) arrays of x's dtype, or None; the running
    ones writeable when ``update``."""
    C, dt = x.shape[1], x.dtype
    return (check_channel_vector(running_mean, C, dt, "running_mean", writeable=update),
            check_channel_vector(running_var, C, dt, "running_var", writeable=update),
            check_channel_vector(weight, C, dt, "weight"), check_channel_vector(bias, C, dt, "bias"))


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


# ---------------------------------------------------------------------------------------------
# Layer norm and RMS norm: statistics per row over the last len(normalized_shape) axes.
# ---------------------------------------------------------------------------------------------

class _RowSaved:
    """A layer-norm (``rms`` False) or RMS-norm forward and what its backward needs."""

    __slots__ = ("layout", "x2", "pshape", "mean", "invstd", "weight", "has_bias", "rms", "y")

    def __init__(self, x, normalized_shape, weight, bias, eps, rms):
        self.layout = layout = RowLayout(x, len(normalized_shape))
        self.x2 = x2 = layout.view(x)
        self.pshape = normalized_shape
        self.weight = None if weight is None else np.ravel(weight).copy()  # as at forward
        self.has_bias = bias is not None
        self.rms = rms
        self.mean, self.invstd = np.empty((2, x2.shape[0]))
        y2, y = layout.empty()
        _kernels.row_forward(x2, self.weight, None if bias is None else np.ravel(bias),
                             float(eps), rms, y2, self.mean, self.invstd)
        self.y = layout.restore(y)

    def backward(self, grad_output):
        dy2 = self.layout.view(_grad_array(grad_output, self.layout))
        dx2, dx = self.layout.empty()
        gw, gb = np.empty((2, self.x2.shape[1]))
        _kernels.row_backward(self.x2, dy2, self.mean, self.invstd, self.weight, self.rms,
                              self.weight is not None or self.has_bias, dx2, gw, gb)
        return (self.layout.restore(dx),
                None if self.weight is None else gw.reshape(self.pshape),
                gb.reshape(self.pshape) if self.has_bias else None)


def _normalized_shape(normalized_shape):
    """torch's rule: an int or a sequence of ints, here each at least 1."""
    ns = ((normalized_shape,) if isinstance(normalized_shape, numbers.Integral)
          else tuple(normalized_shape) if np.iterable(normalized_shape) else None)
    if (not ns or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1
                      for d in ns)):
        raise ValueError("normalized_shape must be a positive int or a non-empty sequence of "
                         f"positive ints, got {normalized_shape!r}")
    return tuple(int(d) for d in ns)


def _check_row_args(x, normalized_shape, weight, bias, dtype=None):
    """Checks of layer_norm / rms_norm; returns (x, normalized_shape, weight, bias)."""
    x = as_float_array(x, dtype)
    ns = _normalized_shape(normalized_shape)
    if x.ndim < len(ns) or x.shape[x.ndim - len(ns):] != ns:
        raise ValueError(f"expected input with shape (*, {', '.join(map(str, ns))}) to match "
                         f"normalized_shape {ns}, got input of shape {x.shape}")
    weight = check_channel_vector(weight, ns, x.dtype, "weight")
    bias = check_channel_vector(bias, ns, x.dtype, "bias")
    return x, ns, weight, bias


def _rms_eps(eps, dtype):
    """RMSNorm's eps=None: the machine epsilon of the data type, as torch."""
    return float(np.finfo(dtype).eps) if eps is None else float(eps)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalization with ``torch.nn.functional.layer_norm`` semantics.

    Normalizes over the last ``len(normalized_shape)`` axes of ``x``, whose shape must end
    with ``normalized_shape``: ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the
    biased variance. ``weight`` and ``bias`` are None or arrays shaped ``normalized_shape`` of
    x's dtype. Returns a new array shaped like ``x`` (in x's layout when x is channels-last).
    """
    x, ns, weight, bias = _check_row_args(x, normalized_shape, weight, bias)
    return _RowSaved(x, ns, weight, bias, eps, rms=False).y


def layer_norm_backward(grad_output, x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Gradients of :func:`layer_norm`: returns ``(dx, grad_weight, grad_bias)`` (of x's
    dtype; None where ``weight`` / ``bias`` is None). Recomputes the forward."""
    x, ns, weight, bias = _check_row_args(x, normalized_shape, weight, bias)
    dx, gw, gb = _RowSaved(x, ns, weight, bias, eps, rms=False).backward(grad_output)
    return dx, _cast(gw, x.dtype), _cast(gb, x.dtype)


def rms_norm(x, normalized_shape, weight=None, eps=None):
    """RMS normalization with ``torch.nn.functional.rms_norm`` semantics.

    ``y = x / sqrt(mean(x**2) + eps) * weight`` over the last ``len(normalized_shape)`` axes;
    ``eps=None`` is the machine epsilon of x's dtype (``np.finfo(x.dtype).eps``), as torch.
    """
    x, ns, weight, _ = _check_row_args(x, normalized_shape, weight, None)
    return _RowSaved(x, ns, weight, None, _rms_eps(eps, x.dtype), rms=True).y


def rms_norm_backward(grad_output, x, normalized_shape, weight=None, eps=None):
    """Gradients of :func:`rms_norm`: returns ``(dx, grad_weight)`` (grad_weight None
    without weight). Recomputes the forward."""
    x, ns, weight, _ = _check_row_args(x, normalized_shape, weight, None)
    saved = _RowSaved(x, ns, weight, None, _rms_eps(eps, x.dtype), rms=True)
    dx, gw, _ = saved.backward(grad_output)
    return dx, _cast(gw, x.dtype)


# ---------------------------------------------------------------------------------------------
# Group norm and instance norm (= group norm with one channel per group): per sample.
# ---------------------------------------------------------------------------------------------

class _GroupSaved:
    """A group-norm forward with batch statistics, and what its backward needs."""

    __slots__ = ("layout", "x4", "G", "mean", "m2", "invstd", "weight", "has_bias", "y")

    def __init__(self, x, G, weight, bias, eps):
        self.layout = layout = ChannelLayout(x, per_sample=True)
        self.x4 = x4 = layout.view(x)
        self.G = G
        self.weight = None if weight is None else weight.copy()  # as it was at forward time
        self.has_bias = bias is not None
        self.mean, self.m2, self.invstd = np.empty((3, x.shape[0], G))
        y4, self.y = layout.empty()
        _kernels.group_forward(x4, G, self.weight, contiguous(bias), float(eps), y4, self.mean,
                               self.m2, self.invstd)

    def backward(self, grad_output):
        dy4 = self.layout.view(_grad_array(grad_output, self.layout))
        dx4, dx = self.layout.empty()
        N, C = self.layout.shape[:2]
        sdy, sdyx = np.empty((2, N, C))
        _kernels.group_backward(self.x4, dy4, self.G, self.mean, self.invstd, self.weight, dx4,
                                sdy, sdyx)
        gw = (None if self.weight is None else
              (np.repeat(self.invstd, C // self.G, axis=1) * sdyx).sum(axis=0))
        return dx, gw, sdy.sum(axis=0) if self.has_bias else None


def _check_group_args(x, num_groups, weight, bias, dtype=None):
    x = as_float_array(x, dtype)
    if x.ndim < 2:
        raise ValueError(f"expected 2D or higher input (N, C, ...) (got {x.ndim}D input)")
    G, C = num_groups, x.shape[1]
    if isinstance(G, bool) or not isinstance(G, numbers.Integral) or G < 1:
        raise ValueError(f"num_groups must be a positive integer, got {G!r}")
    if C % G:
        raise ValueError(f"the input's {C} channels must be divisible by num_groups ({G})")
    weight = check_channel_vector(weight, C, x.dtype, "weight")
    bias = check_channel_vector(bias, C, x.dtype, "bias")
    return x, int(G), weight, bias


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalization with ``torch.nn.functional.group_norm`` semantics.

    ``x`` is (N, C, ...) with C divisible by ``num_groups``; each sample's channels are split
    into groups of C / num_groups, normalized with the group's mean and biased variance, then
    ``* weight + bias`` per channel (None or (C,) arrays of x's dtype). The output keeps x's
    memory layout (C order or channels-last).
    """
    x, G, weight, bias = _check_group_args(x, num_groups, weight, bias)
    return _GroupSaved(x, G, weight, bias, eps).y


def group_norm_backward(grad_output, x, num_groups, weight=None, bias=None, eps=1e-5):
    """Gradients of :func:`group_norm`: returns ``(dx, grad_weight, grad_bias)`` (of x's
    dtype; None where ``weight`` / ``bias`` is None). Recomputes the forward."""
    x, G, weight, bias = _check_group_args(x, num_groups, weight, bias)
    dx, gw, gb = _GroupSaved(x, G, weight, bias, eps).backward(grad_output)
    return dx, _cast(gw, x.dtype), _cast(gb, x.dtype)


def _check_instance_args(x, running_mean, running_var, weight, bias, use_input_stats, update):
    """Checks of instance_norm; x must already be batched (N, C, *spatial)."""
    x = as_float_array(x)
    if x.ndim < 3:
        raise ValueError(f"expected 3D or higher input (N, C, *spatial) (got {x.ndim}D input)")
    running_mean, running_var, weight, bias = _check_channel_arrays(
        x, running_mean, running_var, weight, bias, update)
    if use_input_stats:
        if prod(x.shape[2:]) == 1:
            raise ValueError("Expected more than 1 spatial element when training, "
                             f"got input size {x.shape}")
    elif running_mean is None or running_var is None:
        raise ValueError("running_mean and running_var are required when "
                         "use_input_stats=False")
    return x, running_mean, running_var, weight, bias


def _instance_forward(x, running_mean, running_var, weight, bias, use_input_stats, momentum,
                      eps):
    """Instance norm's forward (a saved object). With the input's statistics, the running
    arrays (those not None) move in place toward the mean over the batch of the per-instance
    mean and unbiased variance, as torch does; otherwise they normalize (batch norm's eval)."""
    if not use_input_stats:
        return _Saved(x, running_mean, running_var, weight, bias, eps, batch_stats=False)
    saved = _GroupSaved(x, x.shape[1], weight, bias, eps)
    S = prod(x.shape[2:])
    if x.shape[0] > 0 and S > 0:
        f = float(momentum)
        for run, batch in ((running_mean, saved.mean), (running_var, saved.m2 / (S - 1))):
            if run is not None:
                run[...] = (1.0 - f) * run.astype(np.float64) + f * batch.mean(axis=0)
    return saved


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Instance normalization with ``torch.nn.functional.instance_norm`` semantics.

    ``x`` is (N, C, *spatial); each (sample, channel) is normalized with its own mean and
    biased variance over the spatial axes (``use_input_stats``), or with the running
    statistics (``use_input_stats=False``, then both are required). With the input's
    statistics, given running arrays are updated in place:
    ``running = (1 - momentum) * running + momentum * batch_mean_of_instance_stats``.
    The output keeps x's memory layout.
    """
    x, running_mean, running_var, weight, bias = _check_instance_args(
        x, running_mean, running_var, weight, bias, use_input_stats, update=use_input_stats)
    return _instance_forward(x, running_mean, running_var, weight, bias, use_input_stats,
                             momentum, eps).y


def instance_norm_backward(grad_output, x, running_mean=None, running_var=None, weight=None,
                           bias=None, use_input_stats=True, eps=1e-5):
    """Gradients of :func:`instance_norm`: returns ``(dx, grad_weight, grad_bias)`` (of x's
    dtype; None where ``weight`` / ``bias`` is None). Recomputes the forward; updates
    nothing."""
    x, running_mean, running_var, weight, bias = _check_instance_args(
        x, running_mean, running_var, weight, bias, use_input_stats, update=False)
    fixed = not use_input_stats  # the running statistics normalize; else they are not used
    saved = _instance_forward(x, running_mean if fixed else None,
                              running_var if fixed else None, weight, bias, use_input_stats,
                              0.0, eps)
    dx, gw, gb = saved.backward(grad_output)
    return dx, _cast(gw, x.dtype), _cast(gb, x.dtype)
