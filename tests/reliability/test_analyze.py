"""The matrix's checks catch what they claim to: each case breaks one property of a healthy run's events.

    python3 -m unittest tests/reliability/test_analyze.py
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from matrix import C, CE, CLOSE, analyze, go_duration  # noqa: E402

EXPECTED = rf"{C} > {CE} > {C} > {CLOSE}"


def status(t, s, r):
    return {"t": t, "ev": "status", "status": s, "reason": r}


def healthy(n=3):
    """A run that sent n messages, lost its link once and reconnected 1.01 s after a 1 s policy wait."""
    ev = [status(0.0, "Connected", "Connection_Ok")]
    for i in range(1, n + 1):
        ev.append({"t": 0.1 * i, "ev": "sent", "id": i, "mid": f"p-{i}"})
    ev += [status(1.0, "Disconnected_Retrying", "Communication_Error"),
           {"t": 1.0, "ev": "log", "level": 1, "msg": "attempt 1 failed (connection lost); next in 999.5ms"},
           status(2.01, "Connected", "Connection_Ok")]
    for i in range(1, n + 1):
        ev.append({"t": 2.1, "ev": "done", "id": i, "result": "delivered", "error": 0})
    ev += [{"t": 3.0, "ev": "end", "accepted": n, "completions": n, "drained": True, "status": "Connected"},
           status(3.0, "Disabled", "Client_Close")]
    return ev


HUB = ["p-1", "p-2", "p-3"]


class AnalyzeTest(unittest.TestCase):
    def test_healthy_run_passes(self):
        row = analyze(healthy(), HUB, EXPECTED, False, 0.5)
        self.assertEqual(row["problems"], [])
        self.assertEqual((row["sent"], row["delivered"], row["duplicates"], row["lost"]), (3, 3, 0, 0))
        self.assertAlmostEqual(row["reconnects"][0]["policy_delay"], 0.9995, places=3)
        self.assertAlmostEqual(row["detected_s"], 0.5)

    def test_duplicates_are_counted_not_failed(self):
        row = analyze(healthy(), HUB + ["p-2"], EXPECTED, False, 0.5)
        self.assertEqual((row["duplicates"], row["problems"]), (1, []))

    def test_silent_loss_fails(self):
        ev = [e for e in healthy() if not (e["ev"] == "done" and e["id"] == 2)]
        row = analyze(ev, ["p-1", "p-3"], EXPECTED, False, 0.5)
        self.assertEqual(row["lost"], 1)
        self.assertTrue(any("never reached the hub" in p for p in row["problems"]))

    def test_failed_completion_is_not_a_loss_but_fails_a_transient_row(self):
        ev = [dict(e, result="failed", error=-6) if e["ev"] == "done" and e["id"] == 2 else e for e in healthy()]
        fatal = analyze(ev, ["p-1", "p-3"], EXPECTED, True, 0.5)
        self.assertEqual((fatal["lost"], fatal["failed"], fatal["problems"]), (0, 1, []))
        self.assertEqual(fatal["failed_by"], {"failed IOTCONN_EAUTH": 1})
        transient = analyze(ev, ["p-1", "p-3"], EXPECTED, False, 0.5)
        self.assertTrue(any("were not delivered" in p for p in transient["problems"]))

    def test_second_completion_fails(self):
        ev = healthy() + [{"t": 2.2, "ev": "done", "id": 1, "result": "delivered", "error": 0}]
        row = analyze(ev, HUB, EXPECTED, False, 0.5)
        self.assertTrue(any("exactly one completion" in p for p in row["problems"]))

    def test_delivered_but_not_at_hub_fails(self):
        row = analyze(healthy(), ["p-1", "p-2"], EXPECTED, False, 0.5)
        self.assertTrue(any("completed as delivered but are not at the hub" in p for p in row["problems"]))

    def test_unknown_id_at_hub_fails(self):
        row = analyze(healthy(), HUB + ["p-9"], EXPECTED, False, 0.5)
        self.assertTrue(any("never accepted" in p for p in row["problems"]))

    def test_other_status_sequence_fails(self):
        row = analyze(healthy(), HUB, rf"{C} > {CLOSE}", False, 0.5)
        self.assertTrue(any("status sequence" in p for p in row["problems"]))

    def test_late_reconnect_fails(self):
        ev = [dict(e, t=5.0) if e["ev"] == "status" and e["t"] == 2.01 else e for e in healthy()]
        row = analyze(ev, HUB, EXPECTED, False, 0.5)
        self.assertTrue(any("reconnected 4.00 s after the last failure" in p for p in row["problems"]))

    def test_undrained_transient_run_fails(self):
        ev = [dict(e, drained=False) if e["ev"] == "end" else e for e in healthy()]
        row = analyze(ev, HUB, EXPECTED, False, 0.5)
        self.assertTrue(any("drain timed out" in p for p in row["problems"]))

    def test_go_durations(self):
        self.assertAlmostEqual(go_duration("999.5ms"), 0.9995)
        self.assertAlmostEqual(go_duration("1m0.5s"), 60.5)
        self.assertAlmostEqual(go_duration("1.2s"), 1.2)
        with self.assertRaises(ValueError):
            go_duration("1 s")


if __name__ == "__main__":
    unittest.main()
