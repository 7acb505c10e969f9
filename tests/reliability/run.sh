#!/usr/bin/env bash
# The reliability suite: unit tests of the matrix's checks, then the fault matrix against hubsim and mosquitto and
# the durable-queue crash test, through the C ABI (tests/reliability/device.c). Run from anywhere after ./build.sh:
#   bash tests/reliability/run.sh            results in build/reliability/ (results.json, reliability.md, logs/)
#   bash tests/reliability/run.sh --report   the same, then rewrites docs/reliability.md from the results
# Installs what is missing (mosquitto, openssl: apt), so a second run installs nothing. Exits non-zero if any row
# fails its checks.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
BUILD=${BUILD:-build}
OUT=$BUILD/reliability

apt_install_missing mosquitto openssl
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
for f in "$BUILD/bin/iotconn-hubsim" "$BUILD/reliability/device"; do
	[ -x "$f" ] || { echo "$f is not built: run ./build.sh first" >&2; exit 1; }
done

export PYTHONDONTWRITEBYTECODE=1
python3 -m unittest -q tests/reliability/test_analyze.py # the checks themselves catch what they claim to
status=0
python3 tests/reliability/matrix.py --build "$BUILD" --out "$OUT" || status=$?
python3 tests/reliability/report.py "$OUT/results.json" >"$OUT/reliability.md"
if [ "${1:-}" = --report ]; then
	cp "$OUT/reliability.md" docs/reliability.md
	echo "wrote docs/reliability.md"
fi
exit "$status"
