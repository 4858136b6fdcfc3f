"""cnorm.torch.SyncBatchNorm over torch.distributed (gloo): 2 and 3 processes, unequal and
empty shards, against one process on the whole batch, and under DistributedDataParallel
(ddp_check.py beside this file, launched with a timeout that fails instead of hanging)."""
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
import cnorm.torch as ct  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch without gloo")
@pytest.mark.parametrize("world", [2, 3])
def test_sync_batchnorm_over_gloo_and_ddp(world, tmp_path):
    p = subprocess.run([sys.executable, os.path.join(HERE, "ddp_check.py"), str(world),
                        str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"ALL OK on {world} ranks" in p.stdout


def test_one_process_is_batch_norm_and_ddp_accepts_the_class():
    torch.manual_seed(0)
    ref = torch.nn.BatchNorm2d(3)
    sync = ct.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(ref))[0]
    assert isinstance(sync, ct.SyncBatchNorm)
    assert not isinstance(sync, torch.nn.SyncBatchNorm)  # which DDP refuses on a CPU module
    assert sync.weight is ref.weight  # the same Parameter objects, as torch's convert
    plain = torch.nn.BatchNorm2d(3)
    plain.load_state_dict(sync.state_dict())
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(sync(x), plain(x), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sync.running_var, plain.running_var)


def test_a_module_called_twice_before_backward():
    """SyncBatchNorm keeps its cnorm layer between calls (for its recycled memory): two
    forwards before one backward still give each forward's own gradients."""
    torch.manual_seed(0)
    sync, ref = ct.SyncBatchNorm(3), torch.nn.BatchNorm2d(3)
    xs = [torch.randn(4, 3, 5, 5, requires_grad=True) for _ in range(2)]
    rs = [x.detach().clone().requires_grad_() for x in xs]
    (sync(xs[0]).square().sum() + 2 * sync(xs[1]).sum()).backward()
    (ref(rs[0]).square().sum() + 2 * ref(rs[1]).sum()).backward()
    for x, r in zip(xs, rs):
        torch.testing.assert_close(x.grad, r.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sync.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-5)
