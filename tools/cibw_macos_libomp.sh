#!/usr/bin/env bash
# cibuildwheel's before-all on macOS (pyproject.toml): Apple's clang compiles OpenMP with
# -Xpreprocessor -fopenmp (setup.py probes for it) but ships no runtime; Homebrew's libomp is
# the one linked, and delocate then copies it into the wheel. Homebrew builds it for the
# runner's macOS, so the wheel's MACOSX_DEPLOYMENT_TARGET is that version (pyproject.toml).
set -euxo pipefail
brew install libomp
ls "$(brew --prefix libomp)/lib"
