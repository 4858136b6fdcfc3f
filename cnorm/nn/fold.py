"""``fold_batch_norm``: fold an eval-mode batch norm into the linear or convolution layer
before it, as ``torch.nn.utils.fusion.fuse_conv_bn_weights`` does, so that inference skips
the normalization."""
from typing import Optional, Tuple

import numpy as np

from .._core.types import Array, ArrayLike
from .modules import BatchNormBase


def fold_batch_norm(weight: ArrayLike, bias: Optional[ArrayLike],
                    bn: BatchNormBase) -> Tuple[Array, Array]:
    """Fold an eval-mode batch norm into the linear or convolution layer before it.

    Returns ``(weight', bias')`` with ``x @ weight'.T + bias' == bn(x @ weight.T + bias)`` in
    eval mode (and likewise for a convolution). Computed in float64 and returned in the dtypes
    of ``weight`` and of ``bias`` (the weight's when None).

    Parameters
    ----------
    weight : ndarray
        A linear ``(out, in)`` or convolution ``(out, in, *kernel)`` weight, out-channels
        first.
    bias : ndarray of shape (out,) or None
        Its bias (None: zero).
    bn : BatchNorm1d, BatchNorm2d, BatchNorm3d or SyncBatchNorm
        In eval mode, with running statistics, ``num_features == out``.

    Returns
    -------
    weight, bias : ndarray
        The folded parameters.

    Raises
    ------
    TypeError
        ``bn`` is not a batch norm.
    ValueError
        ``bn`` in training mode, without running statistics or with an activation; shapes
        that do not match.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> rng = np.random.default_rng(0)
    >>> w, b, x = rng.standard_normal((3, 5)), rng.standard_normal(3), rng.standard_normal((4, 5))
    >>> bn = cnorm.BatchNorm1d(3, dtype=np.float64)
    >>> _ = bn(x @ w.T + b)                          # a training step moves its statistics
    >>> w2, b2 = cnorm.fold_batch_norm(w, b, bn.eval())
    >>> bool(np.allclose(x @ w2.T + b2, bn(x @ w.T + b)))
    True
    """
    act = getattr(bn, "act", None)
    if act is not None:
        raise ValueError(f"cannot fold {type(bn).__name__} with activation {act!r}: only "
                         "the normalization is linear")
    if not isinstance(bn, BatchNormBase):
        raise TypeError(f"expected a batch-norm layer, got {type(bn).__name__}")
    if bn.training:
        raise ValueError("fold an eval-mode batch norm (call bn.eval() first): in training "
                         "it normalizes with batch statistics, which no weight can hold")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("the batch norm has no running statistics (track_running_stats="
                         "False): it normalizes with batch statistics even in eval mode")
    w = np.asarray(weight)
    if w.ndim < 2 or w.dtype.kind != "f":
        raise ValueError(f"expected a floating (out, in, ...) weight, got {w.dtype} of shape "
                         f"{w.shape}")
    C = bn.num_features
    if w.shape[0] != C:
        raise ValueError(f"weight has {w.shape[0]} output channels, the batch norm "
                         f"{C} features")
    b_dtype = w.dtype if bias is None else np.asarray(bias).dtype
    b = np.zeros(C) if bias is None else np.asarray(bias, dtype=np.float64)
    if b.shape != (C,):
        raise ValueError(f"bias must have shape ({C},), got {b.shape}")
    scale = 1.0 / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.astype(np.float64)
    shift = 0.0 if bn.bias is None else bn.bias.astype(np.float64)
    new_w = w.astype(np.float64) * scale.reshape((C,) + (1,) * (w.ndim - 1))
    new_b = (b - bn.running_mean.astype(np.float64)) * scale + shift
    return new_w.astype(w.dtype), new_b.astype(b_dtype)
