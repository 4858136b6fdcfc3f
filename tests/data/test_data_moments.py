"""cnorm.Moments: every dtype and layout against a float64 NumPy reference, exact uint8 sums,
batch-split and merge invariance, threads and SIMD targets, pickling, bad input."""
import pickle
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest

import cnorm
from cnorm._core import backend as _backend
from cnorm.testing import TOL

try:
    import ml_dtypes
except ImportError:  # the half extra
    ml_dtypes = None

DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float16",
          "float32", "float64"] + (["bfloat16"] if ml_dtypes else [])
TARGETS = _backend.available_targets()


def dtype_of(name):
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def sample(rng, shape, name, offset=None):
    """Values spanning most of the type's range (8-bit: all of it), per-channel offsets."""
    dt = dtype_of(name)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        lo, hi = max(info.min, -40000), min(info.max, 60000)
        return rng.integers(lo, hi, size=shape, endpoint=True).astype(dt)
    base = 100.0 if offset is None else offset
    return (base + 20 * rng.standard_normal(shape)).astype(dt)


def reference(x, axis):
    """float64 two-pass statistics per channel, and min / max."""
    xf = np.asarray(x, dtype=np.float64)
    if axis is None:
        xf = xf.reshape(-1, 1)
        axis = 1
    xf = np.moveaxis(xf, axis, -1).reshape(-1, xf.shape[axis])
    mean = xf.mean(axis=0)
    var = ((xf - mean) ** 2).mean(axis=0)
    return xf.shape[0], mean, var, xf.min(axis=0), xf.max(axis=0)


def assert_matches(m, x, axis, rtol=None):
    """float32 data is summed in float lanes flushed to double (as the norm kernels): to
    float32's tolerance; every other dtype to 1e-12."""
    if rtol is None:
        rtol = TOL[np.float32] if x.dtype == np.float32 else 1e-12
    n, mean, var, mn, mx = reference(x, axis)
    assert m.count == n
    scale = np.sqrt(var) + np.abs(mean) * 1e-3 + 1e-300
    assert np.all(np.abs(m.mean - mean) <= rtol * scale), (m.mean, mean)
    assert np.allclose(m.var, var, rtol=rtol, atol=0), (m.var, var)
    assert np.array_equal(m.min, mn) and np.array_equal(m.max, mx)
    assert m.mean.dtype == m.var.dtype == m.min.dtype == np.float64


def layouts(x):
    """(view, channel axis) pairs of one NHWC batch: every way the data kernel walks memory."""
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return {
        "nhwc": (x, 3),
        "nhwc-negative-axis": (x, -1),
        "nchw": (nchw, 1),
        "channels-last-view": (x.transpose(0, 3, 1, 2), 1),
        "crop": (x[:, 2:-3, 1:-2], 3),
        "reversed-strided": (x[::-1, :, ::-2], 3),
        "planar-strided": (nchw[:, :, ::2, 1:], 1),
        "fortran": (np.asfortranarray(x), 3),
        "channel-strided": (x[..., ::-1], 3),
        "one-channel": (x, None),
        "rows": (x.reshape(-1, x.shape[-1]), 1),
    }


@pytest.mark.parametrize("name", DTYPES)
@pytest.mark.parametrize("layout", list(layouts(np.zeros((1, 1, 1, 1)))))
def test_every_dtype_and_layout_matches_the_float64_reference(rng, name, layout):
    x = sample(rng, (5, 23, 37, 3), name)
    view, axis = layouts(x)[layout]
    before = view.copy()
    assert_matches(cnorm.Moments.from_array(view, channel_axis=axis), view, axis)
    assert np.array_equal(view, before)  # the input is not modified


@pytest.mark.parametrize("shape,axis", [((7,), None), ((1, 5), 1), ((2, 1, 4000), 1),
                                        ((3, 70000), 1), ((100000, 2), 1), ((2, 5000, 7), 2),
                                        ((4, 3, 1, 1), 1), ((), None)])
def test_shapes_across_the_chunk_plan(rng, shape, axis):
    """Short and long runs, runs split into pieces, many channels, C = 1, a scalar."""
    x = sample(rng, shape, "float32", offset=-3.0)
    assert_matches(cnorm.Moments.from_array(x, channel_axis=axis), x, axis)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dot", [True, False])
@pytest.mark.parametrize("C", [1, 3, 4, 5])
def test_uint8_sums_are_exact(rng, monkeypatch, target, dot, C):
    """8-bit moments come from exact integer sums: the variance is the exact rational value,
    rounded, on a batch long enough to use every path (SIMD blocks, tails, merges), on every
    target and route (VBMI/VNNI dot products where the CPU has them, else position lanes)."""
    module = _backend.module_for(target, "_data")
    monkeypatch.setattr(_backend, "data", module)
    x = rng.integers(0, 256, (6, 61, 101, C), dtype=np.uint8)
    before = module.allow_u8_dot_products(dot)
    try:
        m = cnorm.Moments.from_array(x, channel_axis=3)
    finally:
        module.allow_u8_dot_products(before)
    xi = x.reshape(-1, C).astype(np.int64)
    n = xi.shape[0]
    assert np.array_equal(m.min, xi.min(axis=0)) and np.array_equal(m.max, xi.max(axis=0))
    for c in range(C):
        s1, s2 = int(xi[:, c].sum()), int((xi[:, c] ** 2).sum())
        exact = Fraction(n * s2 - s1 * s1, n * n)
        assert abs(m.var[c] - float(exact)) <= 4e-16 * float(exact)
        assert abs(m.mean[c] - s1 / n) <= 2e-16 * (s1 / n)


def test_large_offset_float32_keeps_its_variance(rng):
    x = (1e6 + rng.standard_normal((64, 3000))).astype(np.float32)
    assert_matches(cnorm.Moments.from_array(x, channel_axis=None), x, None)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape,axis", [((4, 37, 41, 3), 3), ((4, 3, 37, 41), 1),
                                        ((600, 40), 1), ((2, 70000), None), ((5, 33), 1)])
def test_float32_out_of_float_range_gives_the_bits_of_float64(rng, monkeypatch, target, shape,
                                                             axis):
    """A float32 chunk whose squares leave float's range (1e30 and 1e-30 values) or that holds
    an infinity or NaN is summed again in double lanes, which convert in registers and take
    the min and max on the floats: exact, so its statistics are those of the same values as
    float64, bit for bit, signed zeros included."""
    monkeypatch.setattr(_backend, "data", _backend.module_for(target, "_data"))
    x = (20 * rng.standard_normal(shape)).astype(np.float32)
    x.flat[::7] = 0.0
    x.flat[3::11] = -0.0
    x.flat[5::13] = rng.choice(np.float32([1e30, -1e30, 1e-30]), len(x.flat[5::13]))
    odd = x.copy()
    odd.flat[1] = np.inf
    odd.flat[x.size // 2] = np.nan
    for data in (x, odd):
        m32 = cnorm.Moments.from_array(data, channel_axis=axis)
        m64 = cnorm.Moments.from_array(data.astype(np.float64), channel_axis=axis)
        for a, b in zip((m32.mean, m32.var, m32.min, m32.max),
                        (m64.mean, m64.var, m64.min, m64.max)):
            assert a.tobytes() == b.tobytes()
    assert_matches(cnorm.Moments.from_array(x, channel_axis=axis), x, axis, rtol=1e-12)


@pytest.mark.parametrize("shape,axis", [((4, 37, 41, 3), 3), ((2, 90, 64, 5), 3),
                                        ((3, 4, 70, 90), 1), ((9000, 40), 1)])
def test_float32_strided_views_give_the_bits_of_contiguous_data(rng, shape, axis):
    """Strided float32 data goes through the tile in steps, contiguous data in one step a
    run; the float lanes' partial sums carry over steps and flush on the same blocks of the
    run: the same sums, bit for bit."""
    x = sample(rng, shape, "float32")
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), np.float32)
    wide[..., ::2] = x
    strided = wide[..., ::2]
    assert not strided.flags.c_contiguous
    a = cnorm.Moments.from_array(x, channel_axis=axis)
    b = cnorm.Moments.from_array(strided, channel_axis=axis)
    for u, v in zip((a.mean, a.var, a.min, a.max), (b.mean, b.var, b.min, b.max)):
        assert u.tobytes() == v.tobytes()
    assert_matches(a, x, axis)


def test_float32_large_batches_stay_near_the_float64_statistics(rng):
    """Float lanes flush into double every 32 blocks, so their rounding does not grow
    with the batch: a million values per channel, offset and spread as image data."""
    x = (0.45 + 0.25 * rng.standard_normal((1000, 1000, 3))).astype(np.float32)
    m = cnorm.Moments.from_array(x, channel_axis=-1)
    assert_matches(m, x, -1, rtol=1e-8)


@pytest.mark.parametrize("name", ["uint8", "float32", "float64", "int16"])
def test_any_batch_split_in_any_order_gives_the_same_statistics(rng, name):
    x = sample(rng, (300, 17, 4), name)
    whole = cnorm.Moments.from_array(x, channel_axis=-1)
    cuts = np.sort(rng.choice(np.arange(1, 300), size=12, replace=False))
    parts = np.split(x, cuts)
    streamed = cnorm.Moments(channel_axis=-1)
    for i in rng.permutation(len(parts)):
        streamed.update(parts[i])
    merged = cnorm.Moments(channel_axis=-1)
    for p in parts[::-1]:
        merged.merge(pickle.loads(pickle.dumps(cnorm.Moments.from_array(p, channel_axis=-1))))
    rtol = TOL[np.float32] if name == "float32" else 1e-12  # float lanes: see assert_matches
    for m in (streamed, merged):
        assert m.count == whole.count
        assert np.allclose(m.mean, whole.mean, rtol=rtol, atol=0)
        assert np.allclose(m.var, whole.var, rtol=rtol, atol=0)
        assert np.array_equal(m.min, whole.min) and np.array_equal(m.max, whole.max)


def test_variance_ddof_std_and_pickle(rng):
    x = sample(rng, (50, 6), "float64")
    m = cnorm.Moments.from_array(x)
    assert np.allclose(m.variance(1), x.var(axis=0, ddof=1), rtol=1e-13)
    assert np.allclose(m.std, x.std(axis=0), rtol=1e-13)
    assert np.all(np.isnan(cnorm.Moments.from_array(x[:1]).variance(1)))
    back = pickle.loads(pickle.dumps(m))
    assert back.count == m.count and back.channels == 6
    assert np.array_equal(back.mean, m.mean) and np.array_equal(back.var, m.var)
    back.update(x)  # the copy is independent and keeps working
    assert back.count == 2 * m.count and m.count == 50


def test_before_any_data_and_empty_batches(rng):
    m = cnorm.Moments(channel_axis=1)
    assert m.count == 0 and m.channels is None and m.mean.shape == (0,)
    m.update(np.zeros((0, 4), np.float32))
    assert m.count == 0 and m.channels == 4 and np.all(np.isnan(m.mean))
    x = sample(rng, (9, 4), "float32")
    m.update(x).update(np.zeros((0, 4), np.float32))
    assert_matches(m, x, 1)
    assert m.merge(cnorm.Moments()) is m and m.count == 9


def test_update_reads_in_place_without_a_converted_copy(rng):
    """A strided float16 view is neither copied nor converted: the kernel allocates scratch
    of a few pages, not the array's size."""
    x = sample(rng, (8, 256, 256, 3), "float16")
    view = x[:, 10:250, ::2]
    cnorm.Moments.from_array(view[:1], channel_axis=3)  # warm-up
    tracemalloc.start()
    cnorm.Moments.from_array(view, channel_axis=3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < view.nbytes / 20, (peak, view.nbytes)


@pytest.mark.openmp
def test_threads_do_not_change_the_bits(rng, restore_threads):
    for name in ("uint8", "float32", "float64"):
        for x, axis in [(sample(rng, (16, 64, 64, 3), name), 3),
                        (sample(rng, (4, 5, 9000), name), 1),
                        (sample(rng, (3000, 40), name), 1)]:
            runs = []
            for n in (1, 2, 3):
                cnorm.set_num_threads(n)
                m = cnorm.Moments.from_array(x, channel_axis=axis)
                runs.append(np.concatenate([m.mean, m.var, m.min, m.max]).tobytes())
            assert runs[0] == runs[1] == runs[2], (name, x.shape)


@pytest.mark.skipif(len(TARGETS) < 2, reason="only one SIMD target runs on this CPU")
def test_simd_targets_give_the_same_bits(rng, monkeypatch):
    xs = [(sample(rng, (8, 50, 70, 3), n), 3) for n in ("uint8", "float32", "float16")]
    xs.append((sample(rng, (6, 4, 3000), "float64"), 1))
    runs = {}
    for t in TARGETS:
        monkeypatch.setattr(_backend, "data", _backend.module_for(t, "_data"))
        runs[t] = [cnorm.Moments.from_array(x, channel_axis=a).var.tobytes() for x, a in xs]
    for t in TARGETS[1:]:
        assert runs[t] == runs[TARGETS[0]], t


@pytest.mark.parametrize("bad", [np.zeros(4, bool), np.zeros(4, complex), np.zeros(4, object),
                                 np.zeros(4, np.uint64), np.array(["a", "b"])])
def test_unsupported_dtypes_raise_type_error(bad):
    m = cnorm.Moments(channel_axis=None)
    with pytest.raises(TypeError, match="unsupported"):
        m.update(bad)
    assert m.count == 0 and m.channels is None


def test_channel_mismatch_and_bad_axes_change_nothing(rng):
    m = cnorm.Moments.from_array(sample(rng, (10, 3), "float32"))
    saved = (m.count, m.mean.tobytes(), m.var.tobytes(), m.min.tobytes())
    with pytest.raises(ValueError, match="4 channels.*3"):
        m.update(sample(rng, (10, 4), "float32"))
    with pytest.raises(ValueError, match="channels"):
        m.merge(cnorm.Moments.from_array(sample(rng, (10, 5), "float32")))
    with pytest.raises(ValueError, match="out of range"):
        m.update(sample(rng, (10,), "float32"))
    with pytest.raises(TypeError, match="Moments"):
        m.merge(np.zeros(3))
    assert (m.count, m.mean.tobytes(), m.var.tobytes(), m.min.tobytes()) == saved
    with pytest.raises(TypeError):
        cnorm.Moments(channel_axis="1")
