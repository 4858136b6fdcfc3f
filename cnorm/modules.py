"""Layer objects with torch.nn's names and semantics, on NumPy arrays."""
import numbers

import numpy as np

from ._layout import FLOAT_TYPES, as_float_array, check_ndim
from .functional import (
    _cast,
    _check_bn_args,
    _check_group_args,
    _check_instance_args,
    _check_row_args,
    _GroupSaved,
    _instance_forward,
    _normalized_shape,
    _rms_eps,
    _RowSaved,
    _Saved,
    _update_running,
)

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm",
           "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm"]


def _layer_dtype(dtype):
    dt = np.dtype(dtype)
    if dt.type not in FLOAT_TYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt.name}")
    return dt


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class _Layer:
    """Shared parts of every layer: mode, gradients, state_dict, calling convention."""

    _param_names = ("weight", "bias")
    _buffer_names = ()

    def __init__(self, dtype):
        self.dtype = _layer_dtype(dtype)
        self.training = True
        self.grad_weight = None
        self.grad_bias = None
        self._saved = None

    def __call__(self, x):
        return self.forward(x)

    def train(self, mode=True):
        """Set training mode (``mode=True``) or evaluation mode; returns the layer."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
        self.training = mode
        return self

    def eval(self):
        """Set evaluation mode; returns the layer."""
        return self.train(False)

    def state_dict(self):
        """Parameters and buffers under torch's key names, as copies (``dict[str, ndarray]``)."""
        return {name: np.array(getattr(self, name), copy=True)
                for name in self._param_names + self._buffer_names
                if getattr(self, name) is not None}

    def _optional_keys(self):
        return ()

    def load_state_dict(self, state_dict):
        """Load arrays from a dict shaped like :meth:`state_dict` (torch tensors are accepted).

        Values are cast to the layer's dtype, as torch does. Missing or unexpected keys raise
        ``KeyError``, shape mismatches ``ValueError``; on any error nothing is changed.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict and k not in self._optional_keys()]
        unexpected = [k for k in state_dict if k not in own]
        if missing or unexpected:
            raise KeyError(f"error loading state_dict into {type(self).__name__}: "
                           f"missing keys {missing}, unexpected keys {unexpected}")
        staged = {}
        for key, value in state_dict.items():
            target = own[key]
            try:
                new = np.asarray(value).astype(target.dtype, casting="unsafe")
            except (TypeError, ValueError) as e:
                raise ValueError(f"state_dict[{key!r}] cannot be read as an array of "
                                 f"{target.dtype.name}: {e}") from None
            if new.shape != target.shape:
                raise ValueError(f"state_dict[{key!r}] has shape {new.shape}, "
                                 f"expected {target.shape}")
            staged[key] = new
        for key, new in staged.items():  # copy in place: references users hold stay live
            getattr(self, key)[...] = new

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def _ran(self, saved):
        """Keep a successful forward for backward; return its output (not kept alive here)."""
        self._saved = saved
        y, saved.y = saved.y, None
        return y

    def backward(self, grad_output):
        """Gradient of the loss with respect to the last ``forward``'s input.

        Also sets ``grad_weight`` and ``grad_bias`` (overwritten; None without the parameter).
        Matches torch autograd for the mode the forward ran in. The forward's input must not
        have been modified in between (it is kept by reference, not copied).
        """
        if self._saved is None:
            raise RuntimeError("backward called before forward")
        dx, gw, gb = self._saved.backward(grad_output)
        self.grad_weight, self.grad_bias = _cast(gw, self.dtype), _cast(gb, self.dtype)
        return dx


class _BatchNorm(_Layer):
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=np.float32, *, bias=True):
        super().__init__(dtype)
        self.num_features = _positive_int(num_features, "num_features")
        self.eps = float(eps)
        if momentum is not None and not isinstance(momentum, numbers.Real):
            raise TypeError(f"momentum must be a float or None, got {momentum!r}")
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        C, dt = self.num_features, self.dtype
        self.weight = np.ones(C, dt) if self.affine else None
        self.bias = np.zeros(C, dt) if self.affine and bias else None
        if self.track_running_stats:
            self.running_mean = np.zeros(C, dt)
            self.running_var = np.ones(C, dt)
            self.num_batches_tracked = np.array(0, dtype=np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def _optional_keys(self):
        return ("num_batches_tracked",)  # torch fills it in for old checkpoints

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    def _check_channels(self, x):
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected input with {self.num_features} channels "
                             f"(num_features), got {x.shape[1]} channels")

    def reset_running_stats(self):
        """Running statistics back to mean 0, variance 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x):
        """Normalize ``x`` (N, C, ...) per channel; returns a new array in x's memory layout.

        Training mode normalizes with the batch statistics and, with
        ``track_running_stats``, updates the running ones; eval mode uses the running
        statistics (or the batch's when ``track_running_stats=False``).
        """
        x = as_float_array(x, self.dtype)
        check_ndim(x, self._ndims)
        self._check_channels(x)
        # Parameters may have been reassigned by the user: the functional form's checks run
        # on every call.
        batch_stats = self.training or not self.track_running_stats
        update = self.training and self.track_running_stats
        x, running_mean, running_var, weight, bias = _check_bn_args(
            x, self.running_mean, self.running_var, self.weight, self.bias, batch_stats, update)
        saved = _Saved(x, running_mean, running_var, weight, bias, self.eps, batch_stats)
        # Every check passed and the kernels ran: only now is state changed.
        if update:
            self.num_batches_tracked += 1
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else float(self.momentum))
            _update_running(running_mean, running_var, saved, factor)
            # keep the arrays that were updated (a byte-swapped assignment was converted)
            self.running_mean, self.running_var = running_mean, running_var
        return self._ran(saved)


class BatchNorm1d(_BatchNorm):
    """Batch normalization over a 2D (N, C) or 3D (N, C, L) input, per channel C."""

    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization over a 4D (N, C, H, W) input, per channel C."""

    _ndims = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch normalization over a 5D (N, C, D, H, W) input, per channel C."""

    _ndims = (5,)


class _InstanceNorm(_BatchNorm):
    """Instance norm: batch norm's constructor, buffers and repr; statistics per instance."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, dtype=np.float32, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype,
                         bias=bias)
        self._unbatched = False

    def forward(self, x):
        """Normalize each (sample, channel) of ``x`` over its spatial axes; returns a new array
        in x's memory layout. An unbatched input (without the N axis) is accepted, as torch.

        With ``track_running_stats``, training updates the running statistics with the batch
        mean of the per-instance statistics (``momentum=None``: not updated, as torch) and eval
        normalizes with them. ``num_batches_tracked`` is not advanced, as torch.
        """
        x = as_float_array(x, self.dtype)
        check_ndim(x, self._ndims)
        unbatched = x.ndim == self._ndims[0]
        if unbatched:
            x = x[None]
        self._check_channels(x)
        use_input_stats = self.training or not self.track_running_stats
        update = use_input_stats and self.track_running_stats
        x, running_mean, running_var, weight, bias = _check_instance_args(
            x, self.running_mean, self.running_var, self.weight, self.bias, use_input_stats,
            update)
        saved = _instance_forward(x, running_mean, running_var, weight, bias, use_input_stats,
                                  0.0 if self.momentum is None else self.momentum, self.eps)
        if update:  # keep the arrays that were updated (a byte-swapped assignment was converted)
            self.running_mean, self.running_var = running_mean, running_var
        self._unbatched = unbatched
        y = self._ran(saved)
        return y[0] if unbatched else y

    def backward(self, grad_output):
        if self._saved is not None and self._unbatched:
            return super().backward(as_float_array(grad_output, self.dtype, "grad_output")[None])[0]
        return super().backward(grad_output)


class InstanceNorm1d(_InstanceNorm):
    """Instance normalization over a 3D (N, C, L) or unbatched 2D (C, L) input."""

    _ndims = (2, 3)


class InstanceNorm2d(_InstanceNorm):
    """Instance normalization over a 4D (N, C, H, W) or unbatched 3D (C, H, W) input."""

    _ndims = (3, 4)


class InstanceNorm3d(_InstanceNorm):
    """Instance normalization over a 5D (N, C, D, H, W) or unbatched 4D input."""

    _ndims = (4, 5)


class _RowNorm(_Layer):
    """Layer and RMS norm: statistics per row over the last ``len(normalized_shape)`` axes,
    parameters shaped ``normalized_shape``."""

    _rms = False

    def __init__(self, normalized_shape, eps, elementwise_affine, bias, dtype):
        super().__init__(dtype)
        self.normalized_shape = ns = _normalized_shape(normalized_shape)
        self.eps = None if eps is None else float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = np.ones(ns, self.dtype) if self.elementwise_affine else None
        self.bias = np.zeros(ns, self.dtype) if self.elementwise_affine and bias else None

    def forward(self, x):
        """Normalize each row over the normalized axes; returns a new array shaped like x."""
        x, ns, weight, bias = _check_row_args(x, self.normalized_shape, self.weight, self.bias,
                                              self.dtype)
        eps = _rms_eps(self.eps, x.dtype) if self._rms else self.eps
        return self._ran(_RowSaved(x, ns, weight, bias, eps, rms=self._rms))


class LayerNorm(_RowNorm):
    """Layer normalization over the last ``len(normalized_shape)`` axes (torch.nn.LayerNorm).

    ``weight`` and ``bias`` have shape ``normalized_shape`` (``bias`` None with
    ``bias=False``; both None with ``elementwise_affine=False``).
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 dtype=np.float32):
        super().__init__(normalized_shape, eps, elementwise_affine, bias, dtype)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class RMSNorm(_RowNorm):
    """Root-mean-square normalization (torch.nn.RMSNorm): ``x / sqrt(mean(x**2) + eps) *
    weight`` over the last ``len(normalized_shape)`` axes. ``eps=None`` is the machine epsilon
    of the layer's dtype. ``bias`` is always None."""

    _rms = True

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, dtype=np.float32):
        super().__init__(normalized_shape, eps, elementwise_affine, False, dtype)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class GroupNorm(_Layer):
    """Group normalization (torch.nn.GroupNorm) of an (N, C, ...) input: each sample's
    channels in ``num_groups`` groups, normalized per group, then a per-channel affine."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=np.float32, *,
                 bias=True):
        super().__init__(dtype)
        self.num_groups = _positive_int(num_groups, "num_groups")
        self.num_channels = C = _positive_int(num_channels, "num_channels")
        if C % self.num_groups:
            raise ValueError(f"num_channels ({C}) must be divisible by num_groups "
                             f"({self.num_groups})")
        self.eps = float(eps)
        self.affine = bool(affine)
        self.weight = np.ones(C, self.dtype) if self.affine else None
        self.bias = np.zeros(C, self.dtype) if self.affine and bias else None

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}")

    def forward(self, x):
        """Normalize ``x`` (N, C, ...) per (sample, group); returns a new array in x's
        memory layout."""
        x = as_float_array(x, self.dtype)
        if x.ndim < 2:
            raise ValueError(f"expected 2D or higher input (N, C, ...) (got {x.ndim}D input)")
        if x.shape[1] != self.num_channels:
            raise ValueError(f"expected input with {self.num_channels} channels "
                             f"(num_channels), got {x.shape[1]} channels")
        x, G, weight, bias = _check_group_args(x, self.num_groups, self.weight, self.bias)
        return self._ran(_GroupSaved(x, G, weight, bias, self.eps))
