"""Twins and direct methods end to end against a real iotconn-hubsim process: get the twin; a reported patch shows
in hubsim's twin; a desired patch from the control API reaches the handler with its $version; a method invoked
through the control API is answered with the app's status and payload; errors carry the library's codes; a client
that enables neither does not subscribe; after a lost link, methods and desired patches still arrive; the same
through iotconn.aio; a module (ModuleId in the connection string) is an identity of its own beside its device, and
bad module ids are refused with their codes; IoTHubModuleClient (sync and aio) has the twin and method API and
refuses a connection string without ModuleId; across outages: desired changes made while offline arrive once,
latest wins, reported patches queued during an outage go out after it in order, requests in flight at a cut link
end once each, and a method call that comes while an earlier one waits is answered, as is the earlier one; desired
changes made while the device is offline for a token renewal arrive once, latest wins."""

import asyncio
import functools
import threading
import time

import pytest

from support import DEVICE, EVENT_TIMEOUT, Recorder

import iotconn
import iotconn.aio
from iotconn import ConnectionStatus, ConnectionStatusChangeReason, ErrorCode, MethodRequest, MethodResponse


def invoke(hub, name, payload, timeout_s=30):
    return hub.request("POST", f"/devices/{DEVICE}/methods/{name}?timeout={timeout_s}", payload)


def test_get_twin_and_reported_patch_show_in_hubsim(hub, make_client):
    client = make_client(twin=True)
    client.connect(timeout=30)
    twin = client.get_twin()
    assert isinstance(twin["desired"]["$version"], int) and isinstance(twin["reported"]["$version"], int)

    version = client.patch_twin_reported_properties({"temp": 21, "unit": "°C"})
    hub_twin = hub.request("GET", f"/devices/{DEVICE}/twin")
    assert hub_twin["reported"]["temp"] == 21 and hub_twin["reported"]["unit"] == "°C"
    assert hub_twin["reported"]["$version"] == version > twin["reported"]["$version"]
    assert client.get_twin()["reported"]["temp"] == 21


def test_get_twin_before_connect_waits_for_the_connection(hub, make_client):
    client = make_client(twin=True)
    twins = Recorder()
    getter = threading.Thread(target=lambda: twins.add(client.get_twin(timeout=EVENT_TIMEOUT)), daemon=True)
    getter.start()
    client.connect(timeout=30)
    (twin,) = twins.wait_count(1)
    assert "desired" in twin and "reported" in twin
    getter.join(EVENT_TIMEOUT)


def test_desired_patch_reaches_the_handler_with_its_version(hub, make_client):
    client = make_client()
    patches = Recorder()
    client.on_twin_desired_properties_patch_received = patches.add
    client.connect(timeout=30)
    # the handler enables get_twin too
    assert "desired" in client.get_twin()
    version = hub.request("PATCH", f"/devices/{DEVICE}/twin/desired", {"fan": True})["desired"]["$version"]
    events = patches.wait_for(lambda events: any(p.get("fan") is True for p in events))
    fan = next(p for p in events if p.get("fan") is True)
    assert fan["$version"] == version
    versions = [p["$version"] for p in events]
    assert versions == sorted(set(versions))


def test_method_is_answered_with_the_apps_status_and_payload(hub, make_client):
    client = make_client()
    requests, errors = Recorder(), Recorder()

    def on_method(request):
        requests.add((request, threading.get_ident()))
        try:
            # NaN is not JSON: the library refuses it, and the call still takes its answer
            client.send_method_response(MethodResponse(request.request_id, 500, float("nan")))
        except iotconn.IoTConnError as exc:
            errors.add(exc)
        client.send_method_response(
            MethodResponse.create_from_method_request(request, 201, {"ok": True, "echo": request.payload})
        )
        try:  # one answer per call
            client.send_method_response(MethodResponse.create_from_method_request(request, 200))
        except iotconn.IoTConnError as exc:
            errors.add(exc)

    client.on_method_request_received = on_method
    client.connect(timeout=30)
    answer = invoke(hub, "reboot", {"delay": 1})
    assert answer == {"status": 201, "payload": {"ok": True, "echo": {"delay": 1}}}
    (request, thread_id), *_ = requests.wait_count(1)
    assert isinstance(request, MethodRequest)
    assert (request.name, request.payload) == ("reboot", {"delay": 1}) and request.request_id
    assert thread_id != threading.get_ident()
    bad_payload, second = errors.wait_count(2)
    assert isinstance(bad_payload, iotconn.InvalidArgumentError) and bad_payload.code == ErrorCode.EINVAL
    assert isinstance(second, iotconn.InvalidArgumentError) and second.code == ErrorCode.EINVAL


def test_method_answered_later_from_another_thread(hub, make_client):
    client = make_client()
    requests = Recorder()
    client.on_method_request_received = requests.add
    client.connect(timeout=30)
    answers = Recorder()
    caller = threading.Thread(target=lambda: answers.add(invoke(hub, "ping", None)), daemon=True)
    caller.start()
    (request,) = requests.wait_count(1)
    assert request.payload is None
    client.send_method_response(MethodResponse.create_from_method_request(request, 200, "pong"))
    assert answers.wait_count(1) == [{"status": 200, "payload": "pong"}]
    caller.join(EVENT_TIMEOUT)


def test_errors_carry_library_codes(hub, make_client):
    client = make_client(twin=True)
    with pytest.raises(iotconn.InvalidArgumentError) as info:
        client.send_method_response(MethodResponse("no-such-call", 200))
    assert info.value.code == ErrorCode.EINVAL
    with pytest.raises(iotconn.MessageTooLargeError) as info:
        client.patch_twin_reported_properties({"big": "x" * 40000})
    assert info.value.code == ErrorCode.ETOOLARGE
    with pytest.raises(TypeError):
        client.patch_twin_reported_properties([1, 2])
    client.shutdown()
    with pytest.raises(iotconn.ClientClosedError) as info:
        client.get_twin()
    assert info.value.code == ErrorCode.ECLOSED


def test_without_twin_or_handlers_the_device_does_not_subscribe(hub, make_client):
    client = make_client()
    with pytest.raises(iotconn.StateError) as info:
        client.get_twin()
    assert info.value.code == ErrorCode.ESTATE
    client.connect(timeout=30)
    with pytest.raises(iotconn.StateError):
        client.patch_twin_reported_properties({"temp": 1})
    # handlers set after connect would never run
    with pytest.raises(iotconn.StateError):
        client.on_method_request_received = lambda request: None
    with pytest.raises(iotconn.StateError):
        client.on_twin_desired_properties_patch_received = lambda patch: None
    with pytest.raises(AssertionError, match="404"):
        invoke(hub, "reboot", None, timeout_s=5)


def test_async_client_twins_and_methods_on_the_loop(hub):
    async def main():
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        patches, requests = asyncio.Queue(), []

        async def on_method(request):  # a coroutine handler that answers on the loop
            requests.append((request, threading.get_ident()))
            await client.send_method_response(MethodResponse.create_from_method_request(request, 202, [request.name]))

        client = iotconn.aio.IoTHubDeviceClient.create_from_connection_string(
            hub.connection_strings[DEVICE], ca_file=hub.ca_file
        )
        async with client:
            client.on_twin_desired_properties_patch_received = lambda patch: patches.put_nowait(
                (patch, threading.get_ident())
            )
            client.on_method_request_received = on_method
            await client.connect(timeout=30)
            twin = await client.get_twin()
            version = await client.patch_twin_reported_properties({"mode": "eco"})
            assert version > twin["reported"]["$version"]
            # the control API blocks: called off the loop, which must stay free to run the handlers
            hub_twin = await loop.run_in_executor(None, hub.request, "GET", f"/devices/{DEVICE}/twin")
            assert hub_twin["reported"]["mode"] == "eco" and hub_twin["reported"]["$version"] == version

            patched = await loop.run_in_executor(
                None, hub.request, "PATCH", f"/devices/{DEVICE}/twin/desired", {"level": 3}
            )
            while True:
                patch, thread_id = await asyncio.wait_for(patches.get(), EVENT_TIMEOUT)
                if patch.get("level") == 3:
                    break
            assert patch["$version"] == patched["desired"]["$version"] and thread_id == loop_thread

            answer = await loop.run_in_executor(None, invoke, hub, "blink", {"times": 2})
            assert answer == {"status": 202, "payload": ["blink"]}
            assert [(r.name, r.payload, t) for r, t in requests] == [("blink", {"times": 2}, loop_thread)]

            with pytest.raises(iotconn.InvalidArgumentError):
                await client.send_method_response(MethodResponse("no-such-call", 200))

    asyncio.run(main())


def test_method_and_desired_patch_after_a_lost_link(hub, make_client):
    client = make_client()
    statuses, patches = Recorder(), Recorder()
    client.on_connection_state_change = lambda status, reason: statuses.add((status, reason))
    client.on_twin_desired_properties_patch_received = patches.add
    client.on_method_request_received = lambda request: client.send_method_response(
        MethodResponse.create_from_method_request(request, 200, request.name)
    )
    client.connect(timeout=30)
    hub.fault("kill-tcp", device=DEVICE)
    connected = (iotconn.ConnectionStatus.CONNECTED, iotconn.ConnectionStatusChangeReason.CONNECTION_OK)
    statuses.wait_for(lambda events: events.count(connected) >= 2)
    # subscriptions were restored on the new link
    assert invoke(hub, "again", None) == {"status": 200, "payload": "again"}
    version = hub.request("PATCH", f"/devices/{DEVICE}/twin/desired", {"after": 1})["desired"]["$version"]
    patches.wait_for(lambda events: any(p["$version"] == version and p.get("after") == 1 for p in events))


def test_module_is_an_identity_of_its_own(hub, make_client):
    module = hub.request("POST", f"/devices/{DEVICE}/modules", {"id": "m1"})
    assert ";ModuleId=m1;" in module["connectionString"]
    device = make_client()
    device.connect(timeout=30)
    client = make_client(module["connectionString"])
    patches = Recorder()
    client.on_twin_desired_properties_patch_received = patches.add
    client.on_method_request_received = lambda request: client.send_method_response(
        MethodResponse.create_from_method_request(request, 200, {"module": "m1", "echo": request.payload})
    )
    client.connect(timeout=30)
    assert hub.request("GET", f"/devices/{DEVICE}")["connected"] is True

    client.send_message("from the module", wait=True)
    assert [m["payload"] for m in hub.messages(f"{DEVICE}/modules/m1")] == [b"from the module"]
    assert hub.messages() == []

    version = client.patch_twin_reported_properties({"role": "module"})
    module_twin = hub.request("GET", f"/devices/{DEVICE}/modules/m1/twin")
    assert module_twin["reported"]["role"] == "module" and module_twin["reported"]["$version"] == version
    assert "role" not in hub.request("GET", f"/devices/{DEVICE}/twin")["reported"]
    assert client.get_twin()["reported"]["role"] == "module"

    patched = hub.request("PATCH", f"/devices/{DEVICE}/modules/m1/twin/desired", {"rate": 3})
    patches.wait_for(lambda events: any(p["$version"] == patched["desired"]["$version"] for p in events))
    assert hub.request("POST", f"/devices/{DEVICE}/modules/m1/methods/who?timeout=30", 1) == {
        "status": 200,
        "payload": {"module": "m1", "echo": 1},
    }
    with pytest.raises(AssertionError, match="404"):  # the device has no method handler
        invoke(hub, "who", 1, timeout_s=5)


def test_module_client_twin_and_method(hub, make_client):
    module = hub.request("POST", f"/devices/{DEVICE}/modules", {"id": "m1"})
    client = make_client(module["connectionString"], client_class=iotconn.IoTHubModuleClient)
    assert not isinstance(client, iotconn.IoTHubDeviceClient)
    patches = Recorder()
    client.on_twin_desired_properties_patch_received = patches.add
    client.on_method_request_received = lambda request: client.send_method_response(
        MethodResponse.create_from_method_request(request, 200, {"module": "m1", "echo": request.payload})
    )
    client.connect(timeout=30)
    version = client.patch_twin_reported_properties({"role": "module"})
    module_twin = hub.request("GET", f"/devices/{DEVICE}/modules/m1/twin")
    assert module_twin["reported"]["role"] == "module" and module_twin["reported"]["$version"] == version
    assert "role" not in hub.request("GET", f"/devices/{DEVICE}/twin")["reported"]
    assert client.get_twin()["reported"]["role"] == "module"
    patched = hub.request("PATCH", f"/devices/{DEVICE}/modules/m1/twin/desired", {"rate": 3})["desired"]["$version"]
    patches.wait_for(lambda events: any(p["$version"] == patched and p.get("rate") == 3 for p in events))
    assert hub.request("POST", f"/devices/{DEVICE}/modules/m1/methods/who?timeout=30", 1) == {
        "status": 200,
        "payload": {"module": "m1", "echo": 1},
    }


def test_module_client_refuses_a_device_connection_string(hub, make_client):
    device_cs = hub.connection_strings[DEVICE]
    key = device_cs.split("SharedAccessKey=", 1)[1]
    with pytest.raises(iotconn.InvalidArgumentError, match="has no ModuleId") as info:
        make_client(device_cs, client_class=iotconn.IoTHubModuleClient)
    assert info.value.code == ErrorCode.EINVAL and key not in str(info.value)
    # the library's own check of the value, and its spelling of the key (any case, spaces around it)
    with pytest.raises(iotconn.InvalidArgumentError, match="ModuleId"):
        make_client(device_cs + ";ModuleId=", client_class=iotconn.IoTHubModuleClient)
    make_client(device_cs + "; moduleid =m1", client_class=iotconn.IoTHubModuleClient)

    async def main():
        with pytest.raises(iotconn.InvalidArgumentError, match="has no ModuleId"):
            iotconn.aio.IoTHubModuleClient.create_from_connection_string(device_cs, ca_file=hub.ca_file)

    asyncio.run(main())


def test_async_module_client_twin(hub):
    module_cs = hub.request("POST", f"/devices/{DEVICE}/modules", {"id": "m1"})["connectionString"]

    async def main():
        client = iotconn.aio.IoTHubModuleClient.create_from_connection_string(
            module_cs, ca_file=hub.ca_file, twin=True
        )
        async with client:
            await client.connect(timeout=30)
            version = await client.patch_twin_reported_properties({"role": "aio module"})
            twin = await client.get_twin()
            assert twin["reported"]["role"] == "aio module" and twin["reported"]["$version"] == version

    asyncio.run(main())
    hub_twin = hub.request("GET", f"/devices/{DEVICE}/modules/m1/twin")
    assert hub_twin["reported"]["role"] == "aio module"


@pytest.mark.parametrize(
    "module_id, error",
    [("", iotconn.InvalidArgumentError), ("a/b", iotconn.InvalidArgumentError), ("m" * 129, iotconn.MessageTooLargeError)],
)
def test_bad_module_ids_are_refused_with_their_codes(hub, make_client, module_id, error):
    with pytest.raises(error, match="ModuleId"):
        make_client(hub.connection_strings[DEVICE] + ";ModuleId=" + module_id)


def patch_desired(hub, patch):
    return hub.request("PATCH", f"/devices/{DEVICE}/twin/desired", patch)["desired"]["$version"]


@pytest.mark.parametrize("fault", [{"kind": "hub-down", "seconds": 3}, {"kind": "kill-tcp", "device": DEVICE}])
def test_desired_changes_during_an_outage_arrive_once_latest_wins(hub, make_client, fault):
    client = make_client()
    statuses, patches = Recorder(), Recorder()
    client.on_connection_state_change = lambda status, reason: statuses.add(status)
    client.on_twin_desired_properties_patch_received = patches.add
    client.connect(timeout=30)
    patches.wait_count(1)  # the desired section after connecting
    hub.fault(**fault)
    offline = fault["kind"] == "hub-down"
    if offline:  # the changes are then certainly made while the device is away
        statuses.wait_for(lambda events: iotconn.ConnectionStatus.DISCONNECTED_RETRYING in events)
    versions = [patch_desired(hub, {"n": i, f"k{i}": True}) for i in range(3)]
    events = patches.wait_for(lambda events: any(p["$version"] == versions[-1] for p in events))
    after = events[1:]
    assert after[-1]["n"] == 2 and all(after[-1][f"k{i}"] for i in range(3))
    if offline:
        assert [p["$version"] for p in after] == [versions[-1]]
    # the next update is the next change: none came twice
    following = patch_desired(hub, {"n": 9})
    events = patches.wait_for(lambda events: any(p["$version"] == following for p in events))
    seen = [p["$version"] for p in events]
    assert seen == sorted(set(seen)) and seen[-1] == following


def test_reported_patches_and_requests_across_outages_end_once_in_order(hub):
    async def main():
        loop = asyncio.get_running_loop()
        retrying = asyncio.Event()
        client = iotconn.aio.IoTHubDeviceClient.create_from_connection_string(
            hub.connection_strings[DEVICE], ca_file=hub.ca_file, twin=True
        )
        async with client:
            client.on_connection_state_change = lambda status, reason: (
                status == iotconn.ConnectionStatus.DISCONNECTED_RETRYING and retrying.set()
            )
            await client.connect(timeout=30)
            await loop.run_in_executor(None, functools.partial(hub.fault, "hub-down", seconds=3))
            await asyncio.wait_for(retrying.wait(), EVENT_TIMEOUT)
            # queued in this order while the hub is down (each request starts before the coroutine first waits)
            patches = [asyncio.ensure_future(client.patch_twin_reported_properties({"seq": i})) for i in range(5)]
            get = asyncio.ensure_future(client.get_twin())
            versions = await asyncio.wait_for(asyncio.gather(*patches), EVENT_TIMEOUT)
            assert versions == sorted(set(versions))
            assert "reported" in await asyncio.wait_for(get, EVENT_TIMEOUT)
            hub_twin = await loop.run_in_executor(None, hub.request, "GET", f"/devices/{DEVICE}/twin")
            assert hub_twin["reported"]["seq"] == 4 and hub_twin["reported"]["$version"] == versions[-1]

            # in flight when the link is cut: each ends once, sent again on the next link
            inflight = []
            for i in range(3):
                inflight.append(asyncio.ensure_future(client.get_twin()))
                inflight.append(asyncio.ensure_future(client.patch_twin_reported_properties({"cut": i})))
            await loop.run_in_executor(None, functools.partial(hub.fault, "kill-tcp", device=DEVICE))
            results = await asyncio.wait_for(asyncio.gather(*inflight), EVENT_TIMEOUT)
            twins, cut_versions = results[0::2], results[1::2]
            assert all("desired" in twin for twin in twins)
            assert cut_versions == sorted(set(cut_versions)) and cut_versions[0] > versions[-1]

    asyncio.run(main())


def test_method_call_while_an_earlier_one_waits_is_answered(hub, make_client):
    client = make_client()
    held = Recorder()

    def on_method(request):
        if request.name == "slow":
            held.add(request)  # answered later, from the test's thread
            return
        client.send_method_response(MethodResponse.create_from_method_request(request, 200, request.name))

    client.on_method_request_received = on_method
    client.connect(timeout=30)
    answers = Recorder()
    caller = threading.Thread(target=lambda: answers.add(invoke(hub, "slow", None)), daemon=True)
    caller.start()
    (slow,) = held.wait_count(1)
    assert invoke(hub, "quick", None) == {"status": 200, "payload": "quick"}
    client.send_method_response(MethodResponse.create_from_method_request(slow, 202, {"late": True}))
    assert answers.wait_count(1) == [{"status": 202, "payload": {"late": True}}]
    caller.join(EVENT_TIMEOUT)


def test_desired_changes_during_a_token_renewal_arrive_once_latest_wins(hub, make_client):
    # The shortest renewal period the floors allow: the first renewal comes 30 s after connecting.
    lifetime = iotconn.MIN_SAS_LIFETIME_S
    margin = lifetime - iotconn.MIN_SAS_RENEW_INTERVAL_S
    # An MQTT renewal dials again within milliseconds of its status event (measured 6 ms), before any hubsim fault
    # the test could arm after it. A connect budget of one token per period + 3 s holds that dial instead: the
    # first connect takes the token, and the renewal waits about 3 s for the next one, with the device offline.
    hold_s = 3
    admission = iotconn.Admission(per_second=1 / (lifetime - margin + hold_s))
    client = make_client(sastoken_ttl=lifetime, sastoken_renew_margin=margin, admission=admission)
    admission.close()
    statuses, patches = Recorder(), Recorder()
    client.on_connection_state_change = lambda status, reason: statuses.add((status, reason, time.monotonic()))
    client.on_twin_desired_properties_patch_received = patches.add
    client.on_method_request_received = lambda request: client.send_method_response(
        MethodResponse.create_from_method_request(request, 200, request.name)
    )
    client.connect(timeout=30)
    first = patches.wait_count(1)[0]  # the desired section after connecting
    renewal = (ConnectionStatus.DISCONNECTED_RETRYING, ConnectionStatusChangeReason.EXPIRED_SAS_TOKEN)
    statuses.wait_for(lambda events: renewal in [e[:2] for e in events], lifetime - margin + EVENT_TIMEOUT)
    hub.wait_log(f"hubsim: disconnect {DEVICE} ")  # the hub dropped the old link: nothing more goes to it
    versions = [patch_desired(hub, {"n": i, f"k{i}": True}) for i in range(3)]
    device = hub.request("GET", f"/devices/{DEVICE}")
    assert (device["connected"], device["connections"]) == (False, 1), "the changes were made while offline"

    events = patches.wait_for(lambda events: any(p["$version"] == versions[-1] for p in events))
    after = events[-1]
    assert after["n"] == 2 and all(after[f"k{i}"] for i in range(3))
    following = patch_desired(hub, {"n": 9})
    events = patches.wait_for(lambda events: any(p["$version"] == following for p in events))
    # one update for the latest version, none for the older ones, none twice; the next change comes next
    assert [p["$version"] for p in events] == [first["$version"], versions[-1], following]
    assert invoke(hub, "after", None) == {"status": 200, "payload": "after"}
    connected = (ConnectionStatus.CONNECTED, ConnectionStatusChangeReason.CONNECTION_OK)
    seen = statuses.events
    assert [e[:2] for e in seen] == [connected, renewal, connected]
    print(f"renewal {seen[1][2] - seen[0][2]:.1f} s after connecting, offline {seen[2][2] - seen[1][2]:.2f} s; "
          f"desired versions {[p['$version'] for p in events]}, made offline {versions}")
