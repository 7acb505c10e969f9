"""Many Python threads on one client against a real iotconn-hubsim: send_message from many threads while
shutdown() races them, and handlers that send and shut down. Every accepted id completes exactly once;
every refused send is ClientClosedError; nothing deadlocks (every join and wait has a deadline)."""

import collections
import threading
from typing import Dict, List

from support import EVENT_TIMEOUT, Recorder

import iotconn
from iotconn import ConnectionStatus as S
from iotconn import ConnectionStatusChangeReason as R
from iotconn import SendResult

SENDERS = 8
PER_SENDER = 3000  # a bound: the shutdown stops the senders long before


class Ledger:
    """What send_message returned on each thread and what on_send_complete said, checked at the end."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: List[int] = []
        self.refused = 0
        self.unexpected: List[BaseException] = []
        self.completions: Dict[int, List[SendResult]] = collections.defaultdict(list)
        self.enough = threading.Event()

    def send(self, client: iotconn.IoTHubDeviceClient, payload: str) -> bool:
        """Sends once; False once the client is closed."""
        try:
            message_id = client.send_message(payload)
        except iotconn.ClientClosedError:
            with self.lock:
                self.refused += 1
            return False
        except Exception as e:  # anything else is a failure of the test
            with self.lock:
                self.unexpected.append(e)
            return False
        with self.lock:
            self.accepted.append(message_id)
            if len(self.accepted) >= 500:
                self.enough.set()
        return True

    def completed(self, message_id: int, result: SendResult) -> None:
        with self.lock:
            self.completions[message_id].append(result)

    def sender(self, client: iotconn.IoTHubDeviceClient) -> None:
        for _ in range(PER_SENDER):
            if not self.send(client, '{"concurrent": true}'):
                return

    def check(self) -> None:
        with self.lock:
            assert not self.unexpected, self.unexpected[:3]
            accepted = sorted(self.accepted)
            assert accepted == list(range(1, len(accepted) + 1)), "ids are not 1..n, each once"
            assert sorted(self.completions) == accepted, "completions for other ids than the accepted ones"
            twice = {i: r for i, r in self.completions.items() if len(r) != 1}
            assert not twice, f"ids completed more than once: {list(twice.items())[:3]}"
            results = collections.Counter(r[0] for r in self.completions.values())
            assert set(results) <= {SendResult.DELIVERED, SendResult.FAILED}, results
            assert self.refused >= 1, "no send raced the shutdown"


def start_threads(n: int, target, *args) -> List[threading.Thread]:
    threads = [threading.Thread(target=target, args=args, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def join_all(threads: List[threading.Thread]) -> None:
    for t in threads:
        t.join(EVENT_TIMEOUT)
        assert not t.is_alive(), "a sender thread did not finish"


def test_shutdown_races_senders_on_many_threads(hub, make_client):
    client = make_client(queue_max_messages=SENDERS * PER_SENDER)
    ledger = Ledger()
    client.on_send_complete = ledger.completed
    client.connect(timeout=30)
    senders = start_threads(SENDERS, ledger.sender, client)
    assert ledger.enough.wait(EVENT_TIMEOUT), "500 sends were not accepted"
    client.shutdown()  # runs the last handlers before it returns
    join_all(senders)
    ledger.check()
    # the hub recorded every delivered one
    delivered = {i for i, r in ledger.completions.items() if r == [SendResult.DELIVERED]}
    assert len({m["messageId"] for m in hub.messages()}) >= len(delivered)


def test_handlers_send_and_shut_down_while_threads_send(hub, make_client):
    client = make_client(queue_max_messages=SENDERS * PER_SENDER)
    ledger = Ledger()
    statuses = Recorder()
    chained = {"left": 300}

    def on_status(status, reason):
        statuses.add((status, reason))
        if (status, reason) == (S.CONNECTED, R.CONNECTION_OK):
            ledger.send(client, "sent from the status handler")

    def on_send_complete(message_id, result):
        ledger.completed(message_id, result)
        with ledger.lock:
            chain = result == SendResult.DELIVERED and chained["left"] > 0
            chained["left"] -= chain
            close_now = len(ledger.completions) == 1000
        if chain:
            ledger.send(client, "sent from the completion handler")
        if close_now:
            client.shutdown()  # from inside a handler: returns at once

    client.on_connection_state_change = on_status
    client.on_send_complete = on_send_complete
    client.connect(timeout=30)
    senders = start_threads(4, ledger.sender, client)
    statuses.wait_for(lambda events: (S.DISABLED, R.CLIENT_CLOSE) in events)
    join_all(senders)
    client.shutdown()  # waits for the dispatcher's last handlers
    ledger.check()
    assert chained["left"] < 300, "no handler sent"
    assert statuses.events.count((S.DISABLED, R.CLIENT_CLOSE)) == 1
