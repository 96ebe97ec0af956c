"""Wi-Fi through the network service, against the D-Bus double in tests/network_double.py
(this kernel has no Wi-Fi hardware or mac80211_hwsim). The double runs on its own private
dbus-daemon, separate from the real NetworkManager's bus."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from common.errors import InvalidRequest, NotFound
from common.messages import JobState
from tests.network_double import Air, WifiDouble
from tests.network_fixtures import (
    call,
    need_root_tools,
    running_service,
    short_dir,
    start_bus,
    stop,
    wait_job,
)

pytestmark = [pytest.mark.system]

PSK = "correct horse $battery 'staple' \"ü\""


@pytest.fixture(scope="module")
def wifi_bus() -> Iterator[str]:
    need_root_tools("dbus-daemon")
    root = short_dir("twf-")
    proc, address = start_bus(root, "wifi")
    try:
        yield address
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def double(wifi_bus: str) -> AsyncIterator[WifiDouble]:
    d = await WifiDouble.start(wifi_bus)
    d.add_ap(Air(b"home", "02:aa:00:00:00:01", 40, 2412, "wpa2", PSK))
    d.add_ap(Air(b"home", "02:aa:00:00:00:02", 80, 5180, "wpa2", PSK))
    d.add_ap(Air(b"cafe", "02:aa:00:00:00:03", 60, 2437, "open"))
    d.add_ap(Air(b"secure", "02:aa:00:00:00:04", 30, 5955, "wpa3", "sae-pass-123"))
    d.add_ap(Air(b"\xff\xfebin", "02:aa:00:00:00:05", 20, 2462, "wpa2", "whatever1"))
    try:
        yield d
    finally:
        d.stop()


async def connect(ctx: Any, args: dict[str, Any]) -> Any:
    ref = await call(ctx, "wifi/connect", args)
    return await wait_job(ctx, ref["job_id"], 20)


async def test_scan_dedups_and_sorts(double: WifiDouble, wifi_bus: str) -> None:
    async with running_service(wifi_bus) as (ctx, _link):
        r = await call(ctx, "wifi/scan")
        assert double.wireless.scans == 1  # a real RequestScan went over D-Bus
        assert r["interface"] == "wlan0"
        aps = r["access_points"]
        assert [a["ssid"] for a in aps] == ["home", "cafe", "secure", "\ufffd\ufffdbin"]
        home = aps[0]
        assert home["bssid"] == "02:aa:00:00:00:02" and home["signal"] == 80
        assert home["channel"] == 36 and home["frequency"] == 5180 and home["others"] == 1
        assert home["security"] == "WPA2"
        assert aps[1]["security"] == "open" and aps[1]["channel"] == 6
        assert aps[2]["security"] == "WPA3"
        assert aps[3]["ssid_hex"] == "fffe62696e"  # raw bytes kept when not UTF-8
        r = await call(ctx, "wifi/scan", {"rescan": False})
        assert double.wireless.scans == 1 and len(r["access_points"]) == 4


async def test_connect_success_and_profile_without_secret(
    double: WifiDouble, wifi_bus: str
) -> None:
    async with running_service(wifi_bus, link_settle=0.5) as (ctx, _link):
        ev = await connect(ctx, {"ssid": "home", "password": PSK})
        assert ev.state is JobState.SUCCEEDED, ev
        assert ev.result.state == "activated" and ev.result.interface == "wlan0"
        [dev] = await call(ctx, "devices", {"interface": "wlan0"})
        assert dev["type"] == "wifi" and dev["state"] == "activated"
        assert dev["connection"] == "home" and dev["ipv4"][0]["address"] == "192.168.50.23"
        double.leak_secrets = True  # even if the backend hands out the PSK ...
        conns = await call(ctx, "connections")
        assert [(c["id"], c["ssid"], c["security"], c["active"]) for c in conns] == [
            ("home", "home", "wpa-psk", True)
        ]
        assert PSK not in repr(conns)  # ... it never reaches a reply
        double.leak_secrets = False
        st = await call(ctx, "state")
        assert st["state"] == "connected_global" and st["connectivity"] == "full"
        assert st["protected_interfaces"] == ["wlan0"]  # auto: the primary connection's device
        # connecting again updates the same profile instead of adding another; wlan0 now
        # carries the link, so this change runs under a checkpoint committed by the link
        ev = await connect(ctx, {"ssid": "home", "password": PSK})
        assert ev.state is JobState.SUCCEEDED, ev
        assert ev.result.checkpoint == "committed" and double.checkpoints == {}
        assert len(await call(ctx, "connections")) == 1


async def test_wrong_password_is_auth_failed(double: WifiDouble, wifi_bus: str) -> None:
    async with running_service(wifi_bus) as (ctx, _link):
        ev = await connect(ctx, {"ssid": "home", "password": "wrong-password"})
        assert ev.state is JobState.FAILED
        assert ev.error is not None and ev.error.code == "auth_failed", ev.error
        assert ev.error.details["device_reason"] == "no_secrets"
        assert "wrong-password" not in repr(ev)
        # the profile created for the attempt is not left behind to retry forever
        assert await call(ctx, "connections") == []


async def test_wpa3_uses_sae_and_static_ip(double: WifiDouble, wifi_bus: str) -> None:
    async with running_service(wifi_bus) as (ctx, _link):
        ev = await connect(
            ctx,
            {
                "ssid": "secure",
                "password": "sae-pass-123",
                "ipv4": {"address": "192.168.9.5/24", "gateway": "192.168.9.1"},
            },
        )
        assert ev.state is JobState.SUCCEEDED, ev
        [c] = await call(ctx, "connections")
        assert c["security"] == "sae" and c["ipv4"]["method"] == "manual"
        [dev] = await call(ctx, "devices")
        assert dev["ipv4"] == [{"address": "192.168.9.5", "prefix": 24}]
        assert dev["gateway4"] == "192.168.9.1"


async def test_network_disappears(double: WifiDouble, wifi_bus: str) -> None:
    async with running_service(wifi_bus) as (ctx, _link):
        ev = await connect(ctx, {"ssid": "cafe"})
        assert ev.state is JobState.SUCCEEDED, ev
        double.remove_ap("02:aa:00:00:00:03")
        [dev] = await call(ctx, "devices")
        assert dev["state"] == "disconnected" and dev["connection"] is None
        assert "cafe" not in [a["ssid"] for a in (await call(ctx, "wifi/scan"))["access_points"]]
        ev = await connect(ctx, {"ssid": "cafe"})
        assert ev.state is JobState.FAILED
        assert ev.error is not None and ev.error.code == "not_found", ev.error
        assert ev.error.details["device_reason"] == "ssid_not_found"


async def test_hidden_network(double: WifiDouble, wifi_bus: str) -> None:
    async with running_service(wifi_bus) as (ctx, _link):
        double.add_ap(
            Air(b"stealth", "02:aa:00:00:00:09", 70, 2412, "wpa2", "hidden-pass", hidden=True)
        )
        scan = await call(ctx, "wifi/scan", {"rescan": False})
        assert "stealth" not in [a["ssid"] for a in scan["access_points"]]
        ev = await connect(ctx, {"ssid": "stealth", "password": "hidden-pass", "hidden": True})
        assert ev.state is JobState.SUCCEEDED, ev
        [c] = await call(ctx, "connections")
        assert c["ssid"] == "stealth"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"ssid": "x" * 33, "password": "12345678"}, "ssid"),
        ({"ssid": "é" * 17, "password": "12345678"}, "ssid"),  # 34 bytes
        ({"ssid": "", "password": "12345678"}, "ssid"),
        ({"ssid": "home", "password": "short"}, "password"),
        ({"ssid": "home", "password": "x" * 64}, "password"),  # 64 but not hex
        ({"ssid": "home", "password": "tab\there!"}, "password"),
        ({"ssid": "home", "ipv4": {"address": "192.168.1.300/24"}}, "ipv4.address"),
        ({"ssid": "home", "interface": "wl an0"}, "interface"),
        ({"ssid": 5}, "ssid"),
    ],
)
async def test_bad_wifi_input(
    double: WifiDouble, wifi_bus: str, args: dict[str, Any], field: str
) -> None:
    async with running_service(wifi_bus) as (ctx, _link):
        with pytest.raises(InvalidRequest) as exc:
            await call(ctx, "wifi/connect", args)
        assert exc.value.details["field"] == field
        if field == "password":  # a secret is never echoed back
            assert args["password"] not in repr(exc.value.details) + exc.value.message
        assert double.connections == {}


async def test_unsupported_security_and_open_with_password(
    double: WifiDouble, wifi_bus: str
) -> None:
    async with running_service(wifi_bus) as (ctx, _link):
        double.add_ap(Air(b"corp", "02:aa:00:00:00:0e", 50, 2412, "wpa2-eap"))
        assert (await call(ctx, "wifi/scan"))["access_points"][2]["security"] == "enterprise"
        ev = await connect(ctx, {"ssid": "corp", "password": "12345678"})
        assert ev.error is not None and ev.error.code == "invalid_request"
        assert ev.error.details["security"] == "enterprise"
        ev = await connect(ctx, {"ssid": "cafe", "password": "12345678"})
        assert ev.error is not None and ev.error.code == "invalid_request"
        assert ev.error.details["field"] == "password"
        assert await call(ctx, "connections") == []


async def test_activation_timeout_stops_the_attempt(double: WifiDouble, wifi_bus: str) -> None:
    async with running_service(wifi_bus, activation_timeout=1.0) as (ctx, _link):
        double.add_ap(Air(b"slow", "02:aa:00:00:00:0f", 50, 2412, "open", stall=True))
        ev = await connect(ctx, {"ssid": "slow"})
        assert ev.error is not None and ev.error.code == "timeout", ev.error
        assert double.device.active == "/"  # the attempt was deactivated, not left hanging
        assert await call(ctx, "connections") == []


async def test_64_hex_psk_accepted_and_unknown_iface(double: WifiDouble, wifi_bus: str) -> None:
    async with running_service(wifi_bus) as (ctx, _link):
        with pytest.raises(NotFound):
            await call(ctx, "wifi/connect", {"ssid": "home", "interface": "wlan9"})
        ref = await call(ctx, "wifi/connect", {"ssid": "nothere", "password": "ab" * 32})
        ev = await wait_job(ctx, ref["job_id"], 20)
        assert ev.error is not None and ev.error.code == "not_found"
