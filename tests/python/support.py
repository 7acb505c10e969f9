"""Shared by the Python binding's tests and bench/python_send.py: real iotconn-hubsim processes on 127.0.0.1,
an event recorder with deadlines, and the import of iotconn.

iotconn is the installed one (bindings/python/run-tests.sh installs the built wheel into a virtualenv); when it is
not installed, bindings/python/src with build/libiotconn.so.1.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
HEADER = REPO / "include" / "iotconn.h"
BUILD = Path(os.environ.get("IOTCONN_BUILD_DIR", REPO / "build"))
HUBSIM = Path(os.environ.get("IOTCONN_HUBSIM", BUILD / "bin" / "iotconn-hubsim"))

try:
    import iotconn  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "bindings" / "python" / "src"))
    os.environ.setdefault("IOTCONN_LIBRARY", str(BUILD / "libiotconn.so.1"))

DEVICE = "py-device"
# The devices of the fleet_hub fixture (conftest.py).
FLEET_DEVICES = tuple(f"fleet-{i:02d}" for i in range(20))
# How long a test waits for an event the hub or the client should produce.
EVENT_TIMEOUT = 30.0


class Recorder:
    """Collects events from handlers (any thread) and lets a test wait for a condition on them, with a deadline."""

    def __init__(self) -> None:
        self.events: List[Any] = []
        self._cond = threading.Condition()

    def add(self, event: Any) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[List[Any]], bool], timeout: float = EVENT_TIMEOUT) -> List[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.events), timeout):
                raise AssertionError(f"timed out after {timeout} s; events so far: {self.events}")
            return list(self.events)

    def wait_count(self, n: int, timeout: float = EVENT_TIMEOUT) -> List[Any]:
        return self.wait_for(lambda events: len(events) >= n, timeout)


class Hub:
    """One iotconn-hubsim process: its addresses from the startup lines, its log, and its control API."""

    def __init__(self, state_dir: Path, devices: Tuple[str, ...], extra_args: Tuple[str, ...] = ()) -> None:
        if not HUBSIM.exists():
            raise FileNotFoundError(f"{HUBSIM} is missing: run ./build.sh first")
        args = [str(HUBSIM), "--dir", str(state_dir), "--mqtt", "127.0.0.1:0", "--control", "127.0.0.1:0",
                "--amqp", "127.0.0.1:0", "--amqp-ws", "127.0.0.1:0"]
        for device in devices:
            args += ["--device", device]
        args += extra_args
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.log = Recorder()
        self._reader = threading.Thread(target=self._read, name="hubsim-reader", daemon=True)
        self._reader.start()
        try:
            lines = self.log.wait_for(lambda lines: "hubsim: ready" in lines or self.proc.poll() is not None)
            if "hubsim: ready" not in lines:
                raise AssertionError(f"hubsim exited before it was ready: {lines}")
        except BaseException:
            self.stop()
            raise
        self.connection_strings: Dict[str, str] = {}
        # With --hub and --dps-mqtt: the other hubs' host names, DPS's address, control URL and id scope, and the
        # primary keys of the enrollments and groups.
        self.hub_hosts: List[str] = []
        self.dps_mqtt = self.dps_control_url = self.id_scope = ""
        self.enrollment_keys: Dict[str, str] = {}
        for line in lines:
            field = line.split(" ", 2)
            words = line.split()
            if line.startswith("hubsim: mqtts "):
                self.hub_hosts.insert(0, "localhost:" + field[2].rsplit(":", 1)[1])
            elif re.match(r"hubsim: hub\d+ \S+ mqtts ", line):
                self.hub_hosts.append(words[2])
            elif line.startswith("hubsim: dps mqtts "):
                self.dps_mqtt = words[3]
            elif line.startswith("hubsim: dps control "):
                self.dps_control_url = words[3]
            elif line.startswith("hubsim: dps idscope "):
                self.id_scope = words[3]
            elif line.startswith(("hubsim: dps enrollment ", "hubsim: dps group ")):
                self.enrollment_keys[words[3]] = words[4]
            elif line.startswith("hubsim: control "):
                self.control_url = field[2]
            elif line.startswith("hubsim: amqps "):
                self.amqp_addr = field[2]
            elif line.startswith("hubsim: amqp-ws "):
                self.amqp_ws_addr = field[2]
            elif line.startswith("hubsim: ca "):
                self.ca_file = field[2]
            elif line.startswith("hubsim: device "):
                device, connection_string = field[2].split(" ", 1)
                self.connection_strings[device] = connection_string

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.add(line.rstrip("\n"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=10)

    def amqp_connection_string(self, device: str = DEVICE, websockets: bool = False) -> str:
        """The device's connection string with the hub's AMQP (or AMQP over WebSocket) listener as its gateway."""
        port = (self.amqp_ws_addr if websockets else self.amqp_addr).rsplit(":", 1)[1]
        return self.connection_strings[device] + ";GatewayHostName=localhost:" + port

    def wrong_key_connection_string(self, device: str = DEVICE) -> str:
        """The device's connection string with a well-formed key the hub does not know."""
        prefix, _key = self.connection_strings[device].split("SharedAccessKey=", 1)
        return prefix + "SharedAccessKey=" + base64.b64encode(b"not the key of this device, 32b!").decode()

    def request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None, base: str = "") -> Any:
        """A control API request: the hub's, or the one at `base` (e.g. dps_control_url)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request((base or self.control_url) + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=EVENT_TIMEOUT) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read().decode()}") from None
        return json.loads(text) if text else None

    def messages(self, device: str = DEVICE) -> List[Dict[str, Any]]:
        """The D2C messages the hub recorded for the device, in arrival order, payload decoded to bytes."""
        records = self.request("GET", f"/devices/{device}/messages")
        for record in records:
            record["payload"] = base64.b64decode(record["payload"])
        return records

    def send_c2d(self, device: str = DEVICE, **message: Any) -> None:
        self.request("POST", f"/devices/{device}/c2d", message)

    def fault(self, kind: str, **params: Any) -> None:
        self.request("POST", "/faults", {"kind": kind, **params})

    def wait_log(self, text: str, after: int = 0) -> int:
        """Waits for a log line containing `text` among lines[after:]; returns its index."""
        lines = self.log.wait_for(lambda lines: any(text in line for line in lines[after:]))
        return next(i for i in range(after, len(lines)) if text in lines[i])


class SilentListener:
    """A plain TCP listener on 127.0.0.1 that accepts connections and never answers, so a TLS handshake with it
    never ends: a connect to it blocks until cancelled or timed out. `accepted` is set at the first connection."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.accepted = threading.Event()
        self._conns: List[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="silent-listener", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:  # until close() shuts the socket down
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            self.accepted.set()

    def connection_string(self, hub_connection_string: str) -> str:
        """A hub connection string with its HostName pointed here (as localhost, the name hubsim's certificate
        has)."""
        return re.sub(r"HostName=[^;]*", f"HostName=localhost:{self.port}", hub_connection_string)

    def close(self) -> None:
        """Closes the listener and its connections; its port is then free (for hubsim's move-port fault)."""
        # shutdown, not only close, wakes the accept() blocked in the thread.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=10)
        for conn in self._conns:
            conn.close()
