#!/usr/bin/env bash
# make-sdist.sh OUTDIR: builds the sdist iotconn-VERSION.tar.gz into OUTDIR and prints its path. Besides the Python
# package it carries the library's sources in native/ (the Go module's non-test code with its dependencies
# vendored, include/, cmake/iotconn.map, scripts/build-lib.sh, LICENSE; not the tests' helper packages, named
# *test, which need hubsim), so `pip install iotconn-VERSION.tar.gz`
# builds libiotconn where Go and a C compiler are present, with no network. PYTHON: the interpreter (its
# setuptools must be >= 70.1).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out=$(mkdir -p "$1" && cd "$1" && pwd)
export PATH="/usr/local/go/bin:$PATH"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

(cd "$here" && git ls-files -z -- . ':!:*.sh' | xargs -0 cp --parents -t "$stage")
mkdir "$stage/native"
(cd "$root" && git ls-files -z -- go.mod go.sum capi core include cmake/iotconn.map scripts/build-lib.sh LICENSE \
	':!:*_test.go' ':!:**/testdata/**' ':(exclude,glob)core/**/*test/**' | xargs -0 cp --parents -t "$stage/native")
(cd "$stage/native" && go mod vendor)
(cd "$stage" && "${PYTHON:-python3}" setup.py -q sdist -d "$out" >/dev/null)
ls "$out"/iotconn-*.tar.gz
