"""Builds the platform wheel: the pure-Python package plus libiotconn.so.1, tagged py3-none-linux_<machine>
(build-wheel.sh then makes it a manylinux wheel with auditwheel).

The library bundled is, in order: $IOTCONN_LIBRARY (a built libiotconn.so), else, in an sdist (make-sdist.sh),
one built here from the sources it carries in native/ (needs Go and a C compiler; the Go modules are vendored),
else build/libiotconn.so.1 of this repository (made by ./build.sh), else that file built here first with the
project's CMake build (needs cmake, go and a C compiler). Metadata lives in pyproject.toml.
"""

import importlib.util
import os
import platform
import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SDIST_NATIVE = HERE / "native"  # the library's sources, in an sdist
SOURCE_TREE = SDIST_NATIVE if SDIST_NATIVE.is_dir() else HERE.parents[1]
BUNDLED_NAME = "libiotconn.so.1"  # the soname; iotconn/_native.py loads this file


def header_version() -> str:
    """The version in include/iotconn.h, read by the package's own _versioning module (loaded alone)."""
    spec = importlib.util.spec_from_file_location("_versioning", HERE / "src/iotconn/_versioning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_header_version(SOURCE_TREE / "include" / "iotconn.h")


def library_to_bundle(build_temp: Path) -> Path:
    explicit = os.environ.get("IOTCONN_LIBRARY")
    if explicit:
        return Path(explicit).resolve(strict=True)
    if SOURCE_TREE == SDIST_NATIVE:
        if shutil.which("go") is None:
            raise SystemExit("building iotconn from its sdist needs Go 1.22+ (https://go.dev/dl) and a C compiler")
        built = build_temp / BUNDLED_NAME
        build_temp.mkdir(parents=True, exist_ok=True)
        subprocess.run(["sh", str(SDIST_NATIVE / "scripts/build-lib.sh"), str(SDIST_NATIVE), str(built)], check=True)
        return built
    build_dir = SOURCE_TREE / "build"
    built = build_dir / BUNDLED_NAME
    if not built.exists():
        if not (SOURCE_TREE / "CMakeLists.txt").exists():
            raise SystemExit(f"no {built} and no iotconn source tree to build it: set IOTCONN_LIBRARY")
        # The same configure step as ./build.sh, so the shared build directory stays as it expects.
        subprocess.run(["cmake", "-S", str(SOURCE_TREE), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"], check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "iotconn_go"], check=True)
    return built.resolve(strict=True)


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib, "iotconn", BUNDLED_NAME)
        build_temp = Path(self.get_finalized_command("build").build_temp).resolve()
        shutil.copyfile(library_to_bundle(build_temp), target)
        target.chmod(0o755)
        Path(self.build_lib, "iotconn", "_version.py").write_text(
            f'"""Written by setup.py from include/iotconn.h."""\n\nVERSION = "{header_version()}"\n', "utf-8"
        )


class WithNativeLibrary(Distribution):
    """The bundled library makes the package platform-specific (installed to platlib, wheel not pure)."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    """The Python code runs on any Python 3 (ctypes, no extension module): only the platform is in the tag."""

    def get_tag(self):
        return "py3", "none", f"linux_{platform.machine()}"


setup(
    version=header_version(),
    distclass=WithNativeLibrary,
    cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel},
)
