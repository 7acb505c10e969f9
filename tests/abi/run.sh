#!/usr/bin/env bash
# ABI compatibility with every baseline in tests/abi/baseline/ (make-baseline.sh records one per release):
# 1. abidiff of the baseline's library description against this tree's library: added functions and members
#    appended to the size-versioned structs pass; any other change, or a removal, fails. The check is first shown
#    to fail on a removal (the same comparison reversed).
# 2. the baseline's C tests and example, compiled against its header, run on build/libiotconn.so.1; a failing
#    check fails unless tests/abi/known-differences.tsv lists it with its reason.
# Needs ./build.sh first (the library and hubsim).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${BUILD:-$ROOT/build}
export PATH="/usr/local/go/bin:$PATH"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
apt_install_missing abigail-tools
work=$(mktemp -d)
pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n==> %s\n' "$*"; }
failures=0
fail() { echo "ABI FAIL: $*" >&2; failures=$((failures + 1)); }

say "this tree's library with debug information, for abidw"
sh scripts/build-lib.sh "$ROOT" "$work/libiotconn.so" debug
abidw --headers-dir include --out-file "$work/new.abi" "$work/libiotconn.so"

# compatible OLD.abi NEW.abi: no change but additions. The suppression lets members appended to iotconn_ structs
# pass (their size field versions them), but it would let removed trailing members pass too: a second report
# without it must show no deletion.
compatible() {
	local report
	abidiff --no-added-syms --suppressions tests/abi/abidiff.suppr "$1" "$2" >"$work/report" || return 1
	report=$(abidiff --no-added-syms "$1" "$2" || true)
	! grep -q 'deletion' <<<"$report"
}

# known_difference PROGRAM LINE: whether known-differences.tsv excuses this failure line of PROGRAM.
known_difference() {
	local program want why
	while IFS=$'\t' read -r program want why; do
		[[ $program == "#"* || -z $program ]] && continue
		[[ $program == "$1" && $2 == *"$want"* ]] && return 0
	done <tests/abi/known-differences.tsv
	return 1
}

# run_old NAME CMD...: runs one old program; each line it prints that names a failed check must be excused.
run_old() {
	local name=$1 line unexcused=0
	shift
	if timeout 300 "$@" >"$work/$name.out" 2>&1; then
		echo "  $name: passed"
		return
	fi
	while IFS= read -r line; do
		case $line in
		*"CHECK failed"* | *": iotconn_"*"returned"* | "fuzz_abi: "*)
			if known_difference "${name%%#*}" "$line"; then echo "  $name: known difference: $line"; else
				fail "$name: $line"
				unexcused=1
			fi
			;;
		esac
	done <"$work/$name.out"
	if ((!unexcused)) && ! grep -qE 'CHECK failed|returned|^fuzz_abi: ' "$work/$name.out"; then
		fail "$name exited non-zero without naming a check:"$'\n'"$(tail -5 "$work/$name.out")"
	fi
}

for base in tests/abi/baseline/*/; do
	version=$(basename "$base")
	say "$version: abidiff against this tree"
	if compatible "$base/libiotconn.abi" "$work/new.abi"; then
		echo "  compatible: $(head -1 "$work/report")"
	else
		fail "$version: the ABI changed:"$'\n'"$(cat "$work/report")"
	fi
	# The same check must catch the reverse: 1.1's functions removed, its appended members deleted.
	if compatible "$work/new.abi" "$base/libiotconn.abi"; then
		fail "$version: the check passed a library without this tree's functions; it cannot catch a removal"
	fi

	say "$version: its C tests and example, built against its header, on build/libiotconn.so.1"
	old="$work/$version"
	mkdir -p "$old/src"
	tar -xzf "$base/sources.tar.gz" -C "$old/src"
	cmake -S tests/abi -B "$old/build" -DOLD_SRC="$old/src" -DNEW_LIB="$BUILD/libiotconn.so.1" \
		-DHUBSIM="$BUILD/bin/iotconn-hubsim" >/dev/null
	cmake --build "$old/build" -j "$(nproc)" >/dev/null
	for t in api status dispatch retry stress queue concurrency; do
		run_old "test_$t" "$old/build/test_$t"
	done
	# fuzz_abi stops at the first call that surprises it: many short programs reach further than one long one.
	for seed in $(seq 1 50); do
		run_old "fuzz_abi#$seed" "$old/build/fuzz_abi" --random "$seed" 300
	done

	# The example, against hubsim: every message delivered.
	start_logged "$work" "hubsim-$version" "hubsim: ready" "$BUILD/bin/iotconn-hubsim" --dir "$work/hub-$version" \
		--mqtt 127.0.0.1:0 --control 127.0.0.1:0 --device abi-device
	hub_pid=$started_pid
	ca=$(sed -n 's/^hubsim: ca //p' <<<"$started_lines")
	conn=$(sed -n 's/^hubsim: device abi-device //p' <<<"$started_lines")
	summary=$(timeout 120 "$old/build/telemetry" "$conn" "$ca" 20 20 | grep '^client: ' || true)
	if [ "$summary" = "client: sent=20 delivered=20 failed=0" ]; then echo "  telemetry example: $summary"; else
		fail "$version: the telemetry example printed '$summary', want sent=20 delivered=20 failed=0"
	fi
	kill "$hub_pid" && wait "$hub_pid" 2>/dev/null || true
done

((failures == 0)) || { echo "$failures ABI failure(s)" >&2; exit 1; }
say "ABI: compatible with $(ls tests/abi/baseline | tr '\n' ' ')"
