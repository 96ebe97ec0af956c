"""The network service's input checks and configuration rules (no root, no daemons)."""

from __future__ import annotations

import ipaddress

import pytest

from common.config import ConfigError, parse_settings
from common.errors import InvalidRequest
from services.network import validate
from services.network.backend import ap_security, ipv4_section, ssid_text, to_connection


@pytest.mark.parametrize("name", ["eth0", "enp3s0", "wlan0", "br-lan", "eth0.100", "a" * 15])
def test_good_interface_names(name: str) -> None:
    assert validate.iface(name) == name


@pytest.mark.parametrize(
    "name", ["", "a" * 16, "eth 0", "eth0/x", "../x", ".", "-x", "eth0:1", "é0", "eth0\n"]
)
def test_bad_interface_names(name: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        validate.iface(name)
    assert exc.value.details == {"field": "interface", "value": name}


def test_ipv4_address_rules() -> None:
    assert validate.ipv4_interface("192.0.2.10/24", None) == ipaddress.IPv4Interface(
        "192.0.2.10/24"
    )
    assert str(validate.ipv4_interface("192.0.2.10", 30)) == "192.0.2.10/30"
    assert str(validate.ipv4_interface("192.0.2.1/32", None)) == "192.0.2.1/32"
    for bad, prefix in [
        ("192.0.2.10", None),  # no prefix
        ("192.0.2.10/24", 24),  # prefix twice
        ("192.0.2.0/24", None),  # network address
        ("192.0.2.255/24", None),  # broadcast
        ("224.0.0.5/24", None),  # multicast
        ("127.0.0.2/8", None),  # loopback
        ("0.0.0.0/8", None),
        ("192.0.2.10/0", None),
        ("2001:db8::1/64", None),
        ("192.0.2.10/24x", None),
    ]:
        with pytest.raises(InvalidRequest):
            validate.ipv4_interface(bad, prefix)
    net = validate.ipv4_interface("192.0.2.10/24", None)
    assert str(validate.ipv4_gateway("192.0.2.1", net)) == "192.0.2.1"
    for gw in ("192.0.3.1", "192.0.2.10", "gateway", "2001:db8::1"):
        with pytest.raises(InvalidRequest) as exc:
            validate.ipv4_gateway(gw, net)
        assert exc.value.details["field"] == "gateway"


def test_ssid_and_passphrase() -> None:
    assert validate.ssid("x" * 32) == b"x" * 32
    assert validate.ssid("ü" * 16) == "ü".encode() * 16
    for bad in ("", "x" * 33, "ü" * 17):
        with pytest.raises(InvalidRequest):
            validate.ssid(bad)
    for good in ("12345678", "x" * 63, "ab" * 32, "sp ace 'quote' \"dq\" $HOME ;|&", "päss wörd"):
        assert validate.wpa_password(good) == good
    for bad in ("1234567", "x" * 64, "g" * 64, "tab\tinside", "ü" * 32):
        with pytest.raises(InvalidRequest) as exc:
            validate.wpa_password(bad)
        assert bad not in exc.value.message and "value" not in exc.value.details


def test_hostnames() -> None:
    for good in ("gw", "gw-17", "gw-17.example.org", "a" * 63):
        assert validate.hostname(good) == good
    for bad in ("", "-gw", "gw-", "g_w", "a" * 64, "a..b", "x" * 254, "gw.", "é"):
        with pytest.raises(InvalidRequest):
            validate.hostname(bad)


def test_security_words_and_ssid_text() -> None:
    assert ap_security(0, 0, 0) == "open"
    assert ap_security(1, 0, 0) == "WEP"
    assert ap_security(1, 0x100, 0) == "WPA"
    assert ap_security(1, 0, 0x100) == "WPA2"
    assert ap_security(1, 0, 0x400) == "WPA3"
    assert ap_security(1, 0, 0x200) == "enterprise"
    assert ssid_text(b"home") == ("home", None)
    assert ssid_text(b"\xff") == ("\ufffd", "ff")


def test_profiles_never_carry_secrets() -> None:
    settings = {
        "connection": {"id": "home", "uuid": "u-1", "type": "802-11-wireless"},
        "802-11-wireless": {"ssid": b"home"},
        "802-11-wireless-security": {"key-mgmt": "wpa-psk", "psk": "s3cret-pass"},
        "ipv4": {"method": "auto", "dns": [0x0100000A]},
    }
    c = to_connection(settings, {"u-1"})
    assert c.active and c.ssid == "home" and c.security == "wpa-psk"
    assert c.ipv4.dns == ["10.0.0.1"]
    assert "s3cret" not in repr(c)


def test_ipv4_section_dns_byte_order() -> None:
    sec = ipv4_section(None, None, [ipaddress.IPv4Address("10.0.0.1")], ["lan"])
    assert sec["method"].value == "auto" and sec["ignore-auto-dns"].value is True
    assert sec["dns"].value == [0x0100000A]  # network byte order, as NetworkManager wants


def test_config_rollback_must_outlast_the_settle_time() -> None:
    base = 'device_id = "d"\nservices = ["network"]\n'
    s = parse_settings(base)
    assert s.network.rollback_timeout == 180 and s.network.dbus_address is None
    with pytest.raises(ConfigError, match=r"network\.rollback_timeout"):
        parse_settings(base + "[network]\nrollback_timeout = 30\n")
    parse_settings(base + "[network]\nrollback_timeout = 30\nlink_settle = 10\n")
    # irrelevant when the network service is not used
    parse_settings('device_id = "d"\nservices = ["stats"]\n[network]\nrollback_timeout = 30\n')
    with pytest.raises(ConfigError):
        parse_settings(base + "[network]\nrollback_timeout = 5\n")
    with pytest.raises(ConfigError):
        parse_settings(base + "[network]\nbogus = 1\n")
