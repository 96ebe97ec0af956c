"""The only module that speaks D-Bus (dbus-fast): NetworkManager's API, translated into our
types and errors.

One :class:`NetworkManager` owns one bus connection. It watches ``NameOwnerChanged`` so it knows
at once when NetworkManager leaves or returns, reconnects to the bus by itself when the bus
goes away, and hands out *taps* — queues that receive every NetworkManager signal — so callers
learn from signals (device and active-connection ``StateChanged``, the manager's
``Checkpoints`` property) when an activation finished or a checkpoint was rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from common.errors import (
    AuthFailed,
    Conflict,
    Failed,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    TetherError,
    Timeout,
)
from services.network.models import (
    AccessPoint,
    Connection,
    Device,
    IpAddress,
    Ipv4Settings,
    NetworkState,
)

log = logging.getLogger("tether.network.backend")

NM = "org.freedesktop.NetworkManager"
NM_PATH = "/org/freedesktop/NetworkManager"
SETTINGS_PATH = "/org/freedesktop/NetworkManager/Settings"
I_NM = NM
I_SETTINGS = f"{NM}.Settings"
I_CONN = f"{NM}.Settings.Connection"
I_DEVICE = f"{NM}.Device"
I_WIRELESS = f"{NM}.Device.Wireless"
I_AP = f"{NM}.AccessPoint"
I_ACTIVE = f"{NM}.Connection.Active"
I_IP4 = f"{NM}.IP4Config"
I_IP6 = f"{NM}.IP6Config"
I_PROPS = "org.freedesktop.DBus.Properties"
DBUS = "org.freedesktop.DBus"

NM_STATES = {
    0: "unknown",
    10: "asleep",
    20: "disconnected",
    30: "disconnecting",
    40: "connecting",
    50: "connected_local",
    60: "connected_site",
    70: "connected_global",
}
CONNECTIVITY = {0: "unknown", 1: "none", 2: "portal", 3: "limited", 4: "full"}
DEVICE_STATES = {
    0: "unknown",
    10: "unmanaged",
    20: "unavailable",
    30: "disconnected",
    40: "prepare",
    50: "config",
    60: "need_auth",
    70: "ip_config",
    80: "ip_check",
    90: "secondaries",
    100: "activated",
    110: "deactivating",
    120: "failed",
}
DEVICE_TYPES = {
    1: "ethernet",
    2: "wifi",
    5: "bluetooth",
    8: "modem",
    10: "bond",
    11: "vlan",
    13: "bridge",
    14: "generic",
    15: "team",
    16: "tun",
    17: "ip_tunnel",
    18: "macvlan",
    19: "vxlan",
    20: "veth",
    22: "dummy",
    23: "ppp",
    29: "wireguard",
    30: "wifi_p2p",
    31: "vrf",
    32: "loopback",
}
ACTIVE_ACTIVATED = 2
ACTIVE_DEACTIVATED = 4
DEV_ACTIVATED = 100
DEV_FAILED = 120
# Device state reasons (NMDeviceStateReason) that mean "the credentials were rejected".
AUTH_REASONS = {
    7: "no_secrets",
    8: "supplicant_disconnect",
    9: "supplicant_config_failed",
    10: "supplicant_failed",
    11: "supplicant_timeout",
}
DEVICE_REASONS = {
    0: "none",
    1: "unknown",
    4: "config_failed",
    5: "ip_config_unavailable",
    6: "ip_config_expired",
    15: "dhcp_start_failed",
    16: "dhcp_error",
    17: "dhcp_failed",
    36: "removed",
    38: "connection_removed",
    39: "user_requested",
    40: "carrier",
    50: "dependency_failed",
    53: "ssid_not_found",
    60: "new_activation",
    64: "ip_address_duplicate",
    **AUTH_REASONS,
}
REASON_SSID_NOT_FOUND = 53
# NMActiveConnectionStateReason values that mean a credentials problem.
ACTIVE_AUTH_REASONS = {9, 10}
# NM_CHECKPOINT_CREATE_FLAG_DELETE_NEW_CONNECTIONS (a rollback removes profiles made meanwhile)
CHECKPOINT_FLAGS = 0x02
# AccessPoint flags (NM80211ApFlags / NM80211ApSecurityFlags).
AP_PRIVACY = 0x1
SEC_KEY_MGMT_PSK = 0x100
SEC_KEY_MGMT_8021X = 0x200
SEC_KEY_MGMT_SAE = 0x400
SEC_KEY_MGMT_EAP_SUITE_B = 0x2000


def unwrap(v: Any) -> Any:
    """Variants (nested anywhere) to plain Python values."""
    if isinstance(v, Variant):
        return unwrap(v.value)
    if isinstance(v, dict):
        return {k: unwrap(x) for k, x in v.items()}
    if isinstance(v, list):
        return [unwrap(x) for x in v]
    return v


@dataclass(frozen=True, slots=True)
class Signal:
    path: str
    interface: str
    member: str
    body: list[Any]


#: Put in every tap when NetworkManager leaves the bus.
GONE = Signal("", "", "NameLost", [])


def _ip4_to_u32(addr: ipaddress.IPv4Address) -> int:
    # NetworkManager's "au" DNS lists hold addresses in network byte order.
    return int(struct.unpack("=I", addr.packed)[0])


def _u32_to_ip4(value: int) -> str:
    return socket.inet_ntoa(struct.pack("=I", value))


def _channel(freq: int) -> int:
    if 2412 <= freq <= 2472:
        return (freq - 2407) // 5
    if freq == 2484:
        return 14
    if 5000 <= freq <= 5900:
        return (freq - 5000) // 5
    if 5955 <= freq <= 7115:
        return (freq - 5950) // 5
    return 0


def ap_security(flags: int, wpa: int, rsn: int) -> str:
    if (wpa | rsn) & (SEC_KEY_MGMT_8021X | SEC_KEY_MGMT_EAP_SUITE_B):
        return "enterprise"
    if rsn & SEC_KEY_MGMT_SAE:
        return "WPA3"
    if rsn & SEC_KEY_MGMT_PSK:
        return "WPA2"
    if wpa & SEC_KEY_MGMT_PSK:
        return "WPA"
    if flags & AP_PRIVACY:
        return "WEP"
    return "open"


def ssid_text(raw: bytes) -> tuple[str, str | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), raw.hex()


class NetworkManager:
    """A client of NetworkManager on one D-Bus; see the module docstring."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._bus: MessageBus | None = None
        self._nm_owner: str | None = None
        self._taps: set[asyncio.Queue[Signal]] = set()
        #: Called (no arguments) whenever NetworkManager appears or disappears.
        self.on_presence: Callable[[], None] = lambda: None

    # --- connection management -----------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._bus is not None and self._bus.connected and self._nm_owner is not None

    def _where(self) -> str:
        return self.address or "the system bus"

    async def connect(self) -> None:
        """Connect to the bus and learn whether NetworkManager is there (once)."""
        try:
            if self.address:
                bus = MessageBus(bus_address=self.address)
            else:
                bus = MessageBus(bus_type=BusType.SYSTEM)
            await bus.connect()
        except (OSError, DBusError, EOFError, ValueError) as err:
            raise ServiceUnavailable(
                f"cannot reach D-Bus at {self._where()}: {err}",
                {"backend": "dbus", "address": self._where()},
            ) from err
        bus.add_message_handler(self._on_message)
        self._bus = bus
        try:
            await self._raw(
                DBUS,
                "/org/freedesktop/DBus",
                DBUS,
                "AddMatch",
                "s",
                [f"type='signal',sender='{DBUS}',member='NameOwnerChanged',arg0='{NM}'"],
            )
            await self._raw(
                DBUS,
                "/org/freedesktop/DBus",
                DBUS,
                "AddMatch",
                "s",
                [f"type='signal',sender='{NM}'"],
            )
            owner = await self._raw(DBUS, "/org/freedesktop/DBus", DBUS, "NameHasOwner", "s", [NM])
            if owner[0]:
                got = await self._raw(
                    DBUS, "/org/freedesktop/DBus", DBUS, "GetNameOwner", "s", [NM]
                )
                self._nm_owner = str(got[0])
            else:
                self._nm_owner = None
        except TetherError:
            self._nm_owner = None
        self.on_presence()

    async def run(self) -> None:
        """Keep a bus connection for the life of the worker (reconnect with backoff)."""
        delay = 0.5
        while True:
            if self._bus is None or not self._bus.connected:
                try:
                    await self.connect()
                    delay = 0.5
                except ServiceUnavailable as err:
                    log.warning("%s; retrying in %.1fs", err.message, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
            assert self._bus is not None
            with contextlib.suppress(Exception):
                await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            log.warning("lost the D-Bus connection to %s", self._where())
            self._bus = None
            self._set_owner(None)

    def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None

    def _set_owner(self, owner: str | None) -> None:
        if owner == self._nm_owner:
            return
        self._nm_owner = owner
        log.info("NetworkManager %s", "is on the bus" if owner else "left the bus")
        if owner is None:
            for q in self._taps:
                q.put_nowait(GONE)
        self.on_presence()

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type is not MessageType.SIGNAL:
            return False
        if msg.member == "NameOwnerChanged" and msg.interface == DBUS:
            name, _old, new = msg.body
            if name == NM:
                self._set_owner(new or None)
            return False
        if msg.path and msg.path.startswith(NM_PATH):
            sig = Signal(msg.path, msg.interface or "", msg.member or "", list(msg.body))
            for q in self._taps:
                q.put_nowait(sig)
        return False

    @contextlib.asynccontextmanager
    async def tap(self) -> AsyncIterator[asyncio.Queue[Signal]]:
        """Every NetworkManager signal from now on, in order, until the block ends."""
        q: asyncio.Queue[Signal] = asyncio.Queue()
        self._taps.add(q)
        try:
            yield q
        finally:
            self._taps.discard(q)

    # --- raw calls ------------------------------------------------------------------------

    def _require(self) -> MessageBus:
        if self._bus is None or not self._bus.connected:
            raise ServiceUnavailable(
                f"D-Bus at {self._where()} is not reachable; the network service reconnects "
                "by itself, retry shortly",
                {"backend": "dbus"},
            )
        return self._bus

    async def _raw(
        self, dest: str, path: str, iface: str, member: str, sig: str = "", body: Any = ()
    ) -> list[Any]:
        bus = self._require()
        msg = Message(
            destination=dest,
            path=path,
            interface=iface,
            member=member,
            signature=sig,
            body=list(body),
        )
        try:
            reply = await bus.call(msg)
        except (OSError, EOFError) as err:
            raise ServiceUnavailable(f"D-Bus connection lost: {err}", {"backend": "dbus"}) from err
        if reply.message_type is MessageType.ERROR:
            text = str(reply.body[0]) if reply.body else ""
            raise self._translate(reply.error_name or "", text, member, path)
        return list(reply.body)

    def _translate(self, name: str, text: str, member: str, path: str) -> TetherError:
        short = name.rsplit(".", 1)[-1]
        details = {"dbus_error": name, "message": text, "call": member}
        if short in ("UnknownObject", "UnknownMethod", "UnknownInterface") and path in (
            NM_PATH,
            SETTINGS_PATH,
        ):
            # NetworkManager owns its name a moment before its objects exist.
            return ServiceUnavailable(
                "NetworkManager is starting up; retry in a moment",
                {"backend": "NetworkManager", **details},
            )
        gone = name in (f"{DBUS}.Error.ServiceUnknown", f"{DBUS}.Error.NameHasNoOwner")
        if gone or name == f"{DBUS}.Error.NoReply":
            if gone:
                self._set_owner(None)
            return ServiceUnavailable(
                "NetworkManager is not running (or not answering); start it "
                "(systemctl start NetworkManager) and retry",
                {"backend": "NetworkManager", **details},
            )
        if short in (
            "UnknownConnection",
            "UnknownDevice",
            "UnknownObject",
            "ConnectionNotActive",
            "UnknownInterface",
        ):
            return NotFound(f"NetworkManager: {text or short}", details)
        if short in (
            "InvalidProperty",
            "MissingProperty",
            "InvalidSetting",
            "InvalidArgs",
            "InvalidConnection",
        ):
            return InvalidRequest(f"NetworkManager rejected the settings: {text}", details)
        if short in ("PermissionDenied", "AccessDenied"):
            return Failed(f"NetworkManager denied the request: {text}", details)
        if short in ("ConnectionActivating", "InvalidArguments") and "checkpoint" in text.lower():
            return Conflict(f"NetworkManager: {text}", details)
        return Failed(f"NetworkManager: {text or name}", details)

    async def call(self, path: str, iface: str, member: str, sig: str = "", *body: Any) -> Any:
        if self._nm_owner is None:
            raise ServiceUnavailable(
                "NetworkManager is not running; start it (systemctl start NetworkManager); "
                "the network service notices by itself when it is back",
                {"backend": "NetworkManager"},
            )
        out = await self._raw(NM, path, iface, member, sig, body)
        return out[0] if len(out) == 1 else out

    async def props(self, path: str, iface: str) -> dict[str, Any]:
        got = await self.call(path, I_PROPS, "GetAll", "s", iface)
        return dict(unwrap(got))

    async def prop(self, path: str, iface: str, name: str) -> Any:
        return unwrap(await self.call(path, I_PROPS, "Get", "ss", iface, name))

    # --- reading -------------------------------------------------------------------------

    async def state(self) -> NetworkState:
        p = await self.props(NM_PATH, I_NM)
        hostname = await self.prop(SETTINGS_PATH, I_SETTINGS, "Hostname")
        primary = p.get("PrimaryConnection") or "/"
        primary_id = None
        if primary != "/":
            with contextlib.suppress(NotFound):
                primary_id = await self.prop(primary, I_ACTIVE, "Id")
        return NetworkState(
            state=NM_STATES.get(p.get("State", 0), "unknown"),
            connectivity=CONNECTIVITY.get(p.get("Connectivity", 0), "unknown"),
            hostname=str(hostname or ""),
            version=str(p.get("Version", "")),
            networking_enabled=bool(p.get("NetworkingEnabled", False)),
            wireless_enabled=bool(p.get("WirelessEnabled", False)),
            primary_connection=primary_id,
            protected_interfaces=[],
        )

    async def device_paths(self) -> list[str]:
        return list(await self.call(NM_PATH, I_NM, "GetDevices"))

    async def device_by_iface(self, name: str) -> tuple[str, dict[str, Any]]:
        for path in await self.device_paths():
            with contextlib.suppress(NotFound):
                p = await self.props(path, I_DEVICE)
                if p.get("Interface") == name:
                    return path, p
        raise NotFound(f"no network device {name!r}", {"field": "interface", "value": name})

    async def primary_interfaces(self) -> list[str]:
        primary = await self.prop(NM_PATH, I_NM, "PrimaryConnection")
        if not primary or primary == "/":
            return []
        out = []
        with contextlib.suppress(NotFound):
            for dev in await self.prop(primary, I_ACTIVE, "Devices"):
                out.append(str(await self.prop(dev, I_DEVICE, "Interface")))
        return out

    async def _ip(self, path: str, iface: str) -> tuple[list[IpAddress], str | None, list[str]]:
        if not path or path == "/":
            return [], None, []
        try:
            p = await self.props(path, iface)
        except NotFound:
            return [], None, []
        addrs = [IpAddress(str(a["address"]), int(a["prefix"])) for a in p.get("AddressData", [])]
        gw = p.get("Gateway") or None
        if iface == I_IP4:
            if "NameserverData" in p:
                dns = [str(d["address"]) for d in p["NameserverData"]]
            else:
                dns = [_u32_to_ip4(n) for n in p.get("Nameservers", [])]
        else:
            dns = [str(ipaddress.IPv6Address(bytes(n))) for n in p.get("Nameservers", [])]
        return addrs, gw, dns

    async def device(self, path: str, p: dict[str, Any] | None = None) -> Device:
        if p is None:
            p = await self.props(path, I_DEVICE)
        conn_id = conn_uuid = None
        ac = p.get("ActiveConnection") or "/"
        if ac != "/":
            with contextlib.suppress(NotFound):
                a = await self.props(ac, I_ACTIVE)
                conn_id, conn_uuid = a.get("Id"), a.get("Uuid")
        v4, gw4, dns4 = await self._ip(p.get("Ip4Config", "/"), I_IP4)
        v6, gw6, dns6 = await self._ip(p.get("Ip6Config", "/"), I_IP6)
        return Device(
            interface=str(p.get("Interface", "")),
            type=DEVICE_TYPES.get(int(p.get("DeviceType", 0)), "unknown"),
            state=DEVICE_STATES.get(int(p.get("State", 0)), "unknown"),
            hw_address=p.get("HwAddress") or None,
            driver=p.get("Driver") or None,
            managed=bool(p.get("Managed", False)),
            connection=conn_id,
            connection_uuid=conn_uuid,
            ipv4=v4,
            ipv6=v6,
            gateway4=gw4,
            gateway6=gw6,
            dns=dns4 + dns6,
        )

    async def devices(self) -> list[Device]:
        out = []
        for path in await self.device_paths():
            with contextlib.suppress(NotFound):  # a device may vanish while we read
                out.append(await self.device(path))
        return sorted(out, key=lambda d: d.interface)

    async def connection_paths(self) -> list[str]:
        return list(await self.call(SETTINGS_PATH, I_SETTINGS, "ListConnections"))

    async def settings_of(self, path: str) -> dict[str, dict[str, Any]]:
        return dict(unwrap(await self.call(path, I_CONN, "GetSettings")))

    async def active_uuids(self) -> set[str]:
        out = set()
        for ac in await self.prop(NM_PATH, I_NM, "ActiveConnections"):
            with contextlib.suppress(NotFound):
                out.add(str(await self.prop(ac, I_ACTIVE, "Uuid")))
        return out

    async def connections(self) -> list[Connection]:
        active = await self.active_uuids()
        out = []
        for path in await self.connection_paths():
            with contextlib.suppress(NotFound):
                out.append(to_connection(await self.settings_of(path), active))
        return sorted(out, key=lambda c: (c.type, c.id))

    async def find_connection(self, ref: str) -> tuple[str, dict[str, dict[str, Any]]]:
        """A profile by uuid or id (name); ``NotFound`` if none, ``Conflict`` if the name is
        ambiguous."""
        hits = []
        for path in await self.connection_paths():
            with contextlib.suppress(NotFound):
                s = await self.settings_of(path)
                c = s.get("connection", {})
                if c.get("uuid") == ref:
                    return path, s
                if c.get("id") == ref:
                    hits.append((path, s))
        if not hits:
            raise NotFound(f"no connection {ref!r}", {"field": "connection", "value": ref})
        if len(hits) > 1:
            raise Conflict(
                f"{len(hits)} connections are named {ref!r}; use the uuid",
                {"field": "connection", "uuids": [h[1]["connection"]["uuid"] for h in hits]},
            )
        return hits[0]

    async def find_by(self, key: Callable[[dict[str, dict[str, Any]]], bool]) -> str | None:
        for path in await self.connection_paths():
            with contextlib.suppress(NotFound):
                if key(await self.settings_of(path)):
                    return path
        return None

    async def access_points(self, dev_path: str) -> list[AccessPoint]:
        aps = []
        for ap in await self.call(dev_path, I_WIRELESS, "GetAllAccessPoints"):
            try:
                p = await self.props(ap, I_AP)
            except NotFound:
                continue
            raw = bytes(p.get("Ssid", b""))
            if not raw:
                continue  # hidden network beacons carry no SSID
            text, hexed = ssid_text(raw)
            freq = int(p.get("Frequency", 0))
            aps.append(
                AccessPoint(
                    ssid=text,
                    ssid_hex=hexed,
                    bssid=str(p.get("HwAddress", "")),
                    signal=int(p.get("Strength", 0)),
                    frequency=freq,
                    channel=_channel(freq),
                    security=ap_security(
                        int(p.get("Flags", 0)), int(p.get("WpaFlags", 0)), int(p.get("RsnFlags", 0))
                    ),
                )
            )
        return aps

    async def request_scan(self, dev_path: str, timeout: float) -> None:
        """Ask for a scan and wait (by the LastScan property's change signal) until it is done."""
        before = await self.prop(dev_path, I_WIRELESS, "LastScan")
        async with self.tap() as q:
            try:
                await self.call(dev_path, I_WIRELESS, "RequestScan", "a{sv}", {})
            except Failed as err:
                # NetworkManager refuses a scan while one runs or right after one: use the list.
                log.info("scan request refused (%s); using the current list", err.message)
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while True:
                        sig = await q.get()
                        if sig is GONE:
                            raise ServiceUnavailable("NetworkManager stopped during the scan")
                        if (
                            sig.path == dev_path
                            and sig.member == "PropertiesChanged"
                            and sig.body[0] == I_WIRELESS
                            and "LastScan" in sig.body[1]
                            and unwrap(sig.body[1]["LastScan"]) != before
                        ):
                            return

    # --- changing ------------------------------------------------------------------------

    async def add_connection(self, settings: dict[str, dict[str, Variant]]) -> str:
        return str(
            await self.call(SETTINGS_PATH, I_SETTINGS, "AddConnection", "a{sa{sv}}", settings)
        )

    async def update_connection(self, path: str, settings: dict[str, dict[str, Variant]]) -> None:
        await self.call(path, I_CONN, "Update", "a{sa{sv}}", settings)

    async def delete_connection(self, path: str) -> None:
        await self.call(path, I_CONN, "Delete")

    async def save_hostname(self, name: str, timeout: float = 5.0) -> str:
        """Save the static hostname; return it once NetworkManager reports it (it re-reads
        the file it wrote and then signals the Hostname property)."""
        async with self.tap() as q:
            await self.call(SETTINGS_PATH, I_SETTINGS, "SaveHostname", "s", name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while await self.prop(SETTINGS_PATH, I_SETTINGS, "Hostname") != name:
                        sig = await q.get()
                        if sig is GONE:
                            raise ServiceUnavailable("NetworkManager stopped meanwhile")
        return str(await self.prop(SETTINGS_PATH, I_SETTINGS, "Hostname"))

    async def deactivate(self, uuid: str, timeout: float) -> bool:
        """Deactivate every active instance of ``uuid``; False if it was not active."""
        targets = []
        for ac in await self.prop(NM_PATH, I_NM, "ActiveConnections"):
            with contextlib.suppress(NotFound):
                if await self.prop(ac, I_ACTIVE, "Uuid") == uuid:
                    targets.append(ac)
        if not targets:
            return False
        async with self.tap() as q:
            for ac in targets:
                await self.call(NM_PATH, I_NM, "DeactivateConnection", "o", ac)
            pending = set(targets)
            async with asyncio.timeout(timeout):
                while pending:
                    # An active connection object disappears or reports deactivated.
                    for ac in list(pending):
                        try:
                            st = await self.prop(ac, I_ACTIVE, "State")
                        except NotFound:
                            st = ACTIVE_DEACTIVATED
                        if st == ACTIVE_DEACTIVATED:
                            pending.discard(ac)
                    if pending:
                        sig = await q.get()
                        if sig is GONE:
                            raise ServiceUnavailable("NetworkManager stopped meanwhile")
        return True

    async def activate(
        self, conn_path: str, dev_path: str, timeout: float, specific: str = "/"
    ) -> tuple[str, str]:
        """Activate a profile on a device; return (active path, state word) once
        NetworkManager says it is activated. Failures become our errors with NM's reason."""
        dev_reason: int | None = None
        async with self.tap() as q:
            active = str(
                await self.call(
                    NM_PATH, I_NM, "ActivateConnection", "ooo", conn_path, dev_path, specific
                )
            )
            try:
                # Signals before this point are in the queue; this read covers an activation
                # that finished before our first signal was even sent.
                if await self.prop(active, I_ACTIVE, "State") == ACTIVE_ACTIVATED:
                    return active, "activated"
            except NotFound:
                pass
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        sig = await q.get()
                        if sig is GONE:
                            raise ServiceUnavailable(
                                "NetworkManager stopped during the activation; retry when it "
                                "is back",
                                {"backend": "NetworkManager"},
                            )
                        if sig.member != "StateChanged":
                            continue
                        if sig.path == dev_path and sig.interface == I_DEVICE:
                            new, _old, reason = (int(x) for x in sig.body)
                            if new == DEV_FAILED or (new < 40 and reason):
                                dev_reason = reason
                                if new == DEV_FAILED:
                                    raise activation_error(reason, None)
                        elif sig.path == active and sig.interface == I_ACTIVE:
                            state, reason = (int(x) for x in sig.body)
                            if state == ACTIVE_ACTIVATED:
                                return active, "activated"
                            if state == ACTIVE_DEACTIVATED:
                                raise activation_error(dev_reason, reason)
            except TimeoutError as err:
                with contextlib.suppress(TetherError):
                    await self.call(NM_PATH, I_NM, "DeactivateConnection", "o", active)
                raise Timeout(
                    f"NetworkManager did not finish activating within {timeout:g}s; the "
                    "attempt was stopped",
                    {"timeout": timeout},
                ) from err

    async def checkpoint_create(self, dev_paths: list[str], rollback_timeout: int) -> str:
        try:
            return str(
                await self.call(
                    NM_PATH,
                    I_NM,
                    "CheckpointCreate",
                    "aouu",
                    dev_paths,
                    rollback_timeout,
                    CHECKPOINT_FLAGS,
                )
            )
        except (Failed, Conflict) as err:
            raise Conflict(
                "another network change is still waiting for its confirmation (a checkpoint "
                "exists); confirm it (network/confirm) or wait for its rollback, then retry",
                err.details,
            ) from err

    async def checkpoints(self) -> list[str]:
        return [str(c) for c in await self.prop(NM_PATH, I_NM, "Checkpoints")]

    async def checkpoint_destroy(self, path: str) -> None:
        await self.call(NM_PATH, I_NM, "CheckpointDestroy", "o", path)

    async def checkpoint_rollback(self, path: str) -> dict[str, int]:
        return dict(unwrap(await self.call(NM_PATH, I_NM, "CheckpointRollback", "o", path)))

    async def wait_checkpoint_gone(self, path: str) -> None:
        """Return once ``path`` left the manager's Checkpoints (rolled back or destroyed)."""
        async with self.tap() as q:
            while path in await self.checkpoints():
                while True:
                    sig = await q.get()
                    if sig is GONE:
                        raise ServiceUnavailable("NetworkManager stopped meanwhile")
                    if sig.path == NM_PATH and sig.member in (
                        "PropertiesChanged",
                        "CheckpointDestroyed",
                    ):
                        break


def activation_error(dev_reason: int | None, active_reason: int | None) -> TetherError:
    details: dict[str, Any] = {}
    if dev_reason is not None:
        details["device_reason"] = DEVICE_REASONS.get(dev_reason, str(dev_reason))
    if active_reason is not None:
        details["active_reason"] = active_reason
    if (dev_reason in AUTH_REASONS) or (active_reason in ACTIVE_AUTH_REASONS):
        return AuthFailed(
            "the network rejected the credentials (wrong Wi-Fi password?); check them and retry",
            details,
        )
    if dev_reason == REASON_SSID_NOT_FOUND:
        return NotFound(
            "the Wi-Fi network was not found (out of range or gone); scan and retry", details
        )
    word = DEVICE_REASONS.get(dev_reason or 0, str(dev_reason))
    return Failed(f"NetworkManager could not activate the connection ({word})", details)


def to_connection(s: dict[str, dict[str, Any]], active: set[str]) -> Connection:
    """A profile's settings as our type; secret fields are never read."""
    c = s.get("connection", {})
    ip4 = s.get("ipv4", {})
    ctype = str(c.get("type", ""))
    addrs = [IpAddress(str(a["address"]), int(a["prefix"])) for a in ip4.get("address-data", [])]
    dns = [_u32_to_ip4(int(n)) for n in ip4.get("dns", [])]
    ssid = security = None
    if ctype == "802-11-wireless":
        raw = bytes(s.get("802-11-wireless", {}).get("ssid", b""))
        ssid = ssid_text(raw)[0]
        km = s.get("802-11-wireless-security", {}).get("key-mgmt")
        security = {
            None: "open",
            "none": "wep",
            "ieee8021x": "wep",
            "wpa-psk": "wpa-psk",
            "sae": "sae",
            "owe": "open",
        }.get(km, "enterprise")
    return Connection(
        id=str(c.get("id", "")),
        uuid=str(c.get("uuid", "")),
        type=ctype,
        interface=c.get("interface-name") or None,
        autoconnect=bool(c.get("autoconnect", True)),
        active=c.get("uuid") in active,
        ipv4=Ipv4Settings(
            method=str(ip4.get("method", "auto")),
            addresses=addrs,
            gateway=ip4.get("gateway") or None,
            dns=dns,
            dns_search=[str(d) for d in ip4.get("dns-search", [])],
        ),
        ipv6_method=s.get("ipv6", {}).get("method"),
        ssid=ssid,
        security=security,
    )


def ipv4_section(
    net: ipaddress.IPv4Interface | None,
    gateway: ipaddress.IPv4Address | None,
    dns: list[ipaddress.IPv4Address],
    search: list[str],
) -> dict[str, Variant]:
    """The ``ipv4`` settings group: DHCP when ``net`` is None, else static."""
    sec: dict[str, Variant] = {"method": Variant("s", "auto" if net is None else "manual")}
    if net is not None:
        sec["address-data"] = Variant(
            "aa{sv}",
            [{"address": Variant("s", str(net.ip)), "prefix": Variant("u", net.network.prefixlen)}],
        )
        if gateway is not None:
            sec["gateway"] = Variant("s", str(gateway))
    if dns:
        sec["dns"] = Variant("au", [_ip4_to_u32(d) for d in dns])
        if net is None:
            sec["ignore-auto-dns"] = Variant("b", True)
    if search:
        sec["dns-search"] = Variant("as", search)
    return sec


def ethernet_settings(
    name: str, iface: str, ipv4: dict[str, Variant], uuid: str | None = None
) -> dict[str, dict[str, Variant]]:
    return {
        "connection": {
            "id": Variant("s", name),
            "uuid": Variant("s", uuid or str(uuidlib.uuid4())),
            "type": Variant("s", "802-3-ethernet"),
            "interface-name": Variant("s", iface),
            "autoconnect": Variant("b", True),
        },
        "802-3-ethernet": {},
        "ipv4": ipv4,
        "ipv6": {"method": Variant("s", "auto")},
    }


def wifi_settings(
    name: str,
    iface: str,
    ssid: bytes,
    password: str | None,
    key_mgmt: str,
    hidden: bool,
    ipv4: dict[str, Variant],
    uuid: str | None = None,
) -> dict[str, dict[str, Variant]]:
    s: dict[str, dict[str, Variant]] = {
        "connection": {
            "id": Variant("s", name),
            "uuid": Variant("s", uuid or str(uuidlib.uuid4())),
            "type": Variant("s", "802-11-wireless"),
            "interface-name": Variant("s", iface),
            "autoconnect": Variant("b", True),
        },
        "802-11-wireless": {
            "ssid": Variant("ay", ssid),
            "mode": Variant("s", "infrastructure"),
            "hidden": Variant("b", hidden),
        },
        "ipv4": ipv4,
        "ipv6": {"method": Variant("s", "auto")},
    }
    if password is not None:
        s["802-11-wireless"]["security"] = Variant("s", "802-11-wireless-security")
        s["802-11-wireless-security"] = {
            "key-mgmt": Variant("s", key_mgmt),
            "psk": Variant("s", password),
        }
    return s
