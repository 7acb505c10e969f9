"""Builds the platform wheel: the pure-Python package plus libiotconn.so.1, tagged py3-none-linux_<machine>.

The library bundled is, in order: $IOTCONN_LIBRARY (a built libiotconn.so), else build/libiotconn.so.1 of this
repository (made by ./build.sh), else that file built here first with the project's CMake build (needs cmake, go
and a C compiler). Metadata lives in pyproject.toml.
"""

import os
import platform
import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

REPO = Path(__file__).resolve().parents[2]
BUNDLED_NAME = "libiotconn.so.1"  # the soname; iotconn/_native.py loads this file


def library_to_bundle() -> Path:
    explicit = os.environ.get("IOTCONN_LIBRARY")
    if explicit:
        return Path(explicit).resolve(strict=True)
    build_dir = REPO / "build"
    built = build_dir / BUNDLED_NAME
    if not built.exists():
        if not (REPO / "CMakeLists.txt").exists():
            raise SystemExit(f"no {built} and no iotconn source tree to build it: set IOTCONN_LIBRARY")
        # The same configure step as ./build.sh, so the shared build directory stays as it expects.
        subprocess.run(["cmake", "-S", str(REPO), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"], check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "iotconn_go"], check=True)
    return built.resolve(strict=True)


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib, "iotconn", BUNDLED_NAME)
        shutil.copyfile(library_to_bundle(), target)
        target.chmod(0o755)


class WithNativeLibrary(Distribution):
    """The bundled library makes the package platform-specific (installed to platlib, wheel not pure)."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    """The Python code runs on any Python 3 (ctypes, no extension module): only the platform is in the tag."""

    def get_tag(self):
        return "py3", "none", f"linux_{platform.machine()}"


setup(distclass=WithNativeLibrary, cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel})
