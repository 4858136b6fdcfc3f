"""Preparing data: ``Moments`` (per-channel statistics that stream over batches and merge
across processes), ``Standardizer`` (a scikit-learn transformer on those statistics; scikit-learn
and dask are imported on its first use only) and ``normalize_images`` (uint8 or float images to
normalized floats in one pass). Every name here is also importable from ``cnorm``.
"""
from .images import normalize_images
from .moments import Moments

__all__ = ["Moments", "Standardizer", "normalize_images"]


def __getattr__(name):
    # Standardizer imports scikit-learn when it is installed: only on first use, so that
    # ``import cnorm`` needs NumPy alone and stays fast.
    if name == "Standardizer":
        from .standardizer import Standardizer

        globals()["Standardizer"] = Standardizer
        return Standardizer
    raise AttributeError(f"module 'cnorm.data' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"Standardizer"})
