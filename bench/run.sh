#!/usr/bin/env bash
# The C ABI (bench/c/throughput.c, thread dispatch) versus raw paho.mqtt.golang (bench/paho) in the same run, on
# the same brokers: hubsim and a local mosquitto with TLS (./build.sh bench). QoS 1, 256-byte payloads. Cases:
#   pipelined  one connection; send N, then wait for the N acks: msg/s       -> bench/results/throughput.txt
#   window1    one connection; send one, wait for its completion, then the next: msg/s, p50/p99 latency
#                                                                            -> bench/results/window1.txt
#   connect    a fresh client: create + connect (CONNECT and the C2D SUBSCRIBE) until Connected: median, p90
#                                                                            -> bench/results/connect.txt
# pipelined also runs over AMQP on hubsim: the C ABI with IOTCONN_TRANSPORT_AMQP versus raw github.com/Azure/go-amqp
# (bench/amqp), in the same file.
# Each case runs every client in several processes, alternating C ABI and paho, so that the load of a shared
# machine falls on both alike; every process's first round is warm-up, left out of the medians (connect reports
# it apart, as the first connect of a process). Each case starts a fresh hubsim; mosquitto keeps no messages.
# Usage: bench/run.sh [CASE...] (all by default); BENCH_* variables (below) change the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
BUILD=${BUILD:-build}
N=${BENCH_N:-20000}
ROUNDS=${BENCH_ROUNDS:-4}
PASSES=${BENCH_PASSES:-3}
W1_N=${BENCH_W1_N:-5000}
W1_ROUNDS=${BENCH_W1_ROUNDS:-4}
W1_PASSES=${BENCH_W1_PASSES:-5}
CONNECT_ROUNDS=${BENCH_CONNECT_ROUNDS:-4}
CONNECT_PASSES=${BENCH_CONNECT_PASSES:-10}
CASES=("$@")
((${#CASES[@]})) || CASES=(pipelined window1 connect)
for c in "${CASES[@]}"; do
	case $c in pipelined | window1 | connect) ;; *)
		echo "unknown case '$c'; the cases: pipelined window1 connect" >&2
		exit 2
		;;
	esac
done
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

# start NAME READY_PATTERN CMD...: start_logged (scripts/lib.sh) with its files in $tmp.
start() { start_logged "$tmp" "$@"; }

say "building the paho baseline and the C-thread boundary probe"
go build -trimpath -o "$tmp/paho-bench" ./bench/paho
go build -trimpath -o "$tmp/boundary" ./bench/boundary
go build -trimpath -o "$tmp/amqp-bench" ./bench/amqp

# fresh_hubsim CASE: stops the running hubsim, if any, and starts one with an empty state directory. hubsim
# keeps every message it receives, and a fuller hub is a slower one: each case gets its own.
hub_pid=""
fresh_hubsim() {
	if [ -n "$hub_pid" ]; then
		kill "$hub_pid" && wait "$hub_pid" 2>/dev/null || true
	fi
	say "starting hubsim ($1)"
	start "hubsim-$1" "hubsim: ready" "$BUILD/bin/iotconn-hubsim" --dir "$tmp/hub-$1" --mqtt 127.0.0.1:0 \
		--amqp 127.0.0.1:0 --control 127.0.0.1:0 --device bench-device
	hub_pid=$started_pid
	hub_ca=$(sed -n 's/^hubsim: ca //p' <<<"$started_lines")
	hub_cs=$(sed -n 's/^hubsim: device bench-device //p' <<<"$started_lines")
	hub_amqp_cs="$hub_cs;GatewayHostName=localhost:$(sed -n 's/^hubsim: amqps .*://p' <<<"$started_lines")"
}

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
# set_tcp_nodelay: without it mosquitto's small packets after the TLS handshake (CONNACK, SUBACK) wait for the
# client's delayed ACK (Nagle), which put 40 ms into every connect and hid the clients' own cost.
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
set_tcp_nodelay true
CONF
start mosquitto "running" "$mosq" -c "$tmp/mosquitto.conf"
mosq_cs="HostName=localhost:$port;DeviceId=bench-device;SharedAccessKey=YmVuY2gta2V5LWZvci1tb3NxdWl0dG8tYnJva2Vy"

# values FILE KEY [warm|first]: the KEY= values of FILE's round lines; warm (the default) leaves out every
# process's first round, first keeps only those.
values() {
	local sel='!/^round=1 /'
	[ "${3:-warm}" = warm ] || sel='/^round=1 /'
	awk "$sel" "$1" | grep -o "$2=[0-9.]*" | cut -d= -f2
}

# quantile Q: the Q-quantile (nearest rank) of the numbers on stdin; 0.5 is the median.
quantile() {
	sort -n | awk -v q="$1" '{ v[NR] = $1 } END {
		if (NR == 0) { print "nan"; exit }
		r = int(q * NR); if (r < q * NR) r++; if (r < 1) r = 1; print v[r] }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
ms() { awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), $1 / 1000 }'; } # microseconds on stdin, milliseconds out

# alternate MODE PASSES N ROUNDS: for each broker, PASSES processes of each client in MODE (C ABI, then paho,
# alternating), ROUNDS rounds each; their round lines go to $tmp/BROKER.MODE.abi and $tmp/BROKER.MODE.paho.
alternate() {
	local mode=$1 passes=$2 n=$3 rounds=$4 broker cs ca pass
	for broker in hubsim mosquitto; do
		if [ "$broker" = hubsim ]; then cs=$hub_cs ca=$hub_ca; else cs=$mosq_cs ca=$tmp/ca.pem; fi
		: >"$tmp/$broker.$mode.abi"
		: >"$tmp/$broker.$mode.paho"
		for pass in $(seq 1 "$passes"); do
			say "$mode, $broker, pass $pass/$passes: C ABI, then raw paho ($rounds rounds)"
			"$BUILD/iotconn_bench" -m "$mode" "$cs" "$ca" "$n" "$rounds" | tee -a "$tmp/$broker.$mode.abi"
			"$tmp/paho-bench" -mode "$mode" -connstr "$cs" -ca "$ca" -n "$n" -rounds "$rounds" |
				tee -a "$tmp/$broker.$mode.paho"
		done
	done
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
changed=$(git status --porcelain -- core capi include bench/c bench/paho 2>/dev/null | awk '{ print $2 }' |
	xargs -r -n 1 dirname | sort -u | tr '\n' ' ') || changed=""
[ -z "$changed" ] || commit+=" + uncommitted changes in ${changed% }"
commit+="; $BUILD/libiotconn.so built $(date -u -r "$BUILD/libiotconn.so" +%Y-%m-%dT%H:%M:%SZ)"
machine="$(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), Linux $(uname -r),"
machine+=" $(go version | cut -d' ' -f3)"

# header TITLE COMMAND LINE...: the first lines of a results file: what, when, on which commit and machine, how to
# run it again, then the case's own description.
header() {
	echo "# $1"
	echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit"
	echo "# $machine"
	echo "# reproduce: ./build.sh, then $2 (./build.sh bench runs every case)"
	shift 2
	printf '# %s\n' "$@"
}

# alternate_amqp PASSES N ROUNDS: pipelined over AMQP on hubsim, the C ABI then raw go-amqp, alternating; their
# round lines go to $tmp/hubsim-amqp.pipelined.abi and .paho (the baseline's slot).
alternate_amqp() {
	local passes=$1 n=$2 rounds=$3 pass
	: >"$tmp/hubsim-amqp.pipelined.abi"
	: >"$tmp/hubsim-amqp.pipelined.paho"
	for pass in $(seq 1 "$passes"); do
		say "pipelined, hubsim over AMQP, pass $pass/$passes: C ABI, then raw go-amqp ($rounds rounds)"
		"$BUILD/iotconn_bench" -m pipelined -t amqp "$hub_amqp_cs" "$hub_ca" "$n" "$rounds" |
			tee -a "$tmp/hubsim-amqp.pipelined.abi"
		"$tmp/amqp-bench" -connstr "$hub_amqp_cs" -ca "$hub_ca" -n "$n" -rounds "$rounds" |
			tee -a "$tmp/hubsim-amqp.pipelined.paho"
	done
}

case_pipelined() {
	alternate pipelined "$PASSES" "$N" "$ROUNDS"
	alternate_amqp "$PASSES" "$N" "$ROUNDS"
	local broker abi paho base
	{
		header "iotconn send throughput: C ABI (iotconn_send) vs raw paho.mqtt.golang, pipelined" \
			"BENCH_N=$N BENCH_ROUNDS=$ROUNDS BENCH_PASSES=$PASSES bash bench/run.sh pipelined" \
			"QoS 1, 256-byte payload, one TLS connection per client, pipelined: send $N then wait for $N acks;" \
			"$PASSES alternating passes per client of $ROUNDS rounds (one process and connection each; its first" \
			"round is warm-up and dropped); figures are medians of the remaining rounds." \
			"[hubsim-amqp]: the same over AMQP (IOTCONN_TRANSPORT_AMQP), against raw github.com/Azure/go-amqp" \
			"(bench/amqp: one connection, CBS put-token, the events link, SendWithReceipt then the receipts)." \
			"send_ns: wall time of the send loop / $N, i.e. the cost of one iotconn_send call while the engine runs."
		for broker in hubsim mosquitto hubsim-amqp; do
			abi=$(values "$tmp/$broker.pipelined.abi" rate | quantile 0.5)
			paho=$(values "$tmp/$broker.pipelined.paho" rate | quantile 0.5)
			echo
			echo "[$broker]"
			echo "abi_msgs_per_s=$abi"
			base=paho
			[ "$broker" != hubsim-amqp ] || base=goamqp
			echo "${base}_msgs_per_s=$paho"
			echo "ratio_abi_over_${base}=$(ratio "$abi" "$paho")"
			echo "iotconn_send_ns=$(values "$tmp/$broker.pipelined.abi" send_ns | quantile 0.5)"
			echo "abi_rounds: $(values "$tmp/$broker.pipelined.abi" rate | tr '\n' ' ')"
			echo "${base}_rounds: $(values "$tmp/$broker.pipelined.paho" rate | tr '\n' ' ')"
		done
	} >"$tmp/results"
}

case_window1() {
	alternate window1 "$W1_PASSES" "$W1_N" "$W1_ROUNDS"
	local broker f abi paho c pass
	say "window1 in Go (core.Client vs paho, bench/paho's BenchmarkWindow1) on hubsim, and the C-thread boundary"
	: >"$tmp/go.window1"
	for pass in $(seq 1 "$W1_PASSES"); do
		go test -run - -bench Window1 -benchtime "${W1_N}x" -count 1 ./bench/paho/ \
			-args -hub-connstr "$hub_cs" -hub-ca "$hub_ca" | tee -a "$tmp/go.window1"
	done
	"$tmp/boundary" -n 20000 -rounds "$W1_ROUNDS" | tee "$tmp/boundary.txt"
	{
		header "iotconn window of one: C ABI (iotconn_send, wait for its completion) vs raw paho.mqtt.golang" \
			"BENCH_W1_N=$W1_N BENCH_W1_ROUNDS=$W1_ROUNDS BENCH_W1_PASSES=$W1_PASSES bash bench/run.sh window1" \
			"QoS 1, 256-byte payload, one TLS connection per client; one message at a time: send it, wait for its" \
			"completion, then the next. C ABI: thread dispatch, the send callback signals a condition variable the" \
			"sender waits on; paho: Publish, then wait for its token. Latency: from the send call to the sender's" \
			"wake-up. $W1_N messages per round; $W1_PASSES alternating passes per client of $W1_ROUNDS rounds (one" \
			"process and connection each; its first round is warm-up and dropped). Figures: medians over the" \
			"remaining rounds of each round's msg/s, p50 and p99 (us)."
		for broker in hubsim mosquitto; do
			f=$tmp/$broker.window1
			abi=$(values "$f.abi" rate | quantile 0.5)
			paho=$(values "$f.paho" rate | quantile 0.5)
			echo
			echo "[$broker]"
			echo "abi_msgs_per_s=$abi"
			echo "paho_msgs_per_s=$paho"
			echo "ratio_abi_over_paho=$(ratio "$abi" "$paho")"
			for c in abi paho; do
				echo "${c}_p50_us=$(values "$f.$c" p50_us | quantile 0.5) ${c}_p99_us=$(values "$f.$c" p99_us | quantile 0.5)"
			done
			echo "abi_rounds: $(values "$f.abi" rate | tr '\n' ' ')"
			echo "paho_rounds: $(values "$f.paho" rate | tr '\n' ' ')"
		done
		gorate() { awk -v b="$1" '$1 ~ b { for (i = 1; i < NF; i++) if ($(i + 1) == "msgs/s") print $i }' "$tmp/go.window1"; }
		abi=$(gorate 'Window1/iotconn' | quantile 0.5)
		paho=$(gorate 'Window1/paho' | quantile 0.5)
		echo
		echo "# The same window of one in one Go process (core.Client's Send and completion handler vs paho's"
		echo "# Publish and token, on this run's hubsim): the engine's own cost, without the C thread's."
		echo "[go, hubsim]"
		echo "engine_msgs_per_s=$abi"
		echo "paho_msgs_per_s=$paho"
		echo "ratio_engine_over_paho=$(ratio "$abi" "$paho")"
		echo
		echo "# bench/boundary: a C thread calls into Go, a goroutine answers through a condition variable the"
		echo "# thread waits on (iotconn_send, then a thread-dispatch callback), against the same hand-off between"
		echo "# two goroutines. Each window-1 message of the C ABI pays this round trip; paho's Go caller does not."
		echo "[boundary]"
		echo "c_thread_round_trip_us=$(grep -o 'c_thread_round_trip_us=[0-9.]*' "$tmp/boundary.txt" | cut -d= -f2 | quantile 0.5)"
		echo "goroutine_round_trip_us=$(grep -o 'goroutine_round_trip_us=[0-9.]*' "$tmp/boundary.txt" | cut -d= -f2 | quantile 0.5)"
	} >"$tmp/results"
}

case_connect() {
	alternate connect "$CONNECT_PASSES" 0 "$CONNECT_ROUNDS"
	local broker f abi paho c
	{
		header "iotconn connect: C ABI (iotconn_client_create + iotconn_connect) vs raw paho.mqtt.golang" \
			"BENCH_CONNECT_ROUNDS=$CONNECT_ROUNDS BENCH_CONNECT_PASSES=$CONNECT_PASSES bash bench/run.sh connect" \
			"From nothing to Connected on a fresh client, TLS. C ABI: iotconn_client_create, then iotconn_connect until" \
			"it returns (TCP, TLS, CONNECT, the C2D SUBSCRIBE and its SUBACK); paho: a fresh SAS token, the CA file," \
			"NewClient, Connect, then the same SUBSCRIBE, waiting for the SUBACK. Destroy/Disconnect not timed." \
			"$CONNECT_PASSES alternating processes per client of $CONNECT_ROUNDS connects each, one after the other." \
			"warm: every connect but a process's first (the headline figures); first_in_process: only those."
		for broker in hubsim mosquitto; do
			f=$tmp/$broker.connect
			abi=$(values "$f.abi" connect_us | quantile 0.5)
			paho=$(values "$f.paho" connect_us | quantile 0.5)
			echo
			echo "[$broker]"
			for c in abi paho; do
				echo "${c}_connect_ms_median=$(values "$f.$c" connect_us | quantile 0.5 | ms)" \
					"${c}_connect_ms_p90=$(values "$f.$c" connect_us | quantile 0.9 | ms)"
			done
			echo "ratio_abi_over_paho=$(ratio "$abi" "$paho")"
			echo "abi_first_in_process_ms_median=$(values "$f.abi" connect_us first | quantile 0.5 | ms)" \
				"paho_first_in_process_ms_median=$(values "$f.paho" connect_us first | quantile 0.5 | ms)"
			echo "abi_warm_ms: $(values "$f.abi" connect_us | ms)"
			echo "paho_warm_ms: $(values "$f.paho" connect_us | ms)"
		done
	} >"$tmp/results"
}

mkdir -p bench/results
declare -A outfile=([pipelined]=throughput [window1]=window1 [connect]=connect)
for c in "${CASES[@]}"; do
	out=bench/results/${outfile[$c]}.txt
	fresh_hubsim "$c"
	"case_$c" # its figures go to $tmp/results
	mv "$tmp/results" "$out"
	say "results ($out)"
	cat "$out"
done
