"""Direct methods: MethodRequest and MethodResponse, as in azure.iot.device (v2)."""

from __future__ import annotations

from typing import Any


class MethodRequest:
    """A direct method call: request_id (answer it with it), name, and payload (the JSON payload as Python
    values: dict, list, str, number, bool, or None when the call has none)."""

    def __init__(self, request_id: str, name: str, payload: Any) -> None:
        self.request_id = request_id
        self.name = name
        self.payload = payload

    def __repr__(self) -> str:
        return f"MethodRequest(request_id={self.request_id!r}, name={self.name!r}, payload={self.payload!r})"


class MethodResponse:
    """The answer to a MethodRequest: status (an int, e.g. 200) and payload (any JSON-serializable value, or None
    for none)."""

    def __init__(self, request_id: str, status: int, payload: Any = None) -> None:
        self.request_id = request_id
        self.status = status
        self.payload = payload

    @classmethod
    def create_from_method_request(
        cls, method_request: MethodRequest, status: int, payload: Any = None
    ) -> "MethodResponse":
        return cls(method_request.request_id, status, payload)

    def __repr__(self) -> str:
        return f"MethodResponse(request_id={self.request_id!r}, status={self.status!r}, payload={self.payload!r})"
