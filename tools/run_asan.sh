#!/bin/sh
# Run the test suite on kernels built with AddressSanitizer (out-of-bounds reads and writes,
# use after free, double free in the C code). Builds in place, then rebuilds normally.
#   sh tools/run_asan.sh [pytest args, default: tests]
# Leak detection is off: CPython itself keeps memory alive at exit by design.
set -e
cd "$(dirname "$0")/.."
CNORM_SANITIZE=address python setup.py build_ext --inplace --force -j 3 >/dev/null
[ $# -eq 0 ] && set -- tests
status=0
LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    PYTHONPATH=. python -m pytest -q -p no:cacheprovider "$@" || status=$?
python setup.py build_ext --inplace --force -j 3 >/dev/null
exit $status
