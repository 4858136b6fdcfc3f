"""``torch.nn.functional``'s normalizations on cnorm's kernels: the same signatures and
semantics (running statistics updated in place), through the custom ops of ``_ops``, with
autograd. Anything the kernels do not take (a CUDA or integer tensor, a tensor subclass)
runs torch's own function."""
from typing import Any, List, Optional, Sequence, Union

import torch
import torch.nn.functional as TF  # noqa: N812 - torch's functional, beside this one

from . import _eager
from ._bridge import takes, torch_error
from ._docs import functional_doc
from ._ops import OPS

Tensor = torch.Tensor
__all__ = ["batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"]


def _ours(x: Tensor, *params: Optional[Tensor]) -> bool:
    """cnorm runs the call: x and every given parameter or statistic are tensors it takes."""
    return takes(x) and all(p is None or takes(p) for p in params)


def _compiling() -> bool:
    """Under torch.compile: the registered custom ops (_ops), which dynamo traces; else the
    eager path (_eager), which keeps each op's context for its backward."""
    return bool(torch.compiler.is_compiling())


def _outputs(module: Any) -> Any:
    """Where ``module``'s recycled outputs live (None: a functional call, fresh outputs)."""
    return None if module is None else _eager.holder(module)


def _run(op: Any, *args: Any) -> Any:
    """``op(*args)`` with torch's error types: torch raises RuntimeError for a bad shape or
    dtype where cnorm's checks raise ValueError or TypeError (the message is cnorm's), and
    ValueError for a batch of one value per channel, as cnorm."""
    try:
        return op(*args)
    except (TypeError, ValueError) as e:
        error = torch_error(e)
        if error is e:
            raise
        raise error from e


def _move(running_mean: Optional[Tensor], running_var: Optional[Tensor], mean: Tensor,
          var: Tensor, momentum: float) -> None:
    """Under torch.compile, running = (1 - momentum) * running + momentum * batch, in float64
    and rounded once, by torch's ops (traced; the eager path moves them by cnorm's kernel)."""
    with torch.no_grad():
        for running, batch in ((running_mean, mean), (running_var, var)):
            if running is not None:
                running.copy_(running.double().mul_(1.0 - momentum).add_(batch, alpha=momentum))


def block_batch_norm(input: Tensor, running_mean: Optional[Tensor],
                     running_var: Optional[Tensor], weight: Optional[Tensor],
                     bias: Optional[Tensor], training: bool, momentum: float, eps: float,
                     residual: Optional[Tensor] = None, act: Optional[str] = None,
                     slope: float = 0.0, counter: Optional[Tensor] = None,
                     module: Any = None) -> Tensor:
    """``act(batch_norm(input) + residual)`` on cnorm's kernels (the caller checked that they
    take every tensor); in training the running statistics move, and ``counter`` (a layer's
    num_batches_tracked) counts the batch, once the call succeeded. ``module``: the layer
    whose recycled output memory the eager path writes into (see _eager.holder)."""
    if not _compiling():
        out: Tensor = _run(_eager.batch_norm, input, weight, bias, running_mean, running_var,
                           training, momentum, eps, residual, act, slope, counter,
                           _outputs(module))
        return out
    y: Tensor
    y, mean, _, var = _run(OPS["batch_norm"], input, weight, bias, running_mean, running_var,
                           residual, training, eps, act, slope)
    if training:  # the call succeeded: only now do the running statistics move
        _move(running_mean, running_var, mean, var, momentum)
    if counter is not None:
        counter.add_(1)
    out = y
    return out


def block_group_norm(input: Tensor, num_groups: int, weight: Optional[Tensor],
                     bias: Optional[Tensor], eps: float, residual: Optional[Tensor] = None,
                     act: Optional[str] = None, slope: float = 0.0,
                     module: Any = None) -> Tensor:
    """``act(group_norm(input) + residual)`` on cnorm's kernels (the caller checked that they
    take every tensor); ``module`` as block_batch_norm's."""
    if not _compiling():
        out: Tensor = _run(_eager.group_norm, input, num_groups, weight, bias, eps, residual,
                           act, slope, (None, None, 0.0), _outputs(module))
        return out
    y: Tensor = _run(OPS["group_norm"], input, num_groups, weight, bias, residual, eps, act,
                     slope)
    return y


@functional_doc(
    "input, running_mean, running_var, weight, bias, training, momentum, eps",
    "x, rm, rv = torch.randn(8, 3, 4, 4), torch.zeros(3), torch.ones(3)",
    "ct.functional.batch_norm(x, rm, rv, training=True)",
    "torch.nn.functional.batch_norm(x, None, None, training=True)")
def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    if not _ours(input, weight, bias, running_mean, running_var):
        return TF.batch_norm(input, running_mean, running_var, weight, bias, training,
                             momentum, eps)
    return block_batch_norm(input, running_mean, running_var, weight, bias, training,
                            momentum, eps)


def row_norm(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor],
             bias: Optional[Tensor], eps: Optional[float], rms: bool,
             module: Any = None) -> Tensor:
    """layer_norm (``rms`` False) or rms_norm for a module: its recycled outputs (see
    block_batch_norm); torch's function on tensors cnorm's kernels do not take."""
    if rms:
        if not _ours(input, weight):
            return TF.rms_norm(input, list(normalized_shape), weight, eps)
        out: Tensor = (_run(OPS["rms_norm"], input, list(normalized_shape), weight, eps)
                       if _compiling() else
                       _run(_eager.rms_norm, input, list(normalized_shape), weight, eps,
                            _outputs(module)))
        return out
    assert eps is not None
    if not _ours(input, weight, bias):
        return TF.layer_norm(input, normalized_shape, weight, bias, eps)
    out = (_run(OPS["layer_norm"], input, list(normalized_shape), weight, bias, eps)
           if _compiling() else
           _run(_eager.layer_norm, input, list(normalized_shape), weight, bias, eps,
                _outputs(module)))
    return out


@functional_doc("input, normalized_shape, weight, bias, eps",
                "x = torch.randn(4, 10)",
                "ct.functional.layer_norm(x, (10,))",
                "torch.nn.functional.layer_norm(x, (10,))")
def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    return row_norm(input, normalized_shape, weight, bias, eps, rms=False)


@functional_doc("input, normalized_shape, weight, eps",
                "x = torch.randn(4, 10)",
                "ct.functional.rms_norm(x, 10)",
                "torch.nn.functional.rms_norm(x, (10,))")
def rms_norm(input: Tensor, normalized_shape: Union[int, List[int], Sequence[int]],
             weight: Optional[Tensor] = None, eps: Optional[float] = None) -> Tensor:
    shape = [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)
    return row_norm(input, shape, weight, None, eps, rms=True)


@functional_doc("input, num_groups, weight, bias, eps",
                "x = torch.randn(2, 6, 5, 5)",
                "ct.functional.group_norm(x, 3)",
                "torch.nn.functional.group_norm(x, 3)")
def group_norm(input: Tensor, num_groups: int, weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    if not _ours(input, weight, bias):
        return TF.group_norm(input, num_groups, weight, bias, eps)
    return block_group_norm(input, num_groups, weight, bias, eps)


@functional_doc(
    "input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps",
    "x = torch.randn(2, 3, 5, 5)",
    "ct.functional.instance_norm(x)",
    "torch.nn.functional.instance_norm(x)",
    "Each (sample, channel) is a group of group norm; the running statistics move toward the "
    "batch mean of the instances' statistics.")
def instance_norm(input: Tensor, running_mean: Optional[Tensor] = None,
                  running_var: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                  bias: Optional[Tensor] = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    if not _ours(input, weight, bias, running_mean, running_var) or input.dim() < 3:
        return TF.instance_norm(input, running_mean, running_var, weight, bias,
                                use_input_stats, momentum, eps)
    if not use_input_stats:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    C = input.shape[1]
    if not _compiling():
        out: Tensor = _run(_eager.group_norm, input, C, weight, bias, eps, None, None, 0.0,
                           (running_mean, running_var, momentum))
        return out
    y: Tensor = _run(OPS["group_norm"], input, C, weight, bias, None, eps, None, 0.0)
    if running_mean is not None or running_var is not None:
        with torch.no_grad():
            var, mean = torch.var_mean(input.double(), dim=tuple(range(2, input.dim())))
        _move(running_mean, running_var, mean.mean(0), var.mean(0), momentum)
    return y
