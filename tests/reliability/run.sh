#!/usr/bin/env bash
# The reliability suite: unit tests of the matrix's checks, then the fault matrix against hubsim and mosquitto and
# the durable-queue crash test, through the C ABI (tests/reliability/device.c). Run from anywhere after ./build.sh:
#   bash tests/reliability/run.sh            results in build/reliability/ (results.json, reliability.md, logs/)
#   bash tests/reliability/run.sh --report   the same, then rewrites docs/reliability.md from the results
# Installs what is missing (mosquitto, openssl: apt), so a second run installs nothing. Exits non-zero if any row
# fails its checks.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
OUT=$BUILD/reliability

missing=()
for p in mosquitto openssl; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
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
