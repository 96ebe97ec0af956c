"""The network service against a real NetworkManager in its own network namespace.

See tests/network_fixtures.py for the setup: eth0 and eth1 are veths whose peers sit in a
second namespace with dnsmasq serving DHCP (10.77.0.0/24 on eth0, 10.78.0.0/24 on eth1).
eth0 plays the interface that carries the MQTT link (``protected_interfaces = ["eth0"]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
from typing import Any

import pytest

from common.errors import InvalidRequest, NotFound, ServiceUnavailable
from common.messages import JobState
from tests.network_fixtures import (
    NmEnv,
    call,
    nm_env,
    running_service,
    short_dir,
    wait_job,
)

__all__ = ["nm_env"]

pytestmark = [pytest.mark.system]

SERVICE = {
    "protected_interfaces": ["eth0"],
    "rollback_timeout": 10,
    "link_settle": 1.0,
    "activation_timeout": 30.0,
}


def v4(dev: dict[str, Any]) -> list[str]:
    return [f"{a['address']}/{a['prefix']}" for a in dev["ipv4"]]


async def device(ctx: Any, name: str) -> dict[str, Any]:
    devs = await call(ctx, "devices", {"interface": name})
    assert len(devs) == 1
    return devs[0]  # type: ignore[no-any-return]


async def run_job(ctx: Any, action: str, args: dict[str, Any], timeout: float = 60) -> Any:
    ref = await call(ctx, action, args)
    assert ref["state"] in ("queued", "running")
    return await wait_job(ctx, ref["job_id"], timeout)


async def test_state_devices_connections(nm_env: NmEnv) -> None:
    async with running_service(nm_env.address, **SERVICE) as (ctx, _link):
        st = await call(ctx, "state")
        assert st["hostname"] and st["version"].startswith("1.")
        assert st["state"] in (
            "disconnected",
            "connected_local",
            "connected_site",
            "connected_global",
            "connecting",
        )
        assert st["protected_interfaces"] == ["eth0"]
        devs = {d["interface"]: d for d in await call(ctx, "devices")}
        assert {"eth0", "eth1", "lo"} <= set(devs)
        assert devs["eth0"]["type"] == "veth" and devs["eth0"]["managed"] is True
        assert devs["eth0"]["hw_address"] and ":" in devs["eth0"]["hw_address"]
        assert devs["lo"]["type"] == "loopback"
        assert isinstance(await call(ctx, "connections"), list)
        with pytest.raises(NotFound):
            await call(ctx, "devices", {"interface": "nosuch0"})
        with pytest.raises(InvalidRequest):
            await call(ctx, "devices", {"interface": "bad/name"})


async def test_dhcp_then_static_on_unprotected_interface(nm_env: NmEnv) -> None:
    async with running_service(nm_env.address, **SERVICE) as (ctx, _link):
        ev = await run_job(ctx, "ethernet/configure", {"interface": "eth1", "method": "dhcp"})
        assert ev.state is JobState.SUCCEEDED, ev
        assert ev.result.checkpoint is None  # eth1 is not protected: no checkpoint
        d = await device(ctx, "eth1")
        assert d["state"] == "activated" and d["connection"] == "tether-eth1"
        [addr] = v4(d)
        assert ipaddress.ip_interface(addr) in ipaddress.ip_network("10.78.0.0/24") or (
            ipaddress.ip_interface(addr).network == ipaddress.ip_network("10.78.0.0/24")
        )
        assert 50 <= int(addr.split("/")[0].split(".")[-1]) <= 99  # from dnsmasq's range
        # the kernel in the namespace agrees
        assert addr in nm_env.nm_in_netns("ip", "-4", "addr", "show", "dev", "eth1")

        ev = await run_job(
            ctx,
            "ethernet/configure",
            {
                "interface": "eth1",
                "method": "static",
                "address": "10.78.0.7/24",
                "gateway": "10.78.0.1",
                "dns": ["10.78.0.1", "192.0.2.53"],
                "dns_search": ["example.test"],
            },
        )
        assert ev.state is JobState.SUCCEEDED, ev
        d = await device(ctx, "eth1")
        assert v4(d) == ["10.78.0.7/24"] and d["gateway4"] == "10.78.0.1"
        assert d["dns"] == ["10.78.0.1", "192.0.2.53"]
        conns = {c["id"]: c for c in await call(ctx, "connections")}
        c = conns["tether-eth1"]  # updated in place, not duplicated
        assert [x["id"] for x in await call(ctx, "connections")].count("tether-eth1") == 1
        assert c["ipv4"]["method"] == "manual" and c["active"] is True
        assert c["ipv4"]["addresses"] == [{"address": "10.78.0.7", "prefix": 24}]
        assert c["ipv4"]["gateway"] == "10.78.0.1"
        assert c["ipv4"]["dns_search"] == ["example.test"]
        assert "10.78.0.7/24" in nm_env.nm_in_netns("ip", "-4", "addr", "show", "dev", "eth1")


async def test_up_down_delete(nm_env: NmEnv) -> None:
    async with running_service(nm_env.address, **SERVICE) as (ctx, _link):
        ev = await run_job(
            ctx,
            "ethernet/configure",
            {"interface": "eth1", "method": "static", "address": "10.78.0.9/24", "name": "updown"},
        )
        assert ev.state is JobState.SUCCEEDED, ev
        uuid = ev.result.uuid

        ev = await run_job(ctx, "connections/down", {"connection": "updown"})
        assert ev.state is JobState.SUCCEEDED, ev
        # NetworkManager may autoconnect another eth1 profile from an earlier test; "updown"
        # itself must be inactive.
        assert (await device(ctx, "eth1"))["connection"] != "updown"
        assert not {c["id"]: c for c in await call(ctx, "connections")}["updown"]["active"]
        with pytest.raises(Exception, match="not active"):
            await call(ctx, "connections/down", {"connection": uuid})

        ev = await run_job(ctx, "connections/up", {"connection": uuid})
        assert ev.state is JobState.SUCCEEDED, ev
        assert (await device(ctx, "eth1"))["connection"] == "updown"

        ev = await run_job(ctx, "connections/delete", {"connection": "updown"})
        assert ev.state is JobState.SUCCEEDED, ev
        assert ev.result.uuid == uuid
        assert uuid not in {c["uuid"] for c in await call(ctx, "connections")}
        with pytest.raises(NotFound):
            await call(ctx, "connections/up", {"connection": uuid})
        with pytest.raises(NotFound):
            await call(ctx, "connections/delete", {"connection": "updown"})


async def test_hostname(nm_env: NmEnv) -> None:
    import socket

    host_before = socket.gethostname()
    async with running_service(nm_env.address, **SERVICE) as (ctx, _link):
        r = await call(ctx, "hostname/set", {"hostname": "gw-17.example"})
        assert r == {"hostname": "gw-17.example"}
        assert (await call(ctx, "state"))["hostname"] == "gw-17.example"
        for bad in ("-bad", "a" * 64, "under_score", "", "dot..dot"):
            with pytest.raises(InvalidRequest):
                await call(ctx, "hostname/set", {"hostname": bad})
    assert socket.gethostname() == host_before  # the machine's own hostname is untouched


async def test_protected_change_commits_when_link_stays_up(nm_env: NmEnv) -> None:
    async with running_service(nm_env.address, **SERVICE) as (ctx, link):
        link.set("up")
        ev = await run_job(ctx, "ethernet/configure", {"interface": "eth0", "method": "dhcp"})
        assert ev.state is JobState.SUCCEEDED, ev
        assert ev.result.checkpoint == "committed"
        assert await ctx.nm.checkpoints() == []
        st = await call(ctx, "state")
        assert st["last_change"]["outcome"] == "committed"
        assert st["last_change"]["job_id"] == ev.job_id
        [addr] = v4(await device(ctx, "eth0"))
        assert ipaddress.ip_interface(addr).network == ipaddress.ip_network("10.77.0.0/24")


async def test_protected_change_rolls_back_when_link_stays_down(nm_env: NmEnv) -> None:
    async with running_service(nm_env.address, **SERVICE) as (ctx, link):
        link.set("up")
        ev = await run_job(ctx, "ethernet/configure", {"interface": "eth0", "method": "dhcp"})
        assert ev.state is JobState.SUCCEEDED, ev
        before = v4(await device(ctx, "eth0"))

        link.set("down")  # the change "cut the device off": the gateway never gets its link
        ev = await run_job(
            ctx,
            "ethernet/configure",
            {"interface": "eth0", "method": "static", "address": "10.77.0.200/24"},
            timeout=40,
        )
        assert ev.state is JobState.FAILED, ev
        assert ev.error is not None and ev.error.details["outcome"] == "rolled_back"
        # NetworkManager restored the previous (DHCP) configuration by itself
        assert await ctx.nm.checkpoints() == []
        # ... and re-activates it (DHCP may take a moment)
        async with asyncio.timeout(20):
            while (d := await device(ctx, "eth0"))["state"] != "activated":
                await asyncio.sleep(0.1)
        assert v4(d) == before
        assert "10.77.0.200" not in nm_env.nm_in_netns("ip", "-4", "addr", "show", "dev", "eth0")
        conns = {c["id"]: c for c in await call(ctx, "connections")}
        assert conns["tether-eth0"]["ipv4"]["method"] == "auto"
        st = await call(ctx, "state")
        assert st["last_change"]["outcome"] == "rolled_back"


async def test_operator_confirm_commits_at_once(nm_env: NmEnv) -> None:
    settings = {**SERVICE, "link_settle": 5.0}
    async with running_service(nm_env.address, **settings) as (ctx, link):
        link.set("down")
        with pytest.raises(NotFound):
            await call(ctx, "confirm", {})
        ref = await call(ctx, "ethernet/configure", {"interface": "eth0", "method": "dhcp"})
        async with asyncio.timeout(30):
            while ref["job_id"] not in ctx.guard.pending:
                await asyncio.sleep(0.05)
            # wait until the change is applied (the job waits for the link then)
            while (ctx.jobs.get(ref["job_id"]).progress or 0) < 60:
                await asyncio.sleep(0.05)
        r = await call(ctx, "confirm", {"job_id": ref["job_id"]})
        assert r["job_id"] == ref["job_id"]
        ev = await wait_job(ctx, ref["job_id"], 10)
        assert ev.state is JobState.SUCCEEDED and ev.result.checkpoint == "committed"
        assert ctx.guard.last.message == "committed (confirmed by the operator)"


async def test_change_pending_across_a_worker_restart_is_reported(
    nm_env: NmEnv,
) -> None:
    root = short_dir("tnr-")
    try:
        async with running_service(nm_env.address, root, **SERVICE) as (ctx, link):
            link.set("up")
            ev = await run_job(ctx, "ethernet/configure", {"interface": "eth0", "method": "dhcp"})
            assert ev.state is JobState.SUCCEEDED, ev
            before = v4(await device(ctx, "eth0"))
            link.set("down")
            ref = await call(
                ctx,
                "ethernet/configure",
                {"interface": "eth0", "method": "static", "address": "10.77.0.201/24"},
            )
            async with asyncio.timeout(30):
                while (ctx.jobs.get(ref["job_id"]).progress or 0) < 60:
                    await asyncio.sleep(0.05)
        # the worker "crashed" while the change waited for the link; a new one starts
        async with running_service(nm_env.address, root, **SERVICE) as (ctx, _link):
            st = await call(ctx, "state")
            assert st["last_change"]["job_id"] == ref["job_id"]
            assert st["last_change"]["outcome"] in ("pending", "rolled_back")
            async with asyncio.timeout(30):
                while (await call(ctx, "state"))["last_change"]["outcome"] == "pending":
                    await asyncio.sleep(0.2)
            st = await call(ctx, "state")
            assert st["last_change"]["outcome"] == "rolled_back", st
            assert await ctx.nm.checkpoints() == []
            async with asyncio.timeout(20):
                while v4(await device(ctx, "eth0")) != before:
                    await asyncio.sleep(0.2)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_networkmanager_stopped_and_restarted(nm_env: NmEnv) -> None:
    from services.network.actions import report

    async with running_service(nm_env.address, **SERVICE) as (ctx, _link):
        assert (await call(ctx, "state"))["version"]
        nm_env.stop_nm()
        try:
            async with asyncio.timeout(10):
                while ctx.nm.available:
                    await asyncio.sleep(0.05)
            with pytest.raises(ServiceUnavailable, match="NetworkManager"):
                await call(ctx, "state")
            with pytest.raises(ServiceUnavailable, match="NetworkManager"):
                await call(ctx, "ethernet/configure", {"interface": "eth1"})
            rep = report(ctx)
            assert rep.state == "degraded" and rep.facts["networkmanager"] == "not running"
        finally:
            nm_env.start_nm()
        async with asyncio.timeout(30):
            while True:  # noticed by NameOwnerChanged; then answers once NM has started up
                with contextlib.suppress(ServiceUnavailable):
                    if ctx.nm.available and (await call(ctx, "state"))["version"]:
                        break
                await asyncio.sleep(0.05)
        assert report(ctx).facts["networkmanager"] == "running"
        assert {d["interface"] for d in await call(ctx, "devices")} >= {"eth0", "eth1"}


@pytest.mark.parametrize(
    ("action", "args", "field"),
    [
        ("ethernet/configure", {"interface": "eth0;rm"}, "interface"),
        ("ethernet/configure", {"interface": "a" * 16}, "interface"),
        ("ethernet/configure", {"interface": "eth1", "method": "static"}, "address"),
        (
            "ethernet/configure",
            {"interface": "eth1", "method": "static", "address": "10.0.0.1"},
            "address",
        ),
        (
            "ethernet/configure",
            {"interface": "eth1", "method": "static", "address": "300.1.1.1/24"},
            "address",
        ),
        (
            "ethernet/configure",
            {"interface": "eth1", "method": "static", "address": "10.0.0.0/24"},
            "address",
        ),
        (
            "ethernet/configure",
            {"interface": "eth1", "method": "static", "address": "10.0.0.5/33"},
            "address",
        ),
        (
            "ethernet/configure",
            {
                "interface": "eth1",
                "method": "static",
                "address": "10.0.0.5/24",
                "gateway": "10.0.1.1",
            },
            "gateway",
        ),
        (
            "ethernet/configure",
            {"interface": "eth1", "method": "dhcp", "address": "10.0.0.5/24"},
            "method",
        ),
        ("ethernet/configure", {"interface": "eth1", "dns": ["nope"]}, "dns"),
        ("ethernet/configure", {"interface": "eth1", "dns_search": ["-x"]}, "dns_search"),
        ("ethernet/configure", {"interface": "eth1", "method": "bootp"}, "method"),
        ("connections/up", {"connection": ""}, "connection"),
        ("wifi/scan", {"interface": "eth0"}, "interface"),
    ],
)
async def test_bad_input_is_invalid_request(
    nm_env: NmEnv, action: str, args: dict[str, Any], field: str
) -> None:
    async with running_service(nm_env.address, **SERVICE) as (ctx, _link):
        with pytest.raises(InvalidRequest) as exc:
            await call(ctx, action, args)
        assert exc.value.details["field"] == field
