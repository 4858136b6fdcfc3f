"""cnorm's kernels as torch custom ops (``torch.ops.cnorm.*``), what torch.compile traces:
each with a fake kernel (for meta tensors and torch.compile) and registered autograd, its
backward a custom op too. Eager calls take ``_eager``'s path, which computes the same bits.

Batch norm's forward returns the float64 mean and 1/std it normalized with, and its backward
starts from them; the row and group norms' backwards recompute their statistics from the input
(the same deterministic kernel, so the same bits). The batch and group norm ops carry the fused
blocks' epilogue, ``act(norm(x) + residual)`` (``act`` None and no residual: the plain norm).
Outputs are allocated by cnorm (NumPy asks for transparent huge pages for large arrays, which
saves a training step most of its page faults). Arguments are checked by cnorm's op families,
so a bad call raises before anything is written.
"""
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..nn._ops.batch_norm import BatchNormContext
from ..nn._ops.row_norm import RowNormContext, check_row_norm, rms_eps
from ._bridge import array, follow_threads, tensor
from ._eager import _block, batch_norm_context, group_norm_context, memory_format
from ._eager import layer_norm as _layer_norm
from ._eager import rms_norm as _rms_norm

Tensor = torch.Tensor
OptTensor = Optional[Tensor]
_EMPTY = torch.empty(0)


def _pdt(x: Tensor) -> torch.dtype:
    """The parameters' dtype of x's data: float32 for the half types."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def like(t: Tensor, x: Tensor) -> Tensor:
    """``t`` with x's strides, as the fake kernels promise (``torch.empty_like``): cnorm's
    output already has them but where x's layout is ambiguous (an empty batch, axes of size
    one), then a copy."""
    return t if t.stride() == x.stride() else torch.empty_like(x).copy_(t)


def _grads(grads: Tuple[Any, ...], gr: Any, x: Tensor, residual: OptTensor = None) -> Any:
    """A backward's (dx, grad_weight, grad_bias) and the residual's gradient as tensors (an
    absent one: an empty tensor), dx and the residual's with the strides of x and residual."""
    dx, *rest = (_EMPTY.clone() if g is None else tensor(g) for g in (*grads, gr))
    if gr is not None:
        assert residual is not None
        rest[-1] = like(rest[-1], residual)
    return (like(dx, x), *rest)


def _fake_grads(x: Tensor, shape: Any, weight: OptTensor, bias: OptTensor,
                residual: OptTensor) -> Tuple[Tensor, ...]:
    """The fake (dx, grad_weight, grad_bias, grad_residual): empty where absent."""
    empty = x.new_empty(0, dtype=_pdt(x))
    return (torch.empty_like(x),
            x.new_empty(shape, dtype=_pdt(x)) if weight is not None else empty,
            x.new_empty(shape, dtype=_pdt(x)) if bias is not None else empty,
            torch.empty_like(residual) if residual is not None else x.new_empty(0))


def _needed(grads: Tuple[Tensor, ...], given: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """Each gradient where its input was given, None where it was absent."""
    return tuple(g if t is not None else None for g, t in zip(grads, given))


# --- batch norm (and BatchNormAct) --------------------------------------------------------

def batch_norm(x: Tensor, weight: OptTensor, bias: OptTensor, running_mean: OptTensor,
               running_var: OptTensor, residual: OptTensor, training: bool, eps: float,
               act: Optional[str], slope: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, mean, invstd, batch variance): the mean and 1/std it normalized with (float64, for
    the backward) and the batch's unbiased variance (for the running update; empty in eval)."""
    follow_threads()
    ctx = batch_norm_context(x, weight, bias, running_mean, running_var, training, eps,
                             residual, act, slope)
    y, mean, invstd = like(tensor(ctx.y), x), tensor(ctx.mean), tensor(ctx.invstd)
    if not training:
        return y, mean, invstd, _EMPTY.double()
    assert ctx.m2 is not None
    return y, mean, invstd, tensor(ctx.m2 / max(ctx.count - 1.0, 1.0))


def _bn_fake(x: Tensor, weight: OptTensor, bias: OptTensor, running_mean: OptTensor,
             running_var: OptTensor, residual: OptTensor, training: bool, eps: float,
             act: Optional[str], slope: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    C = x.shape[1]
    return (torch.empty_like(x), x.new_empty(C, dtype=torch.float64),
            x.new_empty(C, dtype=torch.float64),
            x.new_empty(C if training else 0, dtype=torch.float64))


def batch_norm_backward(dy: Tensor, x: Tensor, y: OptTensor, residual: OptTensor,
                        weight: OptTensor, bias: OptTensor, mean: Tensor, invstd: Tensor,
                        training: bool, act: Optional[str],
                        slope: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, grad_weight, grad_bias, grad_residual) from the forward's mean and 1/std (and a
    fused block's output): no second pass over x for the statistics."""
    follow_threads()
    xa = array(x)
    ctx = BatchNormContext.restored(xa, array(mean), array(invstd), array(weight),
                                    array(bias), training, _block(xa, residual, act, slope),
                                    array(y))
    out: Tuple[Tensor, Tensor, Tensor, Tensor] = _grads(
        ctx.backward(array(dy)), None if ctx.block is None else ctx.block.grad_residual, x,
        residual)
    return out


def _bn_backward_fake(dy: Tensor, x: Tensor, y: OptTensor, residual: OptTensor,
                      weight: OptTensor, bias: OptTensor, mean: Tensor, invstd: Tensor,
                      training: bool, act: Optional[str], slope: float) -> Tuple[Tensor, ...]:
    return _fake_grads(x, (x.shape[1],), weight, bias, residual)


def _bn_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, weight, bias, _, _, residual, training, _, act, slope = inputs
    fused = act is not None or residual is not None
    ctx.save_for_backward(x, output[0] if fused else None, residual, weight, bias, output[1],
                          output[2])
    ctx.training, ctx.act, ctx.slope = training, act, slope


def _bn_backward(op: Any) -> Any:
    """The autograd backward of batch_norm, running ``op`` (its backward)."""
    def backward(ctx: Any, dy: Tensor, *_: Any) -> Tuple[Any, ...]:
        x, y, residual, weight, bias, mean, invstd = ctx.saved_tensors
        dx, gw, gb, gr = op(dy.contiguous(memory_format=memory_format(x)), x, y, residual,
                            weight, bias, mean, invstd, ctx.training, ctx.act, ctx.slope)
        gw, gb, gr = _needed((gw, gb, gr), (weight, bias, residual))
        return dx, gw, gb, None, None, gr, None, None, None, None
    return backward


# --- group norm (and GroupNormAct) --------------------------------------------------------

def group_norm(x: Tensor, num_groups: int, weight: OptTensor, bias: OptTensor,
               residual: OptTensor, eps: float, act: Optional[str], slope: float) -> Tensor:
    follow_threads()
    return like(tensor(group_norm_context(x, num_groups, weight, bias, eps, residual, act,
                                          slope).y), x)


def group_norm_backward(dy: Tensor, x: Tensor, num_groups: int, weight: OptTensor,
                        bias: OptTensor, residual: OptTensor, eps: float, act: Optional[str],
                        slope: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dx, grad_weight, grad_bias, grad_residual), the statistics (and a fused block's
    output) recomputed by the forward's kernel."""
    follow_threads()
    ctx = group_norm_context(x, num_groups, weight, bias, eps, residual, act, slope)
    out: Tuple[Tensor, Tensor, Tensor, Tensor] = _grads(
        ctx.backward(array(dy)), None if ctx.block is None else ctx.block.grad_residual, x,
        residual)
    return out


def _gn_backward_fake(dy: Tensor, x: Tensor, num_groups: int, weight: OptTensor,
                      bias: OptTensor, residual: OptTensor, eps: float, act: Optional[str],
                      slope: float) -> Tuple[Tensor, ...]:
    return _fake_grads(x, (x.shape[1],), weight, bias, residual)


def _gn_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    x, ctx.groups, weight, bias, residual, ctx.eps, ctx.act, ctx.slope = inputs
    ctx.save_for_backward(x, weight, bias, residual)


def _gn_backward(op: Any) -> Any:
    def backward(ctx: Any, dy: Tensor) -> Tuple[Any, ...]:
        x, weight, bias, residual = ctx.saved_tensors
        dx, gw, gb, gr = op(dy.contiguous(memory_format=memory_format(x)), x, ctx.groups,
                            weight, bias, residual, ctx.eps, ctx.act, ctx.slope)
        gw, gb, gr = _needed((gw, gb, gr), (weight, bias, residual))
        return dx, None, gw, gb, gr, None, None, None
    return backward


# --- layer and RMS norm -------------------------------------------------------------------

def layer_norm(x: Tensor, normalized_shape: List[int], weight: OptTensor, bias: OptTensor,
               eps: float) -> Tensor:
    with torch.no_grad():
        return like(_layer_norm(x, normalized_shape, weight, bias, eps), x)


def layer_norm_backward(dy: Tensor, x: Tensor, normalized_shape: List[int], weight: OptTensor,
                        bias: OptTensor, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    follow_threads()
    xa, ns, w, b = check_row_norm(array(x), normalized_shape, array(weight), array(bias))
    out: Tuple[Tensor, Tensor, Tensor] = _grads(
        RowNormContext(xa, ns, w, b, eps, rms=False).backward(array(dy)), None, x)[:3]
    return out


def _ln_backward_fake(dy: Tensor, x: Tensor, normalized_shape: List[int], weight: OptTensor,
                      bias: OptTensor, eps: float) -> Tuple[Tensor, ...]:
    return _fake_grads(x, tuple(normalized_shape), weight, bias, None)[:3]


def rms_norm(x: Tensor, normalized_shape: List[int], weight: OptTensor,
             eps: Optional[float]) -> Tensor:
    with torch.no_grad():
        return like(_rms_norm(x, normalized_shape, weight, eps), x)


def rms_norm_backward(dy: Tensor, x: Tensor, normalized_shape: List[int], weight: OptTensor,
                      eps: Optional[float]) -> Tuple[Tensor, Tensor]:
    follow_threads()
    xa, ns, w, _ = check_row_norm(array(x), normalized_shape, array(weight), None)
    ctx = RowNormContext(xa, ns, w, None, rms_eps(eps, xa.dtype), rms=True)
    out: Tuple[Tensor, Tensor] = _grads(ctx.backward(array(dy)), None, x)[:2]
    return out


def _rms_backward_fake(dy: Tensor, x: Tensor, normalized_shape: List[int], weight: OptTensor,
                       eps: Optional[float]) -> Tuple[Tensor, ...]:
    return _fake_grads(x, tuple(normalized_shape), weight, None, None)[:2]


def _rows_setup(ctx: Any, inputs: Tuple[Any, ...], output: Any) -> None:
    """layer_norm (x, shape, weight, bias, eps) and rms_norm (x, shape, weight, eps)."""
    x, ctx.shape, weight = inputs[:3]
    bias = inputs[3] if len(inputs) == 5 else None
    ctx.save_for_backward(x, weight, bias)
    ctx.eps, ctx.rms = inputs[-1], len(inputs) == 4


def _rows_backward(op: Any) -> Any:
    def backward(ctx: Any, dy: Tensor) -> Tuple[Any, ...]:
        x, weight, bias = ctx.saved_tensors
        dy = dy.contiguous()
        if ctx.rms:
            dx, gw = op(dy, x, ctx.shape, weight, ctx.eps)
            return dx, None, gw if weight is not None else None, None
        dx, gw, gb = op(dy, x, ctx.shape, weight, bias, ctx.eps)
        return (dx, None, *_needed((gw, gb), (weight, bias)), None)
    return backward


def _fake_y(x: Tensor, *_: Any) -> Tensor:
    return torch.empty_like(x)


# The ops are defined on a torch.library.Library, their Python kernels registered for the CPU
# key: a call costs some 2 µs of dispatch where torch.library.custom_op's wrapper costs 8 µs
# (bench/torch_op_overhead.py); the schema is inferred from the annotations as custom_op does.
_library: Any = torch.library.Library  # untyped in torch's stubs
_LIB = _library("cnorm", "DEF")


def register(name: str, impl: Any, backward_impl: Any, fake: Any, backward_fake: Any,
             setup: Any, backward: Any) -> Any:
    """Register ``cnorm::<name>`` and ``cnorm::<name>_backward`` (no argument mutated) with
    their fakes, and the first's autograd (``backward(op)``: the autograd formula running the
    backward op); returns ``torch.ops.cnorm.<name>``."""
    for op_name, kernel, fake_kernel in ((name, impl, fake),
                                         (f"{name}_backward", backward_impl, backward_fake)):
        _LIB.define(op_name + torch.library.infer_schema(kernel, mutates_args=()))
        _LIB.impl(op_name, kernel, "CPU")
        torch.library.register_fake(f"cnorm::{op_name}", fake_kernel, lib=_LIB)
    torch.library.register_autograd(f"cnorm::{name}",
                                    backward(getattr(torch.ops.cnorm, f"{name}_backward")),
                                    setup_context=setup, lib=_LIB)
    return getattr(torch.ops.cnorm, name)


OPS: Dict[str, Any] = {  # name -> torch.ops.cnorm.<name> (what torch.compile traces)
    "batch_norm": register("batch_norm", batch_norm, batch_norm_backward, _bn_fake,
                           _bn_backward_fake, _bn_setup, _bn_backward),
    "group_norm": register("group_norm", group_norm, group_norm_backward, _fake_y,
                           _gn_backward_fake, _gn_setup, _gn_backward),
    "layer_norm": register("layer_norm", layer_norm, layer_norm_backward, _fake_y,
                           _ln_backward_fake, _rows_setup, _rows_backward),
    "rms_norm": register("rms_norm", rms_norm, rms_norm_backward, _fake_y,
                         _rms_backward_fake, _rows_setup, _rows_backward),
}
