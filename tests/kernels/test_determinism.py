"""Results are bit-identical for every thread count and every SIMD target, for every layer
kind and dtype (half precision too), in C order and channels-last, forward, backward,
parameter gradients and running statistics."""
import numpy as np
import pytest

import cnorm
from cnorm._core import backend as _backend
from cnorm.testing import HALVES, KINDS, in_layout, make, make_input

TARGETS = _backend.available_targets()
# per rank: shapes large enough to run in parallel and to span several statistics chunks
# (plane, block and rows layouts; long rows; one sample; short groups in fewer samples than
# threads; rows of 65 to 128 channels, their lanes in registers and dx streaming; wider rows
# by blocks of 128 channels and a shorter last block)
SHAPES = {2: [(6000, 33), (40, 5000), (700, 208)], 3: [(4, 5, 20000), (150, 40, 9), (2, 16, 700),
                                           (2, 2048, 16)],
          4: [(8, 16, 40, 40), (1, 8, 100, 101), (200, 24, 7, 7), (2, 4, 3, 6000),
              (4, 64, 20, 30), (1, 512, 8, 8), (8, 112, 12, 13), (4, 144, 9, 10)],
          5: [(2, 8, 10, 20, 30)]}
# each kind's highest rank, and (N, C) matrices for the kinds that take them (batch norm's
# rows layout)
CASES = [(kind, shape, layout) for kind in KINDS
         for rank in sorted({KINDS[kind][0][-1]} | {2} & set(KINDS[kind][0]))
         for shape in SHAPES[rank]
         for layout in (("nchw", "nhwc") if len(shape) > 3 else ("nchw",))]


def outputs(kind, x):
    """Everything a layer computes: training forward, backward, gradients, running
    statistics, then the eval forward and backward; and the functional forms' moments."""
    layer = make(kind, x.shape, x.dtype)
    dy = (x * 0.5 + 1).astype(x.dtype)
    out = [layer(x), layer.backward(dy), layer.grad_weight, layer.grad_bias]
    out += [getattr(layer, "running_mean", None), getattr(layer, "running_var", None)]
    layer.eval()
    out += [layer(x), layer.backward(x), layer.grad_weight, cnorm.moments(x, 0)[1]]
    return [a.copy() for a in out if a is not None]


def same_bits(a_list, b_list, what):
    assert len(a_list) == len(b_list)
    for i, (a, b) in enumerate(zip(a_list, b_list)):
        assert a.tobytes() == b.tobytes(), f"{what}: output {i} differs"


@pytest.mark.openmp
@pytest.mark.parametrize("dtype", [np.float32, np.float64, *HALVES], ids=str)
@pytest.mark.parametrize("kind,shape,layout", CASES)
def test_thread_counts_give_the_same_bits(rng, restore_threads, kind, shape, layout, dtype):
    x = in_layout(make_input(rng, shape, dtype, offset=100.0), layout)
    results = {}
    for n in (1, 2, 3, 4):
        cnorm.set_num_threads(n)
        assert cnorm.get_num_threads() == n
        results[n] = outputs(kind, x)
    for n in (2, 3, 4):
        same_bits(results[1], results[n], f"{n} threads")


@pytest.mark.skipif(len(TARGETS) < 2, reason="only one SIMD target runs on this CPU")
@pytest.mark.parametrize("dtype", [np.float32, np.float64, *HALVES], ids=str)
@pytest.mark.parametrize("kind,shape,layout", CASES)
def test_simd_targets_give_the_same_bits(rng, monkeypatch, kind, shape, layout, dtype):
    x = in_layout(make_input(rng, shape, dtype, offset=50.0), layout)
    results = {}
    for t in TARGETS:
        monkeypatch.setattr(_backend, "kernels", _backend.module_for(t))
        results[t] = outputs(kind, x)
    for t in TARGETS[1:]:
        same_bits(results[TARGETS[0]], results[t], f"{t} vs {TARGETS[0]}")


@pytest.mark.openmp
@pytest.mark.parametrize("shape", [(3, 16, 300, 70), (5000, 40, 1), (64, 24, 49)])
def test_kernels_take_their_thread_count_as_an_argument(rng, restore_threads, shape):
    """Every kernel runs at the n_threads it is given, whatever the global setting, with the
    same bits at any count."""
    k = _backend.kernels
    cnorm.set_num_threads(1)
    x = make_input(rng, shape, np.float32, offset=10.0).reshape(shape[0], shape[1], -1)
    dy = (x * 0.25).astype(np.float32)
    C = shape[1]
    w = np.linspace(0.5, 2, C).astype(np.float32)
    runs = []
    for n in (1, 2, 4):
        y, dx = np.empty_like(x), np.empty_like(x)
        mean, m2, inv, s1, s2 = np.empty((5, C))
        k.bn_forward_train(x, w, None, 1e-5, y, mean, m2, inv, None, 0, 0.0, n)
        k.bn_backward(x, dy, mean, inv, w, True, True, dx, s1, s2, *(None,) * 3, 0, 0.0, None, n)
        x4 = x.reshape((1,) + x.shape)
        gm, gm2, ginv = np.empty((3, 1, C))
        y4, dx4 = np.empty_like(x4), np.empty_like(x4)
        gs1, gs2 = np.empty((2, 1, C))
        k.group_forward(x4, C, w, None, 1e-5, y4, gm, gm2, ginv, None, 0, 0.0, n)
        k.group_backward(x4, dy.reshape(x4.shape), C, gm, ginv, w, dx4, gs1, gs2, *(None,) * 3, 0,
                         0.0, None, n)
        x2 = x.reshape(-1, x.shape[-1])
        rm, ri = np.empty((2, x2.shape[0]))
        y2, dx2 = np.empty_like(x2), np.empty_like(x2)
        gw, gb = np.empty((2, x2.shape[1]))
        k.row_forward(x2, None, None, 1e-5, False, y2, rm, ri, n)
        k.row_backward(x2, dy.reshape(x2.shape), rm, ri, None, False, True, dx2, gw, gb, n)
        runs.append([y, dx, mean, m2, s1, s2, y4, dx4, gs2, y2, dx2, gw, gb,
                     k.channel_stats(x, n)[2]])
        assert cnorm.get_num_threads() == 1  # no global state touched
    for other in runs[1:]:
        same_bits(runs[0], other, "n_threads")
