"""IoTHubDeviceClient end to end against a real iotconn-hubsim process."""

import logging
import threading
import time
from datetime import timedelta

import pytest

from support import DEVICE, EVENT_TIMEOUT, Recorder

import iotconn
from iotconn import ConnectionStatus as S
from iotconn import ConnectionStatusChangeReason as R

CONNECTED = (S.CONNECTED, R.CONNECTION_OK)


def watch(client):
    """Records (status, reason, thread id) of every status change and (id, result) of every completion."""
    statuses, completions = Recorder(), Recorder()
    client.on_connection_state_change = lambda s, r: statuses.add((s, r, threading.get_ident()))
    client.on_send_complete = lambda i, r: completions.add((i, r))
    return statuses, completions


def pairs(events):
    return [(s, r) for s, r, _ in events]


def test_connect_send_with_properties_reaches_the_hub(hub, make_client):
    client = make_client()
    statuses, completions = watch(client)
    client.connect(timeout=30)
    assert pairs(statuses.wait_count(1)) == [CONNECTED]
    assert client.connected and client.connection_status == CONNECTED

    message = iotconn.Message(
        '{"temperature": 21.5}',
        message_id="mid-1",
        correlation_id="cid-1",
        content_type="application/json",
        content_encoding="utf-8",
        custom_properties={"alert": "false", "unit": "°C"},
    )
    first = client.send_message(message, wait=True, timeout=30)
    second = client.send_message(b"\x00\x01raw", wait=True)
    assert (first, second) == (1, 2)
    assert completions.wait_count(2) == [(1, iotconn.SendResult.DELIVERED), (2, iotconn.SendResult.DELIVERED)]

    records = hub.messages()
    assert [r["payload"] for r in records] == [b'{"temperature": 21.5}', b"\x00\x01raw"]
    first_record = records[0]
    assert (first_record["messageId"], first_record["correlationId"]) == ("mid-1", "cid-1")
    assert (first_record["contentType"], first_record["contentEncoding"]) == ("application/json", "utf-8")
    assert first_record["properties"] == {"alert": "false", "unit": "°C"}
    # a message without an id gets one from the library
    assert records[1]["messageId"]


def test_cloud_to_device_message_is_received_on_the_dispatcher(hub, make_client):
    client = make_client()
    statuses, _ = watch(client)
    received = Recorder()
    client.on_message_received = lambda m: received.add((m, threading.get_ident()))
    client.connect(timeout=30)
    hub.send_c2d(
        payload="switch on", messageId="c2d-1", correlationId="corr-9", properties={"target": "fan", "level": "3"}
    )
    (message, thread_id), *_ = received.wait_count(1)
    assert message.data == b"switch on"
    assert (message.message_id, message.correlation_id) == ("c2d-1", "corr-9")
    assert message.custom_properties["target"] == "fan" and message.custom_properties["level"] == "3"
    assert thread_id == statuses.events[0][2] != threading.get_ident()


def test_killed_tcp_connection_reports_retrying_then_connected(hub, make_client):
    client = make_client()
    statuses, _ = watch(client)
    client.connect(timeout=30)
    statuses.wait_count(1)
    hub.fault("kill-tcp", device=DEVICE)
    events = statuses.wait_count(3)
    assert pairs(events)[:3] == [CONNECTED, (S.DISCONNECTED_RETRYING, R.COMMUNICATION_ERROR), CONNECTED]
    # after the reconnect the client still sends
    assert client.send_message("after the reconnect", wait=True, timeout=30) == 1
    assert hub.messages()[-1]["payload"] == b"after the reconnect"


def test_custom_retry_policy_drives_the_reconnects_on_the_dispatcher(hub, make_client):
    client = make_client()
    statuses, _ = watch(client)
    asked = Recorder()

    def policy(attempt, error):
        asked.add((attempt, error, threading.get_ident(), time.monotonic()))
        return True, 0.1 * attempt

    client.set_retry_policy(policy)
    client.connect(timeout=30)
    statuses.wait_count(1)
    hub.fault("hub-down", seconds=2)
    # The hub refuses connections for 2 s, so the policy is asked again and again until one succeeds.
    events = statuses.wait_for(lambda e: len(e) >= 3 and pairs(e)[-1] == CONNECTED)
    assert pairs(events)[1] == (S.DISCONNECTED_RETRYING, R.COMMUNICATION_ERROR)
    calls = asked.events
    assert [attempt for attempt, *_ in calls] == list(range(1, len(calls) + 1))
    assert len(calls) >= 2
    assert all(isinstance(error, iotconn.IoTConnError) and error.code < 0 for _, error, _, _ in calls)
    dispatcher = events[0][2]
    assert dispatcher != threading.get_ident()
    assert {thread_id for _, _, thread_id, _ in calls} == {dispatcher}
    # Each delay the policy returned passed before it was asked again (a lower bound: the delays are honoured).
    for (attempt, _, _, asked_at), (_, _, _, next_at) in zip(calls, calls[1:]):
        assert next_at - asked_at >= 0.1 * attempt * 0.9


def test_custom_retry_policy_that_gives_up_ends_retry_expired(hub, make_client):
    client = make_client()
    statuses, _ = watch(client)
    attempts = Recorder()

    def policy(attempt, error):
        attempts.add(attempt)
        return attempt < 3, 0.05

    client.set_retry_policy(policy)
    client.connect(timeout=30)
    statuses.wait_count(1)
    hub.fault("hub-down", seconds=120)
    events = statuses.wait_for(lambda e: pairs(e)[-1] == (S.DISCONNECTED, R.RETRY_EXPIRED))
    assert pairs(events)[1] == (S.DISCONNECTED_RETRYING, R.COMMUNICATION_ERROR)
    assert attempts.events == [1, 2, 3]


@pytest.mark.parametrize("reset_after, second", [(None, 2), (0.001, 1), (timedelta(milliseconds=1), 1)])
def test_backoff_starts_over_only_after_the_link_stayed_up(hub, make_client, reset_after, second):
    """Two link losses in a row: the policy is asked with attempt 2 at the second unless the link between them
    stayed up backoff_reset_after (default 30 s)."""
    client = make_client(backoff_reset_after=reset_after)
    statuses, _ = watch(client)
    attempts = Recorder()

    def policy(attempt, error):
        attempts.add(attempt)
        return True, 0.05

    client.set_retry_policy(policy)
    client.connect(timeout=30)
    for loss in (1, 2):
        statuses.wait_count(2 * loss - 1)
        time.sleep(0.02)  # the link's uptime is what the option is about: 20 ms is past a 1 ms reset time
        hub.fault("kill-tcp", device=DEVICE)
    statuses.wait_for(lambda e: len(e) >= 5 and pairs(e)[-1] == CONNECTED)
    assert attempts.events == [1, second]


def test_bad_backoff_reset_after_raises(make_client):
    with pytest.raises(ValueError, match="backoff_reset_after"):
        make_client(backoff_reset_after=-1)
    with pytest.raises(TypeError, match="backoff_reset_after"):
        make_client(backoff_reset_after="30")
    with pytest.raises(ValueError, match="backoff_reset_after"):
        make_client(backoff_reset_after=2**32)


@pytest.mark.parametrize("spread", [0, 0.5, timedelta(milliseconds=500)])
def test_a_client_with_a_reconnect_spread_connects_and_reconnects(hub, make_client, spread):
    """The first retry after a lost link waits the policy's delay plus a draw in [0, spread]: it still comes."""
    client = make_client(reconnect_spread=spread)
    statuses, _ = watch(client)
    client.connect(timeout=30)
    statuses.wait_count(1)
    hub.fault("kill-tcp", device=DEVICE)
    events = statuses.wait_count(3)
    assert pairs(events)[:3] == [CONNECTED, (S.DISCONNECTED_RETRYING, R.COMMUNICATION_ERROR), CONNECTED]


def test_bad_reconnect_spread_raises(make_client):
    with pytest.raises(ValueError, match="reconnect_spread"):
        make_client(reconnect_spread=-1)
    with pytest.raises(ValueError, match="reconnect_spread"):
        make_client(reconnect_spread=timedelta(seconds=-1))
    with pytest.raises(TypeError, match="reconnect_spread"):
        make_client(reconnect_spread="30")
    # The largest window uint32 milliseconds carry is 4294967.295 s.
    with pytest.raises(ValueError, match="reconnect_spread"):
        make_client(reconnect_spread=4294968)
    make_client(reconnect_spread=4294967.295)


def test_no_retry_policy_gives_up_at_the_first_failure(hub, make_client):
    client = make_client()
    statuses, _ = watch(client)
    client.set_retry_policy(iotconn.NoRetry())
    client.connect(timeout=30)
    statuses.wait_count(1)
    hub.fault("kill-tcp", device=DEVICE)
    events = statuses.wait_for(lambda e: pairs(e)[-1][0] == S.DISCONNECTED)
    assert pairs(events)[-1] == (S.DISCONNECTED, R.RETRY_EXPIRED)


def test_a_raising_handler_is_logged_and_the_dispatcher_goes_on(hub, make_client, caplog):
    client = make_client()
    completions = Recorder()

    def broken(status, reason):
        raise RuntimeError("handler bug")

    client.on_connection_state_change = broken
    client.on_send_complete = lambda i, r: completions.add((i, r))
    with caplog.at_level(logging.ERROR, logger="iotconn"):
        client.connect(timeout=30)
        assert client.send_message("still dispatched", wait=True, timeout=30) == 1
    assert completions.wait_count(1) == [(1, iotconn.SendResult.DELIVERED)]
    logged = [r for r in caplog.records if "on_connection_state_change handler raised" in r.getMessage()]
    assert logged and "handler bug" in str(logged[0].exc_info[1])


def test_shutdown_reports_client_close_and_fails_later_calls(hub, make_client):
    client = make_client()
    statuses, completions = watch(client)
    client.connect(timeout=30)
    client.send_message("one", wait=True)
    client.shutdown()
    # shutdown returns after the last handlers ran
    assert pairs(statuses.events)[-1] == (S.DISABLED, R.CLIENT_CLOSE)
    assert not client.connected
    with pytest.raises(iotconn.ClientClosedError) as info:
        client.send_message("too late")
    assert info.value.code == iotconn.ErrorCode.ECLOSED and info.value.message
    with pytest.raises(iotconn.ClientClosedError):
        client.connect()
    client.shutdown()  # idempotent


def test_messages_pending_at_shutdown_complete_failed(hub, make_client):
    client = make_client()
    _, completions = watch(client)
    # never connected: the messages wait in the outbound queue
    ids = [client.send_message(f"queued {i}") for i in range(3)]
    client.shutdown()
    assert completions.events == [(i, iotconn.SendResult.FAILED) for i in ids]


def test_context_manager_shuts_down(hub, make_client):
    with make_client() as client:
        statuses, _ = watch(client)
        client.connect(timeout=30)
    assert pairs(statuses.events)[-1] == (S.DISABLED, R.CLIENT_CLOSE)


def test_a_handler_may_send_and_shut_down(hub, make_client):
    client = make_client()
    done = threading.Event()
    ids = []

    def on_status(status, reason):
        if status == S.CONNECTED:
            ids.append(client.send_message("from a handler"))
        elif status == S.DISABLED:
            done.set()

    def on_complete(message_id, result):
        client.shutdown()  # inside a handler: the dispatcher finishes after it returns

    client.on_connection_state_change = on_status
    client.on_send_complete = on_complete
    client.connect(timeout=30)
    assert done.wait(30)
    assert ids == [1]
    assert hub.messages()[0]["payload"] == b"from a handler"


def test_misuse_raises_clear_exceptions(hub, make_client):
    with pytest.raises(iotconn.InvalidArgumentError) as info:
        make_client("HostName=;DeviceId=x")
    assert info.value.code == iotconn.ErrorCode.EINVAL and info.value.message
    with pytest.raises(TypeError, match="connection_string must be str"):
        iotconn.IoTHubDeviceClient.create_from_connection_string(b"HostName=x")
    with pytest.raises(ValueError, match="keep_alive"):
        make_client(keep_alive=-5)

    client = make_client()
    client.connect(timeout=30)
    client.connect(timeout=30)  # connecting a connected client is a no-op, as the header documents
    assert client.connection_status[0] == iotconn.ConnectionStatus.CONNECTED
    with pytest.raises(iotconn.MessageTooLargeError) as info:
        client.send_message(b"x" * (256 * 1024 + 1))
    assert info.value.code == iotconn.ErrorCode.ETOOLARGE and info.value.message
    with pytest.raises(iotconn.InvalidArgumentError, match="empty"):
        client.send_message(b"")
    with pytest.raises(TypeError):
        client.send_message(12.5)
    with pytest.raises(TypeError, match="policy must be"):
        client.set_retry_policy("fast")
    with pytest.raises(TypeError, match="on_message_received must be callable"):
        client.on_message_received = "print"
    # the client still works after the rejected calls
    assert client.send_message("fine", wait=True, timeout=30) == 1


def test_wrong_key_raises_credential_error(hub, make_client):
    client = make_client(hub.wrong_key_connection_string())
    statuses, _ = watch(client)
    with pytest.raises(iotconn.CredentialError) as info:
        client.connect(timeout=30)
    assert info.value.code == iotconn.ErrorCode.EAUTH
    assert pairs(statuses.wait_count(1))[-1] == (S.DISCONNECTED, R.BAD_CREDENTIAL)


def error_records(caplog):
    return [r.getMessage() for r in caplog.records if r.name.startswith("iotconn") and r.levelno >= logging.ERROR]


def test_the_dispatcher_ends_without_an_error_when_the_client_is_closed(hub, make_client, caplog):
    """iotconn_poll returns ECLOSED once the client is closed and its last events ran: the normal end, which the
    dispatcher can meet before shutdown() sets its stop flag. Closing the native client under the binding makes
    that order certain."""
    client = make_client()
    statuses, _ = watch(client)
    client.connect(timeout=30)
    core = client._core
    with caplog.at_level(logging.WARNING, logger="iotconn"):
        assert core.lib.close(core.handle) == 0
        core.dispatcher.thread.join(EVENT_TIMEOUT)
        assert not core.dispatcher.thread.is_alive()
    assert core.handle is None  # the dispatcher freed the client on its way out
    assert pairs(statuses.events)[-1] == (S.DISABLED, R.CLIENT_CLOSE)
    assert error_records(caplog) == []


def test_connect_shutdown_cycles_log_no_error(hub, make_client, caplog):
    with caplog.at_level(logging.WARNING, logger="iotconn"):
        for _ in range(50):
            client = make_client()
            client.connect(timeout=30)
            client.shutdown()
    assert error_records(caplog) == []


def test_send_refuses_what_iot_hub_would_refuse_and_the_client_goes_on(hub, make_client):
    client = make_client()
    client.connect(timeout=30)
    # application properties the hub would read as its own: "$." (MQTT system properties) and "iothub-", any case
    for key in ("$.mid", "IoTHub-ack"):
        with pytest.raises(iotconn.InvalidArgumentError) as info:
            client.send_message(iotconn.Message("x", custom_properties={key: "1"}))
        assert info.value.code == iotconn.ErrorCode.EINVAL
    with pytest.raises(iotconn.InvalidArgumentError):
        client.send_message(iotconn.Message("x", message_id="has a space"))
    # the size as the hub counts it: payload + message_id + property names and values, at most MAX_MESSAGE_SIZE
    fits = iotconn.MAX_MESSAGE_SIZE - len("m1") - len("k") - 100
    at_limit = iotconn.Message(b"p" * fits, message_id="m1", custom_properties={"k": "v" * 100})
    over = iotconn.Message(b"p" * (fits + 1), message_id="m1", custom_properties={"k": "v" * 100})
    with pytest.raises(iotconn.MessageTooLargeError) as info:
        client.send_message(over)
    assert info.value.code == iotconn.ErrorCode.ETOOLARGE
    with pytest.raises(iotconn.MessageTooLargeError):
        client.send_message(iotconn.Message(b"p" * 262000, custom_properties={"k": "v" * 200}))
    with pytest.raises(iotconn.MessageTooLargeError):
        client.send_message(iotconn.Message("x", message_id="m" * (iotconn.MAX_MESSAGE_ID_LENGTH + 1)))
    # 30001 bytes, far under MAX_MESSAGE_SIZE, but 30000 "&" take 90000 in the MQTT topic (percent-encoded): past
    # MAX_MQTT_TOPIC_LENGTH
    with pytest.raises(iotconn.MessageTooLargeError):
        client.send_message(iotconn.Message("x", custom_properties={"k": "&" * 30000}))

    assert client.send_message(at_limit, wait=True, timeout=30) == 1
    longest_id = "m" * iotconn.MAX_MESSAGE_ID_LENGTH
    assert client.send_message(iotconn.Message("x", message_id=longest_id), wait=True, timeout=30) == 2
    # the one "iothub-" name a device may set
    created = {"iothub-creation-time-utc": "2026-11-27T06:23:40.000Z"}
    assert client.send_message(iotconn.Message("x", custom_properties=created), wait=True, timeout=30) == 3
    records = hub.messages()
    assert [len(r["payload"]) for r in records] == [fits, 1, 1]
    assert records[1]["messageId"] == longest_id
    assert records[2]["properties"] == created


def test_sas_options_below_the_floors_are_refused(hub, make_client):
    with pytest.raises(iotconn.InvalidArgumentError):
        make_client(sastoken_ttl=1)
    with pytest.raises(iotconn.InvalidArgumentError):
        make_client(sastoken_ttl=iotconn.MIN_SAS_LIFETIME_S, sastoken_renew_margin=iotconn.MIN_SAS_RENEW_MARGIN_S - 1)
    make_client(sastoken_ttl=iotconn.MIN_SAS_LIFETIME_S, sastoken_renew_margin=iotconn.MIN_SAS_RENEW_MARGIN_S)
