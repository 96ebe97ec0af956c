"""Argument and result types of the network service.

Argument types are lenient about unknown fields (as everywhere); values are checked by
``services.network.validate`` before anything reaches NetworkManager.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

# --- results -----------------------------------------------------------------------------


class LastChange(Struct, omit_defaults=True):
    """The outcome of the latest change made under a checkpoint (kept across restarts)."""

    job_id: str
    action: str
    interfaces: list[str]
    #: pending (waiting for the link), committed, rolled_back or failed.
    outcome: str
    started_at: float
    finished_at: float | None = None
    message: str | None = None
    #: NetworkManager's checkpoint object while the change is pending.
    checkpoint: str | None = None


class NetworkState(Struct):
    #: NetworkManager's overall state as a word (e.g. "connected_global", "disconnected").
    state: str
    #: "full", "limited", "portal", "none" or "unknown".
    connectivity: str
    hostname: str
    version: str
    networking_enabled: bool
    wireless_enabled: bool
    primary_connection: str | None
    #: Interfaces whose changes go through a checkpoint right now.
    protected_interfaces: list[str]
    last_change: LastChange | None = None


class IpAddress(Struct):
    address: str
    prefix: int


class Device(Struct):
    interface: str
    #: "ethernet", "wifi", "loopback", "bridge", ... (NetworkManager's device type as a word).
    type: str
    #: "activated", "disconnected", "unavailable", "unmanaged", ... as a word.
    state: str
    hw_address: str | None
    driver: str | None
    managed: bool
    connection: str | None
    connection_uuid: str | None
    ipv4: list[IpAddress]
    ipv6: list[IpAddress]
    gateway4: str | None
    gateway6: str | None
    dns: list[str]


class Ipv4Settings(Struct, omit_defaults=True):
    #: "auto" (DHCP), "manual" (static), "disabled", "link-local" or "shared".
    method: str
    addresses: list[IpAddress] = msgspec.field(default_factory=list)
    gateway: str | None = None
    dns: list[str] = msgspec.field(default_factory=list)
    dns_search: list[str] = msgspec.field(default_factory=list)


class Connection(Struct):
    """A saved profile. Secrets (Wi-Fi passwords, 802.1X keys) are never included."""

    id: str
    uuid: str
    type: str
    interface: str | None
    autoconnect: bool
    active: bool
    ipv4: Ipv4Settings
    ipv6_method: str | None
    ssid: str | None = None
    #: For Wi-Fi: "open", "wep", "wpa-psk", "sae" or "enterprise".
    security: str | None = None


class AccessPoint(Struct, omit_defaults=True):
    #: The SSID as text (invalid UTF-8 replaced); ``ssid_hex`` keeps the raw bytes then.
    ssid: str
    bssid: str
    signal: int
    frequency: int
    channel: int
    #: "open", "WEP", "WPA", "WPA2", "WPA3" or "enterprise".
    security: str
    ssid_hex: str | None = None
    #: Other BSSIDs with the same SSID seen in the scan.
    others: int = 0


class ScanResult(Struct):
    interface: str
    access_points: list[AccessPoint]


class Activation(Struct, omit_defaults=True):
    """What a change action reports when it is done."""

    connection: str
    uuid: str
    interface: str | None
    state: str
    ipv4: list[IpAddress] = msgspec.field(default_factory=list)
    #: For protected interfaces: "committed" once the gateway's link proved the change safe.
    checkpoint: str | None = None


class Deleted(Struct):
    uuid: str
    id: str


class Confirmed(Struct):
    job_id: str
    confirmed_at: float


class Hostname(Struct):
    hostname: str


# --- arguments ---------------------------------------------------------------------------


class DeviceArgs(Struct):
    #: Only this interface (all when omitted).
    interface: str | None = None


class ScanArgs(Struct):
    #: The Wi-Fi interface; the first Wi-Fi device when omitted.
    interface: str | None = None
    #: Ask NetworkManager for a fresh scan first (else return its cached list).
    rescan: bool = True


class StaticIpv4(Struct):
    #: "192.0.2.10/24" or address with ``prefix``.
    address: str
    prefix: int | None = None
    gateway: str | None = None
    dns: list[str] = msgspec.field(default_factory=list)
    dns_search: list[str] = msgspec.field(default_factory=list)


class WifiConnectArgs(Struct):
    ssid: str
    #: Any characters; omitted or null for an open network. Never stored in replies or logs.
    password: str | None = None
    hidden: bool = False
    interface: str | None = None
    #: Static IPv4 instead of DHCP.
    ipv4: StaticIpv4 | None = None


class EthernetConfigureArgs(Struct):
    interface: str
    method: Literal["dhcp", "static"] = "dhcp"
    #: "192.0.2.10/24" (static only); ``prefix`` may be given separately.
    address: str | None = None
    prefix: int | None = None
    gateway: str | None = None
    dns: list[str] = msgspec.field(default_factory=list)
    dns_search: list[str] = msgspec.field(default_factory=list)
    #: Profile name; default "tether-<interface>".
    name: str | None = None


class ConnectionRef(Struct):
    #: A connection's uuid or its id (name).
    connection: str
    #: For ``connections/up``: the interface to activate it on (else the profile's own).
    interface: str | None = None


class HostnameArgs(Struct):
    hostname: str


class ConfirmArgs(Struct):
    #: The job of the change to commit (the pending one when omitted).
    job_id: str | None = None
