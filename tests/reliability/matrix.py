#!/usr/bin/env python3
"""The fault matrix: for each fault, a device (the C driver, through the C ABI) streams telemetry while the fault
is injected mid-stream; the hub's own record and the device's log then say what was sent, delivered, duplicated
and lost, whether each message got exactly one completion, which status/reason sequence the app saw, and how
long reconnecting took compared with the retry policy's delay.

    python3 tests/reliability/matrix.py [--build build] [--out build/reliability] [--only NAME ...]

Writes OUT/results.json (report.py turns it into docs/reliability.md) and one log per process in OUT/logs/.
Exits 1 if any row fails its checks.
"""

import argparse
import base64
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Device, Failure, Front, Hub, Mosquitto, Subscriber, flood_connects, free_port  # noqa: E402

DEVICE_ID = "rel-device"
RATE = 100  # messages per second
WARMUP_DELIVERIES = 100  # deliveries before the fault (about 1 s of stream)
AFTER_DELIVERIES = 200  # deliveries after recovering, before the stream stops (about 2 s)
RECOVER_TIMEOUT = 60
DRAIN_TIMEOUT_MS = 30000
# Slack allowed between the end of the retry policy's wait and Connected: one successful dial (TCP, TLS
# handshake, CONNECT/CONNACK, SUBSCRIBE) on loopback takes tens of milliseconds; the rest covers the scheduler
# of this shared 2-core machine and the callback queue. It bounds how late a reconnect comes after the wait the
# engine logged; whether that wait was the right one is checked from the logged waits themselves (first_retry).
SLACK_S = 1.5
# The default policy's first delay: 100 ms + U[0, 80 ms]. After a healthy link drops, the first retry waits it;
# the no-network guard (1-3 s) is only for dials that failed fast.
FIRST_RETRY_MAX_S = 0.18
# Every wait of the throttling schedule (README: "Throttling").
THROTTLE_WAIT_S = (10.0, 60.0)

# Expected status sequences are regular expressions over "A > B > ..." of these tokens (escaped).
C = re.escape("Connected(Connection_Ok)")
CE = re.escape("Retrying(Communication_Error)")
NN = re.escape("Retrying(No_Network)")
EST = re.escape("Retrying(Expired_SAS_Token)")
CLOSE = re.escape("Disabled(Client_Close)")
BAD_CREDENTIAL = re.escape("Disconnected(Bad_Credential)")
DEVICE_DISABLED = re.escape("Disconnected(Device_Disabled)")

GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
RETRY_LOG = re.compile(r"attempt (\d+) failed \(.*\); next in (\S+)$")


def go_duration(text):
    """Seconds in a Go time.Duration string such as 1.5s, 999.87ms or 1m0.5s."""
    parts = re.findall(r"([0-9.]+)(h|ms|us|µs|ns|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * GO_UNITS[u] for n, u in parts)


def header_defines(pattern):
    """(name, value) of the #defines in include/iotconn.h (the one source of the ABI's numbers) that pattern
    matches."""
    header = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include", "iotconn.h")
    with open(header) as f:
        return re.findall(pattern, f.read())


ERROR_NAMES = {int(v): "IOTCONN_E" + n for n, v in header_defines(r"#define IOTCONN_E(\w+) \((-\d+)\)")}
LIMITS = {n: int(v) for n, v in header_defines(r"#define IOTCONN_MAX_(\w+) (\d+)")}


def status_token(ev):
    status = {"Disconnected_Retrying": "Retrying"}.get(ev["status"], ev["status"])
    return f"{status}({ev['reason']})"


# ---- analysis --------------------------------------------------------------------------------------------------

def analyze(events, hub_mids, expected, fatal, fault_at):
    """Computes a row's figures from the driver's events and the hub's record, and lists every failed check."""
    problems = []
    detected = None if fault_at is None else next(
        (e["t"] - fault_at for e in events if e["ev"] == "status" and e["t"] >= fault_at and e["status"] != "Connected"),
        None)
    sent = {e["id"]: e["mid"] for e in events if e["ev"] == "sent"}
    accepted_mids = set(sent.values())
    done = {}
    for e in events:
        if e["ev"] == "done":
            done.setdefault(e["id"], []).append(e)
    at_hub = {}
    for mid in hub_mids:
        at_hub[mid] = at_hub.get(mid, 0) + 1
    delivered = accepted_mids & set(at_hub)
    duplicates = sum(at_hub[m] - 1 for m in delivered)
    phantoms = sorted(set(at_hub) - accepted_mids)
    failed_ids = {i for i, evs in done.items() if any(e["result"] != "delivered" for e in evs)}
    failed_by = {}
    for i in sorted(failed_ids):
        e = next(e for e in done[i] if e["result"] != "delivered")
        key = f"{e['result']} {ERROR_NAMES.get(e['error'], e['error'])}"
        failed_by[key] = failed_by.get(key, 0) + 1
    missing = {i: m for i, m in sent.items() if m not in at_hub}
    silent = sorted(i for i in missing if i not in failed_ids)

    if not sent:
        problems.append("the device sent nothing")
    if silent:
        problems.append(f"{len(silent)} accepted messages never reached the hub and got no failed completion "
                        f"(first ids {silent[:5]})")
    if phantoms:
        problems.append(f"{len(phantoms)} message ids at the hub were never accepted: {phantoms[:5]}")
    wrong_count = sorted(i for i in sent if len(done.get(i, [])) != 1)
    if wrong_count:
        problems.append(f"{len(wrong_count)} messages did not get exactly one completion "
                        f"(id {wrong_count[0]}: {len(done.get(wrong_count[0], []))})")
    unknown = sorted(set(done) - set(sent))
    if unknown:
        problems.append(f"completions for ids never accepted: {unknown[:5]}")
    lying = sorted(i for i, evs in done.items()
                   if i in sent and any(e["result"] == "delivered" for e in evs) and sent[i] not in at_hub)
    if lying:
        problems.append(f"{len(lying)} messages completed as delivered but are not at the hub")
    if not fatal and missing:
        problems.append(f"{len(missing)} accepted messages were not delivered (a transient fault must not fail "
                        f"any)")
    if fatal and not failed_ids:
        problems.append("a fatal fault failed no message")
    refused = [e for e in events if e["ev"] == "refused"]
    if refused:  # every message the rows send is within every limit, and no queue bound is near
        e = refused[0]
        what = f"{e['mid'][:40]} ({e['case']})" if "case" in e else e["mid"]
        problems.append(f"{len(refused)} sends refused (first {what}: {ERROR_NAMES.get(e['rc'], e['rc'])} "
                        f"{e.get('message', '')})")

    sequence = [status_token(e) for e in events if e["ev"] == "status"]
    if not re.fullmatch(expected, " > ".join(sequence)):
        problems.append(f"status sequence {sequence} does not match {expected!r}")

    reconnects = reconnect_times(events)
    for r in reconnects:
        if r["lag"] > r["policy_delay"] + SLACK_S:
            problems.append(f"reconnected {r['lag']:.2f} s after the last failure, the policy said "
                            f"{r['policy_delay']:.2f} s (+{SLACK_S} s slack)")
    end = next((e for e in events if e["ev"] == "end"), None)
    if end is None:
        problems.append("the driver wrote no end line")
    elif not end["drained"] and not (fatal and end["status"] == "Disconnected"):
        problems.append("the driver's drain timed out: completions were missing before close")
    return {
        "sent": len(sent), "delivered": len(delivered), "duplicates": duplicates, "refused": len(refused),
        "lost": len(silent), "failed": len(failed_ids), "failed_by": failed_by, "hub_records": len(hub_mids),
        "sequence": sequence, "expected": expected, "reconnects": reconnects, "problems": problems,
        "detected_s": None if detected is None else round(detected, 3),
    }


def reconnect_times(events):
    """For each return to Connected after an outage: the downtime (first Retrying to Connected), the retry
    policy's last delay (from the engine's 'attempt N failed ...; next in D' log line; 0 when it reconnected
    at once, as after a token renewal) and the lag from that failure to Connected."""
    out = []
    down_at = last_fail = None
    delay = 0.0
    for e in events:
        if e["ev"] == "status" and e["status"] == "Disconnected_Retrying" and down_at is None:
            down_at, last_fail, delay = e["t"], e["t"], 0.0
        elif e["ev"] == "log" and down_at is not None:
            m = RETRY_LOG.search(e["msg"])
            if m:
                last_fail, delay = e["t"], go_duration(m.group(2))
        elif e["ev"] == "status" and e["status"] == "Connected" and down_at is not None:
            out.append({"downtime": round(e["t"] - down_at, 3), "policy_delay": round(delay, 3),
                        "lag": round(e["t"] - last_fail, 3)})
            down_at = None
        elif e["ev"] == "status" and e["status"] in ("Disconnected", "Disabled"):
            down_at = None
    return out


# ---- scenarios ---------------------------------------------------------------------------------------------------

class Run:
    """One scenario's processes and files."""

    def __init__(self, args, name):
        self.args, self.name = args, name
        self.tmp = tempfile.mkdtemp(prefix=f"iotconn-rel-{name}-")
        self.logs = os.path.join(args.out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.procs, self.closers = [], []

    def log(self, what):
        return os.path.join(self.logs, f"{self.name}.{what}.log")

    def hub(self):
        h = Hub(os.path.join(self.args.build, "bin", "iotconn-hubsim"), os.path.join(self.tmp, "hub"), DEVICE_ID,
                self.log("hubsim"))
        self.procs.append(h)
        return h

    def device(self, conn_str, ca, *extra, prefix=None, rate=RATE):
        args = ["--cs", conn_str, "--ca", ca, "--prefix", prefix or self.name, "--rate", str(rate),
                "--drain-timeout", str(DRAIN_TIMEOUT_MS), *extra]
        d = Device(os.path.join(self.args.build, "reliability", "device"), args, self.log("device"))
        self.procs.append(d)
        return d

    def close(self):
        for c in reversed(self.closers):
            c()
        for p in reversed(self.procs):
            p.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def stream_through(dev, inject, recovered=(("Connected", "Connection_Ok"),), warmup=WARMUP_DELIVERIES,
                   after_deliveries=AFTER_DELIVERIES, on_recovered=None):
    """Waits for the stream to flow (warmup deliveries), calls inject(), waits for the status that ends the fault,
    calls on_recovered() if given, lets the stream flow on (after_deliveries more), then stops the driver. Returns
    the monotonic time of the fault. recovered may be empty: a fault that no status shows (a renewal in place)."""
    dev.wait_status("Connected", "Connection_Ok", 0, 60)
    dev.wait_delivered(warmup, 0, 30)
    fault_at = time.monotonic()
    inject()
    for status, reason in recovered:
        dev.wait_status(status, reason, fault_at, RECOVER_TIMEOUT)
    if on_recovered:
        on_recovered()
    after = time.monotonic()
    if not recovered or recovered[-1][0] == "Connected":
        dev.wait_delivered(after_deliveries, after, 30)
    else:
        dev.wait_for(lambda: dev.count("sent", after) >= RATE // 2, 30, "sends after the fatal status")
    dev.finish(DRAIN_TIMEOUT_MS / 1000 + 30)
    return fault_at


def check_first_retry(row, events, fault_at):
    """The first retry after the fault cut a healthy link waited the policy's first delay, as the engine logged it."""
    waits = [RETRY_LOG.search(e["msg"]) for e in events if e["ev"] == "log" and e["t"] >= fault_at]
    first = next((m for m in waits if m), None)
    if first is None:
        row["problems"].append("no retry was logged after the fault")
    elif first.group(1) != "1" or go_duration(first.group(2)) > FIRST_RETRY_MAX_S:
        row["problems"].append(f"the first retry after the lost link was attempt {first.group(1)} after "
                               f"{first.group(2)}; want attempt 1 after the policy's first delay "
                               f"(<= {FIRST_RETRY_MAX_S} s)")


def check_throttle_schedule(row, events, needle):
    """Every retry after a failure whose logged error holds needle waited on the throttling schedule, and there was
    at least one."""
    waits = [(e["msg"], go_duration(m.group(2))) for e in events if e["ev"] == "log"
             for m in [RETRY_LOG.search(e["msg"])] if m and needle in e["msg"]]
    if not waits:
        row["problems"].append(f"no retry followed a failure logged with {needle!r}: the row tested nothing")
    lo, hi = THROTTLE_WAIT_S
    for msg, wait in waits:
        if not lo <= wait <= hi:
            row["problems"].append(f"a throttled attempt was followed by a wait of {wait:.2f} s, not the throttling "
                                   f"schedule's {lo:.0f}-{hi:.0f} s: {msg}")


# The device driver's --transport names, the hubsim listener each uses and the label in the results.
TRANSPORTS = {
    "mqtt": (lambda hub: hub.mqtt_addr, "MQTT over TLS"),
    "ws": (lambda hub: hub.ws_addr, "MQTT over WebSocket (TLS)"),
    "amqp": (lambda hub: hub.amqp_addr, "AMQP over TLS"),
    "amqp-ws": (lambda hub: hub.amqp_ws_addr, "AMQP over WebSocket (TLS)"),
}


def transport_of(name):
    """The transport a row runs over, from its name's suffix (-ws, -amqp, -amqp-ws; none: MQTT)."""
    return next((t for t in ("amqp-ws", "amqp", "ws") if name.endswith("-" + t)), "mqtt")


def transport_conn_str(hub, transport, port=None):
    """The device's connection string naming port, by default that of transport's listener (hubsim takes any port
    of its own host name in tokens)."""
    port = port or TRANSPORTS[transport][0](hub).rsplit(":", 1)[1]
    return re.sub(r"HostName=localhost:\d+", f"HostName=localhost:{port}", hub.conn_str)


def transport_device(r, hub, transport, *args, port=None, **kw):
    """A device over transport, through port if given (else that transport's listener); kw as Run.device's."""
    return r.device(transport_conn_str(hub, transport, port), hub.ca, "--transport", transport, *args, **kw)


def hub_scenario(fault, expected, fatal_reason=None, transport="mqtt", first_retry=False):
    """A scenario against hubsim whose fault is one control API call. A fatal fault ends in Disconnected with
    fatal_reason; any other ends when the device is Connected again. transport: the device driver's --transport
    (the connection string names that hubsim listener's port). first_retry: the fault cuts a healthy link, so the
    first retry must wait the policy's first delay."""
    def run(r):
        hub = r.hub()
        dev = transport_device(r, hub, transport)
        ends = (("Disconnected", fatal_reason),) if fatal_reason else (("Connected", "Connection_Ok"),)
        fault_at = stream_through(dev, lambda: hub.fault(**fault), ends)
        row = analyze(dev.events, hub.message_ids(), expected, fatal_reason is not None, fault_at)
        if first_retry:
            check_first_retry(row, dev.events, fault_at)
        return row, hub
    return run


def throttle(r, hub, dev, answer):
    """Throttle the hub to 1 connect/s, answering extra connects as answer says, while a flood of other clients
    takes each second's budget at its start, then cut the device's connection half a second into the next second:
    its first retry (100-180 ms later) finds the budget spent; the next comes on the throttling schedule (10-14 s),
    after the throttle ended."""
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            now = time.time()
            stop.wait(1.003 - (now - int(now)))  # a few ms into the next wall-clock second (hubsim's budget)
            if not stop.is_set():
                flood_connects(hub.tcp_addr, 2)

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    r.closers.append(lambda: (stop.set(), t.join(5)))
    time.sleep((0.3 - time.time()) % 1.0)  # to x.3 s: clear of the flood at x.0 and of the kill at x.5
    hub.fault(kind="throttle", rate=1, seconds=4, answer=answer)  # a new budget: this second's is free again
    time.sleep((0.5 - time.time()) % 1.0 + 1.0)  # to x.5 s of the next second, whose budget the flood took
    hub.fault(kind="kill-tcp", device=DEVICE_ID)
    dev.wait_status("Connected", "Connection_Ok", time.monotonic(), RECOVER_TIMEOUT)
    stop.set()
    t.join(5)


def check_throttled(row, hub, answer):
    n = sum(1 for l in hub.log_lines(f"reject {DEVICE_ID} ") if "throttled" in l)
    how = {"close": "closed without CONNACK", "server-unavailable": "answered CONNACK 3",
           "amqp": "answered com.microsoft:device-container-throttled"}[answer]
    row["notes"] = f"{n} of the device's connects throttled ({how}), each followed by a wait of the throttling schedule"
    if n == 0:
        row["problems"].append("the device was never throttled: the row tested nothing")


# The hubsim listener each transport's move-port row moves (control API "listener").
LISTENERS = {"mqtt": "mqtts", "ws": "ws", "amqp": "amqps", "amqp-ws": "amqpws"}


def move_port(r, hub, transport):
    """Move the transport's hubsim listener; the front (the device's HostName) keeps pointing at the old port for
    a 2.5 s 'TTL', then its record is updated."""
    new = hub.fault(kind="move-port", listener=LISTENERS[transport])["addr"]
    time.sleep(2.5)  # the stale-record period is part of the fault, not a synchronisation
    r.front.set_target(new)


def run_move_port(r, transport="mqtt"):
    hub = r.hub()
    r.front = Front(TRANSPORTS[transport][0](hub))
    r.closers.append(r.front.close)
    dev = transport_device(r, hub, transport, port=r.front.port)
    fault_at = stream_through(dev, lambda: move_port(r, hub, transport))
    row = analyze(dev.events, hub.message_ids(), rf"{C} > {CE} > {C} > {CLOSE}", False, fault_at)
    row["notes"] = ("HostName names a fixed front address (the DNS name's stand-in); the engine resolves and dials it "
                    "on every attempt. Until the front's record is updated it accepts each attempt and closes it at "
                    "once (the old port refuses it): a TLS handshake that fails after TCP connected is "
                    "Communication_Error, the status the lost link already set, so there is no second status event "
                    "(a DNS record naming a refusing address would give No_Network)")
    return row, hub


def throttle_scenario(answer, logged, transport="mqtt"):
    """The throttle row with the hub's answer to an extra connect; logged is what the engine's log line says of
    such a failure. Over AMQP the hub answers a device over the budget com.microsoft:device-container-throttled
    (answer is then the MQTT answer the flood's connects get)."""
    def run(r):
        hub = r.hub()
        dev = transport_device(r, hub, transport)
        fault_at = stream_through(dev, lambda: throttle(r, hub, dev, answer))
        row = analyze(dev.events, hub.message_ids(), rf"{C} > {CE} > {C} > {CLOSE}", False, fault_at)
        check_throttled(row, hub, "amqp" if transport.startswith("amqp") else answer)
        check_throttle_schedule(row, dev.events, logged)
        return row, hub
    return run


def run_disable_device(r):
    """Disable the device mid-life and enable it again 3 s later."""
    hub = r.hub()
    dev = r.device(hub.conn_str, hub.ca)

    def disable_then_enable():
        hub.fault(kind="disable-device", device=DEVICE_ID)
        time.sleep(3)  # how long the device stays disabled: part of the fault, not a synchronisation
        hub.api("PATCH", f"/devices/{DEVICE_ID}", {"status": "enabled"})

    fault_at = stream_through(dev, disable_then_enable)
    row = analyze(dev.events, hub.message_ids(), rf"{C} > {CE} > {C} > {CLOSE}", False, fault_at)
    n = sum(1 for l in hub.log_lines(f"reject {DEVICE_ID} ") if "connack 3" in l)
    row["notes"] = (f"{n} of the device's connects refused with CONNACK 3 while it was disabled, each taken for "
                    f"throttling and followed by a wait of the throttling schedule")
    if n == 0:
        row["problems"].append("the device was never refused while disabled: the row tested nothing")
    check_throttle_schedule(row, dev.events, "taken for throttling")
    return row, hub


# The smallest token options the engine accepts (lifetime >= 60 s, margin >= 5 s, lifetime - margin >= 30 s) that
# renew twice in about a minute: every 30 s from the token's making.
SAS_LIFETIME_S, SAS_MARGIN_S = 60, 30


def run_token_lifetime_amqp(transport):
    """Over AMQP the token is renewed in place (a put-token on the live connection): two renewals pass with no
    status event, one connection, and nothing lost or repeated."""
    def run(r):
        hub = r.hub()  # token grace 0: the hub would drop the device the moment its token expired
        dev = transport_device(r, hub, transport, "--sas-lifetime", str(SAS_LIFETIME_S), "--sas-margin",
                               str(SAS_MARGIN_S))
        renewed = lambda: sum(1 for e in dev.events if e["ev"] == "log" and "renewed in place" in e["msg"])
        stream_through(dev, lambda: dev.wait_for(lambda: renewed() >= 2, 2 * (SAS_LIFETIME_S - SAS_MARGIN_S) + 30,
                                                 "two token renewals in place"), recovered=())
        row = analyze(dev.events, hub.message_ids(), rf"{C} > {CLOSE}", False, None)
        connects = len(hub.log_lines(f"hubsim: connect {DEVICE_ID} "))
        row["notes"] = (f"SAS lifetime {SAS_LIFETIME_S} s, renewed {SAS_MARGIN_S} s before expiry: {renewed()} "
                        f"renewals in place, {connects} connection")
        if connects != 1:
            row["problems"].append(f"{connects} connections: a renewal reconnected")
        if hub.log_lines("sas token expired"):
            row["problems"].append(f"the hub dropped the device for an expired token")
        return row, hub
    return run


def run_token_lifetime(r):
    hub = r.hub()  # token grace 0 (the default): the hub drops a connection the moment its token expires
    dev = r.device(hub.conn_str, hub.ca, "--sas-lifetime", str(SAS_LIFETIME_S), "--sas-margin", str(SAS_MARGIN_S))
    # Renewal replaces the connection every lifetime - margin: wait for two renewals as "the fault".
    fault_at = stream_through(dev, lambda: dev.wait_for(
        lambda: dev.count("status", reason="Expired_SAS_Token") >= 2, 2 * (SAS_LIFETIME_S - SAS_MARGIN_S) + 30,
        "two token renewals"))
    row = analyze(dev.events, hub.message_ids(), rf"{C}( > {EST} > {C}){{2,}} > {CLOSE}", False, None)
    expired = hub.log_lines("sas token expired")
    renewals = sum(1 for s in row["sequence"] if s == "Retrying(Expired_SAS_Token)")
    row["notes"] = (f"SAS lifetime {SAS_LIFETIME_S} s, renewed {SAS_MARGIN_S} s before expiry (the smallest the "
                    f"engine's floors allow that renew every 30 s): {renewals} renewals")
    if expired:
        row["problems"].append(f"the hub dropped the device for an expired token: {expired[0]}")
    return row, hub


def run_blackhole(r, transport="mqtt"):
    hub = r.hub()
    dev = transport_device(r, hub, transport, "--keepalive", "2")
    fault_at = stream_through(dev, lambda: hub.fault(kind="blackhole", seconds=BLACKHOLE_S))
    row = analyze(dev.events, hub.message_ids(), rf"{C} > {CE} > {C} > {CLOSE}", False, fault_at)
    row["notes"] = (f"keep-alive 2 s; blackhole {BLACKHOLE_S} s. The attempt that hangs in the TLS handshake fails "
                    f"when the blackhole ends and hubsim closes it: a TLS handshake that fails after TCP connected is "
                    f"Communication_Error, the status the lost link already set, so there is no second status event")
    return row, hub


# paho declares a link dead keep-alive + its 10 s ping timeout after the last traffic, so the blackhole outlasts
# that and the first reconnect attempt (which then hangs in the TLS handshake until the blackhole ends).
BLACKHOLE_S = 16


# ---- twins and methods ------------------------------------------------------------------------------------------

TWIN_EVERY = 20  # a reported patch after every 20th message: 5 a second at RATE
DESIRED_PATCHES = 3  # desired changes made right after each fault


def twin_scenario(fault, expected, offline, transport="mqtt"):
    """Twins and methods across a fault: the device (--twin-every) reports {"seq":N} after every TWIN_EVERY-th
    message throughout; right after the fault DESIRED_PATCHES desired changes are made (offline: once the device
    saw the link go, while the hub is certainly away); once it is back, the last of them must have reached it,
    and a method call is answered."""
    def run(r):
        hub = r.hub()
        dev = transport_device(r, hub, transport, "--twin-every", str(TWIN_EVERY))
        made, answers, method_payload = [], [], {"after": fault["kind"]}

        def inject():
            at = time.monotonic()
            hub.fault(**fault)
            if offline:
                dev.wait_status("Disconnected_Retrying", "Communication_Error", at, 30)
            for i in range(DESIRED_PATCHES):
                twin = hub.api("PATCH", f"/devices/{DEVICE_ID}/twin/desired", {"n": i, f"k{i}": True})
                made.append(twin["desired"]["$version"])

        def after_reconnect():
            dev.wait_for(lambda: dev.count("desired", version=made[-1]) > 0, 30, f"desired version {made[-1]}")
            answers.append(hub.api("POST", f"/devices/{DEVICE_ID}/methods/ping?timeout=30", method_payload,
                                   timeout=40))

        fault_at = stream_through(dev, inject, on_recovered=after_reconnect)
        row = analyze(dev.events, hub.message_ids(), expected, False, fault_at)
        row["twin"] = check_twin(row["problems"], dev.events, hub.api("GET", f"/devices/{DEVICE_ID}/twin"), made,
                                 offline, fault_at, method_payload, answers)
        t = row["twin"]
        row["notes"] = (f"{t['reports']} reported patches ({t['reports_in_outage']} during the outage), "
                        f"{t['reported_ok']} applied in order; desired changes v{made[0]}-v{made[-1]} made "
                        f"{'while offline' if offline else 'right after the fault'}, {t['desired_after']} desired "
                        f"update(s) after it, the last v{t['desired_last']}; the method call after the reconnect "
                        f"answered {t['method_status']}")
        return row, hub
    return run


def check_twin(problems, events, hub_twin, made, offline, fault_at, method_payload, answers):
    """The twin and method checks of a twin row (appended to problems); returns the row's twin figures."""
    reports = {e["id"]: e["seq"] for e in events if e["ev"] == "report"}
    reported = {}
    for e in events:
        if e["ev"] == "reported":
            reported.setdefault(e["id"], []).append(e)
    wrong = sorted(i for i in reports if len(reported.get(i, [])) != 1)
    if wrong:
        problems.append(f"{len(wrong)} reported patches did not get exactly one completion "
                        f"(id {wrong[0]}: {len(reported.get(wrong[0], []))})")
    unknown = sorted(set(reported) - set(reports))
    if unknown:
        problems.append(f"reported completions for ids never accepted: {unknown[:5]}")
    failed = sorted(i for i, evs in reported.items() if any(e["error"] for e in evs))
    if failed:
        e = reported[failed[0]][0]
        problems.append(f"{len(failed)} reported patches failed (id {failed[0]}: "
                        f"{ERROR_NAMES.get(e['error'], e['error'])} {e['message']})")
    versions = [reported[i][0]["version"] for i in sorted(reports) if i in reported]
    if any(b <= a for a, b in zip(versions, versions[1:])):
        problems.append(f"reported patches were applied out of order: versions {versions}")
    if reports and hub_twin["reported"].get("seq") != max(reports.values()):
        problems.append(f"the hub's reported seq is {hub_twin['reported'].get('seq')}, the last patch's "
                        f"{max(reports.values())}")
    back = next((e["t"] for e in events if e["ev"] == "status" and e["t"] > fault_at and e["status"] == "Connected"),
                None)
    in_outage = sum(1 for e in events if e["ev"] == "report" and back is not None and fault_at <= e["t"] < back)
    if offline and in_outage == 0:
        problems.append("no reported patch was made during the outage: the row tested less than it claims")

    desired = [e for e in events if e["ev"] == "desired"]
    dv = [e["version"] for e in desired]
    if any(b <= a for a, b in zip(dv, dv[1:])):
        problems.append(f"desired versions delivered out of order or twice: {dv}")
    after = [e for e in desired if e["t"] >= fault_at]
    if not after or after[-1]["version"] != made[-1]:
        problems.append(f"the desired updates after the fault end at {after[-1]['version'] if after else None}, "
                        f"not the latest version {made[-1]}")
    elif json.loads(after[-1]["patch"]).get("n") != DESIRED_PATCHES - 1:
        problems.append(f"the latest desired update holds {after[-1]['patch']}")
    if offline and [e["version"] for e in after] != [made[-1]]:
        problems.append(f"desired changes made while offline arrived as versions {[e['version'] for e in after]}, "
                        f"want one update of the latest, {made[-1]}")
    if hub_twin["desired"]["$version"] != made[-1]:
        problems.append(f"the hub's desired version is {hub_twin['desired']['$version']}, not {made[-1]}")

    calls = [e for e in events if e["ev"] == "method"]
    status = answers[0]["status"] if answers else None
    if answers != [{"status": 200, "payload": {"echo": method_payload}}] or [c["rc"] for c in calls] != [0]:
        problems.append(f"the method call after the reconnect with {method_payload}: answer {answers}, the device "
                        f"saw {calls}")
    return {"reports": len(reports), "reported_ok": len(reports) - len(failed) - len(wrong),
            "reports_in_outage": in_outage, "desired_made": made, "desired_after": len(after),
            "desired_last": after[-1]["version"] if after else None, "method_status": status}


# ---- near-limit messages -----------------------------------------------------------------------------------------

MAX_MESSAGE_SIZE, MAX_MESSAGE_ID, MAX_TOPIC = (LIMITS["MESSAGE_SIZE"], LIMITS["MESSAGE_ID_LENGTH"],
                                               LIMITS["MQTT_TOPIC_LENGTH"])
LIMIT_OF = {"id": MAX_MESSAGE_ID, "size": MAX_MESSAGE_SIZE, "topic": MAX_TOPIC}
# Which limits each of the device's --near-limits cases sits at (device.c: near_limit_message).
NEAR_LIMIT_CASES = {"message-id": ("id",), "byte-classes": (), "size": ("size",), "topic": ("topic",),
                    "all-limits": ("id", "size", "topic")}
# What each over-the-limit probe must be refused with.
PROBES = {"message-id+1": "IOTCONN_ETOOLARGE", "size+1": "IOTCONN_ETOOLARGE", "topic+1": "IOTCONN_ETOOLARGE",
          "reserved-key": "IOTCONN_EINVAL"}
# Characters the byte-classes cases must carry in their property names or values.
BYTE_CLASSES = " &=%+/?#\x01\x7f\u00e9\u20ac\U0001f600"
CREATION_TIME = "iothub-creation-time-utc"  # the one "iothub-" property a device may set; they must carry it too
FIELDS = ("messageId", "payload", "correlationId", "contentType", "contentEncoding", "propertyList")
NEAR_LIMITS_RATE = 20  # messages per second; two in five are 256 KB
NEAR_LIMITS_WARMUP, NEAR_LIMITS_AFTER = 25, 50  # deliveries before the fault and after recovering


def hub_size(m):
    """A message's size as IoT Hub counts it: payload, system property values, property names and values."""
    system = ("messageId", "correlationId", "contentType", "contentEncoding")
    return (len(m["payload"]) + sum(len(m[f].encode()) for f in system)
            + sum(len(k.encode()) + len(v.encode()) for k, v in m["propertyList"]))


def topic_len(m):
    """The length of the MQTT topic carrying m: devices/{id}/messages/events/ and the property bag, the set system
    properties first, every byte of each name and value but A-Z a-z 0-9 - _ . ~ percent-encoded."""
    system = [("$.mid", m["messageId"]), ("$.cid", m["correlationId"]), ("$.ct", m["contentType"]),
              ("$.ce", m["contentEncoding"])]
    pairs = [p for p in system if p[1]] + [tuple(p) for p in m["propertyList"]]
    bag = "&".join(urllib.parse.quote(k, safe="") + "=" + urllib.parse.quote(v, safe="") for k, v in pairs)
    return len(f"devices/{DEVICE_ID}/messages/events/") + len(bag)


def first_difference(sent, record, ordered=True):
    """None when the hub's record has every field of the sent message unchanged, else where the first difference
    is: the byte of a field, or the property of the property list (in order, unless not ordered: AMQP carries
    the properties as a map)."""
    for field in FIELDS:
        a, b = sent[field], record.get(field)
        if field == "propertyList":
            a, b = [tuple(p) for p in a], [tuple(p) for p in b or []]
            if not ordered:
                a, b = sorted(a), sorted(b)
        elif isinstance(a, str):
            a, b = a.encode(), (b or "").encode()
        if a == b:
            continue
        i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        if field == "propertyList":
            return (f"propertyList differs at property {i} ({len(a)} sent, {len(b)} recorded): "
                    f"{a[i] if i < len(a) else None!r} recorded as {b[i] if i < len(b) else None!r}")
        return (f"{field} differs at byte {i} ({len(a)} bytes sent, {len(b)} recorded): "
                f"{a[i:i + 8]!r} recorded as {b[i:i + 8]!r}")
    return None


def compare_records(events, sent, records, amqp=False):
    """The near-limits row's own checks: each message send accepted (its line in the device's sent file) against
    every hub record of its message id, field by field; that every case's messages sit at their limits and carry
    every byte class; and that every probe one byte over a limit was refused with the right code. Lost and
    duplicated messages are analyze's. Over AMQP (amqp) the properties are a map, compared regardless of order,
    and the MQTT topic is no limit: the topic cases are ordinary messages and have no probe."""
    problems = []
    accepted = [e["mid"] for e in events if e["ev"] == "sent"]
    by_mid = {m["messageId"]: dict(m, payload=base64.b64decode(m["payload"])) for m in sent}
    unrecorded = [mid for mid in accepted if mid not in by_mid]
    if unrecorded:
        problems.append(f"{len(unrecorded)} accepted messages are not in the device's sent file: {unrecorded[:3]}")
    at_hub = {}
    for rec in records:
        at_hub.setdefault(rec["messageId"], []).append(rec)
    cases = {c: {"accepted": 0, "recorded": 0, "identical": 0} for c in NEAR_LIMIT_CASES}
    differences, off_limit, missing_classes = [], [], set()
    for mid in accepted:
        m = by_mid.get(mid)
        if m is None:
            continue
        case = cases[m["case"]]
        case["accepted"] += 1
        case["recorded"] += bool(at_hub.get(mid))
        for rec in at_hub.get(mid, []):
            diff = first_difference(m, rec, ordered=not amqp)
            case["identical"] += diff is None
            if diff:
                differences.append(f"{mid[:40]} ({m['case']}): {diff}")
        measured = {"id": len(mid), "size": hub_size(m), "topic": topic_len(m)}
        off_limit += [f"{mid[:40]} ({m['case']}): {what} {measured[what]}, not {LIMIT_OF[what]}"
                      for what in NEAR_LIMIT_CASES[m["case"]] if measured[what] != LIMIT_OF[what]]
        if m["case"] in ("byte-classes", "all-limits"):
            text = "".join(k + v for k, v in m["propertyList"])
            missing_classes |= {c for c in BYTE_CLASSES if c not in text}
            if CREATION_TIME not in dict(m["propertyList"]):
                missing_classes.add(CREATION_TIME)
    if differences:
        problems.append(f"{len(differences)} hub records differ from what send accepted; first: "
                        + "; ".join(differences[:3]))
    if off_limit:
        problems.append(f"{len(off_limit)} messages are not at the limits their case claims: {off_limit[:3]}")
    if missing_classes:
        problems.append(f"the byte-class messages lack {sorted(missing_classes)!r}")
    empty = sorted(c for c, n in cases.items() if not n["accepted"])
    if empty:
        problems.append(f"no message of the cases {empty} was sent: the row tested less than it claims")
    probes = {e["case"]: ERROR_NAMES.get(e["rc"], e["rc"]) for e in events if e["ev"] == "probe"}
    for name, want in PROBES.items():
        if amqp and name == "topic+1":
            if name in probes:
                problems.append(f"probe {name} was sent over AMQP, where the MQTT topic is no limit")
            continue
        if probes.get(name) != want:
            problems.append(f"probe {name} (one byte over its limit) got {probes.get(name, 'no answer')}, not {want}")
    return {"accepted": len(accepted), "recorded": sum(c["recorded"] for c in cases.values()),
            "records": sum(len(at_hub.get(mid, [])) for mid in accepted),
            "identical": sum(c["identical"] for c in cases.values()), "cases": cases, "probes": probes,
            "problems": problems}


def run_near_limits(r, transport="mqtt"):
    """Messages at every limit through a TCP reset: the hub must record each one send accepted byte-identical."""
    hub = r.hub()
    sent_file = os.path.join(r.tmp, "sent.jsonl")
    dev = transport_device(r, hub, transport, "--near-limits", sent_file, rate=NEAR_LIMITS_RATE)
    fault_at = stream_through(dev, lambda: hub.fault(kind="kill-tcp", device=DEVICE_ID),
                              warmup=NEAR_LIMITS_WARMUP, after_deliveries=NEAR_LIMITS_AFTER)
    records = hub.messages()
    row = analyze(dev.events, [m["messageId"] for m in records], rf"{C} > {CE} > {C} > {CLOSE}", False, fault_at)
    with open(sent_file, encoding="utf-8") as f:
        sent = [json.loads(line) for line in f]
    fidelity = compare_records(dev.events, sent, records, amqp=transport.startswith("amqp"))
    row["problems"] += fidelity.pop("problems")
    row["near_limits"] = dict(fidelity, rate=NEAR_LIMITS_RATE)
    row["notes"] = (f"{fidelity['accepted']} messages at the limits accepted, {fidelity['recorded']} at the hub, "
                    f"{fidelity['identical']} of {fidelity['records']} records byte-identical "
                    f"(see Near-limit messages)")
    return row, hub


def run_mosquitto(r):
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = Mosquitto.configure(r.tmp, port)
    broker = Mosquitto(binary, conf, r.log("mosquitto"))
    r.procs.append(broker)
    sub = Subscriber(port, os.path.join(r.tmp, "ca.pem"), "reliability-record", f"devices/{DEVICE_ID}/messages/events/#")
    r.closers.append(sub.close)
    conn_str = f"HostName=localhost:{port};DeviceId={DEVICE_ID};SharedAccessKey=cmVsaWFiaWxpdHktbW9zcXVpdHRvLWtleQ=="
    dev = r.device(conn_str, os.path.join(r.tmp, "ca.pem"))
    restarted = []

    def kill_and_restart():
        os.kill(broker.pid, signal.SIGKILL)
        broker.stop()
        time.sleep(2)  # the broker stays down 2 s: part of the fault
        again = Mosquitto(binary, conf, r.log("mosquitto-restarted"))
        r.procs.append(again)
        restarted.append(again)

    fault_at = stream_through(dev, kill_and_restart)
    acked = {e["id"] for e in dev.events if e["ev"] == "done" and e["result"] == "delivered"}
    wanted = {e["mid"] for e in dev.events if e["ev"] == "sent" and e["id"] in acked}
    sub.wait_for(lambda: wanted <= set(sub.records), 20)
    with sub.cond:
        records = list(sub.records)
    row = analyze(dev.events, records, rf"{C} > {CE} > {NN} > {C} > {CLOSE}", False, fault_at)
    row["notes"] = (f"the record is a QoS 1 subscriber with a persistent session; after the restart the broker "
                    f"had its session{'' if sub.resumed else ' NOT'} (subscribed once, {sub.connects} sessions)")
    if not sub.resumed:
        row["problems"].append("mosquitto did not restore the subscriber's session from its persistence file")
    return row, None


CRASH_QUEUED = 300  # messages accepted during the outage before the device process is killed


def run_crash(r, transport="mqtt"):
    """Durable queue: a device queues CRASH_QUEUED messages while the hub is down and is killed with kill -9; a
    new process on the same queue directory, started while the hub is still down, delivers them all."""
    hub = r.hub()
    queue_dir = os.path.join(r.tmp, "queue")
    first = transport_device(r, hub, transport, "--queue-dir", queue_dir, prefix="crash")
    first.wait_status("Connected", "Connection_Ok", 0, 60)
    first.wait_delivered(WARMUP_DELIVERIES, 0, 30)
    fault_at = time.monotonic()
    hub.fault(kind="hub-down", seconds=CRASH_OUTAGE_S)
    first.wait_status("Disconnected_Retrying", "No_Network", fault_at, 30)
    outage = next(e["t"] for e in first.events if e["ev"] == "status" and e["t"] >= fault_at)
    first.wait_for(lambda: first.count("sent", outage) >= CRASH_QUEUED, 30, f"{CRASH_QUEUED} sends in the outage")
    first.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    if killed_at - fault_at >= CRASH_OUTAGE_S - 1:
        raise Failure("the kill came too late: the hub was nearly back before the device died")
    queued = first.count("sent", outage)
    before = [e for e in first.events if e["ev"] in ("sent", "done", "status")]
    acked = {e["id"] for e in before if e["ev"] == "done" and e["result"] == "delivered"}
    pending = {e["mid"] for e in before if e["ev"] == "sent" and e["id"] not in acked}

    second = Device(os.path.join(r.args.build, "reliability", "device"),
                    ["--cs", transport_conn_str(hub, transport), "--ca", hub.ca, "--transport", transport,
                     "--prefix", "crash-restarted", "--rate", "0",
                     "--queue-dir", queue_dir, "--connect-timeout", "60000", "--drain-timeout", str(DRAIN_TIMEOUT_MS)],
                    r.log("device-restarted"))
    r.procs.append(second)
    second.wait_for(lambda: second.count("recovered") > 0, 30, "the recovered count")
    recovered = next(e["count"] for e in second.events if e["ev"] == "recovered")
    second.wait_for(lambda: second.count("done") >= recovered, RECOVER_TIMEOUT, "a completion per recovered message")
    second.finish(DRAIN_TIMEOUT_MS / 1000 + 30)

    problems = []
    hub_mids = hub.message_ids()
    at_hub = set(hub_mids)
    accepted = {e["mid"] for e in first.events if e["ev"] == "sent"}
    lost = sorted(accepted - at_hub)
    if lost:
        problems.append(f"{len(lost)} messages accepted before the kill never reached the hub: {lost[:5]}")
    if recovered < len(pending):
        problems.append(f"the restarted process recovered {recovered} messages, {len(pending)} were pending")
    done = {}
    for e in second.events:
        if e["ev"] == "done":
            done.setdefault(e["id"], []).append(e["result"])
    bad = [i for i in range(1, recovered + 1) if done.get(i) != ["delivered"]]
    if bad:
        problems.append(f"{len(bad)} recovered messages did not complete exactly once as delivered "
                        f"(id {bad[0]}: {done.get(bad[0])})")
    sequence = [status_token(e) for e in second.events if e["ev"] == "status"]
    if not re.fullmatch(rf"({NN} > )?{C} > {CLOSE}", " > ".join(sequence)):
        problems.append(f"restarted process's status sequence {sequence}")
    return {
        "sent": len(accepted), "queued": queued, "pending_at_kill": len(pending), "recovered": recovered,
        "delivered": len(accepted & at_hub), "duplicates": sum(1 for m in hub_mids if m in accepted) - len(accepted & at_hub),
        "lost": len(lost), "sequence": sequence, "problems": problems,
        "notes": f"hub down {CRASH_OUTAGE_S} s; kill -9 {killed_at - fault_at:.1f} s into it; the new process "
                 f"started during the outage",
    }, hub


CRASH_OUTAGE_S = 8


SCENARIOS = [
    ("kill-tcp", "TCP connection reset (kill-tcp)", "hubsim",
     hub_scenario({"kind": "kill-tcp", "device": DEVICE_ID}, rf"{C} > {CE} > {C} > {CLOSE}", first_retry=True)),
    ("kill-tcp-ws", "TCP connection reset (kill-tcp)", "hubsim",
     hub_scenario({"kind": "kill-tcp", "device": DEVICE_ID}, rf"{C} > {CE} > {C} > {CLOSE}", transport="ws",
                  first_retry=True)),
    ("shutdown-listener", "graceful listener shutdown, reopened after 3 s", "hubsim",
     hub_scenario({"kind": "shutdown-listener", "seconds": 3}, rf"{C} > {CE} > {NN} > {C} > {CLOSE}")),
    ("hub-down", "hub down 5 s (connects refused)", "hubsim",
     hub_scenario({"kind": "hub-down", "seconds": 5}, rf"{C} > {CE} > {NN} > {C} > {CLOSE}")),
    ("hub-down-ws", "hub down 5 s (connects refused)", "hubsim",
     hub_scenario({"kind": "hub-down", "seconds": 5}, rf"{C} > {CE} > {NN} > {C} > {CLOSE}", transport="ws")),
    ("blackhole", "blackhole 16 s (longer than keep-alive 2 s + ping timeout)", "hubsim", run_blackhole),
    ("near-limits", "TCP reset while messages at every limit stream", "hubsim", run_near_limits),
    ("token-lifetime", f"SAS token expiry ({SAS_LIFETIME_S} s lifetime, renewed {SAS_MARGIN_S} s before)", "hubsim",
     run_token_lifetime),
    ("expire-token", "hub drops the link as for an expired token", "hubsim",
     hub_scenario({"kind": "expire-token", "device": DEVICE_ID}, rf"{C} > {CE} > {C} > {CLOSE}")),
    ("throttle", "throttling (1 connect/s, budget taken by others, 4 s; closed without CONNACK)", "hubsim",
     throttle_scenario("close", "closed without CONNACK")),
    ("throttle-connack3", "throttling (1 connect/s, budget taken by others, 4 s; CONNACK 3)", "hubsim",
     throttle_scenario("server-unavailable", "taken for throttling")),
    ("rotate-key", "device key rotated mid-life (fatal by design)", "hubsim",
     hub_scenario({"kind": "rotate-key", "device": DEVICE_ID}, rf"{C} > {CE} > {BAD_CREDENTIAL} > {CLOSE}",
                  fatal_reason="Bad_Credential")),
    ("disable-device", "device disabled mid-life, enabled again 3 s later", "hubsim", run_disable_device),
    ("move-port", "hub moved to another port (name re-resolved per attempt)", "hubsim", run_move_port),
    ("restart", "hub restart (sessions forgotten)", "hubsim",
     hub_scenario({"kind": "restart"}, rf"{C} > {CE} > {C} > {CLOSE}")),
    ("twin-kill-tcp", "twins and methods across a TCP reset", "hubsim",
     twin_scenario({"kind": "kill-tcp", "device": DEVICE_ID}, rf"{C} > {CE} > {C} > {CLOSE}", offline=False)),
    ("twin-hub-down", "twins and methods across a 5 s hub outage", "hubsim",
     twin_scenario({"kind": "hub-down", "seconds": 5}, rf"{C} > {CE} > {NN} > {C} > {CLOSE}", offline=True)),
    ("twin-expire-token", "twins and methods across a link dropped as for an expired token", "hubsim",
     twin_scenario({"kind": "expire-token", "device": DEVICE_ID}, rf"{C} > {CE} > {C} > {CLOSE}", offline=False)),
] + [
    # The rows that concern the connection, over AMQP and AMQP over WebSocket: the same status sequences as MQTT.
    (f"{name}-{t}", title, "hubsim", hub_scenario(fault, expected, fatal_reason, transport=t, first_retry=first))
    for t in ("amqp", "amqp-ws")
    for name, title, fault, expected, fatal_reason, first in [
        ("kill-tcp", "TCP connection reset (kill-tcp)", {"kind": "kill-tcp", "device": DEVICE_ID},
         rf"{C} > {CE} > {C} > {CLOSE}", None, True),
        ("shutdown-listener", "graceful listener shutdown, reopened after 3 s",
         {"kind": "shutdown-listener", "seconds": 3}, rf"{C} > {CE} > {NN} > {C} > {CLOSE}", None, False),
        ("hub-down", "hub down 5 s (connects refused)", {"kind": "hub-down", "seconds": 5},
         rf"{C} > {CE} > {NN} > {C} > {CLOSE}", None, False),
        ("expire-token", "hub drops the link as for an expired token", {"kind": "expire-token", "device": DEVICE_ID},
         rf"{C} > {CE} > {C} > {CLOSE}", None, True),
        ("rotate-key", "device key rotated mid-life (fatal by design)", {"kind": "rotate-key", "device": DEVICE_ID},
         rf"{C} > {CE} > {BAD_CREDENTIAL} > {CLOSE}", "Bad_Credential", False),
        ("restart", "hub restart (sessions forgotten)", {"kind": "restart"}, rf"{C} > {CE} > {C} > {CLOSE}", None,
         False),
        ("amqp-close", "connection closed with amqp:connection:forced", {"kind": "amqp-close", "device": DEVICE_ID},
         rf"{C} > {CE} > {C} > {CLOSE}", None, True),
        ("amqp-detach", "links detached with amqp:link:detach-forced", {"kind": "amqp-detach", "device": DEVICE_ID},
         rf"{C} > {CE} > {C} > {CLOSE}", None, True),
        ("failover", "hub failover: connections closed, opens answered iot-hub-not-found for 3 s",
         {"kind": "failover", "seconds": 3}, rf"{C} > {CE} > {C} > {CLOSE}", None, False),
        # AMQP names a disabled device (put-token 404, amqp:not-found) where MQTT answers CONNACK 3: fatal.
        ("disable-device", "device disabled mid-life (fatal over AMQP)", {"kind": "disable-device", "device": DEVICE_ID},
         rf"{C} > {CE} > {DEVICE_DISABLED} > {CLOSE}", "Device_Disabled", False),
    ]
] + [
    row for t in ("amqp", "amqp-ws") for row in [
        (f"token-lifetime-{t}", f"SAS token renewed in place ({SAS_LIFETIME_S} s lifetime, {SAS_MARGIN_S} s before)",
         "hubsim", run_token_lifetime_amqp(t)),
        (f"blackhole-{t}", "blackhole 16 s (longer than the idle timeout 2 s)", "hubsim",
         lambda r, t=t: run_blackhole(r, t)),
        (f"twin-kill-tcp-{t}", "twins and methods across a TCP reset", "hubsim",
         twin_scenario({"kind": "kill-tcp", "device": DEVICE_ID}, rf"{C} > {CE} > {C} > {CLOSE}", offline=False,
                       transport=t)),
        (f"twin-hub-down-{t}", "twins and methods across a 5 s hub outage", "hubsim",
         twin_scenario({"kind": "hub-down", "seconds": 5}, rf"{C} > {CE} > {NN} > {C} > {CLOSE}", offline=True,
                       transport=t)),
        (f"twin-expire-token-{t}", "twins and methods across a link dropped as for an expired token", "hubsim",
         twin_scenario({"kind": "expire-token", "device": DEVICE_ID}, rf"{C} > {CE} > {C} > {CLOSE}", offline=False,
                       transport=t)),
        (f"throttle-{t}", "throttling (1 connect/s, budget taken by others, 4 s; "
         "com.microsoft:device-container-throttled)", "hubsim",
         throttle_scenario("close", "device-container-throttled", transport=t)),
        (f"move-port-{t}", "hub moved to another port (name re-resolved per attempt)", "hubsim",
         lambda r, t=t: run_move_port(r, t)),
        (f"crash-durable-{t}", "device process kill -9 with a durable queue, restarted", "hubsim",
         lambda r, t=t: run_crash(r, t)),
        (f"near-limits-{t}", "TCP reset while messages at every limit stream (properties as an AMQP map)",
         "hubsim", lambda r, t=t: run_near_limits(r, t)),
    ]
] + [
    ("mosquitto-kill9", "mosquitto kill -9, restarted after 2 s (persistence on)", "mosquitto", run_mosquitto),
    ("crash-durable", "device process kill -9 with a durable queue, restarted", "hubsim", run_crash),
]


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default="build")
    p.add_argument("--out", default="build/reliability")
    p.add_argument("--only", nargs="*", help="scenario names to run")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows, failed = [], 0
    for name, title, broker, scenario in SCENARIOS:
        if args.only and name not in args.only:
            continue
        started = time.monotonic()
        r = Run(args, name)
        try:
            row, _ = scenario(r)
        except Failure as e:
            row = {"problems": [f"could not run: {e}"]}
        except Exception as e:  # a broken harness fails its row, and the others still run
            traceback.print_exc()
            row = {"problems": [f"could not run: {type(e).__name__}: {e}"]}
        finally:
            r.close()
        row.update(name=name, fault=title, broker=broker,
                   transport=TRANSPORTS[transport_of(name)][1],
                   seconds=round(time.monotonic() - started, 1))
        row["passed"] = not row["problems"]
        failed += not row["passed"]
        rows.append(row)
        print(f"{'PASS' if row['passed'] else 'FAIL'} {name}: sent={row.get('sent')} delivered={row.get('delivered')} "
              f"duplicates={row.get('duplicates')} lost={row.get('lost')} failed={row.get('failed')} "
              f"reconnects={row.get('reconnects')} ({row['seconds']} s)", flush=True)
        for problem in row["problems"]:
            print(f"    {problem}", flush=True)
    results = {
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "rate": RATE, "slack_s": SLACK_S, "rows": rows,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
