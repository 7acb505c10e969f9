"""Every enum and constant of include/iotconn.h has the same name and value in the Python package, and back."""

import re
from enum import IntEnum
from typing import Dict, Type

import pytest

from support import HEADER

import iotconn
from iotconn import _native

HEADER_TEXT = HEADER.read_text()


def header_enum(c_name: str) -> Dict[str, int]:
    """Members of `typedef enum c_name { ... }` as {NAME: value}, with the IOTCONN_<KIND>_ prefix kept."""
    body = re.search(r"typedef enum %s \{(.*?)\}" % c_name, HEADER_TEXT, re.S)
    assert body, f"enum {c_name} not found in {HEADER}"
    members = dict((name, int(value)) for name, value in re.findall(r"(IOTCONN_\w+)\s*=\s*(-?\d+)", body.group(1)))
    assert members
    return members


def header_defines(prefix: str) -> Dict[str, int]:
    """#define PREFIXxxx N (or (N)) lines as {xxx: N}."""
    found = re.findall(r"^#define %s(\w+)\s+\(?(-?\d+)\)?" % prefix, HEADER_TEXT, re.M)
    assert found, f"no #define {prefix}* in {HEADER}"
    return {name: int(value) for name, value in found}


def members(enum: Type[IntEnum]) -> Dict[str, int]:
    return {m.name: int(m.value) for m in enum}


def strip(prefix: str, values: Dict[str, int]) -> Dict[str, int]:
    assert all(name.startswith(prefix) for name in values), values
    return {name[len(prefix) :]: value for name, value in values.items()}


@pytest.mark.parametrize(
    "enum, c_name, prefix",
    [
        (iotconn.ConnectionStatus, "iotconn_status", "IOTCONN_STATUS_"),
        (iotconn.ConnectionStatusChangeReason, "iotconn_reason", "IOTCONN_REASON_"),
    ],
)
def test_status_enums_match_header(enum, c_name, prefix):
    assert members(enum) == strip(prefix, header_enum(c_name))


@pytest.mark.parametrize(
    "enum, prefix",
    [
        (iotconn.Transport, "IOTCONN_TRANSPORT_"),
        (iotconn.SendResult, "IOTCONN_SEND_"),
        (iotconn.Jitter, "IOTCONN_JITTER_"),
        (iotconn.QueueOverflow, "IOTCONN_QUEUE_OVERFLOW_"),
    ],
)
def test_api_enums_match_header(enum, prefix):
    assert members(enum) == header_defines(prefix)


def test_error_codes_match_header():
    codes = re.findall(r"^#define IOTCONN_(OK|E\w+)\s+\(?(-?\d+)\)?", HEADER_TEXT, re.M)
    assert members(iotconn.ErrorCode) == {name: int(value) for name, value in codes}


def test_every_error_code_has_its_own_exception_class():
    classes = {type(iotconn.errors.error_for(code)) for code in iotconn.ErrorCode if code != 0}
    assert len(classes) == len(iotconn.ErrorCode) - 1
    assert iotconn.IoTConnError not in classes


def test_limits_match_header():
    """IOTCONN_MAX_* and IOTCONN_MIN_* are exported as iotconn.MAX_* and iotconn.MIN_*, all of them and no others."""
    limits = {
        f"{kind}_{name}": value for kind in ("MAX", "MIN") for name, value in header_defines(f"IOTCONN_{kind}_").items()
    }
    exported = {name: getattr(iotconn, name) for name in iotconn.__all__ if name.startswith(("MAX_", "MIN_"))}
    assert exported == limits


def test_native_constants_match_header():
    assert _native.DISPATCH_POLL == header_defines("IOTCONN_DISPATCH_")["POLL"]
    retry = header_defines("IOTCONN_RETRY_")
    assert (_native.RETRY_EXPONENTIAL, _native.RETRY_NONE, _native.RETRY_CUSTOM, _native.RETRY_UNLIMITED) == (
        retry["EXPONENTIAL"],
        retry["NONE"],
        retry["CUSTOM"],
        retry["UNLIMITED"],
    )


def test_version_matches_header():
    version = header_defines("IOTCONN_VERSION_")
    header_version = (version["MAJOR"], version["MINOR"], version["PATCH"])
    assert _native.HEADER_VERSION == header_version
    assert iotconn.__version__ == "%d.%d.%d" % header_version


def test_struct_fields_match_header():
    """The ctypes structs list the header's fields in the header's order."""
    for c_name, struct in [
        ("iotconn_options", _native.Options),
        ("iotconn_property", _native.Property),
        ("iotconn_message", _native.CMessage),
        ("iotconn_retry_policy", _native.RetryPolicy),
    ]:
        body = re.search(r"typedef struct %s \{(.*?)\}" % c_name, HEADER_TEXT, re.S)
        assert body, c_name
        fields = re.findall(r"(\w+);", re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S))
        assert [name for name, _ in struct._fields_] == fields, c_name
