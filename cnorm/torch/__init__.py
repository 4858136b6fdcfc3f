"""cnorm for torch users: torch.nn's normalization layers and functional forms on cnorm's
kernels, registered as custom ops (``torch.ops.cnorm.*``, with fake kernels and autograd); the
fused blocks ``BatchNormAct2d`` and ``GroupNormAct`` (timm's constructors, a residual);
``SyncBatchNorm`` over torch.distributed on the CPU; ``convert(model)`` / ``revert(model)``.

``import cnorm`` never imports torch; ``import cnorm.torch`` needs it (the ``torch`` extra).
A CPU tensor of float32, float64, float16 or bfloat16 (with ml_dtypes) runs cnorm's kernels,
in the number of threads ``torch.get_num_threads()`` says, bit-identical for any; anything
else runs torch's own code.
"""
try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - the torch extra
    raise ImportError("cnorm.torch needs torch: pip install 'cnorm[torch]'") from e

from . import functional
from ._convert import convert, revert
from .blocks import BatchNormAct2d, GroupNormAct
from .modules import *  # noqa: F403 - the nine layers
from .sync import SyncBatchNorm

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm",
           "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm", "BatchNormAct2d",
           "GroupNormAct", "SyncBatchNorm", "functional", "convert", "revert"]
