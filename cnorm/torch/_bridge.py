"""Tensors to cnorm's arrays and back, without a copy: a CPU tensor's memory as a NumPy view
(channels_last stays channels_last), cnorm's output arrays as tensors over their memory. And
the thread count: cnorm's kernels follow ``torch.get_num_threads()`` when called from here."""
from typing import Any, Optional

import numpy as np
import torch

from .. import get_num_threads, set_num_threads
from .._core import backend

# the dtypes cnorm's kernels take, and NumPy's name of each
DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
          torch.bfloat16: "bfloat16"}
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_bfloat16: Any = None  # ml_dtypes' type, imported on the first bfloat16 tensor


def _bf16() -> Any:
    global _bfloat16
    if _bfloat16 is None:
        import ml_dtypes

        _bfloat16 = np.dtype(ml_dtypes.bfloat16)
    return _bfloat16


def takes(t: Any) -> bool:
    """Whether cnorm's kernels take the tensor: a CPU tensor of a floating dtype they know, not
    a tensor subclass (FakeTensor, a functional wrapper), not needing double backward."""
    return type(t) in _PLAIN and t.dtype in DTYPES and t.is_cpu and t.layout is torch.strided


def array(t: Optional[Any]) -> Any:
    """The tensor's memory as a NumPy array (None stays None); bfloat16 through ml_dtypes."""
    if t is None:
        return None
    if t.requires_grad:
        t = t.detach()
    if t.dtype is torch.bfloat16:
        return t.view(torch.int16).numpy().view(_bf16())
    return t.numpy()


def tensor(a: Any) -> torch.Tensor:
    """A tensor over the array's memory (its strides kept)."""
    if a.dtype.kind == "V":  # ml_dtypes' bfloat16 (dtype.name costs microseconds)
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def numpy_dtype(dtype: torch.dtype) -> Any:
    """NumPy's dtype for a tensor dtype cnorm's kernels take (bfloat16: ml_dtypes')."""
    return _bf16() if dtype is torch.bfloat16 else np.dtype(DTYPES[dtype])


def torch_error(e: Exception) -> Exception:
    """cnorm's check failure as torch raises it for the same input: RuntimeError for a bad
    shape or dtype (cnorm raises ValueError or TypeError; its message is kept), ValueError
    for a batch of one value per channel, as both do."""
    if isinstance(e, ValueError) and str(e).startswith("Expected more than 1 value"):
        return e
    return RuntimeError(str(e))


def follow_threads() -> None:
    """cnorm's thread count for this thread set to torch's, when they differ (a cheap read
    each call; set_num_threads only on a change)."""
    n = torch.get_num_threads()
    if get_num_threads() != n and not backend.forked:  # a forked child stays on one thread
        set_num_threads(n)
