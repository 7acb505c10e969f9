"""The AMQP transports through the binding against a real iotconn-hubsim process: connect, send with properties
and a C2D message over AMQP and over AMQP with websockets=True, pooled clients, and bad options."""

import pytest

from support import Recorder

import iotconn
from iotconn import ConnectionStatus as S
from iotconn import ConnectionStatusChangeReason as R
from test_client import CONNECTED, pairs, watch


@pytest.mark.parametrize("websockets", [False, True])
@pytest.mark.parametrize("pool", [None, 4])
def test_amqp_connect_send_and_receive(hub, make_client, websockets, pool):
    client = make_client(
        hub.amqp_connection_string(websockets=websockets),
        transport=iotconn.Transport.AMQP,
        websockets=websockets,
        amqp_pool=pool,
    )
    statuses, completions = watch(client)
    received = Recorder()
    client.on_message_received = received.add
    client.connect(timeout=30)
    assert pairs(statuses.wait_count(1)) == [CONNECTED]
    message = iotconn.Message("over amqp", message_id="mid-1", content_type="text/plain", custom_properties={"k": "v"})
    assert client.send_message(message, wait=True, timeout=30) == 1
    record = hub.messages()[-1]
    assert (record["payload"], record["messageId"], record["contentType"]) == (b"over amqp", "mid-1", "text/plain")
    assert record["properties"] == {"k": "v"}
    hub.send_c2d(payload="to the device", messageId="c2d-1", properties={"color": "blue"})
    (got,) = received.wait_count(1)
    assert got.data == b"to the device" and got.custom_properties == {"color": "blue"}
    client.shutdown()
    assert pairs(statuses.wait_count(2))[1] == (S.DISABLED, R.CLIENT_CLOSE)


def test_amqp_options_are_checked(hub, make_client):
    with pytest.raises(iotconn.InvalidArgumentError, match="AMQP"):
        make_client(amqp_pool=4)  # MQTT has no pooling
    with pytest.raises(TypeError):
        make_client(transport=iotconn.Transport.AMQP, websockets="yes")
    with pytest.raises(ValueError):
        make_client(transport=iotconn.Transport.AMQP, amqp_pool=-1)
    assert iotconn.Transport.AMQP_WS == 3
