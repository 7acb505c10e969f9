"""The official Python provisioning client (azure-iot-device 2.x ProvisioningDeviceClient), unchanged, against
hubsim's DPS over MQTT and over MQTT on WebSocket. The SDK dials port 8883 (443 with websockets) of the DPS host and
of the assigned hub, whatever they are called, so DPS and the two hubs each listen on a loopback address of their
own on the standard ports; the test is skipped where those cannot be bound (not root, or taken)."""

import hmac
import base64
import hashlib
import random
import socket

import pytest
from azure.iot.device import IoTHubDeviceClient, Message, ProvisioningDeviceClient

from hubsim_proc import Hubsim, within

STEP_SECONDS = 20
NET = f"127.78.{random.randint(1, 250)}"
HUB1, HUB2, DPS = f"{NET}.2", f"{NET}.3", f"{NET}.4"


def bindable(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(addr)
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.fixture(scope="module")
def hub():
    for addr in [(HUB1, 8883), (HUB2, 8883), (DPS, 8883), (DPS, 443)]:
        if not bindable(addr):
            pytest.skip(f"cannot listen on {addr[0]}:{addr[1]} (not root, or taken)")
    h = Hubsim(f"{HUB1}:8883", [], extra_args=[
        "--hub", f"{HUB2}:8883", "--dps-mqtt", f"{DPS}:8883", "--dps-https", f"{DPS}:443", "--dps-retry-after", "1s",
        "--enrollment", "py-solo", "--enrollment-group", "py-fleet"])
    h.hubs[HUB1] = h.control_url
    yield h
    h.stop()


def derive(group_key, registration_id):
    mac = hmac.new(base64.b64decode(group_key), registration_id.encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def provision_and_send(hub, registration_id, key, websockets):
    with open(hub.ca_file) as f:
        ca = f.read()
    prov = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=DPS, registration_id=registration_id, id_scope=hub.dps["idscope"], symmetric_key=key,
        server_verification_cert=ca, websockets=websockets)
    result = within(STEP_SECONDS, prov.register)
    assert result.status == "assigned", result
    state = result.registration_state
    assert state.assigned_hub in (HUB1, HUB2), state.assigned_hub
    assert state.device_id == registration_id
    client = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key, hostname=state.assigned_hub, device_id=state.device_id, server_verification_cert=ca)
    try:
        within(STEP_SECONDS, client.connect)
        within(STEP_SECONDS, client.send_message, Message(f"hello from {registration_id}"))
    finally:
        within(STEP_SECONDS, client.shutdown)
    status, msgs = hub.control("GET", f"/devices/{registration_id}/messages", base_url=hub.hubs[state.assigned_hub])
    assert status == 200
    assert [base64.b64decode(m["payload"]).decode() for m in msgs] == [f"hello from {registration_id}"]


def test_individual_enrollment_over_mqtt(hub):
    provision_and_send(hub, "py-solo", hub.dps["enrollments"]["py-solo"], websockets=False)


@pytest.mark.parametrize("websockets", [False, True], ids=["mqtt", "websockets"])
def test_group_member_derived_key(hub, websockets):
    registration_id = f"py-member-{'ws' if websockets else 'tcp'}"
    provision_and_send(hub, registration_id, derive(hub.dps["groups"]["py-fleet"], registration_id), websockets)
