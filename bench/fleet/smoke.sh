#!/usr/bin/env bash
# The fleet bench in small, as a test (about 45 s after the build): N=50 devices, the default policy, no plot,
# hub-down and accept-drop. Checks that the bench measures what it claims, not how fast the engine is: every device
# settled and reconnected, the front counted exactly the attempts the devices made, attempts were refused while the
# front was down, and the per-bucket series adds up; and that a hub that accepts and drops every connection is
# retried at the policy's capped delays, not at the 1 s guard's pace. Writes build/fleet-smoke/ only (never
# bench/results/ or docs/).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${BUILD:-$PWD/build}/fleet-smoke
# accept-drop in small: 50 handshakes take a tenth of the 500 ms a link stays up. The check looks at the last 10 s
# of 25: the default policy's first seven delays add up to about 10 s (15.3 s at most), so by then nearly every
# device waits 4-10 s between attempts (the rest 1.3-7.7 s), about 8/min against the cap's bound of
# 60 / (4 + 0.5) = 13.3; a back-off that started over at each connect would make about 90.
FLEET_N=50 FLEET_SCENARIOS="hub-down accept-drop" FLEET_POLICIES=default FLEET_DROP_MS=500 FLEET_DROP_S=25 \
	FLEET_WORK="$work" FLEET_OUT="$work/fleet.json" bash bench/fleet/run.sh --no-plot
python3 - "$work/fleet.json" <<'PY'
import json, sys

report = json.load(open(sys.argv[1]))
r = report["scenarios"]["hub-down"]["default"]
d = report["scenarios"]["accept-drop"]["default"]
drop = d["accept_drop"]
# the last 10 s of the drop phase, in the front's 100 ms buckets
steady = d["buckets_from_fault"][int(drop["phase_ms"] // 100) - 100:int(drop["phase_ms"] // 100)]
per_min = sum(steady) / 50 * 6
checks = {
    "every device settled and reconnected": r["settled"] and r["devices_reconnected"] == 50 and r["gave_up"] == 0,
    "front count == attempts the devices made": r["attempts_total"] == r["attempts_seen_by_devices"] > 0,
    "attempts refused while down, >= 2 per device": r["attempts_reset_down"] > 0
    and r["attempts_per_device"]["mean"] >= 2,
    "buckets add up to the attempts": sum(r["buckets_from_fault"]) == r["attempts_total"]
    and r["peak_attempts_per_s"] >= max(r["buckets_from_fault"]),
    "accept-drop: every device back, its links up before the drops": d["settled"] and d["devices_reconnected"] == 50
    and drop["failures_seen_up_share"] >= 0.95,
    f"accept-drop: {per_min:.1f} attempts/device/min over the last 10 s, under the cap's "
    f"{drop['cap_bound_per_min']} (the guard's: {drop['guard_bound_per_min']:g})":
    0 < per_min <= drop["cap_bound_per_min"],
}
for name, ok in checks.items():
    print(("ok     " if ok else "FAILED ") + name)
failed = sum(not ok for ok in checks.values())
print(f"fleet smoke: {len(checks) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
