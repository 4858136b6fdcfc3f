"""The public surface: names, repr, state_dict, modes, the layer hierarchy, functional forms
against the layers, thread control, build configuration and SIMD selection, the README
example."""
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import cnorm
from cnorm._core import backend as _backend
from cnorm.nn.base import _Module, _NormBase
from cnorm.nn.modules import BatchNormBase, _InstanceNorm
from cnorm.testing import KINDS, make, make_input, shape_for
from cnorm.testing.tree import tree_path

API_NAMES = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm",
             "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm", "batch_norm",
             "batch_norm_backward", "layer_norm", "layer_norm_backward", "group_norm",
             "group_norm_backward", "instance_norm", "instance_norm_backward", "rms_norm",
             "rms_norm_backward", "moments", "get_num_threads", "set_num_threads",
             "openmp_enabled", "show_config", "__version__", "Moments", "Standardizer",
             "normalize_images", "SyncBatchNorm", "fold_batch_norm", "BatchNormAct1d",
             "BatchNormAct2d", "BatchNormAct3d", "GroupNormAct", "batch_norm_act", "no_grad",
             "SyncBatchNormAct"}


def test_namespace_holds_the_api_and_no_stray_names():
    public = {n for n in vars(cnorm) if not n.startswith("_")} | {"__version__"}
    modules = {n for n in public if type(getattr(cnorm, n)).__name__ == "module"}
    assert set(cnorm.__all__) == API_NAMES
    # submodules (functional, modules, ...) aside; Standardizer is loaded on first use
    assert (public - modules) | {"Standardizer"} == API_NAMES
    assert "Standardizer" in dir(cnorm)
    assert "numbers" not in vars(cnorm)


def test_import_needs_numpy_only():
    """``import cnorm`` loads none of the optional dependencies; Standardizer loads
    scikit-learn (when installed) on first use, dask only for a dask array."""
    code = ("import sys, cnorm; opt = ('sklearn', 'dask', 'distributed', 'ml_dtypes', 'tqdm', "
            "'torch', 'mpi4py'); print([m for m in opt if m in sys.modules]); "
            "cnorm.Standardizer; print('dask' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "False", out


def test_standardizer_works_without_scikit_learn():
    """scikit-learn is optional: without it Standardizer is a plain class with the same
    methods, parameters and results."""
    code = """if True:
        import sys
        sys.modules["sklearn"] = None  # import sklearn now fails
        import numpy as np, cnorm
        X = np.random.default_rng(0).normal(3, 2, (500, 4))
        s = cnorm.Standardizer(with_mean=True).fit(X)
        assert np.allclose(s.transform(X), (X - X.mean(0)) / X.std(0), rtol=0, atol=1e-12)
        assert s.get_params()["channel_axis"] == 1 and s.set_params(eps=0.5) is s
        assert repr(s).startswith("Standardizer(channel_axis=1") and "eps=0.5" in repr(s)
        y = s.fit_transform(X)
        assert np.allclose(s.inverse_transform(y), X)
        try:
            cnorm.Standardizer().transform(X)
        except AttributeError as e:
            assert "not fitted" in str(e)
        else:
            raise AssertionError("transform before fit")
        print("ok", type(s).__mro__[1].__name__)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok _Estimator"


def test_version_has_one_source():
    pyproject = pathlib.Path(tree_path(__file__, "pyproject.toml"))
    assert 'dynamic = ["version"]' in pyproject.read_text()
    assert re.fullmatch(r"\d+\.\d+\.\d+", cnorm.__version__)


def test_layer_hierarchy_follows_torch():
    assert isinstance(cnorm.BatchNorm2d(3), _NormBase) and isinstance(cnorm.BatchNorm2d(3),
                                                                       BatchNormBase)
    assert isinstance(cnorm.InstanceNorm2d(3), _NormBase)
    assert not isinstance(cnorm.InstanceNorm2d(3), BatchNormBase)
    assert not isinstance(cnorm.BatchNorm2d(3), _InstanceNorm)
    for kind in KINDS:
        assert isinstance(make(kind, shape_for(kind), np.float32), _Module)
    assert not isinstance(cnorm.LayerNorm(3), _NormBase)


REPRS = [
    (lambda: cnorm.BatchNorm2d(64), "BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, "
     "bias=True, track_running_stats=True)"),
    (lambda: cnorm.BatchNorm2d(64, momentum=None, bias=False), "BatchNorm2d(64, eps=1e-05, "
     "momentum=None, affine=True, bias=False, track_running_stats=True)"),
    (lambda: cnorm.BatchNorm2d(64, eps=1e-3, affine=False, track_running_stats=False),
     "BatchNorm2d(64, eps=0.001, momentum=0.1, affine=False, bias=False, "
     "track_running_stats=False)"),
    (lambda: cnorm.LayerNorm(768), "LayerNorm((768,), eps=1e-05, elementwise_affine=True, "
     "bias=True)"),
    (lambda: cnorm.LayerNorm((3, 4), bias=False),
     "LayerNorm((3, 4), eps=1e-05, elementwise_affine=True, bias=False)"),
    (lambda: cnorm.GroupNorm(32, 64), "GroupNorm(32, 64, eps=1e-05, affine=True, bias=True)"),
    (lambda: cnorm.InstanceNorm2d(64), "InstanceNorm2d(64, eps=1e-05, momentum=0.1, "
     "affine=False, bias=False, track_running_stats=False)"),
    (lambda: cnorm.InstanceNorm3d(3, momentum=None, track_running_stats=True),
     "InstanceNorm3d(3, eps=1e-05, momentum=None, affine=False, bias=False, "
     "track_running_stats=True)"),
    (lambda: cnorm.RMSNorm(768), "RMSNorm((768,), eps=None, elementwise_affine=True)"),
    (lambda: cnorm.RMSNorm([3, 4], eps=1e-6, elementwise_affine=False),
     "RMSNorm((3, 4), eps=1e-06, elementwise_affine=False)"),
]


@pytest.mark.parametrize("make_layer,text", REPRS)
def test_repr_is_torchs(make_layer, text):
    """The strings torch 2.13 prints for the same constructors (test_torch_parity.py compares
    every kind's repr with torch's own)."""
    assert repr(make_layer()) == text


@pytest.mark.parametrize("kind", list(KINDS))
def test_state_dict_round_trip(rng, kind):
    layer = make(kind, shape_for(kind), np.float32, rng)
    layer(rng.standard_normal(shape_for(kind)).astype(np.float32))
    sd = layer.state_dict()
    want = [k for k in ("weight", "bias", "running_mean", "running_var",
                        "num_batches_tracked") if getattr(layer, k, None) is not None]
    assert list(sd) == want
    for k, v in sd.items():
        assert isinstance(v, np.ndarray) and not np.shares_memory(v, getattr(layer, k))
    new = {k: (v + 1).astype(v.dtype) for k, v in sd.items()}
    other = make(kind, shape_for(kind), np.float32)
    other.load_state_dict(new)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, new[k])


def test_train_and_eval_return_the_layer():
    layer = cnorm.BatchNorm2d(2)
    assert layer.training is True
    assert layer.eval() is layer and layer.training is False
    assert layer.train() is layer and layer.training is True
    assert layer.train(False).training is False


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functional_forms_match_the_layers(rng, dtype):
    x = make_input(rng, (3, 6, 5, 7), dtype, offset=1.0)
    dy = rng.standard_normal(x.shape).astype(dtype)
    cases = [  # (kind, forward(layer), backward(layer))
        ("ln2", lambda L: cnorm.layer_norm(x, (5, 7), L.weight, L.bias),
         lambda L: cnorm.layer_norm_backward(dy, x, (5, 7), L.weight, L.bias)),
        ("rms", lambda L: cnorm.rms_norm(x, 7, L.weight, L.eps),
         lambda L: cnorm.rms_norm_backward(dy, x, 7, L.weight, L.eps) + (None,)),
        ("gn", lambda L: cnorm.group_norm(x, L.num_groups, L.weight, L.bias),
         lambda L: cnorm.group_norm_backward(dy, x, L.num_groups, L.weight, L.bias)),
        ("in2d", lambda L: cnorm.instance_norm(x, weight=L.weight, bias=L.bias),
         lambda L: cnorm.instance_norm_backward(dy, x, weight=L.weight, bias=L.bias)),
        ("bn2d", lambda L: cnorm.batch_norm(x, None, None, L.weight, L.bias, training=True),
         lambda L: cnorm.batch_norm_backward(dy, x, None, None, L.weight, L.bias,
                                             training=True)),
    ]
    for kind, forward, backward in cases:
        layer = make(kind, x.shape, dtype, rng)
        y = layer(x)
        dx = layer.backward(dy)
        fdx, fgw, fgb = backward(layer)
        assert forward(layer).tobytes() == y.tobytes(), kind
        assert fdx.tobytes() == dx.tobytes(), kind
        assert fgw.tobytes() == layer.grad_weight.tobytes(), kind
        assert fgb is None or fgb.tobytes() == layer.grad_bias.tobytes(), kind


def test_instance_norm_functional_updates_running_arrays(rng):
    x = make_input(rng, (4, 3, 6, 7), np.float64, offset=2.0)
    rm, rv = np.zeros(3), np.ones(3)
    cnorm.instance_norm(x, rm, rv, momentum=0.25)
    per = x.reshape(4, 3, -1)
    np.testing.assert_allclose(rm, 0.25 * per.mean(axis=2).mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(rv, 0.75 + 0.25 * per.var(axis=2, ddof=1).mean(axis=0),
                               rtol=1e-13)
    y = cnorm.instance_norm(x, rm, rv, use_input_stats=False)
    shp = (1, 3, 1, 1)
    np.testing.assert_allclose(y, (x - rm.reshape(shp)) / np.sqrt(rv.reshape(shp) + 1e-5),
                               atol=1e-12)


def test_set_num_threads_returns_previous(restore_threads):
    if not cnorm.openmp_enabled():
        assert cnorm.set_num_threads(3) == 1 and cnorm.get_num_threads() == 1
        return
    cnorm.set_num_threads(3)
    assert cnorm.set_num_threads(2) == 3
    assert cnorm.get_num_threads() == 2


@pytest.mark.parametrize("bad,err", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                     ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects(restore_threads, bad, err):
    before = cnorm.get_num_threads()
    with pytest.raises(err):
        cnorm.set_num_threads(bad)
    assert cnorm.get_num_threads() == before


@pytest.mark.openmp
def test_threadpoolctl_is_respected(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    cnorm.set_num_threads(2)
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert cnorm.get_num_threads() == 1
    assert cnorm.get_num_threads() == 2


def run_child(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, **env))


@pytest.mark.openmp
def test_omp_num_threads_env_is_respected():
    out = run_child("import cnorm; print(cnorm.get_num_threads())", OMP_NUM_THREADS="3")
    assert out.stdout.strip() == "3", out.stderr


def test_show_config(capsys):
    cfg = cnorm.show_config()
    assert cfg["simd_target"] == _backend.target and cfg["simd_target"] in cfg["simd_available"]
    assert cfg["openmp"] == cnorm.openmp_enabled() and cfg["cnorm"] == cnorm.__version__
    assert _backend.target in capsys.readouterr().out


def test_the_best_simd_target_is_used():
    targets = _backend.available_targets()
    assert "baseline" in targets and _backend.target == targets[0]


@pytest.mark.parametrize("target", _backend.available_targets())
def test_cnorm_simd_env_forces_target(target):
    out = run_child("import cnorm; print(cnorm.show_config(False)['simd_target'])",
                    CNORM_SIMD=target)
    assert out.stdout.strip() == target, out.stderr


def test_cnorm_simd_env_rejects_unknown():
    out = run_child("import cnorm", CNORM_SIMD="sse9")
    assert out.returncode != 0 and "CNORM_SIMD" in out.stderr


def test_baseline_module_has_no_wide_vector_code():
    """The baseline build must run on any x86-64 CPU: no AVX/AVX-512 register in its code
    (the wider targets are only imported after the CPU check)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not shutil.which("objdump"):
        pytest.skip("needs x86-64 and objdump")
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn",
                          _backend.module_for("baseline").__file__], capture_output=True,
                         text=True, check=True).stdout
    assert "%ymm" not in asm and "%zmm" not in asm
    if "avx512" in _backend.available_targets():  # and the check would see them if there
        wide = subprocess.run(["objdump", "-d", _backend.module_for("avx512").__file__],
                              capture_output=True, text=True, check=True).stdout
        assert "%zmm" in wide


def test_the_compiled_modules_carry_no_debug_information():
    """Release builds are -g0 (setup.py; Python's own CFLAGS say -g, which made the modules
    34 MB): no ELF section named .debug_info, unless a debug or sanitizer build was asked for."""
    if sys.platform != "linux" or os.environ.get("CNORM_DEBUG", "") not in ("", "0") or \
            "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("an ELF release build")
    for target in _backend.available_targets():
        with open(_backend.module_for(target).__file__, "rb") as f:
            assert b".debug_info" not in f.read(), target


def test_readme_example_runs(capsys):
    readme = pathlib.Path(tree_path(__file__, "README.md"))
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert "BatchNorm2d(16" in capsys.readouterr().out


def test_every_out_argument_follows_one_rule():
    """The norms, normalize_images and Standardizer check ``out=`` by the same rule, with the
    same errors, before writing anything."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    imgs = rng.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    X = rng.standard_normal((20, 3))
    std = cnorm.Standardizer().fit(X)
    calls = {
        "batch_norm": (lambda out: cnorm.batch_norm(x, None, None, training=True, out=out),
                       x.shape, np.float32),
        "normalize_images": (lambda out: cnorm.normalize_images(imgs, (0.5,) * 3, (0.2,) * 3,
                                                                out=out), x.shape, np.float32),
        "Standardizer": (lambda out: std.transform(X, out=out), X.shape, np.float64),
    }
    for name, (call, shape, dtype) in calls.items():
        with pytest.raises(TypeError, match="out must be a NumPy array, got list"):
            call([0.0])
        with pytest.raises(ValueError, match=r"out must have shape .* got shape"):
            call(np.zeros((2,) + shape[1:], dtype))
        with pytest.raises(ValueError, match=r"out must have shape .* and dtype"):
            call(np.zeros(shape, np.float16))
        frozen = np.zeros(shape, dtype)
        frozen.flags.writeable = False
        with pytest.raises(ValueError, match="out is read-only"):
            call(frozen)
        good = np.zeros(shape, dtype)
        assert call(good) is good and good.any(), name
