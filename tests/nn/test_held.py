"""Held outputs and checkpoints (issue 20, items 2 and 3): a layer recycles output memory only
when nothing made of it is alive, however it is held; a pickle, copy or deepcopy of a layer
carries its state and never the last batch; cnorm.no_grad() keeps nothing of a forward."""
import copy
import ctypes
import gc
import pickle
import sys
import weakref

import numpy as np
import pytest

import cnorm
from cnorm.testing import KINDS, in_layout, make, make_input, shape_for

CASES = [(k, l) for k in KINDS for l in ("nchw", "nhwc") if l == "nchw" or KINDS[k][0][-1] > 2]


@pytest.fixture
def spare_small(monkeypatch):
    """Layers recycle outputs of any size (the threshold spares small ones the checks)."""
    monkeypatch.setattr(cnorm._core.recycle, "SPARE_MIN", 0)


def _raw(a):
    """The bytes of ``a``'s memory, in memory order (channels-last stays channels-last)."""
    return np.ctypeslib.as_array(a.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
                                 (a.nbytes,)).tobytes()


def _torch(a):
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(a)
    return t, lambda: t.numpy().tobytes()


def _dask(a):
    """A dask array made from the output (dask copies the data; it must read right anyway)."""
    da = pytest.importorskip("dask.array")
    d = da.from_array(a, chunks=-1)
    return d, lambda: np.asarray(d.compute(scheduler="synchronous")).tobytes()


def _ctypes(a):
    """A pointer taken while the array was alive: NumPy's data_as keeps the array with it."""
    p, n = a.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), a.nbytes
    return p, lambda: np.ctypeslib.as_array(p, (n,)).tobytes()


def _by(make_held, read):
    return lambda a: (lambda h: (h, lambda: read(h)))(make_held(a))


# Each way to hold an output: what holds it, and how to read the data back through it.
HOLDERS = {
    "name": _by(lambda a: a, np.ndarray.tobytes),
    "view": _by(lambda a: a[:1], np.ndarray.tobytes),
    "base": _by(lambda a: a.base, _raw),  # the array under a channels-last view, or reshape
    "asarray": _by(np.asarray, np.ndarray.tobytes),
    "reshape": _by(lambda a: a.ravel(order="K"), np.ndarray.tobytes),  # a view, any layout
    "memoryview": _by(memoryview, lambda m: m.tobytes()),
    "list": _by(lambda a: [a], lambda h: h[0].tobytes()),
    "dict": _by(lambda a: {"out": a}, lambda h: h["out"].tobytes()),
    "torch": _torch,
    "dask": _dask,
    "ctypes": _ctypes,
}


@pytest.mark.parametrize("hold", ["weakref"] + list(HOLDERS))
@pytest.mark.parametrize("kind,layout", CASES)
def test_an_output_held_any_way_is_never_written_again(kind, layout, hold, spare_small,
                                                        monkeypatch):
    """The output and dx are dropped, and only ``hold`` of them stays; the layer runs again,
    and what is held still reads the first step's data. sys.getrefcount is made to lie (as
    borrowed references do on CPython 3.14): the recycling must not depend on it."""
    monkeypatch.setattr(sys, "getrefcount", lambda obj: 2)
    rng = np.random.default_rng(3)
    shape = shape_for(kind)
    layer = make(kind, shape, np.float32)
    x1, x2 = (in_layout(make_input(rng, shape, np.float32, offset=1.0), layout)
              for _ in range(2))
    y, dx = layer(x1), layer.backward(x1 * 0.5)
    if hold == "weakref":  # only a weak reference: the memory may be reused, never seen changing
        wants = y.tobytes(), dx.tobytes()
        refs = [weakref.ref(y), weakref.ref(dx)]
        del y, dx
        layer(x2), layer.backward(x2 * 0.25)
        for r, want in zip(refs, wants):
            assert r() is None or r().tobytes() == want
        return
    addrs = y.ctypes.data, dx.ctypes.data
    held = [HOLDERS[hold](y), HOLDERS[hold](dx)]
    wants = [read() for _, read in held]
    if hold != "name":
        del y, dx
    gc.collect()
    new = layer(x2), layer.backward(x2 * 0.25)
    for (_, read), want, addr, fresh in zip(held, wants, addrs, new):
        assert read() == want
        if hold != "dask":  # dask's from_array keeps a copy: the memory itself is free
            assert fresh.ctypes.data != addr  # new memory: the held one is still in use


@pytest.mark.parametrize("kind,layout", CASES)
def test_a_dropped_output_gives_its_memory_back(kind, layout, spare_small):
    """A training loop that drops each step's output and dx writes the next step into the same
    memory, with the values a fresh layer computes."""
    rng = np.random.default_rng(5)
    shape = shape_for(kind)
    layer, fresh = make(kind, shape, np.float32), make(kind, shape, np.float32)
    x1, x2 = (in_layout(make_input(rng, shape, np.float32, offset=1.0), layout)
              for _ in range(2))
    y, dx = layer(x1), layer.backward(x1)
    addr = y.ctypes.data, dx.ctypes.data
    del y, dx
    y, dx = layer(x2), layer.backward(x2)
    # the same memory, placed from the input's address modulo a page (recycle.Spare.lease)
    assert abs(y.ctypes.data - addr[0]) < 4096 and abs(dx.ctypes.data - addr[1]) < 4096
    fresh(x1)
    assert y.tobytes() == fresh(x2).tobytes() and dx.tobytes() == fresh.backward(x2).tobytes()


def test_a_checkpoint_carries_no_batch(rng):
    """The issue's case: BatchNorm2d(64) after a training step on a 12.8 MB batch pickled to
    38.5 MB (torch's: 3.3 KB). The state survives the round trip, and the copy trains on."""
    layer = cnorm.BatchNorm2d(64)
    x = rng.standard_normal((32, 64, 40, 39)).astype(np.float32)
    assert x.nbytes > 12.7e6
    layer(x)
    layer.backward(x)
    for blob in (pickle.dumps(layer), pickle.dumps(copy.deepcopy(layer)),
                 pickle.dumps(copy.copy(layer))):
        assert len(blob) < 8192, len(blob)
    back = pickle.loads(pickle.dumps(layer))
    for k, v in layer.state_dict().items():
        assert back.state_dict()[k].tobytes() == v.tobytes()
    assert back.grad_weight.tobytes() == layer.grad_weight.tobytes()
    with pytest.raises(RuntimeError, match="before forward"):
        back.backward(x)
    assert back(x).tobytes() == layer(x).tobytes()
    blk = cnorm.BatchNormAct2d(64)
    blk(x, residual=x)
    blk.backward(x)
    assert blk.grad_residual is not None and len(pickle.dumps(blk)) < 8192


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("training", [True, False])
def test_a_layer_keeps_no_batch_alive(kind, training):
    """Its output is never kept by the layer; under cnorm.no_grad() its input is not either
    (outside it, the input stays for backward, as torch's autograd graph keeps it)."""
    rng = np.random.default_rng(1)
    shape = shape_for(kind)
    layer = make(kind, shape, np.float32).train(training)
    x = make_input(rng, shape, np.float32)
    y = layer(x)
    wx, wy = weakref.ref(x), weakref.ref(y)
    del y
    gc.collect()
    assert wy() is None  # the output: gone
    layer.backward(x)  # the input: kept for this
    with cnorm.no_grad():
        y = layer(x)
    del x, y
    gc.collect()
    assert wx() is None
    with pytest.raises(RuntimeError, match="no_grad"):
        layer.backward(np.ones(shape, np.float32))


def test_a_failed_call_keeps_the_spare(rng, spare_small):
    """A forward that fails after taking its spare leaves the memory free: the next one
    reuses it."""
    layer = cnorm.BatchNorm2d(4)
    x = rng.standard_normal((3, 4, 5, 5)).astype(np.float32)
    addr = layer(x).ctypes.data
    with pytest.raises(ValueError):
        layer(x[:1, :, :1, :1])  # one value per channel in training
    assert layer(x).ctypes.data == addr


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_large_outputs_are_recycled_by_default(rng, layout):
    """Without the fixture: a 1 MB output (and dx) comes back at the next step, half a page
    from its input's address modulo a page (no load of x waits on a store of y whose low 12
    bits match); channels-last from a cache-line boundary (where the kernels' streaming
    stores can write whole lines), C order at its input's offset in a cache line (the planar
    loops' best case)."""
    layer = cnorm.BatchNorm2d(4)
    x = rng.standard_normal((8, 4, 64, 128)).astype(np.float32)
    memory = x if layout == "nchw" else x.transpose(0, 2, 3, 1)  # its bytes' order
    for shift in (0, 16, 32):  # inputs at several offsets in their lines
        buf = np.zeros(x.nbytes + 128, np.uint8)
        at = buf[-buf.ctypes.data % 64 + shift:][:x.nbytes].view(np.float32)
        at = at.reshape(memory.shape)
        at[...] = memory
        x_at = at if layout == "nchw" else at.transpose(0, 3, 1, 2)
        addr = layer(x_at).ctypes.data, layer.backward(x_at).ctypes.data
        assert (layer(x_at).ctypes.data, layer.backward(x_at).ctypes.data) == addr
        want = 0 if layout == "nhwc" else x_at.ctypes.data % 64
        assert all(a % 64 == want for a in addr), (layout, shift)
        apart = [(a - x_at.ctypes.data) % 4096 for a in addr]  # dx: from grad_output, x here
        assert all(2048 - 64 < d <= 2048 for d in apart), (layout, shift, apart)


def test_no_grad_is_per_thread_and_restores(rng):
    """Inside no_grad on one thread, another thread's forward still keeps its context; the
    flag comes back after the block, also when it raised."""
    import threading

    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    a, b = cnorm.BatchNorm1d(3), cnorm.BatchNorm1d(3)
    with cnorm.no_grad():
        t = threading.Thread(target=b, args=(x,))
        t.start()
        t.join()
        a(x)
    assert a._saved is None and b._saved is not None
    with pytest.raises(ZeroDivisionError):
        with cnorm.no_grad():
            1 / 0
    a(x)
    assert a._saved is not None
