"""cnorm: fast, accurate normalization for NumPy on OpenMP Cython kernels.

The package is three subsystems on one core, and every public name is importable from
``cnorm`` itself:

- ``cnorm.nn``: the layers with torch.nn's names and semantics (``BatchNorm1d/2d/3d``,
  ``LayerNorm``, ``GroupNorm``, ``InstanceNorm1d/2d/3d``, ``RMSNorm``), fused norm + activation
  blocks (``BatchNormAct1d/2d/3d``, ``GroupNormAct``, ``batch_norm_act``), ``SyncBatchNorm``
  and ``SyncBatchNormAct`` over MPI, ``fold_batch_norm``, ``no_grad``, and
  ``cnorm.nn.functional`` (``batch_norm``, ``layer_norm``, ``group_norm``, ``instance_norm``,
  ``rms_norm``, each with its ``*_backward``, and ``moments``);
- ``cnorm.data``: ``Moments``, ``Standardizer`` (scikit-learn and dask are imported on its
  first use only), ``normalize_images``;
- ``cnorm.bench``: the benchmark report, ``python -m cnorm.bench`` (not imported here);
- ``cnorm.testing``: float64 references and test helpers (not imported here).

Threads and build: ``get_num_threads``, ``set_num_threads``, ``openmp_enabled``,
``show_config``.
"""
import typing

from . import data
from ._core.runtime import get_num_threads, openmp_enabled, set_num_threads, show_config
from ._version import __version__
from .data import Moments, normalize_images
from .nn import *  # noqa: F403 - the layers, blocks, SyncBatchNorm, fold_batch_norm, no_grad
from .nn.functional import *  # noqa: F403 - the functional forms and moments

if typing.TYPE_CHECKING:
    from .data.standardizer import Standardizer

# the layers, blocks, SyncBatchNorm and the rest of cnorm.nn, the functional forms, cnorm.data,
# the runtime: a literal list, so that type checkers see what the star imports bring
__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm",
           "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm",
           "BatchNormAct1d", "BatchNormAct2d", "BatchNormAct3d", "GroupNormAct",
           "batch_norm_act", "SyncBatchNorm", "SyncBatchNormAct", "fold_batch_norm", "no_grad",
           "batch_norm", "batch_norm_backward", "layer_norm", "layer_norm_backward",
           "group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward",
           "rms_norm", "rms_norm_backward", "moments",
           "Moments", "Standardizer", "normalize_images",
           "get_num_threads", "set_num_threads", "openmp_enabled", "show_config",
           "__version__"]


def __getattr__(name: str) -> typing.Any:
    if name == "Standardizer":  # cnorm.data imports scikit-learn on its first use only
        return data.Standardizer
    raise AttributeError(f"module 'cnorm' has no attribute {name!r}")


def __dir__() -> typing.List[str]:
    return sorted(set(globals()) | {"Standardizer"})
