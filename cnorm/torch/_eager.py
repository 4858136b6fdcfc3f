"""The eager path: cnorm's op contexts (cnorm/nn/_ops) under a plain torch.autograd.Function.

The forward builds the op's context (checks, then the kernels) and autograd keeps it for the
backward, as the NumPy layers keep theirs: the backward starts from the forward's statistics and
fused-block state without converting anything again, and the running statistics move inside
the forward, after the kernels succeeded, by cnorm's own update kernel. Calling a Python kernel
through the dispatcher costs some 20 µs, more than a small input's whole step; torch.compile
traces the registered custom ops of ``_ops`` instead, which compute the same bits.

Double backward (``create_graph=True``) runs torch's own forward again on the saved inputs and
differentiates it with torch, so second derivatives are torch's rather than silently zero.

A module's large outputs (y, and dx in its backward) are written into memory it used before
once nothing made of that memory is alive (cnorm/_core/recycle.py, as the NumPy layers do):
a training step that drops the last step's tensors then takes no page faults for them. The
memory is held beside the module (``holder``), not on it, so copies and pickles of the module
never carry it.
"""
import weakref
from types import SimpleNamespace
from typing import Any, Callable, Optional, Tuple

import torch

from .._core.recycle import take
from ..nn._ops.act import Block
from ..nn._ops.batch_norm import ANY_RANK, BatchNormContext, check_batch_norm, forward_call
from ..nn._ops.context import write_back
from ..nn._ops.group_norm import GroupNormContext, check_group_norm
from ..nn._ops.row_norm import RowNormContext, check_row_norm, rms_eps
from ._bridge import array, follow_threads, tensor

Tensor = torch.Tensor
OptTensor = Optional[Tensor]


_HOLDERS: "weakref.WeakKeyDictionary[Any, SimpleNamespace]" = weakref.WeakKeyDictionary()


def holder(module: Any) -> SimpleNamespace:
    """Where the recycled output memory of ``module`` lives (made on first use, dropped with
    the module)."""
    held = _HOLDERS.get(module)
    if held is None:
        held = _HOLDERS[module] = SimpleNamespace()
    return held


def _out(outputs: Optional[SimpleNamespace], slot: str, like: Any) -> Any:
    """A recycled output for ``slot`` of ``outputs`` (None: none to recycle, or small)."""
    return None if outputs is None else take(outputs, slot, like)


def memory_format(x: Tensor) -> torch.memory_format:
    """x's memory format, so that dy reaches a backward kernel in x's layout."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


class Held(torch.autograd.Function):
    """forward(make, again, x, weight, bias, residual): ``make()`` builds a cnorm context and
    returns it; its output is the result. ``again(x, weight, bias, residual)``: torch's own
    forward of the same op, without side effects (for double backward only). The backward gives
    dx and the gradients of the given weight, bias and residual."""

    # forward takes ctx itself: with a separate setup_context, apply binds the arguments to
    # forward's signature through inspect on every call (some 20 µs)
    @staticmethod
    def forward(ctx: Any, make: Callable[[], Any], again: Callable[..., Tensor],
                outputs: Optional[SimpleNamespace], x: Tensor, weight: OptTensor,
                bias: OptTensor, residual: OptTensor) -> Tensor:
        held = make()
        y = tensor(held.y)
        ctx.held, ctx.again, ctx.outputs = held, again, outputs
        ctx.save_for_backward(x, weight, bias, residual, y if held.block is not None else None)
        return y

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> Tuple[Any, ...]:
        x, weight, bias, residual, _ = ctx.saved_tensors  # torch's check of in-place changes
        given = (x, weight, bias, residual)
        if torch.is_grad_enabled():  # create_graph=True: torch's graph of the same forward
            wanted = [t for t in given if t is not None and t.requires_grad]
            grads = iter(torch.autograd.grad(ctx.again(*given), wanted, dy, create_graph=True))
            return (None, None, None, *(next(grads) if t is not None and t.requires_grad
                                        else None for t in given))
        held = ctx.held
        dx, gw, gb = held.backward(array(dy.contiguous(memory_format=memory_format(x))),
                                   _out(ctx.outputs, "_dx", held.layout))
        gr = None if held.block is None else held.block.grad_residual
        return (None, None, None, tensor(dx), *(None if g is None else tensor(g)
                                                for g in (gw, gb, gr)))


def held(make: Callable[[], Any], again: Callable[..., Tensor], x: Tensor, weight: OptTensor,
         bias: OptTensor, residual: OptTensor = None,
         outputs: Optional[SimpleNamespace] = None) -> Tensor:
    """``make()``'s output, under autograd when a tensor requires its gradient; ``outputs``:
    where a module's recycled output memory lives (see holder)."""
    follow_threads()
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (x, weight, bias, residual)):
        apply: Any = Held.apply
        out: Tensor = apply(make, again, outputs, x, weight, bias, residual)
        return out
    return tensor(make().y)


def _block(xa: Any, residual: OptTensor, act: Optional[str], slope: float) -> Optional[Block]:
    """A fused block's epilogue, or None for the plain norm."""
    if residual is None and act is None:
        return None
    return Block(xa, array(residual), act, slope)


def _torch_act(y: Tensor, residual: OptTensor, act: Optional[str], slope: float) -> Tensor:
    """torch's ``act(y + residual)`` (double backward of a fused block)."""
    TF = torch.nn.functional  # noqa: N806 - torch's name
    y = y if residual is None else y + residual
    if act is None:
        return y
    if act == "leaky_relu":
        return TF.leaky_relu(y, slope)
    out: Tensor = getattr(TF, act)(y)
    return out


def batch_norm_context(x: Tensor, weight: OptTensor, bias: OptTensor,
                       running_mean: OptTensor, running_var: OptTensor, training: bool,
                       eps: float, residual: OptTensor = None, act: Optional[str] = None,
                       slope: float = 0.0, momentum: Optional[float] = None,
                       counter: OptTensor = None,
                       outputs: Optional[SimpleNamespace] = None) -> BatchNormContext:
    """Batch norm's context (``act(bn(x) + residual)`` for a fused block). With ``momentum``,
    in training the running statistics move toward the batch's, and ``counter`` (a layer's
    num_batches_tracked) counts it, in one kernel call once the others succeeded."""
    update = training and momentum is not None
    given = array(running_mean), array(running_var)
    xa, wa, ba = array(x), array(weight), array(bias)
    if (residual is None and act is None and type(eps) is float and eps > 0.0
            and (training or counter is None)):
        rm, rv = given if update or not training else (None, None)
        got = forward_call(xa, xa.dtype, ANY_RANK, xa.shape[1] if xa.ndim > 1 else 0, wa, ba,
                           rm, rv, array(counter) if update else None, eps,
                           float(momentum) if update and momentum is not None else 0.0,
                           holder=outputs, training=training)
        if got is not None:  # a small call, checked in C (cnorm/nn/_ops/batch_norm.py)
            made: BatchNormContext = got[1]
            made.y = got[0]
            return made
    xa, rm, rv, w, b = check_batch_norm(xa, *given, wa, ba, training, update, eps=eps)
    ctx = BatchNormContext(xa, rm, rv, w, b, eps, training,
                           block=_block(xa, residual, act, slope), out=_out(outputs, "_y", xa))
    if update:
        assert momentum is not None
        ctx.update_running(rm, rv, float(momentum), array(counter))
        write_back((given[0], rm), (given[1], rv))
    elif counter is not None:
        counter.add_(1)
    return ctx


def batch_norm(x: Tensor, weight: OptTensor, bias: OptTensor, running_mean: OptTensor,
               running_var: OptTensor, training: bool, momentum: float, eps: float,
               residual: OptTensor = None, act: Optional[str] = None,
               slope: float = 0.0, counter: OptTensor = None,
               outputs: Optional[SimpleNamespace] = None) -> Tensor:
    """Batch norm under autograd (see batch_norm_context)."""
    def make() -> BatchNormContext:
        return batch_norm_context(x, weight, bias, running_mean, running_var, training, eps,
                                  residual, act, slope, momentum, counter, outputs)

    def again(x: Tensor, w: OptTensor, b: OptTensor, r: OptTensor) -> Tensor:
        y = torch.nn.functional.batch_norm(
            x, None if training else running_mean, None if training else running_var, w, b,
            training, 0.0, eps)
        return _torch_act(y, r, act, slope)
    return held(make, again, x, weight, bias, residual, outputs)


def group_norm_context(x: Tensor, num_groups: int, weight: OptTensor, bias: OptTensor,
                       eps: float, residual: OptTensor = None, act: Optional[str] = None,
                       slope: float = 0.0,
                       outputs: Optional[SimpleNamespace] = None) -> GroupNormContext:
    """Group norm's context (``act(gn(x) + residual)`` for a fused block)."""
    xa, G, w, b = check_group_norm(array(x), num_groups, array(weight), array(bias))
    return GroupNormContext(xa, G, w, b, eps, block=_block(xa, residual, act, slope),
                            out=_out(outputs, "_y", xa))


def group_norm(x: Tensor, num_groups: int, weight: OptTensor, bias: OptTensor, eps: float,
               residual: OptTensor = None, act: Optional[str] = None, slope: float = 0.0,
               running: Tuple[OptTensor, OptTensor, float] = (None, None, 0.0),
               outputs: Optional[SimpleNamespace] = None) -> Tensor:
    """Group norm under autograd. ``running``: instance norm's (running_mean, running_var,
    momentum), moved toward the instances' statistics."""
    def make() -> GroupNormContext:
        ctx = group_norm_context(x, num_groups, weight, bias, eps, residual, act, slope,
                                 outputs)
        if running[0] is not None or running[1] is not None:
            ctx.update_running(array(running[0]), array(running[1]), running[2])
        return ctx

    def again(x: Tensor, w: OptTensor, b: OptTensor, r: OptTensor) -> Tensor:
        y = torch.nn.functional.group_norm(x, num_groups, w, b, eps)
        return _torch_act(y, r, act, slope)
    return held(make, again, x, weight, bias, residual, outputs)


def layer_norm(x: Tensor, normalized_shape: Any, weight: OptTensor, bias: OptTensor,
               eps: float, outputs: Optional[SimpleNamespace] = None) -> Tensor:
    def make() -> RowNormContext:
        xa, ns, w, b = check_row_norm(array(x), normalized_shape, array(weight), array(bias))
        return RowNormContext(xa, ns, w, b, eps, rms=False, out=_out(outputs, "_y", xa))

    def again(x: Tensor, w: OptTensor, b: OptTensor, r: OptTensor) -> Tensor:
        return torch.nn.functional.layer_norm(x, normalized_shape, w, b, eps)
    return held(make, again, x, weight, bias, None, outputs)


def rms_norm(x: Tensor, normalized_shape: Any, weight: OptTensor, eps: Optional[float],
             outputs: Optional[SimpleNamespace] = None) -> Tensor:
    def make() -> RowNormContext:
        xa, ns, w, _ = check_row_norm(array(x), normalized_shape, array(weight), None)
        return RowNormContext(xa, ns, w, None, rms_eps(eps, xa.dtype), rms=True,
                              out=_out(outputs, "_y", xa))

    def again(x: Tensor, w: OptTensor, b: OptTensor, r: OptTensor) -> Tensor:
        return torch.nn.functional.rms_norm(x, normalized_shape, w, eps)
    return held(make, again, x, weight, None, None, outputs)
