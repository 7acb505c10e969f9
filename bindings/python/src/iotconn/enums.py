"""The enums of include/iotconn.h: same names (upper case, without the IOTCONN_ prefix) and the same numbers.

tests/python/test_parity.py checks every name and value against the header.
"""

from enum import IntEnum


class ConnectionStatus(IntEnum):
    """The state of a client's connection as the application sees it (iotconn_status_t)."""

    DISCONNECTED = 0
    CONNECTED = 1
    DISCONNECTED_RETRYING = 2
    DISABLED = 3


class ConnectionStatusChangeReason(IntEnum):
    """Why the status last changed (iotconn_reason_t)."""

    CONNECTION_OK = 0
    EXPIRED_SAS_TOKEN = 1
    DEVICE_DISABLED = 2
    BAD_CREDENTIAL = 3
    RETRY_EXPIRED = 4
    NO_NETWORK = 5
    COMMUNICATION_ERROR = 6
    CLIENT_CLOSE = 7


class Transport(IntEnum):
    """The wire protocol (IOTCONN_TRANSPORT_*)."""

    MQTT = 0
    MQTT_WS = 1
    AMQP = 2
    AMQP_WS = 3


class SendResult(IntEnum):
    """How a sent message ended (IOTCONN_SEND_*): every accepted message gets exactly one."""

    DELIVERED = 0
    EXPIRED = 1
    FAILED = 2


class QueueOverflow(IntEnum):
    """What send_message does when the outbound queue is at a limit (IOTCONN_QUEUE_OVERFLOW_*)."""

    REJECT = 0  # raise QueueFullError
    DROP_OLDEST = 1  # the oldest queued messages complete FAILED (MessageDroppedError) until the new one fits


class Jitter(IntEnum):
    """How ExponentialBackoff randomises its delays (IOTCONN_JITTER_*; the formulas are in the header)."""

    DEFAULT = 0  # the .NET SDK's formula, with a random first delay and a random cap
    FULL = 1  # uniform between min_backoff and the exponential delay
    DECORRELATED = 2  # AWS's: uniform between min_backoff and 3 x the previous delay, capped; min_backoff above 0
