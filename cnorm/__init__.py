"""cnorm: fast, accurate normalization layers for NumPy on OpenMP Cython kernels.

Layers (torch.nn names and semantics): ``BatchNorm1d/2d/3d``, ``LayerNorm``, ``GroupNorm``,
``InstanceNorm1d/2d/3d``, ``RMSNorm``.
Functional forms: ``batch_norm``, ``layer_norm``, ``group_norm``, ``instance_norm``,
``rms_norm``, each with a ``*_backward``; ``moments``.
Training across processes: ``SyncBatchNorm`` and ``SyncBatchNormAct`` over MPI (mpi4py, imported on first use).
Preparing data: ``Moments``, ``Standardizer`` (a scikit-learn transformer; scikit-learn and
dask are optional and imported only when it is first used), ``normalize_images``.
Fused blocks: ``BatchNormAct1d/2d/3d``, ``GroupNormAct``, ``batch_norm_act``
(act(norm(x) + residual) in one pass).
Inference: ``fold_batch_norm`` (an eval-mode batch norm into the preceding layer's weights).
Inference: ``no_grad`` (layers keep no forward context).
Threads and build: ``get_num_threads``, ``set_num_threads``, ``openmp_enabled``,
``show_config``.
"""
from ._grad import no_grad
from ._runtime import get_num_threads, openmp_enabled, set_num_threads, show_config
from ._version import __version__
from .functional import (
    batch_norm,
    batch_norm_backward,
    group_norm,
    group_norm_backward,
    instance_norm,
    instance_norm_backward,
    layer_norm,
    layer_norm_backward,
    moments,
    rms_norm,
    rms_norm_backward,
)
from ._blocks import (
    BatchNormAct1d,
    BatchNormAct2d,
    BatchNormAct3d,
    GroupNormAct,
    batch_norm_act,
)
from ._fold import fold_batch_norm
from ._images import normalize_images
from ._statistics import Moments
from ._sync import SyncBatchNorm, SyncBatchNormAct
from .modules import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    LayerNorm,
    RMSNorm,
)

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm",
           "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm",
           "batch_norm", "batch_norm_backward", "layer_norm", "layer_norm_backward",
           "group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward",
           "rms_norm", "rms_norm_backward", "moments",
           "Moments", "Standardizer", "normalize_images", "SyncBatchNorm", "SyncBatchNormAct", "fold_batch_norm",
           "BatchNormAct1d", "BatchNormAct2d", "BatchNormAct3d", "GroupNormAct", "batch_norm_act",
           "no_grad", "get_num_threads", "set_num_threads", "openmp_enabled", "show_config",
           "__version__"]


def __getattr__(name):
    # Standardizer imports scikit-learn when it is installed: only on first use, so that
    # ``import cnorm`` needs NumPy alone and stays fast.
    if name == "Standardizer":
        from ._standardizer import Standardizer

        globals()["Standardizer"] = Standardizer
        return Standardizer
    raise AttributeError(f"module 'cnorm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"Standardizer"})
