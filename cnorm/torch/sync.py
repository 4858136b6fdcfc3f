"""``SyncBatchNorm`` over ``torch.distributed`` on the CPU: the statistics of the union of every
rank's batch, merged in rank order so that every rank holds the same bits, unequal and empty
shards included, inside DistributedDataParallel too.

It is cnorm's own SyncBatchNorm (cnorm/nn/sync.py: agreement on errors before any collective,
rank-order merges) bound to this module's tensors (_bound.py), with the process group as its
communicator. It subclasses torch's ``_BatchNorm``, not ``torch.nn.SyncBatchNorm``, which
DistributedDataParallel refuses on a CPU module.
"""
from typing import Any, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .. import nn as cnn
from .._core.comm import OneProcess
from ..nn._ops.act import Block
from ..nn._ops.context import running_factor
from ..nn.sync import SyncContext
from . import functional as F  # noqa: N812 - named as torch's
from ._bound import bind, run
from ._bridge import array, follow_threads, numpy_dtype, takes, tensor
from ._eager import _block, holder, memory_format
from ._ops import _fake_grads, _grads, _needed, like, register
from .modules import _BatchNormForward

Tensor = torch.Tensor


class GroupComm:
    """cnorm's communicator protocol (``size``, ``rank``, ``allgather``, ``Allgather``) over a
    torch.distributed process group (None: the default group)."""

    def __init__(self, group: Any = None) -> None:
        if isinstance(group, str):  # a custom op's argument: the group's name
            resolve: Any = getattr(dist.distributed_c10d, "_resolve_process_group")
            group = resolve(group) if group else None
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



# --- the custom op torch.compile traces: a training step over several ranks ------------------

def _layer(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
           act: Optional[str], slope: float, group: str) -> Any:
    """A cnorm SyncBatchNorm (SyncBatchNormAct for a fused block) over the group, bound to
    the parameters, without running statistics (the caller moves them)."""
    kw = {} if act is None else {"act": act, "negative_slope": slope}
    cls = cnn.SyncBatchNorm if act is None else cnn.SyncBatchNormAct
    layer = cls(x.shape[1], eps, None, weight is not None, False, numpy_dtype(x.dtype),
                bias=bias is not None, comm=GroupComm(group), **kw)
    layer.weight, layer.bias = array(weight), array(bias)
    return layer


def sync_batch_norm(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                    residual: Optional[Tensor], eps: float, act: Optional[str], slope: float,
                    group: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, invstd, var, total): the union's float64 mean, 1/std, unbiased variance and
    count (collective: every rank of ``group``, by name, "" the default one, calls it)."""
    follow_threads()
    layer = _layer(x, weight, bias, eps, act, slope, group)
    xa = array(x)
    y = layer(xa) if act is None else layer(xa, array(residual))
    ctx = layer._saved
    var = ctx.m2 / max(ctx.total - 1.0, 1.0)
    return (like(tensor(y), x), tensor(ctx.mean), tensor(ctx.invstd), tensor(var),
            torch.tensor(ctx.total, dtype=torch.float64))


def _sync_fake(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
               residual: Optional[Tensor], eps: float, act: Optional[str], slope: float,
               group: str) -> Tuple[Tensor, ...]:
    C = x.shape[1]
    return (torch.empty_like(x), *(x.new_empty(C, dtype=torch.float64) for _ in range(3)),
            x.new_empty((), dtype=torch.float64))


def sync_batch_norm_backward(dy: Tensor, x: Tensor, y: Optional[Tensor],
                             residual: Optional[Tensor], weight: Optional[Tensor],
                             bias: Optional[Tensor], mean: Tensor, invstd: Tensor,
                             total: Tensor, eps: float, act: Optional[str], slope: float,
                             group: str) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, grad_weight, grad_bias, grad_residual): this rank's dx of the full batch's
    gradient and its parameter contributions (collective)."""
    follow_threads()
    layer = _layer(x, weight, bias, eps, act, slope, group)
    xa = array(x)
    block: Optional[Block] = _block(xa, residual, act, slope)
    layer._saved = SyncContext.restored(layer.comm, xa, array(mean), array(invstd),
                                        float(total), layer.weight, layer.bias, block,
                                        array(y))
    dx = layer.backward(array(dy))
    out: Tuple[Tensor, Tensor, Tensor, Tensor] = _grads(
        (dx, layer.grad_weight, layer.grad_bias), None if block is None else block.grad_residual,
        x, residual)
    return out


def _sync_backward_fake(dy: Tensor, x: Tensor, y: Optional[Tensor], residual: Optional[Tensor],
                        weight: Optional[Tensor], bias: Optional[Tensor], *_: Any
                        ) -> Tuple[Tensor, ...]:
    return _fake_grads(x, (x.shape[1],), weight, bias, residual)


def _sync_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, weight, bias, residual, ctx.eps, ctx.act, ctx.slope, ctx.group = inputs
    fused = ctx.act is not None
    ctx.save_for_backward(x, output[0] if fused else None, residual, weight, bias, output[1],
                          output[2], output[4])


def _sync_backward(op: Any) -> Any:
    def backward(ctx: Any, dy: Tensor, *_: Any) -> Tuple[Any, ...]:
        x, y, residual, weight, bias, mean, invstd, total = ctx.saved_tensors
        dx, gw, gb, gr = op(dy.contiguous(memory_format=memory_format(x)), x, y, residual,
                            weight, bias, mean, invstd, total, ctx.eps, ctx.act, ctx.slope,
                            ctx.group)
        return (dx, *_needed((gw, gb), (weight, bias)), _needed((gr,), (residual,))[0],
                None, None, None, None)
    return backward


SYNC_OP = register("sync_batch_norm", sync_batch_norm, sync_batch_norm_backward, _sync_fake,
                   _sync_backward_fake, _sync_setup, _sync_backward)


class SyncBatchNorm(_BatchNorm):
    """``torch.nn.SyncBatchNorm`` on the CPU, over ``torch.distributed`` (gloo, or mpi when
    torch has it), on cnorm's kernels: the same constructor, parameters, buffers and
    state_dict keys. In training every rank normalizes with the statistics of all ranks'
    batches (unequal and empty shards too), merged in rank order so that every rank holds the
    same bits; ``backward`` gives this rank's dx of the full-batch gradient and this rank's
    parameter gradients (DDP sums them). Every rank must call forward and backward together;
    a bad input on any rank raises on every rank. Eval mode, or a world of one process, needs
    no communication. It subclasses ``_BatchNorm``, not ``torch.nn.SyncBatchNorm``, which
    DistributedDataParallel refuses on a CPU module. Under torch.compile the step is the
    custom op ``torch.ops.cnorm.sync_batch_norm``. Tensors cnorm's kernels do not take run
    ``torch.nn.SyncBatchNorm``'s code.

    Parameters
    ----------
    num_features, eps, momentum, affine, track_running_stats, process_group, device, dtype
        As ``torch.nn.SyncBatchNorm``'s (``process_group`` None: the default group).

    Raises
    ------
    ValueError
        Input of fewer than 2 dimensions; a training batch of one value per channel over all
        ranks, or layers of another num_features on another rank (on every rank).
    RuntimeError
        Input of a shape or dtype the layer does not take, on any rank (on every rank).

    Examples
    --------
    >>> import torch, cnorm.torch as ct
    >>> bn = ct.SyncBatchNorm(4)          # one process: batch norm; under DDP: every rank's
    >>> y = bn(torch.randn(8, 4, 5, 5))
    >>> y.shape, int(bn.num_batches_tracked)
    (torch.Size([8, 4, 5, 5]), 1)
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group: Any = None, device: Any = None, dtype: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        self.process_group = process_group
        # the custom op's name of the group ("" the default), read once: compiled code
        # passes a string where the eager path passes the group
        self._group_name = "" if process_group is None else process_group.group_name

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
        if torch.compiler.is_compiling():
            return self._compiled(input)
        return run(bind(self._layer(input.dtype), self), input, self.weight, self.bias)

    def _layer(self, dtype: torch.dtype) -> Any:
        """The cnorm layer that runs this module's eager steps, kept beside the module (with
        the output memory it recycles) while its settings and group stay the same."""
        world = dist.is_available() and dist.is_initialized()
        key = (dtype, self.eps, self.momentum, self.affine, self.track_running_stats,
               self.bias is not None, self.process_group,
               dist.get_world_size(self.process_group) if world else 1)
        kept = holder(self)
        if getattr(kept, "key", None) != key:
            comm = GroupComm(self.process_group) if world else None
            kept.layer = cnn.SyncBatchNorm(
                self.num_features, self.eps, self.momentum, self.affine,
                self.track_running_stats, numpy_dtype(dtype), bias=self.bias is not None,
                comm=comm if comm is not None and comm.size > 1 else OneProcess())
            kept.key = key
        return kept.layer

    def _compiled(self, input: Tensor, residual: Optional[Tensor] = None,
                  act: Optional[str] = None, slope: float = 0.0) -> Tensor:
        """Under torch.compile: the sync_batch_norm custom op when the statistics are the
        union's (training over several ranks), else the twin's batch norm; the running
        statistics and counter move after the op, by torch's ops."""
        batch_stats = self.training or not self.track_running_stats
        several = dist.is_available() and dist.is_initialized() and dist.get_world_size(
            self.process_group) > 1
        if not (batch_stats and several):
            out: Tensor = _BatchNormForward.forward(self, input, residual, act, slope)
            return out
        y: Tensor
        y, mean, _, var, _ = SYNC_OP(input, self.weight, self.bias, residual, self.eps, act,
                                     slope, self._group_name)
        if self.training and self.track_running_stats:
            counter: Any = self.num_batches_tracked
            F._move(self.running_mean, self.running_var, mean, var,
                    running_factor(self.momentum, counter))
            counter.add_(1)
        return y

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group: Any = None) -> nn.Module:
        """Every batch norm in ``module`` (itself included) replaced by a SyncBatchNorm with
        its parameters (the same Parameter objects), buffers and mode, as torch's method of
        this name does.

        Parameters
        ----------
        module : torch.nn.Module
            Converted in place (its children replaced).
        process_group : ProcessGroup or None
            The group the statistics are synchronized over (None: the default group).

        Returns
        -------
        torch.nn.Module
            ``module``, or its replacement when it is itself a batch norm.

        Examples
        --------
        >>> import torch, cnorm.torch as ct
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        >>> type(ct.SyncBatchNorm.convert_sync_batchnorm(model)[1]).__name__
        'SyncBatchNorm'
        """
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
