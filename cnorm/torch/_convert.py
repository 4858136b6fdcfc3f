"""``convert(module)`` and ``revert(module)``: every torch.nn norm layer of a model becomes its
cnorm.torch twin, and back, in place. A twin is a subclass of the torch class with no state of
its own, so the swap is of the object's class: parameters, buffers, training mode, hooks and
the object's identity (an optimizer's references, shared layers) are the same objects after."""
from typing import Any, Dict, Optional, Type

from torch import nn

from . import blocks, modules
from .sync import SyncBatchNorm

# torch class -> twin, exact classes only (a user's subclass of a torch norm keeps its code)
TWINS: Dict[type, Type[nn.Module]] = {
    getattr(nn, name): getattr(modules, name) for name in modules.__all__}
TORCH: Dict[type, type] = {twin: torch_cls for torch_cls, twin in TWINS.items()}
TORCH[SyncBatchNorm] = nn.SyncBatchNorm
# timm's norm layers, known by their class name in a timm module (so that timm is never
# imported here) -> what their twin's forward comes from; the twin subclasses both
TIMM = {"BatchNormAct2d": blocks.BatchNormAct2d, "GroupNormAct": blocks.GroupNormAct,
        "LayerNorm2d": modules._LayerNorm2dForward}
FUSED_STATE = ("fusable", "act_name", "slope")  # what a timm block's twin adds to the object


def _twin(cls: type) -> Optional[type]:
    """The twin of the exact class ``cls``, made on first sight for a timm class."""
    twin = TWINS.get(cls)
    if twin is None and cls.__module__.startswith("timm.") and cls.__name__ in TIMM:
        twin = type(cls.__name__, (TIMM[cls.__name__], cls),
                    {"__module__": __name__, "__qualname__": cls.__name__,
                     "__doc__": f"timm's {cls.__name__} on cnorm's kernels."})
        TWINS[cls], TORCH[twin] = twin, cls
    return twin


def convert(module: nn.Module, *, sync: bool = False, process_group: Any = None) -> nn.Module:
    """Swap every torch.nn norm layer in ``module`` (itself included) for its cnorm.torch twin,
    in place. timm's ``BatchNormAct2d``, ``GroupNormAct`` and ``LayerNorm2d`` become twins
    that subclass them (an activation cnorm's kernels lack runs as timm's module after the
    fused norm). The swap is of each object's class: parameters, buffers, training mode,
    hooks and identity stay. Exact classes only: a user's subclass of a norm keeps its code.

    Parameters
    ----------
    module : torch.nn.Module
        The model (or one layer).
    sync : bool
        Make every batch norm a :class:`SyncBatchNorm` over ``process_group`` first (new
        objects holding the same parameters, as torch's ``convert_sync_batchnorm``).
    process_group : ProcessGroup or None
        With ``sync``: the group (None: the default group).

    Returns
    -------
    torch.nn.Module
        ``module``; with ``sync``, its replacement when it was itself a batch norm.

    Raises
    ------
    AttributeError
        ``module`` is not a torch module (it has no ``modules()``).

    Examples
    --------
    >>> import torch, cnorm.torch as ct
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    >>> type(ct.convert(model)[1]).__module__
    'cnorm.torch.modules'
    """
    if sync:
        module = SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    for m in module.modules():
        twin = _twin(type(m))
        if twin is not None:
            m.__class__ = twin
            if isinstance(m, blocks._Fused) and not hasattr(m, "fusable"):  # timm's block
                m.fusable, m.act_name, m.slope = blocks.describe(m.act)
    return module


def revert(module: nn.Module) -> nn.Module:
    """Swap every cnorm.torch twin in ``module`` back to its torch (or timm) class, in place
    (a SyncBatchNorm to ``torch.nn.SyncBatchNorm``); the state_dict is unchanged.

    Parameters
    ----------
    module : torch.nn.Module
        A model converted by :func:`convert` (anything else is left as it is).

    Returns
    -------
    torch.nn.Module
        ``module``.

    Raises
    ------
    AttributeError
        ``module`` is not a torch module (it has no ``modules()``).

    Examples
    --------
    >>> import torch, cnorm.torch as ct
    >>> norm = ct.convert(torch.nn.LayerNorm(8))
    >>> type(ct.revert(norm)) is torch.nn.LayerNorm
    True
    """
    for m in module.modules():
        plain = TORCH.get(type(m))
        if plain is not None:
            if plain.__module__.startswith("timm."):
                for name in FUSED_STATE:
                    m.__dict__.pop(name, None)
            m.__class__ = plain
    return module
