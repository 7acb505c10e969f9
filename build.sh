#!/usr/bin/env bash
# iotconn build entry point.
#   ./build.sh          install what is missing, build libiotconn and iotconn-hubsim into build/
#   ./build.sh test     build, then run every test suite: go c abi python csharp sdk reliability fleet fuzz, in that order
#   ./build.sh test SUITE...  build, then run only the named suites (an unknown name: the list, exit 2)
#   ./build.sh demo     build, then run the device demo against the local hub emulator
#   ./build.sh bench    build, then run the benchmarks (results in bench/results/)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
BUILD="$ROOT/build"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
export PATH="/usr/local/go/bin:$PATH"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

say() { printf '\n==> %s\n' "$*"; }

# apt packages the build and the tests need; installed only when missing (apt_install_missing, scripts/lib.sh), so
# a second run changes nothing.
# binutils: nm/readelf (ABI test); abigail-tools: abidiff (the ABI check against released versions); curl, jq: the
# demo; mosquitto, openssl: the benchmark's second broker.
APT_PACKAGES=(gcc g++ make cmake pkg-config ca-certificates binutils abigail-tools curl jq mosquitto openssl)

deps() {
	apt_install_missing "${APT_PACKAGES[@]}"
	command -v go >/dev/null || { echo "Go 1.22+ is required (https://go.dev/dl)"; exit 1; }
	say "downloading Go modules"
	go mod download
}

build() {
	deps
	say "building libiotconn.so, iotconn-hubsim, the C examples and tests (cmake, into build/)"
	cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build "$BUILD" -j "$(nproc)"
}

test_go() {
	say "go vet and gofmt"
	go vet ./...
	local unformatted
	unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './build/*'))
	[ -z "$unformatted" ] || { echo "gofmt would change: $unformatted"; exit 1; }
	say "go test -race"
	go test -race -count=1 -timeout 15m ./...
}

test_c() {
	say "C tests (CTest): ABI symbols, misuse, status sequences, dispatch modes, twins and methods, DPS and X.509, retry policy, stress, install"
	ctest --test-dir "$BUILD" --output-on-failure
}

test_abi() {
	say "ABI: abidiff against 1.0.0, and 1.0.0's C tests and example (its header) on this library"
	bash tests/abi/run.sh
}

test_python() {
	say "Python binding (pytest): enums, connect, send, C2D, kill-tcp, custom retry policy, misuse, twins and methods (modules, outages), shared dispatcher, fleet hint, admission budget, DPS and X.509, wheel"
	bash bindings/python/run-tests.sh
}

test_csharp() {
	say "C# binding (Mono): enums, C2D, kill-tcp, retry policies, misuse, twins and methods (modules, outages), shared dispatcher, fleet hint, admission budget, DPS and X.509, version, nupkg, example"
	bash bindings/csharp/run-tests.sh
}

test_sdk() {
	say "official Azure IoT SDKs against hubsim"
	bash tests/sdk/run.sh
}

test_reliability() {
	say "reliability: fault matrix (hubsim, mosquitto kill -9) and durable-queue crash test"
	bash tests/reliability/run.sh
}

test_fleet() {
	say "fleet bench in small: 50 devices on one dispatcher through the counting front, hub-down and accept-drop (bench/fleet/smoke.sh)"
	bash bench/fleet/smoke.sh
}

test_fuzz() {
	say "fuzzing: connection string, SAS, property bag, send vs the hub record, AMQP codec and server, C ABI (10 s each)"
	bash tests/fuzz/run.sh
}

# The suites in the order `./build.sh test` runs them; each is a test_NAME function above.
SUITES=(go c abi python csharp sdk reliability fleet fuzz)

is_suite() {
	local known
	for known in "${SUITES[@]}"; do
		[ "$1" != "$known" ] || return 0
	done
	return 1
}

# run_tests [SUITE...]: checks the names, builds, then runs the named suites in the order given (all: none named).
run_tests() {
	local s
	for s in "$@"; do
		is_suite "$s" || { echo "unknown test suite '$s'; the suites: ${SUITES[*]}" >&2; exit 2; }
	done
	(($#)) || set -- "${SUITES[@]}"
	build
	for s in "$@"; do
		"test_$s"
	done
}

case "${1:-build}" in
build) build ;;
deps) deps ;;
test)
	shift
	run_tests "$@"
	;;
demo) build && bash examples/demo.sh ;;
bench) build && bash bench/run.sh ;;
*)
	echo "usage: $0 [build|test [SUITE...]|demo|bench|deps]; suites: ${SUITES[*]}" >&2
	exit 2
	;;
esac
