#!/usr/bin/env bash
# The fleet bench in small, as a test (about 10 s after the build): N=50 devices, hub-down, the default policy, no plot. Checks
# that the bench measures what it claims, not how fast the engine is: every device settled and reconnected, the
# front counted exactly the attempts the devices made, attempts were refused while the front was down, and the
# per-bucket series adds up. Writes build/fleet-smoke/ only (never bench/results/ or docs/).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${BUILD:-$PWD/build}/fleet-smoke
FLEET_N=50 FLEET_SCENARIOS=hub-down FLEET_POLICIES=default FLEET_WORK="$work" FLEET_OUT="$work/fleet.json" \
	bash bench/fleet/run.sh --no-plot
python3 - "$work/fleet.json" <<'PY'
import json, sys

report = json.load(open(sys.argv[1]))
r = report["scenarios"]["hub-down"]["default"]
checks = {
    "every device settled and reconnected": r["settled"] and r["devices_reconnected"] == 50 and r["gave_up"] == 0,
    "front count == attempts the devices made": r["attempts_total"] == r["attempts_seen_by_devices"] > 0,
    "attempts refused while down, >= 2 per device": r["attempts_reset_down"] > 0
    and r["attempts_per_device"]["mean"] >= 2,
    "buckets add up to the attempts": sum(r["buckets_from_fault"]) == r["attempts_total"]
    and r["peak_attempts_per_s"] >= max(r["buckets_from_fault"]),
}
for name, ok in checks.items():
    print(("ok     " if ok else "FAILED ") + name)
failed = sum(not ok for ok in checks.values())
print(f"fleet smoke: {len(checks) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
