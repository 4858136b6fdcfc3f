"""Standardizer on dask arrays: per-block Moments merged in a tree in block order, on the
threaded scheduler and on a distributed cluster of worker processes; lazy transform."""
import numpy as np
import pytest

import cnorm
from cnorm.testing import TOL, isolated

da = pytest.importorskip("dask.array")
pytest.importorskip("sklearn")


def data(rng, shape, dtype=np.float32):
    return (rng.normal(5, 3, shape) * np.linspace(0.5, 4, shape[-1])).astype(dtype)


def test_fit_and_transform_match_numpy_on_the_threaded_scheduler(rng):
    X = data(rng, (4000, 6))
    dX = da.from_array(X, chunks=(700, 4))  # the channel axis split too: rechunked
    s = cnorm.Standardizer().fit(dX)
    ref = cnorm.Standardizer().fit(X)
    assert s.n_samples_seen_ == 4000 and s.n_features_in_ == 6
    tol = TOL[np.float32]  # float32 data: float lanes flushed to double (cnorm.Moments)
    assert np.allclose(s.mean_, X.astype(np.float64).mean(0), rtol=tol)
    assert np.allclose(s.var_, X.astype(np.float64).var(0), rtol=tol)
    y = s.transform(dX)
    assert isinstance(y, da.Array) and y.dtype == np.float32  # lazy
    assert np.array_equal(y.compute(), s.transform(X))
    assert np.allclose(ref.mean_, s.mean_, rtol=tol)
    again = cnorm.Standardizer().fit(dX)  # the tree merges in block order: same bits
    assert again.mean_.tobytes() == s.mean_.tobytes()
    assert again.var_.tobytes() == s.var_.tobytes()


def test_n_dimensional_dask_input_per_channel(rng):
    x = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    dx = da.from_array(x, chunks=(5, 32, 16, 3))
    s = cnorm.Standardizer(channel_axis=-1).fit(dx)
    m = cnorm.Moments.from_array(x, channel_axis=-1)
    assert np.allclose(s.mean_, m.mean, rtol=1e-12) and np.allclose(s.var_, m.var, rtol=1e-12)
    y = s.transform(dx).compute()
    assert y.dtype == np.float32 and np.array_equal(y, s.transform(x))


def test_dask_errors(rng):
    s = cnorm.Standardizer().fit(data(rng, (100, 3)))
    with pytest.raises(ValueError, match="4 features"):
        s.transform(da.from_array(data(rng, (50, 4)), chunks=10))
    bad = data(rng, (100, 3))
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cnorm.Standardizer().fit(da.from_array(bad, chunks=30))


def test_on_a_distributed_cluster_of_processes():
    """A LocalCluster of two worker processes on localhost, started here: partial Moments
    are computed on the workers, pickled back and merged."""
    pytest.importorskip("distributed")
    out = isolated("""
        import numpy as np
        import dask.array as da
        from distributed import Client, LocalCluster
        import cnorm

        if __name__ == "__main__":
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                rng = np.random.default_rng(7)
                X = (rng.normal(2, 3, (20000, 8)) * np.arange(1, 9)).astype(np.float64)
                dX = da.from_array(X, chunks=(2500, 8))
                s = cnorm.Standardizer().fit(dX)
                assert np.allclose(s.mean_, X.mean(0), rtol=1e-12), s.mean_
                assert np.allclose(s.var_, X.var(0), rtol=1e-12), s.var_
                y = s.transform(dX)
                assert isinstance(y, da.Array)
                got = client.compute(y).result()
                assert np.allclose(got, (X - X.mean(0)) / X.std(0), rtol=0, atol=1e-12)
                workers = client.run(lambda: __import__("os").getpid())
                assert len(workers) == 2
                print("ok", len(workers))
    """, timeout=240)
    assert "ok 2" in out
