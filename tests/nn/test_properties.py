"""Property-based tests (hypothesis): random layers, shapes, dtypes, layouts, parameters and
values (including large offsets and scales) against the float64 reference; Moments and
Standardizer on random views (transposed, stepped, reversed) of every data dtype. The number of
examples comes from the hypothesis profile (conftest.py): 150 by default, 1000 in CI."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cnorm.testing import KINDS, TOL, channels_last, make, reference, rel_err, stat_groups


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


@st.composite
def data_views(draw):
    """A random array of a data dtype, viewed through random transposes, steps and flips,
    with a random channel axis (or none)."""
    ndim = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 6)) for _ in range(ndim)]
    shape[draw(st.integers(0, ndim - 1))] = draw(st.integers(1, 3000))
    dtype = draw(st.sampled_from(["uint8", "int8", "uint16", "int16", "int32", "float16",
                                  "float32", "float64"]))
    perm = draw(st.permutations(range(ndim)))
    steps = [draw(st.sampled_from([1, 1, 2, -1, -3])) for _ in range(ndim)]
    axis = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1)))
    offset = draw(st.sampled_from([0.0, -7.0, 1e4]))
    return tuple(shape), dtype, perm, steps, axis, offset, draw(st.integers(0, 2**32 - 1))


@given(data_views())
def test_moments_of_any_view_match_float64_reference(case):
    import cnorm

    shape, dtype, perm, steps, axis, offset, seed = case
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        base = rng.integers(max(info.min, -30000), min(info.max, 30000), shape, endpoint=True)
    else:
        base = offset + 3 * rng.standard_normal(shape)
    x = base.astype(dt).transpose(perm)[tuple(slice(None, None, s) for s in steps)]
    m = cnorm.Moments.from_array(x, channel_axis=axis)
    xf = x.astype(np.float64)
    xf = xf.reshape(-1, 1) if axis is None else np.moveaxis(xf, axis, -1).reshape(
        -1, x.shape[axis])
    assert m.count == xf.shape[0]
    mean = xf.mean(axis=0)
    var = ((xf - mean) ** 2).mean(axis=0)
    std = np.sqrt(var)
    tol = TOL[np.float32] if dt == np.float32 else 1e-12  # float32: float lanes (Moments)
    assert np.all(np.abs(m.mean - mean) <= tol * (std + np.abs(mean)) + 1e-300)
    assert np.all(np.abs(m.var - var) <= 10 * tol * var + 1e-300)
    assert np.array_equal(m.min, xf.min(axis=0)) and np.array_equal(m.max, xf.max(axis=0))


@given(data_views(), st.sampled_from(["float32", "float64"]))
def test_standardizer_transform_of_any_view_matches_reference(case, out):
    """The affine kernel through every route (dense, tile, strided) and layout."""
    import cnorm

    shape, dtype, perm, steps, axis, offset, seed = case
    rng = np.random.default_rng(seed)
    x = (offset + 3 * rng.standard_normal(shape)).astype(out)
    x = x.transpose(perm)[tuple(slice(None, None, s) for s in steps)]
    s = cnorm.Standardizer(channel_axis=axis)
    if axis is not None and not -x.ndim <= axis < x.ndim:
        return
    s.fit(x)
    y = s.transform(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    shp = [1] * x.ndim
    if axis is not None:
        shp[axis] = x.shape[axis]
    ref = (x.astype(np.float64) - s.mean_.reshape(shp)) / s.scale_.reshape(shp)
    tol = 1e-6 if out == "float32" else 1e-13
    ratio = np.max(np.abs(s.mean_) / s.scale_)
    assert np.max(np.abs(y - ref), initial=0) <= tol * max(1.0, ratio)
