"""The asyncio clients: iotconn.aio.IoTHubDeviceClient and IoTHubModuleClient.

The same engine and dispatcher thread as iotconn.IoTHubDeviceClient and IoTHubModuleClient; handlers (plain
functions or coroutine functions) are handed to the event loop the client was created on and run there, in order.
A custom retry policy still runs on the dispatcher thread: the reconnect waits for its answer, so it must be a
plain function.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
from typing import Any, Callable, Dict, Optional, Set, Tuple, Type, TypeVar, Union

from ..client import IoTHubDeviceClient as _SyncDeviceClient
from ..client import IoTHubModuleClient as _SyncModuleClient
from ..client import _IoTHubClient as _SyncClient
from ..client import TwinWaiter, raise_for_result
from ..enums import ConnectionStatus, ConnectionStatusChangeReason, SendResult
from ..errors import ErrorCode, IoTConnError, OperationTimeoutError
from ..message import Message, Payload
from ..method import MethodRequest, MethodResponse
from ..retry import CustomRetryPolicy, RetryPolicy, Seconds, to_ms

log = logging.getLogger("iotconn")

__all__ = ["IoTHubDeviceClient", "IoTHubModuleClient"]

C = TypeVar("C", bound="_IoTHubClient")

# A cancelled connect() repeats iotconn_connect_cancel this often until its executor job returned: the first may
# come before the job entered iotconn_connect, and a connect that starts after a cancel is not affected by it.
_CANCEL_REPEAT_S = 0.02
# ... for this long at most (the job normally returns within milliseconds of a cancel that reached it).
_CANCEL_WAIT_S = 5.0


class _LoopHandlers:
    """The application's handlers and the loop they run on. The dispatcher reaches the handlers through this
    object only, so that an abandoned client can still be collected."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.handlers: Dict[str, Optional[Callable[..., Any]]] = {}
        self.tasks: Set["asyncio.Task[Any]"] = set()

    def forwarder(self, name: str) -> Callable[..., None]:
        """A plain handler for the sync client that hands each event to the loop."""

        def forward(*args: Any) -> None:
            if self.handlers.get(name) is None:
                return
            try:
                self.loop.call_soon_threadsafe(self._run, name, args)
            except RuntimeError:  # the loop is closed
                log.warning("iotconn: %s dropped: the event loop is closed", name)

        return forward

    def _run(self, name: str, args: Tuple[Any, ...]) -> None:
        handler = self.handlers.get(name)
        if handler is None:
            return
        try:
            result = handler(*args)
        except Exception:
            log.exception("iotconn: the %s handler raised", name)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self.tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, name))

    def _finished(self, name: str, task: "asyncio.Task[Any]") -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("iotconn: the %s handler raised", name, exc_info=task.exception())


def _settle(future: "asyncio.Future[Any]", value: Any) -> None:
    if not future.done():
        future.set_result(value)


class _IoTHubClient:
    """What the asyncio IoTHubDeviceClient and IoTHubModuleClient share: all but the sync class they wrap."""

    _sync_class: Type[_SyncClient]

    def __init__(self, sync_client: _SyncClient, loop: asyncio.AbstractEventLoop) -> None:
        """Use create_from_connection_string()."""
        self._sync = sync_client
        self._loop = loop
        self._handlers = _LoopHandlers(loop)
        sync_client.on_connection_state_change = self._handlers.forwarder("on_connection_state_change")
        sync_client.on_message_received = self._handlers.forwarder("on_message_received")
        sync_client.on_send_complete = self._handlers.forwarder("on_send_complete")

    @classmethod
    def create_from_connection_string(cls: Type[C], connection_string: str, **options: Any) -> C:
        """Takes the options of iotconn.IoTHubDeviceClient.create_from_connection_string (IoTHubModuleClient: a
        module's connection string, as iotconn.IoTHubModuleClient). Must be called with an event loop running
        (inside a coroutine)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "create the iotconn.aio client inside a running event loop (its handlers run on that loop)"
            ) from None
        return cls(cls._sync_class.create_from_connection_string(connection_string, **options), loop)

    def _handler(self, name: str) -> Optional[Callable[..., Any]]:
        return self._handlers.handlers.get(name)

    def _set_handler(self, name: str, handler: Optional[Callable[..., Any]]) -> None:
        if handler is not None and not callable(handler):
            raise TypeError(f"{name} must be callable or None, not {type(handler).__name__}")
        self._handlers.handlers[name] = handler

    @property
    def on_connection_state_change(self) -> Optional[Callable[[ConnectionStatus, ConnectionStatusChangeReason], Any]]:
        """handler(status, reason); a plain function or a coroutine function, run on the event loop."""
        return self._handler("on_connection_state_change")

    @on_connection_state_change.setter
    def on_connection_state_change(self, handler: Optional[Callable[..., Any]]) -> None:
        self._set_handler("on_connection_state_change", handler)

    @property
    def on_message_received(self) -> Optional[Callable[[Message], Any]]:
        """handler(message); a plain function or a coroutine function, run on the event loop."""
        return self._handler("on_message_received")

    @on_message_received.setter
    def on_message_received(self, handler: Optional[Callable[..., Any]]) -> None:
        self._set_handler("on_message_received", handler)

    @property
    def on_send_complete(self) -> Optional[Callable[[int, SendResult], Any]]:
        """handler(message_id, result); a plain function or a coroutine function, run on the event loop."""
        return self._handler("on_send_complete")

    @on_send_complete.setter
    def on_send_complete(self, handler: Optional[Callable[..., Any]]) -> None:
        self._set_handler("on_send_complete", handler)

    @property
    def on_twin_desired_properties_patch_received(self) -> Optional[Callable[[Dict[str, Any]], Any]]:
        """handler(patch) with its "$version"; plain or coroutine function, run on the event loop. Set it before
        connect() (see the sync client)."""
        return self._handler("on_twin_desired_properties_patch_received")

    @on_twin_desired_properties_patch_received.setter
    def on_twin_desired_properties_patch_received(self, handler: Optional[Callable[..., Any]]) -> None:
        self._set_subscribed_handler("on_twin_desired_properties_patch_received", handler)

    @property
    def on_method_request_received(self) -> Optional[Callable[[MethodRequest], Any]]:
        """handler(method_request); plain or coroutine function, run on the event loop; answer with
        `await send_method_response(...)`. Set it before connect() (see the sync client)."""
        return self._handler("on_method_request_received")

    @on_method_request_received.setter
    def on_method_request_received(self, handler: Optional[Callable[..., Any]]) -> None:
        self._set_subscribed_handler("on_method_request_received", handler)

    def _set_subscribed_handler(self, name: str, handler: Optional[Callable[..., Any]]) -> None:
        if handler is not None and not callable(handler):
            raise TypeError(f"{name} must be callable or None, not {type(handler).__name__}")
        # Forwarded only once set, since the sync client subscribes for a handler it has at connect() (and
        # raises StateError for one set after connect() that was not subscribed).
        if handler is not None:
            setattr(self._sync, name, self._handlers.forwarder(name))
        self._handlers.handlers[name] = handler

    def set_retry_policy(self, policy: Union[RetryPolicy, CustomRetryPolicy]) -> None:
        """As the sync client's; a custom policy must be a plain (not async) function: it runs on the dispatcher
        thread and returns at once."""
        if inspect.iscoroutinefunction(policy):
            raise TypeError("a custom retry policy must be a plain function: the reconnect waits for its answer")
        self._sync.set_retry_policy(policy)

    async def connect(self, timeout: Optional[Seconds] = None) -> None:
        """Connects (in an executor thread, the loop keeps running). Raises as the sync connect().

        Cancelled (task.cancel(), asyncio.wait_for's timeout), it stops the native connect too, so the executor
        thread is not left blocked until the connect timeout, and then raises CancelledError: the client is then
        DISCONNECTED / RETRY_EXPIRED (unless it had connected just before) and connect() may be called again."""
        job = self._loop.run_in_executor(None, functools.partial(self._sync.connect, timeout))
        try:
            # Shielded: a cancellation must not detach the job, whose return is awaited below.
            await asyncio.shield(job)
        except asyncio.CancelledError:
            await self._stop_connect(job)
            raise

    async def _stop_connect(self, job: "asyncio.Future[None]") -> None:
        """Cancels the native connect until `job` returned (at most _CANCEL_WAIT_S); its outcome is dropped (the
        caller raises CancelledError)."""
        deadline = self._loop.time() + _CANCEL_WAIT_S
        while not job.done() and self._loop.time() < deadline:
            self._sync._core.cancel_connect()
            try:
                await asyncio.wait((job,), timeout=_CANCEL_REPEAT_S)
            except asyncio.CancelledError:
                pass  # cancelled again: the caller raises CancelledError anyway, once the job returned
        if not job.done():
            log.warning("iotconn: connect() was cancelled; the native connect goes on past %s s", _CANCEL_WAIT_S)

    async def send_message(
        self, message: Union[Message, Payload], wait: bool = False, timeout: Optional[Seconds] = None
    ) -> int:
        """Queues a message and returns its id; with wait=True (or a timeout) waits, without blocking the loop,
        until the hub acknowledged it, raising as the sync send_message()."""
        core = self._sync._core
        if not wait and timeout is None:
            return core.send(message)
        wait_s = None if timeout is None else to_ms("timeout", timeout) / 1000
        loop = self._loop
        future: "asyncio.Future[Tuple[SendResult, Optional[IoTConnError]]]" = loop.create_future()

        def finished(result: SendResult, error: Optional[IoTConnError]) -> None:
            loop.call_soon_threadsafe(_settle, future, (result, error))

        message_id = core.send(message, finished)
        try:
            result, error = await asyncio.wait_for(future, wait_s)
        except asyncio.TimeoutError:
            core.forget(message_id)
            raise OperationTimeoutError(
                ErrorCode.ETIMEOUT, f"message {message_id} was not delivered within {timeout} s; it stays queued"
            ) from None
        raise_for_result(message_id, result, error)
        return message_id

    async def get_twin(self, timeout: Optional[Seconds] = None) -> Dict[str, Any]:
        """The whole twin, as the sync get_twin(), awaited without blocking the loop."""
        twin_json = await self._twin_request("twin request", self._sync._core.twin_get, timeout)
        result: Dict[str, Any] = json.loads(twin_json)
        return result

    async def patch_twin_reported_properties(
        self, reported_properties_patch: Dict[str, Any], timeout: Optional[Seconds] = None
    ) -> int:
        """As the sync patch_twin_reported_properties(), awaited without blocking the loop; returns the new
        reported $version."""
        start = functools.partial(self._sync._core.twin_report, reported_properties_patch)
        version: int = await self._twin_request("reported patch", start, timeout)
        return version

    async def send_method_response(self, method_response: MethodResponse) -> None:
        """As the sync send_method_response(), in an executor thread: it blocks until the answer is written."""
        await self._loop.run_in_executor(None, self._sync.send_method_response, method_response)

    async def _twin_request(self, what: str, start: Callable[[TwinWaiter], int], timeout: Optional[Seconds]) -> Any:
        wait_s = None if timeout is None else to_ms("timeout", timeout) / 1000
        loop = self._loop
        future: "asyncio.Future[Tuple[Any, Optional[IoTConnError]]]" = loop.create_future()

        def finished(value: Any, error: Optional[IoTConnError]) -> None:
            loop.call_soon_threadsafe(_settle, future, (value, error))

        request_id = start(finished)
        try:
            value, error = await asyncio.wait_for(future, wait_s)
        except asyncio.TimeoutError:
            self._sync._core.forget_twin_request(request_id)
            raise OperationTimeoutError(
                ErrorCode.ETIMEOUT, f"{what} {request_id} got no answer within {timeout} s"
            ) from None
        if error is not None:
            raise error
        return value

    async def shutdown(self) -> None:
        """Closes and frees the client (see the sync shutdown()); the last handlers still run on the loop."""
        await self._loop.run_in_executor(None, self._sync.shutdown)

    @property
    def connected(self) -> bool:
        return self._sync.connected

    @property
    def connection_status(self) -> Tuple[ConnectionStatus, ConnectionStatusChangeReason]:
        return self._sync.connection_status

    async def __aenter__(self: C) -> C:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.shutdown()


class IoTHubDeviceClient(_IoTHubClient):
    """The asyncio flavour of iotconn.IoTHubDeviceClient: awaitable connect, send_message and shutdown; an
    async context manager. Create it inside a running event loop; its handlers run on that loop."""

    _sync_class = _SyncDeviceClient


class IoTHubModuleClient(_IoTHubClient):
    """The asyncio flavour of iotconn.IoTHubModuleClient, as IoTHubDeviceClient is of iotconn.IoTHubDeviceClient."""

    _sync_class = _SyncModuleClient
