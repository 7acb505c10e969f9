#!/bin/sh
# build-lib.sh SOURCE_TREE OUT.so [debug]: builds libiotconn, the Go engine behind include/iotconn.h, with
# go build -buildmode=c-shared: the soname libiotconn.so.MAJOR, only the header's functions exported
# (cmake/iotconn.map), stripped unless "debug" (abidw needs the debug information). CMakeLists.txt, tests/abi and
# the Python sdist all build through here, so these flags are written once. Go: $GO, else go on the PATH.
set -eu
src=$(cd "$1" && pwd)
out=$2
strip="-s -w"
[ "${3:-}" = debug ] && strip=""
major=$(sed -n 's/^#define IOTCONN_VERSION_MAJOR \([0-9][0-9]*\)$/\1/p' "$src/include/iotconn.h")
[ -n "$major" ] || { echo "build-lib.sh: no IOTCONN_VERSION_MAJOR in $src/include/iotconn.h" >&2; exit 1; }
# Go's build cache does not look at headers outside the package directory: the header's hash in the cgo flags
# keeps a cached capi built from an older header (before a version bump) from being reused.
hash=$(sha256sum "$src/include/iotconn.h" | cut -d' ' -f1)
mod=""
[ -d "$src/vendor" ] && mod=-mod=vendor # an sdist carries its modules
cd "$src"
CGO_ENABLED=1 GOFLAGS=-buildvcs=false CGO_CFLAGS="-O2 -g -DIOTCONN_HEADER_SHA256=$hash" \
	"${GO:-go}" build $mod -buildmode=c-shared -trimpath \
	-ldflags "$strip -extldflags '-Wl,-soname,libiotconn.so.$major -Wl,--version-script=$src/cmake/iotconn.map'" \
	-o "$out" ./capi
