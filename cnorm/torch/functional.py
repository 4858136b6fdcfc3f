"""``torch.nn.functional``'s normalizations on cnorm's kernels: the same signatures and
semantics (running statistics updated in place), through the custom ops of ``_ops``, with
autograd. Anything the kernels do not take (a CUDA or integer tensor, a tensor subclass)
runs torch's own function."""
from typing import Any, List, Optional, Sequence, Union

import torch
import torch.nn.functional as TF  # noqa: N812 - torch's functional, beside this one

from ..nn._ops.context import update_running
from ._bridge import array, takes, torch_error
from ._ops import EAGER, OPS

Tensor = torch.Tensor
__all__ = ["batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"]


def _ours(x: Tensor, *params: Optional[Tensor]) -> bool:
    """cnorm runs the call: x and every given parameter or statistic are tensors it takes."""
    return takes(x) and all(p is None or takes(p) for p in params)


def _run(name: str, *args: Any) -> Any:
    """The op ``name`` on ``args``: the registered custom op under torch.compile, else the same
    implementation without the dispatcher (see _ops). With torch's error types: torch raises
    RuntimeError for a bad shape or dtype where cnorm's checks raise ValueError or TypeError
    (the message is cnorm's), and ValueError for a batch of one value per channel, as cnorm."""
    op = OPS[name] if torch.compiler.is_compiling() else EAGER[name]
    try:
        return op(*args)
    except (TypeError, ValueError) as e:
        error = torch_error(e)
        if error is e:
            raise
        raise error from e


def _move(running_mean: Optional[Tensor], running_var: Optional[Tensor], mean: Tensor,
          var: Tensor, momentum: float) -> None:
    """running = (1 - momentum) * running + momentum * batch, in float64 and rounded once:
    eagerly by cnorm's update kernel on the tensors' memory (the layers' own, one call), under
    torch.compile by torch's ops (traced)."""
    if running_mean is None and running_var is None:
        return
    if not torch.compiler.is_compiling():
        update_running(array(running_mean), array(running_var), array(mean), array(var), 1.0,
                       momentum)
        return
    with torch.no_grad():
        for running, batch in ((running_mean, mean), (running_var, var)):
            if running is not None:
                running.copy_(running.double().mul_(1.0 - momentum).add_(batch, alpha=momentum))


def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.batch_norm`` on cnorm's kernels."""
    if not _ours(input, weight, bias, running_mean, running_var):
        return TF.batch_norm(input, running_mean, running_var, weight, bias, training,
                             momentum, eps)
    y, mean, _, var = _run("batch_norm", input, weight, bias, running_mean, running_var,
                           training, eps)
    if training:  # the call succeeded: only now do the running statistics move
        _move(running_mean, running_var, mean, var, momentum)
    out: Tensor = y
    return out


def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.layer_norm`` on cnorm's kernels."""
    if not _ours(input, weight, bias):
        return TF.layer_norm(input, normalized_shape, weight, bias, eps)
    out: Tensor = _run("layer_norm", input, list(normalized_shape), weight, bias,
                       eps)
    return out


def rms_norm(input: Tensor, normalized_shape: Union[int, List[int], Sequence[int]],
             weight: Optional[Tensor] = None, eps: Optional[float] = None) -> Tensor:
    """``torch.nn.functional.rms_norm`` on cnorm's kernels."""
    shape = [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)
    if not _ours(input, weight):
        return TF.rms_norm(input, shape, weight, eps)
    out: Tensor = _run("rms_norm", input, shape, weight, eps)
    return out


def group_norm(input: Tensor, num_groups: int, weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.group_norm`` on cnorm's kernels."""
    if not _ours(input, weight, bias):
        return TF.group_norm(input, num_groups, weight, bias, eps)
    out: Tensor = _run("group_norm", input, num_groups, weight, bias, eps)
    return out


def instance_norm(input: Tensor, running_mean: Optional[Tensor] = None,
                  running_var: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                  bias: Optional[Tensor] = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.instance_norm`` on cnorm's kernels: each (sample, channel) is a
    group of group norm; with running statistics and the input's, they move toward the batch
    mean of the instances' statistics (one more read of the input, as torch)."""
    if not _ours(input, weight, bias, running_mean, running_var) or input.dim() < 3:
        return TF.instance_norm(input, running_mean, running_var, weight, bias,
                                use_input_stats, momentum, eps)
    if not use_input_stats:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    out: Tensor = _run("group_norm", input, input.shape[1], weight, bias, eps)
    if running_mean is not None or running_var is not None:
        with torch.no_grad():
            var, mean = torch.var_mean(input.double(), dim=tuple(range(2, input.dim())))
        _move(running_mean, running_var, mean.mean(0), var.mean(0), momentum)
    return out


