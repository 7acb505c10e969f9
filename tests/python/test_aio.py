"""iotconn.aio.IoTHubDeviceClient end to end: awaitable calls, handlers on the event loop."""

import asyncio
import threading

import pytest

from support import DEVICE, EVENT_TIMEOUT

import iotconn
import iotconn.aio
from iotconn import ConnectionStatus as S
from iotconn import ConnectionStatusChangeReason as R


def test_async_client_connects_sends_receives_and_runs_handlers_on_the_loop(hub):
    async def main():
        loop_thread = threading.get_ident()
        statuses, completions, received = [], [], asyncio.Queue()

        async def on_message(message):  # a coroutine handler
            await received.put((message, threading.get_ident()))

        client = iotconn.aio.IoTHubDeviceClient.create_from_connection_string(
            hub.connection_strings[DEVICE], ca_file=hub.ca_file
        )
        async with client:
            client.on_connection_state_change = lambda s, r: statuses.append((s, r, threading.get_ident()))
            client.on_send_complete = lambda i, r: completions.append((i, r, threading.get_ident()))
            client.on_message_received = on_message
            await client.connect(timeout=30)
            assert client.connected
            first = await client.send_message(iotconn.Message("async one", custom_properties={"k": "v"}), wait=True)
            second = await client.send_message(b"async two", timeout=30)
            assert (first, second) == (1, 2)
            hub.send_c2d(payload="to the loop")
            message, thread_id = await asyncio.wait_for(received.get(), EVENT_TIMEOUT)
            assert message.data == b"to the loop" and thread_id == loop_thread
        # shutdown's last handlers were queued on the loop before shutdown returned, so they ran already
        assert [(s, r) for s, r, _ in statuses] == [(S.CONNECTED, R.CONNECTION_OK), (S.DISABLED, R.CLIENT_CLOSE)]
        assert [(i, r) for i, r, _ in completions] == [
            (1, iotconn.SendResult.DELIVERED),
            (2, iotconn.SendResult.DELIVERED),
        ]
        assert {t for *_, t in statuses + completions} == {loop_thread}
        with pytest.raises(iotconn.ClientClosedError):
            await client.send_message("late")

    asyncio.run(main())
    records = hub.messages()
    assert [r["payload"] for r in records] == [b"async one", b"async two"]
    assert records[0]["properties"] == {"k": "v"}


def test_async_client_needs_a_running_loop_and_a_plain_retry_policy(hub):
    with pytest.raises(RuntimeError, match="running event loop"):
        iotconn.aio.IoTHubDeviceClient.create_from_connection_string(hub.connection_strings[DEVICE])

    async def main():
        async with iotconn.aio.IoTHubDeviceClient.create_from_connection_string(
            hub.connection_strings[DEVICE], ca_file=hub.ca_file
        ) as client:

            async def policy(attempt, error):
                return True, 1

            with pytest.raises(TypeError, match="plain function"):
                client.set_retry_policy(policy)
            with pytest.raises(iotconn.CredentialError):
                async with iotconn.aio.IoTHubDeviceClient.create_from_connection_string(
                    hub.wrong_key_connection_string(), ca_file=hub.ca_file
                ) as other:
                    await other.connect(timeout=30)

    asyncio.run(main())
