"""iotconn.aio.IoTHubDeviceClient end to end: awaitable calls, handlers on the event loop."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from support import DEVICE, EVENT_TIMEOUT, SilentListener

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


# How long after its cancellation the executor thread of a cancelled connect() may stay busy: a generous bound, not
# a measure of speed (the native connect returns within milliseconds of iotconn_connect_cancel).
CANCEL_DEADLINE = 2.0


async def assert_connect_was_stopped(client, task):
    """The connect task ended cancelled, its executor thread is free again (the loop's default executor has one
    worker: a probe runs only once the connect's job returned), and the client ended DISCONNECTED / RETRY_EXPIRED."""
    done, _ = await asyncio.wait({task}, timeout=EVENT_TIMEOUT)
    assert task in done and task.cancelled()
    probe = asyncio.get_running_loop().run_in_executor(None, threading.get_ident)
    await asyncio.wait_for(probe, CANCEL_DEADLINE)
    assert client.connection_status == (S.DISCONNECTED, R.RETRY_EXPIRED)


def test_cancelled_connect_stops_the_native_connect_and_the_client_connects_later(hub):
    silent = SilentListener()

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        client = iotconn.aio.IoTHubDeviceClient.create_from_connection_string(
            silent.connection_string(hub.connection_strings[DEVICE]), ca_file=hub.ca_file
        )
        async with client:
            task = asyncio.ensure_future(client.connect(timeout=EVENT_TIMEOUT))
            # Once the listener accepted, the connect is blocked in a TLS handshake that never ends.
            with ThreadPoolExecutor(max_workers=1) as side:
                assert await loop.run_in_executor(side, silent.accepted.wait, EVENT_TIMEOUT)
            task.cancel()
            await assert_connect_was_stopped(client, task)

            # The same client connects once a hub listens where it dials: hubsim moves its listener to that port.
            silent.close()
            hub.fault("move-port", addr=f"127.0.0.1:{silent.port}")
            await client.connect(timeout=EVENT_TIMEOUT)
            assert client.connected
            assert await client.send_message("after the cancelled connect", wait=True, timeout=EVENT_TIMEOUT) == 1

    try:
        asyncio.run(main())
    finally:
        silent.close()
    assert hub.messages()[-1]["payload"] == b"after the cancelled connect"


def test_connect_cancelled_by_wait_for_or_before_it_reached_the_library_is_stopped(hub):
    """A cancellation may come before the executor job entered iotconn_connect, which a cancel sent then would
    miss: connect() repeats it until the job returned."""
    silent = SilentListener()

    async def main():
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        async with iotconn.aio.IoTHubDeviceClient.create_from_connection_string(
            silent.connection_string(hub.connection_strings[DEVICE]), ca_file=hub.ca_file
        ) as client:
            timed_out = asyncio.ensure_future(asyncio.wait_for(client.connect(timeout=EVENT_TIMEOUT), 0.1))
            done, _ = await asyncio.wait({timed_out}, timeout=EVENT_TIMEOUT)
            assert timed_out in done and isinstance(timed_out.exception(), asyncio.TimeoutError)
            await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(None, threading.get_ident), CANCEL_DEADLINE
            )
            assert client.connection_status == (S.DISCONNECTED, R.RETRY_EXPIRED)

            at_once = asyncio.ensure_future(client.connect(timeout=EVENT_TIMEOUT))
            await asyncio.sleep(0)  # the task submitted its executor job, which may not have started yet
            at_once.cancel()
            await assert_connect_was_stopped(client, at_once)

    try:
        asyncio.run(main())
    finally:
        silent.close()
