#!/usr/bin/env python3
"""A model of bench/fleet's hub-down-throttled and kill-all scenarios: N independent devices retrying as the
engine does (core/retry and core/link.go's policyAnswered), against a hub that is down for OUTAGE seconds and then
admits at most R connects in any one second. It runs in seconds, so a bound can be checked over many runs where
the bench makes one, and it shows which limits come from the devices' independence rather than from a policy.

    model.py [--n 2000] [--rate 100] [--outage 5] [--runs 60]

Per row, over RUNS runs: the time until every device was back, after the hub came back, over N/R (median, 90th
percentile, worst); the fullest second of attempts at the front, sliding (median, worst, and the share of runs
over 1.2 R); attempts per device. The refusal over the rate is a TCP reset (a load balancer; the device sees a
lost connection) or, as IoT Hub answers on MQTT, a CONNECT closed without CONNACK (the device sees throttling and
waits the throttling schedule). Only the standard library is needed.
"""
import argparse
import heapq
import random
import statistics
from collections import deque

GUARD_S, GUARD_SPREAD_S = 1.0, 2.0  # retry.MinAttemptSpacing, retry.GuardSpread
LATER_SPREAD_DIVISOR = 20  # retry.LaterSpreadDivisor


def default_delay(r, n, lo=0.1, hi=10.0, delta=0.1):
    """JitterDefault's draw for retry n (core/retry/exponential.go)."""
    cap = r.uniform(max(lo, hi * 0.8), hi)
    if n == 1:
        return min(lo + r.uniform(0, 0.8 * delta), cap)
    x = min(lo + (2 ** (n - 1) - 1) * r.uniform(0.8 * delta, 1.2 * delta), cap)
    return r.uniform(max(lo, x / 2), x)


def throttle_delay(r, n):
    """retry.ThrottleDelay: JitterDefault from 10 s to 60 s, 5 s delta."""
    return default_delay(r, n, 10.0, 60.0, 5.0)


def spaced(r, elapsed, delay):
    """retry.Spaced: the CPU guard after an attempt that failed within a second of its start."""
    if elapsed >= GUARD_S or delay >= GUARD_S - elapsed:
        return delay
    return GUARD_S - elapsed + r.uniform(0, GUARD_SPREAD_S)


class Device:
    __slots__ = ("attempts", "throttled")

    def __init__(self):
        self.attempts, self.throttled = 0, 0


def next_delay(r, dev, throttled, window, whole_window_after_throttle):
    """The wait after a failure, as policyAnswered decides it for the default policy (with the hint if window)."""
    dev.attempts += 1
    dev.throttled = dev.throttled + 1 if throttled else 0
    if throttled:
        delay = throttle_delay(r, dev.throttled)
    else:
        delay = spaced(r, 0.0 if dev.attempts > 1 else GUARD_S, default_delay(r, dev.attempts))
    if window <= 0 or (throttled and dev.attempts > 1 and not whole_window_after_throttle):
        return delay
    if dev.attempts == 1:
        return delay + r.uniform(0, window)
    return max(delay, r.uniform(window, window + window / LATER_SPREAD_DIVISOR))


def peak_per_second(times):
    times.sort()
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run(r, n, rate, outage, refuse, window=0.0, budget=0.0, whole_window_after_throttle=False):
    """One run: every device lost its link at 0; the hub refuses every attempt until outage, then admits rate per
    second, refusing the rest as refuse says ("tcp" or "mqtt"; None: it admits all). Returns (all back after the
    hub / (N/R), peak attempts/s, attempts per device)."""
    devices = [Device() for _ in range(n)]
    events = [(next_delay(r, d, False, window, False), i, False) for i, d in enumerate(devices)]
    heapq.heapify(events)
    admitted, attempts, last_back, next_token = deque(), [], 0.0, 0.0
    while events:
        t, i, has_token = heapq.heappop(events)
        if budget and not has_token:  # the process budget: an attempt waits for the token it reserves
            at = max(t, next_token)
            next_token = at + 1.0 / budget
            heapq.heappush(events, (at, i, True))
            continue
        attempts.append(t)
        if t >= outage:
            while admitted and t - admitted[0] >= 1.0:
                admitted.popleft()
            if refuse is None or len(admitted) < rate:
                admitted.append(t)
                last_back = max(last_back, t)
                continue
        throttled = t >= outage and refuse == "mqtt"
        delay = next_delay(r, devices[i], throttled, window, whole_window_after_throttle)
        heapq.heappush(events, (t + delay, i, False))
    return (last_back - outage) / (n / rate), peak_per_second(attempts), len(attempts) / n


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--outage", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    r = random.Random(args.seed)
    n, rate = args.n, args.rate
    window = 1.1 * n / rate
    rows = [
        ("hub-down-throttled", "default", "tcp", {}),
        ("hub-down-throttled", "default", "mqtt", {}),
        ("hub-down-throttled", "hint", "tcp", {"window": window}),
        ("hub-down-throttled", "hint, a window more after throttling", "mqtt",
         {"window": window, "whole_window_after_throttle": True}),
        ("hub-down-throttled", "hint", "mqtt", {"window": window}),
        ("hub-down-throttled", "hint+budget", "mqtt", {"window": window, "budget": 0.95 * rate}),
        ("kill-all", "hint", "-", {"window": window}),
    ]
    print(f"N = {n}, R = {rate}/s, outage {args.outage} s, hint window 1.1 N/R = {window:.1f} s, {args.runs} runs each")
    print("| scenario | policy | refusal | all back / (N/R): median, p90, worst | peak/s: median, worst, share > 1.2 R "
          "| attempts/device |")
    print("|---|---|---|---|---|---|")
    for scenario, policy, refuse, kw in rows:
        kill_all = scenario == "kill-all"
        res = [run(r, n, rate, 0.0 if kill_all else args.outage, None if kill_all else refuse, **kw)
               for _ in range(args.runs)]
        back = [x[0] for x in res]
        peaks = [x[1] for x in res]
        over = sum(p > 1.2 * rate for p in peaks) / len(peaks)
        back_cell = "-" if kill_all else f"{statistics.median(back):.2f}, {quantile(back, 0.9):.2f}, {max(back):.2f}"
        print(f"| {scenario} | {policy} | {refuse} | {back_cell} | {statistics.median(peaks):.0f}, {max(peaks)}, "
              f"{over:.0%} | {statistics.median(x[2] for x in res):.2f} |")

if __name__ == "__main__":
    main()
