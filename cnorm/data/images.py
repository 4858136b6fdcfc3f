"""``normalize_images``: dtype conversion, per-channel scale and shift, layout change and an
optional left-right flip, fused in one pass over the pixels (the data kernel's affine map)."""
from typing import Any, Optional, Tuple

import numpy as np

from .._core import backend as _backend
from .._core.dtypes import KINDS
from .._core.layout import check_out
from .._core.types import Array, ArrayLike, DTypeLike, OptArray
from ._view import as_data, kind_of, kinds

IN_KINDS = kinds("uint8", "uint16", "float16", "float32")
OUT_KINDS = kinds("float32", "float16", "bfloat16")
LAYOUTS = ("NHWC", "NCHW")
DEFAULT_SCALE = {KINDS["uint8"]: 1.0 / 255.0, KINDS["uint16"]: 1.0 / 65535.0}
F32 = np.dtype(np.float32)


def _out_dtype(dtype: Any) -> Tuple[np.dtype[Any], int]:
    """The output dtype and its kind code; TypeError for any other."""
    if dtype is np.float32 or dtype is F32:  # the default, cheaply
        return F32, KINDS["float32"]
    if isinstance(dtype, str) and dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError("dtype bfloat16 needs ml_dtypes (pip install ml_dtypes)") from None
        dtype = ml_dtypes.bfloat16
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unsupported output dtype {dtype!r}; supported: float32, float16, "
                        "bfloat16") from None
    return dt, kind_of(dt, OUT_KINDS, "output")


def _per_channel(v: ArrayLike, C: int, name: str) -> Array:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(C, float(a))
    if a.shape != (C,):
        raise ValueError(f"{name} must have one value per channel ({C}), got shape {a.shape}")
    return a


def normalize_images(images: ArrayLike, mean: ArrayLike, std: ArrayLike, *,
                     scale: Optional[float] = None, input_layout: str = "NHWC",
                     output_layout: str = "NCHW", dtype: DTypeLike = np.float32,
                     mirror: Optional[ArrayLike] = None, out: OptArray = None) -> Array:
    """Normalize a batch of images in one pass: ``y = (x * scale - mean[c]) / std[c]``.

    Dtype conversion, per-channel scale and shift, layout change and an optional left-right
    flip, fused in one pass over the pixels. Computed in float32 and rounded once to the
    output dtype; parallel over images and rows, and deterministic.

    Parameters
    ----------
    images : ndarray of uint8, uint16, float16 or float32
        ``(N, H, W, C)`` for ``input_layout="NHWC"`` or ``(N, C, H, W)`` for "NCHW", or one
        image without N (then the output has no N either). Any strided view is read in
        place, so a crop is a slice: ``images[:, 16:240, 16:240]``.
    mean, std : float or sequence of floats
        One value per channel (or one for all); ``std`` non-zero.
    scale : float or None
        None is 1/255 for uint8, 1/65535 for uint16 and 1 for floats, so torchvision's
        ``mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)`` apply as they are.
    input_layout, output_layout : {"NHWC", "NCHW"}
        The layouts of ``images`` and of the result.
    dtype : float32, float16, bfloat16 (ml_dtypes) or the string "bfloat16"
        The output dtype.
    mirror : sequence of bools or None
        One per image; True flips that image left-right.
    out : ndarray or None
        A C-contiguous array of the output's shape and dtype, written and returned (it may
        be the images' own memory: they are copied first).

    Returns
    -------
    ndarray
        The normalized images in ``output_layout`` (``out`` when given).

    Raises
    ------
    TypeError
        An unsupported input or output dtype.
    ValueError
        A wrong rank, layout name, per-channel length, a zero std, a bad ``mirror`` or
        ``out``. Nothing is written when it raises.

    See Also
    --------
    cnorm.Moments : the per-channel mean and std of a dataset, to pass here.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> imgs = np.full((2, 4, 4, 3), 255, dtype=np.uint8)        # two white 4x4 RGB images
    >>> y = cnorm.normalize_images(imgs, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    >>> y.shape, y.dtype, float(y[0, 0, 0, 0])                    # NCHW float32: (1 - .5) / .25
    ((2, 3, 4, 4), dtype('float32'), 2.0)
    """
    if (mirror is None and input_layout == "NHWC" and output_layout == "NCHW"
            and (dtype is np.float32 or dtype is F32)):  # the common call, checked in C
        fast: OptArray = _backend.data.images_call(images, mean, std, scale, out,
                                                   _backend.threads())
        if fast is not None:
            return fast
    x, kind = as_data(images, IN_KINDS, "images")
    for name, lay in (("input_layout", input_layout), ("output_layout", output_layout)):
        if lay not in LAYOUTS:
            raise ValueError(f"{name} must be 'NHWC' or 'NCHW', got {lay!r}")
    if x.ndim not in (3, 4):
        raise ValueError(f"expected 4D images (N, H, W, C) or one 3D image, got {x.ndim}D")
    batched = x.ndim == 4
    x4 = x if batched else x[None]
    nhwc = x4 if input_layout == "NHWC" else x4.transpose(0, 2, 3, 1)
    N, H, W, C = nhwc.shape
    mean = _per_channel(mean, C, "mean")
    std = _per_channel(std, C, "std")
    if np.any(std == 0):
        raise ValueError("std must be non-zero in every channel")
    s = DEFAULT_SCALE.get(kind, 1.0) if scale is None else float(scale)
    dt, out_kind = _out_dtype(dtype)
    flags: OptArray = None
    if mirror is not None:
        given = np.asarray(mirror)
        shapes = ((N,),) if batched else ((), (1,))
        if given.dtype != np.bool_ or given.shape not in shapes:
            raise ValueError(f"mirror must be None or {N} bools (one per image), got "
                             f"{given.dtype} of shape {given.shape}")
        flags = np.ascontiguousarray(given.reshape(N), dtype=np.uint8)
    full = (N, C, H, W) if output_layout == "NCHW" else (N, H, W, C)
    shape = full if batched else full[1:]
    if out is None:
        y = np.empty(shape, dtype=dt)
    else:
        y = check_out(out, shape, dt, False)  # C order: a new array's layout
        if np.may_share_memory(out, x):
            nhwc = nhwc.copy()  # the pixels are read from a copy: the output overwrites them
    y4 = y if batched else y[None]
    ynhwc = y4 if output_layout == "NHWC" else y4.transpose(0, 2, 3, 1)
    _backend.data.data_affine(
        nhwc.ctypes.data, kind, ynhwc.ctypes.data, out_kind,
        np.array([N, H, W], dtype=np.intp), np.array(nhwc.strides[:3], dtype=np.intp),
        np.array(ynhwc.strides[:3], dtype=np.intp), C, nhwc.strides[3], ynhwc.strides[3],
        mean / s, s / std, np.zeros(C), flags, _backend.threads())
    return y
