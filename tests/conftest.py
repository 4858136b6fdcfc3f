"""Fixtures and markers for the whole suite. Shared helpers live in ``cnorm.testing``, so that
no test module imports this file (and ``--import-mode=importlib`` works)."""
import os

import numpy as np
import pytest

import cnorm

try:  # hypothesis: a quick profile by default, many examples in CI (CI=true)
    from hypothesis import HealthCheck, settings

    for name, examples in (("dev", 150), ("ci", 1000)):
        settings.register_profile(name, max_examples=examples, deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow,
                                                         HealthCheck.data_too_large])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                         "ci" if os.environ.get("CI") else "dev"))
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass


def pytest_configure(config):
    # here, not in pyproject.toml: the suite also runs from a folder holding only tests/
    config.addinivalue_line("markers", "slow: long-running or memory-hungry tests "
                                       "(deselect with -m 'not slow')")
    config.addinivalue_line("markers", "openmp: needs an OpenMP build (skipped on a serial one)")


def pytest_collection_modifyitems(config, items):
    # @pytest.mark.openmp: the test needs threads, so a serial build skips it
    if not cnorm.openmp_enabled():
        skip = pytest.mark.skip(reason="serial build")
        for item in items:
            if "openmp" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def restore_threads():
    n = cnorm.get_num_threads()
    yield
    cnorm.set_num_threads(n)
