"""Lints of the test suite itself (issue 20, item 11): an assert whose condition is a
conditional expression (``assert a < b if c else d``) asserts ``d`` itself when ``c`` is false,
a truthy constant that can never fail."""
import ast
import os

from cnorm.testing.tree import tree_path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)  # beside the tests when tree_path finds the folder


def conditional_asserts(source, name="<test>"):
    """(file, line) of each ``assert`` whose test is an unparenthesized-looking IfExp."""
    tree = ast.parse(source, name)
    return [(name, node.lineno) for node in ast.walk(tree)
            if isinstance(node, ast.Assert) and isinstance(node.test, ast.IfExp)]


def test_the_lint_finds_a_conditional_assert():
    assert conditional_asserts("assert err < 1e-6 if f32 else 1e-13\n") == [("<test>", 1)]
    assert conditional_asserts("assert err < (1e-6 if f32 else 1e-13)\n") == []


def test_no_assert_is_a_conditional_expression():
    found = []
    for folder in ("tests", "bench"):
        for fname in sorted(os.listdir(tree_path(__file__, folder))):
            if fname.endswith(".py"):
                path = os.path.join(ROOT, folder, fname)
                with open(path) as f:
                    found += conditional_asserts(f.read(), path)
    assert not found, found
