"""Layer norm and RMS norm: argument checks and the forward/backward context, shared by
``cnorm.layer_norm`` / ``cnorm.rms_norm`` and the LayerNorm / RMSNorm layers."""
from typing import Any, Optional, Tuple

import numpy as np

from ..._core import backend as _backend
from ..._core import recycle
from ..._core.checks import as_float_array, check_vector, normalized_shape
from ..._core.dtypes import param_dtype
from ..._core.layout import RowLayout
from ..._core.types import Array, ArrayLike, OptArray, Shape
from .context import WIDE_INVSTD, Context, as_f64


def check_row_norm(x: ArrayLike, shape: Any, weight: Any, bias: Any, dtype: Any = None
                   ) -> Tuple[Array, Shape, OptArray, OptArray]:
    """Validate a layer/RMS-norm call once; returns (x, normalized_shape, weight, bias)."""
    x = as_float_array(x, dtype)
    ns = normalized_shape(shape)
    if x.ndim < len(ns) or x.shape[x.ndim - len(ns):] != ns:
        raise ValueError(f"expected input with shape (*, {', '.join(map(str, ns))}) to match "
                         f"normalized_shape {ns}, got input of shape {x.shape}")
    pdt = param_dtype(x.dtype)
    return x, ns, check_vector(weight, ns, pdt, "weight"), check_vector(bias, ns, pdt, "bias")


def rms_eps(eps: Optional[float], dtype: np.dtype[Any]) -> float:
    """RMSNorm's eps=None: the machine epsilon of the data type, as torch."""
    if eps is not None:
        return float(eps)
    return 2.0 ** -7 if dtype.kind == "V" else float(np.finfo(dtype).eps)  # bfloat16: 8 bits


class RowNormContext(Context):
    """A layer-norm (``rms`` False) or RMS-norm forward over the last
    ``len(normalized_shape)`` axes, and what its backward needs."""

    __slots__ = ("layout", "x2", "pshape", "mean", "invstd", "rms", "y")

    def __init__(self, x: Array, normalized_shape: Shape, weight: OptArray, bias: OptArray,
                 eps: float, rms: bool, out: OptArray = None) -> None:
        self.layout = layout = RowLayout(x, len(normalized_shape))
        self.x2 = x2 = layout.view(x)
        self.pshape = normalized_shape
        self.keep_params(weight, bias)
        self.rms = rms
        self.mean, self.invstd = np.empty((2, x2.shape[0]))
        y2, y = layout.empty(out, (x,))
        kernel = _backend.kernel("row_forward", x.dtype)
        least = kernel(x2, self.weight, None if bias is None else np.ravel(bias), float(eps),
                       rms, y2, self.mean, self.invstd, _backend.threads())
        self.y = layout.restore(y, out)
        if least < WIDE_INVSTD:
            self.widen(lambda x64: RowNormContext(
                x64, normalized_shape, as_f64(weight), as_f64(bias), eps, rms), x)

    def _backward(self, dy: Array, out: OptArray = None) -> Tuple[Array, Array, Array]:
        dx2, dx = self.layout.empty(out, (self.x2, dy))
        dy2 = self.layout.view(dy)
        gw, gb = np.empty((2, self.x2.shape[1]))
        kernel = _backend.kernel("row_backward", self.layout.dtype)
        kernel(self.x2, dy2, self.mean, self.invstd, self.weight, self.rms,
               self.weight is not None or self.has_bias, dx2, gw, gb, _backend.threads())
        return self.layout.restore(dx, out), gw.reshape(self.pshape), gb.reshape(self.pshape)


class RowCallContext(RowNormContext):
    """The context of a forward run by the entry checked in C (``row_call``, src/nn/calls.pxi):
    the statistics it returned; its views of x are made when a backward first asks."""

    __slots__ = ("x",)

    def __init__(self, x: Array, stats: Array, normalized_shape: Shape, weight: OptArray,
                 bias: OptArray, rms: bool) -> None:
        self.x = x
        self.mean, self.invstd = stats
        self.pshape, self.rms, self.y = normalized_shape, rms, None
        self.keep_params(weight, bias)

    def backward(self, grad_output: ArrayLike,
                 out: OptArray = None) -> Tuple[Array, OptArray, OptArray]:
        """Context.backward's results; by the entry checked in C where it takes them."""
        got = _backend.kernels.row_backward_call(
            self.x, grad_output, self.mean, self.invstd, self.weight, self.rms,
            self.weight is not None or self.has_bias, out, recycle.SPARE_MIN,
            _backend.threads())
        if got is None:
            return super().backward(grad_output, out)
        dx, gw, gb = got  # as _backward and Context.backward finish them
        pdt = self.x.dtype
        return (dx, None if self.weight is None else gw.astype(pdt).reshape(self.pshape),
                gb.astype(pdt).reshape(self.pshape) if self.has_bias else None)

    def __getattr__(self, name: str) -> Any:  # only for slots not set yet
        if name in ("layout", "x2"):
            self.layout = layout = RowLayout(self.x, len(self.pshape))
            self.x2 = layout.view(self.x)
            return getattr(self, name)
        raise AttributeError(name)


def row_call(x: Any, dtype: Any, shape: Any, weight: OptArray, bias: OptArray, eps: Any,
             rms: bool, context: bool = True, holder: Any = None
             ) -> Optional[Tuple[Array, Optional[RowCallContext]]]:
    """A layer/RMS-norm forward by the entry checked in C over one normalized axis
    (``shape`` an int or a 1-tuple; ``dtype`` the layer's, or None: x's): ``(y, context)``,
    or None, having changed nothing, where the entry does not take the call (the checked
    path then runs, with its errors). ``eps`` None is resolved here, by rms_eps.
    ``holder``: the layer, whose memory takes a large output (recycle.entry_out)."""
    if type(x) is not np.ndarray or type(eps) not in (float, type(None)):
        return None
    if dtype is None:
        dtype = x.dtype
    if eps is None:
        eps = rms_eps(None, dtype)
    L = shape if type(shape) is int else (shape[0] if type(shape) is tuple and len(shape) == 1
                                          and type(shape[0]) is int else 0)
    if L <= 0 or not eps > 0.0:
        return None
    out, limit = recycle.entry_out(holder, x)
    got = _backend.kernels.row_call(x, dtype.num, L, weight, bias, eps, rms, WIDE_INVSTD, out,
                                    limit, _backend.threads())
    if got is None:
        return None
    return got[0], RowCallContext(x, got[1], (L,), weight, bias, rms) if context else None
