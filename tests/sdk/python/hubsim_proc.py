"""Runs an iotconn-hubsim process for a test module and talks to its control API."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DEFAULT_BINARY = os.path.join(REPO_ROOT, "build", "bin", "iotconn-hubsim")


class Hubsim:
    """One hubsim process with its own state dir; stop() ends it by PID."""

    def __init__(self, mqtt_addr, devices, binary=None, ready_seconds=20, extra_args=()):
        """extra_args are more flags (hubs, DPS); "hubsim: dps KEY VALUE.." lines land in self.dps[KEY] (enrollment
        and group lines in self.dps["enrollments"] / self.dps["groups"], id -> key), "hubsim: hubN HOST mqtts ADDR
        control URL" lines in self.hubs[HOST] = URL."""
        binary = binary or os.environ.get("HUBSIM_BIN", DEFAULT_BINARY)
        if not os.path.exists(binary):
            raise RuntimeError(f"hubsim binary not found at {binary}; run ./build.sh first")
        self.dir = tempfile.mkdtemp(prefix="hubsim-py-")
        args = [binary, "--dir", self.dir, "--mqtt", mqtt_addr, "--control", "127.0.0.1:0"]
        for d in devices:
            args += ["--device", d]
        args += list(extra_args)
        self.dps = {"enrollments": {}, "groups": {}}
        self.hubs = {}
        self.lines = []  # every stdout line, for failure messages
        self.connection_strings = {}
        self.mqtts = self.control_url = self.ca_file = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        # The readers drain both pipes for the whole run so hubsim never blocks on a full pipe.
        self._stderr = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True),
        ]
        for r in self._readers:
            r.start()
        if not self._ready.wait(ready_seconds) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(
                "hubsim did not print 'hubsim: ready' in time:\n"
                + "\n".join(self.lines)
                + "\n"
                + "".join(self._stderr)
            )
        missing = [k for k in ("mqtts", "control_url", "ca_file") if getattr(self, k) is None]
        if missing:
            self.stop()
            raise RuntimeError(f"hubsim printed no {missing} line before ready: {self.lines}")

    def _read_stdout(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if line == "hubsim: ready":
                self._ready.set()
                continue
            kind, _, rest = line.removeprefix("hubsim: ").partition(" ")
            if kind == "mqtts":
                self.mqtts = rest
            elif kind == "control":
                self.control_url = rest
            elif kind == "ca":
                self.ca_file = rest
            elif kind == "dps":
                key, _, value = rest.partition(" ")
                if key in ("enrollment", "group"):
                    rid, _, k = value.partition(" ")
                    self.dps[key + "s"][rid] = k
                else:
                    self.dps[key] = value
            elif kind.startswith("hub") and " control " in rest:
                host, _, tail = rest.partition(" ")
                self.hubs[host] = tail.rpartition(" control ")[2]
            elif kind == "device":
                dev, _, cs = rest.partition(" ")
                self.connection_strings[dev] = cs
        self._ready.set()  # EOF: wake the waiter, which then sees the exit

    def stop(self):
        """SIGTERM to the PID, SIGKILL after 5 s, then remove the state dir."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        for r in self._readers:
            r.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def control(self, method, path, body=None, timeout=15, base_url=None):
        """Calls the HTTP control API (the first hub's, or the one at base_url); returns (status, parsed JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request((base_url or self.control_url) + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as res:
                status, text = res.status, res.read()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read()
        return status, (json.loads(text) if text else None)


def within(seconds, fn, *args, **kwargs):
    """Runs a blocking SDK call with a deadline (the sync SDK calls have none of their own).

    The call runs on a daemon thread so that a call stuck past its deadline cannot hold up the interpreter's exit.
    """
    outcome = {}
    done = threading.Event()

    def run():
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as err:  # handed to the caller below
            outcome["error"] = err
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name=f"sdk-call-{getattr(fn, '__name__', 'fn')}").start()
    if not done.wait(seconds):
        raise AssertionError(f"{getattr(fn, '__name__', fn)} did not finish within {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
