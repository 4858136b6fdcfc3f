"""Argument checks. Each public call runs them once, through its op family's ``check_*``."""
import numbers
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

from .dtypes import is_float, param_dtype
from .types import Array, ArrayLike, DTypeLike, OptArray, Shape


def refuse_masked(x: Any, what: str) -> None:
    """TypeError for a NumPy masked array, whose mask np.asarray would drop without a word."""
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{what} is a masked array: cnorm would ignore its mask; pass "
                        "x.filled(value) or x.compressed() to say what the masked values are")


def as_float_array(x: ArrayLike, dtype: Optional[DTypeLike] = None, what: str = "input") -> Array:
    """Return ``x`` as an ndarray of native byte order, raising TypeError on a wrong dtype.

    ``dtype`` is the required dtype (a layer's); ``None`` accepts float32, float64, float16
    or bfloat16.
    Byte-swapped arrays of the right type are converted (a copy), nothing else is.
    """
    if type(x) is np.ndarray and x.dtype is dtype:  # the common case, checked cheaply
        return x
    if type(x) is not np.ndarray:  # (a masked array is a subclass)
        refuse_masked(x, what)
        x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if x.dtype.type is not dtype.type:
            raise TypeError(f"expected {what} of dtype {dtype.name}, got {x.dtype.name}")
    elif not is_float(x.dtype):
        raise TypeError(f"expected {what} of dtype float32, float64, float16 or bfloat16, got "
                        f"{x.dtype.name}")
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    return x


def check_ndim(x: Array, allowed: Union[int, Sequence[int]], what: str = "input") -> None:
    """``allowed``: the accepted ranks, or an int: the least rank of an (N, C, ...) input."""
    if isinstance(allowed, int):
        if x.ndim < allowed:
            raise ValueError(f"expected {allowed}D or higher input (N, C, ...) "
                             f"(got {x.ndim}D input)")
    elif x.ndim not in allowed:
        want = " or ".join(f"{d}D" for d in allowed)
        raise ValueError(f"expected {want} {what} (got {x.ndim}D {what})")


def check_channels(x: Array, expected: Optional[int], name: str) -> None:
    if expected is not None and x.shape[1] != expected:
        raise ValueError(f"expected input with {expected} channels ({name}), got "
                         f"{x.shape[1]} channels")


def check_vector(v: Optional[ArrayLike], shape: Union[int, Shape], dtype: np.dtype[Any], name: str,
                 writeable: bool = False) -> OptArray:
    """A per-channel parameter or statistic (``shape`` an int C) or LayerNorm's parameters
    (``shape`` = normalized_shape): None, or an array of that shape and ``dtype`` (the data's
    :func:`param_dtype`)."""
    want = shape if isinstance(shape, tuple) else (shape,)
    if v is None or (type(v) is np.ndarray and v.dtype is dtype and v.shape == want
                     and (v.flags.writeable or not writeable)):
        return v  # the common case, checked cheaply
    if writeable and not (isinstance(v, np.ndarray) and v.flags.writeable):
        got = "a read-only array" if isinstance(v, np.ndarray) else type(v).__name__
        raise ValueError(f"{name} must be a writeable NumPy array to be updated in place, got "
                         f"{got}")
    v = as_float_array(v, dtype, what=name)
    if v.shape != want:
        expect = (f"{want} to match normalized_shape" if isinstance(shape, tuple) else
                  f"({shape},) to match the input's {shape} channels")
        raise ValueError(f"{name} should have shape {expect}, got shape {v.shape}")
    return v  # a byte-swapped one is a native copy: see _context.write_back


def check_vectors(x: Array, running_mean: Any, running_var: Any, weight: Any, bias: Any,
                  update: bool) -> Tuple[OptArray, OptArray, OptArray, OptArray]:
    """Per-channel statistics and parameters of x: (C,) arrays of x's parameter dtype, or
    None; the running ones writeable when ``update``."""
    C, dt = x.shape[1], param_dtype(x.dtype)
    return (check_vector(running_mean, C, dt, "running_mean", writeable=update),
            check_vector(running_var, C, dt, "running_var", writeable=update),
            check_vector(weight, C, dt, "weight"), check_vector(bias, C, dt, "bias"))


def check_eps(eps: float, training: bool) -> None:
    """Batch norm's eps, by torch's rule: positive when training (a constant channel would
    give NaN), non-negative otherwise."""
    if type(eps) is float and eps > 0.0:  # the common case, checked cheaply
        return
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {eps!r}")
    if training and not eps > 0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if not eps >= 0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def layer_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    dt = np.dtype(dtype)
    if not is_float(dt):
        raise TypeError(f"dtype must be float32, float64, float16 or bfloat16, got {dt.name}")
    return dt


def normalized_shape(shape: Any) -> Shape:
    """torch's rule: an int or a sequence of ints, here each at least 1."""
    ns = ((shape,) if isinstance(shape, numbers.Integral)
          else tuple(shape) if np.iterable(shape) else None)
    if (not ns or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1
                      for d in ns)):
        raise ValueError("normalized_shape must be a positive int or a non-empty sequence of "
                         f"positive ints, got {shape!r}")
    return tuple(int(d) for d in ns)
