"""The source tree beside a test suite. The suite also runs against an installed wheel from a
folder holding only ``tests/`` (.ci/run); a test that reads the tree (docs, examples, the
Cython sources, README) skips there instead of failing."""
import os

import pytest


def tree_path(test_file: str, *parts: str) -> str:
    """The path of ``parts`` in the tree that holds the ``tests/`` folder of ``test_file``;
    skips the calling test (or module, at import) when it is not there."""
    folder = os.path.dirname(os.path.abspath(test_file))
    while os.path.basename(folder) != "tests" and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    path = os.path.join(os.path.dirname(folder), *parts)
    if not os.path.exists(path):
        pytest.skip(f"{os.path.join(*parts)} is not beside the tests (an installed-package run)",
                    allow_module_level=True)
    return path
