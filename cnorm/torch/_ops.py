"""cnorm's kernels as torch custom ops (``torch.ops.cnorm.*``): each with a fake kernel (for
meta tensors and torch.compile) and registered autograd, its backward a custom op too. In eager
mode the same implementations run through a plain ``torch.autograd.Function`` (``EAGER``): the
dispatcher's way into a Python kernel costs some 20 µs a call, more than a small input's whole
normalization; torch.compile traces the registered ops.

Batch norm's forward returns the float64 mean and 1/std it normalized with, and its backward
starts from them; the row and group norms' backwards recompute their statistics from the input
(the same deterministic kernel, so the same bits). Outputs are allocated by cnorm (NumPy asks
for transparent huge pages for large arrays, which saves a training step most of its page
faults). Arguments are checked by cnorm's op families, so a bad call raises before anything
is written.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

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


def _format(x: Tensor) -> torch.memory_format:
    """x's memory format, so that dy reaches the kernel in x's layout."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


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


# --- batch norm ------------------------------------------------------------------------------

def batch_norm(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
               running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool,
               eps: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, invstd, batch variance): the mean and 1/std it normalized with (float64, for
    the backward) and the batch's unbiased variance (for the running update; empty in eval)."""
    follow_threads()
    xa, rm, rv, w, b = check_batch_norm(array(x), array(running_mean), array(running_var),
                                        array(weight), array(bias), training, False, eps=eps)
    ctx = BatchNormContext(xa, rm, rv, w, b, eps, training)
    y, mean, invstd = tensor(ctx.y), tensor(ctx.mean), tensor(ctx.invstd)
    if not training:
        return y, mean, invstd, _EMPTY.double()
    assert ctx.m2 is not None
    return y, mean, invstd, tensor(ctx.m2 / max(ctx.count - 1.0, 1.0))


def _bn_fake(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
             running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool,
             eps: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    C = x.shape[1]
    return (torch.empty_like(x), x.new_empty(C, dtype=torch.float64),
            x.new_empty(C, dtype=torch.float64), x.new_empty(C if training else 0,
                                                             dtype=torch.float64))


def batch_norm_backward(dy: Tensor, x: Tensor, weight: Optional[Tensor], has_bias: bool,
                        mean: Tensor, invstd: Tensor,
                        training: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(dx, grad_weight, grad_bias) from the forward's mean and 1/std: no second pass over x
    for the statistics."""
    follow_threads()
    xa = array(x)
    bias = _bias_like(weight, xa, (xa.shape[1],), has_bias)
    ctx = BatchNormContext.restored(xa, array(mean), array(invstd), array(weight), bias,
                                    training)
    return _grads(*ctx.backward(array(dy)))


def _bn_backward_fake(dy: Tensor, x: Tensor, weight: Optional[Tensor], has_bias: bool,
                      mean: Tensor, invstd: Tensor,
                      training: bool) -> Tuple[Tensor, Tensor, Tensor]:
    C = x.shape[1]
    return (torch.empty_like(x), x.new_empty(C if weight is not None else 0, dtype=_pdt(x)),
            x.new_empty(C if has_bias else 0, dtype=_pdt(x)))


def _bn_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, weight, bias, running_mean, running_var, training, eps = inputs
    ctx.save_for_backward(x, weight, output[1], output[2])
    ctx.has_bias, ctx.training = bias is not None, training


def _bn_backward(op: Any) -> Any:
    """The autograd backward of batch_norm, running ``op`` (its backward)."""
    def backward(ctx: Any, dy: Tensor, *_: Any) -> Tuple[Any, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        dx, gw, gb = op(dy.contiguous(memory_format=_format(x)), x, weight, ctx.has_bias, mean,
                        invstd, ctx.training)
        return (dx, gw if weight is not None else None, gb if ctx.has_bias else None,
                None, None, None, None)
    return backward


# --- layer, RMS and group norm: y; the backward (dx, grad_weight, grad_bias) ----------------

def layer_norm(x: Tensor, normalized_shape: List[int], weight: Optional[Tensor],
               bias: Optional[Tensor], eps: float) -> Tensor:
    follow_threads()
    return tensor(F.layer_norm(array(x), normalized_shape, array(weight), array(bias), eps))


def layer_norm_backward(dy: Tensor, x: Tensor, normalized_shape: List[int],
                        weight: Optional[Tensor], has_bias: bool,
                        eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    follow_threads()
    xa = array(x)
    bias = _bias_like(weight, xa, normalized_shape, has_bias)
    return _grads(*F.layer_norm_backward(array(dy), xa, normalized_shape, array(weight), bias,
                                         eps))


def rms_norm(x: Tensor, normalized_shape: List[int], weight: Optional[Tensor],
             eps: Optional[float]) -> Tensor:
    follow_threads()
    return tensor(F.rms_norm(array(x), normalized_shape, array(weight), eps))


def rms_norm_backward(dy: Tensor, x: Tensor, normalized_shape: List[int],
                      weight: Optional[Tensor], eps: Optional[float]) -> Tuple[Tensor, Tensor]:
    follow_threads()
    dx, gw = F.rms_norm_backward(array(dy), array(x), normalized_shape, array(weight), eps)
    return tensor(dx), _EMPTY.clone() if gw is None else tensor(gw)


def group_norm(x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor],
               eps: float) -> Tensor:
    follow_threads()
    return tensor(F.group_norm(array(x), num_groups, array(weight), array(bias), eps))


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


def _rms_fake_grads(dy: Tensor, x: Tensor, ns: Any, weight: Optional[Tensor],
                    eps: Optional[float]) -> Tuple[Tensor, ...]:
    return _fake_grads(dy, x, ns, weight, False)[:2]


def _rows_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    """layer_norm (x, shape, weight, bias, eps), rms_norm (x, shape, weight, eps) and
    group_norm (x, groups, weight, bias, eps): keep x, weight and the rest."""
    x, arg, weight = inputs[:3]
    ctx.save_for_backward(x, weight)
    ctx.arg, ctx.eps = arg, inputs[-1]
    ctx.has_bias = len(inputs) == 5 and inputs[3] is not None


def _rows_backward(n_inputs: int) -> Any:
    """The autograd backward of layer_norm, group_norm (5 inputs) and rms_norm (4), running
    ``op`` (its backward)."""
    def with_op(op: Any) -> Any:
        def backward(ctx: Any, dy: Tensor) -> Tuple[Any, ...]:
            x, weight = ctx.saved_tensors
            dy = dy.contiguous(memory_format=_format(x))
            if n_inputs == 4:  # rms_norm
                dx, gw = op(dy, x, ctx.arg, weight, ctx.eps)
                return dx, None, gw if weight is not None else None, None
            dx, gw, gb = op(dy, x, ctx.arg, weight, ctx.has_bias, ctx.eps)
            return (dx, None, gw if weight is not None else None,
                    gb if ctx.has_bias else None, None)
        return backward
    return with_op


def _eager(impl: Any, setup: Any, backward: Any, outputs: int) -> Any:
    """``impl`` under autograd without the dispatcher: a torch.autograd.Function with the same
    setup and backward as the registered op's (``outputs`` > 1: only the first is
    differentiable); without gradients to track, ``impl`` itself."""
    class Function(torch.autograd.Function):
        # forward takes ctx itself: with a separate setup_context, apply binds the arguments
        # to forward's signature through inspect on every call (some 20 µs)
        @staticmethod
        def forward(ctx: Any, *args: Any) -> Any:
            output = impl(*args)
            setup(ctx, args, output)
            if outputs > 1:
                ctx.mark_non_differentiable(*output[1:])
            return output

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> Any:
            return backward(ctx, *grads)

    apply: Any = Function.apply

    def run(*args: Any) -> Any:
        if torch.is_grad_enabled() and any(type(a) in (Tensor, torch.nn.Parameter)
                                           and a.requires_grad for a in args):
            return apply(*args)
        return impl(*args)
    return run


# name: (implementation, its backward, fakes, autograd setup, backward maker, outputs)
_FAMILIES: Dict[str, Tuple[Any, ...]] = {
    "batch_norm": (batch_norm, batch_norm_backward, _bn_fake, _bn_backward_fake, _bn_setup,
                   _bn_backward, 4),
    "layer_norm": (layer_norm, layer_norm_backward, _fake_y, _fake_grads, _rows_setup,
                   _rows_backward(5), 1),
    "rms_norm": (rms_norm, rms_norm_backward, _fake_y, _rms_fake_grads, _rows_setup,
                 _rows_backward(4), 1),
    "group_norm": (group_norm, group_norm_backward, _fake_y, _fake_grads, _rows_setup,
                   _rows_backward(5), 1),
}
OPS: Dict[str, Any] = {}    # name -> torch.ops.cnorm.<name> (what torch.compile traces)
EAGER: Dict[str, Any] = {}  # name -> the same implementation under a plain autograd.Function
for _name, (_impl, _bwd, _fake, _bwd_fake, _setup, _backward, _n) in _FAMILIES.items():
    _op = torch.library.custom_op(f"cnorm::{_name}", _impl, mutates_args=())
    _bop = torch.library.custom_op(f"cnorm::{_name}_backward", _bwd, mutates_args=())
    _op.register_fake(_fake)
    _bop.register_fake(_bwd_fake)
    torch.library.register_autograd(f"cnorm::{_name}", _backward(_bop), setup_context=_setup)
    OPS[_name] = getattr(torch.ops.cnorm, _name)
    EAGER[_name] = _eager(_impl, _setup, _backward(_bwd), _n)
