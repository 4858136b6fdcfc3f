"""Element kinds and canonical strided views for the data kernels (src/data/data.pxi).

A canonical view describes an array in place, without a copy: outer dimensions in memory order
(outermost first), then a run of pixels, each pixel ``C`` channels ``cs`` bytes apart. Size-1
dimensions are dropped and dimensions that are contiguous with each other are merged, so an
NCHW batch is (N) x run H*W x C planes and an NHWC batch one run of N*H*W pixels of C
interleaved channels.
"""
import numbers
from typing import AbstractSet, Any, List, Optional, Sequence, Tuple

import numpy as np

from .._core.checks import refuse_masked
from .._core.dtypes import KINDS, NAMES, kind_code
from .._core.types import Array, DTypeLike

ALL = frozenset(KINDS.values())
# per array: (address, outer shape, outer strides, channels, channel stride), as the kernels take
View = Tuple[int, Array, Array, int, int]


def kind_of(dtype: DTypeLike, allowed: AbstractSet[int] = ALL, what: str = "input") -> int:
    """The kind code of ``dtype`` (one of ``allowed``); TypeError naming the supported dtypes
    otherwise."""
    dt = np.dtype(dtype)
    k = kind_code(dt)
    if k is None or k not in allowed:
        names = ", ".join(NAMES[i] for i in sorted(allowed))
        raise TypeError(f"unsupported {what} dtype {dt.name}; supported: {names}")
    return k


def kinds(*names: str) -> AbstractSet[int]:
    """The kind codes of dtype names, for ``allowed``."""
    return frozenset(KINDS[n] for n in names)


def as_data(x: Any, allowed: AbstractSet[int] = ALL, what: str = "input") -> Tuple[Array, int]:
    """``x`` as an ndarray of a supported dtype in native byte order (a byte-swapped array is
    the only one copied) and its kind code; TypeError for any other dtype or a masked array."""
    if type(x) is not np.ndarray:  # (a masked array is a subclass)
        refuse_masked(x, what)
        x = x if isinstance(x, np.ndarray) else np.asarray(x)
    k = kind_of(x.dtype, allowed, what)
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    return x, k


def channel_axis_of(channel_axis: Optional[int], ndim: int, hint: str = "") -> Optional[int]:
    """The channel axis as a non-negative int (None stays None); ValueError when out of range
    (``hint``: a sentence added to its message)."""
    if channel_axis is None:
        return None
    if not isinstance(channel_axis, numbers.Integral) or isinstance(channel_axis, bool):
        raise TypeError(f"channel_axis must be an int or None, got {channel_axis!r}")
    if not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel_axis {channel_axis} is out of range for {ndim}D input"
                         + (f". {hint}" if hint else ""))
    return int(channel_axis) % ndim


def views(arrays: Sequence[Array], axis: Optional[int]) -> List[View]:
    """Canonical views of arrays of one logical shape (the first one's strides decide the
    order; dimensions merge only where they merge in all). ``axis``: the channel axis
    (non-negative) or None. Returns, per array, (addr, shape, strides, C, cs) as the kernels
    take them."""
    first = arrays[0]
    nd = first.ndim
    others = [d for d in range(nd) if d != axis]
    dims = [d for d in others if first.shape[d] != 1]
    addrs = [a.ctypes.data for a in arrays]
    strides = [[a.strides[d] for d in dims] for a in arrays]
    for j, d in enumerate(dims):  # walk a reversed dimension from its other end
        if strides[0][j] < 0:
            for i, a in enumerate(arrays):
                addrs[i] += (a.shape[d] - 1) * strides[i][j]
                strides[i][j] = -strides[i][j]
    order = sorted(range(len(dims)), key=lambda j: -strides[0][j])
    shape: List[int] = []
    merged: List[List[int]] = [[] for _ in arrays]
    for j in order:
        n = first.shape[dims[j]]
        if shape and all(m[-1] == n * s[j] for m, s in zip(merged, strides)):
            shape[-1] *= n
            for m, s in zip(merged, strides):
                m[-1] = s[j]
        else:
            shape.append(n)
            for m, s in zip(merged, strides):
                m.append(s[j])
    if not shape:  # a single pixel
        shape = [1]
        merged = [[a.itemsize] for a in arrays]
    C = 1 if axis is None else first.shape[axis]
    outer = np.array(shape, dtype=np.intp)
    return [(addr, outer, np.array(m, dtype=np.intp), C,
             a.itemsize if axis is None else a.strides[axis])
            for addr, m, a in zip(addrs, merged, arrays)]
