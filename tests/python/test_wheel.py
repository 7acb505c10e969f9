"""The built wheel: platform tag, bundled library, and a device app running from a fresh virtualenv."""

import os
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support import DEVICE, REPO

WHEEL_TAG = f"py3-none-linux_{platform.machine()}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """$IOTCONN_WHEEL (run-tests.sh builds it once), else a wheel built here from bindings/python."""
    given = os.environ.get("IOTCONN_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO / "bindings" / "python")],
        check=True,
        timeout=600,
    )
    (built,) = out.glob("iotconn-*.whl")
    return built


def test_wheel_is_tagged_for_the_platform_and_bundles_the_library(wheel):
    assert wheel.name.endswith(f"-{WHEEL_TAG}.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        wheel_info = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        info = archive.read(wheel_info).decode()
    assert {"iotconn/libiotconn.so.1", "iotconn/py.typed", "iotconn/aio/__init__.py"} <= names
    assert f"Tag: {WHEEL_TAG}" in info and "Root-Is-Purelib: false" in info


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
