"""The matrix's checks catch what they claim to: each case breaks one property of a healthy run's events.

    python3 -m unittest tests/reliability/test_analyze.py
"""

import base64
import copy
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from matrix import (BYTE_CLASSES, C, CE, CLOSE, CREATION_TIME, ERROR_NAMES,  # noqa: E402
                    MAX_MESSAGE_ID, MAX_MESSAGE_SIZE, MAX_TOPIC, NEAR_LIMIT_CASES, PROBES, analyze,
                    check_first_retry, check_throttle_schedule, check_twin, compare_records, go_duration, hub_size,
                    topic_len)

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

    def test_refused_send_fails(self):
        ev = healthy() + [{"t": 0.5, "ev": "refused", "mid": "p-4", "case": "size", "rc": -9, "message": "too big"}]
        row = analyze(ev, HUB, EXPECTED, False, 0.5)
        self.assertEqual(row["refused"], 1)
        self.assertTrue(any("1 sends refused (first p-4 (size): IOTCONN_ETOOLARGE" in p for p in row["problems"]))

    def test_first_retry_after_a_lost_link(self):
        def check(ev):
            row = {"problems": []}
            check_first_retry(row, ev, 0.5)
            return row["problems"]

        def first_wait(msg):
            return [dict(e, msg=msg) if e["ev"] == "log" else e for e in healthy()]

        self.assertEqual(check(first_wait("attempt 1 failed (connection lost); next in 143.2ms")), [])
        self.assertTrue(check(healthy()))  # 999.5 ms: the guard's wait, not the policy's first delay
        self.assertTrue(check(first_wait("attempt 2 failed (connection lost); next in 150ms")))
        self.assertTrue(check([e for e in healthy() if e["ev"] != "log"]))

    def test_throttle_schedule(self):
        def check(*msgs):
            row = {"problems": []}
            check_throttle_schedule(row, [{"t": 1.0, "ev": "log", "msg": m} for m in msgs], "taken for throttling")
            return row["problems"]

        throttled = "attempt 2 failed (connect: CONNACK 3 (server unavailable); taken for throttling, as ...); next in "
        self.assertEqual(check(throttled + "12.5s", "attempt 1 failed (connection lost); next in 150ms"), [])
        self.assertTrue(check(throttled + "1.5s"))  # the normal schedule after a throttled attempt
        self.assertTrue(check(throttled + "1m5s"))
        self.assertTrue(check("attempt 1 failed (connection lost); next in 150ms"))  # nothing throttled: untested

    def test_go_durations(self):
        self.assertAlmostEqual(go_duration("999.5ms"), 0.9995)
        self.assertAlmostEqual(go_duration("1m0.5s"), 60.5)
        self.assertAlmostEqual(go_duration("1.2s"), 1.2)
        with self.assertRaises(ValueError):
            go_duration("1 s")


CODES = {name: code for code, name in ERROR_NAMES.items()}


def near_limit_run():
    """A healthy near-limits run: one accepted message per case at its case's limits, each recorded once unchanged,
    and every probe refused as it must be. Returns the device's events, its sent file's lines and the hub's
    records (payloads as bytes, as harness.Hub.messages gives them)."""
    events = [{"t": 0.0, "ev": "probe", "case": name, "rc": CODES[code]} for name, code in PROBES.items()]
    sent, records = [], []
    for i, (case, limits) in enumerate(NEAR_LIMIT_CASES.items(), 1):
        mid = f"p-{i}-" + "x" * MAX_MESSAGE_ID if "id" in limits else f"p-{i}"
        m = {"messageId": mid[:MAX_MESSAGE_ID], "case": case, "payload": b"{}", "correlationId": "c &=\u00e9",
             "contentType": "application/json", "contentEncoding": "utf-8", "propertyList": [["case", case]]}
        if case in ("byte-classes", "all-limits"):
            m["propertyList"] += [["classes", BYTE_CLASSES], [CREATION_TIME, "2026-11-27T06:23:40Z"]]
        if "topic" in limits:
            m["propertyList"].append(["fill", ""])
            m["propertyList"][-1][1] = "x" * (MAX_TOPIC - topic_len(m))
        if "size" in limits:
            m["payload"] = bytes(n % 256 for n in range(MAX_MESSAGE_SIZE - hub_size(dict(m, payload=b""))))
        events.append({"t": 0.1 * i, "ev": "sent", "id": i, "mid": m["messageId"], "case": case})
        sent.append(dict(copy.deepcopy(m), payload=base64.b64encode(m["payload"]).decode()))
        records.append({k: v for k, v in m.items() if k != "case"})
    return events, sent, records


class NearLimitsTest(unittest.TestCase):
    def test_identical_records_pass(self):
        got = compare_records(*near_limit_run())
        self.assertEqual(got["problems"], [])
        self.assertEqual((got["accepted"], got["recorded"], got["records"], got["identical"]), (5, 5, 5, 5))

    def test_record_differing_in_one_byte_fails(self):
        for field, index in [("payload", -1), ("correlationId", 4), ("contentType", 0), ("contentEncoding", 2)]:
            events, sent, records = near_limit_run()
            rec = records[-1]  # all-limits
            value = rec[field] if isinstance(rec[field], bytes) else rec[field].encode()
            changed = bytearray(value)
            changed[index] ^= 1
            rec[field] = bytes(changed) if field == "payload" else changed.decode()
            got = compare_records(events, sent, records)
            self.assertEqual(got["identical"], 4, field)
            self.assertTrue(any(f"{field} differs at byte {index % len(value)}" in p for p in got["problems"]),
                            (field, got["problems"]))

    def test_property_changed_or_reordered_fails(self):
        events, sent, records = near_limit_run()
        props = records[1]["propertyList"]  # byte-classes
        props[1] = ["classes", props[1][1].replace("+", " ")]  # a '+' decoded as a space
        got = compare_records(events, sent, records)
        self.assertTrue(any("propertyList differs at property 1" in p for p in got["problems"]), got["problems"])
        events, sent, records = near_limit_run()
        records[1]["propertyList"].reverse()
        got = compare_records(events, sent, records)
        self.assertTrue(any("propertyList differs at property 0" in p for p in got["problems"]), got["problems"])

    def test_duplicate_record_is_compared_too(self):
        events, sent, records = near_limit_run()
        resent = dict(records[2], payload=records[2]["payload"][:-1])  # a resend that lost its last byte
        got = compare_records(events, sent, records + [resent])
        self.assertEqual((got["records"], got["identical"]), (6, 5))
        self.assertTrue(any("payload differs" in p for p in got["problems"]))

    def test_message_short_of_its_limit_fails(self):
        events, sent, records = near_limit_run()
        sent[2]["payload"] = base64.b64encode(base64.b64decode(sent[2]["payload"])[:-1]).decode()  # size case
        records[2]["payload"] = records[2]["payload"][:-1]
        got = compare_records(events, sent, records)
        self.assertTrue(any(f"size {MAX_MESSAGE_SIZE - 1}, not {MAX_MESSAGE_SIZE}" in p for p in got["problems"]))

    def test_probe_accepted_fails(self):
        events, sent, records = near_limit_run()
        events[1]["rc"] = 0  # size+1 accepted
        got = compare_records(events, sent, records)
        self.assertTrue(any("probe size+1" in p for p in got["problems"]), got["problems"])

    def test_over_amqp_order_is_free_but_values_and_the_topic_probe_are_checked(self):
        events, sent, records = near_limit_run()
        events = [e for e in events if e.get("case") != "topic+1"]  # no MQTT topic over AMQP
        records[1]["propertyList"].reverse()
        got = compare_records(events, sent, records, amqp=True)
        self.assertEqual((got["problems"], got["identical"]), ([], 5))
        records[1]["propertyList"][0] = ["classes", "changed"]
        got = compare_records(events, sent, records, amqp=True)
        self.assertTrue(any("propertyList differs" in p for p in got["problems"]), got["problems"])
        events, sent, records = near_limit_run()  # with a topic+1 probe sent
        got = compare_records(events, sent, records, amqp=True)
        self.assertTrue(any("probe topic+1 was sent over AMQP" in p for p in got["problems"]), got["problems"])


METHOD = {"after": "hub-down"}


def twin_run():
    """healthy()'s run with twins: reported patches 10 and 11 before the 1 s outage, 12 during it; desired version 1
    at connect, versions 2-4 made during the outage, 4 alone after it; the method call after it answered."""
    ev = healthy() + [
        {"t": 0.05, "ev": "desired", "version": 1, "patch": '{"$version":1}'},
        {"t": 0.2, "ev": "report", "id": 10, "seq": 20},
        {"t": 0.3, "ev": "reported", "id": 10, "version": 2, "error": 0, "message": ""},
        {"t": 0.9, "ev": "report", "id": 11, "seq": 40},
        {"t": 1.5, "ev": "report", "id": 12, "seq": 60},
        {"t": 2.05, "ev": "reported", "id": 11, "version": 3, "error": 0, "message": ""},
        {"t": 2.06, "ev": "reported", "id": 12, "version": 4, "error": 0, "message": ""},
        {"t": 2.07, "ev": "desired", "version": 4, "patch": '{"$version":4,"n":2}'},
        {"t": 2.2, "ev": "method", "name": "ping", "payload": '{"after":"hub-down"}', "rc": 0},
    ]
    hub_twin = {"desired": {"$version": 4, "n": 2}, "reported": {"$version": 4, "seq": 60}}
    return sorted(ev, key=lambda e: e["t"]), hub_twin, [{"status": 200, "payload": {"echo": METHOD}}]


def twin_problems(events, hub_twin, answers, offline=True):
    problems = []
    figures = check_twin(problems, events, hub_twin, [2, 3, 4], offline, 0.5, METHOD, answers)
    return problems, figures


class TwinCheckTest(unittest.TestCase):
    def test_healthy_twin_run_passes(self):
        problems, figures = twin_problems(*twin_run())
        self.assertEqual(problems, [])
        self.assertEqual((figures["reports"], figures["reports_in_outage"], figures["desired_after"]), (3, 2, 1))

    def test_missing_or_second_reported_completion_fails(self):
        events, hub_twin, answers = twin_run()
        problems, _ = twin_problems([e for e in events if not (e["ev"] == "reported" and e["id"] == 11)],
                                    hub_twin, answers)
        self.assertTrue(any("exactly one completion" in p for p in problems), problems)
        second = next(e for e in events if e["ev"] == "reported" and e["id"] == 12)
        problems, _ = twin_problems(events + [dict(second, t=2.5)], hub_twin, answers)
        self.assertTrue(any("exactly one completion" in p for p in problems), problems)

    def test_reported_patches_out_of_order_or_failed_fail(self):
        events, hub_twin, answers = twin_run()
        swapped = [dict(e, version=7 - e["version"]) if e["ev"] == "reported" and e["id"] > 10 else e
                   for e in events]
        problems, _ = twin_problems(swapped, hub_twin, answers)
        self.assertTrue(any("out of order" in p for p in problems), problems)
        failed = [dict(e, error=-5) if e["ev"] == "reported" and e["id"] == 12 else e for e in events]
        problems, _ = twin_problems(failed, hub_twin, answers)
        self.assertTrue(any("reported patches failed" in p for p in problems), problems)

    def test_hub_without_the_last_reported_patch_fails(self):
        events, hub_twin, answers = twin_run()
        hub_twin["reported"]["seq"] = 40
        problems, _ = twin_problems(events, hub_twin, answers)
        self.assertTrue(any("the hub's reported seq is 40" in p for p in problems), problems)

    def test_desired_version_twice_stale_or_intermediate_fails(self):
        events, hub_twin, answers = twin_run()
        again = events + [{"t": 2.3, "ev": "desired", "version": 4, "patch": '{"$version":4,"n":2}'}]
        problems, _ = twin_problems(again, hub_twin, answers)
        self.assertTrue(any("out of order or twice" in p for p in problems), problems)
        stale = [e for e in events if not (e["ev"] == "desired" and e["version"] == 4)]
        problems, _ = twin_problems(stale, hub_twin, answers)
        self.assertTrue(any("not the latest version 4" in p for p in problems), problems)
        stepwise = events + [{"t": 2.065, "ev": "desired", "version": 3, "patch": '{"$version":3,"n":1}'}]
        stepwise.sort(key=lambda e: e["t"])
        problems, _ = twin_problems(stepwise, hub_twin, answers)
        self.assertTrue(any("want one update of the latest" in p for p in problems), problems)
        problems, _ = twin_problems(stepwise, hub_twin, answers, offline=False)  # possible when not offline
        self.assertEqual(problems, [])

    def test_unanswered_method_fails(self):
        events, hub_twin, _ = twin_run()
        problems, _ = twin_problems(events, hub_twin, [])
        self.assertTrue(any("the method call after the reconnect" in p for p in problems), problems)
        refused = [dict(e, rc=-11) if e["ev"] == "method" else e for e in events]
        problems, _ = twin_problems(refused, hub_twin, [{"status": 200, "payload": {"echo": METHOD}}])
        self.assertTrue(any("the method call after the reconnect" in p for p in problems), problems)

    def test_outage_without_reported_patches_tested_nothing(self):
        events, hub_twin, answers = twin_run()
        problems, _ = twin_problems([e for e in events if not (e["ev"] in ("report", "reported") and e["id"] > 10)],
                                    hub_twin, answers)
        self.assertTrue(any("tested less than it claims" in p for p in problems), problems)


if __name__ == "__main__":
    unittest.main()
