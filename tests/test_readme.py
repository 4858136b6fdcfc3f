"""The README's example runs as written."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(capsys):
    if not README.exists():
        pytest.skip("README.md not next to the tests")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        assert len(code.strip().splitlines()) <= 12
        exec(compile(code, "README.md", "exec"), {})
    assert "BatchNorm2d(16" in capsys.readouterr().out
