"""Inputs, layouts, errors and layer state for tests: what every test module of cnorm's
suite uses, importable as ``cnorm.testing`` (like ``numpy.testing``)."""
import subprocess
import sys
import tempfile
import textwrap
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from .._core.types import Array, DTypeLike

TOL = {np.float32: 2e-6, np.float64: 1e-12}
try:  # the half-precision types: float16, and bfloat16 when ml_dtypes (the half extra) is here
    import ml_dtypes
    HALVES = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]
except ImportError:  # pragma: no cover
    HALVES = [np.dtype(np.float16)]


def make_input(rng: np.random.Generator, shape: Sequence[int], dtype: DTypeLike,
               offset: float = 0.0, scale: float = 1.0) -> Array:
    """Per-channel offsets and scales so that every channel has its own statistics."""
    if len(shape) < 2:
        return (offset + scale * rng.standard_normal(shape)).astype(dtype)
    C = shape[1]
    off = offset + rng.uniform(-2, 2, size=C)
    sc = scale * rng.uniform(0.5, 3, size=C)
    shp = (1, C) + (1,) * (len(shape) - 2)
    return (rng.standard_normal(shape) * sc.reshape(shp) + off.reshape(shp)).astype(dtype)


def channels_last(x: Array) -> Array:
    """The same logical array with NHWC (channels-last) memory."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)).transpose(
        (0, x.ndim - 1) + tuple(range(1, x.ndim - 1)))


def in_layout(x: Array, layout: str) -> Array:
    """x in "nhwc" (channels-last) memory, or as it is."""
    return channels_last(x) if layout == "nhwc" and x.ndim > 2 else x


def rel_err(a: Any, ref: Any) -> float:
    """max |a - ref| / max|ref|: a scale-free error (an all-zero ref needs a == ref)."""
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ref.size == 0:
        return 0.0
    err = float(np.max(np.abs(a - ref)))
    scale = float(np.max(np.abs(ref)))
    return err / scale if scale > 0 else (0.0 if err == 0 else np.inf)


def check(got: Any, want: Any, dtype: Any, what: str, factor: float = 1.0,
          scale: float = 0.0) -> None:
    """got has want's dtype and shape and is within TOL[dtype] * factor of it, relative to
    max|want| or to ``scale`` where that is larger (a gradient that is zero in exact arithmetic
    is only zero to rounding of its terms' size). want None: got must be None."""
    if want is None:
        assert got is None, what
        return
    assert got is not None and got.dtype == dtype and got.shape == np.shape(want), what
    err = float(np.max(np.abs(np.asarray(got, np.float64) - want), initial=0.0))
    bound = TOL[dtype] * factor * max(float(np.max(np.abs(want), initial=0.0)), scale)
    assert err <= bound, (what, err, bound)


def state(layer: Any) -> Dict[str, Any]:
    """Copies of everything a call may change: parameters, running statistics, counters,
    mode, gradients and the cached forward."""
    out = {k: (v.copy() if isinstance(v, np.ndarray) else v)
           for k, v in vars(layer).items() if k != "_saved"}
    out["_saved"] = id(getattr(layer, "_saved", None))
    return out


def same_state(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray):
            if not (isinstance(y, np.ndarray) and x.dtype == y.dtype and x.shape == y.shape
                    and x.tobytes() == y.tobytes()):
                return False
        elif x != y and not (x is None and y is None):
            return False
    return True


def numeric_grad(f: Callable[[], float], v: Array, h: float = 1e-6) -> Array:
    """Central finite differences of the scalar f() with respect to the array v (in place)."""
    g = np.zeros_like(v)
    it = np.nditer(v, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = v[i]
        v[i] = old + h
        fp = f()
        v[i] = old - h
        fm = f()
        v[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def isolated(code: str, *, path: Optional[str] = None, timeout: float = 600) -> str:
    """Run ``code`` in a fresh interpreter and return what it printed; fail with its output when
    it exits non-zero or dies of a signal. ``path`` (e.g. a test's folder, so that the child can
    import that test module) goes first on the child's ``sys.path`` and is its working
    directory; by default the working directory is a temporary one, so that a source checkout
    does not shadow the installed cnorm."""
    prog = (f"import sys; sys.path.insert(0, {path!r})\n" if path else "") + textwrap.dedent(code)
    p = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                       cwd=path or tempfile.gettempdir(), timeout=timeout)
    assert p.returncode == 0, f"child exited with {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout
