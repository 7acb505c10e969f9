"""Fixtures for the Python binding's tests: a real iotconn-hubsim process per test and clients that are always
shut down (helpers in support.py)."""

from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import pytest

from support import DEVICE, FLEET_DEVICES, Hub

import iotconn


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub = Hub(tmp_path / "hub", (DEVICE,))
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def make_client(hub: Hub) -> Iterator[Callable[..., Any]]:
    """Creates clients for the hub's device (options pass through; client_class=iotconn.IoTHubModuleClient for a
    module's connection string); every one is shut down after the test."""
    clients: List[Any] = []

    def make(connection_string: Optional[str] = None, *, client_class: Any = iotconn.IoTHubDeviceClient,
             **options: Any) -> Any:
        options.setdefault("ca_file", hub.ca_file)
        client = client_class.create_from_connection_string(
            connection_string or hub.connection_strings[DEVICE], **options
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.shutdown()


@pytest.fixture
def fleet_hub(tmp_path: Path) -> Iterator[Hub]:
    hub = Hub(tmp_path / "hub", FLEET_DEVICES)
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def make_fleet_client(fleet_hub: Hub) -> Iterator[Callable[..., iotconn.IoTHubDeviceClient]]:
    """Creates clients for the fleet hub's devices (options pass through); every one is shut down after the test."""
    clients: List[iotconn.IoTHubDeviceClient] = []

    def make(device: str, **options: Any) -> iotconn.IoTHubDeviceClient:
        client = iotconn.IoTHubDeviceClient.create_from_connection_string(
            fleet_hub.connection_strings[device], ca_file=fleet_hub.ca_file, **options
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.shutdown()
