"""cnorm's kernels as torch custom ops (``torch.ops.cnorm.*``): each with a fake kernel (for
meta tensors and torch.compile) and registered autograd, its backward a custom op too.

The forwards return only what autograd and the running statistics need; the backwards
recompute the statistics from the input (one read of it: the same deterministic kernel, so the
same bits) rather than carry them between the two calls. Arguments are checked by cnorm's
op families, so a bad call raises before anything is written.
"""
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..nn import functional as F  # noqa: N812 - cnorm.nn.functional, named as torch's
from ..nn._ops.batch_norm import BatchNormContext, check_batch_norm
from ._bridge import array, follow_threads, tensor

Tensor = torch.Tensor
_EMPTY = torch.empty(0)


def _grads(dx: Any, gw: Any, gb: Any) -> Tuple[Tensor, Tensor, Tensor]:
    """A backward's results as tensors (an absent parameter's gradient: an empty tensor)."""
    return (tensor(dx), _EMPTY.clone() if gw is None else tensor(gw),
            _EMPTY.clone() if gb is None else tensor(gb))


# --- batch norm ------------------------------------------------------------------------------

@torch.library.custom_op("cnorm::batch_norm", mutates_args=())
def batch_norm(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
               running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool,
               eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """(y, batch mean, batch unbiased variance): the statistics float64, for the running
    update (empty in eval)."""
    follow_threads()
    xa, rm, rv, w, b = check_batch_norm(array(x), array(running_mean), array(running_var),
                                        array(weight), array(bias), training, False, eps=eps)
    ctx = BatchNormContext(xa, rm, rv, w, b, eps, training)
    if not training:
        return tensor(ctx.y), _EMPTY.double(), _EMPTY.double()
    assert ctx.m2 is not None
    return tensor(ctx.y), tensor(ctx.mean), tensor(ctx.m2 / max(ctx.count - 1.0, 1.0))


@batch_norm.register_fake
def _(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
      running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool,
      eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    C = x.shape[1] if training else 0
    return torch.empty_like(x), x.new_empty(C, dtype=torch.float64), \
        x.new_empty(C, dtype=torch.float64)


@torch.library.custom_op("cnorm::batch_norm_backward", mutates_args=())
def batch_norm_backward(dy: Tensor, x: Tensor, weight: Optional[Tensor], has_bias: bool,
                        running_mean: Optional[Tensor], running_var: Optional[Tensor],
                        training: bool, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    follow_threads()
    xa = array(x)
    bias = np.zeros(xa.shape[1], array(weight).dtype if weight is not None else
                    np.float32 if xa.dtype.itemsize == 2 else xa.dtype) if has_bias else None
    return _grads(*F.batch_norm_backward(array(dy), xa, array(running_mean),
                                         array(running_var), array(weight), bias, training,
                                         eps))


@batch_norm_backward.register_fake
def _(dy: Tensor, x: Tensor, weight: Optional[Tensor], has_bias: bool,
      running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool,
      eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    C = x.shape[1]
    pdt = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return (torch.empty_like(x), x.new_empty(C if weight is not None else 0, dtype=pdt),
            x.new_empty(C if has_bias else 0, dtype=pdt))


def _bn_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, weight, bias, running_mean, running_var, training, eps = inputs
    if training:  # the batch's statistics: the running ones move after this and are not used
        running_mean = running_var = None
    ctx.save_for_backward(x, weight, running_mean, running_var)
    ctx.has_bias, ctx.training, ctx.eps = bias is not None, training, eps


def _bn_backward(ctx: Any, dy: Tensor, _dmean: Any, _dvar: Any) -> Tuple[Any, ...]:
    x, weight, running_mean, running_var = ctx.saved_tensors
    dx, gw, gb = batch_norm_backward(dy.contiguous(memory_format=_format(x)), x, weight,
                                     ctx.has_bias, running_mean, running_var, ctx.training,
                                     ctx.eps)
    return (dx, gw if weight is not None else None, gb if ctx.has_bias else None,
            None, None, None, None)


torch.library.register_autograd("cnorm::batch_norm", _bn_backward, setup_context=_bn_setup)


def _format(x: Tensor) -> torch.memory_format:
    """x's memory format, so that dy reaches the kernel in x's layout."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


# --- layer, RMS and group norm: y; the backward (dx, grad_weight, grad_bias) ----------------

def _pdt(x: Tensor) -> torch.dtype:
    """The parameters' dtype of x's data: float32 for the half types."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _bias_like(weight: Optional[Tensor], x: Any, shape: Sequence[int], has_bias: bool) -> Any:
    """A zero bias for a backward that must report the bias's gradient (its value does not
    enter the gradients)."""
    if not has_bias:
        return None
    dt = array(weight).dtype if weight is not None else (
        np.float32 if x.dtype.itemsize == 2 else x.dtype)
    return np.zeros(tuple(shape), dt)


@torch.library.custom_op("cnorm::layer_norm", mutates_args=())
def layer_norm(x: Tensor, normalized_shape: List[int], weight: Optional[Tensor],
               bias: Optional[Tensor], eps: float) -> Tensor:
    follow_threads()
    return tensor(F.layer_norm(array(x), normalized_shape, array(weight), array(bias), eps))


@torch.library.custom_op("cnorm::layer_norm_backward", mutates_args=())
def layer_norm_backward(dy: Tensor, x: Tensor, normalized_shape: List[int],
                        weight: Optional[Tensor], has_bias: bool,
                        eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    follow_threads()
    xa = array(x)
    bias = _bias_like(weight, xa, normalized_shape, has_bias)
    return _grads(*F.layer_norm_backward(array(dy), xa, normalized_shape, array(weight), bias,
                                         eps))


@torch.library.custom_op("cnorm::rms_norm", mutates_args=())
def rms_norm(x: Tensor, normalized_shape: List[int], weight: Optional[Tensor],
             eps: Optional[float]) -> Tensor:
    follow_threads()
    return tensor(F.rms_norm(array(x), normalized_shape, array(weight), eps))


@torch.library.custom_op("cnorm::rms_norm_backward", mutates_args=())
def rms_norm_backward(dy: Tensor, x: Tensor, normalized_shape: List[int],
                      weight: Optional[Tensor], eps: Optional[float]) -> Tuple[Tensor, Tensor]:
    follow_threads()
    dx, gw = F.rms_norm_backward(array(dy), array(x), normalized_shape, array(weight), eps)
    return tensor(dx), _EMPTY.clone() if gw is None else tensor(gw)


@torch.library.custom_op("cnorm::group_norm", mutates_args=())
def group_norm(x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor],
               eps: float) -> Tensor:
    follow_threads()
    return tensor(F.group_norm(array(x), num_groups, array(weight), array(bias), eps))


@torch.library.custom_op("cnorm::group_norm_backward", mutates_args=())
def group_norm_backward(dy: Tensor, x: Tensor, num_groups: int, weight: Optional[Tensor],
                        has_bias: bool, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    follow_threads()
    xa = array(x)
    bias = _bias_like(weight, xa, (xa.shape[1],), has_bias)
    return _grads(*F.group_norm_backward(array(dy), xa, num_groups, array(weight), bias, eps))


def _fake_y(x: Tensor, *_: Any) -> Tensor:
    return torch.empty_like(x)


def _fake_grads(dy: Tensor, x: Tensor, pshape: Any, weight: Optional[Tensor], has_bias: Any,
                *_: Any) -> Tuple[Tensor, ...]:
    """(dx, grad_weight, grad_bias) of the parameters' shape (empty when absent)."""
    shape = weight.shape if weight is not None else (x.shape[1],) if isinstance(pshape, int) \
        else tuple(pshape)
    empty = x.new_empty(0, dtype=_pdt(x))
    gw = x.new_empty(shape, dtype=_pdt(x)) if weight is not None else empty
    gb = x.new_empty(shape, dtype=_pdt(x)) if has_bias is True else empty
    return torch.empty_like(x), gw, gb


for _op in (layer_norm, rms_norm, group_norm):
    _op.register_fake(_fake_y)
layer_norm_backward.register_fake(_fake_grads)
group_norm_backward.register_fake(_fake_grads)
rms_norm_backward.register_fake(
    lambda dy, x, ns, weight, eps: _fake_grads(dy, x, ns, weight, False)[:2])


def _rows_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    """layer_norm (x, shape, weight, bias, eps), rms_norm (x, shape, weight, eps) and
    group_norm (x, groups, weight, bias, eps): keep x, weight and the rest."""
    x, arg, weight = inputs[:3]
    ctx.save_for_backward(x, weight)
    ctx.arg, ctx.eps = arg, inputs[-1]
    ctx.has_bias = len(inputs) == 5 and inputs[3] is not None


def _rows_backward(op: Any, n_inputs: int) -> Any:
    def backward(ctx: Any, dy: Tensor) -> Tuple[Any, ...]:
        x, weight = ctx.saved_tensors
        dy = dy.contiguous(memory_format=_format(x))
        if n_inputs == 4:  # rms_norm
            dx, gw = op(dy, x, ctx.arg, weight, ctx.eps)
            return dx, None, gw if weight is not None else None, None
        dx, gw, gb = op(dy, x, ctx.arg, weight, ctx.has_bias, ctx.eps)
        return (dx, None, gw if weight is not None else None, gb if ctx.has_bias else None,
                None)
    return backward


torch.library.register_autograd("cnorm::layer_norm", _rows_backward(layer_norm_backward, 5),
                                setup_context=_rows_setup)
torch.library.register_autograd("cnorm::rms_norm", _rows_backward(rms_norm_backward, 4),
                                setup_context=_rows_setup)
torch.library.register_autograd("cnorm::group_norm", _rows_backward(group_norm_backward, 5),
                                setup_context=_rows_setup)
