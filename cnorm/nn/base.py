"""The bases of every layer: ``_Module`` (mode, parameters, state_dict, backward, output
recycling, pickling) and ``_NormBase`` (num_features and running statistics, for the batch and
instance norms). The hierarchy follows torch's."""
import numbers
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, TypeVar, Union

import numpy as np

from .._core.checks import layer_dtype, positive_int
from .._core.dtypes import param_dtype
from .._core.recycle import take
from .._core.types import Array, ArrayLike, DTypeLike, OptArray
from . import grad as _grad
from ._ops.act import Block
from ._ops.context import Context, running_factor

M = TypeVar("M", bound="_Module")
R = TypeVar("R")


def _counter(value: Any) -> Array:
    """``value`` as a writeable 0-d int64 array (itself when it is one already)."""
    if (type(value) is np.ndarray and value.dtype == np.int64 and value.ndim == 0
            and value.flags.writeable):
        return value
    a = np.asarray(value)
    if a.ndim != 0 or a.dtype.kind not in "iuf" or a != np.floor(a):
        raise ValueError(f"num_batches_tracked must be an integer, got {value!r}")
    return np.array(a, dtype=np.int64)


class _Module:
    """Shared parts of every layer: mode, gradients, state_dict, calling convention."""

    _param_names: Tuple[str, ...] = ("weight", "bias")
    _buffer_names: Tuple[str, ...] = ()
    weight: OptArray
    bias: OptArray
    grad_weight: OptArray
    grad_bias: OptArray
    _saved: Optional[Context]

    def __init__(self, dtype: DTypeLike) -> None:
        self.dtype = layer_dtype(dtype)
        self._pdtype = param_dtype(self.dtype)  # parameters and statistics: float32 for halves
        self.training = True
        self.grad_weight = None
        self.grad_bias = None
        self._saved = None

    def __call__(self, x: ArrayLike) -> Array:
        return self.forward(x)

    def forward(self, x: ArrayLike) -> Array:
        raise NotImplementedError  # each layer's

    def _run(self, x: ArrayLike, block: Optional[Callable[[Array], Block]] = None) -> Array:
        raise NotImplementedError  # the forward of a norm that a fused block extends

    def _entry(self, x: ArrayLike, epi: Optional[Tuple[Any, Optional[str], float]] = None
               ) -> OptArray:
        """A small forward by the layer's entry checked in C (``epi``: a fused block's
        residual, activation and slope), its context kept; None where the layer has none or
        the entry does not take the call (the checked path then runs)."""
        return None

    def extra_repr(self) -> str:
        return ""

    def train(self: M, mode: bool = True) -> M:
        """Set training mode (``mode=True``) or evaluation mode; returns the layer."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
        self.training = mode
        return self

    def eval(self: M) -> M:
        """Set evaluation mode; returns the layer."""
        return self.train(False)

    def state_dict(self) -> Dict[str, Array]:
        """Parameters and buffers under torch's key names, as copies (``dict[str, ndarray]``)."""
        return {name: np.array(getattr(self, name), copy=True)
                for name in self._param_names + self._buffer_names
                if getattr(self, name) is not None}

    def _optional_keys(self) -> Tuple[str, ...]:
        return ()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
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
        staged: Dict[str, Array] = {}
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
        for key, new in staged.items():  # every value is staged: nothing left can fail
            self._store(key, new)

    def _store(self, key: str, new: Array) -> None:
        """Parameter or buffer ``key`` takes the values of the array ``new``: in place, so that
        references users hold stay live, unless the user assigned an array that cannot take
        them (read-only, another dtype): that one is replaced."""
        target = getattr(self, key)
        if (isinstance(target, np.ndarray) and target.flags.writeable
                and target.shape == new.shape and target.dtype == new.dtype):
            target[...] = new
        else:
            setattr(self, key, new)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def _with_spare(self, slot: str, like: Any, make: Callable[[OptArray], R],
                    phase_of: Any = None) -> R:
        """``make(out)``: ``out`` an array over this layer's memory for ``slot`` ("_y": the
        forward's output, "_dx": the backward's) in the shape, dtype and memory layout of
        ``like`` (an input, or a context's layout, then placed from ``phase_of``:
        recycle.take), or None for a small output.

        A training loop that drops each step's output then writes every step into the same
        memory: the allocator hands blocks this large back to the OS when they are freed, and
        fresh pages cost a page fault each (AMD EPYC, BatchNorm2d (16, 128, 28, 28) forward +
        backward: 6.9 ms with fresh outputs, 1.8 ms reused). Memory that anything made of it
        still refers to is never written again (cnorm/_core/recycle.py)."""
        return make(take(self, slot, like, phase_of))

    def _ran(self, ctx: Context) -> Array:
        """Keep a successful forward for backward (not under cnorm.no_grad()); return its
        output."""
        self._saved = ctx if _grad.enabled() else None
        y: Array = ctx.y
        ctx.y = None
        return y

    # Caches: a pickle, copy or deepcopy leaves them out (a checkpoint never carries a batch):
    # these are None in the copy, the recycled memory (_y, _dx) is not there at all.
    _cleared = ("_saved", "grad_residual")
    _dropped = ("_y", "_dx")

    def __getstate__(self) -> Dict[str, Any]:
        """Parameters, buffers, hyper-parameters, mode and parameter gradients; not the saved
        forward, nor the recycled output memory."""
        state = {k: v for k, v in self.__dict__.items() if k not in self._dropped}
        for k in self._cleared:
            if k in state:
                state[k] = None
        return state

    def backward(self, grad_output: ArrayLike) -> Array:
        """Gradient of the loss with respect to the last ``forward``'s input.

        Also sets ``grad_weight`` and ``grad_bias`` (overwritten; None without the parameter).
        Matches torch autograd for the mode the forward ran in. The forward's input must not
        have been modified in between (it is kept by reference, not copied).
        """
        if self._saved is None:
            raise RuntimeError("backward called before forward (or after a forward under "
                               "cnorm.no_grad())")
        saved = self._saved
        dx, self.grad_weight, self.grad_bias = self._with_spare(
            "_dx", saved.layout, lambda out: saved.backward(grad_output, out), grad_output)
        return dx


class _NormBase(_Module):
    """Batch and instance norm: num_features, affine parameters and running statistics."""

    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    _ndims: Union[int, Tuple[int, ...]] = ()  # the ranks taken (an int: that rank or more)
    running_mean: OptArray
    running_var: OptArray

    def __init__(self, num_features: int, eps: float, momentum: Optional[float], affine: bool,
                 track_running_stats: bool, dtype: DTypeLike, bias: bool) -> None:
        super().__init__(dtype)
        self.num_features = C = positive_int(num_features, "num_features")
        self.eps = float(eps)
        if momentum is not None and not isinstance(momentum, numbers.Real):
            raise TypeError(f"momentum must be a float or None, got {momentum!r}")
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.weight = np.ones(C, self._pdtype) if self.affine else None
        self.bias = np.zeros(C, self._pdtype) if self.affine and bias else None
        if self.track_running_stats:
            self.running_mean = np.zeros(C, self._pdtype)
            self.running_var = np.ones(C, self._pdtype)
            self.num_batches_tracked = np.array(0, dtype=np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    @property
    def num_batches_tracked(self) -> OptArray:
        """Training batches seen (a 0-d int64 array), or None without running statistics.
        Any integer assigned to it is stored as such an array (torch's is a tensor)."""
        return self._num_batches_tracked

    @num_batches_tracked.setter
    def num_batches_tracked(self, value: Any) -> None:
        self._num_batches_tracked = None if value is None else _counter(value)

    def _optional_keys(self) -> Tuple[str, ...]:
        return ("num_batches_tracked",)  # torch fills it in for old checkpoints

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    def reset_running_stats(self) -> None:
        """Running statistics back to mean 0, variance 1, no batches tracked."""
        if self.track_running_stats:
            C, dt = self.num_features, self._pdtype
            self._store("running_mean", np.zeros(C, dt))
            self._store("running_var", np.ones(C, dt))
            self._store("num_batches_tracked", np.array(0, dtype=np.int64))

    def _update_running(self, ctx: Any, rm: OptArray, rv: OptArray) -> None:
        """The running statistics and num_batches_tracked, moved by one kernel call (atomic:
        a KeyboardInterrupt cannot fall between them). ``rm``, ``rv``: the checked arrays,
        kept first (a byte-swapped assignment was converted; same values)."""
        self.running_mean, self.running_var = rm, rv
        count = self.num_batches_tracked
        assert count is not None  # an update needs track_running_stats
        ctx.update_running(rm, rv, running_factor(self.momentum, count), count)

    def _checked(self, check: Callable[..., Any], x: ArrayLike, batch_stats: bool,
                 **rules: Any) -> Tuple[bool, Tuple[Array, OptArray, OptArray, OptArray,
                                                    OptArray]]:
        """Run the op family's check on x with this layer's arrays and rules (and ``rules``);
        returns ``(update, (x, running_mean, running_var, weight, bias))``."""
        update = batch_stats and self.training and self.track_running_stats
        return update, check(x, self.running_mean, self.running_var, self.weight, self.bias,
                             batch_stats, update, dtype=self.dtype, ndims=self._ndims,
                             num_features=self.num_features, **rules)


