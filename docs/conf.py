"""Sphinx configuration of cnorm's documentation site: ``sphinx-build -W docs docs/_build``
(the ``docs`` extra installs what it needs). The Markdown pages are read by myst-parser, the
API reference is generated from the numpydoc docstrings, the gallery runs examples/plot_*.py."""
import os

import cnorm

project = "cnorm"
author = "the cnorm developers"
copyright = "the cnorm developers"
release = version = cnorm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json", "auto_examples/*.md5"]
root_doc = "index"

# the API reference: one page per public name, from its numpydoc docstring
autosummary_generate = True
autodoc_typehints = "none"            # numpydoc's Parameters sections say it in words
numpydoc_show_class_members = False   # the class pages list their methods through autosummary
numpydoc_xref_param_type = False
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]   # the long pages start sections at level 2 on purpose

sphinx_gallery_conf = {
    "examples_dirs": os.path.join("..", "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",       # executed; the training scripts are shown, not run
    "ignore_pattern": r"train",         # the training scripts: run them yourself
    "download_all_examples": False,
    "remove_config_comments": True,
    "plot_gallery": "True",
}

html_theme = "pydata_sphinx_theme"
html_title = f"cnorm {version}"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path = []
