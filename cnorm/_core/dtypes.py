"""The one table of the element types cnorm knows, and what each subsystem reads from it.

A row per dtype name: the data kernels' kind code (src/data/_data_types.pxi) and, for the four
floating types the norms take, the norm kernels' storage and compute C types
(src/common/_storage.pxi), the integer type half-precision data is viewed as when it reaches
a kernel (a distinct type per half format, so each gets its own specialization), and whether it
is a 2-byte "half" type computed in float32. bfloat16 is ml_dtypes' type, recognised by its
name, so that cnorm never imports ml_dtypes.
"""
from typing import Any, NamedTuple, Optional

import numpy as np


class Row(NamedTuple):
    kind: int                          # the data kernels' element kind
    storage: Optional[str] = None      # the norm kernels' storage C type (None: not a norm dtype)
    compute: Optional[str] = None      # ... and the C type they compute in
    bits: Optional[type] = None        # the integer type a half type is viewed as


TABLE = {
    "uint8": Row(0), "int8": Row(1), "uint16": Row(2), "int16": Row(3),
    "uint32": Row(4), "int32": Row(5), "int64": Row(6),
    "float16": Row(7, "f16_t", "float", np.uint16),
    "bfloat16": Row(8, "bf16_t", "float", np.int16),
    "float32": Row(9, "float", "float"),
    "float64": Row(10, "double", "double"),
}
NORM_NAMES = tuple(n for n, r in TABLE.items() if r.storage)  # what the norms take
KINDS = {n: r.kind for n, r in TABLE.items()}                  # name -> data kernel kind
NAMES = {r.kind: n for n, r in TABLE.items()}                  # kind -> name
WIDE_INTS = frozenset(KINDS[n] for n in ("uint32", "int32", "int64"))  # > float32's digits

# dict lookups by np.dtype: dtype.name costs microseconds, so it is looked at last
_NORM_TYPES = frozenset(np.dtype(n).type for n in NORM_NAMES if n != "bfloat16")
_KIND_BY_DTYPE = {np.dtype(n): r.kind for n, r in TABLE.items() if n != "bfloat16"}


def is_float(dtype: np.dtype[Any]) -> bool:
    """True for a dtype the norms take: float32, float64, float16 or bfloat16."""
    return dtype.type in _NORM_TYPES or dtype.name == "bfloat16"


def is_half(dtype: np.dtype[Any]) -> bool:
    """For a dtype that :func:`is_float`: True for the 2-byte types, float16 and bfloat16
    (computed in float32, with float32 parameters and statistics)."""
    return dtype.itemsize == 2


def param_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype of a layer's parameters, running statistics and parameter gradients: float32
    for half-precision data, else the data's own."""
    return np.dtype(np.float32) if is_half(dtype) else dtype


def kind_code(dtype: np.dtype[Any]) -> Optional[int]:
    """The data kernels' kind code of ``dtype``, or None when they do not take it."""
    k = _KIND_BY_DTYPE.get(dtype)
    return KINDS["bfloat16"] if k is None and dtype.name == "bfloat16" else k
