"""The data kernels' small-call entries (issue 24): normalize_images' common call (uint8 or
float32 NHWC in, float32 NCHW out, no mirror, no out=) and Moments.update's (C-contiguous
uint8/float32/float64, channels last or none, statistics that hold values) are checked in C
and run the same kernels on data pointers. Their results are the checked path's bits and a
float64 reference's values; whatever they do not take goes the checked way, with the checked
path's errors, and a failed call changes nothing."""
import functools

import numpy as np
import pytest

import cnorm
from cnorm._core import backend as _backend
from cnorm.testing import TOL

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _checked(monkeypatch, *args, **kw):
    """normalize_images with the small-call entry declining everything."""
    with monkeypatch.context() as m:
        m.setattr(_backend.data, "images_call", lambda *a: None)
        return cnorm.normalize_images(*args, **kw)


def _reference(x, mean, std, scale):
    xf = x.astype(np.float64).reshape((-1,) + x.shape[-3:])
    y = ((xf * scale - np.asarray(mean, np.float64)) / np.asarray(std, np.float64))
    return y.transpose(0, 3, 1, 2).reshape(x.shape[:-3] + (x.shape[-1],) + x.shape[-3:-1])


@pytest.mark.parametrize("dtype,scale", [(np.uint8, None), (np.uint8, 0.5),
                                         (np.float32, None), (np.float32, 2.0)])
@pytest.mark.parametrize("shape", [(1, 32, 32, 3), (32, 32, 3), (3, 5, 7, 1), (2, 9, 4, 4),
                                   (8, 64, 64, 3), (1, 3, 5, 64)])
@pytest.mark.parametrize("form", ["tuple", "list", "array", "float"])
def test_the_common_call_gives_the_checked_paths_bits(monkeypatch, rng, dtype, scale, shape,
                                                      form):
    C = shape[-1]
    x = (rng.integers(0, 256, shape) if dtype == np.uint8 else rng.random(shape)).astype(dtype)
    mean, std = rng.random(C).tolist(), (rng.random(C) + 0.1).tolist()
    if form == "float":
        mean, std = 0.4, 0.2
    args = {"tuple": (tuple(mean) if form != "float" else mean, tuple(std) if form != "float"
                      else std),
            "list": (mean, std), "array": (np.array(mean), np.array(std)),
            "float": (mean, std)}[form]
    x_before = x.copy()
    fast = _backend.data.images_call(x, *args, scale, None, _backend.threads())
    assert fast is not None  # the entry took it
    y = cnorm.normalize_images(x, *args, scale=scale)
    want = _checked(monkeypatch, x, *args, scale=scale)
    assert y.dtype == want.dtype == np.float32 and y.shape == want.shape
    assert y.tobytes() == want.tobytes() == fast.tobytes()
    assert x.tobytes() == x_before.tobytes()
    s = scale if scale is not None else (1 / 255 if dtype == np.uint8 else 1.0)
    ref = _reference(x, *(np.broadcast_to(np.asarray(v, np.float64), (C,)) for v in args), s)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.openmp
def test_the_same_bits_on_any_thread_count(rng, restore_threads):
    x = rng.integers(0, 256, (16, 96, 96, 3), dtype=np.uint8)
    outs = []
    for n in (1, 2):
        cnorm.set_num_threads(n)
        outs.append(cnorm.normalize_images(x, MEAN, STD).tobytes())
    assert outs[0] == outs[1]


def _declines(x, mean=MEAN, std=STD, scale=None):
    return _backend.data.images_call(x, mean, std, scale, None, 1) is None


def test_what_the_entry_does_not_take_goes_the_checked_way(monkeypatch, rng):
    x = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    cases = {
        "a crop (not contiguous)": (x[:, 1:7, 1:7], MEAN, STD, None),
        "uint16": (x.astype(np.uint16), MEAN, STD, None),
        "float16": (x.astype(np.float16), MEAN, STD, None),
        "float64": (x.astype(np.float64), MEAN, STD, None),
        "2-D": (x[0, 0], MEAN, STD, None),
        "byte-swapped": (x.astype(np.float32).astype(">f4"), MEAN, STD, None),
        "ints for the mean": (x, (0, 0, 0), STD, None),
        "numpy scalars": (x, tuple(np.float64(v) for v in MEAN), STD, None),
        "float32 mean array": (x, np.array(MEAN, np.float32), STD, None),
        "an int scale": (x, MEAN, STD, 1),
        "a subclass": (x.view(np.ma.MaskedArray), MEAN, STD, None),
        "65 channels": (rng.integers(0, 256, (1, 2, 2, 65), dtype=np.uint8), 0.5, 0.5, None),
        "no pixels": (x[:0], MEAN, STD, None),
    }
    for name, (img, mean, std, scale) in cases.items():
        assert _declines(img, mean, std, scale), name
        got = _outcome(cnorm.normalize_images, img, mean, std, scale=scale)
        assert got == _outcome(_checked, monkeypatch, img, mean, std, scale=scale), name
    assert [k for k, (img, m, s, sc) in cases.items()
            if _outcome(cnorm.normalize_images, img, m, s, scale=sc)[0] == "raised"] == [
        "float64", "2-D", "byte-swapped", "a subclass"]  # as the checked path refuses them


def _outcome(fn, *args, **kw):
    """("ok", the result's bytes) or ("raised", the error's type and message)."""
    try:
        return "ok", np.asarray(fn(*args, **kw)).tobytes()
    except Exception as e:  # noqa: BLE001 - compared whole
        return "raised", type(e), str(e)


@pytest.mark.parametrize("mean,std,scale,err,match", [
    ((0.5, 0.5), STD, None, ValueError, "one value per channel"),
    (MEAN, (0.2, 0.0, 0.2), None, ValueError, "non-zero"),
    (MEAN, 0.0, None, ValueError, "non-zero"),
    (MEAN, STD, "x", ValueError, "could not convert"),
])
def test_bad_arguments_raise_the_checked_paths_errors(rng, mean, std, scale, err, match):
    x = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert _declines(x, mean, std, scale)
    with pytest.raises(err, match=match):
        cnorm.normalize_images(x, mean, std, scale=scale)


def test_a_zero_scale_goes_the_checked_way(rng):
    x = rng.integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)
    assert _declines(x, scale=0.0)


STATS = ("count", "mean", "var", "min", "max")


def _state(m):
    return [np.asarray(getattr(m, k)).tobytes() for k in STATS]


def _updated(monkeypatch, batches, axis, checked=False):
    m = cnorm.Moments(axis)
    with monkeypatch.context() as p:
        if checked:
            p.setattr(_backend.data, "moments_call", lambda *a: None)
        for b in batches:
            m.update(b)
    return m


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("axis,shape", [(-1, (2, 32, 32, 3)), (3, (4, 5, 6, 3)), (None, (5, 7)),
                                        (-1, (1, 3)), (-1, (3,)), (1, (9, 64)), (None, ())])
def test_moments_update_gives_the_checked_paths_bits(monkeypatch, rng, dtype, axis, shape):
    batches = [np.asarray(rng.integers(0, 256, shape) if dtype == np.uint8
                          else rng.standard_normal(shape) * 3 + 100, dtype=dtype)
               for _ in range(4)]
    C = 1 if axis is None else shape[axis]
    m = _updated(monkeypatch, batches[:1], axis)
    assert _backend.data.moments_call(batches[1], axis, C, m.count, m._mean, m._m2, m._min,
                                      m._max, 1) == max(1, np.prod(shape, dtype=int)) // C
    fast, checked = (_updated(monkeypatch, batches, axis, c) for c in (False, True))
    assert _state(fast) == _state(checked)
    flat = np.stack(batches).astype(np.float64).reshape(-1, C)
    tol = TOL[np.float32] if dtype == np.float32 else 1e-12  # float32: Moments' float lanes
    np.testing.assert_allclose(fast.mean, flat.mean(0), rtol=tol)
    np.testing.assert_allclose(fast.var, flat.var(0), rtol=max(tol, 1e-9))
    assert fast.min.tolist() == flat.min(0).tolist() and fast.max.tolist() == flat.max(0).tolist()


def test_moments_min_and_max_are_numpys_for_signed_zeros(monkeypatch):
    """(The statistics are defined for NaN-free data only, as Moments says.)"""
    batches = [np.array([[0.0, -0.0, 1.0]]), np.array([[-0.0, 0.0, 0.25]]),
               np.array([[2.0, -0.0, 0.5]])]
    fast, checked = (_updated(monkeypatch, batches, -1, c) for c in (False, True))
    assert _state(fast) == _state(checked)
    want_min = functools.reduce(np.minimum, [b[0] for b in batches])
    want_max = functools.reduce(np.maximum, [b[0] for b in batches])
    assert fast.min.tobytes() == want_min.tobytes() and fast.max.tobytes() == want_max.tobytes()
    assert np.signbit(fast.min).tolist() == [True, True, False]


@pytest.mark.openmp
def test_moments_the_same_bits_on_any_thread_count(monkeypatch, rng, restore_threads):
    batches = [rng.standard_normal((64, 64, 3)).astype(np.float32) for _ in range(3)]
    outs = []
    for n in (1, 2):
        cnorm.set_num_threads(n)
        outs.append(_state(_updated(monkeypatch, batches, -1)))
    assert outs[0] == outs[1]


def test_moments_what_the_entry_does_not_take_goes_the_checked_way(monkeypatch, rng):
    x = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    cases = {
        "a crop": (-1, x[:, 1:5]),
        "uint16": (-1, x.astype(np.uint16)),
        "float16": (-1, x.astype(np.float16)),
        "bool": (-1, x > 100),  # refused by both
        "channels not last": (0, x),
        "byte-swapped": (-1, x.astype(">f8")),
        "a list": (-1, x.tolist()),
        "a numpy int axis": (np.int64(-1), x),
        "65 channels": (-1, rng.integers(0, 256, (2, 65), dtype=np.uint8)),
    }
    for name, (axis, batch) in cases.items():
        first = rng.integers(0, 256, np.shape(batch), dtype=np.uint8)
        m = _updated(monkeypatch, [first], axis)
        assert _backend.data.moments_call(batch, axis, m.channels, m.count, m._mean, m._m2,
                                          m._min, m._max, 1) is None, name
        fast, checked = (_outcome(lambda c: _state(_updated(monkeypatch, [first, batch], axis,
                                                            c)), c) for c in (False, True))
        assert fast == checked, name


def test_moments_read_only_statistics_go_the_checked_way(monkeypatch, rng):
    x = rng.random((8, 3))
    m = cnorm.Moments(-1).update(x)
    m._mean.setflags(write=False)
    assert _backend.data.moments_call(x, -1, 3, m.count, m._mean, m._m2, m._min, m._max,
                                      1) is None
    assert _state(m.update(x)) == _state(_updated(monkeypatch, [x, x], -1, True))


@pytest.mark.parametrize("bad,err", [(np.zeros((4, 5), np.float32), ValueError),
                                     (np.ma.masked_array(np.zeros((4, 3))), TypeError),
                                     (np.zeros((4, 3), np.complex128), TypeError)])
def test_moments_a_failed_update_changes_nothing(rng, bad, err):
    m = cnorm.Moments(-1).update(rng.random((8, 3)))
    before = _state(m)
    with pytest.raises(err):
        m.update(bad)
    assert _state(m) == before


def test_out_is_written_and_returned(monkeypatch, rng):
    x = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    out = np.full((2, 3, 16, 16), np.nan, np.float32)
    assert _backend.data.images_call(x, MEAN, STD, None, out, 1) is out  # the entry took it
    out[...] = np.nan
    y = cnorm.normalize_images(x, MEAN, STD, out=out)
    assert y is out and out.tobytes() == _checked(monkeypatch, x, MEAN, STD).tobytes()


def test_out_over_the_images_memory_goes_the_checked_way(monkeypatch, rng):
    """The checked path reads the pixels from a copy when out overlaps them."""
    x = rng.random((2, 8, 8, 3)).astype(np.float32)
    want = _checked(monkeypatch, x.copy(), MEAN, STD)
    out = x.reshape(2, 3, 8, 8)  # the same memory
    assert _backend.data.images_call(x, MEAN, STD, None, out, 1) is None
    assert cnorm.normalize_images(x, MEAN, STD, out=out) is out
    assert out.tobytes() == want.tobytes()


@pytest.mark.parametrize("bad,err,match", [
    (np.empty((2, 3, 8, 7), np.float32), ValueError, "shape"),
    (np.empty((2, 3, 8, 8), np.float64), ValueError, "dtype"),
    (np.empty((2, 8, 8, 3), np.float32).transpose(0, 3, 1, 2), ValueError, "C-contiguous"),
    (np.zeros((2, 3, 8, 8), np.float32).view(np.ma.MaskedArray)[...], None, None),
    ([[0.0]], TypeError, "NumPy array"),
])
def test_a_bad_out_raises_the_checked_paths_error_and_writes_nothing(rng, bad, err, match):
    x = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert _backend.data.images_call(x, MEAN, STD, None, bad, 1) is None
    if err is None:  # a subclass: the checked path takes it
        assert cnorm.normalize_images(x, MEAN, STD, out=bad) is bad
        return
    before = np.asarray(bad).tobytes() if isinstance(bad, np.ndarray) else None
    with pytest.raises(err, match=match):
        cnorm.normalize_images(x, MEAN, STD, out=bad)
    if before is not None:
        assert np.asarray(bad).tobytes() == before


def test_a_read_only_out_raises(rng):
    x = rng.integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)
    out = np.zeros((1, 3, 4, 4), np.float32)
    out.setflags(write=False)
    assert _backend.data.images_call(x, MEAN, STD, None, out, 1) is None
    with pytest.raises(ValueError, match="read-only"):
        cnorm.normalize_images(x, MEAN, STD, out=out)
    assert not out.any()


def _transformed(monkeypatch, s, X, checked=False, **kw):
    with monkeypatch.context() as p:
        if checked:
            p.setattr(_backend.data, "standardize_call", lambda *a: None)
        return _outcome(s.transform, X, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw,shape", [({}, (64, 16)), ({"channel_axis": -1}, (4, 5, 3)),
                                      ({"channel_axis": None}, (7,)),
                                      ({"with_mean": False}, (9, 4)),
                                      ({"with_std": False}, (9, 4)), ({}, (1, 16))])
def test_standardize_gives_the_checked_paths_bits(monkeypatch, rng, dtype, kw, shape):
    X = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    s = cnorm.Standardizer(**kw).fit(X)
    axis = s.channel_axis
    assert _backend.data.standardize_call(
        X, axis, s.n_features_in_, s.mean_ if s.with_mean else None,
        s.scale_ if s.with_std else None, 1) is not None  # the entry took it
    fast = _transformed(monkeypatch, s, X)
    assert fast[0] == "ok" and fast == _transformed(monkeypatch, s, X, checked=True)
    y = s.transform(X)
    assert y.dtype == dtype and y.shape == X.shape
    xf = X.astype(np.float64).reshape(-1, 1 if axis is None else shape[-1])
    sd = np.where(xf.std(0) == 0, 1.0, xf.std(0))  # a constant feature: scale 1
    ref = (xf - (xf.mean(0) if s.with_mean else 0)) / (sd if s.with_std else 1)
    np.testing.assert_allclose(y.reshape(ref.shape), ref, rtol=1e-5, atol=1e-5)


def test_standardize_nan_raises_the_checked_paths_error(monkeypatch, rng):
    X = rng.standard_normal((8, 3))
    s = cnorm.Standardizer().fit(X)
    X[2, 1] = np.nan
    got = _transformed(monkeypatch, s, X)
    assert got[0] == "raised" and got == _transformed(monkeypatch, s, X, checked=True)
    assert "NaN or infinity" in got[2]


def test_standardize_what_the_entry_does_not_take_goes_the_checked_way(monkeypatch, rng):
    X = rng.standard_normal((8, 6)).astype(np.float32)
    s = cnorm.Standardizer().fit(X)
    cases = {
        "uint8": X.astype(np.uint8),
        "a crop": X[:, 1:4],
        "not contiguous": X[::2],
        "float16": X.astype(np.float16),
        "a list": X.tolist(),
        "65 features": rng.standard_normal((2, 65)),
    }
    for name, batch in cases.items():
        C = np.shape(batch)[-1]
        assert _backend.data.standardize_call(batch, s.channel_axis, C, None, None,
                                              1) is None, name
        fast = _transformed(monkeypatch, s, batch)
        assert fast == _transformed(monkeypatch, s, batch, checked=True), name
    for kw in ({"copy": False}, {"out": np.empty_like(X)}):  # in place, or into out=
        a, b = X.copy(), X.copy()
        assert _transformed(monkeypatch, s, a, **kw) == _transformed(monkeypatch, s, b, True,
                                                                     **kw)
        assert a.tobytes() == b.tobytes()
    s2 = cnorm.Standardizer(channel_axis=0).fit(X)  # features not last
    assert _backend.data.standardize_call(X, 0, 8, s2.mean_, s2.scale_, 1) is None
    assert _transformed(monkeypatch, s2, X) == _transformed(monkeypatch, s2, X, True)
    unfitted = _transformed(monkeypatch, cnorm.Standardizer(), X)
    assert unfitted[0] == "raised" and "not fitted" in unfitted[2]
