"""A device that finds its hub through the Device Provisioning Service (the Python twin of examples/c/provision.c):
registers with a symmetric key (or reuses the assignment cached in QUEUE_DIR), sends COUNT messages, and prints
the status changes, where it was assigned and how many registrations it made. If the hub refuses it later (moved,
deleted) it registers again by itself; a hub that is down is retried without calling DPS.

    python provision.py DPS_HOST ID_SCOPE REGISTRATION_ID KEY [CA_FILE] [QUEUE_DIR] [COUNT]

With hubsim: iotconn-hubsim --dir /tmp/hub --hub 127.0.0.1:0 --dps-mqtt 127.0.0.1:0 --enrollment dev-7 prints
the DPS address, the id scope and the enrollment's key. A one-off registration without a client:
iotconn.ProvisioningDeviceClient.create_from_symmetric_key(host, reg_id, scope, key).register().
"""

import sys

import iotconn
from iotconn import IoTHubDeviceClient


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    host, scope, reg_id, key = sys.argv[1:5]
    ca_file = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != "-" else None
    queue_dir = sys.argv[6] if len(sys.argv) > 6 else None
    count = int(sys.argv[7]) if len(sys.argv) > 7 else 5
    with IoTHubDeviceClient.create_from_provisioning(host, reg_id, scope, symmetric_key=key, ca_file=ca_file,
                                                     queue_dir=queue_dir) as client:
        client.on_connection_state_change = lambda status, reason: print(f"status: {status.name} / {reason.name}")
        try:
            client.connect(timeout=120)
        except iotconn.IoTConnError as exc:
            print(f"connect: {exc}", file=sys.stderr)
            return 1
        hub, device = client.assigned_hub or ("?", "?")
        print(f"assigned: hub={hub} device={device} registrations={client.provisioning_registrations}")
        for i in range(count):
            client.send_message(f'{{"n":{i}}}', wait=True, timeout=60)
        print(f"sent {count}; registrations={client.provisioning_registrations}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
