"""Property-based tests (hypothesis): random layers, shapes, dtypes, layouts, parameters and
values (including large offsets and scales) against the float64 reference. The number of
examples comes from the hypothesis profile (conftest.py): 150 by default, 1000 in CI."""
import numpy as np
from conftest import channels_last, rel_err
from hypothesis import given
from hypothesis import strategies as st
from zoo import KINDS, make, reference, stat_groups


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    ndim = draw(st.sampled_from(KINDS[kind][0]))
    shape = [draw(st.integers(1, 5)) for _ in range(ndim)]
    shape[-1] = draw(st.integers(1, 700))  # from a few values to several SIMD blocks
    if kind.startswith("bn"):
        shape[0] = max(shape[0], 2)  # training needs two values per channel
    if kind.startswith("in"):
        shape[-1] = max(shape[-1], 2)  # and instance norm two per instance
    if kind == "gn" and ndim >= 3:
        shape[1] = draw(st.sampled_from([2, 4, 6]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    offset = draw(st.sampled_from([0.0, 1.0, -50.0, 1e4, 1e6]))
    scale = draw(st.sampled_from([1.0, 1e-3, 1e3]))
    layout = draw(st.sampled_from(["c", "channels_last"]))
    affine = draw(st.booleans())
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    seed = draw(st.integers(0, 2**32 - 1))
    return kind, tuple(shape), dtype, offset, scale, layout, affine, eps, seed


@given(cases())
def test_every_layer_matches_float64_reference(case):
    kind, shape, dtype, offset, scale, layout, affine, eps, seed = case
    rng = np.random.default_rng(seed)
    x = (offset + scale * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    if layout == "channels_last" and x.ndim > 2:
        x = channels_last(x)
    layer = make(kind, shape, dtype, rng)
    if not affine:
        layer.weight[...] = 1
        if getattr(layer, "bias", None) is not None:
            layer.bias[...] = 0
    layer.eps = eps if kind != "rms" else eps * 1e-2
    x_before = x.copy()
    y = layer(x)
    dx = layer.backward(dy)
    ry, rdx = reference(kind, layer, x, dy)
    assert np.array_equal(x, x_before)
    assert y.dtype == np.dtype(dtype) and y.shape == shape and dx.shape == shape
    # plus the float64 reference's own error: its mean is off by ~1e-15 of the offset
    tol = (3e-5 if dtype == np.float32 else 1e-10) + 1e-14 * abs(offset) / scale
    assert rel_err(y, ry) < tol, case
    # dx: its terms are dy * w * invstd in size and cancel where the true dx is ~0 (rows or
    # groups of one value): the error is judged against that size
    labels = stat_groups(kind, shape).ravel()
    x64 = x.astype(np.float64).ravel()
    cnt = np.bincount(labels)
    mu = 0.0 if kind == "rms" else np.bincount(labels, x64) / cnt
    msq = np.bincount(labels, (x64 - (mu[labels] if kind != "rms" else 0.0)) ** 2) / cnt
    invstd = 1.0 / np.sqrt(msq + layer.eps)
    w = 1.0 if layer.weight is None else np.abs(layer.weight).max()
    size = np.abs(dy.astype(np.float64)).ravel() * w * invstd[labels]
    assert np.max(np.abs(dx - rdx)) < 20 * tol * max(np.abs(rdx).max(), size.max()), case
