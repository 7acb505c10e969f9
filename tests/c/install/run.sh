#!/bin/sh
# Installs the build into a temporary prefix, checks the installed files, then builds and runs a consumer
# project twice: with find_package(iotconn CONFIG REQUIRED) and with pkg-config.
# usage: run.sh BUILD_DIR CONSUMER_SOURCE_DIR CC
set -eu
build=$1 src=$2 cc=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(dirname "$(find "$prefix" -name 'libiotconn.so.1' | head -n 1)")
fail() { echo "FAIL: $*"; exit 1; }
[ -f "$prefix/include/iotconn.h" ] || fail "header not installed"
[ -L "$libdir/libiotconn.so" ] && [ "$(readlink "$libdir/libiotconn.so")" = libiotconn.so.1 ] ||
	fail "libiotconn.so is not a link to libiotconn.so.1"
[ -L "$libdir/libiotconn.so.1" ] && [ -f "$(readlink -f "$libdir/libiotconn.so.1")" ] ||
	fail "libiotconn.so.1 is not a link to the library"
for f in cmake/iotconn/iotconnConfig.cmake cmake/iotconn/iotconnConfigVersion.cmake pkgconfig/iotconn.pc; do
	[ -f "$libdir/$f" ] || fail "$f not installed"
done

# find_package
cmake -S "$src" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" >/dev/null
cmake --build "$tmp/cmake-build" >/dev/null
readelf -d "$tmp/cmake-build/consumer" | grep -q 'NEEDED.*\[libiotconn.so.1\]' || fail "consumer does not need the soname"
"$tmp/cmake-build/consumer" || fail "find_package consumer"

# pkg-config, finding the prefix from the .pc file's own location
export PKG_CONFIG_PATH="$libdir/pkgconfig"
[ "$(pkg-config --modversion iotconn)" = "$(sed -n 's/^#define IOTCONN_VERSION_STRING "\(.*\)"/\1/p' "$prefix/include/iotconn.h")" ] ||
	fail "pkg-config version differs from the header's"
# shellcheck disable=SC2046
"$cc" -o "$tmp/consumer-pc" "$src/main.c" $(pkg-config --cflags --libs iotconn) \
	-Wl,-rpath,"$(pkg-config --variable=libdir iotconn)"
readelf -d "$tmp/consumer-pc" | grep -q 'NEEDED.*\[libiotconn.so.1\]' || fail "pkg-config consumer does not need the soname"
"$tmp/consumer-pc" || fail "pkg-config consumer"
echo "PASS install: find_package and pkg-config consumers built and ran against $prefix"
