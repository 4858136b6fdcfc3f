"""``SyncBatchNorm`` over ``torch.distributed`` on the CPU: the statistics of the union of every
rank's batch, merged in rank order so that every rank holds the same bits, unequal and empty
shards included, inside DistributedDataParallel too.

It is cnorm's own SyncBatchNorm (cnorm/nn/sync.py: agreement on errors before any collective,
rank-order merges) bound to this module's tensors (_bound.py), with the process group as its
communicator. It subclasses torch's ``_BatchNorm``, not ``torch.nn.SyncBatchNorm``, which
DistributedDataParallel refuses on a CPU module.
"""
from typing import Any, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .. import nn as cnn
from .._core.comm import OneProcess
from ._bound import bind, run
from ._bridge import numpy_dtype, takes

Tensor = torch.Tensor


class GroupComm:
    """cnorm's communicator protocol (``size``, ``rank``, ``allgather``, ``Allgather``) over a
    torch.distributed process group (None: the default group)."""

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def allgather(self, obj: Any) -> List[Any]:
        out: List[Any] = [None] * self.size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def Allgather(self, send: Any, recv: Any) -> None:  # noqa: N802 - mpi4py's name
        t = torch.from_numpy(np.ascontiguousarray(send))
        parts = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(parts, t, group=self.group)
        recv[...] = torch.stack(parts).numpy().reshape(recv.shape)


class SyncBatchNorm(_BatchNorm):
    """``torch.nn.SyncBatchNorm`` on the CPU, over ``torch.distributed`` (gloo, or mpi when
    torch has it), on cnorm's kernels: the same constructor, parameters, buffers and
    state_dict keys. In training every rank normalizes with the statistics of all ranks'
    batches; ``backward`` gives this rank's dx of the full-batch gradient and this rank's
    parameter gradients (DDP sums them). Every rank must call forward and backward together;
    a bad input on any rank raises on every rank. Eval mode, or a world of one process, needs
    no communication. Tensors cnorm's kernels do not take run ``torch.nn.SyncBatchNorm``'s
    code."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group: Any = None, device: Any = None, dtype: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        params = (self.weight, self.bias, self.running_mean, self.running_var)
        if not (takes(input) and all(p is None or takes(p) for p in params)):
            torch_forward: Any = nn.SyncBatchNorm.forward  # torch's own (GPU) code
            out: Tensor = torch_forward(self, input)
            return out
        self._check_input_dim(input)
        world = dist.is_available() and dist.is_initialized()
        comm = GroupComm(self.process_group) if world else None
        layer = cnn.SyncBatchNorm(
            self.num_features, self.eps, self.momentum, self.affine, self.track_running_stats,
            numpy_dtype(input.dtype), bias=self.bias is not None,
            comm=comm if comm is not None and comm.size > 1 else OneProcess())
        return run(bind(layer, self), input, self.weight, self.bias)

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group: Any = None) -> nn.Module:
        """Every batch norm in ``module`` (itself included) replaced by a SyncBatchNorm with
        its parameters (the same Parameter objects), buffers and mode, as torch's method of
        this name does; returns the converted module."""
        out = module
        if isinstance(module, _BatchNorm) and not isinstance(module, cls):
            out = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, process_group)
            if module.affine:
                with torch.no_grad():
                    out.weight, out.bias = module.weight, module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.train(module.training)
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return out
