"""Picks the kernel modules built for the best SIMD target this CPU supports.

``CNORM_SIMD=baseline|avx2|avx512`` forces a target (an error if it is not built or not
supported here). Every target computes bit-identical results: the sums have a fixed lane
structure in the source and no fused multiply-adds are generated. The op modules look up
``kernels`` and ``data`` at call time, so a test can swap it for another target's module.
"""
import importlib
import os
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .dtypes import TABLE

TARGETS = ("avx512", "avx2", "baseline")  # best first


def last_level_cache(path: str = "/sys/devices/system/cpu/cpu0/cache/index3/size") -> int:
    """Bytes of the L3 cache as Linux reports it ("32768K"), 32 MB where it cannot be read
    (glibc's sysconf and getconf can be far off in a virtual machine: 320 MB for a 32 MB L3
    on an AMD EPYC guest)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(text[:-1]) * units[text[-1]] if text[-1:] in units else int(text)
    except (OSError, ValueError):
        return 32 << 20


# planar forward outputs from this size stream (kernels' set_stream_out): their working set
# with x leaves no room in the L3 for either
STREAM_OUT = 3 * last_level_cache() // 4


def _load(target: str, family: str = "_kernels") -> Optional[ModuleType]:
    try:
        return importlib.import_module(f"cnorm._core.{family}_{target}")
    except ImportError:
        return None


_found = _load("baseline")
if _found is None:
    raise ImportError("cnorm's compiled kernels are missing: build them with "
                      "'pip install -e .' (or 'pip install .') before importing cnorm")
_baseline: ModuleType = _found


def available_targets() -> List[str]:
    """SIMD targets that are built and that this CPU can run, best first."""
    return [t for t in TARGETS if _baseline.cpu_supports(t) and _load(t) is not None]


def _select() -> str:
    forced = os.environ.get("CNORM_SIMD", "").strip().lower()
    if forced:
        if forced not in available_targets():
            raise ImportError(f"CNORM_SIMD={forced!r} is not available here; "
                              f"available: {available_targets()}")
        return forced
    return available_targets()[0]


target = _select()
kernels: ModuleType = _load(target) or _baseline  # the norms
data: ModuleType = _load(target, "_data") or _baseline  # dataset statistics and input normalization


def module_for(target: str, family: str = "_kernels") -> ModuleType:
    """The kernel module of ``target`` (for tests that compare targets); family "_data" for
    the data kernels."""
    module = _load(target, family) if target in available_targets() else None
    if module is None:
        raise ValueError(f"SIMD target {target!r} is not available here")
    return module


for _t in available_targets():  # only these: another target's code may not run on this CPU
    module_for(_t).set_stream_out(STREAM_OUT)


_specialized: Dict[Tuple[str, str, np.dtype[Any]], Callable[..., Any]] = {}


def kernel(name: str, dtype: np.dtype[Any],
           module: Optional[ModuleType] = None) -> Callable[..., Any]:
    """The norm kernel ``name`` specialized for data of ``dtype`` (in ``module``, by default the
    selected target's): called directly, without the fused dispatcher's per-call type
    search (which could not tell the compute type from None parameters)."""
    module = kernels if module is None else module
    key = (module.__name__, name, dtype)
    fn = _specialized.get(key)
    if fn is None:
        fused = getattr(module, name)
        row = TABLE[dtype.name]  # the specialization: (storage type, compute type)
        storage, compute = row.storage, row.compute
        two = "|" in next(iter(fused.__signatures__))
        fn = _specialized[key] = fused[storage, compute] if two else fused[storage]
    return fn


# True in a process made by fork() from one that had imported cnorm. GNU libgomp keeps its
# thread pool in process memory: the child inherits the pool's bookkeeping but not its threads,
# so its first parallel region would wait forever for them (a multiprocessing fork Pool, torch
# DataLoader fork workers). A one-thread region never touches the pool, and results do not
# depend on the thread count, so the child runs every kernel on one thread, with the same bits.
forked = False


def _mark_forked() -> None:
    global forked
    forked = True


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_mark_forked)


def threads() -> int:
    """The thread count for a kernel called now (read at every call: OMP_NUM_THREADS,
    threadpoolctl and cnorm.set_num_threads all apply); 1 in a forked child (see ``forked``)."""
    return 1 if forked else _baseline.max_threads()
