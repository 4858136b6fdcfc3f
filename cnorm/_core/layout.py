"""The kernels' C-contiguous views of an input, and outputs in the input's memory layout."""
from math import prod
from typing import Any, Optional, Sequence, Tuple

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from .dtypes import TABLE
from .types import Array, AxisLike, OptArray, Shape


def storage(a: Array) -> Array:
    """``a`` as the kernels take it: half-precision data as its integer bits (a view)."""
    bits = TABLE[a.dtype.name].bits if a.dtype.itemsize == 2 else None
    return a if bits is None else a.view(bits)


def contiguous(v: OptArray) -> OptArray:
    """``v`` itself when None or C-contiguous (the kernels' vectors), else a contiguous copy."""
    return v if v is None or v.flags.c_contiguous else np.ascontiguousarray(v)


def is_channels_last(x: Array) -> bool:
    """True for an (N, C, *spatial) array whose memory is (N, *spatial, C), not C order."""
    return (x.ndim > 2 and not x.flags.c_contiguous
            and np.moveaxis(x, 1, -1).flags.c_contiguous)


def reduction_view(x: Array, axis: AxisLike) -> Tuple[Array, Shape]:
    """``x`` as the (outer, K, inner) array whose K channels are the values of the axes not
    in ``axis`` (an int, a tuple or None: all), for a reduction over the others; and the shape
    of the kept axes. A free view when the kept axes are adjacent in C order, or all after the
    reduced ones in memory (channels-last statistics); else a C-order copy."""
    reduced = normalize_axis_tuple(tuple(range(x.ndim)) if axis is None else axis, x.ndim)
    kept = [a for a in range(x.ndim) if a not in reduced]
    red = sorted(reduced)
    K = prod(x.shape[a] for a in kept)
    R = prod(x.shape[a] for a in red)
    first, last = (kept[0], kept[-1] + 1) if kept else (0, 0)
    if x.flags.c_contiguous and last - first == len(kept):
        x3 = x.reshape(prod(x.shape[:first]), K, prod(x.shape[last:]))
    elif x.transpose(red + kept).flags.c_contiguous:
        x3 = x.transpose(red + kept).reshape(R, K, 1)
    else:
        x3 = np.ascontiguousarray(x.transpose(kept + red)).reshape(1, K, R)
    return x3, tuple(x.shape[a] for a in kept)


def check_out(out: Any, shape: Shape, dtype: Any, channels_last: Optional[bool],
              inputs: Sequence[OptArray] = ()) -> Array:
    """The one rule of ``out=``, for every op: ``out`` is a writeable NumPy array of ``shape``
    and ``dtype`` in the memory layout the op writes (``channels_last`` True: channels-last;
    False: C order; None: any strides, for the data kernels that write through strided views),
    sharing no memory with the ``inputs``. TypeError for a non-array, ValueError for the rest,
    before anything is written; returns ``out``.

    The norms pass their inputs: an overlap is an error, as in torch. The data functions pass
    none, and read from a copy where ``out`` overlaps their input (NumPy's ufunc rule)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(f"out must have shape {shape} and dtype {np.dtype(dtype).name}, got "
                         f"shape {out.shape} and dtype {out.dtype.name}")
    if channels_last is not None and (channels_last != is_channels_last(out)
                                      or not (channels_last or out.flags.c_contiguous)):
        want = "channels-last" if channels_last else "C-contiguous"
        raise ValueError(f"out must be {want}, as the input is")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if any(a is not None and np.may_share_memory(out, a) for a in inputs):
        raise ValueError("out must not share memory with the inputs")
    return out


def same_place(a: Array, b: Array) -> bool:
    """``a`` and ``b`` view the same memory element for element (each value is read before it
    is written, so an op may write ``a`` while it reads ``b``): the same start, strides and
    item size."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.strides == b.strides and a.dtype.itemsize == b.dtype.itemsize)


class ChannelLayout:
    """How an array of logical shape (N, C, *spatial) maps onto the kernels' views.

    Batch norm, (outer, C, inner): C-contiguous memory gives (N, C, prod(spatial));
    channels-last memory (NHWC, as made by
    ``np.ascontiguousarray(x_nhwc).transpose(0, 3, 1, 2)``) gives (N*prod(spatial), C, 1).
    Per-sample norms (``per_sample``: group and instance norm) keep N apart:
    (N, 1, C, prod(spatial)) or (N, prod(spatial), C, 1).
    Any other strides are copied to C order. Outputs are allocated in the same layout.
    """

    __slots__ = ("shape", "dtype", "channels_last", "kshape")

    def __init__(self, x: Array, per_sample: bool = False) -> None:
        self.shape = x.shape
        self.dtype = x.dtype
        self.channels_last = is_channels_last(x)
        N, C, S = self.shape[0], self.shape[1], prod(self.shape[2:])
        self.kshape: Shape
        if per_sample:
            self.kshape = (N, S, C, 1) if self.channels_last else (N, 1, C, S)
        else:
            self.kshape = (N * S, C, 1) if self.channels_last else (N, C, S)

    def view(self, a: Array) -> Array:
        """The kernels' C-contiguous view of ``a`` (shaped like the layout), copying only
        when ``a`` is not already in this memory layout."""
        if self.channels_last:
            a = np.moveaxis(a, 1, -1)
        return storage(np.ascontiguousarray(a).reshape(self.kshape))

    def empty(self, out: OptArray = None,
              inputs: Sequence[OptArray] = ()) -> Tuple[Array, Array]:
        """A new output: returns ``(out3, out)``, the kernel view and the user-facing array;
        or ``out`` itself, checked against ``inputs`` (see :func:`check_out`)."""
        if out is not None:
            check_out(out, self.shape, self.dtype, self.channels_last, inputs)
            return self.view(out), out
        if self.channels_last:
            t = np.empty(self.shape[:1] + self.shape[2:] + self.shape[1:2], dtype=self.dtype)
            return storage(t.reshape(self.kshape)), np.moveaxis(t, -1, 1)
        out = np.empty(self.shape, dtype=self.dtype)
        return storage(out.reshape(self.kshape)), out


class RowLayout:
    """Rows over the last ``k`` axes (layer and RMS norm): the kernels' (R, L) C-contiguous
    view. The kernels write C order; :meth:`restore` gives a channels-last input's output
    (or gradient) its input's layout again (one copy, for that layout only)."""

    __slots__ = ("shape", "dtype", "rl", "channels_last")

    def __init__(self, x: Array, k: int) -> None:
        self.shape = x.shape
        self.dtype = x.dtype
        self.rl = (prod(x.shape[:x.ndim - k]), prod(x.shape[x.ndim - k:]))
        self.channels_last = is_channels_last(x)

    def view(self, a: Array) -> Array:
        return storage(np.ascontiguousarray(a).reshape(self.rl))

    def empty(self, out: OptArray = None,
              inputs: Sequence[OptArray] = ()) -> Tuple[Array, Array]:
        """As ChannelLayout.empty; a channels-last ``out`` is written by :meth:`restore`."""
        if out is not None:
            check_out(out, self.shape, self.dtype, self.channels_last, inputs)
            if not self.channels_last:
                return storage(out.reshape(self.rl)), out
        new = np.empty(self.shape, dtype=self.dtype)
        return storage(new.reshape(self.rl)), new

    def restore(self, a: Array, out: OptArray = None) -> Array:
        """``a`` (written in C order) in the input's layout: into ``out`` when given (one
        copy, as a new array would take)."""
        if not self.channels_last:
            return a
        moved = np.moveaxis(a, 1, -1)
        if out is None:
            return np.moveaxis(np.ascontiguousarray(moved), -1, 1)
        np.moveaxis(out, 1, -1)[...] = moved
        return out
