"""Health topic, watchdog, remote service control and nothing-lost, on the real bundle."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from common.devbroker import Mosquitto
from tests.harness import Bundle

FAST = {"health": {"interval": 0.5, "hang_after": 3.0, "fatal_retry": 3600.0}}


async def wait_health(
    b: Bundle, pred: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    """Wait for a retained/live health message on MQTT that satisfies ``pred``."""
    async with b.client() as c, c.subscribe(c.topics(b.device).health) as q:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                _, payload = await asyncio.wait_for(q.get(), deadline - time.monotonic())
            except TimeoutError:
                break
            last = msgspec.json.decode(payload)
            if pred(last):
                return last
    raise AssertionError(f"health never matched; last: {json.dumps(last, indent=1)[:3000]}")


def test_tether_health_cli_reads_local_topic(stats_bundle: Bundle) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "common.cli",
            "health",
            "--json",
            "--config",
            str(stats_bundle.config_path),
            "--wait",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert data["gateway"]["state"] == "ok"
    assert data["gateway"]["facts"]["link"] == "up"
    assert data["stats"]["pid"] == stats_bundle.pid("stats")
    assert data["watchdog"]["state"] == "ok"
    table = subprocess.run(
        [sys.executable, "-m", "common.cli", "health", "--config", str(stats_bundle.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "gateway" in table.stdout and "link=up" in table.stdout


async def test_health_mirrored_to_mqtt(stats_bundle: Bundle) -> None:
    h = await wait_health(stats_bundle, lambda h: h["state"] == "ok")
    assert set(h["services"]) == {"gateway", "watchdog", "stats"}
    assert h["services"]["stats"]["pid"] == stats_bundle.pid("stats")


async def test_sigstop_worker_is_restarted_by_watchdog(
    bundle_factory: Callable[..., Bundle],
) -> None:
    b = bundle_factory(config=FAST)
    old = b.kill("stats", signal.SIGSTOP)
    t0 = time.monotonic()
    # The gateway and the link keep answering while stats hangs.
    while True:
        assert (await b.call("agent", "ping", timeout=5))["ok"]
        r = await b.call("stats", "ping", timeout=10)
        if r["ok"] and b.pid("stats") != old:
            break
        assert time.monotonic() - t0 < 30, b.logs()
        await asyncio.sleep(0.3)
    restarted_after = time.monotonic() - t0
    assert restarted_after < 3.0 + 10  # hang_after plus detection and restart
    h = await wait_health(b, lambda h: h["services"]["stats"].get("restarts", 0) >= 1)
    assert "hung" in h["services"]["stats"]["last_exit"]
    assert b.broker.log.read_text().count(f"as tether-{b.device} ") == 1
    assert "hung" in b.logs("watchdog")


async def test_crash_loop_is_reported_down_with_reason(
    bundle_factory: Callable[..., Bundle],
) -> None:
    b = bundle_factory(config=FAST)
    b.supervisorctl("stop", "stats")
    # A directory where the socket should be: the worker fails at every start.
    (b.dir / "run" / "stats.sock").unlink(missing_ok=True)
    (b.dir / "run" / "stats.sock").mkdir()
    b.supervisorctl("start", "stats")
    # (A stop shows as "down" too, without an exit; wait for the crash loop's verdict.)
    h = await wait_health(
        b,
        lambda h: (
            h["services"]["stats"]["state"] == "down" and "last_exit" in h["services"]["stats"]
        ),
        timeout=60,
    )
    assert "IsADirectoryError" in h["services"]["stats"]["last_exit"], h
    services = {s["name"]: s for s in (await b.call("agent", "services"))["result"]}
    assert services["stats"]["state"] == "FATAL"
    assert services["stats"]["health"] == "down"
    assert (await b.call("stats", "ping"))["error"]["code"] == "service_unavailable"
    (b.dir / "run" / "stats.sock").rmdir()


async def test_agent_service_control(bundle_factory: Callable[..., Bundle]) -> None:
    b = bundle_factory(config=FAST)
    services = {s["name"]: s for s in (await b.call("agent", "services"))["result"]}
    assert services["stats"]["state"] == "RUNNING" and services["stats"]["pid"] == b.pid("stats")
    assert services["gateway"]["version"]
    old = b.pid("stats")
    r = await b.call("agent", "restart", {"service": "stats"})
    assert r["ok"] and r["result"]["state"] == "RUNNING", r
    assert b.pid("stats") != old
    r = await b.call("agent", "stop", {"service": "stats"})
    assert r["result"]["state"] == "STOPPED"
    assert (await b.call("stats", "ping"))["error"]["code"] == "service_unavailable"
    r = await b.call("agent", "start", {"service": "stats"})
    assert r["result"]["state"] == "RUNNING"
    assert (await b.call("agent", "stop", {"service": "gateway"}))["error"]["code"] == "forbidden"
    r = await b.call("agent", "restart", {"service": "nosuch"})
    assert r["error"]["code"] == "invalid_request"
    r = await b.call("agent", "logs", {"service": "stats", "tail": 5})
    assert r["ok"] and 0 < len(r["result"]["lines"]) <= 5, r
    r = await b.call("agent", "logs", {"service": "stats", "tail": 0})
    assert r["error"]["code"] == "invalid_request"


async def test_restart_gateway_replies_then_restarts(bundle_factory: Callable[..., Bundle]) -> None:
    b = bundle_factory(config=FAST)
    old = b.pid("gateway")
    r = await b.call("agent", "restart", {"service": "gateway"})
    assert r["ok"] and r["result"]["state"] == "restarting"
    for _ in range(100):
        await asyncio.sleep(0.2)
        try:
            if b.pid("gateway") != old:
                break
        except ValueError:
            continue  # between processes
    assert b.pid("gateway") != old
    async with b.client() as c:
        await c.wait_status(b.device, "online", 20)
    for _ in range(50):
        r = await b.call("stats", "ping", timeout=5)
        if r["ok"]:
            break
        await asyncio.sleep(0.2)
    assert r["ok"]


async def _start_sample(b: Bundle, seconds: float) -> str:
    r = await b.call("stats", "sample", {"seconds": seconds, "interval": 0.2})
    assert r["ok"], r
    return str(r["result"]["job_id"])


async def _final(b: Bundle, job_id: str, timeout: float = 30) -> dict[str, Any]:
    events = await b.follow_job(job_id, timeout)
    return events[-1]


async def test_job_progress_and_final_state(stats_bundle: Bundle) -> None:
    r = await stats_bundle.call("stats", "sample", {"seconds": 1.0, "interval": 0.2})
    job_id = r["result"]["job_id"]
    events = await stats_bundle.follow_job(job_id, 20)
    states = [e["state"] for e in events]
    assert states[-1] == "succeeded"
    assert any(e.get("progress") for e in events if e["state"] == "running") or len(events) == 1
    assert events[-1]["result"]["samples"] >= 3
    assert (await stats_bundle.call("stats", "jobs/get", {"job_id": job_id}))["result"][
        "state"
    ] == "succeeded"
    bad = await stats_bundle.call("stats", "sample", {"seconds": -1})
    assert bad["error"]["code"] == "invalid_request"
    missing = await stats_bundle.call("stats", "jobs/get", {"job_id": "nope"})
    assert missing["error"]["code"] == "not_found"


async def test_worker_crash_fails_its_job(bundle_factory: Callable[..., Bundle]) -> None:
    b = bundle_factory(config=FAST)
    job = await _start_sample(b, 60)
    await asyncio.sleep(1.0)
    b.kill("stats")
    final = await _final(b, job, 30)
    assert final["state"] == "failed"
    assert final["error"]["details"]["interrupted"] is True


async def test_gateway_killed_during_job_final_state_not_lost(
    bundle_factory: Callable[..., Bundle],
) -> None:
    b = bundle_factory(config=FAST)
    job = await _start_sample(b, 2.0)
    b.kill("gateway")
    async with b.client() as c:
        await c.wait_status(b.device, "online", 30)
    final = await _final(b, job)
    assert final["state"] == "succeeded", final


async def test_link_cut_during_job_then_gateway_restart_final_state_from_spool(
    bundle_factory: Callable[..., Bundle], broker_factory: Callable[..., Mosquitto]
) -> None:
    own = broker_factory()
    b = bundle_factory(config=FAST, broker_=own)
    job = await _start_sample(b, 1.5)
    own.stop()
    await asyncio.sleep(3.0)  # the job ends while the link is down: its final state is spooled
    spool = list((b.dir / "state" / "spool").glob("*.msg"))
    assert spool, "the final event should be on disk while the link is down"
    b.kill("gateway")  # and a gateway restart must not lose it either
    await asyncio.sleep(1.0)
    own.start()
    async with b.client() as c:
        await c.wait_status(b.device, "online", 30)
    final = await _final(b, job)  # subscribes after the link returned: the retained final
    assert final["state"] == "succeeded", final
    assert not list((b.dir / "state" / "spool").glob("*.msg"))


@pytest.mark.slow
async def test_chaos(
    bundle_factory: Callable[..., Bundle], broker_factory: Callable[..., Mosquitto]
) -> None:
    """Random kills and stops of workers, the gateway and the broker while a client sends
    commands; every command ends with exactly one answer (a result or a coded error, retried
    with the same id until answered) and nothing is left hung."""
    import random

    seconds = float(os.environ.get("TETHER_CHAOS_SECONDS", "40"))
    own = broker_factory()
    b = bundle_factory(config=FAST, broker_=own)
    rng = random.Random(1234)
    answers: dict[str, list[dict[str, Any]]] = {}
    faults: dict[str, int] = {}
    stop_at = time.monotonic() + seconds

    async def client_loop() -> None:
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            cid = f"chaos-{n}"
            answers[cid] = []
            for _attempt in range(60):  # retry with the same id until some answer comes
                try:
                    async with b.client() as c:
                        r = await c.call(
                            b.device, rng.choice(["stats", "agent"]), "ping", cmd_id=cid, timeout=3
                        )
                    answers[cid].append(r)
                    break
                except Exception:  # broker down or no answer yet: try again
                    await asyncio.sleep(0.3)

    async def chaos_loop() -> None:
        while time.monotonic() < stop_at - 3:
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            what = rng.choice(["kill_stats", "stop_stats", "kill_gateway", "broker"])
            faults[what] = faults.get(what, 0) + 1
            try:
                if what == "kill_stats":
                    b.kill("stats")
                elif what == "stop_stats":
                    pid = b.kill("stats", signal.SIGSTOP)
                    await asyncio.sleep(rng.uniform(0.5, 2.0))
                    os.kill(pid, signal.SIGCONT)
                elif what == "kill_gateway":
                    b.kill("gateway")
                else:
                    own.stop()
                    await asyncio.sleep(rng.uniform(0.5, 2.0))
                    own.start()
            except (ValueError, ProcessLookupError):
                pass  # the process was between lives

    await asyncio.gather(client_loop(), chaos_loop())
    unanswered = [k for k, v in answers.items() if not v]
    codes: dict[str, int] = {}
    for v in answers.values():
        for r in v:
            key = "ok" if r.get("ok") else r["error"]["code"]
            codes[key] = codes.get(key, 0) + 1
    print(
        f"\nchaos {seconds:.0f}s: {len(answers)} commands, answers by code {codes}, "
        f"faults {faults}, unanswered {len(unanswered)}"
    )
    assert not unanswered
    assert all(len(v) == 1 for v in answers.values())
    assert set(codes) <= {"ok", "service_unavailable", "timeout", "busy"}
    # Nothing hung: the bundle answers again once the faults stop.
    for _ in range(100):
        r = await b.call("stats", "ping", timeout=5)
        if r["ok"]:
            break
        await asyncio.sleep(0.3)
    assert r["ok"]
    # ...and supervisord has every program running again (a gateway killed last may still be
    # inside its startsecs).
    for _ in range(60):
        out = b.supervisorctl("status")
        if all("RUNNING" in line for line in out.splitlines() if line.strip()):
            break
        await asyncio.sleep(0.5)
    assert all("RUNNING" in line for line in out.splitlines() if line.strip()), out


async def test_cancel_a_running_job(stats_bundle: Bundle) -> None:
    # Found by a fresh user: cancel was acknowledged but the sample ran on to its end.
    job = await _start_sample(stats_bundle, 30)
    await asyncio.sleep(0.5)
    r = await stats_bundle.call("stats", "jobs/cancel", {"job_id": job})
    assert r["ok"], r
    final = await _final(stats_bundle, job, 10)
    assert final["state"] == "cancelled"
    assert final["error"]["code"] == "cancelled"
