#!/usr/bin/env bash
# Records the ABI baseline of a released version from its git tag, into tests/abi/baseline/VERSION/:
#   libiotconn.abi   abidw's description of that version's library (built with debug info, so that it carries
#                    the public types and not only the symbol names)
#   sources.tar.gz   its header, C tests and C example, which tests/abi/run.sh builds against the old header and
#                    runs on the new library
# Run once per release, and commit the result: CI then needs neither the tag nor the history.
#
#   bash tests/abi/make-baseline.sh VERSION       (e.g. 1.0.0, for the tag v1.0.0)
set -euo pipefail
cd "$(dirname "$0")/../.."
version=${1:?usage: make-baseline.sh VERSION}
export PATH="/usr/local/go/bin:$PATH"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
apt_install_missing abigail-tools
out=tests/abi/baseline/$version
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git archive "v$version" | tar -x -C "$work"
sh scripts/build-lib.sh "$work" "$work/libiotconn.so" debug
mkdir -p "$out"
abidw --headers-dir "$work/include" --out-file "$out/libiotconn.abi" "$work/libiotconn.so"
git archive --format=tar.gz -o "$out/sources.tar.gz" "v$version" include tests/c examples/c
echo "baseline $version: $(ls "$out")"
