import numpy as np
import pytest

import cnorm

# Shapes for the parity grids: not multiples of SIMD widths, C = 1, H*W = 1, and each
# statistics mode with several chunks per channel: plane (H*W >= 512, 4096-value chunks),
# block (1 < H*W < 512, chunks of outer rows) and rows (H*W = 1); sizes above the parallel
# cut-off.
SHAPES = {
    1: [(7, 3), (5, 4, 9), (2, 1, 33), (20000, 5), (3, 5, 1), (100, 2, 50)],
    2: [(3, 5, 7, 9), (4, 3, 1, 1), (2, 1, 13, 11), (3, 2, 130, 129), (70, 3, 10, 10)],
    3: [(2, 3, 4, 5, 6), (3, 2, 1, 1, 1)],
}
LAYERS = {1: cnorm.BatchNorm1d, 2: cnorm.BatchNorm2d, 3: cnorm.BatchNorm3d}
SHAPE_PARAMS = [pytest.param(d, s, id=f"{d}d-{'x'.join(map(str, s))}")
                for d, shapes in SHAPES.items() for s in shapes]
TOL = {np.float32: 2e-6, np.float64: 1e-12}


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def make_input(rng, shape, dtype, offset=0.0, scale=1.0):
    """Per-channel offsets and scales so that every channel has its own statistics."""
    C = shape[1]
    off = offset + rng.uniform(-2, 2, size=C)
    sc = scale * rng.uniform(0.5, 3, size=C)
    shp = (1, C) + (1,) * (len(shape) - 2)
    return (rng.standard_normal(shape) * sc.reshape(shp) + off.reshape(shp)).astype(dtype)


def layout_input(rng, shape, layout, dtype, offset):
    """make_input in the given memory layout ("nhwc": channels-last, anything else: C order)."""
    from reference import channels_last
    x = make_input(rng, shape, dtype, offset=offset)
    return channels_last(x) if layout == "nhwc" else x


def all_outputs(x):
    """Every public batch-norm result for x: train forward/backward, running statistics,
    eval forward/backward, moments. For the bit-identity tests."""
    layer = LAYERS[max(x.ndim - 2, 1)](x.shape[1], dtype=x.dtype)
    layer.weight[...] = np.linspace(0.5, 2, x.shape[1])
    out = [layer(x), layer.backward(x * 0.5 + 1), layer.grad_weight, layer.grad_bias]
    out += [layer.running_mean.copy(), layer.running_var.copy()]
    layer.eval()
    out += [layer(x), layer.backward(x), layer.grad_weight, layer.grad_bias]
    return out + list(cnorm.moments(x, 0))
