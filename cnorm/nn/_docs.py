"""The docstring sections the layers share. A layer's own docstring says what it does and
gives its Examples; ``sections`` puts the shared Parameters, Attributes and Raises before the
Examples, so that each family's argument list is written once."""
import inspect
from typing import Callable, TypeVar

T = TypeVar("T")


def norm_parameters(affine: bool, track: bool) -> str:
    """Batch and instance norm's parameters, with the family's defaults."""
    return f"""Parameters
----------
num_features : int
    C, the channels of an (N, C, ...) input.
eps : float, default 1e-5
    Added to the variance.
momentum : float or None, default 0.1
    The running statistics' update factor; None: a cumulative average over the batches.
affine : bool, default {affine}
    Learnable per-channel ``weight`` (ones) and ``bias`` (zeros).
track_running_stats : bool, default {track}
    Keep running statistics, updated in training and used in eval mode.
dtype : float32, float64, float16 or bfloat16, default float32
    The data's dtype; parameters and statistics are float32 for the half types.
bias : bool, default True
    With ``affine``, whether there is a ``bias``.
"""


NORM_ATTRIBUTES = """Attributes
----------
weight, bias : ndarray of shape (C,) or None
    The affine parameters (in place: an optimizer may update them).
running_mean, running_var : ndarray of shape (C,) or None
    The running statistics (None without ``track_running_stats``).
num_batches_tracked : 0-d int64 ndarray or None
    Training batches seen.
grad_weight, grad_bias : ndarray or None
    Set by ``backward``.
training : bool
    The mode: ``train()`` and ``eval()`` set it.
"""

BLOCK_PARAMETERS = """act : {"relu", "leaky_relu", "silu", "gelu"} or None, default "relu"
    The activation after the norm and the residual ("gelu": the exact erf form).
negative_slope : float, default 0.01
    leaky_relu's slope.
"""

GRAD_RESIDUAL = """grad_residual : ndarray or None
    Set by ``backward`` when the forward had a residual.
"""

COMM_PARAMETER = """comm : mpi4py communicator or None
    None: MPI's COMM_WORLD when mpi4py is installed, else a one-process world.
"""

LAYER_RAISES = """Raises
------
ValueError
    A non-positive size, or an argument out of its range.
TypeError
    A dtype other than float32, float64, float16 or bfloat16.
"""


def sections(*parts: str) -> Callable[[T], T]:
    """Insert ``parts`` (numpydoc sections) before the Examples of a class's docstring."""
    def decorate(cls: T) -> T:
        own = inspect.cleandoc(cls.__doc__ or "")
        head, found, examples = own.partition("Examples\n--------")
        cls.__doc__ = head + "\n".join(parts) + ("\n" + found + examples if found else "")
        return cls
    return decorate
