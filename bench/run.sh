#!/usr/bin/env bash
# Send throughput through the C ABI versus raw paho.mqtt.golang (./build.sh bench): QoS 1, 256-byte payloads,
# one connection each, pipelined (send N, then wait for N acks), against the same brokers in the same run:
# hubsim and a local mosquitto with TLS. Several passes of several rounds per client, alternating; medians.
# Results: bench/results/throughput.txt
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${BENCH_N:-20000}
ROUNDS=${BENCH_ROUNDS:-4}
PASSES=${BENCH_PASSES:-3}
OUT=bench/results/throughput.txt
export PATH="/usr/local/go/bin:$PATH"

say() { printf '\n==> %s\n' "$*"; }
tmp=$(mktemp -d)
pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

# start NAME READY_PATTERN CMD...: runs CMD with its output in a FIFO, echoes lines until one matches
# READY_PATTERN (60 s at most), then keeps draining into $tmp/NAME.log. Sets $started_lines to what it read.
start() {
	local name=$1 pattern=$2 line
	shift 2
	mkfifo "$tmp/$name.fifo"
	"$@" >"$tmp/$name.fifo" 2>&1 &
	pids+=($!)
	exec 4<"$tmp/$name.fifo"
	started_lines=""
	while IFS= read -r -t 60 line <&4; do
		started_lines+="$line"$'\n'
		case $line in *$pattern*) break ;; esac
	done
	case $started_lines in *$pattern*) ;; *)
		echo "$name did not start:"$'\n'"$started_lines" >&2
		exit 1
		;;
	esac
	cat <&4 >"$tmp/$name.log" &
	pids+=($!)
	exec 4<&-
}

# median of the rate= (or send_ns=) values in a results file
median() {
	grep -o "$2=[0-9.]*" "$1" | cut -d= -f2 | sort -n |
		awk '{v[NR] = $1} END { if (NR == 0) { print "nan"; exit } m = int((NR + 1) / 2); print v[m] }'
}

say "building the paho baseline"
go build -trimpath -o "$tmp/paho-bench" ./bench/paho

say "starting hubsim"
start hubsim "hubsim: ready" "$BUILD/bin/iotconn-hubsim" --dir "$tmp/hub" --mqtt 127.0.0.1:0 --control 127.0.0.1:0 \
	--device bench-device
hub_ca=$(sed -n 's/^hubsim: ca //p' <<<"$started_lines")
hub_cs=$(sed -n 's/^hubsim: device bench-device //p' <<<"$started_lines")

say "starting mosquitto with TLS on 127.0.0.1 (certificates made here with openssl)"
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
(
	cd "$tmp"
	openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=iotconn-bench-ca -keyout ca-key.pem -out ca.pem 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server-key.pem -out server.csr 2>/dev/null
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext
	openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 -extfile san.ext \
		-out server.pem 2>/dev/null
)
port=""
for p in $(seq 18883 18983); do # the first free port: a refused connect means nothing listens there
	if ! (: >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		port=$p
		break
	fi
done
[ -n "$port" ] || { echo "no free port for mosquitto" >&2; exit 1; }
cat >"$tmp/mosquitto.conf" <<CONF
user $(id -un)
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
listener $port 127.0.0.1
cafile $tmp/ca.pem
certfile $tmp/server.pem
keyfile $tmp/server-key.pem
allow_anonymous true
CONF
start mosquitto "running" "$mosq" -c "$tmp/mosquitto.conf"
mosq_cs="HostName=localhost:$port;DeviceId=bench-device;SharedAccessKey=YmVuY2gta2V5LWZvci1tb3NxdWl0dG8tYnJva2Vy"

mkdir -p bench/results
{
	echo "# iotconn send throughput: C ABI (iotconn_send) vs raw paho.mqtt.golang"
	echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1))"
	echo "# QoS 1, 256-byte payload, one TLS connection per client, pipelined: send $N then wait for $N acks;"
	echo "# $PASSES alternating passes per client of $ROUNDS rounds (one process and connection each; its first"
	echo "# round is warm-up and dropped); figures are medians of the remaining rounds."
	echo "# send_ns: wall time of the send loop / $N, i.e. the cost of one iotconn_send call while the engine runs."
} >"$tmp/results"

# Each client runs PASSES times, alternating, ROUNDS rounds per process; every process's first round is warm-up.
# Alternating spreads the load of a shared machine over both clients alike.
for broker in hubsim mosquitto; do
	if [ "$broker" = hubsim ]; then cs=$hub_cs ca=$hub_ca; else cs=$mosq_cs ca=$tmp/ca.pem; fi
	: >"$tmp/$broker.abi"
	: >"$tmp/$broker.paho"
	for pass in $(seq 1 "$PASSES"); do
		say "$broker, pass $pass/$PASSES: C ABI, then raw paho ($ROUNDS rounds of $N each)"
		"$BUILD/iotconn_bench" "$cs" "$ca" "$N" "$ROUNDS" | tail -n +2 | tee -a "$tmp/$broker.abi"
		"$tmp/paho-bench" -connstr "$cs" -ca "$ca" -n "$N" -rounds "$ROUNDS" | tail -n +2 | tee -a "$tmp/$broker.paho"
	done
	abi=$(median "$tmp/$broker.abi" rate)
	paho=$(median "$tmp/$broker.paho" rate)
	send_ns=$(median "$tmp/$broker.abi" send_ns)
	ratio=$(awk -v a="$abi" -v p="$paho" 'BEGIN { printf "%.2f", a / p }')
	{
		echo
		echo "[$broker]"
		echo "abi_msgs_per_s=$abi"
		echo "paho_msgs_per_s=$paho"
		echo "ratio_abi_over_paho=$ratio"
		echo "iotconn_send_ns=$send_ns"
		echo "abi_rounds: $(grep -o 'rate=[0-9]*' "$tmp/$broker.abi" | cut -d= -f2 | tr '\n' ' ')"
		echo "paho_rounds: $(grep -o 'rate=[0-9]*' "$tmp/$broker.paho" | cut -d= -f2 | tr '\n' ' ')"
	} >>"$tmp/results"
done
mv "$tmp/results" "$OUT"
say "results ($OUT)"
cat "$OUT"
