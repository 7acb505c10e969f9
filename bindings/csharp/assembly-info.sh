#!/usr/bin/env bash
# assembly-info.sh OUT.cs: writes the assembly's version attributes from include/iotconn.h's IOTCONN_VERSION_STRING,
# the project's one version, for the Mono builds (run-tests.sh, pack.sh). dotnet builds get the same attributes
# from Iotconn.csproj, whose <Version> reads the same header.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version=$(sed -n 's/^#define IOTCONN_VERSION_STRING "\([0-9]*\.[0-9]*\.[0-9]*\)"$/\1/p' "$root/include/iotconn.h")
[ -n "$version" ] || { echo "no IOTCONN_VERSION_STRING in include/iotconn.h" >&2; exit 1; }
cat >"$1" <<CS
// Written by bindings/csharp/assembly-info.sh from include/iotconn.h.
[assembly: System.Reflection.AssemblyVersion("$version")]
[assembly: System.Reflection.AssemblyInformationalVersion("$version")]
CS
echo "$version"
