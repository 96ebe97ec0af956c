"""The containers service end to end: operator -> broker -> gateway -> worker -> dockerd.

One bundle (real supervisord, gateway and containers worker) per module, pointed at the
session's private dockerd (tests/containers_fixtures.py) through ``containers.docker_host``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from common.devbroker import Mosquitto
from common.pki import DevPki
from tests.containers_fixtures import LABEL, DockerEnv, docker_env
from tests.harness import Bundle

__all__ = ["docker_env"]

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def bundle(pki: DevPki, broker: Mosquitto, docker_env: DockerEnv) -> Iterator[Bundle]:
    b = Bundle(
        pki,
        broker,
        ["containers"],
        {"containers": {"docker_host": docker_env.host, "call_timeout": 4.0, "probe_interval": 1}},
    )
    try:
        b.start()
        yield b
    finally:
        b.cleanup()
        docker_env.remove_test_containers()


async def job_events(
    q: asyncio.Queue[tuple[str, bytes]], job_id: str, timeout: float
) -> list[dict[str, Any]]:
    """Events of one job from a jobs/+ subscription, in order, up to the final one."""
    seen: dict[int, dict[str, Any]] = {}
    async with asyncio.timeout(timeout):
        while True:
            topic, payload = await q.get()
            if not topic.endswith(f"/{job_id}"):
                continue
            ev = msgspec.json.decode(payload)
            seen[ev["seq"]] = ev
            if ev["state"] in ("succeeded", "failed", "cancelled"):
                return [seen[k] for k in sorted(seen)]


def ok(reply: dict[str, Any]) -> Any:
    assert reply["ok"] is True, reply
    return reply["result"]


def code(reply: dict[str, Any]) -> str:
    assert reply["ok"] is False, reply
    assert reply["error"]["message"]
    return str(reply["error"]["code"])


async def test_capabilities_list_the_actions(bundle: Bundle) -> None:
    caps = ok(await bundle.call("agent", "capabilities"))
    text = msgspec.json.encode(caps).decode()
    for action in ("ps", "run", "logs/follow", "pull", "login", "engine/install", "jobs/cancel"):
        assert f'"{action}"' in text, action


async def test_run_follow_stop_remove_over_mqtt(bundle: Bundle, docker_env: DockerEnv) -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    script = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.1; done"
    c = ok(
        await bundle.call(
            "containers",
            "run",
            {
                "image": docker_env.image,
                "name": name,
                "command": ["sh", "-c", script],
                "env": {"A": "1"},
                "labels": {LABEL: "1"},
            },
        )
    )
    assert c["name"] == name and c["state"] == "running"
    page = ok(await bundle.call("containers", "ps", {"label": LABEL}))
    assert name in [x["name"] for x in page["containers"]]
    assert (
        code(
            await bundle.call(
                "containers", "run", {"image": docker_env.image, "name": name, "command": "true"}
            )
        )
        == "conflict"
    )

    reply, events = await bundle.run_job(
        "containers", "logs/follow", {"name": name, "tail": 0, "max_lines": 8}, timeout=30
    )
    ok(reply)
    assert events[-1]["state"] == "succeeded", events[-1]
    assert events[-1]["result"] == {"lines": 8, "stopped": "max_lines"}
    lines = [ln for ev in events for ln in ev.get("lines", [])]
    assert len(lines) == 8 and all(ln.startswith("tick-") for ln in lines)

    await asyncio.sleep(0.3)
    logs = ok(await bundle.call("containers", "logs", {"name": name, "tail": 3}))
    assert len(logs["lines"]) == 3 and all(ln.startswith("tick-") for ln in logs["lines"])

    assert (
        ok(await bundle.call("containers", "stop", {"name": name, "timeout": 1}))["state"]
        == "exited"
    )
    assert ok(await bundle.call("containers", "remove", {"name": name}))["removed"] is True
    assert code(await bundle.call("containers", "inspect", {"name": name})) == "not_found"
    assert code(await bundle.call("containers", "run", {"image": "NOT/valid"})) == "invalid_request"


async def test_login_and_authenticated_pull_with_progress(
    bundle: Bundle, docker_env: DockerEnv
) -> None:
    client = docker_env.client()
    try:
        if client.images.list(name=docker_env.private_image):
            client.api.remove_image(docker_env.private_image, force=True)
    finally:
        client.close()
    reg, user = docker_env.registry, docker_env.username
    bad = await bundle.call(
        "containers", "login", {"registry": reg, "username": user, "password": "wrong-pw"}
    )
    assert code(bad) == "auth_failed"
    good = await bundle.call(
        "containers", "login", {"registry": reg, "username": user, "password": docker_env.password}
    )
    assert ok(good) == {"registry": reg, "username": user, "stored": True}

    # Subscribed before the start: a fast pull is over before its reply arrives.
    async with bundle.client() as c, c.subscribe(c.topics(bundle.device).jobs_filter()) as q:
        reply = await c.call(
            bundle.device, "containers", "pull", {"image": docker_env.private_image}
        )
        job_id = ok(reply)["job_id"]
        events = await job_events(q, job_id, 60)
    final = events[-1]
    assert final["state"] == "succeeded", final
    assert docker_env.private_image in final["result"]["tags"]
    progress = [ev["progress"] for ev in events if ev.get("progress") is not None]
    assert progress[-1] == 100 and any(0 < p < 100 for p in progress), progress
    lines = [ln for ev in events for ln in ev.get("lines", [])]
    assert any("Pull complete" in ln for ln in lines), lines

    # The password is in no reply, no job event and no log line of the bundle.
    everything = msgspec.json.encode([bad, good, reply, events]).decode() + bundle.logs()
    assert docker_env.password not in everything
    ok(await bundle.call("containers", "logout", {"registry": reg}))


async def wait_health(bundle: Bundle, state: str, engine: str, timeout: float = 15) -> None:
    """Until the retained health message shows the containers service in ``state``."""
    async with bundle.client() as c, c.subscribe(c.topics(bundle.device).health) as q:
        last: Any = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    _, payload = await q.get()
                    last = msgspec.json.decode(payload)["services"].get("containers")
                    if last and last["state"] == state and last["facts"]["engine"] == engine:
                        return
        except TimeoutError:
            raise AssertionError(f"health never showed {state}/{engine}: {last}") from None


async def test_engine_stopped_and_back_over_mqtt(bundle: Bundle, docker_env: DockerEnv) -> None:
    ok(await bundle.call("containers", "ps"))
    docker_env.stop_engine()
    try:
        await wait_health(bundle, "degraded", "stopped")
        t0 = time.monotonic()
        reply = await bundle.call("containers", "ps")
        assert time.monotonic() - t0 < 3
        assert code(reply) == "service_unavailable"
        assert docker_env.host in reply["error"]["message"]
        engine = ok(await bundle.call("containers", "engine"))
        assert engine["running"] is False and engine["reason"]
        # The worker itself stays healthy and keeps answering other requests.
        assert ok(await bundle.call("containers", "jobs/list")) is not None
    finally:
        docker_env.start_engine()
    deadline = time.monotonic() + 15
    while True:
        reply = await bundle.call("containers", "ps")
        if reply["ok"]:
            break
        assert time.monotonic() < deadline, reply
        await asyncio.sleep(0.3)
    assert ok(await bundle.call("containers", "engine"))["running"] is True
    await wait_health(bundle, "ok", "running")
    # Expected failures are logged briefly, never as crashes.
    assert "Traceback" not in bundle.logs("containers"), bundle.logs("containers")


async def test_worker_stopped_during_a_followed_stream(
    bundle: Bundle, docker_env: DockerEnv
) -> None:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    ok(
        await bundle.call(
            "containers",
            "run",
            {
                "image": docker_env.image,
                "name": name,
                "command": ["sh", "-c", "while true; do echo x; sleep 0.2; done"],
                "labels": {LABEL: "1"},
            },
        )
    )
    job = ok(await bundle.call("containers", "logs/follow", {"name": name, "max_seconds": 120}))
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    bundle.supervisorctl("stop", "containers")
    assert time.monotonic() - t0 < 10, "the worker did not stop promptly with a stream open"
    try:
        events = await bundle.follow_job(job["job_id"], timeout=15)
        assert events[-1]["state"] == "failed", events[-1]
    finally:
        bundle.supervisorctl("start", "containers")
    deadline = time.monotonic() + 15
    while not (await bundle.call("containers", "ps", {"name": name}))["ok"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.3)


async def test_engine_install_goes_through_the_apt_service(
    pki: DevPki, broker: Mosquitto, docker_env: DockerEnv
) -> None:
    """engine/install asks the apt service (so it queues behind apt's jobs and waits for the
    dpkg lock like any package change); docker.io is installed here, so apt changes nothing."""
    b = Bundle(pki, broker, ["apt", "containers"], {"containers": {"docker_host": docker_env.host}})
    try:
        await asyncio.to_thread(b.start)
        reply, events = await b.run_job("containers", "engine/install", {"force": True}, 300)
        assert reply["ok"], reply
        final = events[-1]
        assert final["state"] == "succeeded", f"{final.get('error')} {b.logs('apt')[-1500:]}"
        assert final["result"]["installed"] is True
        lines = [ln for e in events for ln in e.get("lines", [])]
        assert any(ln.startswith("apt job apt-") for ln in lines), lines
        apt_jobs = (await b.call("apt", "jobs/list"))["result"]
        assert [j["action"] for j in apt_jobs] == ["install"]
        assert apt_jobs[0]["state"] == "succeeded"
    finally:
        b.cleanup()


async def test_engine_install_needs_the_apt_service(bundle: Bundle) -> None:
    reply, events = await bundle.run_job("containers", "engine/install", {"force": True}, 60)
    assert reply["ok"], reply
    assert events[-1]["state"] == "failed"
    assert "apt service is not enabled" in events[-1]["error"]["message"]
