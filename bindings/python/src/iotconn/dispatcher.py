"""The threads that run the handlers: one per client, or one shared by many clients (Dispatcher).

Clients run in the library's POLL dispatch mode, so their callbacks run only inside iotconn_poll (one client's) or
iotconn_dispatcher_poll (a shared dispatcher's), on a Python thread: no thread of the Go runtime ever runs Python
code. DispatchThread is that thread, the same code for both. It also ends its clients: a client's last event is
DISABLED / CLIENT_CLOSE, and once it ran the thread destroys the native client between two polls, so never inside
a callback (the library refuses that) and never while one of the client's callbacks runs.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import weakref
from typing import Callable, List, Optional, Protocol, Set

from . import _native
from .errors import ErrorCode, IoTConnError, StateError, error_for

log = logging.getLogger("iotconn")

# How long one poll waits for an event; a stop request is seen within this time at the latest.
_POLL_MS = 200

# The thread's name, one per client or one per Dispatcher.
THREAD_NAME = "iotconn-dispatcher"


class Member(Protocol):
    """A client served by a DispatchThread."""

    def release(self) -> None:
        """Destroys the native client and fails what still waits for it; called once, on the thread, between polls."""


class DispatchThread:
    """One Python thread that calls `poll` in a loop and releases each member once its final event ran.

    A member goes: attach() -> closing() (the binding closes it) -> finish() (its DISABLED / CLIENT_CLOSE ran, or
    no final event will come) -> released by the thread after that poll -> wait_released() returns.
    """

    def __init__(self, lib: _native.Library, poll: Callable[[int], int], *, ends_with_last_member: bool) -> None:
        self._lib = lib
        self._poll = poll
        # The thread of one client ends once that client is released; a Dispatcher's when stop() or retire() says.
        self._ends_with_last_member = ends_with_last_member
        self._on_end: Optional[Callable[[], int]] = None
        self._cond = threading.Condition()
        self._members: Set[Member] = set()  # attached and not yet released
        self._ending: Set[Member] = set()  # closing or finished, not yet released
        self._finished: List[Member] = []  # to release after the current poll
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def on_thread(self) -> bool:
        return threading.get_ident() == self.thread.ident

    def attach(self, member: Member) -> None:
        with self._cond:
            if self._stopped:
                # Only after a failed poll: a Dispatcher's close() destroys the native dispatcher first, and the
                # library refuses clients of a destroyed one.
                raise StateError(ErrorCode.ESTATE, "the dispatcher thread has stopped (see the iotconn log)")
            self._members.add(member)

    def closing(self, member: Member) -> None:
        """The binding is about to close the member: a Dispatcher's close() now waits for its final event."""
        with self._cond:
            if member in self._members:
                self._ending.add(member)

    def finish(self, member: Member) -> None:
        """The member's final event ran (or will never come): release it after the current poll."""
        with self._cond:
            if member in self._members and member not in self._finished:
                self._ending.add(member)
                self._finished.append(member)

    def serialised(self, create: Callable[[], int]) -> int:
        """Runs `create`, a native client creation with this thread's dispatcher, never during stop()'s destroy:
        the library counts a client created during a dispatcher's destroy neither as open nor as closed."""
        with self._cond:
            return create()

    def wait_released(self, member: Member) -> None:
        """Blocks until the thread released the member (not from the thread itself, which releases it)."""
        with self._cond:
            self._cond.wait_for(lambda: member not in self._members)

    def stop(self, destroy: Callable[[], int]) -> int:
        """Waits until no member is between close and release, so that every final event ran, then calls
        `destroy` (the native dispatcher's) under the lock that the thread checks after a failed poll. If it
        returns 0, the thread ends after its current poll and is joined; its code is returned either way."""
        with self._cond:
            self._cond.wait_for(lambda: not self._ending)
            rc = destroy()
            if rc < 0:
                return rc
            self._stopped = True
        self.thread.join()
        return 0

    def retire(self, destroy: Callable[[], int]) -> None:
        """For a Dispatcher that was garbage collected (with every client that used it, which holds it): the thread
        ends once its last member is released, then calls `destroy` itself. Never waits, so safe on any thread."""
        with self._cond:
            self._ends_with_last_member = True
            self._on_end = destroy

    def _run(self) -> None:
        try:
            while True:
                rc = self._poll(_POLL_MS)
                # Read now: iotconn_last_error() belongs to this thread's last call.
                error = self._error(rc) if rc < 0 else None
                with self._cond:
                    finished, self._finished = self._finished, []
                for member in finished:
                    self._release(member)
                with self._cond:
                    if self._stopped or (self._ends_with_last_member and not self._members):
                        return
                # Not stopped under the lock that stop() destroys under: the failure is not the destroy's.
                if error is not None:
                    log.error("iotconn: polling failed, the dispatcher thread stops: %s", error)
                    return
        finally:
            with self._cond:
                self._stopped = True
                left, on_end = list(self._members), self._on_end
            for member in left:
                self._release(member)
            if on_end is not None:
                rc = on_end()
                if rc < 0:
                    log.error("iotconn: iotconn_dispatcher_destroy failed: %s", self._error(rc))

    def _release(self, member: Member) -> None:
        try:
            member.release()
        finally:
            with self._cond:
                self._members.discard(member)
                self._ending.discard(member)
                self._cond.notify_all()

    def _error(self, rc: int) -> IoTConnError:
        return error_for(rc, (self._lib.last_error() or b"").decode("utf-8", "replace"))


class Dispatcher:
    """One thread for the handlers of many clients: a fleet of device identities in one process needs one
    dispatcher thread, not one per client.

        with iotconn.Dispatcher() as dispatcher:
            clients = [IoTHubDeviceClient.create_from_connection_string(cs, dispatcher=dispatcher) for cs in fleet]
            ...
            for client in clients:
                client.shutdown()

    Every handler and custom retry policy of its clients runs on its thread ("iotconn-dispatcher"), each client's
    in order and one at a time, the clients with events waiting served in turn: a slow handler delays every
    client of the dispatcher. A client's shutdown() works as with its own thread: its last handlers run (DISABLED /
    CLIENT_CLOSE the last), then the native client is freed.

    close() refuses (StateError, ESTATE) while a client created with the dispatcher is not shut down: shut the
    clients down first. A client created with a closed dispatcher raises BadHandleError (the library's EBADHANDLE).
    """

    def __init__(self, *, library: Optional[str] = None) -> None:
        """library: path of libiotconn.so instead of the bundled one (or set IOTCONN_LIBRARY)."""
        lib = _native.load_library(library)
        out = ctypes.c_void_p()
        lib.check(lib.dispatcher_create(_native.DISPATCH_POLL, ctypes.byref(out)))
        handle = out.value or 0
        self._lib = lib
        # Kept after close: the library never reuses a handle, so a client given a closed dispatcher gets its
        # EBADHANDLE.
        self._handle = handle
        self._lock = threading.Lock()  # one close() at a time
        self._closed = False
        self._thread = DispatchThread(lib, lambda ms: lib.dispatcher_poll(handle, ms), ends_with_last_member=False)
        self._thread.start()
        # Unreachable means so are its clients (each holds its dispatcher): the thread ends after their release.
        self._finalizer = weakref.finalize(self, self._thread.retire, lambda: lib.dispatcher_destroy(handle))

    def _create_client(self, create: Callable[[int], int]) -> int:
        """Runs `create(dispatcher handle)`, the native client creation, never during close()'s destroy."""
        handle = self._handle
        return self._thread.serialised(lambda: create(handle))

    def close(self) -> None:
        """Stops the thread and frees the native dispatcher. Idempotent. Raises StateError (ESTATE) while a client
        created with it is not shut down, and inside a handler (it would wait for the thread it runs on)."""
        if self._thread.on_thread():
            raise StateError(ErrorCode.ESTATE, "Dispatcher.close() inside a handler would wait for its own thread")
        with self._lock:
            if self._closed:
                return
            lib, handle = self._lib, self._handle
            # On this thread: iotconn_last_error() then explains a refusal.
            rc = self._thread.stop(lambda: lib.dispatcher_destroy(handle))
            if rc < 0:
                lib.fail(rc)
            self._closed = True
            self._finalizer.detach()

    def __enter__(self) -> "Dispatcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
