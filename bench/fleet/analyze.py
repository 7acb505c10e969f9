#!/usr/bin/env python3
"""Turns bench/fleet runs into bench/results/fleet.json, a PNG per scenario and the table in docs/fleet.md.

    analyze.py --out FILE.json [--plots DIR] [--doc docs/fleet.md] [--header KEY=VALUE]... RUN_DIR...

Each RUN_DIR (written by run.sh) holds run.env (scenario, policy, n, rate, outage_s, drop_ms, drop_s,
hub_control_ms), front.log
(the front's attempts and markers), events.log and driver.out (the driver's). Times are CLOCK_MONOTONIC ms in
all of them. Only the standard library is needed, except for --plots (matplotlib).

Definitions (docs/fleet.md has them too):
- the fault is the front's "down" or "kill-all" marker, or its "up" with a drop_ms (accept-drop); "attempts" are
  the connections the front accepted from then on; bucket i holds those in [fault + 100 i, fault + 100 (i + 1))
  ms (the plots and buckets_from_fault);
- peaks are the most attempts in any 100 ms (or 1 s) window, sliding, so that the buckets' phase cannot split a
  burst in two;
- round k of a device is its k-th attempt after the fault. The driver sees, for each failure, the delay the engine
  chose before the next attempt; that attempt is due at the failure's time plus the delay (the driver's stamp is
  a callback late, a few ms). A round's peak share is the most of its due times in any 100 ms window, over N:
  how closely the policy bunches the fleet, before CPU load smears the attempts on the wire;
- all reconnected: the last Connected after the hub came back ("up" marker without drop_ms; the fault for
  kill-all);
- accept-drop: from the fault to the plain "up" (the drop phase) the front reset each link drop_ms after its
  accept. Attempts per device per minute over the phase and over its last 60 s (the steady state, every device at
  its policy's cap), against the most the policy's cap allows, 60 / (the least delay it draws at its cap + drop_ms),
  and the 1 s guard's 60; per device, the most attempts any one started in the last 60 s, against the cap's
  bound for a window that long. A drop counts as seen up when the device reported Connected since its previous
  failure.
"""
import argparse
import json
import os
import re
import sys
from collections import Counter, defaultdict

BUCKET_MS = 100.0
STATUS_CONNECTED = 1
GO_DURATION_UNITS = {"h": 3.6e6, "m": 6e4, "s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}
GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
GUARD_MS = 1000.0  # retry.MinAttemptSpacing
# The least delay each policy draws once at its cap (core/retry/exponential.go, the defaults 100 ms to 10 s):
# DEFAULT draws over [c/2, c] with c in [8 s, 10 s]; FULL and DECORRELATED reach down to min. The hint's later
# retries wait at least its window (run.sh: 1.1 N/R), whatever the policy drew.
CAP_FLOOR_MS = {"default": 4000.0, "full": 100.0, "decorrelated": 100.0}


def go_duration_ms(text):
    """Milliseconds in a Go duration's text ("1.5s", "900ms", "1m0s", "0s"); None if it is not one."""
    pos, total = 0, 0.0
    for m in GO_DURATION_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * GO_DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos > 0 else None


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.rstrip("\n").partition("=")
            if sep:
                env[key] = value
    return env


def read_front(path):
    """(attempt times by verdict letter, markers as (time, name, {key: value}))."""
    attempts, markers = defaultdict(list), []
    with open(path) as f:
        for line in f:
            fields = line.split()
            t = float(fields[0])
            if fields[1] == "#":
                markers.append((t, fields[2], dict(kv.split("=", 1) for kv in fields[3:])))
            else:
                attempts[fields[1]].append(t)
    markers.sort()
    return attempts, markers


def read_driver_out(path):
    out = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) < 3 or fields[0] != "fleet:":
                continue
            kv = {k: v for k, _, v in (x.partition("=") for x in fields[2:]) if _}
            if fields[1] == "connected":
                out["connect_ms"] = float(kv["ms"])
            elif fields[1] == "memory":
                out["rss_kb"], out["rss_before_kb"] = int(kv["rss_kb"]), int(kv["before_kb"])
                out["threads"] = int(kv["threads"])
            elif fields[1] == "armed":
                out["armed_ms"] = float(fields[2])
            elif fields[1] in ("settled", "timeout"):
                out["settled"] = fields[1] == "settled"
                out["end"] = kv
    return out


def read_events(path, since):
    """Per client: the failures ((time, delay ms or None)) and the Connected times, both from `since` on."""
    failures, connects = defaultdict(list), defaultdict(list)
    with open(path) as f:
        for line in f:
            fields = line.split()
            t = float(fields[0])
            if t < since:
                continue
            client = int(fields[1])
            if fields[2] == "f":
                failures[client].append((t, go_duration_ms(fields[3])))
            elif fields[2] == "s" and int(fields[3]) == STATUS_CONNECTED:
                connects[client].append(t)
    return failures, connects


def buckets(times, origin):
    """Counts per 100 ms bucket from origin, bucket 0 first, up to the last non-empty one."""
    idx = Counter(int((t - origin) // BUCKET_MS) for t in times if t >= origin)
    return [idx.get(i, 0) for i in range(max(idx) + 1)] if idx else []


def peak_window(times, width_ms):
    """(count, start) of the fullest window [start, start + width_ms) over the sorted times, sliding, so that a
    grid's phase cannot split a burst in two; (0, None) without times."""
    best, at, lo = 0, None, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= width_ms:
            lo += 1
        if hi - lo + 1 > best:
            best, at = hi - lo + 1, times[lo]
    return best, at


def analyze_run(run_dir):
    env = read_env(os.path.join(run_dir, "run.env"))
    n = int(env["n"])
    attempts, markers = read_front(os.path.join(run_dir, "front.log"))
    driver = read_driver_out(os.path.join(run_dir, "driver.out"))
    fault = next(m for m in markers
                 if m[1] in ("down", "kill-all") or (m[1] == "up" and int(m[2].get("drop_ms", "0")) > 0))
    t0 = fault[0]
    up = next((m for m in markers if m[1] == "up" and m[0] > t0 and int(m[2].get("drop_ms", "0")) == 0), None)
    t_back = up[0] if up else t0
    rate = int(up[2].get("rate", "0")) if up else 0

    front_times = sorted(t for verdict in "fdt" for t in attempts.get(verdict, []) if t >= t0)
    counts = buckets(front_times, t0)
    failures, connects = read_events(os.path.join(run_dir, "events.log"), driver.get("armed_ms", t0))

    # Each failure schedules exactly one attempt: per device, attempts = failures reported since the fault.
    per_device = [len(failures.get(i, [])) for i in range(n)]
    rounds = []
    unparsed = sum(1 for fs in failures.values() for _, d in fs if d is None)
    depth = max(per_device, default=0)
    for k in range(depth):
        starts = sorted(fs[k][0] + fs[k][1] for fs in failures.values() if len(fs) > k and fs[k][1] is not None)
        peak, at = peak_window(starts, BUCKET_MS)
        rounds.append({"round": k + 1, "devices": len(starts), "peak_100ms": peak,
                       "peak_share": round(peak / n, 4), "peak_at_ms": round(at - t0, 1) if starts else None,
                       "median_start_ms": round(starts[len(starts) // 2] - t0, 1) if starts else None})

    last_connect = [max(connects[i]) for i in range(n) if connects.get(i)]
    all_back = len(last_connect) == n
    reconnect_ms = (max(last_connect) - t_back) if all_back else None
    n_over_r_ms = 1000.0 * n / rate if rate else None
    peak_100ms, peak_100ms_at = peak_window(front_times, BUCKET_MS)
    result = {
        "n": n,
        "settled": driver.get("settled", False),
        "attempts_total": len(front_times),
        "attempts_reset_down": sum(1 for t in attempts.get("d", []) if t >= t0),
        "attempts_reset_over_rate": sum(1 for t in attempts.get("t", []) if t >= t0),
        "attempts_seen_by_devices": sum(per_device),
        "attempts_per_device": {"mean": round(len(front_times) / n, 3), "max": max(per_device, default=0),
                                "histogram": {str(k): v for k, v in sorted(Counter(per_device).items())}},
        "rounds": rounds,
        "first_round_peak_share": rounds[0]["peak_share"] if rounds else None,
        "later_rounds_peak_share": max((r["peak_share"] for r in rounds[1:]), default=None),
        "peak_100ms_share": round(peak_100ms / n, 4),
        "peak_100ms_at_ms": round(peak_100ms_at - t0, 1) if front_times else None,
        "peak_attempts_per_s": peak_window(front_times, 1000.0)[0],
        "hub_back_ms": round(t_back - t0, 1),
        "admission_rate_per_s": rate or None,
        "devices_reconnected": len(last_connect),
        "gave_up": int(driver.get("end", {}).get("gave_up", 0)),
        "all_reconnected_ms": round(reconnect_ms, 1) if reconnect_ms is not None else None,
        "n_over_r_ms": n_over_r_ms,
        "all_reconnected_over_n_over_r": round(reconnect_ms / n_over_r_ms, 3)
        if reconnect_ms is not None and n_over_r_ms else None,
        "buckets_from_fault": counts,
        "first_connect_ms": driver.get("connect_ms"),
        "driver_rss_kb": driver.get("rss_kb"),
        "driver_rss_before_kb": driver.get("rss_before_kb"),
        "driver_threads": driver.get("threads"),
        "hub_control_ms": float(env["hub_control_ms"]) if env.get("hub_control_ms") else None,
    }
    if fault[1] == "up":
        result["accept_drop"] = accept_drop(env, int(fault[2]["drop_ms"]), t0, t_back, front_times, failures,
                                            connects)
    if unparsed:
        result["delays_not_parsed"] = unparsed
    return env["scenario"], env["policy"], env, result


def cap_floor_ms(env):
    """The least delay env's policy draws at its cap (run.sh's names), or None for one not known here."""
    if env["policy"] in ("hint", "hint+budget"):
        return float(int(env["n"]) * 1100 // int(env["rate"]))
    return CAP_FLOOR_MS.get(env["policy"])


def accept_drop(env, drop_ms, t0, t_end, front_times, failures, connects):
    """The drop phase [t0, t_end) of an accept-drop run: attempts per device per minute against the bounds."""
    n = int(env["n"])
    phase_ms = t_end - t0
    last_from = max(t0, t_end - 60000.0)

    def per_device_per_min(lo):
        return round(sum(1 for t in front_times if lo <= t < t_end) / n / ((t_end - lo) / 60000.0), 2)

    seen_up = drops = 0
    steady_delays = []
    # per device: its attempts that started in the last 60 s (a failure's time + its delay, as for rounds)
    steady_attempts = Counter()
    for client, fs in failures.items():
        steady_attempts[client] = sum(1 for t, d in fs if d is not None and last_from <= t + d < t_end)
        ups = sorted(connects.get(client, []))
        prev = float("-inf")  # every device was connected when run.sh armed the driver
        for t, delay in fs:
            if t0 <= t < t_end:
                drops += 1
                seen_up += prev == float("-inf") or any(prev <= u < t for u in ups)
                if t >= last_from and delay is not None:
                    steady_delays.append(delay)
            prev = t
    floor = cap_floor_ms(env)
    return {
        "drop_ms": drop_ms,
        "phase_ms": round(phase_ms, 1),
        "attempts_per_device_per_min": per_device_per_min(t0),
        "attempts_per_device_per_min_last_60s": per_device_per_min(last_from),
        "cap_floor_ms": floor,
        "cap_bound_per_min": round(60000.0 / (floor + drop_ms), 2) if floor is not None else None,
        "guard_bound_per_min": 60000.0 / GUARD_MS,
        "max_device_attempts_last_60s": max(steady_attempts.values(), default=0),
        # a window of 60 s can hold one more than the rate allows: one at its start, the rest the least gap apart
        "cap_bound_device_attempts_last_60s": int(60000.0 // (floor + drop_ms)) + 1 if floor is not None else None,
        "failures_seen_up_share": round(seen_up / drops, 4) if drops else None,
        "mean_delay_last_60s_ms": round(sum(steady_delays) / len(steady_delays), 1) if steady_delays else None,
    }


def plot(scenarios, plots_dir, n):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    for scenario, policies in scenarios.items():
        fig, ax = plt.subplots(figsize=(10, 4.2), dpi=110)
        rate = None
        drop = next((r["accept_drop"] for r in policies.values() if "accept_drop" in r), None)
        # a drop phase of minutes in 100 ms buckets is a comb: one bin per second there
        per = 10 if drop else 1
        for policy, r in policies.items():
            b = r["buckets_from_fault"]
            counts = [sum(b[i:i + per]) for i in range(0, len(b), per)]
            ax.plot([i * per * BUCKET_MS / 1000 for i in range(len(counts))], counts, label=policy, linewidth=1,
                    drawstyle="steps-post", alpha=0.85)
            rate = rate or r["admission_rate_per_s"]
            back = r["hub_back_ms"] / 1000
        if back > 0:
            ax.axvspan(0, back, color="0.9",
                       label=f"front drops each link {drop['drop_ms']} ms after its accept" if drop else "front down")
        if rate:
            ax.axhline(rate * per * BUCKET_MS / 1000, color="0.4", linestyle="--", linewidth=0.8,
                       label=f"admission {rate}/s")
        ax.set_xlabel("seconds since the fault")
        ax.set_ylabel(f"connection attempts per {per * BUCKET_MS / 1000:g} s" if drop else
                      "connection attempts per 100 ms")
        ax.set_title(f"{scenario}: N = {n} devices in one process")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(plots_dir, f"fleet-{scenario}.png")
        fig.savefig(path)
        plt.close(fig)
        paths[scenario] = path
    return paths


def fmt(v, pattern="{:.2f}"):
    return "-" if v is None else pattern.format(v)


def table(scenarios):
    rows = ["| scenario | policy | attempts/device mean (max) | first round peak | later rounds peak | "
            "peak attempts/s | all reconnected | vs N/R | "
            "attempts/device/min while dropped (last 60 s) / cap's bound |",
            "|---|---|---|---|---|---|---|---|---|"]
    for scenario, policies in scenarios.items():
        for policy, r in policies.items():
            drop = r.get("accept_drop")
            back = "after drops stopped" if drop else "after hub back" if r["hub_back_ms"] > 0 else "after kill"
            per_min = "-"
            if drop:
                per_min = (f"{drop['attempts_per_device_per_min']:.2f} "
                           f"({drop['attempts_per_device_per_min_last_60s']:.2f}) / "
                           f"{fmt(drop['cap_bound_per_min'], '{:.2f}')}")
            if r["all_reconnected_ms"] is not None:
                back = f"{r['all_reconnected_ms'] / 1000:.1f} s {back}"
            else:
                back = f"- ({r['gave_up']} gave up)"
            rows.append(
                f"| {scenario} | {policy} | {r['attempts_per_device']['mean']:.2f} "
                f"({r['attempts_per_device']['max']}) | {fmt(r['first_round_peak_share'], '{:.0%}')} | "
                f"{fmt(r['later_rounds_peak_share'], '{:.0%}')} | {r['peak_attempts_per_s']} | "
                f"{back} | "
                f"{fmt(r['all_reconnected_over_n_over_r'], '{:.2f}')} | {per_min} |")
    return "\n".join(rows)


def fill_doc(doc, text, begin="<!-- fleet-table:begin -->", end="<!-- fleet-table:end -->"):
    with open(doc) as f:
        content = f.read()
    i, j = content.index(begin), content.index(end)
    with open(doc, "w") as f:
        f.write(content[:i + len(begin)] + "\n" + text + "\n" + content[j:])


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--plots")
    ap.add_argument("--doc")
    ap.add_argument("--header", action="append", default=[], help="KEY=VALUE copied to the top of the JSON")
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args(argv)

    report = dict(h.split("=", 1) for h in args.header)
    report["bucket_ms"] = BUCKET_MS
    scenarios = {}
    for run_dir in args.runs:
        scenario, policy, env, result = analyze_run(run_dir)
        scenarios.setdefault(scenario, {})[policy] = result
        report.setdefault("n", result["n"])
        report.setdefault("outage_s", float(env["outage_s"]))
    report["scenarios"] = scenarios
    if args.plots:
        report["plots"] = {s: os.path.relpath(p, os.path.dirname(os.path.abspath(args.out)))
                           for s, p in plot(scenarios, args.plots, report["n"]).items()}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    md = table(scenarios)
    if args.doc:
        fill_doc(args.doc, md)
    print(md)
    return 0 if all(r["settled"] for p in scenarios.values() for r in p.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
