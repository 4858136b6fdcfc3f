"""Every SIMD target this CPU runs gives bit-identical results, and the choice is reported."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import all_outputs, layout_input

import cnorm
import cnorm.functional as F
from cnorm import _backend

TARGETS = _backend.available_targets()
CASES = [((6, 5, 37, 41), "nchw"), ((6, 5, 37, 41), "nhwc"), ((300, 70), "nc"),
         ((4, 3, 20, 20), "nchw")]


def test_baseline_always_available():
    assert "baseline" in TARGETS
    assert _backend.target == TARGETS[0]  # the best one is used by default


@pytest.mark.skipif(len(TARGETS) < 2, reason="only one SIMD target runs on this CPU")
@pytest.mark.parametrize("shape,layout", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_targets_bit_identical(rng, monkeypatch, shape, layout, dtype):
    x = layout_input(rng, shape, layout, dtype, offset=50.0)
    results = {}
    for t in TARGETS:
        monkeypatch.setattr(F, "_kernels", _backend.module_for(t))
        results[t] = all_outputs(x)
    for t in TARGETS[1:]:
        for a, b in zip(results[TARGETS[0]], results[t]):
            assert a.tobytes() == b.tobytes(), f"{t} differs from {TARGETS[0]}"


def test_show_config(capsys):
    cfg = cnorm.show_config()
    assert cfg["simd_target"] == _backend.target and cfg["simd_target"] in cfg["simd_available"]
    assert cfg["openmp"] == cnorm.openmp_enabled()
    assert _backend.target in capsys.readouterr().out


@pytest.mark.parametrize("target", TARGETS)
def test_cnorm_simd_env_forces_target(tmp_path, target):
    code = "import cnorm; print(cnorm.show_config(False)['simd_target'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env=dict(os.environ, CNORM_SIMD=target), check=True)
    assert out.stdout.strip() == target


def test_cnorm_simd_env_rejects_unknown(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import cnorm"], cwd=tmp_path,
                         capture_output=True, text=True,
                         env=dict(os.environ, CNORM_SIMD="sse9"))
    assert out.returncode != 0 and "CNORM_SIMD" in out.stderr


def test_baseline_module_has_no_wide_vector_code():
    """The baseline build must run on any x86-64 CPU: no AVX/AVX-512 register in its code
    (the wider targets are only imported after the CPU check)."""
    import platform
    import shutil

    if platform.machine().lower() not in ("x86_64", "amd64") or not shutil.which("objdump"):
        pytest.skip("needs x86-64 and objdump")
    base = _backend.module_for("baseline").__file__
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", base], capture_output=True,
                         text=True, check=True).stdout
    assert "%ymm" not in asm and "%zmm" not in asm
    if "avx512" in TARGETS:  # and the check would see them if they were there
        wide = subprocess.run(["objdump", "-d", _backend.module_for("avx512").__file__],
                              capture_output=True, text=True, check=True).stdout
        assert "%zmm" in wide
