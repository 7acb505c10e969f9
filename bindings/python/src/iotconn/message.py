"""Message: a device-to-cloud message to send, or a cloud-to-device message received."""

from __future__ import annotations

import ctypes
from typing import Dict, Mapping, Optional, Union

from . import _native
from .errors import ErrorCode, InvalidArgumentError
from .retry import Seconds, to_ms

Payload = Union[str, bytes, bytearray, memoryview]


class Message:
    """A message, in the manner of azure.iot.device.Message.

    `data` is the body: str (sent as UTF-8) or bytes-like; received messages carry bytes. `custom_properties` are
    the application properties (str to str); their order is kept on the wire. `ttl` is the time-to-live in
    seconds (or a timedelta) from send_message: not delivered by then, it completes EXPIRED and is never sent
    after; None = the client's operation_timeout.
    """

    def __init__(
        self,
        data: Payload,
        message_id: Optional[str] = None,
        content_encoding: Optional[str] = None,
        content_type: Optional[str] = None,
        correlation_id: Optional[str] = None,
        custom_properties: Optional[Mapping[str, str]] = None,
        ttl: Optional[Seconds] = None,
    ) -> None:
        self.data = data
        self.message_id = message_id
        self.content_encoding = content_encoding
        self.content_type = content_type
        self.correlation_id = correlation_id
        self.custom_properties: Dict[str, str] = dict(custom_properties or {})
        self.ttl = ttl

    def __repr__(self) -> str:
        return (
            f"Message(data={self.data!r}, message_id={self.message_id!r}, correlation_id={self.correlation_id!r}, "
            f"content_type={self.content_type!r}, content_encoding={self.content_encoding!r}, "
            f"custom_properties={self.custom_properties!r}, ttl={self.ttl!r})"
        )


def payload_bytes(data: Payload) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"message data must be str or bytes-like, not {type(data).__name__}")


def to_c(message: Union[Message, Payload]) -> _native.CMessage:
    """The C struct for a message. It holds references to every buffer it points to (ctypes keeps them with the
    struct), so it stays valid for as long as the struct lives; iotconn_send copies it all."""
    if not isinstance(message, Message):
        message = Message(message)
    body = payload_bytes(message.data)
    if not body:
        raise InvalidArgumentError(ErrorCode.EINVAL, "the message payload is empty (at least one byte is needed)")
    cmsg = _native.CMessage(ctypes.sizeof(_native.CMessage), body, len(body))
    cmsg.message_id = _native.c_string("message_id", message.message_id)
    cmsg.correlation_id = _native.c_string("correlation_id", message.correlation_id)
    cmsg.content_type = _native.c_string("content_type", message.content_type)
    cmsg.content_encoding = _native.c_string("content_encoding", message.content_encoding)
    if message.ttl is not None:
        cmsg.ttl_ms = max(1, to_ms("ttl", message.ttl))  # 0 would mean the default
    props = message.custom_properties
    if props:
        array = (_native.Property * len(props))()
        for i, (key, value) in enumerate(props.items()):
            array[i].key = _native.c_string("custom property key", key)
            array[i].value = _native.c_string(f"custom property {key!r}", value)
        cmsg.properties = array
        cmsg.property_count = len(props)
    return cmsg


def _text(raw: Optional[bytes]) -> Optional[str]:
    return None if raw is None else raw.decode("utf-8", "replace")


def from_c(cmsg: _native.CMessage) -> Message:
    """A Python copy of a message the library lends to a callback (valid only during the callback)."""
    # Read the field as a raw address: through c_char_p, ctypes would stop at the first NUL byte.
    address = ctypes.c_void_p.from_buffer(cmsg, _native.CMessage.payload.offset).value
    data = ctypes.string_at(address, cmsg.payload_len) if cmsg.payload_len and address else b""
    props = {}
    for i in range(cmsg.property_count):
        prop = cmsg.properties[i]
        props[_text(prop.key) or ""] = _text(prop.value) or ""
    return Message(
        data,
        message_id=_text(cmsg.message_id),
        content_encoding=_text(cmsg.content_encoding),
        content_type=_text(cmsg.content_type),
        correlation_id=_text(cmsg.correlation_id),
        custom_properties=props,
    )
