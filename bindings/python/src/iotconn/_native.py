"""ctypes declarations of include/iotconn.h and the loading of libiotconn.

The library holds a Go runtime: it is loaded once per process and never unloaded (see the header's limits).
"""

from __future__ import annotations

import ctypes
import os
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from importlib import resources
from typing import Any, NoReturn, Optional, Tuple

from ._versioning import package_version
from .errors import ErrorCode, InvalidArgumentError, LibraryError, error_for

# The header this package was written against (IOTCONN_VERSION_*): a library of the same major version and at
# least this minor version has every function and struct field used here.
_major, _minor, _patch = (int(part) for part in package_version().split("."))
HEADER_VERSION: Tuple[int, int, int] = (_major, _minor, _patch)

# The file the wheel bundles inside the package (the library's soname).
BUNDLED_NAME = "libiotconn.so.1"

DISPATCH_POLL = 1

RETRY_EXPONENTIAL = 0
RETRY_NONE = 1
RETRY_CUSTOM = 2
RETRY_UNLIMITED = -1

# The header's limits: IoT Hub's, which iotconn_send checks before it accepts a message (IOTCONN_MAX_*), and the
# SAS floors iotconn_client_create checks (IOTCONN_MIN_*). Exported for applications that size their messages;
# the binding does not check them itself, so the library stays the one place that decides.
MAX_MESSAGE_SIZE = 262144
MAX_MESSAGE_ID_LENGTH = 128
MAX_GENERATED_MESSAGE_ID_LENGTH = 48
MAX_MQTT_TOPIC_LENGTH = 65535
MIN_SAS_LIFETIME_S = 60
MIN_SAS_RENEW_MARGIN_S = 5
MIN_SAS_RENEW_INTERVAL_S = 30


def c_string(what: str, value: Optional[str]) -> Optional[bytes]:
    """`value` as the NUL-terminated UTF-8 a `const char *` takes (None stays NULL). C reads a string up to its first
    NUL, so a str holding one would reach the library silently cut short: it is refused, naming `what`."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    if "\0" in value:
        raise InvalidArgumentError(ErrorCode.EINVAL, f"{what} contains a NUL character")
    return value.encode("utf-8")


class Options(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("transport", c_int),
        ("ca_file", c_char_p),
        ("ca_pem", c_char_p),
        ("cert_file", c_char_p),
        ("key_file", c_char_p),
        ("keepalive_s", c_uint32),
        ("sas_lifetime_s", c_uint32),
        ("sas_renew_margin_s", c_uint32),
        ("queue_max_messages", c_uint32),
        ("queue_max_bytes", c_uint64),
        ("operation_timeout_ms", c_uint32),
        ("dispatch", c_int),
        ("queue_overflow", c_int),
        ("queue_dir", c_char_p),
        ("backoff_reset_after_ms", c_uint32),
        ("dispatcher", c_void_p),
        ("reconnect_spread_ms", c_uint32),
        ("admission", c_void_p),
        ("amqp_pool", c_uint32),
    ]


class DPSParams(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("provisioning_host", c_char_p),
        ("id_scope", c_char_p),
        ("registration_id", c_char_p),
        ("symmetric_key", c_char_p),
        ("group_key", c_char_p),
        ("payload_json", c_char_p),
        ("cache_file", c_char_p),
        ("reprovision_after_failures", c_uint32),
        ("reprovision_after_s", c_uint32),
    ]


class Property(Structure):
    _fields_ = [("key", c_char_p), ("value", c_char_p)]


class CMessage(Structure):
    # payload is `const void *` in C; c_char_p has the same layout and points into a bytes object without a copy
    # (payload_len, not a NUL, says where it ends).
    _fields_ = [
        ("size", c_size_t),
        ("payload", c_char_p),
        ("payload_len", c_size_t),
        ("message_id", c_char_p),
        ("correlation_id", c_char_p),
        ("content_type", c_char_p),
        ("content_encoding", c_char_p),
        ("properties", POINTER(Property)),
        ("property_count", c_size_t),
        ("ttl_ms", c_uint32),
    ]


RETRY_CB = CFUNCTYPE(c_int, c_uint32, c_int, c_char_p, POINTER(c_uint32), c_void_p)
STATUS_CB = CFUNCTYPE(None, c_int, c_int, c_void_p)
MESSAGE_CB = CFUNCTYPE(None, POINTER(CMessage), c_void_p)
SEND_CB = CFUNCTYPE(None, c_uint64, c_int, c_int, c_void_p)
LOG_CB = CFUNCTYPE(None, c_int, c_char_p, c_void_p)
# The library's JSON is followed by a NUL (and JSON text holds no raw NUL), so c_char_p reads all of it.
TWIN_CB = CFUNCTYPE(None, c_uint64, c_char_p, c_size_t, c_int, c_void_p)
REPORTED_CB = CFUNCTYPE(None, c_uint64, c_int64, c_int, c_void_p)
DESIRED_CB = CFUNCTYPE(None, c_int64, c_char_p, c_size_t, c_void_p)
METHOD_CB = CFUNCTYPE(None, c_char_p, c_char_p, c_char_p, c_size_t, c_void_p)


class RetryPolicy(Structure):
    _fields_ = [
        ("size", c_size_t),
        ("kind", c_int),
        ("retry_count", c_int32),
        ("min_backoff_ms", c_uint32),
        ("max_backoff_ms", c_uint32),
        ("delta_backoff_ms", c_uint32),
        ("jitter", c_int),
        ("custom", RETRY_CB),
        ("user", c_void_p),
    ]


_PROTOTYPES = {
    "iotconn_version": (c_char_p, [POINTER(c_int), POINTER(c_int), POINTER(c_int)]),
    "iotconn_last_error": (c_char_p, []),
    "iotconn_strerror": (c_char_p, [c_int]),
    "iotconn_status_str": (c_char_p, [c_int]),
    "iotconn_reason_str": (c_char_p, [c_int]),
    "iotconn_client_create": (c_int, [c_char_p, POINTER(Options), POINTER(c_void_p)]),
    "iotconn_client_destroy": (c_int, [c_void_p]),
    "iotconn_connect": (c_int, [c_void_p, c_uint32]),
    "iotconn_connect_cancel": (c_int, [c_void_p]),
    "iotconn_send": (c_int, [c_void_p, POINTER(CMessage), POINTER(c_uint64)]),
    "iotconn_set_retry_policy": (c_int, [c_void_p, POINTER(RetryPolicy)]),
    "iotconn_register_status_callback": (c_int, [c_void_p, STATUS_CB, c_void_p]),
    "iotconn_register_message_callback": (c_int, [c_void_p, MESSAGE_CB, c_void_p]),
    "iotconn_register_send_callback": (c_int, [c_void_p, SEND_CB, c_void_p]),
    "iotconn_register_log_callback": (c_int, [c_void_p, LOG_CB, c_void_p]),
    "iotconn_register_twin_callback": (c_int, [c_void_p, TWIN_CB, c_void_p]),
    "iotconn_register_reported_callback": (c_int, [c_void_p, REPORTED_CB, c_void_p]),
    "iotconn_register_desired_callback": (c_int, [c_void_p, DESIRED_CB, c_void_p]),
    "iotconn_register_method_callback": (c_int, [c_void_p, METHOD_CB, c_void_p]),
    "iotconn_twin_get": (c_int, [c_void_p, POINTER(c_uint64)]),
    "iotconn_twin_report": (c_int, [c_void_p, c_char_p, c_size_t, POINTER(c_uint64)]),
    "iotconn_method_respond": (c_int, [c_void_p, c_char_p, c_int, c_char_p, c_size_t]),
    "iotconn_poll": (c_int, [c_void_p, c_uint32]),
    "iotconn_dispatcher_create": (c_int, [c_int, POINTER(c_void_p)]),
    "iotconn_dispatcher_poll": (c_int, [c_void_p, c_uint32]),
    "iotconn_dispatcher_destroy": (c_int, [c_void_p]),
    "iotconn_admission_create": (c_int, [c_double, c_uint32, POINTER(c_void_p)]),
    "iotconn_admission_destroy": (c_int, [c_void_p]),
    "iotconn_get_status": (c_int, [c_void_p, POINTER(c_int), POINTER(c_int)]),
    "iotconn_close": (c_int, [c_void_p]),
    "iotconn_queue_recovered": (c_int, [c_void_p, POINTER(c_uint64)]),
    "iotconn_free": (None, [c_void_p]),
    "iotconn_client_create_dps": (c_int, [POINTER(DPSParams), POINTER(Options), POINTER(c_void_p)]),
    "iotconn_dps_registrations": (c_int, [c_void_p, POINTER(c_uint64)]),
    "iotconn_dps_assignment": (c_int, [c_void_p, POINTER(c_void_p), POINTER(c_void_p)]),
    "iotconn_dps_register": (c_int, [POINTER(DPSParams), POINTER(Options), c_uint32, POINTER(c_void_p)]),
}


class Library:
    """The loaded libiotconn: its functions (without the iotconn_ prefix) with their prototypes, path and version."""

    version: Any
    last_error: Any
    strerror: Any
    status_str: Any
    reason_str: Any
    client_create: Any
    client_destroy: Any
    connect: Any
    connect_cancel: Any
    send: Any
    set_retry_policy: Any
    register_status_callback: Any
    register_message_callback: Any
    register_send_callback: Any
    register_log_callback: Any
    register_twin_callback: Any
    register_reported_callback: Any
    register_desired_callback: Any
    register_method_callback: Any
    twin_get: Any
    twin_report: Any
    method_respond: Any
    poll: Any
    dispatcher_create: Any
    dispatcher_poll: Any
    dispatcher_destroy: Any
    admission_create: Any
    admission_destroy: Any
    get_status: Any
    close: Any
    queue_recovered: Any
    free: Any
    client_create_dps: Any
    dps_registrations: Any
    dps_assignment: Any
    dps_register: Any

    def __init__(self, path: str) -> None:
        try:
            self.dll = ctypes.CDLL(path)
        except OSError as exc:
            raise LibraryError(f"cannot load libiotconn from {path}: {exc}") from exc
        self.path = path
        for name, (restype, argtypes) in _PROTOTYPES.items():
            try:
                fn = getattr(self.dll, name)
            except AttributeError as exc:
                raise LibraryError(f"{path} does not export {name}: not a libiotconn {HEADER_VERSION[0]}.x") from exc
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name[len("iotconn_") :], fn)
        major, minor, patch = c_int(), c_int(), c_int()
        self.version_string = self.version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch)).decode()
        self.version_info = (major.value, minor.value, patch.value)
        if major.value != HEADER_VERSION[0] or minor.value < HEADER_VERSION[1]:
            want = ".".join(map(str, HEADER_VERSION))
            raise LibraryError(
                f"{path} is libiotconn {self.version_string}; this package needs {HEADER_VERSION[0]}.x, x >= "
                f"{HEADER_VERSION[1]} (written against {want})"
            )

    def fail(self, rc: int) -> NoReturn:
        """Raises the exception for a negative return code; call it on the thread that made the failed call."""
        raise error_for(rc, (self.last_error() or b"").decode("utf-8", "replace"))

    def check(self, rc: int) -> int:
        if rc < 0:
            self.fail(rc)
        return rc

    def take_string(self, ptr: c_void_p) -> Optional[str]:
        """A string the library allocated (NULL: None), decoded and freed with iotconn_free."""
        if not ptr.value:
            return None
        try:
            return ctypes.string_at(ptr.value).decode("utf-8", "replace")
        finally:
            self.free(ptr)


_lock = threading.Lock()
_library: Optional[Library] = None


def load_library(path: Optional[str] = None) -> Library:
    """Loads libiotconn once per process: from `path`, else $IOTCONN_LIBRARY, else the copy inside this package.

    Asking for another file once one is loaded raises LibraryError: a process can hold only one Go runtime.
    """
    global _library
    if path is not None:
        c_string("library", os.fspath(path))  # dlopen would refuse a NUL, but not saying which argument held it
    requested = path or os.environ.get("IOTCONN_LIBRARY") or None
    with _lock:
        if _library is not None:
            if requested and os.path.realpath(requested) != os.path.realpath(_library.path):
                raise LibraryError(
                    f"libiotconn is already loaded from {_library.path}; cannot load {requested} too "
                    "(one Go runtime per process, never unloaded)"
                )
            return _library
        _library = Library(requested or _bundled_path())
        return _library


def _bundled_path() -> str:
    resource = resources.files(__package__).joinpath(BUNDLED_NAME)
    # A shared library must be a real file for dlopen; the wheel installs it as one.
    if not isinstance(resource, os.PathLike) or not os.path.isfile(resource):
        raise LibraryError(
            f"{BUNDLED_NAME} is not bundled in this iotconn package (a source checkout?): install the wheel "
            "(pip install ./bindings/python), or set IOTCONN_LIBRARY or pass library= to the path of libiotconn.so"
        )
    return str(resource)
