"""cnorm.Standardizer: scikit-learn's estimator checks, StandardScaler parity, N-D channels,
batches from an iterator over a memmap, out= and in place, NaN and bad input."""
import pickle

import numpy as np
import pytest

import cnorm
from cnorm.testing import TOL

sklearn = pytest.importorskip("sklearn")
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402


def data(rng, shape, dtype=np.float64):
    C = shape[1] if len(shape) > 1 else 1
    scale = np.geomspace(1e-3, 1e3, C).reshape((1, C) + (1,) * (len(shape) - 2))
    off = np.linspace(-50, 1e4, C).reshape(scale.shape)
    return (off + scale * rng.standard_normal(shape)).astype(dtype)


def test_passes_scikit_learns_estimator_checks():
    results = check_estimator(cnorm.Standardizer(), on_fail=None)
    failed = [(r["check_name"], r["exception"]) for r in results if r["status"] == "failed"]
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) > 30


@pytest.mark.parametrize("with_mean,with_std", [(True, True), (False, True), (True, False),
                                                (False, False)])
def test_drop_in_for_standard_scaler(rng, with_mean, with_std):
    X = data(rng, (2000, 9))
    X[:, 4] = 7.25  # a constant feature: scale 1
    ours = cnorm.Standardizer(with_mean=with_mean, with_std=with_std).fit(X)
    theirs = StandardScaler(with_mean=with_mean, with_std=with_std).fit(X)
    for name in ("mean_", "var_", "scale_"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert np.allclose(a, b, rtol=1e-12, atol=0), name
    assert ours.n_samples_seen_ == theirs.n_samples_seen_ == 2000
    assert ours.n_features_in_ == theirs.n_features_in_ == 9
    if with_std:
        assert ours.scale_[4] == 1.0
    Y = ours.transform(X)
    assert Y.dtype == np.float64
    ref = theirs.transform(X)
    # the means agree to 1e-12 relative (above); the outputs to that, in units of the scale
    ratio = np.max(np.abs(X.mean(axis=0)) / (theirs.scale_ if with_std else 1.0))
    tol = 1e-12 * max(ratio, np.abs(ref).max())
    assert np.max(np.abs(Y - ref)) <= tol
    back = ours.inverse_transform(Y)
    assert np.allclose(back, theirs.inverse_transform(ref), rtol=1e-12, atol=0)


def test_partial_fit_matches_standard_scaler(rng):
    X = data(rng, (3000, 5))
    ours, theirs = cnorm.Standardizer(), StandardScaler()
    for part in np.array_split(X, 7):
        ours.partial_fit(part)
        theirs.partial_fit(part)
    assert np.allclose(ours.mean_, theirs.mean_, rtol=1e-12, atol=0)
    # against the two-pass variance of all the data ours holds 1e-12; scikit-learn's own
    # incremental update drifts further on these features (mean/std up to 1e5)
    assert np.allclose(ours.var_, X.var(axis=0), rtol=1e-12, atol=0)
    assert np.allclose(ours.var_, theirs.var_, rtol=1e-11, atol=0)
    assert ours.n_samples_seen_ == 3000


def test_float32_and_integer_inputs_keep_or_widen_to_float32(rng):
    X = data(rng, (500, 4), np.float32)
    s = cnorm.Standardizer().fit(X)
    Y = s.transform(X)
    assert Y.dtype == np.float32
    ref = (X.astype(np.float64) - s.mean_) / s.scale_
    assert np.max(np.abs(Y - ref)) <= 3e-6 * np.max(np.abs(ref))
    theirs = StandardScaler().fit(X)  # float32 data: the same statistics to float32's
    tol = TOL[np.float32]             # tolerance (cnorm.Moments' float lanes) ...
    assert np.allclose(s.mean_, theirs.mean_, rtol=tol) and np.allclose(s.var_, theirs.var_,
                                                                        rtol=tol)
    ref32 = theirs.transform(X)  # ... and an output at least as accurate (it rounds the mean
    assert ref32.dtype == np.float32  # to float32 first, which costs digits at large offsets)
    assert np.max(np.abs(Y - ref)) <= np.max(np.abs(ref32 - ref))
    for dt in (np.uint8, np.int16, np.int32, np.float16):
        Xi = rng.integers(0, 200, (300, 3)).astype(dt)
        si = cnorm.Standardizer().fit(Xi)
        assert np.allclose(si.mean_, Xi.astype(np.float64).mean(0), rtol=1e-12)
        Yi = si.transform(Xi)
        assert Yi.dtype == np.float32
        ref = (Xi.astype(np.float64) - si.mean_) / si.scale_
        assert np.max(np.abs(Yi - ref)) <= 3e-6 * np.max(np.abs(ref))


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_n_dimensional_input_is_standardized_per_channel(rng, layout):
    x = data(rng, (6, 3, 20, 30))
    axis = 1
    if layout == "nhwc":
        x, axis = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), 3
    s = cnorm.Standardizer(channel_axis=axis).fit(x)
    red = tuple(d for d in range(4) if d != axis)
    assert np.allclose(s.mean_, x.mean(axis=red), rtol=1e-12)
    assert np.allclose(s.var_, x.var(axis=red), rtol=1e-12)
    assert s.n_samples_seen_ == x.size // 3 and s.n_features_in_ == 3
    y = s.transform(x)
    shp = [1, 1, 1, 1]
    shp[axis] = 3
    ref = (x - x.mean(axis=red).reshape(shp)) / x.std(axis=red).reshape(shp)
    ratio = np.max(np.abs(s.mean_) / s.scale_)  # 1e-13 relative in the mean, in scale units
    assert np.max(np.abs(y - ref)) <= 1e-13 * max(ratio, np.abs(ref).max())
    assert y.flags.c_contiguous  # the input's layout


def test_fit_on_an_iterator_of_memmap_batches(rng, tmp_path, capsys):
    X = data(rng, (5000, 6), np.float32)
    mm = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="r", shape=X.shape)
    batches = (ro[i:i + 512] for i in range(0, len(ro), 512))
    s = cnorm.Standardizer().fit(batches, progress=True)
    whole = cnorm.Standardizer().fit(X)
    tol = TOL[np.float32]  # float32 batches: any split to float32's tolerance
    assert np.allclose(s.mean_, whole.mean_, rtol=tol) and s.n_samples_seen_ == 5000
    assert np.allclose(s.var_, whole.var_, rtol=tol)
    assert "Standardizer.fit" in capsys.readouterr().err  # the progress bar
    with pytest.raises(ValueError, match="empty iterator"):
        cnorm.Standardizer().fit(iter([]))


def test_transform_out_and_in_place(rng):
    X = data(rng, (400, 5), np.float32)
    s = cnorm.Standardizer().fit(X)
    want = s.transform(X)
    out = np.full_like(X, np.nan)
    assert s.transform(X, out=out) is out and np.array_equal(out, want)
    Z = X.copy()
    assert s.transform(Z, copy=False) is Z and np.array_equal(Z, want)
    back = np.empty_like(X)
    assert s.inverse_transform(want, out=back) is back
    # per channel, a few float32 roundings of the channel's largest value (channel 0 has
    # std 1e-3 at offset -50: an absolute tolerance of 1e-3 would pass a wrong std)
    bound = 8 * np.finfo(np.float32).eps * np.abs(X).max(axis=0)
    assert np.all(np.abs(back.astype(np.float64) - X) <= bound)


def test_nan_and_inf_raise_and_change_nothing(rng):
    X = data(rng, (100, 3))
    s = cnorm.Standardizer().fit(X)
    saved = pickle.dumps(s)
    for bad in (np.nan, np.inf):
        Xb = X.copy()
        Xb[17, 1] = bad
        with pytest.raises(ValueError, match="NaN or infinity"):
            s.partial_fit(Xb)
        with pytest.raises(ValueError, match="NaN or infinity"):
            s.transform(Xb)
        with pytest.raises(ValueError, match="NaN or infinity"):
            cnorm.Standardizer().fit(Xb)
    assert pickle.dumps(s) == saved


def test_bad_input_raises_clearly_and_changes_nothing(rng):
    X = data(rng, (100, 3))
    s = cnorm.Standardizer().fit(X)
    saved = pickle.dumps(s)
    with pytest.raises(ValueError, match="4 features.*expecting 3"):
        s.transform(data(rng, (10, 4)))
    with pytest.raises(ValueError, match="4 features.*expecting 3"):
        s.partial_fit(data(rng, (10, 4)))
    with pytest.raises(ValueError, match="out must have shape"):
        s.transform(X, out=np.empty((100, 4)))
    with pytest.raises(ValueError, match="out must have shape"):
        s.transform(X, out=np.empty((100, 3), np.float32))
    with pytest.raises(ValueError, match="Complex data"):  # scikit-learn's validation
        s.transform(X.astype(complex))
    with pytest.raises(ValueError, match="eps"):
        cnorm.Standardizer(eps=-1.0).fit(X)
    assert pickle.dumps(s) == saved
    with pytest.raises(sklearn.exceptions.NotFittedError):
        cnorm.Standardizer().transform(X)


def test_eps_is_added_to_the_variance(rng):
    X = data(rng, (300, 4))
    s = cnorm.Standardizer(eps=0.5).fit(X)
    assert np.allclose(s.scale_, np.sqrt(X.var(axis=0) + 0.5), rtol=1e-13)
