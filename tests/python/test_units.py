"""The binding's pure-Python parts: message conversion to and from the C struct, errors, retry policy checks."""

import base64
import ctypes
from datetime import timedelta

import pytest

import iotconn
from iotconn import _native
from iotconn.errors import error_for
from iotconn.message import from_c, to_c


def test_message_round_trips_through_the_c_struct():
    payload = b"\x00binary\x00payload\xff"
    message = iotconn.Message(
        payload,
        message_id="m-1",
        correlation_id="c-1",
        content_type="application/octet-stream",
        content_encoding="binary",
        custom_properties={"zeta": "1", "alpha": "é ü"},
    )
    cmsg = to_c(message)
    assert cmsg.size == ctypes.sizeof(_native.CMessage)
    assert cmsg.payload_len == len(payload)
    back = from_c(cmsg)
    assert back.data == payload
    assert (back.message_id, back.correlation_id) == ("m-1", "c-1")
    assert (back.content_type, back.content_encoding) == ("application/octet-stream", "binary")
    # the order of properties is kept
    assert list(back.custom_properties.items()) == [("zeta", "1"), ("alpha", "é ü")]


@pytest.mark.parametrize("data", ["héllo", b"h\xc3\xa9llo", bytearray(b"h\xc3\xa9llo"), memoryview(b"h\xc3\xa9llo")])
def test_str_and_bytes_like_payloads_are_sent_as_bytes(data):
    cmsg = to_c(data)
    assert from_c(cmsg).data == "héllo".encode()
    assert cmsg.message_id is None and cmsg.property_count == 0


def test_bad_messages_raise_clear_errors():
    with pytest.raises(iotconn.InvalidArgumentError, match="empty"):
        to_c(b"")
    with pytest.raises(TypeError, match="message data must be str or bytes-like, not int"):
        to_c(42)
    with pytest.raises(TypeError, match="custom property 'n' must be str, not int"):
        to_c(iotconn.Message("x", custom_properties={"n": 1}))
    with pytest.raises(iotconn.InvalidArgumentError, match="NUL") as info:
        to_c(iotconn.Message("x", message_id="a\0b"))
    assert info.value.code == iotconn.ErrorCode.EINVAL


A_CONNECTION_STRING = "HostName=localhost;DeviceId=d;SharedAccessKey=" + base64.b64encode(b"k" * 32).decode()


@pytest.mark.parametrize(
    "argument",
    [
        "connection_string",
        "ca_file",
        "server_verification_cert",
        "x509_cert_file",
        "x509_key_file",
        "queue_dir",
        "library",
    ],
)
def test_a_nul_in_a_string_for_c_is_refused_not_cut(argument):
    """C reads a string only up to its first NUL: "ca.pem\0x" would reach the library as "ca.pem"."""
    arguments = {"connection_string": A_CONNECTION_STRING, argument: "before\0after"}
    with pytest.raises(iotconn.InvalidArgumentError, match=f"^{argument} contains a NUL character") as info:
        iotconn.IoTHubDeviceClient.create_from_connection_string(**arguments)
    assert isinstance(info.value, ValueError) and info.value.code == iotconn.ErrorCode.EINVAL


def test_errors_carry_code_and_message():
    error = error_for(-9, "message too large: 300000 bytes")
    assert isinstance(error, iotconn.MessageTooLargeError)
    assert isinstance(error, iotconn.IoTConnError)
    assert error.code == iotconn.ErrorCode.ETOOLARGE
    assert error.message == "message too large: 300000 bytes"
    assert "ETOOLARGE" in str(error)
    assert isinstance(error_for(-5), TimeoutError)
    assert isinstance(error_for(-10), ConnectionError)
    assert isinstance(error_for(-1), ValueError)
    assert type(error_for(-17)) is iotconn.ConnectCancelledError
    in_doubt = error_for(-18, "may have reached the hub")
    assert type(in_doubt) is iotconn.MessageInDoubtError and in_doubt.code == iotconn.ErrorCode.EINDOUBT
    assert isinstance(in_doubt, TimeoutError)  # the error of an EXPIRED completion, as ETIMEOUT's is
    unknown = error_for(-99, "from a newer library")
    assert type(unknown) is iotconn.IoTConnError and unknown.code == -99


def test_exponential_backoff_fills_the_native_policy():
    policy = iotconn.ExponentialBackoff(
        retry_count=5, min_backoff=0.25, max_backoff=timedelta(seconds=30), delta_backoff=1, jitter=iotconn.Jitter.FULL
    )
    native = policy._struct()
    assert native.size == ctypes.sizeof(_native.RetryPolicy)
    assert (native.kind, native.retry_count, native.jitter) == (_native.RETRY_EXPONENTIAL, 5, 1)
    assert (native.min_backoff_ms, native.max_backoff_ms, native.delta_backoff_ms) == (250, 30000, 1000)
    assert iotconn.ExponentialBackoff()._struct().retry_count == _native.RETRY_UNLIMITED
    assert iotconn.ExponentialBackoff(jitter=iotconn.Jitter.DECORRELATED)._struct().jitter == 2
    assert iotconn.NoRetry()._struct().kind == _native.RETRY_NONE


def test_bad_retry_settings_raise():
    with pytest.raises(ValueError, match="min_backoff"):
        iotconn.ExponentialBackoff(min_backoff=5, max_backoff=1)
    with pytest.raises(ValueError, match="retry_count"):
        iotconn.ExponentialBackoff(retry_count=-2)
    with pytest.raises(ValueError, match="delta_backoff"):
        iotconn.ExponentialBackoff(delta_backoff=-1)
    with pytest.raises(TypeError, match="max_backoff"):
        iotconn.ExponentialBackoff(max_backoff="10")
    with pytest.raises(ValueError, match="min_backoff"):
        iotconn.ExponentialBackoff(min_backoff=0, jitter=iotconn.Jitter.DECORRELATED)
    with pytest.raises(ValueError):
        iotconn.ExponentialBackoff(jitter=3)
