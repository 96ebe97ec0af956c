"""The bundle end to end: broker -> gateway -> ZeroMQ -> stats worker -> back, for real."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from common.client import ClientError, TetherClient
from common.devbroker import Mosquitto, free_port
from common.pki import make_dev_pki
from tests.harness import Bundle, short_tmpdir


async def test_stats_get_mqtt5_response_topic(stats_bundle: Bundle) -> None:
    reply = await stats_bundle.call("stats", "get", {"per_cpu": True})
    assert reply["ok"] is True, reply
    r = reply["result"]
    assert r["cpu"]["count"] == os.cpu_count()
    assert len(r["cpu"]["per_cpu"]) == os.cpu_count()
    assert r["memory"]["total"] > 0
    assert any(fs["mountpoint"] == "/" for fs in r["filesystems"]) or r["filesystems"] == []
    devices = [fs["device"] for fs in r["filesystems"]]
    assert len(devices) == len(set(devices)), "bind mounts must not repeat a device"
    assert any(i["name"] == "lo" for i in r["interfaces"])
    assert r["uptime"] > 0 and r["hostname"]
    assert "error" not in reply


async def test_mqtt311_client_with_reply_to(stats_bundle: Bundle) -> None:
    async with stats_bundle.client(protocol="3.1.1") as c:
        reply = await c.call(stats_bundle.device, "stats", "ping")
    assert reply["ok"] is True and reply["result"]["pong"] is True


async def test_mqtt311_without_reply_to_uses_default_topic(stats_bundle: Bundle) -> None:
    async with stats_bundle.client(protocol="3.1.1") as c:
        topic = c.topics(stats_bundle.device).res("stats", "ping")
        async with c.subscribe(topic) as q:
            await c.mqtt.publish(
                c.topics(stats_bundle.device).cmd("stats", "ping"), b'{"id": "plain-1"}', qos=1
            )
            _, payload = await asyncio.wait_for(q.get(), 10)
    body = msgspec.json.decode(payload)
    assert body["id"] == "plain-1" and body["ok"] is True


@pytest.mark.parametrize(
    ("service", "action", "payload", "code"),
    [
        ("stats", "ping", b"not json", "invalid_request"),
        ("stats", "ping", b"[1, 2]", "invalid_request"),
        ("stats", "ping", b'"text"', "invalid_request"),
        ("stats", "ping", b'{"id": 42}', "invalid_request"),
        ("stats", "get", b'{"args": {"per_cpu": "yes"}}', "invalid_request"),
        ("stats", "get", b'{"args": [true]}', "invalid_request"),
        ("stats", "ping", b'{"reply_to": "a/+/b"}', "invalid_request"),
        ("nosuch", "get", b"{}", "unknown_service"),
        ("stats", "nosuch", b"{}", "unknown_action"),
        ("stats", "Bad-Name", b"{}", "unknown_action"),
        ("stats", "ping", b'{"expires_at": 1000}', "expired"),
        # found by a fresh user: these got no reply at all
        ("stats", "get", b'{"args": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}", "invalid_request"),
        ("stats", "", b"{}", "unknown_action"),
        ("", "get", b"{}", "unknown_service"),
    ],
)
async def test_bad_input_gets_coded_error(
    stats_bundle: Bundle, service: str, action: str, payload: bytes, code: str
) -> None:
    reply = await stats_bundle.call(service, action, raw_payload=payload)
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["message"]


async def test_too_large_payload(stats_bundle: Bundle) -> None:
    big = b'{"args": {"pad": "' + b"x" * 300_000 + b'"}}'
    reply = await stats_bundle.call("stats", "ping", raw_payload=big)
    assert reply["error"]["code"] == "too_large"
    assert reply["error"]["details"]["limit"] == 256 * 1024


async def test_unknown_args_fields_are_ignored(stats_bundle: Bundle) -> None:
    reply = await stats_bundle.call("stats", "get", {"per_cpu": False, "from_the_future": 1})
    assert reply["ok"] is True and reply["result"]["cpu"]["per_cpu"] is None


async def test_redelivered_command_is_answered_from_cache(stats_bundle: Bundle) -> None:
    async with stats_bundle.client() as c:
        first = await c.call(stats_bundle.device, "stats", "ping", cmd_id="dup-1")
        await asyncio.sleep(0.05)
        again = await c.call(stats_bundle.device, "stats", "ping", cmd_id="dup-1")
        other = await c.call(stats_bundle.device, "stats", "ping", cmd_id="dup-2")
    assert first["ok"] and again == first  # same ts: the worker did not run it twice
    assert other["result"]["ts"] != first["result"]["ts"]


async def test_capabilities_retained_and_from_table(stats_bundle: Bundle) -> None:
    from services.stats.actions import ACTIONS

    async with (
        stats_bundle.client() as c,
        c.subscribe(c.topics(stats_bundle.device).capabilities) as q,
    ):
        _, payload = await asyncio.wait_for(q.get(), 10)
    caps = msgspec.json.decode(payload)
    stats = next(s for s in caps["services"] if s["name"] == "stats")
    assert [a["name"] for a in stats["actions"]] == ACTIONS.names()
    assert caps["api_version"] and caps["unavailable"] == []


async def test_agent_config_redacts_password(bundle_factory: Callable[..., Bundle]) -> None:
    # mosquitto ignores a password when the certificate is the identity, so a bundle still runs.
    b = bundle_factory(config={"mqtt": {"username": "dev", "password": "s3cret-pw"}})
    reply = await b.call("agent", "config")
    assert reply["ok"], reply
    assert reply["result"]["mqtt"]["password"] == "***"
    assert "s3cret-pw" not in msgspec.json.encode(reply).decode()


async def test_kill_worker_keeps_link_and_recovers(bundle_factory: Callable[..., Bundle]) -> None:
    b = bundle_factory()
    async with b.client() as c:
        statuses: list[str] = []
        async with c.subscribe(c.topics(b.device).status) as status_q:
            await asyncio.wait_for(status_q.get(), 5)  # the retained "online"
            old = b.kill("stats")
            t0 = time.monotonic()
            reply = await c.call(b.device, "stats", "ping", timeout=15)
            assert reply["ok"] or reply["error"]["code"] in ("service_unavailable", "timeout")
            assert time.monotonic() - t0 < 5 + 2  # within the configured request timeout
            for _ in range(100):  # supervisord restarts it
                reply = await c.call(b.device, "stats", "ping", timeout=15)
                if reply["ok"]:
                    break
                assert reply["error"]["code"] in ("service_unavailable", "timeout"), reply
                await asyncio.sleep(0.1)
            assert reply["ok"], reply
            assert b.pid("stats") != old
            while not status_q.empty():
                statuses.append(msgspec.json.decode(status_q.get_nowait()[1])["state"])
        assert "offline" not in statuses
    assert b.broker.log.read_text().count(f"as tether-{b.device} ") == 1  # never reconnected


async def test_command_to_stopped_worker_is_unavailable_quickly(
    bundle_factory: Callable[..., Bundle],
) -> None:
    b = bundle_factory()
    b.supervisorctl("stop", "stats")
    t0 = time.monotonic()
    reply = await b.call("stats", "ping")
    assert reply["error"]["code"] == "service_unavailable", reply
    assert time.monotonic() - t0 < 2
    reply = await b.call("agent", "ping")  # the gateway itself still answers
    assert reply["ok"]


async def test_broker_restart_reconnects_and_delivers_queued_command(
    bundle_factory: Callable[..., Bundle], broker_factory: Callable[..., Mosquitto]
) -> None:
    own = broker_factory()
    b = bundle_factory(broker_=own)
    gw = b.pid("gateway")
    own.stop()
    os.kill(gw, signal.SIGSTOP)  # hold the gateway offline so the command must be queued
    try:
        own.start()
        async with b.client() as c:
            fut = asyncio.ensure_future(
                c.call(b.device, "stats", "ping", cmd_id="queued-1", timeout=30)
            )
            await asyncio.sleep(0.5)
            assert not fut.done()
            os.kill(gw, signal.SIGCONT)
            reply = await fut
            assert reply["ok"] and reply["id"] == "queued-1"
            await c.wait_status(b.device, "online", timeout=10)
    finally:
        os.kill(gw, signal.SIGCONT)
    assert b.pid("gateway") == gw  # it reconnected by itself, not by being restarted


async def test_device_refuses_broker_with_foreign_ca(
    bundle_factory: Callable[..., Bundle], pki: object
) -> None:
    other_dir = short_tmpdir("tpki2-")
    other = make_dev_pki(other_dir, "device")
    rogue = Mosquitto(short_tmpdir("tmq-rogue-"), other, free_port())
    rogue.start()
    try:
        b = bundle_factory(broker_=rogue, start=False)
        b.supervisor.start()
        deadline = time.monotonic() + 10
        log = ""
        while time.monotonic() < deadline:
            log = b.logs("gateway")
            if "CERTIFICATE_VERIFY_FAILED" in log or "certificate verify failed" in log:
                break
            await asyncio.sleep(0.2)
        assert "certificate verify failed" in log.lower(), log
        assert f"as tether-{b.device}" not in rogue.log.read_text()
    finally:
        rogue.kill()


async def test_client_error_when_broker_unreachable(stats_bundle: Bundle) -> None:
    s = msgspec.structs.replace(stats_bundle.client_settings, port=free_port())
    with pytest.raises(ClientError, match="cannot connect"):
        async with TetherClient(s):
            pass


def test_invalid_config_fails_at_start_with_key(tmp_path: Path, repo: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "t.toml"
    bad.write_text('device_id = "x"\n[mqtt]\nport = "eighty"\n')
    r = subprocess.run(
        [sys.executable, "-m", "services.gateway", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=30,
        check=False,
    )
    assert r.returncode == 2
    assert "mqtt.port" in r.stderr and "Expected `int`" in r.stderr


def test_cli_call_prints_reply_and_sets_exit_code(stats_bundle: Bundle, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    s = stats_bundle.client_settings
    cfg = tmp_path / "client.toml"
    cfg.write_text(
        f'host = "localhost"\nport = {s.port}\nca_file = "{s.ca_file}"\n'
        f'cert_file = "{s.cert_file}"\nkey_file = "{s.key_file}"\n'
    )
    env = {**os.environ, "TETHER_CLIENT_CONFIG": str(cfg)}

    def tether(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "common.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = tether("call", stats_bundle.device, "stats/get", '{"per_cpu": false}')
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["result"]["cpu"]["per_cpu"] is None
    bad = tether("call", stats_bundle.device, "stats/nosuch")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"]["code"] == "unknown_action"
    assert tether("call", stats_bundle.device, "stats-get").returncode == 2
    assert tether("call", stats_bundle.device, "stats/get", "{not json").returncode == 2
    job = tether("call", stats_bundle.device, "stats/sample", '{"seconds": 0.5}', "--follow")
    assert job.returncode == 0, job.stderr
    assert '"state": "succeeded"' in job.stdout
    silent = tether("call", "no-such-device", "stats/ping", "--timeout", "1")
    assert silent.returncode == 3
    assert "never connected" in silent.stderr
    # found by a fresh user: these crashed with a traceback
    for device in ("", "demo/#", "+"):
        assert tether("call", device, "stats/ping").returncode == 2
    assert tether("call", stats_bundle.device, "stats/get#").returncode == 2
    assert tether("call", stats_bundle.device, "apt/list", '{"search": "\\ud800"}').returncode == 2
    events = [json.loads(chunk) for chunk in job.stdout.replace("}\n{", "}\x00{").split("\x00")]
    assert events[1]["seq"] == 1, "--follow must show the first event"


def test_workers_run_nicer_than_the_gateway(stats_bundle: Bundle) -> None:
    gw = os.getpriority(os.PRIO_PROCESS, stats_bundle.pid("gateway"))
    worker = os.getpriority(os.PRIO_PROCESS, stats_bundle.pid("stats"))
    assert worker == min(19, gw + 5)
