"""The network service's actions: the only list of what it can do."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from common import __version__
from common.dispatch import Action, ActionTable, NoArgs
from common.errors import Conflict, Failed, InvalidRequest, NotFound, TetherError
from common.health import HealthReport
from common.jobs import JOB_ACTIONS, JobHandle, JobManager
from common.messages import JobRef, ServiceState
from common.worker import Worker
from services.network import validate
from services.network.backend import (
    DEVICE_TYPES,
    NetworkManager,
    ethernet_settings,
    ipv4_section,
    to_connection,
    wifi_settings,
)
from services.network.guard import Guard, LinkWatcher
from services.network.models import (
    Activation,
    ConfirmArgs,
    Confirmed,
    Connection,
    ConnectionRef,
    Deleted,
    Device,
    DeviceArgs,
    EthernetConfigureArgs,
    Hostname,
    HostnameArgs,
    NetworkState,
    ScanArgs,
    ScanResult,
    WifiConnectArgs,
)

WIRED_TYPES = ("ethernet", "veth")


@dataclass
class NetworkContext:
    worker: Worker[NetworkContext]
    nm: NetworkManager
    guard: Guard
    link: LinkWatcher
    #: None: the devices of the primary connection; else exactly these.
    protected: list[str] | None
    activation_timeout: float
    scan_timeout: float = 15.0
    #: Small background tasks (reconciling a change left over by a restart).
    tasks: set[asyncio.Future[None]] = field(default_factory=set)

    @property
    def jobs(self) -> JobManager:
        return self.worker.jobs

    async def protected_interfaces(self) -> list[str]:
        if self.protected is not None:
            return list(self.protected)
        return await self.nm.primary_interfaces()


def make_context(worker: Worker[NetworkContext]) -> NetworkContext:
    s = worker.settings
    n = s.network
    settle = n.link_settle if n.link_settle is not None else 2 * s.mqtt.keepalive + 5
    nm = NetworkManager(n.dbus_address)
    link = LinkWatcher(stale_after=3 * s.health.interval + 1)
    guard = Guard(nm, link, s.state_dir, n.rollback_timeout, settle)
    return NetworkContext(worker, nm, guard, link, n.protected_interfaces, n.activation_timeout)


async def keep_connected(ctx: NetworkContext) -> None:
    """Owns the D-Bus connection; reconnects by itself (background task)."""

    def presence() -> None:
        if ctx.worker.health is not None:
            ctx.worker.health.publish_now()
        if ctx.nm.available:
            _spawn(ctx, ctx.guard.reconcile())

    if "network" not in ctx.worker.settings.services:
        return  # not routed to: stay idle instead of knocking on a bus nobody asked for
    ctx.nm.on_presence = presence
    try:
        await ctx.nm.run()
    finally:
        for t in list(ctx.tasks):
            t.cancel()
        ctx.nm.close()


def _spawn(ctx: NetworkContext, coro: Awaitable[None]) -> None:
    t = asyncio.ensure_future(coro)
    ctx.tasks.add(t)
    t.add_done_callback(ctx.tasks.discard)


async def watch_link(ctx: NetworkContext) -> None:
    """Follows the gateway's heartbeat (its MQTT link state) for the checkpoint guard."""
    await ctx.link.run(ctx.worker.zctx, ctx.worker.settings.runtime_dir)


def report(ctx: NetworkContext) -> HealthReport:
    if ctx.nm.available:
        return HealthReport(facts={"networkmanager": "running"})
    return HealthReport(
        ServiceState.DEGRADED,
        "NetworkManager is not reachable on D-Bus",
        {"networkmanager": "not running"},
    )


# --- reading -------------------------------------------------------------------------------


async def state(ctx: NetworkContext, _args: NoArgs) -> NetworkState:
    """NetworkManager's state and connectivity, the hostname, and the last guarded change."""
    st = await ctx.nm.state()
    st.protected_interfaces = await ctx.protected_interfaces()
    st.last_change = ctx.guard.last
    return st


async def devices(ctx: NetworkContext, args: DeviceArgs) -> list[Device]:
    """Network devices with type, state, MAC, driver, connection, addresses, gateway and DNS."""
    if args.interface is not None:
        validate.iface(args.interface)
        path, props = await ctx.nm.device_by_iface(args.interface)
        return [await ctx.nm.device(path, props)]
    return await ctx.nm.devices()


async def connections(ctx: NetworkContext, _args: NoArgs) -> list[Connection]:
    """Saved connection profiles with their IP settings; secrets are never returned."""
    return await ctx.nm.connections()


async def wifi_scan(ctx: NetworkContext, args: ScanArgs) -> ScanResult:
    """Scan for Wi-Fi networks: strongest first, one entry per SSID (its best BSSID)."""
    path, iface = await _wifi_device(ctx, args.interface)
    if args.rescan:
        await ctx.nm.request_scan(path, ctx.scan_timeout)
    best: dict[str, Any] = {}
    for ap in await ctx.nm.access_points(path):
        key = ap.ssid_hex or ap.ssid
        cur = best.get(key)
        if cur is None or ap.signal > cur.signal:
            if cur is not None:
                ap.others = cur.others + 1
            best[key] = ap
        else:
            cur.others += 1
    aps = sorted(best.values(), key=lambda a: (-a.signal, a.ssid))
    return ScanResult(iface, aps)


async def _wifi_device(ctx: NetworkContext, name: str | None) -> tuple[str, str]:
    if name is not None:
        validate.iface(name)
        path, p = await ctx.nm.device_by_iface(name)
        if int(p.get("DeviceType", 0)) != 2:
            raise InvalidRequest(
                f"{name} is not a Wi-Fi device", {"field": "interface", "value": name}
            )
        return path, name
    for path in await ctx.nm.device_paths():
        with contextlib.suppress(NotFound):
            p = await ctx.nm.props(path, "org.freedesktop.NetworkManager.Device")
            if int(p.get("DeviceType", 0)) == 2:
                return path, str(p["Interface"])
    raise NotFound("this device has no Wi-Fi interface", {"field": "interface"})


# --- changing ------------------------------------------------------------------------------


async def _change(
    ctx: NetworkContext,
    action: str,
    interfaces: list[str],
    dev_paths: list[str],
    apply: Callable[[JobHandle], Awaitable[Activation | Deleted]],
) -> JobRef:
    """Run a change as a job; under a checkpoint when it touches a protected interface."""
    protected = set(await ctx.protected_interfaces())
    guarded = sorted(set(interfaces) & protected)

    async def work(h: JobHandle) -> Activation | Deleted:
        if not guarded:
            return await apply(h)
        result, outcome = await ctx.guard.run(h, interfaces, dev_paths, lambda: apply(h))
        if isinstance(result, Activation):
            result.checkpoint = outcome
        return result

    return await ctx.jobs.start(action, work, serial=True)


async def _activate(ctx: NetworkContext, h: JobHandle, conn: str, dev: str) -> Activation:
    h.line("activating")
    await ctx.nm.activate(conn, dev, ctx.activation_timeout)
    s = await ctx.nm.settings_of(conn)
    c = s.get("connection", {})
    d = await ctx.nm.device(dev)
    h.line(f"{d.interface}: activated, {', '.join(f'{a.address}/{a.prefix}' for a in d.ipv4)}")
    return Activation(str(c.get("id")), str(c.get("uuid")), d.interface, d.state, d.ipv4)


async def ethernet_configure(ctx: NetworkContext, args: EthernetConfigureArgs) -> JobRef:
    """Configure a wired interface for DHCP or a static address, and activate it."""
    iface = validate.iface(args.interface)
    name = validate.profile_name(args.name) if args.name is not None else f"tether-{iface}"
    net = gw = None
    if args.method == "static":
        if args.address is None:
            raise InvalidRequest("a static configuration needs 'address'", {"field": "address"})
        net = validate.ipv4_interface(args.address, args.prefix)
        gw = validate.ipv4_gateway(args.gateway, net) if args.gateway is not None else None
    elif args.address is not None or args.gateway is not None or args.prefix is not None:
        raise InvalidRequest(
            "address, prefix and gateway are for method 'static'; DHCP assigns them",
            {"field": "method", "value": args.method},
        )
    dns = validate.dns_servers(args.dns)
    search = validate.dns_search(args.dns_search)
    dev, props = await ctx.nm.device_by_iface(iface)
    kind = DEVICE_TYPES.get(int(props.get("DeviceType", 0)), "unknown")
    if kind not in WIRED_TYPES:
        raise InvalidRequest(
            f"{iface} is a {kind} device, not Ethernet", {"field": "interface", "value": iface}
        )
    ipv4 = ipv4_section(net, gw, dns, search)

    async def apply(h: JobHandle) -> Activation:
        existing = await ctx.nm.find_by(
            lambda s: (
                s.get("connection", {}).get("id") == name
                and s.get("connection", {}).get("type") == "802-3-ethernet"
            )
        )
        if existing is not None:
            old = await ctx.nm.settings_of(existing)
            uuid = str(old["connection"]["uuid"])
            await ctx.nm.update_connection(existing, ethernet_settings(name, iface, ipv4, uuid))
            h.line(f"updated profile {name!r}")
            conn = existing
        else:
            conn = await ctx.nm.add_connection(ethernet_settings(name, iface, ipv4))
            h.line(f"created profile {name!r}")
        return await _activate(ctx, h, conn, dev)

    return await _change(ctx, "ethernet/configure", [iface], [dev], apply)


async def wifi_connect(ctx: NetworkContext, args: WifiConnectArgs) -> JobRef:
    """Join a Wi-Fi network (creates or updates its profile); done once activated."""
    ssid = validate.ssid(args.ssid)
    password = validate.wpa_password(args.password) if args.password is not None else None
    net = gw = None
    dns: list[Any] = []
    search: list[str] = []
    if args.ipv4 is not None:
        net = validate.ipv4_interface(args.ipv4.address, args.ipv4.prefix, "ipv4.address")
        gw = validate.ipv4_gateway(args.ipv4.gateway, net) if args.ipv4.gateway else None
        dns = validate.dns_servers(args.ipv4.dns)
        search = validate.dns_search(args.ipv4.dns_search)
    dev, iface = await _wifi_device(ctx, args.interface)
    ipv4 = ipv4_section(net, gw, dns, search)

    async def apply(h: JobHandle) -> Activation:
        key_mgmt = "wpa-psk"
        for ap in await ctx.nm.access_points(dev):
            if ap.ssid.encode() != ssid:
                continue
            if ap.security in ("WEP", "enterprise"):
                raise InvalidRequest(
                    f"{args.ssid!r} uses {ap.security} security, which wifi/connect does not "
                    "support (WPA/WPA2/WPA3 personal and open networks only)",
                    {"field": "ssid", "value": args.ssid, "security": ap.security},
                )
            if ap.security == "open" and password is not None:
                raise InvalidRequest(
                    f"{args.ssid!r} is an open network; omit the password",
                    {"field": "password"},
                )
            if ap.security == "WPA3":
                key_mgmt = "sae"

        def same_ssid(s: dict[str, dict[str, Any]]) -> bool:
            w = s.get("802-11-wireless")
            return w is not None and bytes(w.get("ssid", b"")) == ssid

        existing = await ctx.nm.find_by(same_ssid)
        created = existing is None
        name = args.ssid
        if existing is not None:
            old = await ctx.nm.settings_of(existing)
            uuid = str(old["connection"]["uuid"])
            name = str(old["connection"]["id"])
            settings = wifi_settings(name, iface, ssid, password, key_mgmt, args.hidden, ipv4, uuid)
            await ctx.nm.update_connection(existing, settings)
            conn = existing
            h.line(f"updated profile {name!r}")
        else:
            settings = wifi_settings(name, iface, ssid, password, key_mgmt, args.hidden, ipv4)
            conn = await ctx.nm.add_connection(settings)
            h.line(f"created profile {name!r}")
        try:
            return await _activate(ctx, h, conn, dev)
        except TetherError:
            if created:  # don't leave a profile that keeps retrying a wrong password
                with contextlib.suppress(TetherError):
                    await ctx.nm.delete_connection(conn)
            raise

    return await _change(ctx, "wifi/connect", [iface], [dev], apply)


async def _profile_device(
    ctx: NetworkContext, conn: str, s: dict[str, dict[str, Any]], iface: str | None
) -> tuple[str, str]:
    name = iface or s.get("connection", {}).get("interface-name")
    if not name:
        raise InvalidRequest(
            f"connection {conn!r} is not bound to an interface; give 'interface'",
            {"field": "interface"},
        )
    path, _ = await ctx.nm.device_by_iface(validate.iface(str(name)))
    return path, str(name)


async def _active_devices(ctx: NetworkContext, uuid: str) -> tuple[list[str], list[str]]:
    names, paths = [], []
    for d_path in await ctx.nm.device_paths():
        with contextlib.suppress(NotFound):
            d = await ctx.nm.device(d_path)
            if d.connection_uuid == uuid:
                names.append(d.interface)
                paths.append(d_path)
    return names, paths


async def connections_up(ctx: NetworkContext, args: ConnectionRef) -> JobRef:
    """Activate a saved connection (on its own or the given interface)."""
    ref = validate.connection_ref(args.connection)
    path, s = await ctx.nm.find_connection(ref)
    dev, iface = await _profile_device(ctx, ref, s, args.interface)
    return await _change(
        ctx, "connections/up", [iface], [dev], lambda h: _activate(ctx, h, path, dev)
    )


async def connections_down(ctx: NetworkContext, args: ConnectionRef) -> JobRef:
    """Deactivate an active connection."""
    ref = validate.connection_ref(args.connection)
    _path, s = await ctx.nm.find_connection(ref)
    c = to_connection(s, await ctx.nm.active_uuids())
    if not c.active:
        raise Conflict(f"connection {c.id!r} is not active", {"field": "connection", "value": ref})
    names, paths = await _active_devices(ctx, c.uuid)

    async def apply(h: JobHandle) -> Activation:
        await ctx.nm.deactivate(c.uuid, ctx.activation_timeout)
        h.line(f"deactivated {c.id!r}")
        return Activation(c.id, c.uuid, names[0] if names else None, "deactivated")

    return await _change(ctx, "connections/down", names, paths, apply)


async def connections_delete(ctx: NetworkContext, args: ConnectionRef) -> JobRef:
    """Delete a saved connection (deactivating it first if active)."""
    ref = validate.connection_ref(args.connection)
    path, s = await ctx.nm.find_connection(ref)
    c = to_connection(s, await ctx.nm.active_uuids())
    names, paths = await _active_devices(ctx, c.uuid)

    async def apply(h: JobHandle) -> Deleted:
        await ctx.nm.delete_connection(path)
        h.line(f"deleted {c.id!r}")
        return Deleted(c.uuid, c.id)

    return await _change(ctx, "connections/delete", names, paths, apply)


async def hostname_set(ctx: NetworkContext, args: HostnameArgs) -> Hostname:
    """Set the device's (static) hostname through NetworkManager."""
    name = validate.hostname(args.hostname)
    got = await ctx.nm.save_hostname(name)
    if got != name:
        raise Failed(
            f"NetworkManager saved the hostname but reports {got!r}; check its hostname-mode",
            {"requested": name, "reported": got},
        )
    return Hostname(got)


async def confirm(ctx: NetworkContext, args: ConfirmArgs) -> Confirmed:
    """Commit a pending protected change now (this command arriving proves the link works)."""
    return Confirmed(ctx.guard.confirm(args.job_id), time.time())


ACTIONS: ActionTable[NetworkContext] = ActionTable(
    "network",
    __version__,
    [
        Action("state", state, NoArgs, NetworkState),
        Action("devices", devices, DeviceArgs, list[Device]),
        Action("connections", connections, NoArgs, list[Connection]),
        Action("wifi/scan", wifi_scan, ScanArgs, ScanResult, timeout=30.0),
        Action("wifi/connect", wifi_connect, WifiConnectArgs, JobRef, mutating=True, job=True),
        Action(
            "ethernet/configure",
            ethernet_configure,
            EthernetConfigureArgs,
            JobRef,
            mutating=True,
            job=True,
        ),
        Action("connections/up", connections_up, ConnectionRef, JobRef, mutating=True, job=True),
        Action(
            "connections/down", connections_down, ConnectionRef, JobRef, mutating=True, job=True
        ),
        Action(
            "connections/delete",
            connections_delete,
            ConnectionRef,
            JobRef,
            mutating=True,
            job=True,
        ),
        Action("hostname/set", hostname_set, HostnameArgs, Hostname, mutating=True),
        Action("confirm", confirm, ConfirmArgs, Confirmed, mutating=True),
        *JOB_ACTIONS,
    ],
)
