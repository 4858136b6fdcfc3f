"""The documentation says what the code does (issue 20, item 12): the kernel steps' argument
lists in docs/api.md are the kernels' own; SyncBatchNorm's documented ranks are the ones it
takes; the functional forms' docstrings name the half-precision dtypes they accept."""
import os
import re

import numpy as np
import pytest

import cnorm
from cnorm._core import backend as _backend
from cnorm.testing.tree import tree_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = open(tree_path(__file__, "docs", "api.md")).read()


def _documented_steps():
    section = API[API.index("## Kernel steps"):]
    block = section[section.index("```python"):section.index("```\n", 10)]
    return {m.group(1): [a.split("=")[0].strip() for a in m.group(2).split(",")]
            for m in re.finditer(r"^(\w+)\(([^)]*)\)", block, re.M)}


def test_kernel_steps_are_documented_with_their_arguments():
    steps = _documented_steps()
    assert set(steps) == {"partial_stats", "merge_stats", "normalize", "backward_sums",
                          "backward_apply", "sync_stats", "sync_coefficients"}
    for name, args in steps.items():
        fn = getattr(_backend.kernels, name)
        fn = fn[next(iter(fn.__signatures__))] if hasattr(fn, "__signatures__") else fn
        code = fn.__code__
        assert args == list(code.co_varnames[:code.co_argcount]), name


def test_sync_batchnorm_takes_the_documented_ranks(rng):
    assert "of any rank from 2-D up" in API and "2-D to 5-D" not in API
    layer = cnorm.SyncBatchNorm(3)
    for ndim in range(2, 7):
        x = rng.standard_normal((4, 3) + (2,) * (ndim - 2)).astype(np.float32)
        assert layer(x).shape == x.shape
    with pytest.raises(ValueError):
        layer(np.ones(3, np.float32))


@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "group_norm", "instance_norm",
                                  "rms_norm", "batch_norm_backward", "layer_norm_backward",
                                  "group_norm_backward", "instance_norm_backward"])
def test_functional_docstrings_do_not_restrict_the_dtypes(name):
    """The forms take half-precision data: no docstring may say "float32 or float64" of the
    data, and the module's docstring names all four dtypes."""
    doc = getattr(cnorm, name).__doc__
    assert "float32 or float64" not in doc.replace("\n    ", " ")
    assert all(t in cnorm.nn.functional.__doc__ for t in ("float32", "float64", "float16",
                                                       "bfloat16"))


def _torch_names():
    """cnorm.torch's public names, when torch imports (its docstrings are held to the same
    rules); none otherwise."""
    try:
        import cnorm.torch as ct
    except ImportError:
        return []
    return ([f"cnorm.torch.{n}" for n in ct.__all__ if n != "functional"]
            + [f"cnorm.torch.functional.{n}" for n in ct.functional.__all__])


PUBLIC = [n for n in cnorm.__all__ if n != "__version__"] + _torch_names()
CANNOT_RAISE = {"show_config"}  # its one argument is a print flag: nothing to refuse


def _public(name):
    """A name of cnorm.__all__, or a dotted cnorm.torch name."""
    import importlib

    if "." not in name:
        return getattr(cnorm, name)
    module, attr = name.rsplit(".", 1)
    return getattr(importlib.import_module(module), attr)


def _sections(obj):
    """numpydoc's parse of a docstring: {section: content}."""
    docscrape = pytest.importorskip("numpydoc.docscrape")
    return docscrape.ClassDoc(obj) if isinstance(obj, type) else docscrape.FunctionDoc(obj)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_a_numpydoc_docstring(name):
    """Parameters (for whatever takes any), Returns (functions), Raises (whatever takes
    arguments) and Examples, parsed by numpydoc itself; every documented parameter exists."""
    import inspect

    obj = _public(name)
    doc = _sections(obj)
    fn = obj.__init__ if isinstance(obj, type) else obj
    params = [p for p in inspect.signature(fn).parameters if p != "self"]
    assert doc["Summary"], name
    assert "Examples" in doc and ">>>" in "\n".join(doc["Examples"]), name
    if params:
        documented = {n.strip() for p in doc["Parameters"] for n in p.name.split(",")}
        assert documented, f"{name}: no Parameters section"
        assert documented <= set(params) | {"*args"}, (name, documented - set(params))
        assert doc["Raises"] or name in CANNOT_RAISE, f"{name}: no Raises section"
    if not isinstance(obj, type):
        assert doc["Returns"] or doc["Yields"], f"{name}: no Returns section"


@pytest.mark.parametrize("name", PUBLIC)
def test_the_docstring_examples_run(name):
    """Each public name's Examples, run as doctests (the same as the documentation shows)."""
    import doctest

    obj = _public(name)
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner(verbose=False)
    tests = [t for t in finder.find(obj, name, globs={}) if t.examples]
    assert tests, f"{name} has no examples"
    for t in tests:
        runner.run(t)
    assert runner.failures == 0, f"{name}: {runner.failures} doctest failures (see output)"
