"""Runtime configuration: thread counts and the build in use."""
import numbers
import warnings
from typing import Any, Dict

from .._version import __version__
from . import backend as _backend


def get_num_threads() -> int:
    """Number of threads a cnorm kernel called now, from this thread, would use at most.

    This is OpenMP's ``omp_get_max_threads()``, read at call time: it follows
    ``OMP_NUM_THREADS``, :func:`set_num_threads` and
    ``threadpoolctl.threadpool_limits(n, user_api="openmp")``. Always 1 in a build
    without OpenMP. Inputs below about 32K elements run on one thread regardless.

    1 in a process forked from one that imported cnorm (a ``multiprocessing`` fork worker, a
    torch ``DataLoader`` worker): OpenMP's thread pool does not survive ``fork()``, so such a
    child runs serially, with the same results. Spawned and forkserver workers are not
    affected.

    Returns
    -------
    int
        The thread count, at least 1.

    Examples
    --------
    >>> import cnorm
    >>> cnorm.get_num_threads() >= 1
    True
    """
    return _backend.threads()


def set_num_threads(n: int) -> int:
    """Set the number of threads for cnorm kernels; returns the previous value.

    Like ``omp_set_num_threads`` (and threadpoolctl), the setting applies to the calling
    thread; other threads keep ``OMP_NUM_THREADS`` or the core count. Results do not depend
    on the thread count: reductions are bit-identical for any ``n``.

    In a forked child (see :func:`get_num_threads`) kernels stay on one thread: asking for more
    warns and changes nothing.

    Parameters
    ----------
    n : int
        The thread count, at least 1.

    Returns
    -------
    int
        The count before.

    Raises
    ------
    TypeError
        ``n`` is not an integer.
    ValueError
        ``n`` is below 1.

    Examples
    --------
    >>> import cnorm
    >>> before = cnorm.set_num_threads(1)
    >>> cnorm.get_num_threads()
    1
    >>> _ = cnorm.set_num_threads(before)
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"number of threads must be an integer, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"number of threads must be at least 1, got {n}")
    previous = get_num_threads()
    if _backend.forked:
        if n > 1:
            warnings.warn("cnorm runs on one thread in a forked child process (OpenMP's thread "
                          "pool does not survive fork); use the 'spawn' or 'forkserver' start "
                          "method for threaded workers", RuntimeWarning, stacklevel=2)
        return previous
    _backend.kernels.set_max_threads(int(n))
    return previous


def openmp_enabled() -> bool:
    """Whether the kernels were compiled with OpenMP (False: the serial fallback build).

    Returns
    -------
    bool
        True for a threaded build.

    Examples
    --------
    >>> import cnorm
    >>> isinstance(cnorm.openmp_enabled(), bool)
    True
    """
    return bool(_backend.kernels.openmp_enabled())


def show_config(print_out: bool = True) -> Dict[str, Any]:
    """The build and runtime configuration, for bug reports and benchmark notes.

    Parameters
    ----------
    print_out : bool, default True
        Print it, one item a line.

    Returns
    -------
    dict
        ``cnorm`` (version), ``simd_target`` (in use), ``simd_available`` (what this CPU
        runs), ``openmp``, ``num_threads``, ``forked_child`` (True in a forked child process,
        which runs on one thread) and ``numpy``.

    Examples
    --------
    >>> import cnorm
    >>> config = cnorm.show_config(print_out=False)
    >>> config["simd_target"] in config["simd_available"]
    True
    """
    import numpy

    config = {"cnorm": __version__, "simd_target": _backend.target,
              "simd_available": _backend.available_targets(), "openmp": openmp_enabled(),
              "num_threads": get_num_threads(), "forked_child": _backend.forked,
              "numpy": numpy.__version__}
    if print_out:
        for key, value in config.items():
            print(f"{key:>15}: {value}")
    return config
