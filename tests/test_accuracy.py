"""float32 accuracy at large offsets, against a float64 reference on the same float32 data."""
import numpy as np
import pytest
from conftest import LAYERS
from reference import channels_last, channel_axes

import cnorm


@pytest.mark.parametrize("offset", [1e4, 1e6])
@pytest.mark.parametrize("shape,layout", [((16, 8, 32, 32), "nchw"), ((16, 8, 32, 32), "nhwc"),
                                          ((4096, 16), "nc"), ((2, 3, 70000), "ncl")])
def test_large_offset_float32(rng, offset, shape, layout):
    x = (offset + rng.standard_normal(shape)).astype(np.float32)
    if layout == "nhwc":
        x = channels_last(x)
    layer = LAYERS[len(shape) - 2 if len(shape) > 2 else 1](shape[1], momentum=None)
    y = layer(x)
    xd = x.astype(np.float64)
    ax = channel_axes(x)
    mean, var = xd.mean(axis=ax, keepdims=True), xd.var(axis=ax, keepdims=True)
    y_ref = (xd - mean) / np.sqrt(var + 1e-5)
    assert np.max(np.abs(y - y_ref)) <= 1e-5
    # momentum=None after one batch: running_var is the unbiased batch variance itself
    uvar = xd.var(axis=ax, ddof=1)
    assert np.max(np.abs(layer.running_var - uvar) / uvar) <= 2e-6
    assert np.max(np.abs(layer.running_mean - mean.ravel()) / offset) <= 1e-7
    # eval with those statistics is just as accurate
    layer.eval()
    y_eval = layer(x)
    rm, rv = (layer.running_mean.astype(np.float64), layer.running_var.astype(np.float64))
    shp = (1, -1) + (1,) * (x.ndim - 2)
    assert np.max(np.abs(y_eval - (xd - rm.reshape(shp)) / np.sqrt(rv.reshape(shp) + 1e-5))) <= 1e-5


@pytest.mark.parametrize("offset", [1e4, 1e6])
def test_moments_large_offset(rng, offset):
    x = (offset + 0.5 * rng.standard_normal((64, 3, 50, 50))).astype(np.float32)
    mean, var = cnorm.moments(x, (0, 2, 3))
    xd = x.astype(np.float64)
    assert mean.dtype == np.float32
    np.testing.assert_allclose(var, xd.var(axis=(0, 2, 3)), rtol=2e-6)
    np.testing.assert_allclose(mean, xd.mean(axis=(0, 2, 3)), rtol=1e-7)
