"""DPS and X.509 through the Python binding against an iotconn-hubsim process with two hubs and a DPS front:
ProvisioningDeviceClient (symmetric, group and X.509 attestations, DPS's refusal), IoTHubDeviceClient
.create_from_provisioning (provision, send, follow a move with exactly one more registration and nothing lost, the
cached hub after a restart), and X.509 hub authentication (self-signed, CA-signed, rotation on disk, expired)."""

import base64
import subprocess
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest

from support import HUBSIM, Hub, Recorder

import iotconn
from iotconn import ConnectionStatus, ConnectionStatusChangeReason

DPS_ARGS = ("--hub", "127.0.0.1:0", "--dps-mqtt", "127.0.0.1:0", "--dps-retry-after", "1s",
            "--enrollment", "py-dps", "--enrollment-group", "py-fleet")


@pytest.fixture
def dps(tmp_path: Path) -> Iterator[Hub]:
    hub = Hub(tmp_path / "hub", (), DPS_ARGS)
    try:
        yield hub
    finally:
        hub.stop()


def mint(out: Path, cn: str, *flags: str) -> str:
    """iotconn-hubsim mint-cert: writes out.pem and out-key.pem, returns the SHA-1 thumbprint."""
    done = subprocess.run([str(HUBSIM), "mint-cert", "--cn", cn, "--out", str(out), *flags], check=True,
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def test_provisioning_device_client(dps: Hub, tmp_path: Path) -> None:
    client = iotconn.ProvisioningDeviceClient.create_from_symmetric_key(
        dps.dps_mqtt, "py-dps", dps.id_scope, dps.enrollment_keys["py-dps"], ca_file=dps.ca_file)
    client.provisioning_payload = {"model": "py"}
    result = client.register()
    assert result.status == "assigned"
    assert result.registration_state.device_id == "py-dps"
    assert result.registration_state.assigned_hub in dps.hub_hosts

    member = iotconn.ProvisioningDeviceClient.create_from_group_key(
        dps.dps_mqtt, "py-member", dps.id_scope, dps.enrollment_keys["py-fleet"], ca_file=dps.ca_file)
    assert member.register().registration_state.device_id == "py-member"

    wrong = iotconn.ProvisioningDeviceClient.create_from_symmetric_key(
        dps.dps_mqtt, "py-dps", dps.id_scope, dps.enrollment_keys["py-fleet"], ca_file=dps.ca_file)
    with pytest.raises(iotconn.CredentialError, match="401"):
        wrong.register()
    with pytest.raises(iotconn.InvalidArgumentError):
        iotconn.ProvisioningDeviceClient.create_from_symmetric_key(
            dps.dps_mqtt, "bad/id", dps.id_scope, "a2V5", ca_file=dps.ca_file).register()

    # X.509: an individual enrollment of the certificate's thumbprint.
    thumb = mint(tmp_path / "x", "py-x509")
    dps.request("PUT", "/enrollments/py-x509", {"attestation": "x509", "x509": {"thumbprints": [thumb]}},
                base=dps.dps_control_url)
    x509 = iotconn.X509(str(tmp_path / "x.pem"), str(tmp_path / "x-key.pem"))
    result = iotconn.ProvisioningDeviceClient.create_from_x509_certificate(
        dps.dps_mqtt, "py-x509", dps.id_scope, x509, ca_file=dps.ca_file).register()
    assert result.registration_state.device_id == "py-x509"


def test_create_from_provisioning_follows_a_move(dps: Hub, tmp_path: Path) -> None:
    hub1, hub2 = dps.hub_hosts
    dps.request("POST", "/enrollments/py-dps/move", {"iotHub": hub1}, base=dps.dps_control_url)
    options: Any = dict(symmetric_key=dps.enrollment_keys["py-dps"], ca_file=dps.ca_file,
                        queue_dir=str(tmp_path / "queue"))
    states = Recorder()
    with iotconn.IoTHubDeviceClient.create_from_provisioning(dps.dps_mqtt, "py-dps", dps.id_scope,
                                                             **options) as client:
        client.on_connection_state_change = lambda status, reason: states.add((status, reason))
        completions = Recorder()
        client.on_send_complete = lambda message_id, result: completions.add((message_id, result))
        assert client.provisioning_registrations == 0 and client.assigned_hub is None
        client.connect(timeout=60)
        assert client.assigned_hub == (hub1, "py-dps")
        assert client.provisioning_registrations == 1
        for i in range(5):
            client.send_message(f"before-{i}", wait=True, timeout=30)

        dps.request("POST", "/enrollments/py-dps/move", {"iotHub": hub2}, base=dps.dps_control_url)
        sent: List[int] = [client.send_message(f"moving-{i}") for i in range(5)]
        states.wait_for(lambda events: (ConnectionStatus.CONNECTED, ConnectionStatusChangeReason.CONNECTION_OK)
                        in events[1:])
        for i in range(5):
            client.send_message(f"moved-{i}", wait=True, timeout=30)
        done = completions.wait_count(15)
        assert all(result == iotconn.SendResult.DELIVERED for _, result in done), done
        assert {message_id for message_id, _ in done} >= set(sent)
        assert client.provisioning_registrations == 2
        assert client.assigned_hub == (hub2, "py-dps")
    registration = dps.request("GET", "/registrations/py-dps", base=dps.dps_control_url)
    assert registration["registrations"] == 2

    # The new hub has every message sent after the move and each at most once (the old hub deleted the device,
    # and its record with it; those it took before the move completed DELIVERED above).
    hub2_control = next(line.split()[-1] for line in dps.log.events if line.startswith("hubsim: hub2 "))
    payloads = [m["payload"] for m in decode(dps.request("GET", "/devices/py-dps/messages", base=hub2_control))]
    assert len(payloads) == len(set(payloads))
    assert {f"moved-{i}".encode() for i in range(5)} <= set(payloads)
    assert set(payloads) <= {f"{tag}-{i}".encode() for tag in ("moving", "moved") for i in range(5)}

    # Restarted on the same queue directory: the cached hub, no registration.
    with iotconn.IoTHubDeviceClient.create_from_provisioning(dps.dps_mqtt, "py-dps", dps.id_scope,
                                                             **options) as client:
        client.connect(timeout=60)
        assert client.provisioning_registrations == 0
        assert client.assigned_hub == (hub2, "py-dps")
    assert dps.request("GET", "/registrations/py-dps", base=dps.dps_control_url)["registrations"] == 2


def decode(records: List[Any]) -> List[Any]:
    for record in records:
        record["payload"] = base64.b64decode(record["payload"])
    return records


def x509_client(hub: Hub, device: str, cert: Path) -> Tuple[iotconn.IoTHubDeviceClient, Recorder]:
    host = "localhost:" + hub.hub_hosts[0].rsplit(":", 1)[1]
    client = iotconn.IoTHubDeviceClient.create_from_connection_string(
        f"HostName={host};DeviceId={device};x509=true", ca_file=hub.ca_file,
        x509_cert_file=f"{cert}.pem", x509_key_file=f"{cert}-key.pem")
    states = Recorder()
    client.on_connection_state_change = lambda status, reason: states.add((status, reason))
    return client, states


def test_x509_self_signed_ca_signed_rotation_and_expired(tmp_path: Path) -> None:
    hub = Hub(tmp_path / "hub", ())
    try:
        thumb = mint(tmp_path / "self", "py-self")
        hub.request("POST", "/devices", {"id": "py-self", "auth": "selfSigned", "thumbprints": [thumb]})
        mint(tmp_path / "root", "py-root", "--ca")
        mint(tmp_path / "signed", "py-ca", "--issuer", str(tmp_path / "root"))
        hub.request("POST", "/cas", {"pem": (tmp_path / "root.pem").read_text()})
        hub.request("POST", "/devices", {"id": "py-ca", "auth": "certificateAuthority"})
        for device, cert in (("py-self", "self"), ("py-ca", "signed")):
            client, _ = x509_client(hub, device, tmp_path / cert)
            with client:
                client.connect(timeout=30)
                client.send_message(device, wait=True, timeout=30)

        # Rotation: new files under the same names; the same client presents them at its next connect.
        client, states = x509_client(hub, "py-self", tmp_path / "self")
        with client:
            client.connect(timeout=30)
            new_thumb = mint(tmp_path / "next", "py-self")
            for suffix in (".pem", "-key.pem"):
                (tmp_path / f"next{suffix}").replace(tmp_path / f"self{suffix}")
            hub.request("PATCH", "/devices/py-self", {"thumbprints": [new_thumb]})
            hub.fault("kill-tcp", device="py-self")
            states.wait_for(lambda events: events.count(
                (ConnectionStatus.CONNECTED, ConnectionStatusChangeReason.CONNECTION_OK)) >= 2)
            client.send_message("rotated", wait=True, timeout=30)

        # Expired: fatal, Disconnected / Bad_Credential, and the message says why.
        thumb = mint(tmp_path / "old", "py-old", "--expired")
        hub.request("POST", "/devices", {"id": "py-old", "auth": "selfSigned", "thumbprints": [thumb]})
        client, states = x509_client(hub, "py-old", tmp_path / "old")
        with client:
            with pytest.raises(iotconn.CredentialError, match="expired at"):
                client.connect(timeout=30)
            assert client.connection_status == (ConnectionStatus.DISCONNECTED,
                                                ConnectionStatusChangeReason.BAD_CREDENTIAL)
    finally:
        hub.stop()
