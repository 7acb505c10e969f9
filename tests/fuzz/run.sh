#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZTIME each, default 10s): the connection string and SAS parsers,
# the property-bag encoder/decoder, its lengths and SAS round trip, the MQTT topic length, send against the hub
# emulator (what it records is what was sent), and the C ABI (tests/c/fuzz_abi through FuzzCABI).
# A failure leaves its input in the package's testdata/fuzz/<Target>/ and exits non-zero.
# usage: tests/fuzz/run.sh   (after ./build.sh, which builds build/tests/c/fuzz_abi)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/usr/local/go/bin:$PATH"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
FUZZTIME=${FUZZTIME:-10s}
export IOTCONN_FUZZ_ABI="${IOTCONN_FUZZ_ABI:-$PWD/build/tests/c/fuzz_abi}"
[ -x "$IOTCONN_FUZZ_ABI" ] || cmake --build build --target fuzz_abi

targets=(
	"./core/auth FuzzParseConnectionString"
	"./core/auth FuzzParseSAS"
	"./core/iothub FuzzPropertyBagRoundTrip"
	"./core/iothub FuzzDecodeProperties"
	"./core/iothub FuzzSASRoundTrip"
	"./core/iothub FuzzEscapedLen"
	"./core/transport/mqtt FuzzTopicLenMatchesTheTopic"
	"./core FuzzHubRecordsExactlyWhatSendAccepted"
	"./tests/fuzz FuzzCABI"
)
failed=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "--- $name ($pkg, $FUZZTIME)"
	# -run runs the committed seeds as a test first (a slow failure there is not cut short by -fuzztime); timeout:
	# the seeds, the fuzz time, the instrumented build and a bounded minimisation of a failure.
	if ! timeout 180 go test -run "^${name}\$" -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 10s "$pkg" 2>&1 |
		grep -v '^fuzz: elapsed'; then
		failed+=("$name")
	fi
done
if ((${#failed[@]})); then
	echo "FAIL: ${failed[*]}"
	exit 1
fi
echo "PASS: ${#targets[@]} fuzz targets, $FUZZTIME each"
