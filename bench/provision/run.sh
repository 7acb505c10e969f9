#!/usr/bin/env bash
# bench/provision: N provisioned devices in one process against hubsim's two hubs and DPS (in process): their hub
# goes down and comes back (no registration expected), then they are moved to the other hub (one registration
# each, spread under DPS's quota). Writes bench/results/provision.json and bench/results/provision.png.
#
#   bash bench/provision/run.sh [go run ./bench/provision's flags: -n 1000 -quota 1000 -outage 5s -spread auto]
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
BUILD=${BUILD:-$PWD/build}
out=bench/results/provision.json
ulimit -n "$(ulimit -Hn)" # each device holds a descriptor, and each hub one for it
go run ./bench/provision -out "$out" "$@"
py=$(matplotlib_python "$BUILD")
"$py" bench/provision/plot.py "$out" bench/results/provision.png
echo "results: $out, bench/results/provision.png"
