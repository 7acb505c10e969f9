#!/usr/bin/env bash
# Cost of one Send in memory and durable mode (core.BenchmarkQueueSend); results: bench/results/queue.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
OUT=bench/results/queue.txt
N=${BENCH_N:-2000}
COUNT=${BENCH_COUNT:-5}
dir=$(mktemp -d "$PWD/build/queue-bench.XXXXXX") # on the project's disk, not a tmpfs, so fsync is real
trap 'rm -rf "$dir"' EXIT
raw=$(TMPDIR=$dir go test -run - -bench 'QueueSend' -benchtime "${N}x" -count "$COUNT" ./core/)
{
	echo "# iotconn outbound queue: cost of one Send to its caller (client not connected: the queue alone)"
	echo "# $(date -u +%FT%TZ), $(nproc) CPUs, $(go version | cut -d' ' -f3), $(df -T "$dir" | awk 'NR==2 {print $2}') on $(df "$dir" | awk 'NR==2 {print $1}')"
	echo "# 256-byte payload, $N sends per run, $COUNT runs; ns/op = wall time of all sends / N (medians below)."
	echo "# durable: Send returns after bbolt committed and fsynced the message; concurrent Sends share a commit."
	echo
	runs=$(echo "$raw" | awk '/^BenchmarkQueueSend\// { name = $1; sub(/^BenchmarkQueueSend\//, "", name); sub(/-[0-9]+$/, "", name); print name, $3 }')
	for name in $(echo "$runs" | cut -d' ' -f1 | sort -u); do
		values=$(echo "$runs" | awk -v n="$name" '$1 == n { print $2 }' | sort -n)
		median=$(echo "$values" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
		printf '%-20s median_ns_per_send=%s runs: %s\n' "$name" "$median" "$(echo $values)"
	done
} >"$OUT"
cat "$OUT"
