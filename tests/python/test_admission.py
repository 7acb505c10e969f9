"""iotconn.Admission: a connect budget that clients share, against a real iotconn-hubsim with one device each."""

import asyncio
import time

import pytest

from support import FLEET_DEVICES

import iotconn
import iotconn.aio

# 4 clients on a budget of 20 connects per second with a burst of 1: the first connects at once, each other one
# at least 50 ms after the one before, so all 4 take at least 150 ms (a lower bound, whatever the machine's speed).
RATE = 20
CLIENTS = FLEET_DEVICES[:4]
AT_LEAST_S = (len(CLIENTS) - 1) / RATE


@pytest.mark.parametrize("close_first", [False, True], ids=["open", "closed after the clients were created"])
def test_clients_sharing_a_budget_connect_no_faster_than_its_rate(make_fleet_client, close_first):
    budget = iotconn.Admission(per_second=RATE, burst=1)
    clients = [make_fleet_client(device, admission=budget) for device in CLIENTS]
    if close_first:
        budget.close()  # releases the handle only: the clients keep the budget
    start = time.monotonic()
    for client in clients:
        client.connect(timeout=30)
    assert time.monotonic() - start >= AT_LEAST_S
    budget.close()
    # still connected and sending after the close
    assert [client.send_message("admitted", wait=True, timeout=30) for client in clients] == [1] * len(CLIENTS)


def test_asyncio_clients_take_admission_too(fleet_hub):
    async def main():
        clients = []
        try:
            with iotconn.Admission(RATE) as budget:
                for device in CLIENTS:
                    clients.append(
                        iotconn.aio.IoTHubDeviceClient.create_from_connection_string(
                            fleet_hub.connection_strings[device], ca_file=fleet_hub.ca_file, admission=budget
                        )
                    )
            start = time.monotonic()
            await asyncio.gather(*(client.connect(timeout=30) for client in clients))
            assert time.monotonic() - start >= AT_LEAST_S
        finally:
            for client in clients:
                await client.shutdown()

    asyncio.run(main())


@pytest.mark.parametrize(
    "per_second, burst", [(0, 1), (-1, 1), (float("nan"), 1), (float("inf"), 1), (10, 0), (10, -1), (10, 2**32)]
)
def test_an_invalid_rate_or_burst_raises_einval(per_second, burst):
    with pytest.raises(iotconn.InvalidArgumentError) as info:
        iotconn.Admission(per_second, burst)
    assert info.value.code == iotconn.ErrorCode.EINVAL


@pytest.mark.parametrize("per_second, burst", [("10", 1), (True, 1), (10, 1.0), (10, None)])
def test_a_rate_or_burst_of_another_type_raises_type_error(per_second, burst):
    with pytest.raises(TypeError, match="per_second|burst"):
        iotconn.Admission(per_second, burst)


def test_a_closed_budget_refuses_new_clients(make_fleet_client):
    budget = iotconn.Admission(RATE)
    budget.close()
    budget.close()  # idempotent
    with pytest.raises(iotconn.BadHandleError) as info:
        make_fleet_client(CLIENTS[0], admission=budget)
    assert info.value.code == iotconn.ErrorCode.EBADHANDLE and "admission" in info.value.message
    with pytest.raises(TypeError, match="admission must be an iotconn.Admission"):
        make_fleet_client(CLIENTS[0], admission=RATE)
