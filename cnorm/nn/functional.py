"""Stateless (functional) forms: ``batch_norm``, ``layer_norm``, ``group_norm``,
``instance_norm``, ``rms_norm``, their ``*_backward`` counterparts, and ``moments``.

Each validates its arguments once (the op family's ``check_*``) and runs the op family's
context, the same code the layers run.

Data may be float32, float64, float16 or bfloat16 (ml_dtypes). Half-precision data is computed
in float32; its parameters, running statistics and parameter gradients are float32 ("x's
parameter dtype" below; for float32 and float64 data, x's own dtype). Every function raises
``TypeError`` for a non-float input or mismatched dtypes and ``ValueError`` for bad shapes or
arguments, and modifies nothing when it raises.
"""
import inspect
from typing import Any, Callable, Optional, Sequence, Tuple, TypeVar, Union

from .._core.checks import as_float_array
from .._core.types import Array, ArrayLike, AxisLike, OptArray
from ._ops.batch_norm import (
    BatchNormContext,
    batch_norm_call,
    check_batch_norm,
    reduce_moments,
)
from ._ops.context import write_back
from ._ops.group_norm import (
    GroupNormContext,
    check_group_norm,
    check_instance_norm,
    group_call,
    instance_norm_context,
)
from ._ops.row_norm import RowNormContext, check_row_norm, rms_eps, row_call

__all__ = ["batch_norm", "batch_norm_backward", "layer_norm", "layer_norm_backward",
           "group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward",
           "rms_norm", "rms_norm_backward", "moments"]

Grads = Tuple[Array, OptArray, OptArray]
ShapeLike = Union[int, Sequence[int]]
F = TypeVar("F", bound=Callable[..., Any])

# The backward forms' docstring: one text, each form's own docstring adds its Examples.
_GRADS_DOC = """Gradients of :func:`{name}` with respect to ``x`` and the parameters.

{about}

Parameters
----------
grad_output : ndarray
    The gradient of the loss with respect to the forward's output: x's shape and dtype.
{args}
    The forward's arguments (see :func:`{name}`).
out : ndarray or None
    A preallocated ``dx``, as :func:`batch_norm`'s ``out``.

Returns
-------
dx : ndarray
    Shaped like ``x``, in its memory layout.
{grads} : ndarray or None
    Of x's parameter dtype; None where the parameter is None.

Raises
------
TypeError, ValueError
    As :func:`{name}`, and for a ``grad_output`` of another shape or dtype.
"""


def _grads_of(name: str, args: str, grads: str = "grad_weight, grad_bias",
              about: str = "The forward is recomputed; nothing is updated.") -> Callable[[F], F]:
    """Give a backward form the shared docstring: its own first paragraph (a note) joins
    ``about``, and the rest of its own (its Examples) follows."""
    def decorate(fn: F) -> F:
        note, _, examples = inspect.cleandoc(fn.__doc__ or "").partition("\n\n")
        fn.__doc__ = _GRADS_DOC.format(name=name, args=args, grads=grads,
                                       about=about + " " + note) + "\n" + examples
        return fn
    return decorate


def batch_norm(x: ArrayLike, running_mean: OptArray, running_var: OptArray,
               weight: OptArray = None, bias: OptArray = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, *, out: OptArray = None) -> Array:
    """Batch normalization with ``torch.nn.functional.batch_norm`` semantics.

    Parameters
    ----------
    x : ndarray of float32, float64, float16 or bfloat16, shape (N, C, ...)
        Any memory layout; the output has the layout of ``x`` (C order or channels-last).
    running_mean, running_var : ndarray of shape (C,) of x's parameter dtype, or None
        Used for normalizing when ``training`` is False (then both are required). When
        ``training`` is True they are updated in place:
        ``running = (1 - momentum) * running + momentum * batch_stat`` (unbiased variance).
    weight, bias : ndarray of shape (C,) of x's parameter dtype, or None
        The affine transform ``y = x_hat * weight + bias``.
    training : bool
        Normalize with the batch statistics (biased variance) instead of the running ones.
    momentum : float
        The running statistics' update factor.
    eps : float
        Added to the variance; positive when training, non-negative otherwise (torch's rule).
    out : ndarray or None
        A preallocated output: x's shape and dtype, in x's memory layout, writeable, sharing
        no memory with the inputs.

    Returns
    -------
    ndarray
        ``y``, shaped like ``x`` (``out`` when given).

    Raises
    ------
    TypeError
        A non-float input, or arrays of another dtype than x's parameter dtype.
    ValueError
        Shapes that do not match, ``eps`` out of range, one value per channel when training.

    See Also
    --------
    cnorm.BatchNorm2d : the layer, which keeps the running statistics itself.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.random.default_rng(0).normal(3.0, 2.0, (8, 4, 5, 5)).astype(np.float32)
    >>> rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    >>> y = cnorm.batch_norm(x, rm, rv, training=True)
    >>> bool(abs(y.mean()) < 1e-5), bool(abs(y.std() - 1) < 1e-3)
    (True, True)
    >>> bool(abs(rm.mean() - 0.3) < 0.05)  # moved 10% of the way toward the batch mean
    True
    """
    return batch_norm_call(x, running_mean, running_var, weight, bias, training, momentum, eps,
                           out)


@_grads_of("batch_norm", "x, running_mean, running_var, weight, bias, training, eps",
           about="With ``training=True`` the batch statistics are recomputed from ``x`` and "
                 "differentiated through, as torch autograd does; otherwise the running "
                 "statistics are constants. Nothing is updated.")
def batch_norm_backward(grad_output: ArrayLike, x: ArrayLike, running_mean: OptArray,
                        running_var: OptArray, weight: OptArray = None, bias: OptArray = None,
                        training: bool = False, eps: float = 1e-5, *,
                        out: OptArray = None) -> Grads:
    """A constant ``grad_output`` has no component the normalization keeps: dx is 0.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    >>> w, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    >>> dx, gw, gb = cnorm.batch_norm_backward(np.ones_like(x), x, None, None, w, b,
    ...                                        training=True)
    >>> bool(np.abs(dx).max() < 1e-5), gb.tolist()  # a constant gradient is normalized away
    (True, [8.0, 8.0, 8.0])
    """
    x, running_mean, running_var, weight, bias = check_batch_norm(
        x, running_mean, running_var, weight, bias, training, update=False, eps=eps)
    return BatchNormContext(x, running_mean, running_var, weight, bias, eps, training,
                            compute_y=False).backward(grad_output, out)


def moments(x: ArrayLike, axis: AxisLike) -> Tuple[Array, Array]:
    """Mean and biased variance of ``x`` over ``axis``, by the norms' statistics kernel.

    Accumulated in float64 around a shift, in fixed-order chunks: accurate for data with a
    large offset and bit-identical for any thread count.

    Parameters
    ----------
    x : ndarray of float32, float64, float16 or bfloat16
        Any shape and memory layout.
    axis : int, tuple of ints, or None
        The axes reduced (None: all).

    Returns
    -------
    mean, var : ndarray
        Of x's parameter dtype, shaped like ``x`` without the reduced axes. An empty
        reduction gives NaN.

    Raises
    ------
    TypeError
        A non-float input.
    numpy.exceptions.AxisError
        An axis out of range.

    See Also
    --------
    cnorm.Moments : per-channel statistics of any real dtype, streamed over batches and
        merged across processes, with min and max, in float64.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    >>> mean, var = cnorm.moments(x, axis=(0, 2))
    >>> mean.tolist(), var.tolist()
    ([7.5, 11.5, 15.5], [37.25, 37.25, 37.25])
    """
    return reduce_moments(as_float_array(x), axis)


def layer_norm(x: ArrayLike, normalized_shape: ShapeLike, weight: OptArray = None,
               bias: OptArray = None, eps: float = 1e-5, *, out: OptArray = None) -> Array:
    """Layer normalization with ``torch.nn.functional.layer_norm`` semantics.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` over the last
    ``len(normalized_shape)`` axes, with the biased variance.

    Parameters
    ----------
    x : ndarray of float32, float64, float16 or bfloat16
        Its shape ends with ``normalized_shape``.
    normalized_shape : int or sequence of ints
        The shape of the normalized axes.
    weight, bias : ndarray of shape ``normalized_shape`` of x's parameter dtype, or None
        The elementwise affine transform.
    eps : float
        Added to the variance.
    out : ndarray or None
        A preallocated output (see :func:`batch_norm`).

    Returns
    -------
    ndarray
        Shaped like ``x``, in x's memory layout (``out`` when given).

    Raises
    ------
    TypeError, ValueError
        As :func:`batch_norm`; ValueError when x's shape does not end with
        ``normalized_shape``.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.array([[1.0, 2.0, 3.0, 4.0]])
    >>> np.round(cnorm.layer_norm(x, 4), 4).tolist()
    [[-1.3416, -0.4472, 0.4472, 1.3416]]
    """
    got = row_call(x, None, normalized_shape, weight, bias, eps, False,
                   context=False) if out is None else None
    if got is not None:  # a small call, by the entry checked in C
        return got[0]
    x, ns, weight, bias = check_row_norm(x, normalized_shape, weight, bias)
    y: Array = RowNormContext(x, ns, weight, bias, eps, rms=False, out=out).y
    return y


@_grads_of("layer_norm", "x, normalized_shape, weight, bias, eps")
def layer_norm_backward(grad_output: ArrayLike, x: ArrayLike, normalized_shape: ShapeLike,
                        weight: OptArray = None, bias: OptArray = None, eps: float = 1e-5, *,
                        out: OptArray = None) -> Grads:
    """The rows' mean and scale are differentiated through, as torch autograd does.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.array([[1.0, 2.0, 3.0, 4.0]])
    >>> dx, gw, gb = cnorm.layer_norm_backward(np.ones_like(x), x, 4, np.ones(4), np.ones(4))
    >>> bool(np.abs(dx).max() < 1e-12), gb.tolist()
    (True, [1.0, 1.0, 1.0, 1.0])
    """
    x, ns, weight, bias = check_row_norm(x, normalized_shape, weight, bias)
    return RowNormContext(x, ns, weight, bias, eps, rms=False).backward(grad_output, out)


def rms_norm(x: ArrayLike, normalized_shape: ShapeLike, weight: OptArray = None,
             eps: Optional[float] = None, *, out: OptArray = None) -> Array:
    """RMS normalization with ``torch.nn.functional.rms_norm`` semantics.

    ``y = x / sqrt(mean(x**2) + eps) * weight`` over the last ``len(normalized_shape)`` axes.

    Parameters
    ----------
    x : ndarray of float32, float64, float16 or bfloat16
        Of any rank whose trailing axes are ``normalized_shape``.
    normalized_shape : int or sequence of ints
        The trailing axes scaled by their root mean square.
    weight : ndarray of shape ``normalized_shape`` of x's parameter dtype, or None
        The elementwise scale.
    eps : float or None
        Added to the mean square; None is the machine epsilon of x's dtype, as torch.
    out : ndarray or None
        A preallocated output, as :func:`batch_norm`'s.

    Returns
    -------
    ndarray
        ``x`` scaled by its root mean square (``out`` when given).

    Raises
    ------
    TypeError, ValueError
        As :func:`layer_norm`: a non-float ``x``, a weight of another dtype or shape, an
        ``x`` whose shape does not end with ``normalized_shape``.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> cnorm.rms_norm(np.array([[3.0, 4.0]]), 2, eps=0.0).round(4).tolist()
    [[0.8485, 1.1314]]
    """
    got = row_call(x, None, normalized_shape, weight, None, eps, True,
                   context=False) if out is None else None
    if got is not None:  # a small call, by the entry checked in C
        return got[0]
    x, ns, weight, _ = check_row_norm(x, normalized_shape, weight, None)
    y: Array = RowNormContext(x, ns, weight, None, rms_eps(eps, x.dtype), rms=True, out=out).y
    return y


@_grads_of("rms_norm", "x, normalized_shape, weight, eps", grads="grad_weight")
def rms_norm_backward(grad_output: ArrayLike, x: ArrayLike, normalized_shape: ShapeLike,
                      weight: OptArray = None, eps: Optional[float] = None, *,
                      out: OptArray = None) -> Tuple[Array, OptArray]:
    """Only the scale is differentiated through: RMS norm does not center.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.array([[3.0, 4.0]])
    >>> dx, gw = cnorm.rms_norm_backward(x, x, 2, np.ones(2), eps=0.0)
    >>> bool(np.abs(dx).max() < 1e-12)  # dy along x: the scale's gradient cancels it
    True
    """
    x, ns, weight, _ = check_row_norm(x, normalized_shape, weight, None)
    ctx = RowNormContext(x, ns, weight, None, rms_eps(eps, x.dtype), rms=True)
    dx, gw, _ = ctx.backward(grad_output, out)
    return dx, gw


def group_norm(x: ArrayLike, num_groups: int, weight: OptArray = None, bias: OptArray = None,
               eps: float = 1e-5, *, out: OptArray = None) -> Array:
    """Group normalization with ``torch.nn.functional.group_norm`` semantics.

    Each sample's C channels are split into ``num_groups`` groups of C / num_groups channels,
    normalized with the group's mean and biased variance, then ``* weight + bias`` per
    channel.

    Parameters
    ----------
    x : ndarray of float32, float64, float16 or bfloat16, shape (N, C, ...)
        C divisible by ``num_groups``; any memory layout (the output keeps it).
    num_groups : int
        The number of groups.
    weight, bias : ndarray of shape (C,) of x's parameter dtype, or None
        The per-channel affine transform.
    eps : float
        Added to the variance.
    out : ndarray or None
        A preallocated output, of x's shape and dtype and in its layout.

    Returns
    -------
    ndarray
        Each group normalized, shaped like ``x`` (``out`` when given).

    Raises
    ------
    TypeError, ValueError
        As :func:`batch_norm`; ValueError when C is not divisible by ``num_groups``.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.random.default_rng(0).standard_normal((2, 6, 4, 4))
    >>> y = cnorm.group_norm(x, 3)
    >>> np.abs(y.reshape(2, 3, -1).mean(axis=2)).max() < 1e-12
    np.True_
    """
    got = group_call(x, None, None, num_groups, weight, bias, eps,
                     context=False) if out is None else None
    if got is not None:  # a small call, by the entry checked in C
        return got[0]
    x, G, weight, bias = check_group_norm(x, num_groups, weight, bias)
    y: Array = GroupNormContext(x, G, weight, bias, eps, out=out).y
    return y


@_grads_of("group_norm", args="x, num_groups, weight, bias, eps")
def group_norm_backward(grad_output: ArrayLike, x: ArrayLike, num_groups: int,
                        weight: OptArray = None, bias: OptArray = None, eps: float = 1e-5, *,
                        out: OptArray = None) -> Grads:
    """Each group's mean and scale are differentiated through, per sample, as torch autograd
    does.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.random.default_rng(0).standard_normal((2, 6, 4, 4))
    >>> dx, gw, gb = cnorm.group_norm_backward(np.ones_like(x), x, 3, np.ones(6), np.ones(6))
    >>> gb.tolist()
    [32.0, 32.0, 32.0, 32.0, 32.0, 32.0]
    """
    x, G, weight, bias = check_group_norm(x, num_groups, weight, bias)
    return GroupNormContext(x, G, weight, bias, eps).backward(grad_output, out)


def instance_norm(x: ArrayLike, running_mean: OptArray = None, running_var: OptArray = None,
                  weight: OptArray = None, bias: OptArray = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5, *, out: OptArray = None) -> Array:
    """Instance normalization with ``torch.nn.functional.instance_norm`` semantics.

    Each (sample, channel) is normalized with its own mean and biased variance over the
    spatial axes, or with the running statistics (``use_input_stats=False``).

    Parameters
    ----------
    x : ndarray of float32, float64, float16 or bfloat16, shape (N, C, spatial...)
        Any memory layout; the output keeps it.
    running_mean, running_var : ndarray of shape (C,) of x's parameter dtype, or None
        Required when ``use_input_stats`` is False. With the input's statistics, given
        arrays are updated in place: ``running = (1 - momentum) * running + momentum *
        batch_mean_of_instance_stats``.
    weight, bias : ndarray of shape (C,) of x's parameter dtype, or None
        The per-channel affine transform.
    use_input_stats : bool
        Normalize with each instance's statistics (True) or the running ones.
    momentum : float
        The running statistics' update factor.
    eps : float
        Added to the variance.
    out : ndarray or None
        A preallocated output: see :func:`batch_norm`.

    Returns
    -------
    ndarray
        Each instance normalized, shaped like ``x`` (``out`` when given).

    Raises
    ------
    TypeError, ValueError
        As :func:`batch_norm`; ValueError when ``use_input_stats`` is False without both
        running arrays.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.random.default_rng(0).normal(5.0, 3.0, (2, 3, 8, 8))
    >>> y = cnorm.instance_norm(x)
    >>> np.abs(y.mean(axis=(2, 3))).max() < 1e-12
    np.True_
    """
    got = group_call(x, None, None, None, weight, bias, eps, instance=True, context=False) if (
        out is None and use_input_stats is True and running_mean is None
        and running_var is None) else None
    if got is not None:  # a small call, by the entry checked in C
        return got[0]
    x, rm, rv, weight, bias = check_instance_norm(
        x, running_mean, running_var, weight, bias, use_input_stats, update=use_input_stats)
    y: Array = instance_norm_context(x, rm, rv, weight, bias, use_input_stats, momentum, eps,
                                     out=out).y
    if rm is not running_mean or rv is not running_var:  # converted by the checks
        write_back((running_mean, rm), (running_var, rv))
    return y


@_grads_of("instance_norm", "x, running_mean, running_var, weight, bias, use_input_stats, eps")
def instance_norm_backward(grad_output: ArrayLike, x: ArrayLike, running_mean: OptArray = None,
                           running_var: OptArray = None, weight: OptArray = None,
                           bias: OptArray = None, use_input_stats: bool = True,
                           eps: float = 1e-5, *, out: OptArray = None) -> Grads:
    """Each (sample, channel)'s statistics are differentiated through.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    >>> dx, gw, gb = cnorm.instance_norm_backward(np.ones_like(x), x, weight=np.ones(3),
    ...                                           bias=np.ones(3))
    >>> gb.tolist()
    [128.0, 128.0, 128.0]
    """
    x, running_mean, running_var, weight, bias = check_instance_norm(
        x, running_mean, running_var, weight, bias, use_input_stats, update=False)
    fixed = not use_input_stats  # the running statistics normalize; else they are not used
    return instance_norm_context(x, running_mean if fixed else None,
                                 running_var if fixed else None, weight, bias, use_input_stats,
                                 0.0, eps).backward(grad_output, out)
