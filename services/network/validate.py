"""Checks every value an operator sends before it reaches NetworkManager.

Each check raises ``InvalidRequest`` naming the field and the bad value, and returns the value
in the form the backend needs (e.g. an ``IPv4Interface``).
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Iterable

from common.errors import InvalidRequest

# Linux: at most 15 bytes (IFNAMSIZ - 1), no '/', no whitespace, not "." or "..";
# we also refuse ':' (alias syntax) and anything outside a conservative set.
_IFACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_HEX = frozenset(string.hexdigits)


def _bad(field: str, value: object, why: str) -> InvalidRequest:
    return InvalidRequest(f"invalid {field} {value!r}: {why}", {"field": field, "value": value})


def iface(value: str, field: str = "interface") -> str:
    if not _IFACE.fullmatch(value):
        raise _bad(field, value, "an interface name is 1-15 of A-Z a-z 0-9 _ . - (e.g. eth0)")
    return value


def hostname(value: str) -> str:
    labels = value.split(".")
    if not value or len(value) > 253 or not all(_LABEL.fullmatch(lb) for lb in labels):
        raise _bad(
            "hostname",
            value,
            "use letters, digits and '-' in dot-separated labels of 1-63 characters, "
            "not starting or ending with '-' (at most 253 characters)",
        )
    return value


def ssid(value: str) -> bytes:
    raw = value.encode()
    if not 1 <= len(raw) <= 32:
        raise _bad("ssid", value, f"an SSID is 1-32 bytes, this one is {len(raw)}")
    return raw


def wpa_password(value: str) -> str:
    """A WPA passphrase: 8-63 characters (any, except control characters) or 64 hex digits."""
    if len(value) == 64 and all(c in _HEX for c in value):
        return value
    n = len(value.encode())
    if not 8 <= n <= 63:
        # The value is a secret: never echo it back.
        raise InvalidRequest(
            f"invalid password: a WPA passphrase is 8-63 characters (or 64 hex digits), "
            f"this one is {n} bytes",
            {"field": "password"},
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidRequest(
            "invalid password: control characters are not allowed in a WPA passphrase",
            {"field": "password"},
        )
    return value


def connection_ref(value: str) -> str:
    if not value or len(value) > 255 or any(ord(c) < 32 for c in value):
        raise _bad("connection", value, "give a connection's uuid or name (1-255 characters)")
    return value


def profile_name(value: str) -> str:
    if not value or len(value) > 255 or any(ord(c) < 32 for c in value):
        raise _bad("name", value, "a profile name is 1-255 characters without control codes")
    return value


def ipv4_interface(
    address: str, prefix: int | None, field: str = "address"
) -> ipaddress.IPv4Interface:
    text = address if prefix is None else f"{address}/{prefix}"
    if prefix is not None and "/" in address:
        raise _bad(field, address, "give the prefix either in the address or as 'prefix'")
    if "/" not in text:
        raise _bad(field, address, "add the prefix length, e.g. 192.0.2.10/24")
    try:
        net = ipaddress.IPv4Interface(text)
    except ValueError as err:
        raise _bad(field, text, f"not an IPv4 address with prefix ({err})") from err
    if not 1 <= net.network.prefixlen <= 32:
        raise _bad("prefix", net.network.prefixlen, "the prefix length must be 1-32")
    ip = net.ip
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_reserved:
        raise _bad(field, text, "not a usable host address")
    if net.network.prefixlen < 31 and ip in (net.network.network_address, net.network[-1]):
        raise _bad(field, text, "that is the network or broadcast address of its subnet")
    return net


def ipv4_gateway(value: str, net: ipaddress.IPv4Interface) -> ipaddress.IPv4Address:
    try:
        gw = ipaddress.IPv4Address(value)
    except ValueError as err:
        raise _bad("gateway", value, "not an IPv4 address") from err
    if gw not in net.network:
        raise _bad("gateway", value, f"the gateway must be inside {net.network}")
    if gw == net.ip:
        raise _bad("gateway", value, "the gateway cannot be the device's own address")
    return gw


def dns_servers(values: Iterable[str]) -> list[ipaddress.IPv4Address]:
    out = []
    for v in values:
        try:
            out.append(ipaddress.IPv4Address(v))
        except ValueError as err:
            raise _bad("dns", v, "not an IPv4 address") from err
    if len(out) > 8:
        raise InvalidRequest("invalid dns: at most 8 servers", {"field": "dns"})
    return out


def dns_search(values: Iterable[str]) -> list[str]:
    out = []
    for v in values:
        try:
            hostname(v)
        except InvalidRequest as err:
            raise _bad("dns_search", v, "not a domain name") from err
        out.append(v)
    return out
