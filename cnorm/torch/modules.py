"""torch.nn's normalization layers on cnorm's kernels: each a subclass of the torch class of
the same name, with its constructor, parameters, buffers, state_dict keys and repr, whose
forward runs ``cnorm.torch.functional`` (which runs torch's own code on what cnorm's kernels do
not take, so one model runs on CPU and GPU alike)."""
from typing import Any, Optional

import torch
from torch import nn

from ..nn._ops.context import running_factor
from . import functional as F  # noqa: N812 - named as torch's
from ._docs import twin

Tensor = torch.Tensor
__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm",
           "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm"]


class _BatchNormForward:
    """torch's ``_BatchNorm.forward`` on cnorm's kernels, but a call that raises changes
    nothing: ``num_batches_tracked`` moves only after the normalization succeeded (torch's
    increments it first)."""

    def forward(self: Any, input: Tensor, residual: Optional[Tensor] = None,
                act: Optional[str] = None, slope: float = 0.0) -> Tensor:
        """``residual``, ``act``, ``slope``: a fused block's epilogue (blocks.py), whose
        tensors cnorm's kernels take."""
        self._check_input_dim(input)
        tracking = self.training and self.track_running_stats
        counter: Optional[Tensor] = self.num_batches_tracked if tracking else None
        factor = running_factor(self.momentum, counter)
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        rm, rv = (self.running_mean, self.running_var) if keep else (None, None)
        if not F._ours(input, self.weight, self.bias, rm, rv):
            out: Tensor = F.batch_norm(input, rm, rv, self.weight, self.bias, batch_stats,
                                       factor, self.eps)
            if counter is not None:
                counter.add_(1)
            return out
        return F.block_batch_norm(input, rm, rv, self.weight, self.bias, batch_stats, factor,
                                  self.eps, residual, act, slope, counter, self)


_BN_NOTE = """ A call that raises changes nothing: ``num_batches_tracked``
moves only with the running statistics, in one kernel call after the normalization
succeeded (torch's ``_BatchNorm`` increments it before it validates)."""


@twin("``torch.nn.BatchNorm1d`` on cnorm's kernels.", "(8, 4)", _BN_NOTE)
class BatchNorm1d(_BatchNormForward, nn.BatchNorm1d):
    pass


@twin("``torch.nn.BatchNorm2d`` on cnorm's kernels; channels_last input stays channels_last.",
      "(8, 4, 5, 5)", _BN_NOTE)
class BatchNorm2d(_BatchNormForward, nn.BatchNorm2d):
    pass


@twin("``torch.nn.BatchNorm3d`` on cnorm's kernels.", "(2, 4, 3, 3, 3)", _BN_NOTE)
class BatchNorm3d(_BatchNormForward, nn.BatchNorm3d):
    pass


class _InstanceNormForward:
    """torch's instance norms keep their forward (unbatched input, the warnings); only the
    normalization runs on cnorm's kernels."""

    def _apply_instance_norm(self: Any, input: Tensor) -> Tensor:
        out: Tensor = F.instance_norm(input, self.running_mean, self.running_var, self.weight,
                                      self.bias, self.training or not self.track_running_stats,
                                      self.momentum if self.momentum is not None else 0.0,
                                      self.eps)
        return out


@twin("``torch.nn.InstanceNorm1d`` on cnorm's kernels.", "(2, 4, 9)")
class InstanceNorm1d(_InstanceNormForward, nn.InstanceNorm1d):
    pass


@twin("``torch.nn.InstanceNorm2d`` on cnorm's kernels.", "(2, 4, 5, 5)")
class InstanceNorm2d(_InstanceNormForward, nn.InstanceNorm2d):
    pass


@twin("``torch.nn.InstanceNorm3d`` on cnorm's kernels.", "(2, 4, 3, 3, 3)")
class InstanceNorm3d(_InstanceNormForward, nn.InstanceNorm3d):
    pass


@twin("``torch.nn.LayerNorm`` on cnorm's kernels.", "(3, 7, 5)")
class LayerNorm(nn.LayerNorm):

    def forward(self, input: Tensor) -> Tensor:
        return F.row_norm(input, self.normalized_shape, self.weight, self.bias, self.eps,
                          rms=False, module=self)


class _LayerNorm2dForward:
    """The forward of a twin of timm's ``LayerNorm2d`` (made by ``convert``): layer norm over
    the channels of each pixel of an (N, C, H, W) tensor, on cnorm's kernels."""

    def forward(self: Any, x: Tensor) -> Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return y.permute(0, 3, 1, 2)


@twin("``torch.nn.GroupNorm`` on cnorm's kernels; channels_last input stays channels_last.",
      "(3, 4, 5, 5)")
class GroupNorm(nn.GroupNorm):

    def forward(self, input: Tensor) -> Tensor:
        if not F._ours(input, self.weight, self.bias):
            return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)
        return F.block_group_norm(input, self.num_groups, self.weight, self.bias, self.eps,
                                  module=self)


@twin("``torch.nn.RMSNorm`` on cnorm's kernels.", "(3, 7, 5)")
class RMSNorm(nn.RMSNorm):

    def forward(self, x: Tensor) -> Tensor:
        return F.row_norm(x, self.normalized_shape, self.weight, None, self.eps, rms=True,
                          module=self)
