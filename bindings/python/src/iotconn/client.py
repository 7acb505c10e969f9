"""IoTHubDeviceClient and IoTHubModuleClient: a device's or a module's connection to IoT Hub, through libiotconn.

Threads: the client is created in the library's POLL dispatch mode. Its dispatcher thread (dispatcher.py) is its
own, calling iotconn_poll in a loop, or a shared Dispatcher's. Every handler and a custom retry policy run there;
no thread created by the Go runtime ever runs Python code. shutdown() closes the client, lets the dispatcher run
the last events (failed completions, then DISABLED / CLIENT_CLOSE), and waits until the dispatcher freed the
handle (and, for its own thread, until that thread ended).
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import threading
import weakref
from enum import IntEnum
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar, Union, cast

from . import _native
from .admission import Admission
from .dispatcher import Dispatcher, DispatchThread
from .enums import ConnectionStatus, ConnectionStatusChangeReason, QueueOverflow, SendResult, Transport
from .errors import (
    ClientClosedError,
    ErrorCode,
    InvalidArgumentError,
    IoTConnError,
    OperationTimeoutError,
    StateError,
    error_for,
)
from .message import Message, Payload, from_c, to_c
from .method import MethodRequest, MethodResponse
from .retry import CustomRetryPolicy, RetryPolicy, Seconds, to_ms

log = logging.getLogger("iotconn")
native_log = logging.getLogger("iotconn.native")

StatusHandler = Callable[[ConnectionStatus, ConnectionStatusChangeReason], Any]
MessageHandler = Callable[[Message], Any]
SendCompleteHandler = Callable[[int, SendResult], Any]
# Called on the dispatcher thread when a send someone waits for completes: (result, error or None).
SendWaiter = Callable[[SendResult, Optional[IoTConnError]], None]
DesiredHandler = Callable[[Dict[str, Any]], Any]
MethodHandler = Callable[[MethodRequest], Any]
# Called on the dispatcher thread with the one result of a twin request: (twin JSON bytes or reported version,
# error or None).
TwinWaiter = Callable[[Any, Optional[IoTConnError]], None]

_LOG_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}

E = TypeVar("E", bound=IntEnum)
C = TypeVar("C", bound="_IoTHubClient")


def _enum(cls: Type[E], value: int) -> Union[E, int]:
    """The enum member, or the plain int for a value a newer library appended."""
    try:
        return cls(value)
    except ValueError:
        return value


def _run_handler(name: str, handler: Optional[Callable[..., Any]], *args: Any) -> None:
    """Runs a user handler; what it raises is logged and never reaches the dispatcher."""
    if handler is None:
        return
    try:
        handler(*args)
    except Exception:
        log.exception("iotconn: the %s handler raised", name)


class _Core:
    """The native side of one client: handle, callbacks, dispatcher thread. It holds no reference to the
    IoTHubDeviceClient, so an abandoned client can be collected (its finalizer then shuts this down)."""

    def __init__(self, lib: _native.Library, handle: int, shared: Optional[DispatchThread], twin: bool) -> None:
        self.lib = lib
        self.handle: Optional[int] = handle
        self.on_status: Optional[StatusHandler] = None
        self.on_message: Optional[MessageHandler] = None
        self.on_send_complete: Optional[SendCompleteHandler] = None
        self.on_desired: Optional[DesiredHandler] = None
        self.on_method: Optional[MethodHandler] = None
        self.retry_policy: Optional[CustomRetryPolicy] = None
        # The twin and method callbacks subscribe the device, so they are registered only for what the app uses:
        # the twin ones at create with twin=True, the others at the first connect() from the handlers set then
        # (a registration takes effect from the next connection).
        self.twin = False
        self.connect_called = False
        self.desired_registered = False
        self.method_registered = False
        # Guards `handle` against destruction during a send, and `waiters` and `twin_waiters`, so that a
        # completion that comes before the request registered its waiter cannot be missed.
        self.lock = threading.Lock()
        self.waiters: Dict[int, SendWaiter] = {}
        self.twin_waiters: Dict[int, TwinWaiter] = {}
        # The ctypes callback objects stay referenced here for the life of the core, i.e. past destroy: native
        # code may call them until iotconn_client_destroy returns.
        self.status_cb = _native.STATUS_CB(self._status)
        self.message_cb = _native.MESSAGE_CB(self._message)
        self.send_cb = _native.SEND_CB(self._send_complete)
        self.log_cb = _native.LOG_CB(self._log)
        self.retry_cb = _native.RETRY_CB(self._retry)
        self.twin_cb = _native.TWIN_CB(self._twin)
        self.reported_cb = _native.REPORTED_CB(self._reported)
        self.desired_cb = _native.DESIRED_CB(self._desired)
        self.method_cb = _native.METHOD_CB(self._method)
        # Its own dispatcher thread, or a shared Dispatcher's, which may already poll this client's events.
        self.owns_thread = shared is None
        if shared is None:
            self.dispatcher = DispatchThread(lib, lambda ms: lib.poll(handle, ms), ends_with_last_member=True)
        else:
            self.dispatcher = shared
        try:
            lib.check(lib.register_status_callback(handle, self.status_cb, None))
            lib.check(lib.register_message_callback(handle, self.message_cb, None))
            lib.check(lib.register_send_callback(handle, self.send_cb, None))
            lib.check(lib.register_log_callback(handle, self.log_cb, None))
            if twin:
                self.register_twin()
            self.dispatcher.attach(self)
        except IoTConnError:
            lib.client_destroy(handle)
            self.handle = None
            raise
        if self.owns_thread:
            self.dispatcher.start()

    # ---- the dispatcher ---------------------------------------------------------------------------------------

    def on_dispatcher(self) -> bool:
        return self.dispatcher.on_thread()

    def release(self) -> None:
        # The dispatcher thread calls this between two polls, so no callback of this client runs meanwhile.
        with self.lock:
            handle, self.handle = self.handle, None
            waiters, self.waiters = self.waiters, {}
            twin_waiters, self.twin_waiters = self.twin_waiters, {}
            if handle is not None:
                rc = self.lib.client_destroy(handle)
                if rc < 0:
                    log.error("iotconn: iotconn_client_destroy failed: %s", self._error(rc))
        closed = ClientClosedError(ErrorCode.ECLOSED, "the client was shut down before the message completed")
        for waiter in waiters.values():
            _run_handler("send waiter", waiter, SendResult.FAILED, closed)
        closed = ClientClosedError(ErrorCode.ECLOSED, "the client was shut down before the twin request completed")
        for twin_waiter in twin_waiters.values():
            _run_handler("twin waiter", twin_waiter, None, closed)

    def _error(self, rc: int) -> IoTConnError:
        return error_for(rc, (self.lib.last_error() or b"").decode("utf-8", "replace"))

    # ---- callbacks (they run inside iotconn_poll, on the dispatcher thread) --------------------------------------

    def _status(self, status: int, reason: int, _user: Any) -> None:
        _run_handler(
            "on_connection_state_change",
            self.on_status,
            _enum(ConnectionStatus, status),
            _enum(ConnectionStatusChangeReason, reason),
        )
        if (status, reason) == (ConnectionStatus.DISABLED, ConnectionStatusChangeReason.CLIENT_CLOSE):
            # The client's last event: the dispatcher frees it once this poll returned.
            self.dispatcher.finish(self)

    def _message(self, cmsg: Any, _user: Any) -> None:
        if self.on_message is None:
            return
        try:
            message = from_c(cmsg.contents)
        except Exception:
            log.exception("iotconn: cannot read a received message")
            return
        _run_handler("on_message_received", self.on_message, message)

    def _send_complete(self, message_id: int, result: int, code: int, _user: Any) -> None:
        send_result = _enum(SendResult, result)
        # The library set iotconn_last_error() on this thread for this completion.
        error = self._error(code) if code else None
        if error is not None:
            log.warning("iotconn: message %d ended %s: %s", message_id, getattr(send_result, "name", result), error)
        with self.lock:
            waiter = self.waiters.pop(message_id, None)
        _run_handler("send waiter", waiter, send_result, error)
        _run_handler("on_send_complete", self.on_send_complete, message_id, send_result)

    def _twin_done(self, request_id: int, value: Any, code: int) -> None:
        # The library set iotconn_last_error() on this thread for this result.
        error = self._error(code) if code else None
        with self.lock:
            waiter = self.twin_waiters.pop(request_id, None)
        _run_handler("twin waiter", waiter, value, error)

    def _twin(self, request_id: int, twin_json: Optional[bytes], _len: int, code: int, _user: Any) -> None:
        self._twin_done(request_id, twin_json, code)

    def _reported(self, request_id: int, version: int, code: int, _user: Any) -> None:
        self._twin_done(request_id, version, code)

    def _desired(self, version: int, patch_json: Optional[bytes], _len: int, _user: Any) -> None:
        if self.on_desired is None:
            return
        # The JSON carries "$version" itself.
        try:
            patch = json.loads(patch_json or b"{}")
        except ValueError:
            log.exception("iotconn: cannot read desired properties of version %d", version)
            return
        _run_handler("on_twin_desired_properties_patch_received", self.on_desired, patch)

    def _method(self, request_id: bytes, name: bytes, payload_json: Optional[bytes], size: int, _user: Any) -> None:
        # Without a handler the call stays unanswered: the hub's caller gets its timeout.
        if self.on_method is None:
            return
        try:
            payload = json.loads(payload_json) if payload_json and size else None
        except ValueError:
            log.exception("iotconn: cannot read the payload of method %r", name)
            return
        request = MethodRequest(request_id.decode(), name.decode("utf-8", "replace"), payload)
        _run_handler("on_method_request_received", self.on_method, request)

    def _log(self, level: int, text: Optional[bytes], _user: Any) -> None:
        py_level = _LOG_LEVELS.get(level, logging.DEBUG)
        if native_log.isEnabledFor(py_level):
            native_log.log(py_level, "%s", (text or b"").decode("utf-8", "replace"))

    def _retry(self, attempt: int, code: int, text: Optional[bytes], delay_ms: Any, _user: Any) -> int:
        policy = self.retry_policy
        if policy is None:
            return 0
        error = error_for(code, (text or b"").decode("utf-8", "replace"))
        try:
            again, delay = policy(attempt, error)
            delay_ms[0] = to_ms("the retry policy's delay", delay)
        except Exception:
            log.exception("iotconn: the custom retry policy failed at attempt %d; not retrying", attempt)
            return 0
        return 1 if again else 0

    # ---- calls from the application ---------------------------------------------------------------------------

    def live_handle(self) -> int:
        handle = self.handle
        if handle is None:
            raise ClientClosedError(ErrorCode.ECLOSED, "the client was shut down")
        return handle

    def send(self, message: Union[Message, Payload], waiter: Optional[SendWaiter] = None) -> int:
        cmsg = to_c(message)
        out_id = ctypes.c_uint64()
        with self.lock:
            rc = self.lib.send(self.live_handle(), ctypes.byref(cmsg), ctypes.byref(out_id))
            if rc < 0:
                self.lib.fail(rc)
            if waiter is not None:
                self.waiters[out_id.value] = waiter
        return out_id.value

    def register_features(self) -> None:
        """At the first connect(): registers the desired callback (with the twin ones it needs) when the app set a
        desired handler, and the method callback when it set a method handler."""
        if self.connect_called:
            return
        self.connect_called = True
        handle, lib = self.live_handle(), self.lib
        if self.on_desired is not None:
            self.register_twin()
            lib.check(lib.register_desired_callback(handle, self.desired_cb, None))
            self.desired_registered = True
        if self.on_method is not None:
            lib.check(lib.register_method_callback(handle, self.method_cb, None))
            self.method_registered = True

    def register_twin(self) -> None:
        handle, lib = self.live_handle(), self.lib
        lib.check(lib.register_twin_callback(handle, self.twin_cb, None))
        lib.check(lib.register_reported_callback(handle, self.reported_cb, None))
        self.twin = True

    def twin_request(self, start: Callable[[int, Any], int], waiter: TwinWaiter) -> int:
        """Starts a twin request (start(handle, out_id pointer) -> rc) and registers `waiter` for its result."""
        out_id = ctypes.c_uint64()
        with self.lock:
            rc = start(self.live_handle(), ctypes.byref(out_id))
            if rc < 0:
                if rc == ErrorCode.ESTATE and not self.twin:
                    raise StateError(
                        ErrorCode.ESTATE,
                        "twins are not enabled: create the client with twin=True, or set "
                        "on_twin_desired_properties_patch_received, before connect()",
                    )
                self.lib.fail(rc)
            self.twin_waiters[out_id.value] = waiter
        return out_id.value

    def twin_get(self, waiter: TwinWaiter) -> int:
        return self.twin_request(self.lib.twin_get, waiter)

    def twin_report(self, patch: Dict[str, Any], waiter: TwinWaiter) -> int:
        if not isinstance(patch, dict):
            raise TypeError(f"reported_properties_patch must be a dict, not {type(patch).__name__}")
        data = json.dumps(patch).encode()
        return self.twin_request(lambda handle, out_id: self.lib.twin_report(handle, data, len(data), out_id), waiter)

    def forget_twin_request(self, request_id: int) -> None:
        with self.lock:
            self.twin_waiters.pop(request_id, None)

    def respond(self, response: MethodResponse) -> None:
        if not isinstance(response, MethodResponse):
            raise TypeError(f"method_response must be a MethodResponse, not {type(response).__name__}")
        rid = _native.c_string("request_id", response.request_id)
        payload = None if response.payload is None else json.dumps(response.payload).encode()
        # Not under the lock: the call blocks until the answer is written, and a handle freed meanwhile is
        # refused by the library (EBADHANDLE).
        rc = self.lib.method_respond(self.live_handle(), rid, response.status, payload, len(payload or b""))
        if rc < 0:
            self.lib.fail(rc)

    def cancel_connect(self) -> None:
        """Makes the connect() calls in progress return ConnectCancelledError. Under the lock, so that the handle is
        not freed meanwhile; once it is, no connect can be in progress (shutdown ended them with ECLOSED)."""
        with self.lock:
            if self.handle is not None:
                self.lib.check(self.lib.connect_cancel(self.handle))

    def forget(self, message_id: int) -> None:
        with self.lock:
            self.waiters.pop(message_id, None)

    def shutdown(self) -> None:
        handle = self.handle
        if handle is not None:
            self.dispatcher.closing(self)
            rc = self.lib.close(handle)
            if rc < 0:
                if rc != ErrorCode.EBADHANDLE:
                    log.error("iotconn: iotconn_close failed: %s", self._error(rc))
                self.dispatcher.finish(self)  # no final event will come
        # From inside a handler the dispatcher frees the handle once the handler returns.
        if not self.on_dispatcher():
            self.dispatcher.wait_released(self)
            if self.owns_thread:
                self.dispatcher.thread.join()


def _check_handler(name: str, handler: Any) -> Any:
    if handler is not None and not callable(handler):
        raise TypeError(f"{name} must be callable or None, not {type(handler).__name__}")
    return handler


def _optional_ms(what: str, value: Optional[Seconds]) -> int:
    # 0 means "the library's default" in the header, so a zero duration asked for is sent as 1 ms.
    return 0 if value is None else max(1, to_ms(what, value))


def _optional_uint(what: str, value: Optional[int], limit: int) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
        raise ValueError(f"{what} must be an int between 1 and {limit}, not {value!r}")
    return value


def native_options(
    *,
    ca_file: Optional[str] = None,
    server_verification_cert: Optional[str] = None,
    x509_cert_file: Optional[str] = None,
    x509_key_file: Optional[str] = None,
    transport: Transport = Transport.MQTT,
    websockets: bool = False,
    amqp_pool: Optional[int] = None,
    keep_alive: Optional[int] = None,
    sastoken_ttl: Optional[int] = None,
    sastoken_renew_margin: Optional[int] = None,
    queue_max_messages: Optional[int] = None,
    queue_max_bytes: Optional[int] = None,
    operation_timeout: Optional[Seconds] = None,
    queue_overflow: QueueOverflow = QueueOverflow.REJECT,
    queue_dir: Optional[str] = None,
    backoff_reset_after: Optional[Seconds] = None,
    reconnect_spread: Optional[Seconds] = None,
    admission: Optional[Admission] = None,
) -> _native.Options:
    """iotconn_options_t from the keyword options of the create_* methods (documented there), in POLL mode."""
    if admission is not None and not isinstance(admission, Admission):
        raise TypeError(f"admission must be an iotconn.Admission or None, not {type(admission).__name__}")
    if not isinstance(websockets, bool):
        raise TypeError(f"websockets must be bool, not {type(websockets).__name__}")
    opts = _native.Options(ctypes.sizeof(_native.Options))
    kind = Transport(transport)
    if websockets:
        kind = {Transport.MQTT: Transport.MQTT_WS, Transport.AMQP: Transport.AMQP_WS}.get(kind, kind)
    opts.transport = int(kind)
    opts.amqp_pool = _optional_uint("amqp_pool", amqp_pool, 2**32 - 1)
    opts.ca_file = _native.c_string("ca_file", ca_file)
    opts.ca_pem = _native.c_string("server_verification_cert", server_verification_cert)
    opts.cert_file = _native.c_string("x509_cert_file", x509_cert_file)
    opts.key_file = _native.c_string("x509_key_file", x509_key_file)
    opts.keepalive_s = _optional_uint("keep_alive", keep_alive, 2**32 - 1)
    opts.sas_lifetime_s = _optional_uint("sastoken_ttl", sastoken_ttl, 2**32 - 1)
    opts.sas_renew_margin_s = _optional_uint("sastoken_renew_margin", sastoken_renew_margin, 2**32 - 1)
    opts.queue_max_messages = _optional_uint("queue_max_messages", queue_max_messages, 2**32 - 1)
    opts.queue_max_bytes = _optional_uint("queue_max_bytes", queue_max_bytes, 2**64 - 1)
    opts.operation_timeout_ms = _optional_ms("operation_timeout", operation_timeout)
    opts.dispatch = _native.DISPATCH_POLL
    opts.queue_overflow = int(QueueOverflow(queue_overflow))
    opts.queue_dir = _native.c_string("queue_dir", queue_dir)
    opts.backoff_reset_after_ms = _optional_ms("backoff_reset_after", backoff_reset_after)
    # 0 is "off" here, not a default to avoid: sent as is.
    opts.reconnect_spread_ms = 0 if reconnect_spread is None else to_ms("reconnect_spread", reconnect_spread)
    opts.admission = None if admission is None else admission._handle
    return opts


def _dps_params(
    provisioning_host: str,
    registration_id: str,
    id_scope: str,
    symmetric_key: Optional[str],
    group_key: Optional[str],
    payload: Any,
) -> _native.DPSParams:
    """iotconn_dps_params_t; the library validates the values (InvalidArgumentError)."""
    for name, value in (("provisioning_host", provisioning_host), ("registration_id", registration_id),
                        ("id_scope", id_scope)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be str, not {type(value).__name__}")
    params = _native.DPSParams(ctypes.sizeof(_native.DPSParams))
    params.provisioning_host = _native.c_string("provisioning_host", provisioning_host)
    params.registration_id = _native.c_string("registration_id", registration_id)
    params.id_scope = _native.c_string("id_scope", id_scope)
    params.symmetric_key = _native.c_string("symmetric_key", symmetric_key)
    params.group_key = _native.c_string("group_key", group_key)
    params.payload_json = None if payload is None else _native.c_string("provisioning_payload", json.dumps(payload))
    return params


class _IoTHubClient:
    """What IoTHubDeviceClient and IoTHubModuleClient share: all but how a client is made (their docstrings)."""

    # IoTHubModuleClient: the connection string must name a module; the library checks all the rest.
    _module = False

    def __init__(self, core: _Core, dispatcher: Optional[Dispatcher] = None) -> None:
        """Use create_from_connection_string()."""
        self._core = core
        # Held so that the dispatcher outlives the client, as the library requires.
        self._dispatcher = dispatcher
        self._finalizer = weakref.finalize(self, core.shutdown)

    @classmethod
    def create_from_connection_string(
        cls: Type[C],
        connection_string: str,
        *,
        ca_file: Optional[str] = None,
        server_verification_cert: Optional[str] = None,
        x509_cert_file: Optional[str] = None,
        x509_key_file: Optional[str] = None,
        transport: Transport = Transport.MQTT,
        websockets: bool = False,
        amqp_pool: Optional[int] = None,
        keep_alive: Optional[int] = None,
        sastoken_ttl: Optional[int] = None,
        sastoken_renew_margin: Optional[int] = None,
        queue_max_messages: Optional[int] = None,
        queue_max_bytes: Optional[int] = None,
        operation_timeout: Optional[Seconds] = None,
        queue_overflow: QueueOverflow = QueueOverflow.REJECT,
        queue_dir: Optional[str] = None,
        backoff_reset_after: Optional[Seconds] = None,
        reconnect_spread: Optional[Seconds] = None,
        dispatcher: Optional[Dispatcher] = None,
        admission: Optional[Admission] = None,
        twin: bool = False,
        library: Optional[str] = None,
    ) -> C:
        """A client for "HostName=...;DeviceId=...;SharedAccessKey=..." (it does not connect yet); with
        ";ModuleId=m" (the module's key), module m of that device. IoTHubModuleClient takes only the latter.

        ca_file / server_verification_cert: trusted roots as a PEM file / PEM text (default: the system roots).
        transport: Transport.MQTT (default) or Transport.AMQP (or their _WS forms); websockets=True tunnels either in
        a WebSocket on port 443, as azure-iot-device's websockets=True does. AMQP renews tokens in place.
        amqp_pool: AMQP only: share AMQP connections with the process's other clients of the same value, at most
        this many devices on each (iotconn.AMQP_POOL_MAX); a failed connection fails every device on it, and each
        reconnects by itself on a new one. None or 0: a connection of its own.
        keep_alive, sastoken_ttl, sastoken_renew_margin: seconds; the SAS ones have floors (iotconn.MIN_SAS_*).
        operation_timeout: seconds or timedelta, for connect and for each message. None leaves the library's
        default (see include/iotconn.h).
        queue_overflow: what send_message does when the queue is full (QueueOverflow).
        queue_dir: durable mode: send_message returns once the message is on disk in this directory; a client
        created later on it (also after a crash) sends what was not delivered; see queue_recovered. Raises
        QueueStoreError when the directory cannot be used or another client holds it.
        backoff_reset_after: seconds or timedelta a link must stay up before the retry policy's attempt count (and
        with it the back-off) starts over; a link lost sooner counts as one more failed attempt. Default 30 s.
        reconnect_spread: the fleet hint, seconds or timedelta: how long the fleet sharing this device's hub needs to
        be admitted, about 1.1 x devices / the hub's connect rate (see the README). The first retry after a lost
        link or a failed connect waits the policy's delay plus a uniform draw over this window, later ones at least
        a draw from [window, 1.05 x window], or after a throttling refusal the throttling schedule alone. None or 0:
        off.
        dispatcher: an iotconn.Dispatcher whose one thread runs this client's handlers together with its other
        clients'; None: the client starts its own. A closed one raises BadHandleError.
        admission: an iotconn.Admission, the connect budget this client shares with the others created with it;
        the client keeps it after the Admission is closed. A closed one raises BadHandleError.
        twin: enables get_twin() and patch_twin_reported_properties() (setting a desired-properties handler
        before connect() enables them too). A device using twins or methods subscribes to them, which a Basic-tier
        hub refuses: leave it False there, and set no twin or method handler.
        library: path of libiotconn.so instead of the bundled one (or set IOTCONN_LIBRARY).
        Raises InvalidArgumentError (a ValueError) for a malformed connection string or option, also for a str
        argument holding a NUL character, which C would read only up to the NUL.
        """
        if not isinstance(connection_string, str):
            raise TypeError(f"connection_string must be str, not {type(connection_string).__name__}")
        if cls._module and not _names_module(connection_string):
            raise InvalidArgumentError(
                ErrorCode.EINVAL,
                f"{cls.__name__} needs a module's connection string (HostName=..;DeviceId=..;ModuleId=..;"
                "SharedAccessKey=<the module's key>), and this one has no ModuleId; a device connects with "
                "IoTHubDeviceClient",
            )
        cs = _native.c_string("connection_string", connection_string)
        return cls._create(
            lambda lib, opts, out: lib.client_create(cs, opts, out),
            ca_file=ca_file, server_verification_cert=server_verification_cert, x509_cert_file=x509_cert_file,
            x509_key_file=x509_key_file, transport=transport, websockets=websockets, amqp_pool=amqp_pool,
            keep_alive=keep_alive, sastoken_ttl=sastoken_ttl,
            sastoken_renew_margin=sastoken_renew_margin, queue_max_messages=queue_max_messages,
            queue_max_bytes=queue_max_bytes, operation_timeout=operation_timeout, queue_overflow=queue_overflow,
            queue_dir=queue_dir, backoff_reset_after=backoff_reset_after, reconnect_spread=reconnect_spread,
            dispatcher=dispatcher, admission=admission, twin=twin, library=library,
        )

    @classmethod
    def _create(
        cls: Type[C],
        create_native: Callable[[_native.Library, Any, Any], int],
        *,
        dispatcher: Optional[Dispatcher] = None,
        twin: bool = False,
        library: Optional[str] = None,
        **options: Any,
    ) -> C:
        if dispatcher is not None and not isinstance(dispatcher, Dispatcher):
            raise TypeError(f"dispatcher must be an iotconn.Dispatcher or None, not {type(dispatcher).__name__}")
        lib = _native.load_library(library)
        opts = native_options(**options)
        handle = ctypes.c_void_p()

        def create(dispatcher_handle: Optional[int]) -> int:
            opts.dispatcher = dispatcher_handle
            return cast(int, create_native(lib, ctypes.byref(opts), ctypes.byref(handle)))

        lib.check(create(None) if dispatcher is None else dispatcher._create_client(create))
        shared = None if dispatcher is None else dispatcher._thread
        return cls(_Core(lib, handle.value or 0, shared, bool(twin)), dispatcher)

    @property
    def provisioning_registrations(self) -> int:
        """How many DPS registrations (each billed) this client made: 0 while it uses a cached assignment and for a
        client of a connection string, one more per reprovision."""
        core = self._core
        count = ctypes.c_uint64()
        with core.lock:
            core.lib.check(core.lib.dps_registrations(core.live_handle(), ctypes.byref(count)))
        return count.value

    @property
    def assigned_hub(self) -> Optional[Tuple[str, str]]:
        """(assigned hub, device id) of a provisioned client; None before its first assignment and for a client
        of a connection string."""
        core = self._core
        hub, device = ctypes.c_void_p(), ctypes.c_void_p()
        with core.lock:
            core.lib.check(core.lib.dps_assignment(core.live_handle(), ctypes.byref(hub), ctypes.byref(device)))
        hub_name, device_id = core.lib.take_string(hub), core.lib.take_string(device)
        return None if hub_name is None or device_id is None else (hub_name, device_id)

    # ---- handlers -------------------------------------------------------------------------------------------------

    @property
    def on_connection_state_change(self) -> Optional[StatusHandler]:
        """handler(status: ConnectionStatus, reason: ConnectionStatusChangeReason), once per change, in order."""
        return self._core.on_status

    @on_connection_state_change.setter
    def on_connection_state_change(self, handler: Optional[StatusHandler]) -> None:
        self._core.on_status = _check_handler("on_connection_state_change", handler)

    @property
    def on_message_received(self) -> Optional[MessageHandler]:
        """handler(message: Message) for each cloud-to-device message; message.data is bytes."""
        return self._core.on_message

    @on_message_received.setter
    def on_message_received(self, handler: Optional[MessageHandler]) -> None:
        self._core.on_message = _check_handler("on_message_received", handler)

    @property
    def on_send_complete(self) -> Optional[SendCompleteHandler]:
        """handler(message_id: int, result: SendResult), exactly once per message send_message accepted."""
        return self._core.on_send_complete

    @on_send_complete.setter
    def on_send_complete(self, handler: Optional[SendCompleteHandler]) -> None:
        self._core.on_send_complete = _check_handler("on_send_complete", handler)

    @property
    def on_twin_desired_properties_patch_received(self) -> Optional[DesiredHandler]:
        """handler(patch: dict) for each desired-properties patch, with its "$version"; after every connect, also
        the whole desired section if its version moved while the device was offline. Set it before connect():
        the device subscribes to desired patches at connect (it can be replaced or cleared later)."""
        return self._core.on_desired

    @on_twin_desired_properties_patch_received.setter
    def on_twin_desired_properties_patch_received(self, handler: Optional[DesiredHandler]) -> None:
        self._set_subscribed_handler("on_twin_desired_properties_patch_received", "on_desired", handler)

    @property
    def on_method_request_received(self) -> Optional[MethodHandler]:
        """handler(request: MethodRequest) for each direct method call; answer with send_method_response(), inside
        the handler or later from any thread. Set it before connect(): the device subscribes to methods at connect
        (it can be replaced or cleared later; calls arriving without a handler go unanswered)."""
        return self._core.on_method

    @on_method_request_received.setter
    def on_method_request_received(self, handler: Optional[MethodHandler]) -> None:
        self._set_subscribed_handler("on_method_request_received", "on_method", handler)

    def _set_subscribed_handler(self, name: str, attr: str, handler: Optional[Callable[..., Any]]) -> None:
        core = self._core
        registered = core.desired_registered if attr == "on_desired" else core.method_registered
        # After connect() a handler whose native callback was not registered would never run: say so at once.
        if handler is not None and core.connect_called and not registered:
            raise StateError(ErrorCode.ESTATE, f"set {name} before connect(): the device subscribes at connect")
        setattr(core, attr, _check_handler(name, handler))

    # ---- operations -----------------------------------------------------------------------------------------------

    def set_retry_policy(self, policy: Union[RetryPolicy, CustomRetryPolicy]) -> None:
        """ExponentialBackoff(...), NoRetry(), or a callable policy(attempt, error) -> (retry, delay_seconds)
        that runs on the dispatcher thread (see iotconn.retry)."""
        core = self._core
        if isinstance(policy, RetryPolicy):
            native = policy._struct()
        elif callable(policy):
            native = _native.RetryPolicy(ctypes.sizeof(_native.RetryPolicy), _native.RETRY_CUSTOM)
            native.custom = core.retry_cb
            # Set before the library can ask it.
            core.retry_policy = policy
        else:
            raise TypeError(f"policy must be a RetryPolicy or a callable, not {type(policy).__name__}")
        core.lib.check(core.lib.set_retry_policy(core.live_handle(), ctypes.byref(native)))
        if isinstance(policy, RetryPolicy):
            core.retry_policy = None

    def connect(self, timeout: Optional[Seconds] = None) -> None:
        """Blocks until connected. Raises CredentialError, DeviceDisabledError, RetryExpiredError,
        OperationTimeoutError (after `timeout`, default the operation timeout), ... Once connected, the library
        keeps the connection up; changes arrive at on_connection_state_change."""
        core = self._core
        if core.on_dispatcher():
            raise StateError(ErrorCode.ESTATE, "connect() inside a handler would block the dispatcher it needs")
        core.register_features()
        core.lib.check(core.lib.connect(core.live_handle(), _optional_ms("timeout", timeout)))

    def send_message(
        self, message: Union[Message, Payload], wait: bool = False, timeout: Optional[Seconds] = None
    ) -> int:
        """Queues a message (Message, str or bytes) and returns its id (1, 2, ... per client); its completion
        arrives at on_send_complete. With wait=True (or a timeout), blocks until the hub acknowledged it and
        raises the error it failed with, or OperationTimeoutError when `timeout` passes first (the message then
        stays queued). Raises MessageTooLargeError, QueueFullError, ClientClosedError, InvalidArgumentError."""
        core = self._core
        if not wait and timeout is None:
            return core.send(message)
        if core.on_dispatcher():
            raise StateError(ErrorCode.ESTATE, "waiting for a delivery inside a handler would block the dispatcher")
        wait_s = None if timeout is None else to_ms("timeout", timeout) / 1000
        done = threading.Event()
        outcome: List[Tuple[SendResult, Optional[IoTConnError]]] = []

        def finished(result: SendResult, error: Optional[IoTConnError]) -> None:
            outcome.append((result, error))
            done.set()

        message_id = core.send(message, finished)
        if not done.wait(wait_s):
            core.forget(message_id)
            raise OperationTimeoutError(
                ErrorCode.ETIMEOUT, f"message {message_id} was not delivered within {timeout} s; it stays queued"
            )
        raise_for_result(message_id, *outcome[0])
        return message_id

    def get_twin(self, timeout: Optional[Seconds] = None) -> Dict[str, Any]:
        """The whole twin, {"desired": {..., "$version": n}, "reported": {..., "$version": n}}. Needs twin=True or a
        desired handler set before connect(). Called while disconnected, it waits for the connection. Raises the
        library's error (OperationTimeoutError after the operation timeout, ClientClosedError, StateError when
        twins are not enabled, the hub's refusal), or OperationTimeoutError when `timeout` passes first."""
        twin_json = self._wait_twin_request("twin request", self._core.twin_get, timeout)
        return cast(Dict[str, Any], json.loads(twin_json))

    def patch_twin_reported_properties(
        self, reported_properties_patch: Dict[str, Any], timeout: Optional[Seconds] = None
    ) -> int:
        """Sends a reported-properties patch (a dict; a None value deletes that property) and blocks until the hub
        applied it. Returns the twin's new reported $version (azure-iot-device returns None). The patch is queued
        with the messages, in order, also while disconnected; it raises the error it ended with (as
        send_message(wait=True): MessageInDoubtError, OperationTimeoutError, ...), InvalidArgumentError,
        MessageTooLargeError (over the hub's 32 KB) or StateError when twins are not enabled. When `timeout` passes
        first it raises OperationTimeoutError and the patch stays queued."""
        core = self._core
        start = functools.partial(core.twin_report, reported_properties_patch)
        return cast(int, self._wait_twin_request("reported patch", start, timeout))

    def send_method_response(self, method_response: MethodResponse) -> None:
        """Answers a method call with method_response's status and payload; blocks until the answer is written to
        the connection the call came on. Allowed inside the handler. Raises InvalidArgumentError (an unknown or
        already answered request), MessageTooLargeError (payload over 128 KB), StateError (the call's connection
        ended: the hub forgot the call), OperationTimeoutError, ClientClosedError."""
        self._core.respond(method_response)

    def _wait_twin_request(self, what: str, start: Callable[[TwinWaiter], int], timeout: Optional[Seconds]) -> Any:
        core = self._core
        if core.on_dispatcher():
            raise StateError(ErrorCode.ESTATE, f"waiting for a {what} inside a handler would block the dispatcher")
        wait_s = None if timeout is None else to_ms("timeout", timeout) / 1000
        done = threading.Event()
        outcome: List[Tuple[Any, Optional[IoTConnError]]] = []

        def finished(value: Any, error: Optional[IoTConnError]) -> None:
            outcome.append((value, error))
            done.set()

        # Without a timeout the library's one result ends the wait: the operation timeout bounds it.
        request_id = start(finished)
        if not done.wait(wait_s):
            core.forget_twin_request(request_id)
            raise OperationTimeoutError(ErrorCode.ETIMEOUT, f"{what} {request_id} got no answer within {timeout} s")
        value, error = outcome[0]
        if error is not None:
            raise error
        return value

    def shutdown(self) -> None:
        """Closes the connection (status DISABLED / CLIENT_CLOSE; undelivered messages complete FAILED), runs the
        last handlers, stops the dispatcher and frees the native client. Idempotent; other calls then raise
        ClientClosedError. From inside a handler it returns at once; the dispatcher finishes after the handler."""
        # The finalizer only covers clients that are never shut down; this path always waits (off the dispatcher).
        self._finalizer.detach()
        self._core.shutdown()

    @property
    def queue_recovered(self) -> int:
        """Durable mode: how many undelivered messages this client loaded from queue_dir. They have the ids
        1..queue_recovered and their original message_id, go out after connect() and complete at
        on_send_complete like any other (set it before connect)."""
        core = self._core
        count = ctypes.c_uint64()
        core.lib.check(core.lib.queue_recovered(core.live_handle(), ctypes.byref(count)))
        return count.value

    @property
    def connected(self) -> bool:
        """True while the status is CONNECTED (False after shutdown)."""
        if self._core.handle is None:
            return False
        return self.connection_status[0] == ConnectionStatus.CONNECTED

    @property
    def connection_status(self) -> Tuple[ConnectionStatus, ConnectionStatusChangeReason]:
        """The current (status, reason)."""
        core = self._core
        status, reason = ctypes.c_int(), ctypes.c_int()
        core.lib.check(core.lib.get_status(core.live_handle(), ctypes.byref(status), ctypes.byref(reason)))
        # A value a newer library appended stays a plain int.
        return cast(
            Tuple[ConnectionStatus, ConnectionStatusChangeReason],
            (_enum(ConnectionStatus, status.value), _enum(ConnectionStatusChangeReason, reason.value)),
        )

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


class IoTHubDeviceClient(_IoTHubClient):
    """A device client, in the manner of azure.iot.device.IoTHubDeviceClient.

    Create it with create_from_connection_string(), set the handlers, connect(), send_message(), shutdown()
    (or use it as a context manager). Handlers are attributes:

        client.on_connection_state_change = lambda status, reason: ...
        client.on_message_received = lambda message: ...
        client.on_send_complete = lambda message_id, result: ...
        client.on_twin_desired_properties_patch_received = lambda patch: ...   # before connect()
        client.on_method_request_received = lambda method_request: ...         # before connect()

    They run one at a time, in order, on the client's dispatcher thread; what they raise is logged (logger
    "iotconn"). They may call send_message (without wait) and shutdown.
    """

    @classmethod
    def create_from_provisioning(
        cls,
        provisioning_host: str,
        registration_id: str,
        id_scope: str,
        *,
        symmetric_key: Optional[str] = None,
        group_key: Optional[str] = None,
        provisioning_payload: Any = None,
        cache_file: Optional[str] = None,
        reprovision_after_failures: Optional[int] = None,
        reprovision_after: Optional[Seconds] = None,
        **options: Any,
    ) -> "IoTHubDeviceClient":
        """A client that finds its hub through the Device Provisioning Service (it does not connect yet).

        The attestation is symmetric_key (an individual enrollment's key), group_key (an enrollment group's key:
        the device key is derived from it), or x509_cert_file and x509_key_file (the certificate's CN is the
        registration id). provisioning_payload: JSON-serialisable data sent with each registration.
        The first connect() registers, unless the assignment cache (cache_file, else queue_dir's
        dps-assignment.json) holds this registration's hub: then it connects there without calling DPS. Then the
        library follows Microsoft's guidance: transient failures are retried on the same hub; it registers again
        when a hub it connected to refuses the device (moved, deleted, disabled), or after
        reprovision_after_failures reconnects failed in a row (default 10) or reprovision_after seconds without
        a connection (default 900); never for throttling. A reprovision shows as DISCONNECTED_RETRYING, a log line
        (logger "iotconn.native") and provisioning_registrations; messages queued meanwhile go to the new hub.
        DPS refusing the registration ends connect() with CredentialError (401/403) or DeviceDisabledError (404).
        The other options are create_from_connection_string's.
        """
        params = _dps_params(provisioning_host, registration_id, id_scope, symmetric_key, group_key,
                             provisioning_payload)
        params.cache_file = _native.c_string("cache_file", cache_file)
        params.reprovision_after_failures = _optional_uint(
            "reprovision_after_failures", reprovision_after_failures, 2**32 - 1
        )
        params.reprovision_after_s = 0 if reprovision_after is None else max(
            1, -(-to_ms("reprovision_after", reprovision_after) // 1000)
        )
        return cls._create(lambda lib, opts, out: lib.client_create_dps(ctypes.byref(params), opts, out), **options)


class IoTHubModuleClient(_IoTHubClient):
    """A module client, in the manner of azure.iot.device.IoTHubModuleClient: IoTHubDeviceClient's API (handlers,
    connect, send_message, get_twin, patch_twin_reported_properties, send_method_response, shutdown), made with
    create_from_connection_string from a module's connection string
    ("HostName=..;DeviceId=d;ModuleId=m;SharedAccessKey=<the module's key>"). One without ModuleId raises
    InvalidArgumentError (EINVAL). The module is an identity of its own beside its device: its own connection,
    telemetry, twin and method calls. IoT Hub sends modules no cloud-to-device messages, so on_message_received
    never runs; module input and output routes (IoT Edge) are not supported.
    """

    _module = True


def _names_module(connection_string: str) -> bool:
    """Whether a connection string has a ModuleId field; the library validates its value and the rest."""
    return any(field.partition("=")[0].strip().lower() == "moduleid" for field in connection_string.split(";"))


def raise_for_result(message_id: int, result: SendResult, error: Optional[IoTConnError]) -> None:
    """Raises the error a completion that was not a delivery carries."""
    if result == SendResult.DELIVERED:
        return
    if error is None:
        code = ErrorCode.ETIMEOUT if result == SendResult.EXPIRED else ErrorCode.EINTERNAL
        error = error_for(code, f"message {message_id} ended {getattr(result, 'name', result)}")
    raise error
