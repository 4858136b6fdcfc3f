"""Preparing data: ``Moments`` (per-channel statistics that stream over batches and merge
across processes), ``Standardizer`` (a scikit-learn transformer on those statistics; scikit-learn
and dask are imported on its first use only) and ``normalize_images`` (uint8 or float images to
normalized floats in one pass). Every name here is also importable from ``cnorm``.
"""
import typing

from .images import normalize_images
from .moments import Moments

__all__ = ["Moments", "Standardizer", "normalize_images"]

if typing.TYPE_CHECKING:
    from .standardizer import Standardizer


def __getattr__(name: str) -> typing.Any:
    # Standardizer imports scikit-learn when it is installed: only on first use, so that
    # ``import cnorm`` needs NumPy alone and stays fast.
    if name == "Standardizer":
        from .standardizer import Standardizer

        globals()["Standardizer"] = Standardizer
        return Standardizer
    raise AttributeError(f"module 'cnorm.data' has no attribute {name!r}")


def __dir__() -> typing.List[str]:
    return sorted(set(globals()) | {"Standardizer"})
