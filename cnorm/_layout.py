"""Input checks and the (outer, C, inner) views the kernels work on."""
from math import prod

import numpy as np

FLOAT_TYPES = (np.float32, np.float64)


def as_float_array(x, dtype=None, what="input"):
    """Return ``x`` as an ndarray of native byte order, raising TypeError on a wrong dtype.

    ``dtype`` is the required dtype (a layer's); ``None`` accepts float32 or float64.
    Byte-swapped arrays of the right type are converted (a copy), nothing else is.
    """
    if type(x) is np.ndarray and x.dtype is dtype:  # the common case, checked cheaply
        return x
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if x.dtype.type is not dtype.type:
            raise TypeError(f"expected {what} of dtype {dtype.name}, got {x.dtype.name}")
    elif x.dtype.type not in FLOAT_TYPES:
        raise TypeError(f"expected {what} of dtype float32 or float64, got {x.dtype.name}")
    if not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    return x


def check_ndim(x, allowed, what="input"):
    if x.ndim not in allowed:
        want = " or ".join(f"{d}D" for d in allowed)
        raise ValueError(f"expected {want} {what} (got {x.ndim}D {what})")


def check_channel_vector(v, C, dtype, name, writeable=False):
    """Validate a per-channel parameter or statistic: shape (C,), the data's dtype.
    ``C`` may also be a shape tuple (LayerNorm's parameters: ``normalized_shape``)."""
    shape = C if isinstance(C, tuple) else (C,)
    if v is None or (type(v) is np.ndarray and v.dtype is dtype and v.shape == shape
                     and (v.flags.writeable or not writeable)):
        return v  # the common case, checked cheaply
    v = as_float_array(v, dtype, what=name)
    if v.shape != shape:
        want = (f"{shape} to match normalized_shape" if isinstance(C, tuple) else
                f"({C},) to match the input's {C} channels")
        raise ValueError(f"{name} should have shape {want}, got shape {v.shape}")
    if writeable and not v.flags.writeable:
        raise ValueError(f"{name} must be writeable to be updated in place")
    return v


def contiguous(v):
    """``v`` itself when None or C-contiguous (the kernels' vectors), else a contiguous copy."""
    return v if v is None or v.flags.c_contiguous else np.ascontiguousarray(v)


def is_channels_last(x):
    """True for an (N, C, *spatial) array whose memory is (N, *spatial, C), not C order."""
    return (x.ndim > 2 and not x.flags.c_contiguous
            and np.moveaxis(x, 1, -1).flags.c_contiguous)


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

    def __init__(self, x, per_sample=False):
        self.shape = x.shape
        self.dtype = x.dtype
        self.channels_last = is_channels_last(x)
        N, C, S = self.shape[0], self.shape[1], prod(self.shape[2:])
        if per_sample:
            self.kshape = (N, S, C, 1) if self.channels_last else (N, 1, C, S)
        else:
            self.kshape = (N * S, C, 1) if self.channels_last else (N, C, S)

    def view(self, a):
        """The kernels' C-contiguous view of ``a`` (shaped like the layout), copying only
        when ``a`` is not already in this memory layout."""
        if self.channels_last:
            a = np.moveaxis(a, 1, -1)
        return np.ascontiguousarray(a).reshape(self.kshape)

    def empty(self):
        """A new output: returns ``(out3, out)``, the kernel view and the user-facing array."""
        if self.channels_last:
            t = np.empty(self.shape[:1] + self.shape[2:] + self.shape[1:2], dtype=self.dtype)
            return t.reshape(self.kshape), np.moveaxis(t, -1, 1)
        out = np.empty(self.shape, dtype=self.dtype)
        return out.reshape(self.kshape), out


class RowLayout:
    """Rows over the last ``k`` axes (layer and RMS norm): the kernels' (R, L) C-contiguous
    view. The kernels write C order; :meth:`restore` gives a channels-last input's output
    (or gradient) its input's layout again (one copy, for that layout only)."""

    __slots__ = ("shape", "dtype", "rl", "channels_last")

    def __init__(self, x, k):
        self.shape = x.shape
        self.dtype = x.dtype
        self.rl = (prod(x.shape[:x.ndim - k]), prod(x.shape[x.ndim - k:]))
        self.channels_last = is_channels_last(x)

    def view(self, a):
        return np.ascontiguousarray(a).reshape(self.rl)

    def empty(self):
        out = np.empty(self.shape, dtype=self.dtype)
        return out.reshape(self.rl), out

    def restore(self, out):
        if not self.channels_last:
            return out
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(out, 1, -1)), -1, 1)
