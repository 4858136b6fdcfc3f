"""SyncBatchNorm: in one process (a one-process world: BatchNorm), and under real MPI with 2
and 3 ranks (mpi_sync_check.py beside this file, launched by mpiexec with a timeout that
fails the test instead of hanging), plus the data-parallel training example."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cnorm
from cnorm.testing import RefBatchNorm
from cnorm.testing.tree import tree_path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MPIEXEC = shutil.which("mpiexec")


def mpi_available():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return MPIEXEC is not None


needs_mpi = pytest.mark.skipif(not mpi_available(), reason="mpi4py or mpiexec not installed")


def run_mpi(n, *args, timeout=240):
    """``mpiexec -n n python args...``; fails the test (never hangs) past ``timeout``."""
    cmd = [MPIEXEC, "-n", str(n), sys.executable, *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(cmd)} timed out after {timeout} s (a rank hangs?)\n"
                    f"{e.stdout}\n{e.stderr}")
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_one_process_world_is_batch_norm(rng):
    x = rng.standard_normal((6, 5, 7, 3)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    sync, bn = cnorm.SyncBatchNorm(5), cnorm.BatchNorm2d(5)
    for layer in (sync, bn):
        layer.weight[...] = np.linspace(0.5, 2, 5)
    assert sync(x).tobytes() == bn(x).tobytes()
    assert sync.backward(dy).tobytes() == bn.backward(dy).tobytes()
    assert sync.grad_weight.tobytes() == bn.grad_weight.tobytes()
    assert sync.running_var.tobytes() == bn.running_var.tobytes()
    assert repr(sync) == ("SyncBatchNorm(5, eps=1e-05, momentum=0.1, affine=True, bias=True, "
                          "track_running_stats=True)")
    assert set(sync.state_dict()) == {"weight", "bias", "running_mean", "running_var",
                                      "num_batches_tracked"}
    with pytest.raises(ValueError, match="2D or higher"):
        sync(x[0, 0, 0])


def test_convert_sync_batchnorm_keeps_the_state(rng):
    bn = cnorm.BatchNorm2d(4, momentum=None, bias=False).eval()
    bn.weight[...] = [1, 2, 3, 4]
    bn.running_mean[...] = [0.5, 1, 1.5, 2]
    bn.num_batches_tracked[...] = 7
    sync = cnorm.SyncBatchNorm.convert_sync_batchnorm(bn)
    assert type(sync) is cnorm.SyncBatchNorm and not sync.training
    assert sync.momentum is None and sync.bias is None
    for k, v in bn.state_dict().items():
        assert np.array_equal(sync.state_dict()[k], v)
    sync.running_mean[0] = 9  # a copy, not shared
    assert bn.running_mean[0] == 0.5

    class Model:
        def __init__(self):
            self.norm = cnorm.BatchNorm1d(3)
            self.blocks = [cnorm.BatchNorm2d(2), cnorm.LayerNorm(4)]
    model = cnorm.SyncBatchNorm.convert_sync_batchnorm(Model())
    assert type(model.norm) is cnorm.SyncBatchNorm
    assert type(model.blocks[0]) is cnorm.SyncBatchNorm
    assert type(model.blocks[1]) is cnorm.LayerNorm


def test_convert_reaches_every_layer(rng):
    """Issue 20, item 4: nested plain objects, namedtuples and fused blocks (which keep their
    activation) are converted; a layer shared by two places stays shared; cycles end."""
    import collections

    Pair = collections.namedtuple("Pair", "bn other")

    class Block:
        def __init__(self):
            self.bn = cnorm.BatchNorm2d(3)

    class Model:
        def __init__(self):
            self.block = Block()
            self.pair = Pair(cnorm.BatchNorm1d(2), "text")
            self.act = cnorm.BatchNormAct2d(4, act="leaky_relu", negative_slope=0.2).eval()
            self.again = self.block.bn
            self.me = self
    model = Model()
    model.act.running_mean[...] = 5
    out = cnorm.SyncBatchNorm.convert_sync_batchnorm(model)
    assert out is model and type(model.block.bn) is cnorm.SyncBatchNorm
    assert model.again is model.block.bn
    assert type(model.pair) is Pair and model.pair.other == "text"
    assert type(model.pair.bn) is cnorm.SyncBatchNorm
    blk = model.act
    assert type(blk) is cnorm.SyncBatchNormAct and not blk.training
    assert (blk.act, blk.negative_slope) == ("leaky_relu", 0.2) and np.all(blk.running_mean == 5)
    assert repr(blk).endswith("act='leaky_relu', negative_slope=0.2)")


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "silu", "gelu"])
@pytest.mark.parametrize("residual", [True, False])
def test_the_synchronized_path_of_a_block_is_the_block(act, residual, rng, monkeypatch):
    """SyncBatchNormAct through its collective path (forced, in a one-process world) against
    BatchNormAct2d: forward, dx, grad_residual, parameter gradients, running statistics.
    Under MPI, mpi_sync_check.py checks it against the whole batch."""
    monkeypatch.setattr(cnorm.SyncBatchNorm, "_collective", lambda self, comm: True)
    x, r, dy = (rng.standard_normal((4, 3, 5, 5)) * 2 + 1 for _ in range(3))
    r = r if residual else None
    a = cnorm.SyncBatchNormAct(3, act=act, dtype=np.float64, comm=cnorm._core.comm.OneProcess())
    b = cnorm.BatchNormAct2d(3, act=act, dtype=np.float64)
    for layer in (a, b):
        layer.weight[...] = [0.5, 1.5, -1.0]
        layer.bias[...] = [0.1, -0.2, 0.3]
    assert isinstance(a._saved, type(None))
    ya, yb = a(x, r), b(x, r)
    assert isinstance(a._saved, cnorm.nn.sync.SyncContext)
    np.testing.assert_allclose(ya, yb, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.backward(dy), b.backward(dy), rtol=1e-10, atol=1e-10)
    for name in ("grad_weight", "grad_bias", "grad_residual", "running_mean", "running_var"):
        got, want = getattr(a, name), getattr(b, name)
        if want is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, err_msg=name)


class Twins:
    """A world of two ranks that hold the same shard: every Allgather returns this rank's
    message twice (so the union is the shard twice over)."""

    size, rank = 2, 0

    def Allgather(self, send, recv):
        recv[...] = np.reshape(send, (1, -1))

    def allgather(self, obj):
        return [obj, obj]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [{}, dict(momentum=None, bias=False),
                                dict(affine=False, track_running_stats=False)])
def test_the_entry_path_gives_the_checked_paths_bits(dtype, kw, rng):
    """A training step by the entries checked in C (sync_train_begin/finish, sync_grad_begin/
    finish) against the checked path of the same layer, over the same two-rank world: y, dx,
    parameter gradients, running statistics and counter bit for bit; and both against the
    float64 reference on the union (the shard twice)."""
    x = (3.0 + 2.0 * rng.standard_normal((4, 5, 6, 7))).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    entry, checked = (cnorm.SyncBatchNorm(5, dtype=dtype, comm=Twins(), **kw) for _ in "ab")
    checked._sync_entry = lambda comm, x: None  # this one takes the checked path
    ref = RefBatchNorm(5, momentum=kw.get("momentum", 0.1), affine=kw.get("affine", True),
                       bias=kw.get("bias", True))
    for layer in (entry, checked, ref):
        if layer.weight is not None:
            layer.weight[...] = np.linspace(0.5, 2.0, 5)
    names = ("grad_weight", "grad_bias", "running_mean", "running_var", "num_batches_tracked")
    for step in range(2):
        y = entry(x)
        assert type(entry._saved) is cnorm.nn.sync.SyncCallContext
        dx = entry.backward(dy)
        yc = checked(x)
        assert type(checked._saved) is cnorm.nn.sync.SyncContext
        dxc = checked.backward(dy)
        assert y.tobytes() == yc.tobytes() and dx.tobytes() == dxc.tobytes()
        for name in names:
            a, b = getattr(entry, name), getattr(checked, name)
            assert (a is None) == (b is None) and (a is None or a.tobytes() == b.tobytes()), name
        both = np.concatenate([x, x])
        yr = ref.forward(both)
        dxr, gwr, _ = ref.backward(np.concatenate([dy, dy]))
        tol = 2e-5 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(y, yr[:4], rtol=tol, atol=tol)
        np.testing.assert_allclose(dx, dxr[:4], rtol=tol, atol=tol)
        if entry.running_var is not None:
            np.testing.assert_allclose(entry.running_var, ref.running_var, rtol=tol)


def test_the_entry_forward_with_a_backward_it_declines(rng):
    """A forward by the entry, then a grad_output the backward entry does not take (a strided
    view, Fortran order): the checked backward finishes it with the same bits; a wrong shape
    raises and leaves the gradients as they were."""
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    dy = rng.standard_normal((4, 3, 10)).astype(np.float32)[:, :, ::2]
    layer = cnorm.SyncBatchNorm(3, comm=Twins())
    layer(x)
    want = layer.backward(np.ascontiguousarray(dy)).tobytes()
    gw = layer.grad_weight.tobytes()
    for given in (dy, np.asfortranarray(dy)):
        layer(x)
        assert type(layer._saved) is cnorm.nn.sync.SyncCallContext
        assert layer.backward(given).tobytes() == want and layer.grad_weight.tobytes() == gw
    layer(x)
    with pytest.raises(ValueError, match="shape"):
        layer.backward(dy[:2])
    assert layer.grad_weight.tobytes() == gw


def test_an_entry_out_of_memory_leaves_the_agreement_to_the_checked_path(rng, monkeypatch):
    """sync_train_begin or sync_grad_begin failing for memory has sent nothing: the layer then
    takes its checked path, which agrees on any failure with the other ranks (an exception
    raised there would leave them waiting in the collective), and gives the entry's bits."""
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    layer = cnorm.SyncBatchNorm(3, comm=Twins())
    want = layer(x).tobytes(), layer.backward(dy).tobytes()

    def no_memory(*args):
        raise MemoryError()

    kernels = cnorm.nn.sync._backend.kernels
    for name in ("sync_train_begin", "sync_grad_begin"):
        monkeypatch.setattr(kernels, name, no_memory)
        layer = cnorm.SyncBatchNorm(3, comm=Twins())
        assert (layer(x).tobytes(), layer.backward(dy).tobytes()) == want, name
        monkeypatch.undo()


def test_moments_allreduce_in_one_process(rng):
    x = rng.standard_normal((50, 4))
    m = cnorm.Moments.from_array(x)
    before = (m.count, m.mean.tobytes(), m.var.tobytes())
    assert m.allreduce() is m
    assert (m.count, m.mean.tobytes(), m.var.tobytes()) == before


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_under_mpi(ranks):
    """Each rank's y, dx, running statistics and summed parameter gradients against BatchNorm
    on the concatenated batch, the float64 reference and torch (float64 <= 1e-10, float32 <=
    2e-5): 2-5D, channels-last, momentum=None, affine/bias switches, unequal shards and an
    empty one; a sub-communicator from Split; identical bits on every rank and across runs;
    every error on every rank, with no state changed; Moments.allreduce."""
    out = run_mpi(ranks, os.path.join(HERE, "mpi_sync_check.py"))
    assert f"ALL OK on ranks {list(range(ranks))}" in out


@needs_mpi
def test_a_hanging_run_fails_instead_of_blocking(tmp_path):
    """The launcher's timeout turns a rank that never joins a collective into a failure."""
    script = tmp_path / "hang.py"
    script.write_text("from mpi4py import MPI\nimport time\n"
                      "if MPI.COMM_WORLD.rank == 0:\n    MPI.COMM_WORLD.Barrier()\n"
                      "else:\n    time.sleep(60)\n")
    with pytest.raises(pytest.fail.Exception, match="timed out"):
        run_mpi(2, str(script), timeout=5)


@needs_mpi
def test_training_example_matches_one_process():
    """examples/train_mpi.py on 2 ranks: its loss curve matches the one-process run on the full
    batch within 1e-5 (the script checks, rank 0 reports)."""
    out = run_mpi(2, tree_path(__file__, "examples", "train_mpi.py"), "--epochs", "3",
                  "--check")
    assert "matches the one-process run" in out


@pytest.mark.parametrize("kw", [{}, dict(momentum=None, affine=False, track_running_stats=False),
                                dict(eps=1e-3, bias=False)])
def test_repr_is_torchs(kw):
    torch = pytest.importorskip("torch")
    assert repr(cnorm.SyncBatchNorm(64, **kw)) == repr(torch.nn.SyncBatchNorm(64, **kw))


def test_without_mpi4py_it_is_batch_norm():
    code = """if True:
        import sys
        sys.modules["mpi4py"] = None  # import mpi4py now fails
        import numpy as np, cnorm
        x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
        s, b = cnorm.SyncBatchNorm(3), cnorm.BatchNorm1d(3)
        assert s(x).tobytes() == b(x).tobytes()
        assert s.backward(x).tobytes() == b.backward(x).tobytes()
        m = cnorm.Moments.from_array(x)
        assert m.allreduce() is m and m.count == 20
        print("ok")
    """
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
