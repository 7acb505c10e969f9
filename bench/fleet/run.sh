#!/usr/bin/env bash
# bench/fleet: N devices in one process (the C ABI, bench/fleet/driver.c) reconnecting through a counting TCP front
# (bench/fleet/front) before hubsim, per scenario and retry policy. Writes bench/results/fleet.json, a PNG per
# scenario (bench/results/fleet-SCENARIO.png) and the table in docs/fleet.md; raw logs stay in build/fleet/.
#
#   bash bench/fleet/run.sh [--n N] [--rate R] [--scenarios "S..."] [--policies "P..."] [--out FILE] [--no-plot]
#
# or the same through FLEET_N, FLEET_RATE, FLEET_SCENARIOS, FLEET_POLICIES, FLEET_OUT, FLEET_PLOT=0; also
# FLEET_OUTAGE_S (5), FLEET_DROP_S (90), FLEET_DROP_MS (3000), FLEET_WORK (build/fleet). Scenarios:
#   hub-down            every device connected; the front goes down (resets all, then accepts and resets every
#                       attempt) for FLEET_OUTAGE_S seconds, then up
#   hub-down-throttled  the same, then up admitting at most R new connections per second (the rest reset)
#   hub-down-throttled-mqtt
#                       the same, but the front refuses over the rate as IoT Hub does on MQTT: TLS handshake,
#                       CONNECT read, closed without CONNACK (with hubsim's certificate), which devices take for
#                       throttling
#   kill-all            the front stays up and resets every connection at once
#   accept-drop         the front accepts and forwards each connection, but resets it FLEET_DROP_MS after its accept,
#                       for FLEET_DROP_S seconds (every live connection first), then keeps them again
# Policies: the driver's names (default, full, decorrelated, none, custom:MS,MS...), hint: default with the
# fleet hint (reconnect_spread_ms = 1.1 N/R), and hint+budget: the hint and a process admission budget of 0.95 R. Every client is on one shared dispatcher (driver -D). Defaults:
# N=2000, R=100, every scenario, policies "default full decorrelated hint hint+budget": about 21 minutes on 2 cores. File descriptors: the front holds two per device, so the
# limit is raised to at least 2N + 256 (hard limit permitting).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${BUILD:-$ROOT/build}
N=${FLEET_N:-2000}
RATE=${FLEET_RATE:-100}
OUTAGE_S=${FLEET_OUTAGE_S:-5}
# D must outlast the TLS handshake and CONNACK under load, or the devices never see the link up: the scenario is
# then a hub that refuses, not one that accepts and drops (analyze.py reports the share that saw it up). At
# N = 2 000 on 2 cores, 1 s let only 2-66 % of rounds 1-4 connect (the whole fleet handshakes within a second or
# two), 2 s left 0.1 s to spare, 3 s every round 2.4 s.
DROP_MS=${FLEET_DROP_MS:-3000}
DROP_S=${FLEET_DROP_S:-90}
SCENARIOS=${FLEET_SCENARIOS:-hub-down hub-down-throttled hub-down-throttled-mqtt kill-all accept-drop}
POLICIES=${FLEET_POLICIES:-default full decorrelated hint hint+budget}
OUT=${FLEET_OUT:-bench/results/fleet.json}
PLOT=${FLEET_PLOT:-1}
WORK=${FLEET_WORK:-$BUILD/fleet}
while (($#)); do
	case $1 in
	--n) N=$2; shift 2 ;;
	--rate) RATE=$2; shift 2 ;;
	--scenarios) SCENARIOS=$2; shift 2 ;;
	--policies) POLICIES=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--no-plot) PLOT=0; shift ;;
	*) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
	esac
done
for s in $SCENARIOS; do
	case $s in hub-down | hub-down-throttled | hub-down-throttled-mqtt | kill-all | accept-drop) ;; *) echo "unknown scenario '$s'" >&2; exit 2 ;; esac
done
[[ $N =~ ^[1-9][0-9]*$ && $RATE =~ ^[1-9][0-9]*$ && $DROP_MS =~ ^[1-9][0-9]*$ && $DROP_S =~ ^[1-9][0-9]*$ ]] ||
	{ echo "N, R, FLEET_DROP_MS and FLEET_DROP_S must be positive whole numbers" >&2; exit 2; }
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
export PATH="/usr/local/go/bin:$PATH"
say() { printf '\n==> %s\n' "$*"; }

say "building (./build.sh: libiotconn, hubsim, the driver) and the front"
./build.sh >/dev/null
go build -trimpath -o "$BUILD/bin/fleet-front" ./bench/fleet/front

# Each process holds about one descriptor per device (the front two), plus its own few.
need=$((2 * N + 256))
if (($(ulimit -Hn) < need)); then
	ulimit -Hn "$need" 2>/dev/null || { echo "need $need file descriptors; the hard limit is $(ulimit -Hn)" >&2; exit 1; }
fi
(($(ulimit -n) >= need)) || ulimit -n "$need"
say "N=$N R=$RATE/s outage=${OUTAGE_S}s drop=${DROP_MS}ms for ${DROP_S}s scenarios: $SCENARIOS; policies: $POLICIES; ulimit -n $(ulimit -n)"

rm -rf "$WORK"
mkdir -p "$WORK"
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg) # other work on the machine skews timings: recorded with the results
pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT

# start NAME READY_PATTERN CMD...: start_logged (scripts/lib.sh) with its files in $WORK.
start() { start_logged "$WORK" "$@"; }

# stop PID SECONDS: SIGTERM, then waits for its exit; SIGKILL once SECONDS have passed.
stop() {
	local pid=$1 watchdog
	kill "$pid" 2>/dev/null || return 0
	# The watchdog takes its sleep down with it when it is stopped, so no timer outlives the script.
	(
		trap 'kill "$timer" 2>/dev/null; exit 0' TERM
		sleep "$2" &
		timer=$!
		wait "$timer"
		kill -KILL "$pid" 2>/dev/null
	) >/dev/null 2>&1 &
	watchdog=$!
	wait "$pid" 2>/dev/null || true
	kill "$watchdog" 2>/dev/null && wait "$watchdog" 2>/dev/null || true
}

post() { curl -fsS --max-time 10 -X POST "$1" >/dev/null; }

say "starting hubsim and registering $N devices in one call"
start hubsim "hubsim: ready" "$BUILD/bin/iotconn-hubsim" --dir "$WORK/hub" --mqtt 127.0.0.1:0 --control 127.0.0.1:0
hub_pid=$started_pid
hub_addr=$(sed -n 's/^hubsim: mqtts //p' <<<"$started_lines")
hub_ctl=$(sed -n 's/^hubsim: control //p' <<<"$started_lines")
hub_ca=$(sed -n 's/^hubsim: ca //p' <<<"$started_lines")
seq -f 'fleet-%05g' 0 $((N - 1)) | jq -R '{id: .}' | jq -s -c . >"$WORK/register.json"
reg_start=$(date +%s%N)
curl -fsS --max-time 60 -X POST "$hub_ctl/devices" --data-binary "@$WORK/register.json" |
	jq -r '.[] | "\(.id) \(.primaryKey)"' >"$WORK/devices.txt"
reg_ms=$((($(date +%s%N) - reg_start) / 1000000))
(($(wc -l <"$WORK/devices.txt") == N)) || { echo "hubsim registered $(wc -l <"$WORK/devices.txt") of $N" >&2; exit 1; }
echo "registered $N devices in $reg_ms ms"

# expect FD PATTERN SECONDS COPY: reads lines from FD, appending each to COPY, until one matches PATTERN (an
# extended regex); fails after SECONDS or at EOF. Sets $expected to the matching line.
expect() {
	local fd=$1 pattern=$2 deadline=$((SECONDS + $3)) copy=$4 line
	while ((SECONDS < deadline)) && IFS= read -r -t $((deadline - SECONDS)) line <&"$fd"; do
		echo "$line" >>"$copy"
		if [[ $line =~ $pattern ]]; then
			expected=$line
			return 0
		fi
	done
	echo "no line matching '$pattern' within $3 s; see $copy" >&2
	return 1
}

connect_s=$((60 + N / 20))
settle_s=$((120 + 3 * N / RATE))
failed_runs=()
runs=()

# run_one SCENARIO POLICY: one fresh front and driver; the raw logs in $WORK/SCENARIO-POLICY/.
run_one() {
	local scenario=$1 policy=$2 dir="$WORK/$1-$2" front_pid front_ctl front_addr driver_pid t0 t1 hub_control_ms line
	mkdir -p "$dir"
	say "$scenario, policy $policy: N=$N"
	start "front-$scenario-$policy" "front: ready" "$BUILD/bin/fleet-front" -upstream "$hub_addr" -log "$dir/front.log" \
		-cert "$WORK/hub/server.pem" -key "$WORK/hub/server-key.pem"
	front_pid=$started_pid
	front_ctl=$(sed -n 's/^front: control //p' <<<"$started_lines")
	front_addr=$(sed -n 's/^front: listen //p' <<<"$started_lines")

	mkfifo "$dir/cmd" "$dir/out"
	local as=(-p "$policy")
	case $policy in
	hint) as=(-p default -s $((N * 1100 / RATE))) ;; # 1.1 N/R seconds, in ms
	# a gateway keeps its budget a little under the hub's rate: exactly at it, a burst of one over any second
	# gets a connect refused, and its device waits the window again
	hint+budget) as=(-p default -s $((N * 1100 / RATE)) -A "$((RATE * 95 / 100))") ;;
	esac
	"$BUILD/iotconn_fleet" -n "$N" -d "$WORK/devices.txt" -H "localhost:${front_addr##*:}" -c "$hub_ca" \
		"${as[@]}" -D -o "$dir/events.log" <"$dir/cmd" >"$dir/out" 2>"$dir/driver.err" &
	driver_pid=$!
	pids+=("$driver_pid")
	exec 6>"$dir/cmd" 7<"$dir/out" # in the driver's order: its stdin first, then its stdout
	: >"$dir/driver.out"
	expect 7 '^fleet: memory' "$connect_s" "$dir/driver.out" || { cat "$dir/driver.err" >&2; return 1; }
	grep '^fleet: ' "$dir/driver.out"
	echo arm >&6
	expect 7 '^fleet: armed' 10 "$dir/driver.out"

	t0=$(date +%s%N)
	case $scenario in
	hub-down | hub-down-throttled | hub-down-throttled-mqtt)
		post "$front_ctl/down"
		sleep "$OUTAGE_S" # the scenario's outage itself
		case $scenario in
		hub-down) post "$front_ctl/up" ;;
		hub-down-throttled) post "$front_ctl/up?rate=$RATE" ;;
		*) post "$front_ctl/up?rate=$RATE&refuse=mqtt" ;;
		esac
		;;
	kill-all) post "$front_ctl/kill-all" ;;
	accept-drop)
		post "$front_ctl/up?drop_ms=$DROP_MS"
		sleep "$DROP_S" # the scenario's dropping phase itself
		post "$front_ctl/up"
		;;
	esac
	# hubsim's control API while the fleet storms back: one registry read.
	hub_control_ms=$(curl -fsS --max-time 30 -o /dev/null -w '%{time_total}' "$hub_ctl/devices/fleet-00000" |
		awk '{ printf "%.1f", $1 * 1000 }')
	echo "wait $((settle_s * 1000))" >&6
	expect 7 '^fleet: (settled|timeout)' $((settle_s + 10)) "$dir/driver.out"
	t1=$(date +%s%N)
	echo "$expected (the fault and the reconnects took $(((t1 - t0) / 1000000)) ms; hubsim answered a GET in $hub_control_ms ms meanwhile)"
	[[ $expected == *settled* ]] || failed_runs+=("$scenario/$policy")

	echo quit >&6
	exec 6>&-
	while IFS= read -r -t 10 line <&7; do # until the driver exits and closes its end (10 s at most per line)
		echo "$line" >>"$dir/driver.out"
	done
	exec 7<&-
	stop "$driver_pid" 10
	stop "$front_pid" 10
	printf 'scenario=%s\npolicy=%s\nn=%s\nrate=%s\noutage_s=%s\ndrop_ms=%s\ndrop_s=%s\nhub_control_ms=%s\n' "$scenario" \
		"$policy" "$N" "$RATE" "$OUTAGE_S" "$DROP_MS" "$DROP_S" "$hub_control_ms" >"$dir/run.env"
	runs+=("$dir")
}

for scenario in $SCENARIOS; do
	for policy in $POLICIES; do
		run_one "$scenario" "$policy"
	done
done
hub_rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$hub_pid/status")
stop "$hub_pid" 10

say "analysis"
plot_args=()
if [ "$PLOT" = 1 ]; then
	py=$(matplotlib_python "$BUILD")
	plot_args=(--plots "$(dirname "$OUT")")
else
	py=python3
fi
doc_args=()
[ "$OUT" != bench/results/fleet.json ] || doc_args=(--doc docs/fleet.md)
mkdir -p "$(dirname "$OUT")"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain -- core capi include bench/fleet 2>/dev/null)" ] || commit+=" + uncommitted changes"
"$py" bench/fleet/analyze.py --out "$OUT" "${plot_args[@]}" "${doc_args[@]}" \
	--header "title=bench/fleet: N devices in one process reconnecting through a counting front" \
	--header "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" --header "commit=$commit" \
	--header "machine=$(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), Linux $(uname -r), $(go version | cut -d' ' -f3)" \
	--header "command=FLEET_N=$N FLEET_RATE=$RATE FLEET_SCENARIOS='$SCENARIOS' FLEET_POLICIES='$POLICIES' FLEET_DROP_MS=$DROP_MS FLEET_DROP_S=$DROP_S bash bench/fleet/run.sh" \
	--header "hubsim_register_ms=$reg_ms" --header "hubsim_rss_kb_at_end=$hub_rss_kb" \
	--header "loadavg_at_start=$load_at_start" --header "loadavg_at_end=$(cut -d' ' -f1-3 /proc/loadavg)" \
	"${runs[@]}"
say "results: $OUT"
((${#failed_runs[@]} == 0)) || { echo "did not settle in ${settle_s}s: ${failed_runs[*]}" >&2; exit 1; }
