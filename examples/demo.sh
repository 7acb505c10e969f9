#!/usr/bin/env bash
# The device demo (./build.sh demo): hubsim, the C telemetry example, a TCP kill and a 4 s hub outage, each
# followed by a desired-properties change made while the device is away (it arrives once the device is back) and
# a direct method call answered after the reconnect; then the status transitions the device saw, its reported
# property in the hub's twin, and a delivery summary computed from the hub's own record.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
HUBSIM=$BUILD/bin/iotconn-hubsim
DEVICE_APP=$BUILD/telemetry
COUNT=${DEMO_COUNT:-200}
INTERVAL_MS=${DEMO_INTERVAL_MS:-100}
DEVICE=demo-device

say() { printf '\n==> %s\n' "$*"; }
tmp=$(mktemp -d)
hub_pid="" dev_pid="" drain_pid=""
cleanup() {
	for pid in $dev_pid $hub_pid; do
		kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	done
	[ -z "$drain_pid" ] || wait "$drain_pid" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

say "starting hubsim (the local IoT Hub emulator)"
mkfifo "$tmp/hub.out"
"$HUBSIM" --dir "$tmp/hub" --mqtt 127.0.0.1:0 --control 127.0.0.1:0 --device "$DEVICE" >"$tmp/hub.out" &
hub_pid=$!
exec 3<"$tmp/hub.out"
control="" ca="" conn=""
while IFS= read -r -t 60 line <&3; do
	echo "  $line"
	case $line in
	"hubsim: control "*) control=${line#hubsim: control } ;;
	"hubsim: ca "*) ca=${line#hubsim: ca } ;;
	"hubsim: device $DEVICE "*) conn=${line#hubsim: device "$DEVICE" } ;;
	"hubsim: ready") break ;;
	esac
done
[ -n "$control" ] && [ -n "$ca" ] && [ -n "$conn" ] || { echo "hubsim did not start" >&2; exit 1; }
# Keep reading hubsim's log (it blocks on a full pipe otherwise); the reader ends when hubsim exits.
sed -u 's/^/  /' <&3 >"$tmp/hub.log" &
drain_pid=$!
exec 3<&-

# wait_for PATTERN: until the device app printed a line matching PATTERN (bounded: 120 s, or the app exiting).
wait_for() {
	grep -q -m1 -- "$1" < <(timeout 120 tail --pid="$dev_pid" -n +1 -f "$tmp/device.log") ||
		{ echo "the device never printed '$1'" >&2; exit 1; }
}
fault() {
	say "injecting fault: $1"
	curl -fsS -X POST -H 'Content-Type: application/json' -d "$1" "$control/faults" >/dev/null
}
# desired JSON: patches the device's desired properties through the control API; prints the new $version.
desired() {
	curl -fsS -X PATCH -H 'Content-Type: application/json' -d "$1" "$control/devices/$DEVICE/twin/desired" |
		jq .desired.'"$version"'
}
# across_fault JSON: a desired change made right after a fault, seen by the device once it is back (the engine
# GETs the twin after every reconnect), then a method call on the reconnected device.
across_fault() {
	local version
	version=$(desired "$1")
	say "desired properties changed right after the fault: $1 (version $version)"
	wait_for "^desired: version=$version "
	say "calling the direct method 'blink' on the reconnected device"
	curl -fsS -X POST -H 'Content-Type: application/json' -d '{"times":2}' \
		"$control/devices/$DEVICE/methods/blink?timeout=30" | sed 's/^/  answer: /'
}

say "starting the device app: $COUNT messages, one every $INTERVAL_MS ms"
: >"$tmp/device.log"
"$DEVICE_APP" "$conn" "$ca" "$COUNT" "$INTERVAL_MS" > >(tee -a "$tmp/device.log" | grep -E '^(status|failed|client|desired|reported|method)') 2>&1 &
dev_pid=$!

wait_for "^sent: id=[0-9]* telemetry-$((COUNT / 10))$"
fault "{\"kind\":\"kill-tcp\",\"device\":\"$DEVICE\"}"
across_fault '{"mode":"eco"}'
wait_for "^sent: id=[0-9]* telemetry-$((COUNT / 4))$"
fault '{"kind":"hub-down","seconds":4}'
across_fault '{"mode":"turbo","interval_ms":100}'

app_status=0
wait "$dev_pid" || app_status=$?
dev_pid=""

say "status transitions the device saw"
grep '^status:' "$tmp/device.log" | sed 's/^status: /  /'

say "twin updates and method calls the device saw"
grep -E '^(desired|reported|method):' "$tmp/device.log" | sed 's/^/  /'
echo "  the hub's twin, reported: $(curl -fsS "$control/devices/$DEVICE/twin" | jq -c .reported)"

say "summary (from the hub's record: GET /devices/$DEVICE/messages, distinct message ids)"
grep -o 'sent: id=[0-9]* telemetry-[0-9]*' "$tmp/device.log" | awk '{print $3}' | sort -u >"$tmp/sent.ids"
curl -fsS "$control/devices/$DEVICE/messages" | jq -r '.[].messageId' | sort -u >"$tmp/hub.ids"
sent=$(wc -l <"$tmp/sent.ids")
delivered=$(comm -12 "$tmp/sent.ids" "$tmp/hub.ids" | wc -l)
lost=$(comm -23 "$tmp/sent.ids" "$tmp/hub.ids" | wc -l)
records=$(curl -fsS "$control/devices/$DEVICE/messages" | jq length)
connections=$(curl -fsS "$control/devices/$DEVICE" | jq .connections)
echo "  hub: $records telemetry records (duplicates from at-least-once resends included), $connections connections"
echo "sent=$sent delivered=$delivered lost=$lost"
[ "$lost" -eq 0 ] && [ "$sent" -eq "$COUNT" ] && [ "$app_status" -eq 0 ]
