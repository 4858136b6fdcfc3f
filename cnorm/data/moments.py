"""Dataset statistics: ``Moments``, per-channel count, mean, variance, min and max that stream
over batches and merge across processes (Chan et al.'s pairwise update, in float64, by the
kernels' merge step)."""
from typing import Any, Optional, Tuple

import numpy as np

from .._core import backend as _backend
from .._core.comm import world
from .._core.types import Array, ArrayLike
from ._view import as_data, channel_axis_of, views

# a batch's (count, mean, M2, min, max) per channel
Stats = Tuple[int, Array, Array, Array, Array]


def batch_moments(x: Array, kind: int, axis: Optional[int]) -> Stats:
    """(count, mean, M2, min, max) per channel of a supported array of kind code ``kind``,
    read in place by the data kernel. ``axis``: the channel axis (non-negative) or None."""
    C = 1 if axis is None else x.shape[axis]
    count = x.size // C if C else 0
    if not count:
        mean, m2, mn, mx = np.full((4, C), np.nan)
        return 0, mean, m2, mn, mx
    stats = np.empty((4, C))
    (addr, shape, strides, C, cs), = views([x], axis)
    _backend.data.data_moments(addr, kind, shape, strides, C, cs, *stats, _backend.threads())
    return count, stats[0], stats[1], stats[2], stats[3]


class Moments:
    """Per-channel running statistics of a dataset, from batches of any real dtype.

    ``update(x)`` adds a batch, ``merge(other)`` adds another ``Moments``, ``allreduce``
    merges over MPI ranks. All use Chan's merge in float64, so any split of the data into
    batches, in any order, gives the same mean and variance to within 1e-12 relative
    (float32 data, summed in float lanes flushed to double as the norm kernels do: to
    float32's tolerance, 2e-6). A batch is reduced in fixed chunks merged in order: the
    result does not depend on the thread count. 8-bit data is summed exactly in integers. A
    ``Moments`` pickles, so partial statistics can travel between processes.

    Parameters
    ----------
    channel_axis : int or None
        The axis of the channels (None: the whole array is one channel).

    Attributes
    ----------
    count : int
        Values per channel so far.
    channels : int or None
        C, fixed by the first update or merge.
    mean, var, std, min, max : ndarray of float64, shape (C,)
        The statistics (``var`` biased; see :meth:`variance`); NaN before any data, empty
        before the channel count is known. Defined for NaN-free data only.

    Raises
    ------
    TypeError
        A ``channel_axis`` that is not an int or None.

    See Also
    --------
    cnorm.moments : the mean and variance of one float array over any axes, by the norms'
        kernel.
    cnorm.Standardizer : a scikit-learn transformer on these statistics.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> data = np.random.default_rng(0).integers(0, 256, (100, 8, 8, 3), dtype=np.uint8)
    >>> m = cnorm.Moments(channel_axis=-1)
    >>> for batch in np.array_split(data, 7):     # e.g. chunks of an np.memmap
    ...     m = m.update(batch)
    >>> m.count, m.channels
    (6400, 3)
    >>> bool(np.allclose(m.mean, data.reshape(-1, 3).mean(axis=0), rtol=1e-12))
    True
    """

    def __init__(self, channel_axis: Optional[int] = 1) -> None:
        channel_axis_of(channel_axis, 64)  # an int or None
        self.channel_axis = channel_axis
        self.channels: Optional[int] = None  # C, fixed by the first update or merge
        self.count = 0
        self._mean = self._m2 = self._min = self._max = np.empty(0)

    @classmethod
    def from_array(cls, x: ArrayLike, channel_axis: Optional[int] = 1) -> "Moments":
        """Statistics of one array: ``Moments(channel_axis).update(x)``.

        Examples
        --------
        >>> import numpy as np, cnorm
        >>> cnorm.Moments.from_array(np.array([[1, 2], [3, 6]]), channel_axis=1).mean.tolist()
        [2.0, 4.0]
        """
        return cls(channel_axis).update(x)

    def copy(self) -> "Moments":
        """An independent copy."""
        m = Moments(self.channel_axis)
        m.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v)
                           for k, v in self.__dict__.items()})
        return m

    def _check_channels(self, C: int, source: str) -> None:
        if self.channels is not None and C != self.channels:
            raise ValueError(f"{source} has {C} channels but these statistics have "
                             f"{self.channels}")

    def update(self, x: ArrayLike) -> "Moments":
        """Add the values of a batch; returns self.

        Parameters
        ----------
        x : ndarray of uint8, int8, uint16, int16, uint32, int32, int64, float16, bfloat16,
            float32 or float64
            Any strides, read in place, never copied; its channel count that of the earlier
            batches.

        Returns
        -------
        Moments
            self.

        Raises
        ------
        TypeError
            An unsupported dtype or a masked array.
        ValueError
            A channel axis out of range, or another channel count. A failed call changes
            nothing.

        Examples
        --------
        >>> import numpy as np, cnorm
        >>> m = cnorm.Moments(channel_axis=None).update(np.arange(4)).update(np.arange(4, 8))
        >>> m.count, float(m.mean[0]), float(m.var[0])
        (8, 3.5, 5.25)
        """
        if self.count:  # the common call, checked in C; it merges in place (arrays of our own)
            n = _backend.data.moments_call(x, self.channel_axis, self.channels, self.count,
                                           self._mean, self._m2, self._min, self._max,
                                           _backend.threads())
            if n is not None:
                self.count += n
                return self
        x, kind = as_data(x)
        axis = None
        if self.channel_axis is not None:
            if x.ndim == 0:
                raise ValueError("a 0-dimensional array has no channel axis; use "
                                 "channel_axis=None for scalars")
            axis = channel_axis_of(self.channel_axis, x.ndim)
        self._check_channels(1 if axis is None else x.shape[axis], "the batch")
        self._add(*batch_moments(x, kind, axis))
        return self

    def merge(self, other: "Moments") -> "Moments":
        """Add the statistics of another ``Moments`` of the same channel count; returns self.

        Raises
        ------
        TypeError
            ``other`` is not a Moments.
        ValueError
            Another channel count (nothing changes).

        Examples
        --------
        >>> import numpy as np, cnorm
        >>> a = cnorm.Moments(None).update(np.arange(4.0))
        >>> float(a.merge(cnorm.Moments(None).update(np.arange(4.0, 8.0))).mean[0])
        3.5
        """
        if not isinstance(other, Moments):
            raise TypeError(f"can only merge a Moments, not {type(other).__name__}")
        if other.channels is None:
            return self
        self._check_channels(other.channels, "the other Moments")
        self._add(other.count, other._mean, other._m2, other._min, other._max)
        return self

    def _add(self, n: int, mean: Array, m2: Array, mn: Array, mx: Array) -> None:
        if self.channels is None:
            self.channels = len(mean)
            self._mean, self._m2, self._min, self._max = np.full((4, len(mean)), np.nan)
        if n == 0:
            return
        if self.count:  # Chan's merge: the kernels' own (merge_stats), as for their chunks
            _, mean, m2 = _backend.kernels.merge_stats(
                np.array([self.count, n], np.float64), np.stack([self._mean, mean]),
                np.stack([self._m2, m2]))
            mn, mx = np.minimum(self._min, mn), np.maximum(self._max, mx)
        self._mean, self._m2, self._min, self._max = (np.array(a, dtype=np.float64)
                                                      for a in (mean, m2, mn, mx))
        self.count += n

    @property
    def mean(self) -> Array:
        return self._mean.copy()

    @property
    def var(self) -> Array:
        return self.variance(0)

    @property
    def std(self) -> Array:
        return np.sqrt(self.var)

    @property
    def min(self) -> Array:
        return self._min.copy()

    @property
    def max(self) -> Array:
        return self._max.copy()

    def variance(self, ddof: int = 0) -> Array:
        """M2 / (count - ddof): ddof=0 the biased variance, ddof=1 the unbiased one (NaN when
        count <= ddof).

        Examples
        --------
        >>> import numpy as np, cnorm
        >>> cnorm.Moments(None).update(np.array([1.0, 3.0])).variance(ddof=1).tolist()
        [2.0]
        """
        if self.count - ddof <= 0:
            return np.full_like(self._m2, np.nan)
        return self._m2 / (self.count - ddof)

    def allreduce(self, comm: Any = None) -> "Moments":
        """Replace these statistics by their merge over every rank of the mpi4py communicator
        ``comm`` (None: COMM_WORLD, or this process alone without mpi4py), in rank order, so
        that every rank holds the same bits; returns self. Ranks without data take part. A
        channel count that differs between ranks raises ValueError on every rank and changes
        nothing."""
        comm = world(comm)
        parts = comm.allgather((self.channels, self.count, self._mean, self._m2, self._min,
                                self._max))
        counts = sorted({p[0] for p in parts if p[0] is not None})
        if len(counts) > 1:
            raise ValueError(f"the ranks' statistics have different channel counts: "
                             f"{[p[0] for p in parts]}")
        merged = Moments(self.channel_axis)
        for channels, n, mean, m2, mn, mx in parts:
            if channels is not None:
                merged._add(n, mean, m2, mn, mx)
        self.__dict__.update(merged.__dict__)
        return self

    def __repr__(self) -> str:
        return (f"Moments(channel_axis={self.channel_axis!r}, channels={self.channels}, "
                f"count={self.count})")
