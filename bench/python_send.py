"""Cost of one IoTHubDeviceClient.send_message call from Python (ctypes into libiotconn), against hubsim.

    python bench/python_send.py        # after ./build.sh; BENCH_N and BENCH_ROUNDS override the sizes

Per round: N sends pipelined on one connected client (QoS 1, 256-byte payload), then a wait for the N
completions. send_ns is the wall time of the send loop / N: the Python-side cost of a call while the engine runs
(message conversion, ctypes, iotconn_send). msgs_per_s is N / (send loop + wait for every delivery). The first
round is warm-up; the figures are medians of the rest. ctypes_call_ns is the floor of any call through ctypes
(iotconn_strerror) on this machine, for comparison. Results: bench/results/python_send.txt
"""

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "python"))

from support import DEVICE, Hub  # noqa: E402  (support makes iotconn importable from a checkout)

import iotconn  # noqa: E402

N = int(os.environ.get("BENCH_N", "20000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
OUT = REPO / "bench" / "results" / "python_send.txt"
PAYLOAD = b"x" * 256


class Completions:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.done = self.failed = 0

    def on_send_complete(self, message_id: int, result: iotconn.SendResult) -> None:
        with self.cond:
            self.done += 1
            self.failed += result != iotconn.SendResult.DELIVERED
            self.cond.notify_all()

    def wait(self, total: int) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.done >= total, timeout=300):
                raise RuntimeError(f"only {self.done} of {total} sends completed")


def run_rounds(client: iotconn.IoTHubDeviceClient, completions: Completions, make: Callable[[int], object]) -> Dict:
    send_ns: List[float] = []
    rates: List[float] = []
    for _ in range(ROUNDS):
        messages = [make(i) for i in range(N)]
        base = completions.done
        start = time.perf_counter_ns()
        for message in messages:
            client.send_message(message)
        sent = time.perf_counter_ns()
        completions.wait(base + N)
        end = time.perf_counter_ns()
        send_ns.append((sent - start) / N)
        rates.append(N / ((end - start) / 1e9))
    return {
        "send_ns": statistics.median(send_ns[1:]),
        "msgs_per_s": statistics.median(rates[1:]),
        "rounds_send_ns": " ".join(f"{v:.0f}" for v in send_ns),
    }


def ctypes_floor_ns() -> float:
    lib = iotconn.load_library()
    calls = 200_000
    samples = []
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(calls):
            lib.strerror(-1)
        samples.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(samples)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub(Path(tmp) / "hub", (DEVICE,))
        try:
            completions = Completions()
            with iotconn.IoTHubDeviceClient.create_from_connection_string(
                hub.connection_strings[DEVICE], ca_file=hub.ca_file, queue_max_messages=2 * N
            ) as client:
                client.on_send_complete = completions.on_send_complete
                client.connect(timeout=60)
                results = {
                    "bytes_256": run_rounds(client, completions, lambda i: PAYLOAD),
                    "message_with_properties": run_rounds(
                        client,
                        completions,
                        lambda i: iotconn.Message(
                            PAYLOAD,
                            message_id=f"bench-{i}",
                            content_type="application/octet-stream",
                            custom_properties={"seq": str(i), "source": "bench"},
                        ),
                    ),
                }
            if completions.failed:
                raise RuntimeError(f"{completions.failed} sends did not end DELIVERED")
        finally:
            hub.stop()
    floor = ctypes_floor_ns()

    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    lines = [
        "# iotconn Python binding: cost of one IoTHubDeviceClient.send_message call (ctypes -> iotconn_send)",
        f"# {when}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        f"# hubsim, QoS 1, 256-byte payload, one TLS connection, pipelined: send {N} then wait for {N} completions;",
        f"# {ROUNDS} rounds per case, the first is warm-up; figures are medians of the rest.",
        "# send_ns: wall time of the send loop / N. msgs_per_s: N / (send loop + wait for every delivery).",
    ]
    for case, figures in results.items():
        lines += [
            "",
            f"[{case}]",
            f"send_ns={figures['send_ns']:.0f}",
            f"msgs_per_s={figures['msgs_per_s']:.0f}",
            f"rounds_send_ns: {figures['rounds_send_ns']}",
        ]
    lines += ["", "[ctypes]", f"ctypes_call_ns={floor:.0f}  # iotconn_strerror: the floor of any call through ctypes"]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = OUT.with_suffix(".txt.tmp")
    tmp_out.write_text("\n".join(lines) + "\n")
    tmp_out.replace(OUT)
    print(OUT.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
