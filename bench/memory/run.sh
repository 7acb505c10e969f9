#!/usr/bin/env bash
# Memory per idle connected device: N devices through iotconn's engine (core.Client, each with its own dispatch
# goroutine, then all on one shared Dispatcher) and N through raw paho, each in a fresh process against one
# hubsim, then the heap profile and the goroutines of each run by function.
# Usage: bench/memory/run.sh [N] (default 2000) -> bench/results/memory.txt
#        bench/memory/run.sh N MODE... -> bench/results/memory-MODE+MODE-N.txt; the AMQP modes: amqp (one
#        connection per device) and amqp-pool (up to 995 devices per connection), e.g.
#        bench/memory/run.sh 995 amqp amqp-pool
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000}
modes=(iotconn iotconn-shared paho)
out=bench/results/memory.txt
if [ $# -gt 1 ]; then
	modes=("${@:2}")
	out=bench/results/memory-$(IFS=+; echo "${modes[*]}")-$N.txt
fi
export PATH="/usr/local/go/bin:$PATH"
tmp=$(mktemp -d)
hub_pid=""
cleanup() {
	[ -z "$hub_pid" ] || { kill "$hub_pid" 2>/dev/null && wait "$hub_pid" 2>/dev/null || true; }
	rm -rf "$tmp"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" # one socket per device, and hubsim's side of each in the same machine

go build -trimpath -o "$tmp/memory" ./bench/memory
go build -trimpath -o "$tmp/hubsim" ./hubsim/cmd/iotconn-hubsim
seq -f 'mem-%05g' 1 "$N" >"$tmp/ids"
"$tmp/hubsim" --dir "$tmp/hub" --mqtt 127.0.0.1:0 --amqp 127.0.0.1:0 --control 127.0.0.1:0 --devices-file "$tmp/ids" \
	>"$tmp/hub.log" 2>&1 &
hub_pid=$!
for _ in $(seq 1 600); do # 60 s at most
	grep -q '^hubsim: ready' "$tmp/hub.log" && break
	kill -0 "$hub_pid" 2>/dev/null || { cat "$tmp/hub.log" >&2; exit 1; }
	sleep 0.1
done
grep -q '^hubsim: ready' "$tmp/hub.log" || { echo "hubsim did not start" >&2; exit 1; }
sed -n 's/^hubsim: device mem-[0-9]* //p' "$tmp/hub.log" >"$tmp/devices"
ca=$(sed -n 's/^hubsim: ca //p' "$tmp/hub.log")
amqp_port=$(sed -n 's/^hubsim: amqps .*:\([0-9]*\)$/\1/p' "$tmp/hub.log")
sed "s/\$/;GatewayHostName=localhost:$amqp_port/" "$tmp/devices" >"$tmp/devices-amqp"

for mode in "${modes[@]}"; do
	echo "==> $N devices, $mode"
	devices=$tmp/devices
	[[ $mode != amqp* ]] || devices=$tmp/devices-amqp
	"$tmp/memory" -mode "$mode" -devices "$devices" -ca "$ca" -heapprofile "$tmp/$mode.heap" \
		-goroutines "$tmp/$mode.goroutines" | tee "$tmp/$mode.txt"
done
{
	echo "# memory per idle connected device: $N devices in one process, connected to one hubsim, after GC"
	echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "# $(nproc) CPUs, Linux $(uname -r), $(go version | cut -d' ' -f3); reproduce: bash bench/memory/run.sh $N"
	echo "# rss: the resident set's growth; heap: Go heap in use; stack: goroutine stacks; other_go: the runtime's"
	echo "# own (spans, GC metadata); all per device, KiB. iotconn: core.Client with defaults (thread dispatch);"
	echo "# iotconn-shared: the same on one core.Dispatcher (Options.Dispatcher; iotconn_dispatcher_t in C)."
	echo "# amqp: core.Client over AMQP, one connection per device; amqp-pool: the same with AMQPPool 995 (up to"
	echo "# 995 devices on one connection, one CBS link per connection, one session per device)."
	for mode in "${modes[@]}"; do cat "$tmp/$mode.txt"; done
	for mode in "${modes[@]}"; do
		echo
		echo "# $mode: heap in use by allocating function (go tool pprof -top -inuse_space), top 15"
		go tool pprof -top -inuse_space -nodecount 15 "$tmp/memory" "$tmp/$mode.heap" 2>/dev/null | sed -n '/flat%/,$p'
		echo "# $mode: goroutines by the function that started them (all, for $N devices)"
		sed -n 's/^created by \([^ ]*\).*/\1/p' "$tmp/$mode.goroutines" | sort | uniq -c | sort -rn | head -20
	done
} >"$out"
cat "$out"
