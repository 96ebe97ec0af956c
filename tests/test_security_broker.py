"""The generated broker configuration, for real: mosquitto 2 started from `tether broker-config`
output, devices provisioned with the real CLI flow, the ACL cases of issue #7, certificate
rejection (foreign CA, expired), operator passwords on the TLS WebSocket listener, and a
granted operator commanding a real bundle."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from common.client import ClientError, ClientSettings, TetherClient
from common.pki import cert_problem, make_dev_pki
from common.provision import DeviceFiles
from tests.harness import Bundle, needs_tool, short_tmpdir, toml, wait_for
from tests.security_fixtures import Fleet, FleetBroker, collect, first, mqtt, tether

OP_PASSWORD = "op-s3cret-pass"


@dataclass
class Setup:
    fleet: Fleet
    broker: FleetBroker
    a: DeviceFiles
    b: DeviceFiles
    bundle: Bundle


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    needs_tool("mosquitto")
    root = short_tmpdir("tsec-")
    bundle: Bundle | None = None
    broker: FleetBroker | None = None
    try:
        fleet = Fleet(root)
        a, b = fleet.provision("dev-a"), fleet.provision("dev-b")
        granted = fleet.operator("op-granted")
        fleet.operator("op-none")
        (root / "devices.txt").write_text("# fleet\ndev-a\ndev-b\n")
        # The harness makes the bundle's device id; provision a certificate for it once known.
        bundle = Bundle(fleet.dev_pki(a, granted), _NoBroker(), ["stats"])  # type: ignore[arg-type]
        files = fleet.provision(bundle.device)
        bundle.pki = fleet.dev_pki(files, granted)
        broker = FleetBroker(
            fleet,
            root / "broker",
            *("--devices-from", str(root / "devices.txt"), "--device", bundle.device),
            *("--operator", f"op-web:{OP_PASSWORD}"),
            *("--grant", "op-granted:dev-b", "--grant", f"op-granted:{bundle.device}"),
            *("--grant", "op-web:dev-*"),
        )
        broker.start()
        bundle.broker = broker  # type: ignore[assignment]
        mqtt_conf = bundle.config_data["mqtt"]
        mqtt_conf.update(port=broker.port, cert_file=str(files.cert), key_file=str(files.key))
        bundle.config_path.write_text(toml(bundle.config_data))
        bundle.start()
        yield Setup(fleet, broker, a, b, bundle)
    finally:
        if bundle is not None:
            bundle.cleanup()
        if broker is not None:
            broker.stop()
        shutil.rmtree(root, ignore_errors=True)


class _NoBroker:
    port = 1


def _ops(s: Setup, name: str) -> tuple[Path, Path]:
    d = s.fleet.dir / "operators"
    return d / f"{name}.crt", d / f"{name}.key"


def test_generated_acl_is_what_the_docs_say(setup: Setup) -> None:
    acl = (setup.broker.dir / "acl").read_text()
    assert "pattern read tether/%u/cmd/#" in acl
    assert "pattern write tether/%u/res/#" in acl
    assert "user op-granted\ntopic write tether/dev-b/cmd/#\ntopic read tether/dev-b/#" in acl
    # The glob was expanded against the device list (not the bundle's id).
    web = acl.split("user op-web\n", 1)[1]
    assert "tether/dev-a/cmd/#" in web and "tether/dev-b/cmd/#" in web
    assert setup.bundle.device not in web
    conf = (setup.broker.dir / "mosquitto.conf").read_text()
    for line in (
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.2",
        "protocol websockets",
        "allow_anonymous false",
    ):
        assert line in conf
    passwd = setup.broker.dir / "passwd"
    assert passwd.stat().st_mode & 0o777 == 0o600
    assert OP_PASSWORD not in passwd.read_text()


async def test_device_cannot_read_another_devices_commands(setup: Setup) -> None:
    s, ca = setup, setup.fleet.ca_cert
    op = _ops(s, "op-granted")
    async with (
        mqtt(s.broker, ca, s.a.cert, s.a.key) as a,
        mqtt(s.broker, ca, s.b.cert, s.b.key) as b,
        mqtt(s.broker, ca, *op) as oper,
    ):
        await a.subscribe("tether/dev-b/cmd/#", qos=1)
        await a.subscribe("tether/+/cmd/#", qos=1)
        await a.subscribe("#", qos=1)
        await b.subscribe("tether/dev-b/cmd/#", qos=1)
        await oper.publish("tether/dev-b/cmd/agent/ping", b'{"id": "x1"}', qos=1)
        got = await first(b, 5)
        assert got == ("tether/dev-b/cmd/agent/ping", b'{"id": "x1"}')  # B gets its command
        seen_by_a = await collect(a, 1.0)
        assert [t for t, _ in seen_by_a if "/dev-b/" in t] == []


async def test_device_cannot_answer_for_another_device(setup: Setup) -> None:
    s, ca = setup, setup.fleet.ca_cert
    async with (
        mqtt(s.broker, ca, s.a.cert, s.a.key) as a,
        mqtt(s.broker, ca, s.b.cert, s.b.key) as b,
        mqtt(s.broker, ca, *_ops(s, "op-granted")) as oper,
    ):
        await oper.subscribe("tether/dev-b/#", qos=1)
        # A forges a reply, a status and a job event for B; B answers for real.
        await a.publish("tether/dev-b/res/client/op", b'{"id":"x1","ok":true,"forged":1}', qos=1)
        await a.publish("tether/dev-b/status", b'{"state":"forged"}', qos=1)
        await a.publish("tether/dev-b/jobs/j1", b'{"forged":1}', qos=1)
        await a.publish("tether/dev-b/cmd/agent/ping", b'{"forged":1}', qos=1)
        await asyncio.sleep(0.3)
        await b.publish("tether/dev-b/res/client/op", b'{"id":"x1","ok":true}', qos=1)
        got = await collect(oper, 1.5)
        assert ("tether/dev-b/res/client/op", b'{"id":"x1","ok":true}') in got
        assert not [p for _, p in got if b"forged" in p], got


async def test_device_cannot_write_other_topics_of_its_own(setup: Setup) -> None:
    """A device may not command itself or others (no write on cmd/#)."""
    s, ca = setup, setup.fleet.ca_cert
    async with (
        mqtt(s.broker, ca, s.b.cert, s.b.key) as b,
        mqtt(s.broker, ca, *_ops(s, "op-granted")) as oper,
    ):
        await b.subscribe("tether/dev-b/cmd/#", qos=1)
        await oper.subscribe("tether/dev-b/#", qos=1)
        await b.publish("tether/dev-b/cmd/apt/install", b'{"self":1}', qos=1)
        await b.publish("tether/dev-b/stats", b'{"real":1}', qos=1)
        got = await collect(oper, 1.0)
        assert [t for t, _ in got] == ["tether/dev-b/stats"]


async def test_operator_without_grant_cannot_command_or_read(setup: Setup) -> None:
    s, ca = setup, setup.fleet.ca_cert
    async with (
        mqtt(s.broker, ca, s.b.cert, s.b.key) as b,
        mqtt(s.broker, ca, *_ops(s, "op-none")) as stranger,
        mqtt(s.broker, ca, *_ops(s, "op-granted")) as oper,
    ):
        await b.subscribe("tether/dev-b/cmd/#", qos=1)
        await b.publish("tether/dev-b/status", b'{"state":"online"}', qos=1, retain=True)
        await stranger.subscribe("tether/#", qos=1)
        # mosquitto drops an unauthorized publish silently: nothing may reach the device.
        await stranger.publish("tether/dev-b/cmd/apt/install", b'{"id":"evil"}', qos=1)
        assert await first(b, 1.5) is None
        assert await collect(stranger, 0.5) == []  # not even the retained status
        await oper.publish("tether/dev-b/cmd/agent/ping", b'{"id":"ok"}', qos=1)
        assert await first(b, 5) == ("tether/dev-b/cmd/agent/ping", b'{"id":"ok"}')
        await b.publish("tether/dev-b/status", b"", qos=1, retain=True)


async def test_granted_operator_commands_a_real_bundle(setup: Setup) -> None:
    reply = await setup.bundle.call("agent", "ping")
    assert reply["ok"] and reply["result"]["device"] == setup.bundle.device
    reply = await setup.bundle.call("stats", "get")
    assert reply["ok"], reply


async def test_ungranted_operator_gets_no_answer_from_a_real_bundle(setup: Setup) -> None:
    s = setup
    crt, key = _ops(s, "op-none")
    cs = ClientSettings(
        host="localhost",
        port=s.broker.port,
        ca_file=str(s.fleet.ca_cert),
        cert_file=str(crt),
        key_file=str(key),
        timeout=2,
    )
    pid = s.bundle.pid("stats")
    async with TetherClient(cs) as c:
        with pytest.raises(ClientError, match="no reply"):
            await c.call(s.bundle.device, "agent", "restart", {"service": "stats"}, timeout=2)
    assert s.bundle.pid("stats") == pid  # the command never reached the device


async def test_operator_password_on_the_websocket_listener(setup: Setup) -> None:
    s, ca = setup, setup.fleet.ca_cert
    async with (
        mqtt(s.broker, ca, websocket=True, username="op-web", password=OP_PASSWORD) as web,
        mqtt(s.broker, ca, s.a.cert, s.a.key) as a,
    ):
        await a.subscribe("tether/dev-a/cmd/#", qos=1)
        await web.publish("tether/dev-a/cmd/agent/ping", b'{"id":"w"}', qos=1)
        assert await first(a, 5) == ("tether/dev-a/cmd/agent/ping", b'{"id":"w"}')
        # op-web has no grant on the bundle's device
        await web.publish(f"tether/{s.bundle.device}/cmd/agent/ping", b"{}", qos=1)
    with pytest.raises(aiomqtt.MqttError):
        async with mqtt(s.broker, ca, websocket=True, username="op-web", password="wrong-pass"):
            pass
    with pytest.raises(aiomqtt.MqttError):  # no anonymous access either
        async with mqtt(s.broker, ca, websocket=True):
            pass


async def test_device_certificate_from_another_ca_is_refused(setup: Setup) -> None:
    s = setup
    other = make_dev_pki(s.fleet.dir / "other-ca", "dev-a")  # same CN, wrong CA
    with pytest.raises(aiomqtt.MqttError):
        async with mqtt(s.broker, s.fleet.ca_cert, other.device.cert, other.device.key, timeout=2):
            pass
    wait_for(lambda: "certificate verify failed" in s.broker.log_text(), 5, "broker log line")


async def test_connecting_without_a_certificate_is_refused(setup: Setup) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with mqtt(setup.broker, setup.fleet.ca_cert, timeout=2):
            pass
    wait_for(lambda: "did not return a certificate" in setup.broker.log_text(), 5, "log line")


def test_expired_certificate_is_refused_with_a_clear_log_line(setup: Setup) -> None:
    s = setup
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    b = Bundle(s.bundle.pki, s.broker, ["stats"])  # type: ignore[arg-type]
    try:
        files = s.fleet.provision(b.device, days=1, not_before=past)
        b.config_data["mqtt"].update(cert_file=str(files.cert), key_file=str(files.key))
        b.config_path.write_text(toml(b.config_data))
        b.supervisor.start()
        # Today the clear words come from paho (the "mqtt" logger) inside the gateway's log:
        # "ERROR mqtt: failed to receive on socket: [SSL: SSLV3_ALERT_CERTIFICATE_EXPIRED]
        # sslv3 alert certificate expired". docs/security.md proposes a Tether line too.
        wait_for(lambda: "certificate expired" in b.logs("gateway"), 20, "gateway log line")
        wait_for(lambda: "certificate verify failed" in s.broker.log_text(), 5, "broker log")
        assert cert_problem(files.cert) is not None
        assert "expired" in str(cert_problem(files.cert))
    finally:
        b.cleanup()


def test_broker_config_refuses_bad_input(tmp_path: Path, setup: Setup) -> None:
    f = setup.fleet
    base = [
        "broker-config",
        "--out",
        str(tmp_path / "x"),
        "--ca",
        str(f.ca_cert),
        "--server-cert",
        str(f.server.cert),
        "--server-key",
        str(f.server.key),
    ]
    assert tether(*base, "--device", "gw1", "--operator", "gw1:longpassword") == 2  # clash
    assert tether(*base, "--grant", "alice:gw-*") == 2  # glob without device list
    assert tether(*base, "--device", "gw1", "--grant", "alice:zz-*") == 2  # matches nothing
    assert tether(*base, "--grant", "al/ice:gw1") == 2
    assert tether(*base, "--grant", "alice:gw/#") == 2
    assert tether(*base, "--operator", "alice:short") == 2
    assert tether(*base, "--operator", "alice") == 2
    assert tether(*base, "--prefix", "a/+/b") == 2
    assert not (tmp_path / "x").exists()
    assert tether(*base, "--grant", "alice:*") == 0
    acl = (tmp_path / "x" / "acl").read_text()
    assert "topic write tether/+/cmd/#" in acl


def test_our_password_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    from common.brokerconf import check_mosquitto_hash, mosquitto_hash

    needs_tool("mosquitto_passwd")
    import subprocess

    p = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(p), "alice", "pw-123456"], check=True)
    theirs = p.read_text().strip().split(":", 1)[1]
    assert check_mosquitto_hash("pw-123456", theirs)
    assert not check_mosquitto_hash("pw-1234567", theirs)
    assert check_mosquitto_hash("pw-123456", mosquitto_hash("pw-123456"))
    assert msgspec.json.encode(theirs)  # printable
