"""``cnorm.no_grad()``: forwards that keep nothing for a backward, as under ``torch.no_grad``."""
import contextlib
import threading
from typing import Iterator


class _State(threading.local):
    enabled = True  # a class default: each thread starts enabled, read without a getattr


_state = _State()


def enabled() -> bool:
    """False inside :func:`no_grad` on this thread."""
    return _state.enabled


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside it (on this thread), layers keep no forward context: no reference to the input
    or to anything of the batch stays with a layer after its forward returns, and ``backward``
    raises until the next forward outside it. For inference loops, in either mode; running
    statistics still move in training mode. Usable as a decorator.

    >>> with cnorm.no_grad():
    ...     y = model_layer(x)
    """
    before = enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = before
