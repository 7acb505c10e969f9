"""ProvisioningDeviceClient: one Device Provisioning Service registration, in the manner of
azure.iot.device.ProvisioningDeviceClient, through libiotconn (iotconn_dps_register).

    from iotconn import ProvisioningDeviceClient

    client = ProvisioningDeviceClient.create_from_symmetric_key(host, "dev-7", "0ne00000001", key, ca_file=ca)
    result = client.register()
    print(result.status, result.registration_state.assigned_hub, result.registration_state.device_id)

IoTHubDeviceClient.create_from_provisioning() does this inside the client, caches the assignment and registers
again only when the hub no longer takes the device: prefer it for a device app.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from typing import Any, Optional

from . import _native
from .client import _dps_params, native_options
from .retry import Seconds, to_ms


@dataclass(frozen=True)
class X509:
    """A device certificate and its key, as PEM files (azure.iot.device.X509; no pass phrase)."""

    cert_file: str
    key_file: str


@dataclass(frozen=True)
class RegistrationState:
    """Where DPS assigned the device (azure.iot.device's RegistrationState)."""

    device_id: Optional[str]
    assigned_hub: Optional[str]
    sub_status: Optional[str]
    created_date_time: Optional[str]
    last_update_date_time: Optional[str]
    etag: Optional[str]
    response_payload: Any = None


@dataclass(frozen=True)
class RegistrationResult:
    """The outcome of register() (azure.iot.device's RegistrationResult); status is "assigned"."""

    registration_id: str
    status: str
    registration_state: RegistrationState


class ProvisioningDeviceClient:
    """Registers one device with DPS. Create it with create_from_symmetric_key(), create_from_group_key() or
    create_from_x509_certificate(); set provisioning_payload if needed; register()."""

    def __init__(self, provisioning_host: str, registration_id: str, id_scope: str, *, symmetric_key: Optional[str],
                 group_key: Optional[str], options: Any) -> None:
        """Use a create_from_* method."""
        self._args = (provisioning_host, registration_id, id_scope, symmetric_key, group_key)
        self._options = dict(options)
        self._library = self._options.pop("library", None)
        _dps_params(*self._args, None)  # type errors now, not at register()
        self.provisioning_payload: Any = None

    @classmethod
    def create_from_symmetric_key(cls, provisioning_host: str, registration_id: str, id_scope: str,
                                  symmetric_key: str, **options: Any) -> "ProvisioningDeviceClient":
        """An individual enrollment's symmetric key. options: create_from_connection_string's connection options
        (ca_file, server_verification_cert, transport, sastoken_ttl, operation_timeout, library)."""
        return cls(provisioning_host, registration_id, id_scope, symmetric_key=symmetric_key, group_key=None,
                   options=options)

    @classmethod
    def create_from_group_key(cls, provisioning_host: str, registration_id: str, id_scope: str, group_key: str,
                              **options: Any) -> "ProvisioningDeviceClient":
        """A member of an enrollment group: the library derives the device key from the group key (iotconn's
        addition; the Azure SDK leaves the derivation to the application)."""
        return cls(provisioning_host, registration_id, id_scope, symmetric_key=None, group_key=group_key,
                   options=options)

    @classmethod
    def create_from_x509_certificate(cls, provisioning_host: str, registration_id: str, id_scope: str, x509: X509,
                                     **options: Any) -> "ProvisioningDeviceClient":
        """An X.509 enrollment; the certificate's CN is the registration id."""
        if not isinstance(x509, X509):
            raise TypeError(f"x509 must be an iotconn.X509, not {type(x509).__name__}")
        options = dict(options, x509_cert_file=x509.cert_file, x509_key_file=x509.key_file)
        return cls(provisioning_host, registration_id, id_scope, symmetric_key=None, group_key=None, options=options)

    def register(self, timeout: Optional[Seconds] = None) -> RegistrationResult:
        """Registers and blocks until DPS assigned the device, retrying 429, 5xx and connection failures with
        back-off and DPS's retry-after, for at most timeout (default the operation timeout, 4 min). Raises
        CredentialError (401/403), DeviceDisabledError (404, a disabled enrollment), OperationTimeoutError, ..."""
        lib = _native.load_library(self._library)
        params = _dps_params(*self._args, self.provisioning_payload)
        opts = native_options(**self._options)
        out = ctypes.c_void_p()
        ms = 0 if timeout is None else max(1, to_ms("timeout", timeout))
        lib.check(lib.dps_register(ctypes.byref(params), ctypes.byref(opts), ms, ctypes.byref(out)))
        state = json.loads(lib.take_string(out) or "{}")
        return RegistrationResult(
            registration_id=state.get("registrationId", self._args[1]),
            status=state.get("status", ""),
            registration_state=RegistrationState(
                device_id=state.get("deviceId"),
                assigned_hub=state.get("assignedHub"),
                sub_status=state.get("substatus"),
                created_date_time=state.get("createdDateTimeUtc"),
                last_update_date_time=state.get("lastUpdatedDateTimeUtc"),
                etag=state.get("etag"),
                response_payload=state.get("payload"),
            ),
        )

    def shutdown(self) -> None:
        """Nothing stays open between registrations; kept for the Azure SDK's API."""
