#!/usr/bin/env python3
"""Reconnect lag after kill-tcp on a healthy link, N times in one device session (issue 11: "reconnected within
the policy's first delay + 50 ms, median of 20").

One C device of the reliability suite (tests/reliability/device.c, 100 msg/s, default retry policy) against hubsim;
hubsim resets its TCP connection N times, each once it has been Connected and delivering again for longer than the
device's backoff_reset_after (1 s here instead of 30 s: a healthy link, so each retry is the policy's first). For each fault:
the engine's logged first delay ("attempt 1 failed (...); next in D") and the time from that log line to Connected
again; the lag beyond the delay is the cost of the reconnect itself (TCP, TLS, CONNECT, SUBSCRIBE). Writes
bench/results/killtcp.txt.

    ./build.sh && python3 bench/killtcp.py [--n 20] [--build build]
"""
import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "reliability"))
from harness import Device, Hub  # noqa: E402
from matrix import RETRY_LOG, go_duration  # noqa: E402

DEVICE_ID = "killtcp-device"
HEALTHY_MS = 1000


def lags(events, since):
    """(first delay, lag from its log line to Connected) of the reconnect after since, or None if not yet over."""
    logged = None
    for e in events:
        if e["t"] < since:
            continue
        if e["ev"] == "log" and logged is None:
            m = RETRY_LOG.search(e["msg"])
            if m and m.group(1) == "1":
                logged = (e["t"], go_duration(m.group(2)))
        elif e["ev"] == "status" and e["status"] == "Connected" and logged is not None:
            return logged[1], e["t"] - logged[0]
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "killtcp.txt"))
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="iotconn-killtcp-")
    hub = Hub(os.path.join(args.build, "bin", "iotconn-hubsim"), os.path.join(tmp, "hub"), DEVICE_ID,
              os.path.join(tmp, "hubsim.log"))
    dev = None
    try:
        dev = Device(os.path.join(args.build, "reliability", "device"),
                     ["--cs", hub.conn_str, "--ca", hub.ca, "--prefix", "killtcp", "--rate", "100",
                      "--drain-timeout", "10000", "--backoff-reset-after", str(HEALTHY_MS)],
                     os.path.join(tmp, "device.log"))
        dev.wait_status("Connected", "Connection_Ok", 0, 60)
        rows = []
        for i in range(args.n):
            since = time.monotonic()
            dev.wait_delivered(20, since, 30)  # delivering again
            dev.wait_for(lambda: time.monotonic() - since > 1.5 * HEALTHY_MS / 1000, 10, "a healthy link")
            fault_at = time.monotonic()
            hub.fault(kind="kill-tcp", device=DEVICE_ID)
            dev.wait_status("Connected", "Connection_Ok", fault_at, 30)
            dev.wait_for(lambda: lags(dev.events, fault_at) is not None, 10, "the reconnect's log line")
            delay, lag = lags(dev.events, fault_at)
            rows.append((delay, lag))
            print(f"fault {i + 1}: first delay {delay * 1000:.1f} ms, connected {lag * 1000:.1f} ms after it logged "
                  f"it: {1000 * (lag - delay):+.1f} ms", flush=True)
        dev.finish(30)
    finally:
        if dev:
            dev.stop()
        hub.stop()
    over = [lag - delay for delay, lag in rows]
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    with open(args.out, "w") as f:
        f.write(f"# kill-tcp on a healthy link, {args.n} times in one session: reconnect lag beyond the policy's "
                f"first delay\n# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}, commit {commit}; "
                f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs\n"
                f"# reproduce: ./build.sh && python3 bench/killtcp.py --n {args.n}\n")
        f.write(f"faults={len(rows)}\n")
        f.write(f"first_delay_ms_median={1000 * statistics.median(d for d, _ in rows):.1f}\n")
        f.write(f"lag_ms_median={1000 * statistics.median(l for _, l in rows):.1f}\n")
        f.write(f"beyond_delay_ms_median={1000 * statistics.median(over):.1f} "
                f"max={1000 * max(over):.1f}\n")
        f.write("beyond_delay_ms: " + " ".join(f"{1000 * o:.1f}" for o in over) + "\n")
    print(open(args.out).read())


if __name__ == "__main__":
    main()
