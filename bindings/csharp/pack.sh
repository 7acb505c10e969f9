#!/usr/bin/env bash
# Builds the NuGet package build/nuget/Iotconn.VERSION.nupkg with tools available here (mcs, python3): a nupkg is
# a zip of [Content_Types].xml, _rels/.rels, Iotconn.nuspec, lib/netstandard2.0/Iotconn.dll (+ its XML docs) and
# runtimes/linux-x64/native/libiotconn.so. VERSION is the header's IOTCONN_VERSION_STRING; the package metadata is
# Iotconn.csproj's, and the release notes are VERSION's section of CHANGELOG.md, as `dotnet pack` makes them.
# Prints the path. Needs build/libiotconn.so (./build.sh) and mcs (run-tests.sh installs it).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/build/nuget"
native=$(readlink -f "$root/build/libiotconn.so")
[ -f "$native" ] || { echo "missing $root/build/libiotconn.so: run ./build.sh first" >&2; exit 1; }

stage="$out/stage"
rm -rf "$stage"
mkdir -p "$stage/lib/netstandard2.0"
version=$(bash "$here/assembly-info.sh" "$stage/AssemblyInfo.cs")
# CS1591: members without XML docs (the enum members and overloads explain themselves). -recurse: src/ and src/Impl/.
mcs -nologo -warnaserror -nowarn:1591 -optimize -target:library -out:"$stage/lib/netstandard2.0/Iotconn.dll" \
	-doc:"$stage/lib/netstandard2.0/Iotconn.xml" -recurse:"$here/src/*.cs" "$stage/AssemblyInfo.cs"

package="$out/Iotconn.$version.nupkg"
python3 - "$stage" "$native" "$package" "$version" "$here/Iotconn.csproj" "$root/CHANGELOG.md" <<'PY'
import os
import re
import sys
import zipfile
from xml.etree import ElementTree
from xml.sax.saxutils import escape

stage, native, package, version, csproj, changelog = sys.argv[1:]
project = ElementTree.parse(csproj).getroot()


def prop(name):
    value = project.findtext(f"PropertyGroup/{name}")
    if not value:
        sys.exit(f"{csproj} has no {name}")
    return escape(value)


section = re.search(rf"^## \[{re.escape(version)}\][^\n]*\n(.*?)(?=^## \[|\Z)", open(changelog, encoding="utf-8").read(),
                    re.M | re.S)
if not section:
    sys.exit(f"{changelog} has no section ## [{version}]")
nuspec = f"""<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://schemas.microsoft.com/packaging/2013/05/nuspec.xsd">
  <metadata>
    <id>{prop("PackageId")}</id>
    <version>{version}</version>
    <authors>{prop("Authors")}</authors>
    <license type="expression">{prop("PackageLicenseExpression")}</license>
    <projectUrl>{prop("PackageProjectUrl")}</projectUrl>
    <description>{prop("Description")}</description>
    <releaseNotes>{escape(section.group(1).strip())}</releaseNotes>
    <tags>{prop("PackageTags")}</tags>
    <dependencies>
      <group targetFramework=".NETStandard2.0" />
    </dependencies>
  </metadata>
</package>
"""
content_types = """<?xml version="1.0" encoding="utf-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
  <Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml" />
  <Default Extension="nuspec" ContentType="application/octet" />
  <Default Extension="dll" ContentType="application/octet" />
  <Default Extension="xml" ContentType="application/octet" />
  <Default Extension="so" ContentType="application/octet" />
</Types>
"""
rels = """<?xml version="1.0" encoding="utf-8"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
  <Relationship Type="http://schemas.microsoft.com/packaging/2010/07/manifest" Target="/Iotconn.nuspec" Id="manifest" />
</Relationships>
"""
tmp = package + ".tmp"
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("[Content_Types].xml", content_types)
    z.writestr("_rels/.rels", rels)
    z.writestr("Iotconn.nuspec", nuspec)
    for name in ("Iotconn.dll", "Iotconn.xml"):
        z.write(f"{stage}/lib/netstandard2.0/{name}", f"lib/netstandard2.0/{name}")
    z.write(native, "runtimes/linux-x64/native/libiotconn.so")
os.replace(tmp, package)
PY
rm -rf "$stage"
echo "$package"
