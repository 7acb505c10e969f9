"""iotconn: an Azure IoT Hub device client for Python, on the libiotconn engine (ctypes over include/iotconn.h).

from iotconn import IoTHubDeviceClient, Message

with IoTHubDeviceClient.create_from_connection_string(cs, ca_file="ca.pem") as client:
    client.on_connection_state_change = lambda status, reason: print(status.name, reason.name)
    client.connect(timeout=60)
    client.send_message(Message('{"t": 21.5}', content_type="application/json"), wait=True)
"""

from ._native import (
    MAX_GENERATED_MESSAGE_ID_LENGTH,
    MAX_MESSAGE_ID_LENGTH,
    MAX_MESSAGE_SIZE,
    MAX_MQTT_TOPIC_LENGTH,
    MIN_SAS_LIFETIME_S,
    MIN_SAS_RENEW_INTERVAL_S,
    MIN_SAS_RENEW_MARGIN_S,
    load_library,
)
from .admission import Admission
from .client import IoTHubDeviceClient, IoTHubModuleClient
from .dispatcher import Dispatcher
from .enums import ConnectionStatus, ConnectionStatusChangeReason, Jitter, QueueOverflow, SendResult, Transport
from .errors import (
    BadHandleError,
    ClientClosedError,
    ConnectCancelledError,
    CredentialError,
    DeviceDisabledError,
    ErrorCode,
    InternalError,
    InvalidArgumentError,
    IoTConnError,
    LibraryError,
    MessageDroppedError,
    MessageInDoubtError,
    MessageTooLargeError,
    NetworkError,
    OperationTimeoutError,
    ProtocolError,
    QueueFullError,
    QueueStoreError,
    RetryExpiredError,
    StateError,
    ThrottledError,
)
from ._versioning import package_version
from .message import Message
from .method import MethodRequest, MethodResponse
from .provisioning import ProvisioningDeviceClient, RegistrationResult, RegistrationState, X509
from .retry import CustomRetryPolicy, ExponentialBackoff, NoRetry, RetryPolicy

__version__ = package_version()

__all__ = [
    "Admission",
    "BadHandleError",
    "ClientClosedError",
    "ConnectCancelledError",
    "ConnectionStatus",
    "ConnectionStatusChangeReason",
    "CredentialError",
    "CustomRetryPolicy",
    "DeviceDisabledError",
    "Dispatcher",
    "ErrorCode",
    "ExponentialBackoff",
    "InternalError",
    "InvalidArgumentError",
    "IoTConnError",
    "IoTHubDeviceClient",
    "IoTHubModuleClient",
    "Jitter",
    "LibraryError",
    "MAX_GENERATED_MESSAGE_ID_LENGTH",
    "MAX_MESSAGE_ID_LENGTH",
    "MAX_MESSAGE_SIZE",
    "MAX_MQTT_TOPIC_LENGTH",
    "MIN_SAS_LIFETIME_S",
    "MIN_SAS_RENEW_INTERVAL_S",
    "MIN_SAS_RENEW_MARGIN_S",
    "Message",
    "MessageDroppedError",
    "MessageInDoubtError",
    "MessageTooLargeError",
    "MethodRequest",
    "MethodResponse",
    "NetworkError",
    "NoRetry",
    "OperationTimeoutError",
    "ProtocolError",
    "ProvisioningDeviceClient",
    "QueueFullError",
    "QueueOverflow",
    "QueueStoreError",
    "RegistrationResult",
    "RegistrationState",
    "RetryExpiredError",
    "RetryPolicy",
    "SendResult",
    "StateError",
    "ThrottledError",
    "Transport",
    "X509",
    "load_library",
]
