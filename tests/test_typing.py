"""The public API's types: ``assert_type`` on what each kind of call returns, checked by mypy
(``mypy --strict`` on this file; skipped without mypy). At run time the calls run too, so
the annotations are also checked against what the code does."""
import os
import subprocess
import sys
import sysconfig
from typing import Optional, Tuple

import numpy as np
import pytest
from numpy.typing import NDArray
from typing_extensions import Any, assert_type

import cnorm

Array = NDArray[Any]


def check_api() -> None:
    """Every line is an assertion mypy makes about the public API."""
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5)).astype(np.float32)
    bn = cnorm.BatchNorm2d(3)
    assert_type(bn, cnorm.BatchNorm2d)
    assert_type(bn(x), Array)
    assert_type(bn.backward(np.ones_like(x)), Array)
    assert_type(bn.train(), cnorm.BatchNorm2d)                 # train/eval return the layer
    assert_type(bn.eval(), cnorm.BatchNorm2d)
    assert_type(bn.state_dict(), dict[str, Array])
    assert_type(bn.running_mean, Optional[Array])
    assert_type(cnorm.batch_norm(x, None, None, training=True), Array)
    assert_type(cnorm.batch_norm_backward(x, x, None, None, training=True),
                Tuple[Array, Optional[Array], Optional[Array]])
    assert_type(cnorm.moments(x, (0, 2, 3)), Tuple[Array, Array])
    assert_type(cnorm.rms_norm_backward(x, x, 5), Tuple[Array, Optional[Array]])
    assert_type(cnorm.GroupNormAct(1, 3)(x, residual=x), Array)
    assert_type(cnorm.fold_batch_norm(np.ones((3, 2)), None, bn.eval()), Tuple[Array, Array])
    m = cnorm.Moments(channel_axis=1)
    assert_type(m.update(x), cnorm.Moments)
    assert_type(m.mean, Array)
    assert_type(cnorm.normalize_images(np.zeros((1, 4, 4, 3), np.uint8), 0.5, 0.2), Array)
    assert_type(cnorm.get_num_threads(), int)
    assert_type(cnorm.set_num_threads(cnorm.get_num_threads()), int)
    assert_type(cnorm.openmp_enabled(), bool)
    assert_type(cnorm.show_config(False), dict[str, Any])
    assert_type(cnorm.Standardizer().fit(x.reshape(-1, 3)), cnorm.Standardizer)


def test_api_calls_run() -> None:
    check_api()


def test_mypy_agrees_with_the_assertions() -> None:
    """mypy --strict on this file: every assert_type holds for the annotations (and this
    check fails when one of them is wrong: see test_mypy_rejects_a_wrong_assertion)."""
    pytest.importorskip("mypy")
    out = _mypy(__file__)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_rejects_a_wrong_assertion(tmp_path: Any) -> None:
    pytest.importorskip("mypy")
    wrong = tmp_path / "wrong.py"
    wrong.write_text("from typing_extensions import assert_type\nimport cnorm\n"
                     "assert_type(cnorm.get_num_threads(), str)\n")
    out = _mypy(str(wrong))
    assert out.returncode != 0 and "[assert-type]" in out.stdout, out.stdout


def _mypy(path: str) -> "subprocess.CompletedProcess[str]":
    cache = os.path.join(sysconfig.get_path("purelib"), "..", "..", "..", ".mypy_cache_cnorm")
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
                           "--cache-dir", os.path.abspath(cache), path],
                          capture_output=True, text=True, timeout=600)
