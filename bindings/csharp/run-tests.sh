#!/usr/bin/env bash
# Builds the C# binding and its tests with Mono and runs them against build/libiotconn.so and hubsim.
# Installs mono-mcs and mono-runtime with apt only when mcs or mono is missing.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/build/csharp"
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

if ! command -v mcs >/dev/null || ! command -v mono >/dev/null; then
	apt_install_missing mono-mcs mono-runtime
fi

command -v python3 >/dev/null || { echo "python3 is needed to build the .nupkg" >&2; exit 1; }
for need in "$root/build/libiotconn.so" "$root/build/bin/iotconn-hubsim"; do
	if [ ! -e "$need" ]; then
		echo "missing $need: run ./build.sh first" >&2
		echo "0 passed, 1 failed"
		exit 1
	fi
done

mkdir -p "$out"
bash "$here/assembly-info.sh" "$out/AssemblyInfo.cs" >/dev/null
# -recurse: src/ and its subfolders (src/Impl/: the native layer), as Iotconn.csproj's src/**/*.cs.
mcs -nologo -warnaserror -target:library -out:"$out/Iotconn.dll" -recurse:"$here/src/*.cs" "$out/AssemblyInfo.cs"
mcs -nologo -warnaserror -target:exe -out:"$out/Iotconn.Tests.exe" -r:"$out/Iotconn.dll" \
	"$here"/tests/*.cs
# The package test unpacks this and runs examples/csharp/Telemetry.cs from it.
nupkg=$(bash "$here/pack.sh")

# The runner enforces its own per-test deadlines; this bound only catches a runner that hangs at exit.
set +e
LD_LIBRARY_PATH="$root/build${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" IOTCONN_ROOT="$root" IOTCONN_NUPKG="$nupkg" \
	timeout --kill-after=10 300 mono --debug "$out/Iotconn.Tests.exe" "$@"
rc=$?
set -e
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
	echo "the test runner did not exit within 300 s" >&2
	echo "0 passed, 1 failed"
fi
exit "$rc"
