"""The official Azure IoT Python device SDK (azure-iot-device 2.x), unchanged, against hubsim."""

import base64
import queue
import socket

import pytest
from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse

from hubsim_proc import Hubsim, within

DEVICE_ID = "py-dev1"
STEP_SECONDS = 15  # deadline for each single wait on the SDK or the hub

# azure-iot-device 2.x always dials port 8883 (443 for WebSockets), whatever HostName says
# (azure/iot/device/common/mqtt_transport.py, MQTTTransport.connect), so hubsim must listen on 127.0.0.1:8883
# and hand out HostName=localhost.
MQTT_ADDR = ("127.0.0.1", 8883)


def require_free_port(addr):
    """Fails with a clear message when something already listens on addr."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Same option Go's listener sets, so connections left in TIME_WAIT by an earlier run do not count as busy.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(addr)
    except OSError as err:
        pytest.fail(
            f"{addr[0]}:{addr[1]} is in use ({err}); the Python SDK can only dial port 8883, so this test needs "
            "that port free for its hubsim. Stop whatever listens there and run again."
        )
    finally:
        s.close()


@pytest.fixture(scope="module")
def hub():
    require_free_port(MQTT_ADDR)
    h = Hubsim(f"{MQTT_ADDR[0]}:{MQTT_ADDR[1]}", [DEVICE_ID])
    yield h
    h.stop()


@pytest.fixture(scope="module")
def client(hub):
    cs = hub.connection_strings.get(DEVICE_ID)
    assert cs, f"hubsim printed no connection string for {DEVICE_ID}: {hub.lines}"
    assert "HostName=localhost;" in cs, cs
    with open(hub.ca_file) as f:
        ca = f.read()
    c = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=ca)
    yield c
    within(STEP_SECONDS, c.shutdown)


def test_connects_over_tls_with_the_hub_ca(hub, client):
    within(STEP_SECONDS, client.connect)
    assert client.connected
    status, dev = hub.control("GET", f"/devices/{DEVICE_ID}")
    assert status == 200
    assert dev["connected"] is True
    assert dev["connections"] == 1


def test_telemetry_arrives_with_its_properties(hub, client):
    msg = Message('{"temperature": 21.5}', message_id="py-msg-1", content_encoding="utf-8",
                  content_type="application/json")
    msg.correlation_id = "py-corr-1"
    msg.custom_properties["alert"] = "high temp"
    msg.custom_properties["unit"] = "C/100&x=y"
    # send_message returns on PUBACK, and the hub records a message before acknowledging it.
    within(STEP_SECONDS, client.send_message, msg)
    status, msgs = hub.control("GET", f"/devices/{DEVICE_ID}/messages")
    assert status == 200
    got = [m for m in msgs if m["messageId"] == "py-msg-1"]
    assert len(got) == 1, msgs
    got = got[0]
    assert base64.b64decode(got["payload"]) == b'{"temperature": 21.5}'
    assert got["correlationId"] == "py-corr-1"
    assert got["contentType"] == "application/json"
    assert got["contentEncoding"] == "utf-8"
    assert got["properties"] == {"alert": "high temp", "unit": "C/100&x=y"}


def test_receives_a_cloud_to_device_message(hub, client):
    received = queue.Queue()
    # The setter returns once the SDK's SUBSCRIBE is acknowledged.
    within(STEP_SECONDS, setattr, client, "on_message_received", received.put)
    status, body = hub.control("POST", f"/devices/{DEVICE_ID}/c2d", {
        "payload": "reboot at noon",
        "messageId": "c2d-1",
        "correlationId": "c2d-corr-1",
        "properties": {"priority": "high", "sp ace": "a/b"},
    })
    assert status == 202, body
    msg = received.get(timeout=STEP_SECONDS)
    assert msg.data == b"reboot at noon"
    assert msg.message_id == "c2d-1"
    assert msg.correlation_id == "c2d-corr-1"
    assert msg.custom_properties == {"priority": "high", "sp ace": "a/b"}


def test_gets_the_twin(hub, client):
    status, _ = hub.control("PATCH", f"/devices/{DEVICE_ID}/twin/desired", {"interval": 30})
    assert status == 200
    twin = within(STEP_SECONDS, client.get_twin)
    assert twin["desired"]["interval"] == 30
    assert isinstance(twin["desired"]["$version"], int)
    assert isinstance(twin["reported"]["$version"], int)


def test_patches_reported_properties(hub, client):
    patch = {"firmware": "1.2.3", "battery": {"level": 87}}
    within(STEP_SECONDS, client.patch_twin_reported_properties, patch)
    status, twin = hub.control("GET", f"/devices/{DEVICE_ID}/twin")
    assert status == 200
    assert twin["reported"]["firmware"] == "1.2.3"
    assert twin["reported"]["battery"] == {"level": 87}
    assert twin["reported"]["$version"] >= 2


def test_receives_a_desired_property_update(hub, client):
    patches = queue.Queue()
    within(STEP_SECONDS, setattr, client, "on_twin_desired_properties_patch_received", patches.put)
    status, twin = hub.control("PATCH", f"/devices/{DEVICE_ID}/twin/desired", {"fan": {"speed": 3}})
    assert status == 200, twin
    patch = patches.get(timeout=STEP_SECONDS)
    assert patch["fan"] == {"speed": 3}
    assert patch["$version"] == twin["desired"]["$version"]


def test_answers_a_direct_method(hub, client):
    requests = queue.Queue()

    def on_method(request):
        requests.put(request)
        answer = {"accepted": request.payload["seconds"], "by": "python"}
        client.send_method_response(MethodResponse.create_from_method_request(request, 201, answer))

    within(STEP_SECONDS, setattr, client, "on_method_request_received", on_method)
    status, body = hub.control("POST", f"/devices/{DEVICE_ID}/methods/setInterval?timeout=10", {"seconds": 42})
    assert status == 200, body
    assert body == {"status": 201, "payload": {"accepted": 42, "by": "python"}}
    request = requests.get(timeout=STEP_SECONDS)
    assert request.name == "setInterval"
    assert request.payload == {"seconds": 42}
