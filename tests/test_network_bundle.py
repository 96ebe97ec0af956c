"""The network service end to end: operator -> broker -> gateway -> network worker -> the real
NetworkManager (in its namespace, tests/network_fixtures.py) and back, under real supervisord."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Bundle
from tests.network_fixtures import NmEnv, nm_env

__all__ = ["nm_env"]

pytestmark = [pytest.mark.system]


@pytest.fixture(scope="module")
def net_bundle(nm_env: NmEnv, pki: Any, broker: Any) -> Iterator[Bundle]:
    """One bundle for the module; eth0 plays the interface carrying the MQTT link."""
    b = Bundle(
        pki,
        broker,
        ["network"],
        {
            "network": {
                "dbus_address": nm_env.address,
                "protected_interfaces": ["eth0"],
                "rollback_timeout": 20,
                "link_settle": 1.5,
            }
        },
    )
    try:
        b.start()
        yield b
    finally:
        b.cleanup()


BAD_INPUT = [
    ("state", [1, 2], None),
    ("devices", {"interface": "eth0/../x"}, "interface"),
    ("devices", {"interface": 7}, "interface"),
    ("connections", "text", None),
    ("wifi/scan", {"interface": "bad name"}, "interface"),
    ("wifi/scan", {"rescan": "yes"}, "rescan"),
    ("wifi/connect", {"ssid": "x" * 33, "password": "12345678"}, "ssid"),
    ("wifi/connect", {"ssid": "net", "password": "1234567"}, "password"),
    ("wifi/connect", {"password": "12345678"}, "ssid"),
    ("ethernet/configure", {"interface": "eth1", "method": "static"}, "address"),
    ("ethernet/configure", {"interface": "eth1", "method": "static", "address": "10.1.1.1/40"},
     "address"),
    ("ethernet/configure", {"interface": "eth1", "method": "static", "address": "10.1.1.5/24",
                            "gateway": "10.2.2.2"}, "gateway"),
    ("ethernet/configure", {"interface": "eth1", "dns": ["1.2.3"]}, "dns"),
    ("ethernet/configure", {"method": "dhcp"}, "interface"),
    ("connections/up", {"connection": ""}, "connection"),
    ("connections/down", {}, "connection"),
    ("connections/delete", {"connection": 5}, "connection"),
    ("hostname/set", {"hostname": "-bad-"}, "hostname"),
    ("hostname/set", {"hostname": "a" * 254}, "hostname"),
    ("confirm", {"job_id": 5}, "job_id"),
    ("jobs/get", {}, "job_id"),
]  # fmt: skip


@pytest.mark.parametrize(("action", "args", "field"), BAD_INPUT)
async def test_bad_input_through_the_gateway(
    net_bundle: Bundle, action: str, args: Any, field: str | None
) -> None:
    reply = await net_bundle.call("network", action, args)
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == "invalid_request", reply
    if field is not None:
        # a missing field is named in the message only (common/dispatch.py's mapping)
        details = reply["error"].get("details") or {}
        assert details.get("field") == field or f"`{field}`" in reply["error"]["message"], reply
    if action == "wifi/connect" and "password" in args:
        assert args["password"] not in str(reply)  # secrets are never echoed


async def test_not_found_and_read_actions(net_bundle: Bundle) -> None:
    r = await net_bundle.call("network", "connections/up", {"connection": "no-such-profile"})
    assert r["error"]["code"] == "not_found", r
    r = await net_bundle.call("network", "devices", {"interface": "eth9"})
    assert r["error"]["code"] == "not_found", r
    r = await net_bundle.call("network", "wifi/scan")
    assert r["error"]["code"] == "not_found", r  # no Wi-Fi device in the namespace
    r = await net_bundle.call("network", "confirm")
    assert r["error"]["code"] == "not_found", r
    r = await net_bundle.call("network", "state")
    assert r["ok"] and r["result"]["protected_interfaces"] == ["eth0"], r
    r = await net_bundle.call("network", "devices")
    assert {"eth0", "eth1"} <= {d["interface"] for d in r["result"]}


async def test_protected_change_committed_by_the_gateway_heartbeat(net_bundle: Bundle) -> None:
    """The real gateway's heartbeat (link: up) commits the checkpointed change on eth0."""
    reply, events = await net_bundle.run_job(
        "network", "ethernet/configure", {"interface": "eth0", "method": "dhcp"}, timeout=60
    )
    assert reply["ok"], reply
    final = events[-1]
    assert final["state"] == "succeeded", final
    assert final["result"]["checkpoint"] == "committed"
    lines = [line for ev in events for line in ev.get("lines", [])]
    assert any("checkpoint created" in line for line in lines), lines
    st = (await net_bundle.call("network", "state"))["result"]
    assert st["last_change"]["outcome"] == "committed"
    assert st["last_change"]["job_id"] == final["job_id"]


async def test_networkmanager_stopped_and_restarted_under_the_bundle(
    net_bundle: Bundle, nm_env: NmEnv
) -> None:
    assert (await net_bundle.call("network", "state"))["ok"]
    pid = net_bundle.pid("network")
    nm_env.stop_nm()
    try:
        r = await net_bundle.call("network", "state")
        assert r["error"]["code"] == "service_unavailable", r
        assert "NetworkManager" in r["error"]["message"]
        r = await net_bundle.call("network", "ethernet/configure", {"interface": "eth1"})
        assert r["error"]["code"] == "service_unavailable", r
    finally:
        nm_env.start_nm()
    deadline = asyncio.get_running_loop().time() + 30
    while True:  # the worker notices NetworkManager's return by itself (NameOwnerChanged)
        r = await net_bundle.call("network", "state")
        if r["ok"]:
            break
        assert r["error"]["code"] == "service_unavailable", r
        assert asyncio.get_running_loop().time() < deadline, r
        await asyncio.sleep(0.2)
    assert r["result"]["version"].startswith("1.")
    assert net_bundle.pid("network") == pid  # the same worker process: no restart was needed
