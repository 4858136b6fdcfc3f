"""Layer objects with torch.nn's names and semantics, on NumPy arrays.

The hierarchy follows torch: ``_Module`` (mode, parameters, state_dict, backward) is the parent
of every layer; ``_NormBase`` (num_features and running statistics) of the batch and instance
norms (both in base.py). A forward validates its input once, through its op family's
``check_*``, and keeps the op family's context for ``backward``; state changes only after every
check and kernel ran.
"""
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .._core.checks import normalized_shape, positive_int
from .._core.types import Array, ArrayLike, DTypeLike, OptArray
from . import grad as _grad
from ._docs import LAYER_RAISES, NORM_ATTRIBUTES, norm_parameters, sections
from ._ops.act import Block
from ._ops.batch_norm import BatchNormContext, check_batch_norm, forward_call, ranks_mask
from ._ops.context import running_factor
from ._ops.group_norm import (
    GroupNormContext,
    check_group_norm,
    check_instance_norm,
    group_call,
    instance_norm_context,
)
from ._ops.row_norm import RowNormContext, check_row_norm, rms_eps, row_call
from .base import _Module, _NormBase

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm",
           "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm"]

# the docstring sections each family's layers share (their defaults differ)
_batch_doc = sections(norm_parameters(affine=True, track=True), NORM_ATTRIBUTES, LAYER_RAISES)
_instance_doc = sections(norm_parameters(affine=False, track=False), NORM_ATTRIBUTES,
                         LAYER_RAISES)


class BatchNormBase(_NormBase):
    """The base of every batch-norm layer (BatchNorm1d/2d/3d, the BatchNormAct blocks,
    SyncBatchNorm): per-channel statistics over N and the spatial axes. What
    ``fold_batch_norm`` and ``convert_sync_batchnorm`` recognise."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 dtype: DTypeLike = np.float32, *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype, bias)

    def forward(self, x: ArrayLike) -> Array:
        """Normalize ``x`` (N, C, ...) per channel; returns a new array in x's memory layout.

        Training mode normalizes with the batch statistics and, with
        ``track_running_stats``, updates the running ones; eval mode uses the running
        statistics (or the batch's when ``track_running_stats=False``).
        """
        return self._run(x)

    def _run(self, x: ArrayLike, block: Optional[Callable[[Array], Block]] = None) -> Array:
        """The forward, with a fused block's epilogue (cnorm/nn/blocks.py) when given. A call
        of the plain norm goes to the entry checked in C first (forward_call)."""
        y = self._entry(x) if block is None else None
        if y is not None:
            return y
        batch_stats = self.training or not self.track_running_stats
        update, (a, rm, rv, w, b) = self._checked(check_batch_norm, x, batch_stats,
                                                  eps=self.eps)
        ctx = self._with_spare("_y", a, lambda out: BatchNormContext(
            a, rm, rv, w, b, self.eps, batch_stats, block=None if block is None else block(a),
            out=out))
        if update:  # every check passed and the kernels ran: only now is state changed
            self._update_running(ctx, rm, rv)
        return self._ran(ctx)


    def _entry(self, x: ArrayLike, epi: Optional[Tuple[Any, Optional[str], float]] = None
               ) -> OptArray:
        """A forward by forward_call, the state moved (training) and the context kept as the
        checked path would; None where forward_call does not take the call. Eval without
        running statistics normalizes with the batch's, as training but moving nothing:
        the checked path's."""
        if not (type(self.eps) is float and self.eps > 0.0):
            return None
        track = self.track_running_stats
        counter = self._num_batches_tracked if track and self.training else None
        ranks = _RANKS.get(self._ndims)
        if ranks is None:
            ranks = _RANKS[self._ndims] = ranks_mask(self._ndims)
        got = forward_call(x, self.dtype, ranks, self.num_features, self.weight, self.bias,
                           self.running_mean if track else None,
                           self.running_var if track else None, counter, self.eps,
                           running_factor(self.momentum, counter), epi, holder=self,
                           training=self.training or not track)
        if got is None:
            return None
        self._saved = got[1] if _grad.enabled() else None
        return got[0]


_RANKS: Dict[Any, int] = {}  # a layer class's ranks as forward_call's mask, made on first use


@_batch_doc
class BatchNorm1d(BatchNormBase):
    """Batch normalization over a 2D (N, C) or 3D (N, C, L) input, per channel C
    (``torch.nn.BatchNorm1d``).

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> bn = cnorm.BatchNorm1d(4)
    >>> x = np.random.default_rng(0).normal(10.0, 2.0, (32, 4)).astype(np.float32)
    >>> y = bn(x)                                     # training: the batch's statistics
    >>> bool(np.allclose(y.mean(axis=0), 0, atol=1e-5))
    True
    >>> dx = bn.backward(np.ones_like(y))             # and bn.grad_weight, bn.grad_bias
    """

    _ndims = (2, 3)


@_batch_doc
class BatchNorm2d(BatchNormBase):
    """Batch normalization over a 4D (N, C, H, W) input, per channel C
    (``torch.nn.BatchNorm2d``). Channels-last input (an NHWC array transposed to NCHW) is
    read in place and gives channels-last output.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> bn = cnorm.BatchNorm2d(3)
    >>> x = np.random.default_rng(0).normal(5.0, 1.0, (8, 3, 4, 4)).astype(np.float32)
    >>> y = bn(x)
    >>> np.round(bn.running_mean, 1).tolist()         # 10% of the way to the batch's mean
    [0.5, 0.5, 0.5]
    >>> bn.eval()(x).shape                            # eval: the running statistics
    (8, 3, 4, 4)
    """

    _ndims = (4,)


@_batch_doc
class BatchNorm3d(BatchNormBase):
    """Batch normalization (``torch.nn.BatchNorm3d``) over a 5D (N, C, D, H, W) input, per
    channel C: the statistics of each channel over the batch and the volume, for video and
    volumetric networks.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> bn = cnorm.BatchNorm3d(2, momentum=None)      # a cumulative average
    >>> y = bn(np.ones((2, 2, 3, 3, 3), np.float32))
    >>> int(bn.num_batches_tracked), bn.running_mean.tolist()
    (1, [1.0, 1.0])
    """

    _ndims = (5,)


class _InstanceNorm(_NormBase):
    """Instance norm: statistics per (sample, channel); unbatched input accepted, as torch."""

    _ndims: Tuple[int, ...]  # (unbatched rank, batched rank)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = False, track_running_stats: bool = False,
                 dtype: DTypeLike = np.float32, *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype, bias)
        self._unbatched = False

    def forward(self, x: ArrayLike) -> Array:
        """Normalize each (sample, channel) of ``x`` over its spatial axes; returns a new array
        in x's memory layout. An unbatched input (without the N axis) is accepted, as torch.

        With ``track_running_stats``, training updates the running statistics with the batch
        mean of the per-instance statistics (``momentum=None``: not updated, as torch) and eval
        normalizes with them. ``num_batches_tracked`` is not advanced, as torch.
        """
        if (not self.track_running_stats and type(x) is np.ndarray
                and x.ndim == self._ndims[1]):  # by the entry checked in C
            got = group_call(x, self.dtype, self.num_features, None, self.weight, self.bias,
                             self.eps, instance=True, holder=self)
            if got is not None:
                self._unbatched = False
                self._saved = got[1] if _grad.enabled() else None
                return got[0]
        unbatched = np.ndim(x) == self._ndims[0]
        use_input_stats = self.training or not self.track_running_stats
        update, (a, rm, rv, w, b) = self._checked(check_instance_norm, x, use_input_stats)
        ctx = self._with_spare("_y", a, lambda out: instance_norm_context(
            a, rm, rv, w, b, use_input_stats, 0.0 if self.momentum is None else self.momentum,
            self.eps, out=out))
        if update:  # keep the arrays that were updated (a byte-swapped assignment was converted)
            self.running_mean, self.running_var = rm, rv
        self._unbatched = unbatched
        y = self._ran(ctx)
        return y[0, ...] if unbatched else y

    def backward(self, grad_output: ArrayLike) -> Array:
        if self._saved is not None and self._unbatched and np.ndim(grad_output) == \
                self._ndims[0]:
            dx: Array = super().backward(np.asarray(grad_output)[None])
            return dx[0, ...]
        return super().backward(grad_output)


@_instance_doc
class InstanceNorm1d(_InstanceNorm):
    """Instance normalization over a 3D (N, C, L) or unbatched 2D (C, L) input
    (``torch.nn.InstanceNorm1d``): each (sample, channel) over L.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> layer = cnorm.InstanceNorm1d(3, dtype=np.float64)    # the dtype it takes
    >>> y = layer(np.arange(12, dtype=np.float64).reshape(3, 4))  # unbatched (C, L)
    >>> np.round(y[0], 4).tolist()
    [-1.3416, -0.4472, 0.4472, 1.3416]
    """

    _ndims = (2, 3)


@_instance_doc
class InstanceNorm2d(_InstanceNorm):
    """Instance normalization (``torch.nn.InstanceNorm2d``) over a 4D (N, C, H, W) or
    unbatched 3D (C, H, W) input: each (sample, channel) over its plane, as style transfer
    and image-to-image networks use it. Channels-last input is read in place.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> x = np.random.default_rng(0).normal(3.0, 2.0, (2, 3, 8, 8)).astype(np.float32)
    >>> y = cnorm.InstanceNorm2d(3, affine=True)(x)
    >>> bool(np.abs(y.mean(axis=(2, 3))).max() < 1e-5)
    True
    """

    _ndims = (3, 4)


@_instance_doc
class InstanceNorm3d(_InstanceNorm):
    """Instance normalization over a 5D (N, C, D, H, W) or unbatched 4D input, each
    (sample, channel) over its volume: ``torch.nn.InstanceNorm3d``. With
    ``track_running_stats`` it keeps the batch mean of the instances' statistics, for eval.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> layer = cnorm.InstanceNorm3d(2, track_running_stats=True)
    >>> y = layer(np.random.default_rng(0).standard_normal((2, 2, 4, 4, 4), np.float32))
    >>> layer.running_var.shape
    (2,)
    """

    _ndims = (4, 5)


class _RowNorm(_Module):
    """Layer and RMS norm: statistics per row over the last ``len(normalized_shape)`` axes,
    parameters shaped ``normalized_shape``."""

    _rms = False

    def __init__(self, shape: Union[int, Sequence[int]], eps: Optional[float],
                 elementwise_affine: bool, bias: bool, dtype: DTypeLike) -> None:
        super().__init__(dtype)
        self.normalized_shape = ns = normalized_shape(shape)
        self.eps = None if eps is None else float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = np.ones(ns, self._pdtype) if self.elementwise_affine else None
        self.bias = np.zeros(ns, self._pdtype) if self.elementwise_affine and bias else None

    def extra_repr(self) -> str:
        bias = "" if self._rms else f", bias={self.bias is not None}"  # RMSNorm has none
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}{bias}")

    def forward(self, x: ArrayLike) -> Array:
        """Normalize each row over the normalized axes; returns a new array shaped like x."""
        got = row_call(x, self.dtype, self.normalized_shape, self.weight, self.bias, self.eps,
                       self._rms, holder=self)
        if got is not None:  # taken by the entry checked in C
            self._saved = got[1] if _grad.enabled() else None
            return got[0]
        x, ns, weight, bias = check_row_norm(x, self.normalized_shape, self.weight, self.bias,
                                             self.dtype)
        eps = rms_eps(self.eps, x.dtype) if self._rms or self.eps is None else self.eps
        return self._ran(self._with_spare("_y", x, lambda out: RowNormContext(
            x, ns, weight, bias, eps, rms=self._rms, out=out)))


@sections(LAYER_RAISES)
class LayerNorm(_RowNorm):
    """Layer normalization over the last ``len(normalized_shape)`` axes
    (``torch.nn.LayerNorm``).

    Parameters
    ----------
    normalized_shape : int or sequence of ints
        The trailing axes each row spans.
    eps : float, default 1e-5
        Added to each row's variance.
    elementwise_affine : bool, default True
        Learnable ``weight`` (ones) and ``bias`` (zeros) of shape ``normalized_shape``.
    bias : bool, default True
        With ``elementwise_affine``, whether there is a ``bias``.
    dtype : float32, float64, float16 or bfloat16, default float32
        The data's dtype; parameters are float32 for the half types.

    Attributes
    ----------
    weight, bias : ndarray of shape ``normalized_shape``, or None
        The affine parameters.
    grad_weight, grad_bias : ndarray or None
        Set by ``backward``.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> ln = cnorm.LayerNorm(4, dtype=np.float64)
    >>> np.round(ln(np.array([[1.0, 2.0, 3.0, 4.0]])), 4).tolist()
    [[-1.3416, -0.4472, 0.4472, 1.3416]]
    """

    def __init__(self, normalized_shape: Union[int, Sequence[int]], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True,
                 dtype: DTypeLike = np.float32) -> None:
        super().__init__(normalized_shape, eps, elementwise_affine, bias, dtype)


@sections(LAYER_RAISES)
class RMSNorm(_RowNorm):
    """Root-mean-square normalization (``torch.nn.RMSNorm``): ``x / sqrt(mean(x**2) + eps) *
    weight`` over the last ``len(normalized_shape)`` axes. ``bias`` is always None.

    Parameters
    ----------
    normalized_shape : int or sequence of ints
        The trailing axes scaled together.
    eps : float or None, default None
        Added to the mean square; None: the machine epsilon of ``dtype``, as torch.
    elementwise_affine : bool, default True
        A learnable ``weight`` (ones) of shape ``normalized_shape``.
    dtype : float32, float64, float16 or bfloat16, default float32
        The data's dtype.

    Attributes
    ----------
    weight : ndarray of shape ``normalized_shape``, or None
        The scale.
    grad_weight : ndarray or None
        Set by ``backward``.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> rms = cnorm.RMSNorm(2, eps=0.0, dtype=np.float64)
    >>> rms(np.array([[3.0, 4.0]])).round(4).tolist()
    [[0.8485, 1.1314]]
    """

    _rms = True

    def __init__(self, normalized_shape: Union[int, Sequence[int]], eps: Optional[float] = None,
                 elementwise_affine: bool = True, dtype: DTypeLike = np.float32) -> None:
        super().__init__(normalized_shape, eps, elementwise_affine, False, dtype)


@sections(LAYER_RAISES)
class GroupNorm(_Module):
    """Group normalization (``torch.nn.GroupNorm``) of an (N, C, ...) input: each sample's
    channels in ``num_groups`` groups, normalized per group, then a per-channel affine.

    Parameters
    ----------
    num_groups : int
        The groups; ``num_channels`` must be divisible by it.
    num_channels : int
        C.
    eps : float, default 1e-5
        Added to each group's variance.
    affine : bool, default True
        Learnable per-channel ``weight`` (ones) and ``bias`` (zeros).
    dtype : float32, float64, float16 or bfloat16, default float32
        The data's dtype.
    bias : bool, default True
        With ``affine``, whether there is a ``bias``.

    Attributes
    ----------
    weight, bias : ndarray of shape (C,) or None
        The per-channel affine parameters, applied after the groups are normalized.
    grad_weight, grad_bias : ndarray or None
        Their gradients, set by ``backward`` (None without the parameter).

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> gn = cnorm.GroupNorm(2, 4)
    >>> x = np.random.default_rng(0).normal(7.0, 3.0, (2, 4, 5, 5)).astype(np.float32)
    >>> y = gn(x)
    >>> bool(np.abs(y.reshape(2, 2, -1).mean(axis=2)).max() < 1e-5)
    True
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 dtype: DTypeLike = np.float32, *, bias: bool = True) -> None:
        super().__init__(dtype)
        self.num_groups = positive_int(num_groups, "num_groups")
        self.num_channels = C = positive_int(num_channels, "num_channels")
        if C % self.num_groups:
            raise ValueError(f"num_channels ({C}) must be divisible by num_groups "
                             f"({self.num_groups})")
        self.eps = float(eps)
        self.affine = bool(affine)
        self.weight = np.ones(C, self._pdtype) if self.affine else None
        self.bias = np.zeros(C, self._pdtype) if self.affine and bias else None

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}")

    def forward(self, x: ArrayLike) -> Array:
        """Normalize ``x`` (N, C, ...) per (sample, group); returns a new array in x's
        memory layout."""
        return self._run(x)

    def _run(self, x: ArrayLike, block: Optional[Callable[[Array], Block]] = None) -> Array:
        """The forward, with a fused block's epilogue (cnorm/nn/blocks.py) when given. A small
        call of the plain norm goes to the entry checked in C first (group_call)."""
        y = self._entry(x) if block is None else None
        if y is not None:
            return y
        x, G, weight, bias = check_group_norm(x, self.num_groups, self.weight, self.bias,
                                              self.dtype, self.num_channels)
        return self._ran(self._with_spare("_y", x, lambda out: GroupNormContext(
            x, G, weight, bias, self.eps, block=None if block is None else block(x), out=out)))

    def _entry(self, x: ArrayLike, epi: Optional[Tuple[Any, Optional[str], float]] = None
               ) -> OptArray:
        """A forward by group_call, the context kept as the checked path would; None where
        group_call does not take the call."""
        got = group_call(x, self.dtype, self.num_channels, self.num_groups, self.weight,
                         self.bias, self.eps, epi=epi, holder=self)
        if got is None:
            return None
        self._saved = got[1] if _grad.enabled() else None
        return got[0]
