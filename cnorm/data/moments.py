"""Dataset statistics: ``Moments``, per-channel count, mean, variance, min and max that stream
over batches and merge across processes (Chan et al.'s pairwise update, in float64, by the
kernels' merge step)."""
import numpy as np

from .._core import backend as _backend
from .._core.comm import world
from ._view import as_data, channel_axis_of, views


def batch_moments(x, kind, axis):
    """(count, mean, M2, min, max) per channel of a supported array of kind code ``kind``,
    read in place by the data kernel. ``axis``: the channel axis (non-negative) or None."""
    C = 1 if axis is None else x.shape[axis]
    count = x.size // C if C else 0
    if not count:
        return (0, *np.full((4, C), np.nan))
    stats = np.empty((4, C))
    (addr, shape, strides, C, cs), = views([x], axis)
    _backend.data.data_moments(addr, kind, shape, strides, C, cs, *stats, _backend.threads())
    return (count, *stats)


class Moments:
    """Per-channel running statistics of a dataset, from batches of any real dtype.

    ``channel_axis`` is the axis of the channels (``None``: the whole array is one channel).
    ``update(x)`` adds a batch (uint8/int8/uint16/int16/uint32/int32/int64, float16,
    bfloat16 from ml_dtypes, float32, float64; any strides, read in place, never copied);
    ``merge(other)`` adds another ``Moments``. Both use Chan's merge in float64, so any split
    of the data into batches, in any order, gives the same mean and variance to within
    1e-12 relative. A batch is reduced in fixed chunks merged in order: the result does not
    depend on the thread count. 8-bit data is summed exactly in integers.

    Attributes: ``count`` (values per channel so far), and float64 arrays of length C:
    ``mean``, ``var`` (biased), ``std``, ``min``, ``max`` (NaN before any data; empty before
    the channel count is known). Statistics are defined for NaN-free data only. A
    ``Moments`` pickles, so partial statistics can travel between processes.

    >>> m = Moments(channel_axis=-1)
    >>> for batch in batches:           # e.g. chunks of an np.memmap
    ...     m.update(batch)
    >>> m.mean, m.std
    """

    def __init__(self, channel_axis=1):
        channel_axis_of(channel_axis, 64)  # an int or None
        self.channel_axis = channel_axis
        self.channels = None  # C, fixed by the first update or merge
        self.count = 0
        self._mean = self._m2 = self._min = self._max = np.empty(0)

    @classmethod
    def from_array(cls, x, channel_axis=1):
        """Statistics of one array: ``Moments(channel_axis).update(x)``."""
        return cls(channel_axis).update(x)

    def copy(self):
        """An independent copy."""
        m = Moments(self.channel_axis)
        m.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v)
                           for k, v in self.__dict__.items()})
        return m

    def _check_channels(self, C, source):
        if self.channels is not None and C != self.channels:
            raise ValueError(f"{source} has {C} channels but these statistics have "
                             f"{self.channels}")

    def update(self, x):
        """Add the values of the array ``x``; returns self. A failed call changes nothing."""
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

    def merge(self, other):
        """Add the statistics of another ``Moments`` of the same channel count; returns self."""
        if not isinstance(other, Moments):
            raise TypeError(f"can only merge a Moments, not {type(other).__name__}")
        if other.channels is None:
            return self
        self._check_channels(other.channels, "the other Moments")
        self._add(other.count, other._mean, other._m2, other._min, other._max)
        return self

    def _add(self, n, mean, m2, mn, mx):
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
    def mean(self):
        return self._mean.copy()

    @property
    def var(self):
        return self.variance(0)

    @property
    def std(self):
        return np.sqrt(self.var)

    @property
    def min(self):
        return self._min.copy()

    @property
    def max(self):
        return self._max.copy()

    def variance(self, ddof=0):
        """M2 / (count - ddof): ddof=0 the biased variance, ddof=1 the unbiased one (NaN when
        count <= ddof)."""
        if self.count - ddof <= 0:
            return np.full_like(self._m2, np.nan)
        return self._m2 / (self.count - ddof)

    def allreduce(self, comm=None):
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

    def __repr__(self):
        return (f"Moments(channel_axis={self.channel_axis!r}, channels={self.channels}, "
                f"count={self.count})")
