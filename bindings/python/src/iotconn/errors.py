"""Exceptions: one class per IOTCONN_E* code, each carrying the code and the library's message."""

from __future__ import annotations

from enum import IntEnum
from typing import Dict, Type


class ErrorCode(IntEnum):
    """The header's IOTCONN_OK and IOTCONN_E* codes."""

    OK = 0
    EINVAL = -1
    EBADHANDLE = -2
    ECLOSED = -3
    EQUEUEFULL = -4
    ETIMEOUT = -5
    EAUTH = -6
    EDISABLED = -7
    ERETRYEXPIRED = -8
    ETOOLARGE = -9
    ENETWORK = -10
    ESTATE = -11
    EINTERNAL = -12
    EPROTOCOL = -13
    ETHROTTLED = -14
    EDROPPED = -15
    ESTORE = -16
    ECANCELED = -17
    EINDOUBT = -18


class IoTConnError(Exception):
    """A failed library call. `code` is the IOTCONN_E* code (an ErrorCode when known), `message` the text of
    iotconn_last_error() for it."""

    code: int
    message: str

    def __init__(self, code: int, message: str = "") -> None:
        try:
            code = ErrorCode(code)
        except ValueError:
            pass
        self.code = code
        self.message = message or "iotconn call failed"
        super().__init__(self.message)

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, ErrorCode) else str(self.code)
        return f"{self.message} [{name}]"


class InvalidArgumentError(IoTConnError, ValueError):
    """IOTCONN_EINVAL: a bad argument, connection string or option."""


class BadHandleError(IoTConnError):
    """IOTCONN_EBADHANDLE: the client handle is unknown or destroyed."""


class ClientClosedError(IoTConnError):
    """IOTCONN_ECLOSED: the client was closed (shut down)."""


class QueueFullError(IoTConnError):
    """IOTCONN_EQUEUEFULL: the outbound queue is at its message-count or byte limit."""


class OperationTimeoutError(IoTConnError, TimeoutError):
    """IOTCONN_ETIMEOUT: the operation (or connect) timeout elapsed."""


class CredentialError(IoTConnError):
    """IOTCONN_EAUTH: the hub refused the credential."""


class DeviceDisabledError(IoTConnError):
    """IOTCONN_EDISABLED: the device is disabled or unknown to the hub."""


class RetryExpiredError(IoTConnError):
    """IOTCONN_ERETRYEXPIRED: the retry policy gave up."""


class MessageTooLargeError(IoTConnError, ValueError):
    """IOTCONN_ETOOLARGE: the payload or message is over the hub's limit."""


class NetworkError(IoTConnError, ConnectionError):
    """IOTCONN_ENETWORK: DNS, refused or unreachable."""


class StateError(IoTConnError):
    """IOTCONN_ESTATE: not allowed in the current state."""


class InternalError(IoTConnError):
    """IOTCONN_EINTERNAL: a bug in the library."""


class ProtocolError(IoTConnError):
    """IOTCONN_EPROTOCOL: the peer broke the protocol or closed the connection."""


class ThrottledError(IoTConnError):
    """IOTCONN_ETHROTTLED: the hub throttled the device and retrying gave up."""


class MessageDroppedError(IoTConnError):
    """IOTCONN_EDROPPED: dropped by QueueOverflow.DROP_OLDEST to make room for a newer message."""


class QueueStoreError(IoTConnError, OSError):
    """IOTCONN_ESTORE: queue_dir cannot be used (not writable, corrupt, or in use by another client)."""


class ConnectCancelledError(IoTConnError):
    """IOTCONN_ECANCELED: iotconn_connect_cancel() abandoned the connect (an iotconn.aio connect() was
    cancelled); messages queued meanwhile complete FAILED with it. The client is Disconnected / RETRY_EXPIRED and
    may connect again."""


class MessageInDoubtError(IoTConnError, TimeoutError):
    """IOTCONN_EINDOUBT: the message's time-to-live passed after it was handed to the network but before the hub
    acknowledged it, so it may have reached the hub (it is not sent again). It is the error of a SendResult.EXPIRED
    completion, hence also a TimeoutError, as OperationTimeoutError is for one that never went out."""


class LibraryError(ImportError):
    """libiotconn could not be found or loaded, or its version does not match this package."""


_CLASSES: Dict[int, Type[IoTConnError]] = {
    ErrorCode.EINVAL: InvalidArgumentError,
    ErrorCode.EBADHANDLE: BadHandleError,
    ErrorCode.ECLOSED: ClientClosedError,
    ErrorCode.EQUEUEFULL: QueueFullError,
    ErrorCode.ETIMEOUT: OperationTimeoutError,
    ErrorCode.EAUTH: CredentialError,
    ErrorCode.EDISABLED: DeviceDisabledError,
    ErrorCode.ERETRYEXPIRED: RetryExpiredError,
    ErrorCode.ETOOLARGE: MessageTooLargeError,
    ErrorCode.ENETWORK: NetworkError,
    ErrorCode.ESTATE: StateError,
    ErrorCode.EINTERNAL: InternalError,
    ErrorCode.EPROTOCOL: ProtocolError,
    ErrorCode.ETHROTTLED: ThrottledError,
    ErrorCode.EDROPPED: MessageDroppedError,
    ErrorCode.ESTORE: QueueStoreError,
    ErrorCode.ECANCELED: ConnectCancelledError,
    ErrorCode.EINDOUBT: MessageInDoubtError,
}


def error_for(code: int, message: str = "") -> IoTConnError:
    """The exception for an IOTCONN_E* code: its own class, or IoTConnError for a code this package does not know."""
    return _CLASSES.get(code, IoTConnError)(code, message)
