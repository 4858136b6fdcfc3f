"""The examples run: train_digits.py for one epoch (its own checks: the folded model predicts
what the trained one does)."""
import subprocess
import sys

import pytest

from cnorm.testing.tree import tree_path


def test_train_digits_one_epoch(tmp_path):
    pytest.importorskip("sklearn")
    p = subprocess.run([sys.executable, tree_path(__file__, "examples", "train_digits.py"),
                        "--epochs", "1", "--out", str(tmp_path)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "folded model agrees on 1.0000 of the test images" in p.stdout
    acc = float(p.stdout.split("test accuracy ")[-1].split()[0])
    assert acc >= 0.9, p.stdout  # one epoch already gets most of the way (8 give >= 0.97)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "train_digits.png").stat().st_size > 1000


@pytest.mark.parametrize("args", [[], ["--ddp", "2"]], ids=["one process", "ddp 2"])
def test_torch_train_converted_curve_agrees(args):
    """examples/torch_train.py: the converted network's loss curve is torch's (and, under DDP
    with SyncBatchNorm on 2 processes, one process's)."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    p = subprocess.run([sys.executable, tree_path(__file__, "examples", "torch_train.py"),
                        "--epochs", "1", *args], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "the loss curves agree" in p.stdout
