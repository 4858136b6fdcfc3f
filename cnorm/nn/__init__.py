"""Normalization layers for NumPy with torch.nn's names and semantics.

Layers: ``BatchNorm1d/2d/3d``, ``LayerNorm``, ``GroupNorm``, ``InstanceNorm1d/2d/3d``,
``RMSNorm``; fused norm + activation (+ residual) blocks ``BatchNormAct1d/2d/3d`` and
``GroupNormAct``; ``SyncBatchNorm`` and ``SyncBatchNormAct`` over MPI. ``functional`` holds the
functional forms and their backwards, ``fold_batch_norm`` folds an eval-mode batch norm into the
layer before it, ``no_grad`` keeps layers from saving their forward. Every name here is also
importable from ``cnorm``.
"""
from . import functional
from .blocks import BatchNormAct1d, BatchNormAct2d, BatchNormAct3d, GroupNormAct, batch_norm_act
from .fold import fold_batch_norm
from .grad import no_grad
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
from .sync import SyncBatchNorm, SyncBatchNormAct

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm",
           "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm",
           "BatchNormAct1d", "BatchNormAct2d", "BatchNormAct3d", "GroupNormAct",
           "batch_norm_act", "SyncBatchNorm", "SyncBatchNormAct", "fold_batch_norm", "no_grad",
           "functional"]
