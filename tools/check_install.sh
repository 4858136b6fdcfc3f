#!/usr/bin/env bash
# cnorm as users install it (.ci/run; issue 23). Builds the sdist and, from it, the wheel;
# repairs the wheel into a manylinux one with the OpenMP runtime inside; installs it into a
# fresh virtual environment whose PATH has no compiler (and CC=false, binaries only) and runs
# the whole test suite there, from a folder holding only tests/; installs the sdist into a
# second fresh environment and runs the suite from the unpacked sdist (its cnorm/ source folder
# removed, so only the installed package can be imported); then, on every other CPython that
# pyenv has (PYTHONS), builds the sdist for the baseline target alone and runs the tests of the
# layers, output recycling, errors and determinism. Prints the sizes and times it measured.
#   tools/check_install.sh [wheel] [sdist] [pythons]   (default: all three parts)
#   DIST=folder tools/check_install.sh ...  tests the sdist and wheel of an earlier build
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=${*:-wheel sdist pythons}
PYTHONS=${PYTHONS:-"3.10 3.12 3.13"}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cnorm-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# the test extra of pyproject.toml, read once (tomllib: this script's Python is 3.11+)
TEST_DEPS=$(python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))
["project"]["optional-dependencies"]["test"]))')
SUBSET="tests/nn tests/kernels/test_determinism.py"  # layers, recycling, errors, determinism
# a run that sees only the venv: no compiler on PATH, no source tree on sys.path
clean() { env -i HOME="$HOME" TMPDIR="${TMPDIR:-/tmp}" PATH="$1/bin" CC=false CXX=false \
          HYPOTHESIS_PROFILE=dev PIP_DISABLE_PIP_VERSION_CHECK=1 "${@:2}"; }
installed_from() {  # fail unless cnorm comes from the environment's site-packages
  cd "$WORK" && clean "$1" python -c 'import sys, cnorm; assert cnorm.__file__.startswith(sys.prefix), cnorm.__file__
print("cnorm", cnorm.__version__, "from", cnorm.__file__, cnorm.show_config(False)["simd_available"])'
  cd - > /dev/null
}

t0=$SECONDS
if [[ -n ${DIST:-} ]]; then  # a folder of an earlier build's sdist and wheel (to re-test)
  cp -r "$DIST" "$WORK/dist"
else
  python -m build --outdir "$WORK/dist" . > "$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
  echo "== sdist and the wheel from it: $((SECONDS - t0)) s"
fi
auditwheel repair --wheel-dir "$WORK/wheelhouse" "$WORK"/dist/*.whl
WHEEL=$(ls "$WORK"/wheelhouse/*.whl)
SDIST=$(ls "$WORK"/dist/*.tar.gz)
ls -l "$WORK"/dist "$WORK"/wheelhouse
python -m zipfile -l "$WHEEL" | grep -E "\.so|libgomp" || true

if [[ $PARTS == *wheel* ]]; then
  python -m venv "$WORK/wheel-env"
  t0=$SECONDS
  clean "$WORK/wheel-env" pip install -q --only-binary=:all: "$WHEEL"
  echo "== pip install of the repaired wheel into a fresh venv: $((SECONDS - t0)) s"
  installed_from "$WORK/wheel-env"
  # shellcheck disable=SC2086
  clean "$WORK/wheel-env" pip install -q --only-binary=:all: $TEST_DEPS
  mkdir "$WORK/wheel-run" && cp -r tests "$WORK/wheel-run/"
  (cd "$WORK/wheel-run" && clean "$WORK/wheel-env" python -m pytest tests -q -rs -p no:cacheprovider)
fi

if [[ $PARTS == *sdist* ]]; then
  python -m venv "$WORK/sdist-env"
  # shellcheck disable=SC2086
  clean "$WORK/sdist-env" pip install -q --only-binary=:all: $TEST_DEPS
  t0=$SECONDS
  env PIP_DISABLE_PIP_VERSION_CHECK=1 "$WORK/sdist-env/bin/pip" install -q --no-cache-dir "$SDIST"
  echo "== pip install of the sdist (a build from source on $(nproc) cores): $((SECONDS - t0)) s"
  installed_from "$WORK/sdist-env"
  mkdir "$WORK/sdist-run" && tar xzf "$SDIST" -C "$WORK/sdist-run"
  SRC=$(ls -d "$WORK"/sdist-run/cnorm-*)
  rm -rf "$SRC/cnorm"
  (cd "$SRC" && clean "$WORK/sdist-env" python -m pytest tests -q -rs -p no:cacheprovider)
fi

if [[ $PARTS == *pythons* ]]; then
  for v in $PYTHONS; do
    py=$(ls -d "$(pyenv root)"/versions/"$v".*/bin/python3 2>/dev/null | sort -V | tail -1)
    [[ -x $py ]] || { echo "CPython $v is not installed under pyenv ($(pyenv root))"; exit 1; }
    "$py" -m venv "$WORK/py$v"
    t0=$SECONDS
    env CNORM_TARGETS=baseline PIP_DISABLE_PIP_VERSION_CHECK=1 \
      "$WORK/py$v/bin/pip" install -q --no-cache-dir "$SDIST"
    echo "== CPython $v: baseline build from the sdist: $((SECONDS - t0)) s"
    clean "$WORK/py$v" pip install -q --only-binary=:all: pytest hypothesis threadpoolctl \
      "dask[array]"
    installed_from "$WORK/py$v"
    mkdir "$WORK/run$v" && cp -r tests "$WORK/run$v/"
    # shellcheck disable=SC2086
    (cd "$WORK/run$v" && clean "$WORK/py$v" python -m pytest $SUBSET -q -rs -p no:cacheprovider)
  done
fi
