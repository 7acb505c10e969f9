"""The release wheel (manylinux tag, bundled library, a device app from a fresh virtualenv) and the sdist."""

import os
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import iotconn
from support import DEVICE, REPO

MACHINE = platform.machine()
PYTHON_DIR = REPO / "bindings" / "python"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """$IOTCONN_WHEEL (run-tests.sh builds it once), else one built here by build-wheel.sh."""
    given = os.environ.get("IOTCONN_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run(["bash", str(PYTHON_DIR / "build-wheel.sh"), str(out)], check=True, timeout=600, env=env)
    (built,) = out.glob("iotconn-*.whl")
    return built


def glibc_needed(library: Path) -> tuple:
    """The newest GLIBC_x.y symbol version the library's dynamic symbols ask for."""
    symbols = subprocess.run(["readelf", "--dyn-syms", "-W", str(library)], capture_output=True, text=True, check=True)
    versions = {tuple(int(n) for n in v.split(".")) for v in re.findall(r"@GLIBC_([0-9.]+)", symbols.stdout)}
    return max(versions)


def test_wheel_is_manylinux_for_the_glibc_its_library_needs(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        wheel_info = archive.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
        archive.extract("iotconn/libiotconn.so.1", tmp_path)
    assert {"iotconn/libiotconn.so.1", "iotconn/py.typed", "iotconn/aio/__init__.py", "iotconn/_version.py"} <= names
    major, minor = glibc_needed(tmp_path / "iotconn" / "libiotconn.so.1")[:2]
    policy = f"manylinux_{major}_{minor}_{MACHINE}"
    assert wheel.name == f"iotconn-{iotconn.__version__}-py3-none-{policy}.whl"
    assert f"Tag: py3-none-{policy}" in wheel_info and "Root-Is-Purelib: false" in wheel_info
    shown = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert f'consistent with the following platform tag: "{policy}"' in " ".join(shown.stdout.split())


def test_sdist_builds_the_library_from_its_sources(tmp_path):
    sdist = os.environ.get("IOTCONN_SDIST")
    if not sdist:
        out = tmp_path / "sdist"
        env = dict(os.environ, PYTHON=sys.executable)
        run = subprocess.run(["bash", str(PYTHON_DIR / "make-sdist.sh"), str(out)], check=True, timeout=600, env=env)
        assert run.returncode == 0
        (sdist,) = out.glob("iotconn-*.tar.gz")
    # No prebuilt library to fall back on: setup.py must build it from the sdist's native/ tree.
    env = {k: v for k, v in os.environ.items() if k != "IOTCONN_LIBRARY"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(sdist)],
        check=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    (built,) = tmp_path.glob("iotconn-*.whl")
    with zipfile.ZipFile(built) as archive:
        archive.extract("iotconn/libiotconn.so.1", tmp_path)
    probe = (
        "import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); lib.iotconn_version.restype = ctypes.c_char_p; "
        "print(lib.iotconn_version(None, None, None).decode())"
    )
    version = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "iotconn" / "libiotconn.so.1")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert version.stdout.strip() == iotconn.__version__


def test_device_app_runs_from_the_wheel_in_a_fresh_virtualenv(wheel, hub, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)], check=True, timeout=300
    )
    # Nothing points at the source tree or build/: the app must find the bundled library.
    env = {k: v for k, v in os.environ.items() if k not in ("IOTCONN_LIBRARY", "PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [python, "-c", "import iotconn; print(iotconn.load_library().path)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert where.stdout.strip().startswith(str(venv))

    app = subprocess.run(
        [
            python,
            str(REPO / "examples" / "python" / "telemetry.py"),
            hub.connection_strings[DEVICE],
            hub.ca_file,
            "3",
            "0",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert app.returncode == 0, app.stdout + app.stderr
    lines = app.stdout.splitlines()
    # Handlers run on the dispatcher thread, so their lines interleave with the main thread's "sent:" lines.
    status_lines = [line for line in lines if line.startswith("status: ")]
    assert status_lines[0] == "status: CONNECTED / CONNECTION_OK"
    # the reported patch took id 1: patches and messages share one sequence
    assert {"delivered: id=2", "delivered: id=3", "delivered: id=4"} <= set(lines)
    assert "reported: version=2" in lines and any(line.startswith("desired: version=1 ") for line in lines)
    assert "status: DISABLED / CLIENT_CLOSE" in lines
    assert lines[-1] == "client: sent=3 delivered=3 failed=0"
    records = hub.messages()
    assert [r["messageId"] for r in records] == ["telemetry-1", "telemetry-2", "telemetry-3"]
    assert [r["properties"] for r in records] == [{"seq": "1"}, {"seq": "2"}, {"seq": "3"}]
    assert all(r["contentType"] == "application/json" for r in records)
