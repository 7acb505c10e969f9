"""The thread that runs the handlers of a client.

Clients run in the library's POLL dispatch mode, so their callbacks run only inside iotconn_poll, on a Python
thread: no thread of the Go runtime ever runs Python code. DispatchThread is that thread. It also ends its client:
a client's last event is DISABLED / CLIENT_CLOSE, and once it ran the thread destroys the native client between
two polls, so never inside a callback (the library refuses that) and never while one of its callbacks runs.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, List, Protocol, Set

from . import _native
from .errors import IoTConnError, error_for

log = logging.getLogger("iotconn")

# How long one poll waits for an event; a release asked from another thread is seen within this time at the latest.
_POLL_MS = 200

# The thread's name.
THREAD_NAME = "iotconn-dispatcher"


class Member(Protocol):
    """A client served by a DispatchThread."""

    def release(self) -> None:
        """Destroys the native client and fails what still waits for it; called once, on the thread, between polls."""


class DispatchThread:
    """One Python thread that calls `poll` in a loop and releases each member once its final event ran.

    A member goes: attach() -> finish() (its DISABLED / CLIENT_CLOSE ran, or no final event will come) -> released
    by the thread after that poll -> wait_released() returns.
    """

    def __init__(self, lib: _native.Library, poll: Callable[[int], int]) -> None:
        self._lib = lib
        self._poll = poll
        self._cond = threading.Condition()
        self._members: Set[Member] = set()  # attached and not yet released
        self._finished: List[Member] = []  # to release after the current poll
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def on_thread(self) -> bool:
        return threading.get_ident() == self.thread.ident

    def attach(self, member: Member) -> None:
        with self._cond:
            self._members.add(member)

    def finish(self, member: Member) -> None:
        """The member's final event ran (or will never come): release it after the current poll."""
        with self._cond:
            if member in self._members and member not in self._finished:
                self._finished.append(member)

    def wait_released(self, member: Member) -> None:
        """Blocks until the thread released the member (not from the thread itself, which releases it)."""
        with self._cond:
            self._cond.wait_for(lambda: member not in self._members)

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
                    if not self._members:  # its client was released
                        return
                if error is not None:
                    log.error("iotconn: polling failed, the dispatcher thread stops: %s", error)
                    return
        finally:
            with self._cond:
                left = list(self._members)
            for member in left:
                self._release(member)

    def _release(self, member: Member) -> None:
        try:
            member.release()
        finally:
            with self._cond:
                self._members.discard(member)
                self._cond.notify_all()

    def _error(self, rc: int) -> IoTConnError:
        return error_for(rc, (self._lib.last_error() or b"").decode("utf-8", "replace"))
