#!/usr/bin/env bash
# The C# binding's send cost (not part of ./build.sh test): builds the binding and bench/csharp/Send.cs with mcs,
# runs it against a hubsim it starts itself, and writes bench/results/csharp_send.txt (compare with
# bench/results/python_send.txt). Run ./build.sh first; BENCH_N and BENCH_ROUNDS override the sizes.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
out="$root/build/csharp-bench"
N=${BENCH_N:-20000}
ROUNDS=${BENCH_ROUNDS:-7}

command -v mcs >/dev/null && command -v mono >/dev/null || {
	echo "mcs and mono are needed: bash bindings/csharp/run-tests.sh installs them" >&2
	exit 1
}
[ -e build/libiotconn.so ] && [ -e build/bin/iotconn-hubsim ] || { echo "run ./build.sh first" >&2; exit 1; }

mkdir -p "$out" bench/results
mcs -nologo -warnaserror -optimize -target:library -out:"$out/Iotconn.dll" -recurse:"bindings/csharp/src/*.cs"
# The tests' Hubsim starts and stops hubsim by its PID.
mcs -nologo -warnaserror -optimize -out:"$out/Send.exe" -r:"$out/Iotconn.dll" bench/csharp/Send.cs \
	bindings/csharp/tests/Hubsim.cs bindings/csharp/tests/Json.cs
LD_LIBRARY_PATH="$root/build" timeout --kill-after=10 900 mono -O=all "$out/Send.exe" "$root" \
	"$root/bench/results/csharp_send.txt" "$N" "$ROUNDS"

# The Python binding's figures of the same cases, from its last run, beside ours.
py=bench/results/python_send.txt
if [ -f "$py" ]; then
	{
		printf '\n[python]  # from %s (%s)\n' "$py" "$(sed -n '2s/^# //p' "$py")"
		for case in bytes_256 message_with_properties; do
			ns=$(awk -v c="[$case]" '$0 == c {s = 1} s && /^send_ns=/ {sub(/send_ns=/, ""); print; exit}' "$py")
			printf 'python_%s_send_ns=%s\n' "$case" "$ns"
		done
	} | tee -a bench/results/csharp_send.txt
fi
