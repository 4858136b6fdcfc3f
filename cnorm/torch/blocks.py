"""``BatchNormAct2d`` and ``GroupNormAct`` for torch, with timm's constructors (so ``convert``
can map timm models) and a ``residual=`` argument: ``act(norm(x) + residual)`` in one pass of
cnorm's kernels when the activation is one of theirs (relu, leaky_relu, silu, gelu); any other
activation runs as its torch module after the fused norm, and tensors cnorm's kernels do not
take run torch's code throughout."""
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from . import _docs
from . import functional as F  # noqa: N812 - named as torch's
from ._bridge import takes
from .modules import _BatchNormForward

Tensor = torch.Tensor
# torch activation classes and names cnorm's kernels fuse
FUSED = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.SiLU: "silu", nn.GELU: "gelu",
         "relu": "relu", "leaky_relu": "leaky_relu", "silu": "silu", "swish": "silu",
         "gelu": "gelu"}
TORCH_ACTS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "silu": nn.SiLU, "swish": nn.SiLU,
              "gelu": nn.GELU, "identity": nn.Identity}


def _act(act_layer: Any, act_kwargs: Optional[Dict[str, Any]], apply_act: bool,
         inplace: bool) -> Tuple[nn.Module, bool, Optional[str], float]:
    """The activation module (as timm builds it); whether cnorm's kernels fuse it, and their
    name (None: no activation) and slope for it."""
    kwargs = dict(act_kwargs or {})
    if not apply_act or act_layer is None or act_layer in ("identity", nn.Identity):
        return nn.Identity(), True, None, 0.0
    cls = TORCH_ACTS[act_layer] if isinstance(act_layer, str) else act_layer
    if cls in (nn.ReLU, nn.LeakyReLU, nn.SiLU):
        kwargs.setdefault("inplace", inplace)
    module = cls(**kwargs)
    return (module, *describe(module))


# activation classes of timm (timm.layers.activations) that compute what torch's of the same
# role do: fused by their class name
TIMM_ACTS = {"Swish": "silu", "GELU": "gelu"}


def describe(act: nn.Module) -> Tuple[bool, Optional[str], float]:
    """Whether cnorm's kernels fuse the activation module ``act``, their name for it (None:
    the identity) and its slope."""
    if type(act) is nn.Identity:
        return True, None, 0.0
    name = FUSED.get(type(act))
    if name is None and type(act).__module__.startswith("timm."):
        name = TIMM_ACTS.get(type(act).__name__)
    if name == "gelu" and getattr(act, "approximate", "none") != "none":
        name = None  # the tanh approximation: torch's module
    return name is not None, name, float(getattr(act, "negative_slope", 0.0))


class _Fused:
    """forward(x, residual=None) of a block: the fused kernels when they apply, else the
    norm, + residual, then ``self.act`` in torch."""

    fusable: bool
    act_name: Optional[str]
    slope: float
    drop: nn.Module
    act: nn.Module

    def _fused(self, x: Tensor, residual: Optional[Tensor]) -> Tensor:
        raise NotImplementedError  # act(norm(x) + residual) in one call of cnorm's kernels

    def _norm(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self: Any, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        params = [getattr(self, n, None) for n in ("weight", "bias", "running_mean",
                                                   "running_var")]
        fused = (self.fusable and isinstance(self.drop, nn.Identity)
                 and takes(x) and (residual is None or takes(residual))
                 and all(p is None or takes(p) for p in params))
        out: Tensor
        if fused:
            out = self._fused(x, residual)
            return out
        y = self.drop(self._norm(x))
        out = self.act(y if residual is None else y + residual)
        return out


def _fill(cls: Any) -> Any:
    """The shared sections into a block's docstring."""
    cls.__doc__ = cls.__doc__.format(forward=_docs.BLOCK_FORWARD.replace("\n", "\n    "),
                                     block=_docs.BLOCK_PARAMETERS.replace("\n", "\n    "),
                                     raises=_docs.RAISES.replace("\n", "\n    "))
    return cls


@_fill
class BatchNormAct2d(_Fused, nn.BatchNorm2d):
    """BatchNorm2d, + residual, then the activation, with timm's constructor (a subclass of
    ``torch.nn.BatchNorm2d``, as timm's; its state_dict is BatchNorm2d's).

    {forward}

    Parameters
    ----------
    num_features, eps, momentum, affine, track_running_stats, device, dtype
        As ``torch.nn.BatchNorm2d``'s.
    {block}

    {raises}

    Examples
    --------
    >>> import torch, cnorm.torch as ct
    >>> block = ct.BatchNormAct2d(4, act_layer="silu")
    >>> x, r = torch.randn(8, 4, 5, 5, requires_grad=True), torch.randn(8, 4, 5, 5)
    >>> y = block(x, residual=r)
    >>> bool(torch.allclose(y, torch.nn.functional.silu(
    ...     torch.nn.functional.batch_norm(x, None, None, block.weight, block.bias, True) + r),
    ...     atol=1e-5))
    True
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, apply_act: bool = True,
                 act_layer: Any = "relu", act_kwargs: Optional[Dict[str, Any]] = None,
                 inplace: bool = True, drop_layer: Any = None, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype)
        self.drop = drop_layer() if drop_layer is not None else nn.Identity()
        self.act, self.fusable, self.act_name, self.slope = _act(act_layer, act_kwargs,
                                                                 apply_act, inplace)

    def _fused(self, x: Tensor, residual: Optional[Tensor]) -> Tensor:
        out: Tensor = _BatchNormForward.forward(self, x, residual, self.act_name, self.slope)
        return out

    def _norm(self, x: Tensor) -> Tensor:
        out: Tensor = _BatchNormForward.forward(self, x)  # the twin's: cnorm's kernels
        return out

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        self._check_input_dim(x)
        return _Fused.forward(self, x, residual)


@_fill
class GroupNormAct(_Fused, nn.GroupNorm):
    """GroupNorm, + residual, then the activation, with timm's constructor
    (``num_channels`` first; a subclass of ``torch.nn.GroupNorm``, as timm's).

    {forward}

    Parameters
    ----------
    num_channels, num_groups, eps, affine, device, dtype
        As ``torch.nn.GroupNorm``'s (num_channels first, num_groups 32 by default, as timm).
    {block}

    {raises}

    Examples
    --------
    >>> import torch, cnorm.torch as ct
    >>> block = ct.GroupNormAct(8, num_groups=2, act_layer="gelu")
    >>> x = torch.randn(3, 8, 4, 4).to(memory_format=torch.channels_last)
    >>> y = block(x)
    >>> y.is_contiguous(memory_format=torch.channels_last)
    True
    """

    def __init__(self, num_channels: int, num_groups: int = 32, eps: float = 1e-5,
                 affine: bool = True, apply_act: bool = True, act_layer: Any = "relu",
                 act_kwargs: Optional[Dict[str, Any]] = None, inplace: bool = True,
                 drop_layer: Any = None, device: Any = None, dtype: Any = None) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=affine, device=device,
                         dtype=dtype)
        self.drop = drop_layer() if drop_layer is not None else nn.Identity()
        self.act, self.fusable, self.act_name, self.slope = _act(act_layer, act_kwargs,
                                                                 apply_act, inplace)

    def _fused(self, x: Tensor, residual: Optional[Tensor]) -> Tensor:
        out: Tensor = F.block_group_norm(x, self.num_groups, self.weight, self.bias, self.eps,
                                         residual, self.act_name, self.slope, self)
        return out

    def _norm(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
