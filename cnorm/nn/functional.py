"""Stateless (functional) forms: ``batch_norm``, ``layer_norm``, ``group_norm``,
``instance_norm``, ``rms_norm``, their ``*_backward`` counterparts, and ``moments``.

Each validates its arguments once (the op family's ``check_*``) and runs the op family's
context, the same code the layers run.

Data may be float32, float64, float16 or bfloat16 (ml_dtypes). Half-precision data is computed
in float32; its parameters, running statistics and parameter gradients are float32 ("x's
parameter dtype" below; for float32 and float64 data, x's own dtype).
"""
from .._core.checks import as_float_array
from ._ops.batch_norm import BatchNormContext, check_batch_norm, reduce_moments
from ._ops.context import write_back
from ._ops.group_norm import (
    GroupNormContext,
    check_group_norm,
    check_instance_norm,
    instance_norm_context,
)
from ._ops.row_norm import RowNormContext, check_row_norm, rms_eps

__all__ = ["batch_norm", "batch_norm_backward", "layer_norm", "layer_norm_backward",
           "group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward",
           "rms_norm", "rms_norm_backward", "moments"]


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, out=None):
    """Batch normalization with ``torch.nn.functional.batch_norm`` semantics.

    Parameters
    ----------
    x : ndarray of float32, float64, float16 or bfloat16 (ml_dtypes), shape (N, C, ...)
        Any memory layout; the output has the layout of ``x`` (C order or channels-last).
        Half-precision data is computed in float32, with float32 parameters and statistics.
    running_mean, running_var : ndarray (C,) of x's parameter dtype (x's own; float32 for
        half data), or None
        Used for normalizing when ``training`` is False (then both are required). When
        ``training`` is True they are updated in place:
        ``running = (1 - momentum) * running + momentum * batch_stat`` (unbiased variance).
    weight, bias : ndarray (C,) of x's parameter dtype, or None
        The affine transform ``y = x_hat * weight + bias``.
    training : bool
        Normalize with the batch statistics (biased variance) instead of the running ones.
    momentum, eps : float
        ``eps`` must be positive when training and non-negative otherwise (torch's rule).

    out : ndarray or None
        A preallocated output: x's shape and dtype, in x's memory layout (C order or
        channels-last), writeable, sharing no memory with the inputs. Returned.

    Returns
    -------
    y : ndarray shaped like ``x`` (``out`` when given).

    Raises ``TypeError`` for a non-float input or mismatched dtypes and ``ValueError`` for bad
    shapes; nothing is modified when an error is raised.
    """
    x, rm, rv, weight, bias = check_batch_norm(
        x, running_mean, running_var, weight, bias, training, update=training, eps=eps)
    ctx = BatchNormContext(x, rm, rv, weight, bias, eps, training, out=out)
    if training:
        ctx.update_running(rm, rv, float(momentum))
        if rm is not running_mean or rv is not running_var:  # converted by the checks
            write_back((running_mean, rm), (running_var, rv))
    return ctx.y


def batch_norm_backward(grad_output, x, running_mean, running_var, weight=None, bias=None,
                        training=False, eps=1e-5, *, out=None):
    """Gradients of :func:`batch_norm` with respect to ``x``, ``weight`` and ``bias``.

    Takes the forward's arguments (without ``momentum``) and the gradient of the loss with
    respect to its output. With ``training=True`` the batch statistics are recomputed from
    ``x`` and differentiated through, as torch autograd does; otherwise the running statistics
    are constants. Nothing is updated. ``out``: a preallocated dx (as batch_norm's ``out``).

    Returns ``(dx, grad_weight, grad_bias)``: ``dx`` shaped like ``x`` in its memory layout,
    the parameter gradients (float32 for half data; else of x's dtype), or None where
    ``weight`` / ``bias`` is None.
    """
    x, running_mean, running_var, weight, bias = check_batch_norm(
        x, running_mean, running_var, weight, bias, training, update=False, eps=eps)
    return BatchNormContext(x, running_mean, running_var, weight, bias, eps, training,
                            compute_y=False).backward(grad_output, out)


def moments(x, axis):
    """Mean and biased variance of ``x`` over ``axis`` (an int, a tuple of ints, or None).

    Returns ``(mean, var)`` of x's dtype (float32 or float64; float32 for float16 and bfloat16
    data, as the layers' statistics), shaped like ``x`` without the reduced axes. Accumulated
    in float64 around a shift, in fixed-order chunks: accurate for data with a large offset
    and bit-identical for any thread count. An empty reduction gives NaN.
    """
    return reduce_moments(as_float_array(x), axis)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, *, out=None):
    """Layer normalization with ``torch.nn.functional.layer_norm`` semantics.

    Normalizes over the last ``len(normalized_shape)`` axes of ``x``, whose shape must end
    with ``normalized_shape``: ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the
    biased variance. ``weight`` and ``bias`` are None or arrays shaped ``normalized_shape`` of
    x's parameter dtype. Returns a new array shaped like ``x`` (in x's layout when x is channels-last),
    or ``out`` (see :func:`batch_norm`).
    """
    x, ns, weight, bias = check_row_norm(x, normalized_shape, weight, bias)
    return RowNormContext(x, ns, weight, bias, eps, rms=False, out=out).y


def layer_norm_backward(grad_output, x, normalized_shape, weight=None, bias=None, eps=1e-5, *,
                        out=None):
    """Gradients of :func:`layer_norm`: returns ``(dx, grad_weight, grad_bias)`` (of x's
    parameter dtype; None where ``weight`` / ``bias`` is None). Recomputes the forward. ``out``: a
    preallocated dx."""
    x, ns, weight, bias = check_row_norm(x, normalized_shape, weight, bias)
    return RowNormContext(x, ns, weight, bias, eps, rms=False).backward(grad_output, out)


def rms_norm(x, normalized_shape, weight=None, eps=None, *, out=None):
    """RMS normalization with ``torch.nn.functional.rms_norm`` semantics.

    ``y = x / sqrt(mean(x**2) + eps) * weight`` over the last ``len(normalized_shape)`` axes;
    ``eps=None`` is the machine epsilon of x's dtype (``np.finfo(x.dtype).eps``), as torch.
    ``out``: a preallocated output (see :func:`batch_norm`).
    """
    x, ns, weight, _ = check_row_norm(x, normalized_shape, weight, None)
    return RowNormContext(x, ns, weight, None, rms_eps(eps, x.dtype), rms=True, out=out).y


def rms_norm_backward(grad_output, x, normalized_shape, weight=None, eps=None, *, out=None):
    """Gradients of :func:`rms_norm`: returns ``(dx, grad_weight)`` (grad_weight None
    without weight). Recomputes the forward. ``out``: a preallocated dx."""
    x, ns, weight, _ = check_row_norm(x, normalized_shape, weight, None)
    ctx = RowNormContext(x, ns, weight, None, rms_eps(eps, x.dtype), rms=True)
    return ctx.backward(grad_output, out)[:2]


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, *, out=None):
    """Group normalization with ``torch.nn.functional.group_norm`` semantics.

    ``x`` is (N, C, ...) with C divisible by ``num_groups``; each sample's channels are split
    into groups of C / num_groups, normalized with the group's mean and biased variance, then
    ``* weight + bias`` per channel (None or (C,) arrays of x's parameter dtype). The output keeps x's
    memory layout (C order or channels-last). ``out``: a preallocated output (see
    :func:`batch_norm`).
    """
    x, G, weight, bias = check_group_norm(x, num_groups, weight, bias)
    return GroupNormContext(x, G, weight, bias, eps, out=out).y


def group_norm_backward(grad_output, x, num_groups, weight=None, bias=None, eps=1e-5, *,
                        out=None):
    """Gradients of :func:`group_norm`: returns ``(dx, grad_weight, grad_bias)`` (of x's
    parameter dtype; None where ``weight`` / ``bias`` is None). Recomputes the forward. ``out``: a
    preallocated dx."""
    x, G, weight, bias = check_group_norm(x, num_groups, weight, bias)
    return GroupNormContext(x, G, weight, bias, eps).backward(grad_output, out)


def instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5, *, out=None):
    """Instance normalization with ``torch.nn.functional.instance_norm`` semantics.

    ``x`` is (N, C, *spatial); each (sample, channel) is normalized with its own mean and
    biased variance over the spatial axes (``use_input_stats``), or with the running
    statistics (``use_input_stats=False``, then both are required). With the input's
    statistics, given running arrays are updated in place:
    ``running = (1 - momentum) * running + momentum * batch_mean_of_instance_stats``.
    The output keeps x's memory layout. ``out``: a preallocated output (see
    :func:`batch_norm`).
    """
    x, rm, rv, weight, bias = check_instance_norm(
        x, running_mean, running_var, weight, bias, use_input_stats, update=use_input_stats)
    y = instance_norm_context(x, rm, rv, weight, bias, use_input_stats, momentum, eps, out=out).y
    if rm is not running_mean or rv is not running_var:  # converted by the checks
        write_back((running_mean, rm), (running_var, rv))
    return y


def instance_norm_backward(grad_output, x, running_mean=None, running_var=None, weight=None,
                           bias=None, use_input_stats=True, eps=1e-5, *, out=None):
    """Gradients of :func:`instance_norm`: returns ``(dx, grad_weight, grad_bias)`` (of x's
    parameter dtype; None where ``weight`` / ``bias`` is None). Recomputes the forward; updates
    nothing. ``out``: a preallocated dx."""
    x, running_mean, running_var, weight, bias = check_instance_norm(
        x, running_mean, running_var, weight, bias, use_input_stats, update=False)
    fixed = not use_input_stats  # the running statistics normalize; else they are not used
    return instance_norm_context(x, running_mean if fixed else None,
                                 running_var if fixed else None, weight, bias, use_input_stats,
                                 0.0, eps).backward(grad_output, out)
