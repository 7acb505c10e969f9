#!/usr/bin/env python3
"""Draws bench/results/provision.json (bench/provision/main.go): DPS registrations per second in each phase, with
the quota's average rate, and the registrations so far against the quota's token bucket (a minute's worth at once,
then quota/60 a second).

    plot.py IN.json OUT.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        r = json.load(f)
    phases = r["phases"]
    fig, axes = plt.subplots(len(phases), 1, figsize=(9, 2.6 * len(phases)), squeeze=False)
    rate = r["quota_per_minute"] / 60.0
    for ax, p in zip(axes[:, 0], phases):
        per_second = p["per_second"] or [0]
        ax.bar(range(len(per_second)), per_second, width=1.0, color="tab:blue", label="registrations / s")
        if rate:
            ax.axhline(rate, color="tab:red", linestyle="--", label=f"quota {r['quota_per_minute']}/min")
        ax.set_title(f"{p['name']}: {p['registrations']} registrations, {p['refused_429']} refused 429, "
                     f"all connected after {p['all_connected_s']:.0f} s", fontsize=9)
        ax.set_xlim(0, max(len(per_second), p["all_connected_s"]) + 1)
        ax.set_ylabel("per second")
        ax.legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("seconds from the phase's start (the fault)")
    fig.suptitle(f"bench/provision: {r['n']} devices, fleet hint {r['reconnect_spread_s']:.0f} s, "
                 f"outage {r['outage_s']:.0f} s", fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
