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
    """A context in which layers keep no forward context, as under ``torch.no_grad``.

    Inside it (on this thread), no reference to the input or to anything of the batch stays
    with a layer after its forward returns, and ``backward`` raises until the next forward
    outside it. For inference loops, in either mode; running statistics still move in training
    mode. Usable as a decorator.

    Returns
    -------
    context manager
        Restores the thread's earlier setting on exit.

    Raises
    ------
    RuntimeError
        Not itself: a layer's ``backward`` after a forward made inside it.

    Examples
    --------
    >>> import numpy as np, cnorm
    >>> layer = cnorm.LayerNorm(4)
    >>> with cnorm.no_grad():
    ...     y = layer(np.ones((2, 4), np.float32))
    >>> layer.backward(np.ones_like(y))
    Traceback (most recent call last):
    RuntimeError: backward called before forward (or after a forward under cnorm.no_grad())
    """
    before = enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = before
