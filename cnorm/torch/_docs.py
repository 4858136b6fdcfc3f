"""The docstrings of cnorm.torch's twins, composed once: a twin takes the constructor of the
torch class it subclasses, so its Parameters are that class's, named from its signature; its
Raises are torch's error types; its Examples run a training step."""
import inspect
from typing import Any, Callable, TypeVar

T = TypeVar("T", bound=type)

RAISES = """Raises
------
RuntimeError
    Input of a shape or dtype the layer does not take, as torch raises for it (the message
    is cnorm's); nothing of the layer changes.
ValueError
    Training batch norm on one value per channel, as torch."""


def twin(summary: str, shape: str, note: str = "") -> Callable[[T], T]:
    """Decorate a twin class: ``summary``, then its torch base's parameters, ``note``, the
    Raises and an example on input of ``shape`` (a tuple's text)."""
    def apply(cls: T) -> T:
        base = next(b for b in cls.__mro__[1:] if b.__module__.startswith("torch.nn"))
        init: Any = getattr(base, "__init__")
        params = [p for p in inspect.signature(init).parameters if p != "self"]
        name = cls.__name__
        args = {"GroupNorm": "2, 4", "LayerNorm": "5", "RMSNorm": "5"}.get(name, "4")
        cls.__doc__ = f"""{summary}

A subclass of ``torch.nn.{name}`` with its constructor, parameters, buffers, state_dict keys
and repr. A CPU tensor of float32, float64, float16 or bfloat16 runs cnorm's kernels under
autograd; anything else (a CUDA tensor, double backward) runs torch's own code.{note}

Parameters
----------
{", ".join(params)}
    As ``torch.nn.{name}``'s.

{RAISES}

Examples
--------
>>> import torch, cnorm.torch as ct
>>> layer = ct.{name}({args})
>>> x = torch.randn{shape}.requires_grad_()
>>> y = layer(x)
>>> y.sum().backward()
>>> y.shape == x.shape == x.grad.shape
True
"""
        return cls
    return apply


BLOCK_PARAMETERS = """apply_act : bool
    False: no activation (the norm, + residual).
act_layer : str or torch.nn.Module class
    "relu", "leaky_relu", "silu" ("swish"), "gelu" and "identity", or a torch activation
    class; relu, leaky_relu, silu and gelu (exact) run fused in cnorm's kernels, any other
    runs as its torch module after the fused norm.
act_kwargs : dict or None
    Passed to the activation class.
inplace : bool
    The activation module's ``inplace`` (timm's argument; the fused path writes one output).
drop_layer : torch.nn.Module class or None
    Applied between norm and activation, as timm's (a block with one runs unfused)."""

BLOCK_FORWARD = """The forward is ``forward(x, residual=None)``: ``act(norm(x) + residual)`` in
one pass of cnorm's kernels, gradients of x, the residual and the parameters under autograd."""


F = TypeVar("F", bound=Callable[..., Any])


def functional_doc(params: str, setup: str, ours: str, theirs: str,
                   note: str = "") -> Callable[[F], F]:
    """Decorate one of cnorm.torch.functional's forms, named as torch's: its torch
    ``params``, a ``note``, and an example that sets up with ``setup`` and compares ``ours``
    with torch's ``theirs``."""
    def apply(fn: F) -> F:
        name = fn.__name__
        fn.__doc__ = f"""``torch.nn.functional.{name}`` on cnorm's kernels, under autograd. {note}

    Parameters
    ----------
    {params}
        As ``torch.nn.functional.{name}``'s.

    Returns
    -------
    Tensor
        Shaped and laid out as ``input``.

    Raises
    ------
    RuntimeError
        Input of a shape or dtype the function does not take, as torch raises for it (the
        message is cnorm's); nothing is written.
    ValueError
        Training on one value per channel (batch norm), as torch.

    Examples
    --------
    >>> import torch, cnorm.torch as ct
    >>> {setup}
    >>> y = {ours}
    >>> bool(torch.allclose(y, {theirs}, atol=1e-5))
    True
    """
        return fn
    return apply
