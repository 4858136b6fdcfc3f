"""``Standardizer``: per-channel standardization as a scikit-learn transformer, fitted on arrays,
iterators of batches or dask arrays, applied by the data kernel in one pass.

scikit-learn and dask stay optional: with scikit-learn installed the class is a real
scikit-learn estimator (``BaseEstimator``, ``TransformerMixin``, input validation, feature
names); without it, a small base gives the same ``get_params``/``set_params``/``fit_transform``.
"""
import collections.abc
import inspect
import numbers
import sys
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, Optional, Tuple, TypeVar

import numpy as np

from .._core import backend as _backend
from .._core.checks import refuse_masked
from .._core.dtypes import KINDS, WIDE_INTS
from .._core.layout import check_out, same_place
from .._core.types import Array, OptArray
from ._view import as_data, channel_axis_of, kind_of, views
from .moments import Moments, batch_moments

try:
    from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError:  # scikit-learn is optional
    BaseEstimator = OneToOneFeatureMixin = TransformerMixin = None

E = TypeVar("E", bound="_Estimator")


class _Estimator:
    """The part of scikit-learn's estimator protocol cnorm needs when it is not installed."""

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {p: getattr(self, p) for p in names}

    def set_params(self: E, **params: Any) -> E:
        valid = self.get_params()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"invalid parameter {key!r} for {type(self).__name__}")
            setattr(self, key, value)
        return self

    def fit(self: E, X: Any, y: Any = None, progress: bool = False) -> E:
        raise NotImplementedError  # Standardizer's

    def transform(self, X: Any, out: OptArray = None, copy: Optional[bool] = None) -> Any:
        raise NotImplementedError  # Standardizer's

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        return self.fit(X, y, **fit_params).transform(X)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


if TYPE_CHECKING or BaseEstimator is None:  # scikit-learn has no type information
    _Base = _Estimator
else:
    class _Base(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
        """scikit-learn's estimator and transformer bases."""


def _is_dask(X: Any) -> bool:
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "map_blocks")


def _progress(batches: Iterable[Any], show: bool, total: Optional[int] = None) -> Iterator[Any]:
    """``batches`` with a progress bar when asked for: tqdm if installed, else a counter on
    stderr."""
    if not show:
        yield from batches
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        for i, b in enumerate(batches, 1):
            yield b
            print(f"\rStandardizer.fit: {i} batches", end="", file=sys.stderr)
        print(file=sys.stderr)
        return
    yield from tqdm(batches, total=total, desc="Standardizer.fit", unit="batch")


def _numeric(x: Any, what: str = "X") -> Tuple[Array, int]:
    """An array and its kind code: booleans as uint8 (a view), integers the kernels lack
    (uint64) as float64."""
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    elif x.dtype.kind in "iu" and x.dtype.name not in KINDS:
        x = x.astype(np.float64)
    return as_data(x, what=what)


def _apply(x: Array, kind: int, axis: Optional[int], mean: Array, mul: Array, add: Array,
           out_dtype: np.dtype[Any], out: OptArray = None) -> Tuple[Array, bool]:
    """(x - mean) * mul + add per channel into a new array of out_dtype (or ``out``), one pass,
    the input's memory layout kept. Returns (y, whether x held NaN or infinity)."""
    wide = kind in WIDE_INTS and out_dtype != np.float64
    if out is None or wide:  # wide integers into float32: computed in float64, then rounded
        y = np.empty_like(x, dtype=np.float64 if wide else out_dtype)
    else:
        y = out
    ax = axis if x.ndim else None
    (xa, shape, xs, C, xcs), (ya, _, ys, _, ycs) = views([x, y], ax)
    bad: bool = _backend.data.data_affine(
        xa, kind, ya, kind_of(y.dtype), shape, xs, ys, C, xcs, ycs,
        np.ascontiguousarray(mean, np.float64), np.ascontiguousarray(mul, np.float64),
        np.ascontiguousarray(add, np.float64), None, _backend.threads())
    if wide:
        if out is None:
            return y.astype(out_dtype), bad
        out[...] = y
        return out, bad
    return y, bad


def _block_moments(block: Any, axis: Optional[int]) -> Moments:
    """One dask block's statistics (run on a worker)."""
    return Moments(axis).update(_numeric(block)[0])


def _merged(a: Moments, b: Moments) -> Moments:
    """A new Moments holding a then b (inputs unchanged, as dask may share them)."""
    m = Moments(a.channel_axis)
    return m.merge(a).merge(b)


def _block_apply(block: Any, axis: Optional[int], mean: Array, mul: Array, add: Array,
                 out_dtype: np.dtype[Any]) -> Array:
    y, bad = _apply(*_numeric(block), axis, mean, mul, add, out_dtype)
    if bad:
        raise ValueError("Input X contains NaN or infinity.")
    return y


class Standardizer(_Base):
    """Standardize per channel: ``(X - mean_) / scale_``, a scikit-learn transformer.

    With ``channel_axis=1`` on 2-D input it is a drop-in for
    ``sklearn.preprocessing.StandardScaler`` (same attributes ``mean_``, ``var_``,
    ``scale_``, ``n_samples_seen_``, ``n_features_in_``; same results to 1e-12 on float64
    data, to 2e-6 on float32 (the float lanes of :class:`Moments`);
    ``scale_ = 1`` for (near-)constant features). On N-D input the statistics are per
    channel along ``channel_axis`` (``None``: one global channel).

    ``fit`` accepts an array-like, an iterator of arrays (batches, e.g. chunks of an
    ``np.memmap`` larger than memory; ``progress=True`` shows a bar) or a dask array (one
    ``Moments`` per block, merged in a tree in block order; ``transform`` of a dask array
    is lazy). Statistics are float64 and deterministic (see ``Moments``).

    Output dtype: the input's for float32/float64, float32 for integer and half input.
    ``eps`` is added to the variance before the square root. NaN or infinity in the data
    raise ``ValueError`` (unlike StandardScaler, which ignores NaN in ``fit``); in
    ``transform`` the check costs no extra pass, and ``out`` may be partly written when
    it raises.

    Parameters
    ----------
    channel_axis : int or None, default 1
        The axis of the channels (features).
    with_mean, with_std : bool, default True
        Center, and scale to unit variance.
    eps : float, default 0.0
        Added to the variance.
    copy : bool, default True
        False: transform float input of the output dtype in place.

    Attributes
    ----------
    mean_, var_, scale_ : ndarray of float64, shape (C,), or None
        The fitted statistics (None where ``with_mean``/``with_std`` turn them off).
    n_samples_seen_ : int
        Values per channel seen.
    n_features_in_ : int
        C.

    Raises
    ------
    ValueError
        From ``fit`` and ``transform``: NaN or infinity, another channel count, a bad
        ``eps`` or ``channel_axis``. A failed ``fit`` or ``partial_fit`` changes nothing.

    See Also
    --------
    cnorm.Moments : the statistics it is fitted with.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> X = np.random.default_rng(0).normal(5.0, 2.0, (1000, 3)).astype(np.float32)
    >>> s = cnorm.Standardizer().fit(X)
    >>> Z = s.transform(X)
    >>> Z.dtype, bool(np.allclose(Z.mean(axis=0), 0, atol=1e-5))
    (dtype('float32'), True)
    >>> batches = (X[i:i + 100] for i in range(0, 1000, 100))    # or chunks of a memmap
    >>> bool(np.allclose(cnorm.Standardizer().fit(batches).mean_, s.mean_, rtol=1e-6))
    True
    """

    # the fitted attributes (set by fit, as scikit-learn's estimators do: absent before)
    mean_: OptArray
    var_: OptArray
    scale_: OptArray
    n_samples_seen_: int
    n_features_in_: int
    _moments: Moments

    def __init__(self, channel_axis: Optional[int] = 1, with_mean: bool = True,
                 with_std: bool = True, eps: float = 0.0, copy: bool = True) -> None:
        self.channel_axis = channel_axis
        self.with_mean = with_mean
        self.with_std = with_std
        self.eps = eps
        self.copy = copy

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()  # type: ignore[misc]  # scikit-learn's
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # -- validation ------------------------------------------------------------------------

    def _check_params(self) -> None:
        channel_axis_of(self.channel_axis, 64)
        if (isinstance(self.eps, (bool, np.bool_)) or not isinstance(self.eps, numbers.Real)
                or not self.eps >= 0):
            raise ValueError(f"eps must be a non-negative number, got {self.eps!r}")

    def _validate(self, X: Any, reset: bool) -> Tuple[Array, int, Optional[int]]:
        """X as a supported ndarray, its kind code and its channel axis; checks the channel
        count (and, with scikit-learn, the feature names)."""
        refuse_masked(X, "X")  # scikit-learn's validation would drop the mask
        fast = (not reset and type(X) is np.ndarray and X.dtype.kind in "fiub" and X.size
                and not hasattr(self, "feature_names_in_"))  # nothing for scikit-learn to add
        if BaseEstimator is not None and not fast:
            X = validate_data(self, X, reset=reset, dtype="numeric", ensure_2d=False,
                              allow_nd=True, ensure_all_finite=False, copy=False)
        X, kind = _numeric(X)
        axis = None
        if self.channel_axis is not None:
            if X.ndim == 0:
                raise ValueError("expected an array with a channel axis, got a scalar")
            axis = channel_axis_of(  # scikit-learn's advice, which its estimator checks expect
                self.channel_axis, X.ndim, "Reshape your data either using array.reshape(-1, 1) "
                "if it has a single feature or array.reshape(1, -1) if it contains a single "
                "sample.")
        C = 1 if axis is None else X.shape[axis]
        if not reset and C != self.n_features_in_:
            raise ValueError(f"X has {C} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        return X, kind, axis

    # -- fitting ---------------------------------------------------------------------------

    def _reset(self) -> None:
        for name in ("mean_", "var_", "scale_", "n_samples_seen_", "n_features_in_",
                     "feature_names_in_", "_moments"):
            self.__dict__.pop(name, None)

    def fit(self, X: Any, y: Any = None, progress: bool = False) -> "Standardizer":
        """Statistics of X (array-like, iterator of batches, or dask array); returns self.
        ``progress=True`` shows a bar over the batches (tqdm if installed)."""
        self._check_params()
        if _is_dask(X):
            m = self._dask_moments(X)
            self._reset()
            self.n_features_in_ = m.channels or 0  # set: _dask_moments saw data
            return self._finish(m)
        fitted = self._clone_empty()  # fitted apart: a failed fit changes nothing
        if isinstance(X, collections.abc.Iterator):
            for batch in _progress(X, progress):
                fitted.partial_fit(batch)
            if not hasattr(fitted, "_moments"):
                raise ValueError("fit received an empty iterator: no batches")
        else:
            fitted.partial_fit(X)
        self._reset()
        self.__dict__.update({k: v for k, v in fitted.__dict__.items()
                              if k.endswith("_") or k == "_moments"})
        return self

    def _clone_empty(self) -> "Standardizer":
        return type(self)(**{k: v for k, v in self.__dict__.items()
                             if k in ("channel_axis", "with_mean", "with_std", "eps", "copy")})

    def partial_fit(self, X: Any, y: Any = None) -> "Standardizer":
        """Add a batch to the statistics; returns self. A failed call changes nothing."""
        before = dict(self.__dict__)
        try:
            return self._partial_fit(X)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _partial_fit(self, X: Any) -> "Standardizer":
        self._check_params()
        first = not hasattr(self, "_moments")
        X, kind, axis = self._validate(X, reset=first)
        n, mean, m2, mn, mx = batch_moments(X, kind, axis)
        if n == 0:
            raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum "
                             f"of 1 is required by {type(self).__name__}.")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(m2))):
            raise ValueError("Input X contains NaN or infinity.")
        m = Moments(axis) if first else self._moments.copy()
        if first:
            self.n_features_in_ = len(mean)
        m._add(n, mean, m2, mn, mx)
        return self._finish(m)

    def _dask_moments(self, X: Any) -> Moments:
        from dask.delayed import delayed

        axis = channel_axis_of(self.channel_axis, X.ndim)
        if axis is not None:
            X = X.rechunk({axis: -1})  # every block holds all channels
        parts = [delayed(_block_moments)(b, axis) for b in X.to_delayed().ravel()]
        while len(parts) > 1:  # a binary tree, pairs in block order
            parts = [delayed(_merged)(*parts[i:i + 2]) if i + 1 < len(parts) else parts[i]
                     for i in range(0, len(parts), 2)]
        m: Moments = parts[0].compute()
        if m.count == 0:
            raise ValueError("Found array with 0 sample(s) while a minimum of 1 is required.")
        if not (np.all(np.isfinite(m.mean)) and np.all(np.isfinite(m.var))):
            raise ValueError("Input X contains NaN or infinity.")
        return m

    def _finish(self, m: Moments) -> "Standardizer":
        """The fitted attributes from the statistics m."""
        self._moments = m
        self.n_samples_seen_ = int(m.count)
        need = self.with_mean or self.with_std
        self.mean_ = m.mean if need else None
        self.var_ = m.var if self.with_std else None
        if self.with_std:
            var = m.var + self.eps
            eps = np.finfo(np.float64).eps
            constant = var <= m.count * eps * var + (m.count * m.mean * eps) ** 2
            self.scale_ = np.where(constant, 1.0, np.sqrt(var))
        else:
            self.scale_ = None
        return self

    # -- applying --------------------------------------------------------------------------

    def _coefs(self, inverse: bool) -> Tuple[Array, Array, Array]:
        C = self.n_features_in_
        mean = self.mean_ if self.with_mean and self.mean_ is not None else np.zeros(C)
        scale = self.scale_ if self.with_std and self.scale_ is not None else np.ones(C)
        if inverse:
            return np.zeros(C), scale, mean
        return mean, 1.0 / scale, np.zeros(C)

    def transform(self, X: Any, out: OptArray = None, copy: Optional[bool] = None) -> Any:
        """``(X - mean_) / scale_`` per channel, in one pass. ``out``: write there (shape of X,
        the output dtype); ``copy=False`` (or the ``copy`` parameter) transforms float X in
        place. A dask array gives a lazy dask array."""
        return self._map(X, out, copy, inverse=False)

    def inverse_transform(self, X: Any, out: OptArray = None,
                          copy: Optional[bool] = None) -> Any:
        """``X * scale_ + mean_`` per channel: undoes ``transform``."""
        return self._map(X, out, copy, inverse=True)

    def _map(self, X: Any, out: OptArray, copy: Optional[bool], inverse: bool) -> Any:
        if (not inverse and out is None and type(X) is np.ndarray
                and (self.copy if copy is None else copy) and "n_features_in_" in self.__dict__
                and "feature_names_in_" not in self.__dict__):  # the common call, in C
            y: OptArray = _backend.data.standardize_call(
                X, self.channel_axis, self.n_features_in_,
                self.mean_ if self.with_mean else None, self.scale_ if self.with_std else None,
                _backend.threads())
            if y is not None:
                return y
        if BaseEstimator is not None:
            check_is_fitted(self, "n_features_in_")
        elif not hasattr(self, "n_features_in_"):
            raise AttributeError(f"this {type(self).__name__} is not fitted yet; call fit")
        coefs = self._coefs(inverse)
        if _is_dask(X):
            if out is not None:
                raise TypeError("out= cannot take the result of a dask array, which is lazy: "
                                "store it with dask (da.store) or compute it")
            return self._dask_map(X, coefs)
        X, kind, axis = self._validate(X, reset=False)
        out_dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        copy = self.copy if copy is None else copy
        if out is None and not copy and X.dtype == out_dtype and X.flags.writeable:
            out = X
        if out is not None:
            check_out(out, X.shape, out_dtype, None)  # any strides: the kernel writes in place
            if out is not X and not same_place(out, X) and np.may_share_memory(out, X):
                X = X.copy()  # a partial overlap: read a copy, as NumPy's ufuncs buffer it
        y, bad = _apply(X, kind, axis, *coefs, out_dtype, out)
        if bad:
            raise ValueError("Input X contains NaN or infinity.")
        return y

    def _dask_map(self, X: Any, coefs: Tuple[Array, Array, Array]) -> Any:
        axis = channel_axis_of(self.channel_axis, X.ndim)
        if axis is not None:
            if X.shape[axis] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[axis]} features, but {type(self).__name__} "
                                 f"is expecting {self.n_features_in_} features as input.")
            X = X.rechunk({axis: -1})
        out_dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        return X.map_blocks(_block_apply, axis, *coefs, out_dtype, dtype=out_dtype)
