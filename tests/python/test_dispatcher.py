"""iotconn.Dispatcher: many clients, one dispatcher thread, against a real iotconn-hubsim with one device each."""

import asyncio
import gc
import queue
import threading
from typing import Callable, Dict, Iterator, List, Set, Tuple

import pytest

from support import EVENT_TIMEOUT, Recorder
from support import FLEET_DEVICES as DEVICES

import iotconn
import iotconn.aio
from iotconn import ConnectionStatus as S
from iotconn import ConnectionStatusChangeReason as R
from iotconn import SendResult
from iotconn.dispatcher import DispatchThread

FLEET = len(DEVICES)
SENDS = 20
CLOSED = (S.DISABLED, R.CLIENT_CLOSE)


@pytest.fixture
def dispatcher() -> Iterator[iotconn.Dispatcher]:
    """A Dispatcher that is closed after the test (after make_fleet_client's clients, fixtures end in reverse)."""
    d = iotconn.Dispatcher()
    yield d
    d.close()


def dispatcher_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "iotconn-dispatcher"]


class Seen:
    """Everything one client's handlers saw, each with the thread it ran on."""

    def __init__(self, client: iotconn.IoTHubDeviceClient, events: Recorder) -> None:
        self.statuses: List[Tuple[S, R]] = []
        self.completions: List[Tuple[int, SendResult]] = []
        self.received: List[bytes] = []
        self.threads: Set[int] = set()

        def record(kind: List, item: object) -> None:
            self.threads.add(threading.get_ident())
            kind.append(item)
            events.add(item)

        client.on_connection_state_change = lambda s, r: record(self.statuses, (s, r))
        client.on_send_complete = lambda i, r: record(self.completions, (i, r))
        client.on_message_received = lambda m: record(self.received, m.data)


def test_twenty_clients_share_one_dispatcher_thread(fleet_hub, dispatcher, make_fleet_client):
    assert len(dispatcher_threads()) == 1  # the Dispatcher's, started by its constructor
    events = Recorder()  # every event of every client, to wait on
    clients: Dict[str, iotconn.IoTHubDeviceClient] = {}
    seen: Dict[str, Seen] = {}
    for device in DEVICES:
        clients[device] = make_fleet_client(device, dispatcher=dispatcher)
        seen[device] = Seen(clients[device], events)
    for client in clients.values():
        client.connect(timeout=30)
    for device, client in clients.items():
        for k in range(1, SENDS + 1):
            client.send_message(iotconn.Message(f"{device} {k}", message_id=f"{device}-{k}"))
        fleet_hub.send_c2d(device, payload=f"to {device}")
    # per client: Connected, SENDS completions, one C2D message
    events.wait_count(FLEET * (1 + SENDS + 1))
    assert len(dispatcher_threads()) == 1
    standalone = make_fleet_client(DEVICES[0])  # not connected: device 0's connection stays the fleet client's
    assert len(dispatcher_threads()) == 2, "a client without a dispatcher starts its own thread"
    standalone.shutdown()
    assert len(dispatcher_threads()) == 1

    for device, client in clients.items():
        client.shutdown()
        # shutdown returns after the client's last handler ran: DISABLED / CLIENT_CLOSE
        assert seen[device].statuses == [(S.CONNECTED, R.CONNECTION_OK), CLOSED], device
    (thread,) = dispatcher_threads()
    for device in DEVICES:
        s = seen[device]
        assert s.threads == {thread.ident}, f"{device}'s handlers ran on another thread"
        assert s.completions == [(k, SendResult.DELIVERED) for k in range(1, SENDS + 1)], device
        assert s.received == [f"to {device}".encode()]
        recorded = [m["messageId"] for m in fleet_hub.messages(device)]
        assert recorded == [f"{device}-{k}" for k in range(1, SENDS + 1)], "each message recorded once, in order"
    assert thread.ident != threading.get_ident()

    dispatcher.close()
    assert not thread.is_alive() and dispatcher_threads() == []
    dispatcher.close()  # idempotent


def test_a_custom_retry_policy_runs_on_the_shared_thread(fleet_hub, dispatcher, make_fleet_client):
    (thread,) = dispatcher_threads()
    asked = Recorder()
    statuses = {device: Recorder() for device in DEVICES[:2]}
    clients = {}
    for device in DEVICES[:2]:
        clients[device] = make_fleet_client(device, dispatcher=dispatcher)
        clients[device].on_connection_state_change = lambda s, r, seen=statuses[device]: seen.add((s, r))
    policy_device, other = DEVICES[:2]

    def policy(attempt, error):
        asked.add((attempt, threading.get_ident()))
        return True, 0.05

    clients[policy_device].set_retry_policy(policy)
    for client in clients.values():
        client.connect(timeout=30)
    # The hub refuses connections for 1 s: the policy is asked until a reconnect succeeds.
    fleet_hub.fault("hub-down", seconds=1)
    for device in DEVICES[:2]:
        statuses[device].wait_for(lambda e: len(e) >= 3 and e[-1] == (S.CONNECTED, R.CONNECTION_OK))
    calls = asked.events
    assert [attempt for attempt, _ in calls] == list(range(1, len(calls) + 1)) and len(calls) >= 2
    assert {t for _, t in calls} == {thread.ident}
    # the client with the default policy reconnected on the same thread, its policy inside the library
    assert clients[other].send_message("after the outage", wait=True, timeout=30) == 1


def test_closing_the_dispatcher_with_an_open_client_is_refused(fleet_hub, make_fleet_client):
    dispatcher = iotconn.Dispatcher()
    client = make_fleet_client(DEVICES[0], dispatcher=dispatcher)
    client.connect(timeout=30)
    with pytest.raises(iotconn.StateError) as info:
        dispatcher.close()
    assert info.value.code == iotconn.ErrorCode.ESTATE and "not closed" in info.value.message
    # the refusal changed nothing: the thread still dispatches
    completions = Recorder()
    client.on_send_complete = lambda i, r: completions.add((i, r))
    assert client.send_message("still served", wait=True, timeout=30) == 1
    assert completions.wait_count(1) == [(1, SendResult.DELIVERED)]

    client.shutdown()
    dispatcher.close()
    with pytest.raises(iotconn.BadHandleError) as bad:
        make_fleet_client(DEVICES[1], dispatcher=dispatcher)
    assert bad.value.code == iotconn.ErrorCode.EBADHANDLE and "dispatcher" in bad.value.message
    with pytest.raises(TypeError, match="dispatcher must be an iotconn.Dispatcher"):
        make_fleet_client(DEVICES[1], dispatcher="shared")


def test_inside_a_handler_close_and_connect_are_refused(fleet_hub, dispatcher, make_fleet_client):
    client = make_fleet_client(DEVICES[0], dispatcher=dispatcher)
    refused = Recorder()

    def on_status(status, reason):
        if status == S.CONNECTED:
            for call in (dispatcher.close, client.connect):
                try:
                    call()
                except iotconn.StateError as e:
                    refused.add(e.code)

    client.on_connection_state_change = on_status
    client.connect(timeout=30)
    assert refused.wait_count(2) == [iotconn.ErrorCode.ESTATE] * 2


def test_a_client_shut_down_in_its_handler_is_freed_after_it_and_the_others_go_on(
    fleet_hub, dispatcher, make_fleet_client
):
    """shutdown() inside a handler returns at once; the shared thread runs the client's last event and frees it
    after the handler returned (the library refuses a destroy inside a callback), and serves the other clients."""
    quitter, other = (make_fleet_client(device, dispatcher=dispatcher) for device in DEVICES[:2])
    statuses, handler = Recorder(), Recorder()

    def on_send_complete(message_id, result):
        quitter.shutdown()
        handler.add(quitter._core.handle is not None)  # not freed inside its own handler

    quitter.on_connection_state_change = lambda s, r: statuses.add((s, r))
    quitter.on_send_complete = on_send_complete
    for client in (quitter, other):
        client.connect(timeout=30)
    quitter.send_message("then shut down")
    assert statuses.wait_count(2) == [(S.CONNECTED, R.CONNECTION_OK), CLOSED]
    assert handler.events == [True]
    quitter.shutdown()  # waits until the shared thread freed it
    assert quitter._core.handle is None
    assert other.send_message("still served", wait=True, timeout=30) == 1


class FakeMember:
    def __init__(self, order: Recorder) -> None:
        self.order = order

    def release(self) -> None:
        self.order.add("released")


def test_stop_destroys_only_after_every_closing_member_was_released():
    """The order close() relies on, with a poll that runs jobs the test hands it (a job stands for a callback): a
    member that is closing keeps the native dispatcher alive until its final event ran and it was released, so
    that event is never lost to the destroy."""
    jobs: "queue.Queue[Callable[[], None]]" = queue.Queue()

    def poll(ms: int) -> int:
        try:
            jobs.get(timeout=ms / 1000)()
        except queue.Empty:
            return 0
        return 1

    order, stopping = Recorder(), threading.Event()
    thread = DispatchThread(iotconn.load_library(), poll, ends_with_last_member=False)
    member = FakeMember(order)
    thread.attach(member)
    thread.start()
    thread.closing(member)  # what shutdown() does before iotconn_close

    def final_event() -> None:
        stopping.wait(EVENT_TIMEOUT)
        order.add("final event")
        thread.finish(member)  # what DISABLED / CLIENT_CLOSE does

    def stop() -> None:
        stopping.set()
        order.add(("stopped", thread.stop(lambda: order.add("destroyed") or 0)))

    jobs.put(final_event)
    stopper = threading.Thread(target=stop)
    stopper.start()
    stopper.join(EVENT_TIMEOUT)
    assert order.events == ["final event", "released", "destroyed", ("stopped", 0)]
    assert not thread.thread.is_alive()


def test_asyncio_clients_share_a_dispatcher(fleet_hub, dispatcher):
    async def main():
        loop_thread = threading.get_ident()
        statuses: List[Tuple[S, R, int]] = []
        clients = [
            iotconn.aio.IoTHubDeviceClient.create_from_connection_string(
                fleet_hub.connection_strings[device], ca_file=fleet_hub.ca_file, dispatcher=dispatcher
            )
            for device in DEVICES[:3]
        ]
        for client in clients:
            client.on_connection_state_change = lambda s, r: statuses.append((s, r, threading.get_ident()))
            await client.connect(timeout=30)
        assert len(dispatcher_threads()) == 1
        ids = await asyncio.gather(*(c.send_message("async", wait=True) for c in clients))
        assert ids == [1, 1, 1]
        for client in clients:
            await client.shutdown()
        # the handlers ran on the loop, each client's last being DISABLED / CLIENT_CLOSE
        assert sorted((s, r) for s, r, _ in statuses) == sorted([(S.CONNECTED, R.CONNECTION_OK), CLOSED] * 3)
        assert {t for *_, t in statuses} == {loop_thread}

    asyncio.run(main())


def test_an_abandoned_dispatcher_and_its_clients_are_collected_and_the_thread_ends(fleet_hub):
    dispatcher = iotconn.Dispatcher()
    clients = [
        iotconn.IoTHubDeviceClient.create_from_connection_string(
            fleet_hub.connection_strings[device], ca_file=fleet_hub.ca_file, dispatcher=dispatcher
        )
        for device in DEVICES[:2]
    ]
    clients[0].connect(timeout=30)
    (thread,) = dispatcher_threads()
    del dispatcher, clients
    gc.collect()
    thread.join(EVENT_TIMEOUT)
    assert not thread.is_alive()
