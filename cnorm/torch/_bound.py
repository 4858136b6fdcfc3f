"""A cnorm layer over a torch module's memory, under autograd: SyncBatchNorm and the fused
blocks run cnorm's own layers (cnorm/nn) whose parameters, running statistics and counter are
views of the module's tensors, so the layer's updates are the module's."""
from typing import Any, Optional, Tuple

import torch

from ._bridge import array, follow_threads, tensor, torch_error

Tensor = torch.Tensor
STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def bind(layer: Any, module: torch.nn.Module) -> Any:
    """``layer`` (a cnorm layer built with ``module``'s hyper-parameters) made to hold views of
    ``module``'s parameters and buffers, in its mode; returns it."""
    for name in STATE:
        if hasattr(layer, name):
            value = getattr(module, name, None)
            setattr(layer, name, None if value is None else array(value))
    return layer.train(module.training)


class Bound(torch.autograd.Function):
    """``layer(x)`` or ``layer(x, residual)`` forward, ``layer.backward`` backward: dx and the
    parameter gradients (and the residual's, for a fused block)."""

    @staticmethod
    def forward(ctx: Any, layer: Any, x: Tensor, weight: Optional[Tensor],
                bias: Optional[Tensor], residual: Optional[Tensor]) -> Tensor:
        follow_threads()
        args = (array(x),) if residual is None else (array(x), array(residual))
        y = tensor(layer(*args))
        # the layer may run another forward before this backward (a module called twice):
        # this forward's context is kept here and handed back to it for the backward
        ctx.layer, ctx.saved = layer, layer._saved
        return y

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> Tuple[Any, ...]:
        layer = ctx.layer
        layer._saved = ctx.saved
        dx = tensor(layer.backward(array(dy.contiguous())))
        grads = [None if g is None else tensor(g) for g in
                 (layer.grad_weight, layer.grad_bias, getattr(layer, "grad_residual", None))]
        return (None, dx, *grads)


def run(layer: Any, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
        residual: Optional[Tensor] = None) -> Tensor:
    """The bound layer's forward under autograd, with torch's error types (RuntimeError where
    cnorm raises TypeError or ValueError, but for a batch of one value per channel)."""
    apply: Any = Bound.apply
    try:
        out: Tensor = apply(layer, x, weight, bias, residual)
    except (TypeError, ValueError) as e:
        error = torch_error(e)
        if error is e:
            raise
        raise error from e
    return out
