"""The outbound queue's options from Python: drop-oldest overflow, a message's ttl, and durable mode (queue_dir)."""

import pytest

from support import Recorder

import iotconn
from iotconn import SendResult


def completions_of(client):
    completions = Recorder()
    client.on_send_complete = lambda i, r: completions.add((i, r))
    return completions


def test_durable_queue_dir_survives_shutdown_and_is_locked(hub, make_client, tmp_path):
    queue_dir = str(tmp_path / "queue")
    first = make_client(queue_dir=queue_dir)
    assert first.queue_recovered == 0
    for i in range(3):
        first.send_message(iotconn.Message(f"m{i}", message_id=f"durable-{i}"))
    with pytest.raises(iotconn.QueueStoreError, match="in use"):
        make_client(queue_dir=queue_dir)
    first.shutdown()  # the three complete FAILED here but stay on disk

    second = make_client(queue_dir=queue_dir)
    assert second.queue_recovered == 3
    completions = completions_of(second)
    second.connect(timeout=30)
    assert completions.wait_count(3) == [(i, SendResult.DELIVERED) for i in (1, 2, 3)]
    assert [r["messageId"] for r in hub.messages()] == ["durable-0", "durable-1", "durable-2"]


def test_drop_oldest_and_ttl(hub, make_client):
    client = make_client(queue_max_messages=2, queue_overflow=iotconn.QueueOverflow.DROP_OLDEST)
    completions = completions_of(client)
    for mid in ("a", "b", "c"):  # c drops a
        client.send_message(iotconn.Message(mid, message_id=mid))
    assert completions.wait_count(1) == [(1, SendResult.FAILED)]
    client.connect(timeout=30)
    assert sorted(completions.wait_count(3)[1:]) == [(2, SendResult.DELIVERED), (3, SendResult.DELIVERED)]
    assert [r["messageId"] for r in hub.messages()] == ["b", "c"]

    offline = make_client()
    expired = completions_of(offline)
    offline.send_message(iotconn.Message("late", ttl=0.05))  # never connected: it can only expire
    assert expired.wait_count(1) == [(1, SendResult.EXPIRED)]
    with pytest.raises(ValueError):
        offline.send_message(iotconn.Message("x", ttl=-1))
    with pytest.raises(ValueError):
        make_client(queue_overflow=7)
