"""A small device app (the Python twin of examples/c/telemetry.c): connects with a device connection string,
reports a property to its twin, sends a telemetry message every interval, and prints every connection status
change, every send completion and every desired-properties update (with its $version); it answers every direct
method call with status 200 and {"method": NAME}. At the end it waits for the outstanding completions, shuts down,
and prints what it saw.

    python telemetry.py CONNECTION_STRING [CA_FILE] [COUNT] [INTERVAL_MS]

CA_FILE is the PEM of the hub's CA (hubsim prints it); "-" or absent means the system roots.
"""

import json
import sys
import threading
import time

import iotconn
from iotconn import IoTHubDeviceClient, Message, MethodResponse, SendResult


_print_lock = threading.Lock()


def say(line: str) -> None:
    """Prints one whole line: handlers and the main thread print at the same time."""
    with _print_lock:
        print(line, flush=True)


class Tally:
    """What the handlers saw; they run on the client's dispatcher thread."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.sent = self.delivered = self.failed = 0

    def on_status(self, status: iotconn.ConnectionStatus, reason: iotconn.ConnectionStatusChangeReason) -> None:
        say(f"status: {status.name} / {reason.name}")

    def on_send_complete(self, message_id: int, result: SendResult) -> None:
        if result == SendResult.DELIVERED:
            say(f"delivered: id={message_id}")
        else:
            say(f"failed: id={message_id} result={result.name}")
        with self.cond:
            if result == SendResult.DELIVERED:
                self.delivered += 1
            else:
                self.failed += 1
            self.cond.notify_all()

    def on_message(self, message: Message) -> None:
        say(f"c2d: {message.data.decode('utf-8', 'replace')}")

    @staticmethod
    def on_desired(patch: dict) -> None:
        """The hub's patches, and after every reconnect what changed while offline."""
        say(f"desired: version={patch['$version']} {json.dumps(patch, sort_keys=True)}")


def main(argv: list) -> int:
    if len(argv) < 2:
        print(f"usage: {argv[0]} CONNECTION_STRING [CA_FILE] [COUNT] [INTERVAL_MS]", file=sys.stderr)
        return 2
    ca_file = argv[2] if len(argv) > 2 and argv[2] != "-" else None
    count = int(argv[3]) if len(argv) > 3 else 20
    interval = int(argv[4]) / 1000 if len(argv) > 4 else 1.0

    tally = Tally()
    try:
        client = IoTHubDeviceClient.create_from_connection_string(argv[1], ca_file=ca_file)
    except iotconn.IoTConnError as exc:
        print(f"create: {exc}", file=sys.stderr)
        return 1
    with client:
        client.on_connection_state_change = tally.on_status
        client.on_send_complete = tally.on_send_complete
        client.on_message_received = tally.on_message
        # Set before connect: the connection subscribes to desired patches and method calls.
        client.on_twin_desired_properties_patch_received = tally.on_desired

        def on_method(request: iotconn.MethodRequest) -> None:
            # answered at once here; a call may also be answered later, from any thread
            answer = MethodResponse.create_from_method_request(request, 200, {"method": request.name})
            client.send_method_response(answer)
            say(f"method: {request.name} {json.dumps(request.payload)} -> 200 answered")

        client.on_method_request_received = on_method
        try:
            client.connect(timeout=60)
            # Queued like a message (so it takes the first id); returns the twin's new reported $version.
            reported = {"example": "telemetry", "interval_ms": int(interval * 1000)}
            version = client.patch_twin_reported_properties(reported)
            say(f"reported: version={version}")
        except iotconn.IoTConnError as exc:
            print(f"connect: {exc}", file=sys.stderr)
            return 1
        for i in range(1, count + 1):
            payload = json.dumps({"seq": i, "temperature": round(20.0 + (i % 50) / 10, 1)})
            message = Message(
                payload,
                message_id=f"telemetry-{i}",
                content_type="application/json",
                content_encoding="utf-8",
                custom_properties={"seq": str(i)},
            )
            try:
                message_id = client.send_message(message)
            except iotconn.IoTConnError as exc:
                print(f"send {i}: {exc}", file=sys.stderr)
                continue
            with tally.cond:
                tally.sent += 1
            say(f"sent: id={message_id} {message.message_id}")
            if i < count:
                time.sleep(interval)

        # Every accepted message ends in exactly one completion; wait for them (bounded).
        with tally.cond:
            tally.cond.wait_for(lambda: tally.delivered + tally.failed >= tally.sent, timeout=120)
            sent, delivered, failed = tally.sent, tally.delivered, tally.failed

    print(f"client: sent={sent} delivered={delivered} failed={failed}")
    return 0 if delivered == sent else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
