"""Processes and network pieces of the reliability matrix: hubsim, the C device driver, mosquitto, an MQTT
subscriber standing in for mosquitto's "hub record", and a TCP front that stands in for a DNS name.

Everything here runs on 127.0.0.1 only, every wait has a deadline, and every process is stopped by its PID.
Python 3 standard library only.
"""

import base64
import json
import os
import pwd
import select
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


class Failure(Exception):
    """A scenario could not run (a process did not start, a wait passed its deadline)."""


class Proc:
    """A child process whose stdout lines are collected by a reader thread; stop() ends it by its PID."""

    def __init__(self, name, argv, log_path, stdin=subprocess.DEVNULL, cwd=None):
        self.name = name
        self.lines = []
        self.cond = threading.Condition()
        self.log = open(log_path, "w", encoding="utf-8")
        self.popen = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      cwd=cwd, text=True, errors="replace", bufsize=1)
        self.reader = threading.Thread(target=self._read, name=name + "-reader", daemon=True)
        self.reader.start()

    @property
    def pid(self):
        return self.popen.pid

    def _read(self):
        for line in self.popen.stdout:  # ends at EOF, i.e. when the process exits
            line = line.rstrip("\n")
            self.log.write(line + "\n")
            self.log.flush()
            self.on_line(line)
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def on_line(self, line):
        """Subclasses parse lines here (called on the reader thread, before waiters are woken)."""

    def wait_for(self, predicate, timeout, what):
        """Waits until predicate() (called under the lock) is true; raises Failure at the deadline or exit."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"{self.name}: timed out after {timeout:.0f} s waiting for {what}")
                if self.popen.poll() is not None and not self.reader.is_alive():
                    if predicate():
                        break
                    raise Failure(f"{self.name}: exited ({self.popen.returncode}) while waiting for {what}")
                self.cond.wait(min(left, 0.5))

    def wait_line(self, prefix, timeout):
        """Waits for a line starting with prefix and returns it."""
        found = []

        def seen():
            found[:] = [l for l in self.lines if l.startswith(prefix)][:1]
            return bool(found)

        self.wait_for(seen, timeout, repr(prefix))
        return found[0]

    def exit_code(self, timeout):
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, grace=10):
        """Sends sig to the process, then SIGKILL after grace seconds; waits for it and its reader."""
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            if self.exit_code(grace) is None:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self.reader.join(10)
        self.log.close()
        return self.popen.returncode


class Hub(Proc):
    """build/bin/iotconn-hubsim on 127.0.0.1:0 ports with a fresh state directory and one device."""

    def __init__(self, binary, state_dir, device, log_path):
        self.device = device
        argv = [binary, "--dir", state_dir, "--mqtt", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0",
                "--amqp", "127.0.0.1:0", "--amqp-ws", "127.0.0.1:0", "--control", "127.0.0.1:0", "--device", device]
        super().__init__("hubsim", argv, log_path)
        self.wait_line("hubsim: ready", 60)
        info = {}
        for line in self.lines:
            key, _, value = line.removeprefix("hubsim: ").partition(" ")
            info.setdefault(key, value)
        self.mqtt_addr = info["mqtts"]
        self.tcp_addr = info["tcp"]
        self.ws_addr = info["ws"]
        self.amqp_addr = info["amqps"]
        self.amqp_ws_addr = info["amqp-ws"]
        self.control = info["control"]
        self.ca = info["ca"]
        self.conn_str = info["device"].removeprefix(device + " ")

    def api(self, method, path, body=None, timeout=10):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.control + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise Failure(f"hubsim {method} {path}: HTTP {e.code}: {e.read().decode(errors='replace')}") from e

    def fault(self, **fault):
        return self.api("POST", "/faults", fault)

    def messages(self):
        """Every D2C message the hub recorded for the device, in arrival order (with repeats), as the control API
        gives them, with the payload decoded from base64 to bytes."""
        msgs = self.api("GET", f"/devices/{self.device}/messages", timeout=60)
        for m in msgs:
            m["payload"] = base64.b64decode(m["payload"])
        return msgs

    def message_ids(self):
        """The $.mid of every D2C message the hub recorded for the device, in arrival order (with repeats)."""
        return [m["messageId"] for m in self.messages()]

    def log_lines(self, needle):
        with self.cond:
            return [l for l in self.lines if needle in l]


class Device(Proc):
    """The C driver (tests/reliability/device.c); its JSON lines are parsed into self.events."""

    def __init__(self, binary, args, log_path):
        self.events = []
        super().__init__("device", [binary, *args], log_path, stdin=subprocess.PIPE)

    def on_line(self, line):
        try:
            ev = json.loads(line)
        except ValueError:
            ev = {"t": time.monotonic(), "ev": "stderr", "msg": line}
        self.events.append(ev)  # under the GIL; waiters re-read under the condition

    def count(self, kind, since=0.0, **match):
        return sum(1 for e in self.events
                   if e["ev"] == kind and e["t"] >= since and all(e.get(k) == v for k, v in match.items()))

    def wait_delivered(self, n, since, timeout):
        self.wait_for(lambda: self.count("done", since, result="delivered") >= n, timeout,
                      f"{n} deliveries")

    def wait_status(self, status, reason, since, timeout):
        self.wait_for(lambda: self.count("status", since, status=status, reason=reason) > 0, timeout,
                      f"status {status}/{reason}")

    def finish(self, timeout):
        """Closes stdin (the driver's stop signal) and waits for its exit; returns the exit code."""
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        code = self.exit_code(timeout)
        if code is None:
            self.stop(signal.SIGKILL)
            raise Failure(f"device did not exit within {timeout} s of being told to stop")
        self.reader.join(10)
        return code


def free_port():
    """A port nothing listens on now (the kernel's pick); the caller binds it soon after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Front:
    """A fixed address (127.0.0.1:port) that forwards each new TCP connection to the current target: the
    stand-in for a DNS name whose record is updated when the hub moves. Connections already forwarded keep
    their old upstream; a new one whose upstream refuses is closed at once."""

    def __init__(self, target):
        self.target = target
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.conns = []
        self.threads = []
        self.ln = socket.socket()
        self.ln.bind(("127.0.0.1", 0))
        self.ln.listen(16)
        self.ln.settimeout(0.2)
        self.port = self.ln.getsockname()[1]
        self._spawn(self._accept)

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        with self.lock:
            self.threads.append(t)
        t.start()

    def set_target(self, target):
        with self.lock:
            self.target = target

    def _accept(self):
        while not self.stopped.is_set():
            try:
                client, _ = self.ln.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                host, port = self.target.rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.conns += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, src, dst):
        # select, not a socket timeout: a timeout would also apply to sendall on the same socket in the other
        # direction and cut a slow but healthy connection.
        while not self.stopped.is_set():
            try:
                readable, _, _ = select.select([src], [], [], 0.2)
                if not readable:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
            except (OSError, ValueError):  # reset, or closed by close()
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.stopped.set()
        self.ln.close()
        with self.lock:
            threads, conns = list(self.threads), list(self.conns)
        for t in threads:
            t.join(5)
        for s in conns:
            s.close()


# ---- MQTT 3.1.1, the few packets the subscriber and the throttle flood need -------------------------------------

def _remaining_length(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id, clean, keepalive=30):
    body = _utf8("MQTT") + bytes([4, 0x02 if clean else 0]) + struct.pack("!H", keepalive) + _utf8(client_id)
    return b"\x10" + _remaining_length(len(body)) + body


def _read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def read_packet(sock):
    """Returns (type nibble, flags nibble, body)."""
    first = _read_exact(sock, 1)[0]
    n, shift = 0, 0
    for _ in range(4):
        b = _read_exact(sock, 1)[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return first >> 4, first & 0x0F, _read_exact(sock, n)


def mid_of_topic(topic):
    """The $.mid in an IoT Hub telemetry topic's property bag (devices/{id}/messages/events/{bag})."""
    _, _, bag = topic.partition("/messages/events/")
    for key, value in urllib.parse.parse_qsl(bag, keep_blank_values=True):
        if key == "$.mid":
            return value
    return None


class Subscriber:
    """A QoS 1 subscriber with a persistent session (clean session 0) on a TLS MQTT broker, reconnecting while
    the broker is away: what it receives is mosquitto's "hub record"."""

    def __init__(self, port, ca_file, client_id, topic):
        self.port, self.client_id, self.topic = port, client_id, topic
        self.ctx = ssl.create_default_context(cafile=ca_file)
        self.records = []  # $.mid of every PUBLISH received, with repeats
        self.connects = 0
        self.resumed = False  # a later session found the first one's state
        self.cond = threading.Condition()
        self.stopped = threading.Event()
        self.sock = None
        self._session()  # the first session is made here, so the subscription exists before the device sends
        self.thread = threading.Thread(target=self._run, name="subscriber", daemon=True)
        self.thread.start()

    def _session(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock = self.ctx.wrap_socket(raw, server_hostname="localhost")
        sock.sendall(connect_packet(self.client_id, clean=False))
        kind, _, body = read_packet(sock)
        if kind != 2 or body[1] != 0:
            sock.close()
            raise ConnectionError(f"CONNACK {body!r}")
        if body[0] & 1:  # session present: the broker kept the subscription (and queued what came meanwhile)
            self.resumed = True
        else:  # subscribe only on a new session, so a broker that lost the session loses the messages too
            sub = struct.pack("!H", 1) + _utf8(self.topic) + b"\x01"
            sock.sendall(b"\x82" + _remaining_length(len(sub)) + sub)
        sock.settimeout(1.0)
        with self.cond:
            self.sock = sock
            self.connects += 1
            self.cond.notify_all()

    def _run(self):
        last_ping = time.monotonic()
        while not self.stopped.is_set():
            if self.sock is None:
                try:
                    self._session()
                except OSError:
                    self.stopped.wait(0.2)  # the broker is away: try again shortly (until stopped)
                continue
            try:
                if time.monotonic() - last_ping > 10:
                    self.sock.sendall(b"\xc0\x00")
                    last_ping = time.monotonic()
                kind, flags, body = read_packet(self.sock)
            except socket.timeout:
                continue
            except (OSError, ConnectionError):
                self.sock.close()
                self.sock = None
                continue
            if kind != 3:  # only PUBLISH matters; SUBACK and PINGRESP are ignored
                continue
            (tlen,) = struct.unpack("!H", body[:2])
            topic = body[2:2 + tlen].decode()
            qos = (flags >> 1) & 3
            if qos:
                packet_id = body[2 + tlen:4 + tlen]
                try:
                    self.sock.sendall(b"\x40\x02" + packet_id)
                except OSError:
                    pass  # the broker resends it on the next session
            with self.cond:
                self.records.append(mid_of_topic(topic))
                self.cond.notify_all()

    def wait_for(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))
        return True

    def close(self):
        self.stopped.set()
        self.thread.join(10)
        if self.sock is not None:
            self.sock.close()


def flood_connects(addr, count):
    """Sends count MQTT CONNECTs on new plain-TCP connections to addr (each one costs hubsim a connect of its
    throttle budget) and waits, bounded, until hubsim closed each."""
    host, port = addr.rsplit(":", 1)
    for i in range(count):
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.sendall(connect_packet(f"flood-{i}", clean=True))
            try:
                while s.recv(1024):
                    pass
            except OSError:
                pass


class Mosquitto(Proc):
    """mosquitto with a TLS listener on 127.0.0.1, persistence on and saved after every change."""

    @staticmethod
    def configure(work, port):
        """Makes a CA and a server certificate for localhost with openssl, and the config file."""
        def run(*argv):
            subprocess.run(argv, cwd=work, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=60)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=iotconn-reliability-ca", "-keyout", "ca-key.pem", "-out", "ca.pem")
        run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout",
            "server-key.pem", "-out", "server.csr")
        with open(os.path.join(work, "san.ext"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.pem")
        os.makedirs(os.path.join(work, "db"), exist_ok=True)
        conf = os.path.join(work, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"""user {pwd.getpwuid(os.getuid()).pw_name}
persistence true
persistence_location {work}/db/
autosave_on_changes true
autosave_interval 1
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
listener {port} 127.0.0.1
cafile {work}/ca.pem
certfile {work}/server.pem
keyfile {work}/server-key.pem
allow_anonymous true
""")
        return conf

    def __init__(self, binary, conf, log_path):
        super().__init__("mosquitto", [binary, "-c", conf], log_path)
        self.wait_for(lambda: any(" running" in l for l in self.lines), 30, "mosquitto running")
