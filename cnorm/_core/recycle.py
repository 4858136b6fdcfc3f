"""Output recycling that is safe by construction, not by reference counting.

A layer writes its large outputs (and dx) into memory it owns, and hands out an array over it.
The array handed out sits on a NumPy array made from a ``memoryview`` of that memory (the
"root"); NumPy stops collapsing a view's ``base`` at an object that is not an array, so every
view of the output, ``np.asarray`` of it, a memoryview, a container holding it and a
``torch.from_numpy`` tensor keep the root alive. The layer keeps only a weak reference to the
root, and writes into the memory again only once that reference is dead: no interpreter detail
(borrowed references, CPython 3.14's stack references) can make it write into an array
anybody can still reach.
"""
import sys
import weakref
from math import prod
from typing import Any, Optional, Tuple, Union

import numpy as np

from .layout import ChannelLayout, RowLayout, is_channels_last
from .types import Array, Shape

# Outputs from this size up are recycled; smaller ones come from the allocator's free lists
# without page faults, and the bookkeeping would cost them more than it saves.
SPARE_MIN = 1 << 18
ALIGN = 64  # a cache line: the kernels' streaming stores write whole lines from there
PAGE = 4096  # the low address bits a load is matched on against earlier stores


class Spare:
    """The memory of one output slot of a layer, and a weak reference to what was last made
    of it (dead: the memory is free)."""

    __slots__ = ("owner", "root")

    def __init__(self, nbytes: int) -> None:
        self.owner = np.empty(nbytes + PAGE, dtype=np.uint8)
        self.root: Optional["weakref.ref[Array]"] = None

    def free_for(self, nbytes: int) -> bool:
        return (self.owner.nbytes - PAGE >= nbytes
                and (self.root is None or self.root() is None))

    def lease(self, shape: Shape, dtype: np.dtype[Any], channels_last: bool,
              phase: Optional[int]) -> Array:
        """A new array of ``shape`` and ``dtype`` over the memory, C order or channels-last
        (an (N, C, *spatial) array over (N, *spatial, C) memory), half a page past ``phase``
        (its input's address modulo PAGE; None: where the memory starts). Half a page: a
        load whose address matches an earlier store's in its low 12 bits waits for it, and an
        output one line past its input (where the allocator puts it after x and dy) makes
        every load of x wait on the store before it (AMD EPYC, BatchNorm1d (256, 1024)
        training forward 130 -> 111 us, GroupNorm (8, 64, 28, 28) 116 -> 97 us). C order
        keeps its input's offset in a cache line (the planar loops are slower with x and y
        at different ones: BatchNorm2d (4, 64, 28, 28) fwd + bwd 125 -> 136-147 us); a
        channels-last array starts at a line, where the rows layout's backward can stream dx
        (cnorm_stream.h's cn_rows_plan)."""
        base = self.owner.ctypes.data
        at = base if phase is None else phase + PAGE // 2
        if channels_last:
            at -= at % ALIGN
        start = (at - base) % PAGE
        root = np.frombuffer(self.owner.data, np.uint8, prod(shape) * dtype.itemsize, start)
        self.root = weakref.ref(root)
        flat = root.view(dtype)
        if channels_last:
            return np.moveaxis(flat.reshape(shape[:1] + shape[2:] + shape[1:2]), -1, 1)
        return flat.reshape(shape)


def take(holder: Any, slot: str, like: Union[Array, ChannelLayout, RowLayout],
         phase_of: Any = None) -> Optional[Array]:
    """An output array for ``holder`` (a layer) in its ``slot``, in the shape, dtype and memory
    layout of ``like`` (an input array, or an op context's layout): over the slot's memory
    when nothing made of it is alive, else over new memory that becomes the slot's; None
    below SPARE_MIN (the op allocates). Half a page from ``like``'s data, or from
    ``phase_of``'s (an input array) when like is a layout (Spare.lease). A call that fails
    after this leaves the memory free again."""
    nbytes = prod(like.shape) * like.dtype.itemsize
    if nbytes < SPARE_MIN:
        return None  # small: the allocator's free lists serve it without page faults
    if isinstance(like, (ChannelLayout, RowLayout)):
        cl = like.channels_last
    else:
        cl, phase_of = is_channels_last(like), like
    phase = phase_of.ctypes.data % PAGE if type(phase_of) is np.ndarray else None
    # atomic: two threads never lease the same memory
    spare: Optional[Spare] = holder.__dict__.pop(slot, None)
    if spare is None or not spare.free_for(nbytes):
        spare = Spare(nbytes)  # the old memory lives on as long as its arrays do
    out = spare.lease(like.shape, like.dtype, cl, phase)
    holder.__dict__[slot] = spare
    return out


def entry_out(holder: Any, x: Any) -> Tuple[Optional[Array], int]:
    """``(out, max_bytes)`` for an entry checked in C (src/nn/calls.pxi): with a ``holder`` (a
    layer, or cnorm.torch's outputs), an output of SPARE_MIN bytes and more goes into its
    memory for "_y" (take), whatever the size; otherwise the entry takes only calls below
    SPARE_MIN (its own new array), and the checked path the others. Only a float32 or
    float64 ndarray takes memory (the entries take no other)."""
    if (holder is not None and type(x) is np.ndarray and x.nbytes >= SPARE_MIN
            and x.dtype.kind == "f" and x.dtype.itemsize >= 4):
        return take(holder, "_y", x), sys.maxsize
    return None, SPARE_MIN
