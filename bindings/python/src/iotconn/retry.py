"""Retry policies for IoTHubDeviceClient.set_retry_policy().

Besides ExponentialBackoff and NoRetry, any callable `policy(attempt, error) -> (retry, delay_seconds)` is a custom
policy: `attempt` counts failures from 1, `error` is the IoTConnError of the last one. It runs on the client's
dispatcher thread, like the handlers, and a reconnect waits for its answer, so it must return quickly.
"""

from __future__ import annotations

import ctypes
from datetime import timedelta
from typing import Callable, Optional, Tuple, Union

from . import _native
from .enums import Jitter
from .errors import IoTConnError

Seconds = Union[float, int, timedelta]
CustomRetryPolicy = Callable[[int, IoTConnError], Tuple[bool, Seconds]]

# The largest delay the header's uint32 milliseconds can carry.
_MAX_MS = 2**32 - 1


def to_ms(what: str, value: Seconds) -> int:
    """Milliseconds of a duration given in seconds (or as a timedelta); ValueError when negative or too long."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be seconds (int or float) or a timedelta, not {type(value).__name__}")
    ms = round(seconds * 1000)
    if not 0 <= ms <= _MAX_MS:
        raise ValueError(f"{what} must be between 0 and {_MAX_MS / 1000:.0f} seconds, not {seconds}")
    return ms


class RetryPolicy:
    """A policy the library runs by itself (no Python code is called per attempt)."""

    def _struct(self) -> _native.RetryPolicy:
        raise NotImplementedError


class ExponentialBackoff(RetryPolicy):
    """Exponential back-off with jitter, as the .NET SDK's ExponentialBackoff: the delay grows by `delta_backoff`
    steps from `min_backoff` to `max_backoff`, drawn as `jitter` says (Jitter; the formulas are in the README's
    retry section). `retry_count` None retries forever. Durations in seconds or as timedelta. The library's
    default policy is ExponentialBackoff()."""

    def __init__(
        self,
        retry_count: Optional[int] = None,
        min_backoff: Seconds = 0.1,
        max_backoff: Seconds = 10.0,
        delta_backoff: Seconds = 0.1,
        jitter: Jitter = Jitter.DEFAULT,
    ) -> None:
        if retry_count is not None and (not isinstance(retry_count, int) or retry_count < 0):
            raise ValueError(f"retry_count must be None (unlimited) or an int >= 0, not {retry_count!r}")
        self.retry_count = retry_count
        self.min_backoff_ms = to_ms("min_backoff", min_backoff)
        self.max_backoff_ms = to_ms("max_backoff", max_backoff)
        self.delta_backoff_ms = to_ms("delta_backoff", delta_backoff)
        if self.min_backoff_ms > self.max_backoff_ms:
            raise ValueError(f"min_backoff ({min_backoff}) is greater than max_backoff ({max_backoff})")
        self.jitter = Jitter(jitter)
        if self.jitter == Jitter.DECORRELATED and self.min_backoff_ms == 0:
            raise ValueError("Jitter.DECORRELATED grows every delay from min_backoff, which must be above 0")

    def _struct(self) -> _native.RetryPolicy:
        count = _native.RETRY_UNLIMITED if self.retry_count is None else min(self.retry_count, 2**31 - 1)
        return _native.RetryPolicy(
            ctypes.sizeof(_native.RetryPolicy),
            _native.RETRY_EXPONENTIAL,
            count,
            self.min_backoff_ms,
            self.max_backoff_ms,
            self.delta_backoff_ms,
            int(self.jitter),
        )

    def __repr__(self) -> str:
        return (
            f"ExponentialBackoff(retry_count={self.retry_count}, min_backoff={self.min_backoff_ms / 1000}, "
            f"max_backoff={self.max_backoff_ms / 1000}, delta_backoff={self.delta_backoff_ms / 1000}, "
            f"jitter={self.jitter.name})"
        )


class NoRetry(RetryPolicy):
    """Never retry: the first failure is final (the client ends Disconnected / RETRY_EXPIRED)."""

    def _struct(self) -> _native.RetryPolicy:
        return _native.RetryPolicy(ctypes.sizeof(_native.RetryPolicy), _native.RETRY_NONE)

    def __repr__(self) -> str:
        return "NoRetry()"
