"""Loading libiotconn: the bundled copy or an explicit override, with a version check. Each wrong library is
tried in a child interpreter, since a process keeps the first library it loads."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import iotconn
from iotconn import _native

PROBE = """
import iotconn
try:
    lib = iotconn.load_library()
except iotconn.LibraryError as exc:
    print("LibraryError:", exc)
else:
    print("loaded", lib.version_string, lib.path)
"""


def probe(library: Path) -> str:
    env = dict(os.environ, IOTCONN_LIBRARY=str(library))
    env["PYTHONPATH"] = os.pathsep.join([str(Path(iotconn.__file__).parents[1]), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_a_file_that_is_not_a_library_is_refused(tmp_path):
    bogus = tmp_path / "libiotconn.so"
    bogus.write_text("not an ELF file")
    assert probe(bogus).startswith(f"LibraryError: cannot load libiotconn from {bogus}")


@pytest.mark.parametrize("major_step, minor_step", [(1, 0), (0, -1)], ids=["next major", "older minor"])
def test_a_library_of_another_major_or_an_older_minor_version_is_refused(tmp_path, major_step, minor_step):
    if shutil.which("cc") is None:
        pytest.fail("a C compiler (cc) is needed to build the fake library")
    major, minor, _ = _native.HEADER_VERSION
    if minor + minor_step < 0:
        pytest.skip("no older minor version of a x.0 header")
    version = (major + major_step, minor + minor_step, 0)
    text = "%d.%d.%d" % version
    # Every function the binding declares, and a version the binding must refuse.
    source = tmp_path / "fake.c"
    lines = [
        "const char *iotconn_version(int *a, int *b, int *c) "
        f'{{ *a = {version[0]}; *b = {version[1]}; *c = 0; return "{text}"; }}'
    ]
    lines += [f"int {name}(void) {{ return 0; }}" for name in _native._PROTOTYPES if name != "iotconn_version"]
    source.write_text("\n".join(lines) + "\n")
    fake = tmp_path / "libfake.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(fake), str(source)], check=True, timeout=60)
    assert probe(fake) == (
        f"LibraryError: {fake} is libiotconn {text}; this package needs {major}.x, x >= {minor} "
        f"(written against {iotconn.__version__})"
    )


def test_the_library_is_loaded_once_per_process(tmp_path):
    lib = iotconn.load_library()
    assert lib.version_info[0] == _native.HEADER_VERSION[0]
    assert iotconn.load_library() is lib
    assert iotconn.load_library(lib.path) is lib
    with pytest.raises(iotconn.LibraryError, match="one Go runtime per process"):
        iotconn.load_library(str(tmp_path / "other.so"))
