"""The containers service's handlers against a real, private Docker Engine and registry.

The service context is built in-process exactly as ``python -m services.containers`` builds
it; job events are collected from the real JobManager. See tests/containers_fixtures.py for
the engine, the registry and the images. End-to-end tests through the gateway and broker are
in test_containers_bundle.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.config import ContainersSettings, Settings
from common.errors import TetherError
from common.jobs import JobManager
from common.messages import IpcEvent, JobEvent
from services.containers import backend
from services.containers.actions import ACTIONS, ContainersContext, report
from tests.containers_fixtures import LABEL, DockerEnv, clean_containers, docker_env

__all__ = ["clean_containers", "docker_env"]

pytestmark = pytest.mark.system


class JobSink:
    """Stands where the worker runtime would: owns the real JobManager, keeps its events."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self.jobs = JobManager("containers", self._emit)

    async def _emit(self, ev: IpcEvent) -> None:
        self.events.append(msgspec.json.decode(ev.payload, type=JobEvent))

    def of(self, job_id: str) -> list[JobEvent]:
        return [e for e in self.events if e.job_id == job_id]


@pytest.fixture
async def ctx(clean_containers: DockerEnv, tmp_path: Path) -> AsyncIterator[ContainersContext]:
    settings = Settings(
        device_id="t-containers",
        state_dir=str(tmp_path / "state"),
        containers=ContainersSettings(
            docker_host=clean_containers.host, call_timeout=5.0, probe_interval=0.5
        ),
    )
    c = ContainersContext.build(JobSink(), settings)
    yield c
    c.engine.close()


def sink(ctx: ContainersContext) -> JobSink:
    assert isinstance(ctx.worker, JobSink)
    return ctx.worker


async def call(ctx: ContainersContext, action: str, args: Any = None, timeout: float = 30) -> Any:
    raw = msgspec.json.encode(args) if args is not None else None
    return msgspec.to_builtins(await ACTIONS.invoke(ctx, action, raw, timeout))


async def fails(ctx: ContainersContext, action: str, args: Any = None) -> TetherError:
    with pytest.raises(TetherError) as info:
        await call(ctx, action, args)
    return info.value


async def wait_job(ctx: ContainersContext, job_id: str, timeout: float = 60) -> JobEvent:
    async with asyncio.timeout(timeout):
        while True:
            ev = ctx.jobs.get(job_id)
            if ev.state.final:
                # As the operator sees it: through JSON.
                return msgspec.json.decode(msgspec.json.encode(ev), type=JobEvent)
            await asyncio.sleep(0.05)


async def wait_exited(ctx: ContainersContext, cid: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (await call(ctx, "ps", {"name": cid}))["containers"][0]["state"] != "exited":
        assert time.monotonic() < deadline, f"{cid} did not exit"
        await asyncio.sleep(0.1)


def stopped(pid: int) -> bool:
    """Whether the process is in the stopped state (T) right now."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


def uname(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def run_sleeper(ctx: ContainersContext, denv: DockerEnv, **extra: Any) -> dict[str, Any]:
    args = {
        "image": denv.image,
        "name": uname(),
        "command": ["sleep", "300"],
        "labels": {LABEL: "1"},
        **extra,
    }
    result: dict[str, Any] = await call(ctx, "run", args)
    return result


# --- lifecycle -------------------------------------------------------------------------------


async def test_run_ps_stop_start_restart_rename_remove(
    ctx: ContainersContext, docker_env: DockerEnv
) -> None:
    c = await run_sleeper(ctx, docker_env, env={"GREETING": "hello"})
    name = c["name"]
    assert c["state"] == "running" and c["image"] == docker_env.image
    assert c["labels"][LABEL] == "1" and c["restart_count"] == 0

    page = await call(ctx, "ps", {"label": LABEL})
    assert [x["name"] for x in page["containers"]] == [name] and page["total"] == 1
    one = await call(ctx, "ps", {"name": c["id"]})
    assert one["containers"][0]["name"] == name

    details = await call(ctx, "inspect", {"name": name})
    assert "GREETING=hello" in details["attrs"]["Config"]["Env"]

    stopped = await call(ctx, "stop", {"name": name, "timeout": 1})
    assert stopped["state"] == "exited"
    running = await call(ctx, "ps", {"all": False, "label": LABEL})
    assert running["containers"] == []
    assert (await call(ctx, "start", {"name": name}))["state"] == "running"
    restarted = await call(ctx, "restart", {"name": name, "timeout": 1})
    assert restarted["state"] == "running"

    new = uname("renamed")
    assert (await call(ctx, "rename", {"name": name, "new_name": new}))["name"] == new
    assert (await fails(ctx, "inspect", {"name": name})).code == "not_found"

    conflict = await fails(ctx, "remove", {"name": new})  # running, no force
    assert conflict.code == "conflict", conflict.message
    removed = await call(ctx, "remove", {"name": new, "force": True})
    assert removed == {"id": c["id"], "removed": True}
    assert (await fails(ctx, "ps", {"name": new})).code == "not_found"


async def test_logs_bounded_and_timestamps(ctx: ContainersContext, docker_env: DockerEnv) -> None:
    script = (
        "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done; sleep 0.3; echo oops >&2"
    )
    c = await call(
        ctx,
        "run",
        {"image": docker_env.image, "command": ["sh", "-c", script], "labels": {LABEL: "1"}},
    )
    await wait_exited(ctx, c["id"])
    r = await call(ctx, "logs", {"name": c["id"], "tail": 5})
    assert r["lines"] == ["line-296", "line-297", "line-298", "line-299", "oops"]
    assert r["truncated"] is False
    only_err = await call(ctx, "logs", {"name": c["id"], "stdout": False})
    assert only_err["lines"] == ["oops"]
    ts = await call(ctx, "logs", {"name": c["id"], "tail": 1, "timestamps": True})
    assert ts["lines"][0].endswith(" oops") and ts["lines"][0][:4].isdigit()

    # The byte budget keeps the newest lines and says it cut.
    ctx.settings.containers.logs_max_bytes = 1024
    r = await call(ctx, "logs", {"name": c["id"], "tail": 300})
    assert r["truncated"] is True and r["bytes"] <= 1024 and r["lines"][-1] == "oops"
    assert (await fails(ctx, "logs", {"name": c["id"], "tail": 100000})).code == "invalid_request"


async def test_logs_follow_job_streams_and_stops(
    ctx: ContainersContext, docker_env: DockerEnv
) -> None:
    script = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.1; done"
    c = await call(
        ctx,
        "run",
        {"image": docker_env.image, "command": ["sh", "-c", script], "labels": {LABEL: "1"}},
    )
    # Stops at the line limit.
    ref = await call(ctx, "logs/follow", {"name": c["id"], "tail": 0, "max_lines": 5})
    final = await wait_job(ctx, ref["job_id"], 20)
    assert final.state == "succeeded", final
    assert final.result == {"lines": 5, "stopped": "max_lines"}
    lines = [ln for e in sink(ctx).of(ref["job_id"]) for ln in e.lines]
    assert len(lines) == 5 and all(ln.startswith("tick-") for ln in lines)

    # Stops when asked (jobs/cancel), promptly.
    ref = await call(ctx, "logs/follow", {"name": c["name"], "max_seconds": 60})
    deadline = time.monotonic() + 15
    while not any(e.lines for e in sink(ctx).of(ref["job_id"])):
        assert time.monotonic() < deadline, "no lines streamed"
        await asyncio.sleep(0.05)
    await call(ctx, "jobs/cancel", {"job_id": ref["job_id"]})
    t0 = time.monotonic()
    final = await wait_job(ctx, ref["job_id"], 10)
    assert time.monotonic() - t0 < 5
    assert final.result is not None and final.result["stopped"] == "cancelled"
    assert final.result["lines"] > 0

    # Stops at the time limit.
    ref = await call(ctx, "logs/follow", {"name": c["name"], "max_seconds": 0.5})
    final = await wait_job(ctx, ref["job_id"], 5)
    assert final.result is not None and final.result["stopped"] == "max_seconds"

    # Ends by itself when the container stops.
    ref = await call(ctx, "logs/follow", {"name": c["name"], "max_seconds": 60})
    await call(ctx, "stop", {"name": c["name"], "timeout": 1})
    final = await wait_job(ctx, ref["job_id"], 10)
    assert final.result is not None and final.result["stopped"] == "ended", final

    too_long = await fails(ctx, "logs/follow", {"name": c["name"], "max_seconds": 1e6})
    assert too_long.code == "invalid_request"
    assert (await fails(ctx, "logs/follow", {"name": "nosuch-ctr"})).code == "not_found"


async def test_ports_env_restart_policy(ctx: ContainersContext, docker_env: DockerEnv) -> None:
    c = await call(
        ctx,
        "run",
        {
            "image": docker_env.image,
            "name": uname("web"),
            "command": ["sh", "-c", 'echo "$MSG" > /tmp/index.html; exec httpd -f -p 80 -h /tmp'],
            "env": {"MSG": "hello from tether"},
            "ports": ["127.0.0.1:18080:80", "9999/udp"],
            "restart": "on-failure",
            "restart_max_retries": 3,
            "memory": 64 * 1024 * 1024,
            "cpus": 0.5,
            "labels": {LABEL: "1"},
        },
    )
    assert {
        "container_port": 80,
        "protocol": "tcp",
        "host_ip": "127.0.0.1",
        "host_port": 18080,
    } in c["ports"]
    udp = [p for p in c["ports"] if p["protocol"] == "udp"]
    assert udp and udp[0]["container_port"] == 9999 and udp[0]["host_port"]
    # The published port really answers (from the engine's network namespace).
    deadline = time.monotonic() + 10
    while True:
        r = docker_env.in_netns(
            "/bin/busybox", "wget", "-q", "-O-", "http://127.0.0.1:18080/index.html"
        )
        if r.stdout.strip() == "hello from tether":
            break
        assert time.monotonic() < deadline, r.stderr
        await asyncio.sleep(0.2)
    attrs = (await call(ctx, "inspect", {"name": c["name"]}))["attrs"]
    hc = attrs["HostConfig"]
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert hc["Memory"] == 64 * 1024 * 1024 and hc["NanoCpus"] == 500_000_000

    # A restart policy the engine acts on: "always" brings back a container that exits.
    flappy = await call(
        ctx,
        "run",
        {
            "image": docker_env.image,
            "command": ["sh", "-c", "sleep 0.2; exit 3"],
            "restart": "always",
            "labels": {LABEL: "1"},
        },
    )
    deadline = time.monotonic() + 20
    while (await call(ctx, "ps", {"name": flappy["id"]}))["containers"][0]["restart_count"] < 1:
        assert time.monotonic() < deadline, "restart policy did not restart the container"
        await asyncio.sleep(0.2)


async def test_run_with_binds_and_network(
    ctx: ContainersContext, docker_env: DockerEnv, tmp_path: Path
) -> None:
    host_dir = tmp_path / "shared"
    host_dir.mkdir()
    (host_dir / "in.txt").write_text("from host")
    c = await call(
        ctx,
        "run",
        {
            "image": docker_env.image,
            "command": ["sh", "-c", "cat /mnt/in/in.txt; echo written > /mnt/out/out.txt"],
            "binds": [f"{host_dir}:/mnt/in:ro", f"{host_dir}:/mnt/out"],
            "network": "none",
            "labels": {LABEL: "1"},
        },
    )
    await wait_exited(ctx, c["id"])
    assert (host_dir / "out.txt").read_text() == "written\n"
    logs = await call(ctx, "logs", {"name": c["id"]})
    assert logs["lines"] == ["from host"]
    attrs = (await call(ctx, "inspect", {"name": c["id"]}))["attrs"]
    assert attrs["HostConfig"]["NetworkMode"] == "none"


async def test_name_conflict_unknown_ids_and_bad_input(
    ctx: ContainersContext, docker_env: DockerEnv
) -> None:
    c = await run_sleeper(ctx, docker_env)
    clash = await fails(
        ctx,
        "run",
        {"image": docker_env.image, "name": c["name"], "command": "true", "labels": {LABEL: "1"}},
    )
    assert clash.code == "conflict" and "already in use" in clash.message, clash.message
    other = await run_sleeper(ctx, docker_env)
    clash = await fails(ctx, "rename", {"name": other["name"], "new_name": c["name"]})
    assert clash.code == "conflict"

    for action, args in [
        ("inspect", {"name": "no-such-container"}),
        ("start", {"name": "no-such-container"}),
        ("stop", {"name": "0123456789ab"}),
        ("logs", {"name": "no-such-container"}),
        ("remove", {"name": "no-such-container", "force": True}),
    ]:
        err = await fails(ctx, action, args)
        assert err.code == "not_found", (action, err.code, err.message)
    missing = await fails(ctx, "run", {"image": "tether-test/absent:1", "pull": "never"})
    assert missing.code == "not_found" and "not on the device" in missing.message

    for action, args, field in [
        ("run", {"image": "Bad/UPPER:1"}, "image"),
        ("run", {"image": "ok:bad tag"}, "image"),
        ("run", {"image": docker_env.image, "name": "-bad"}, "name"),
        ("run", {"image": docker_env.image, "name": "a"}, "name"),
        ("run", {"image": docker_env.image, "ports": ["99999:80"]}, "ports"),
        ("run", {"image": docker_env.image, "ports": ["80/icmp"]}, "ports"),
        ("run", {"image": docker_env.image, "ports": ["x.y:80:80"]}, "ports"),
        ("run", {"image": docker_env.image, "binds": ["relative:/x:zz"]}, "binds"),
        ("run", {"image": docker_env.image, "binds": ["/etc/../root:/x"]}, "binds"),
        ("run", {"image": docker_env.image, "binds": ["/tmp:data"]}, "binds"),
        ("run", {"image": docker_env.image, "env": {"BAD-KEY": "1"}}, "env.BAD-KEY"),
        ("run", {"image": docker_env.image, "network": "bad net"}, "network"),
        ("run", {"image": docker_env.image, "memory": 10}, "memory"),
        ("run", {"image": docker_env.image, "restart": "sometimes"}, "restart"),
        ("stop", {"name": "bad/name"}, "name"),
        ("rename", {"name": c["name"], "new_name": "no spaces"}, "new_name"),
        ("pull", {"image": "UPPER"}, "image"),
        ("login", {"registry": "bad host!", "username": "u", "password": "p"}, "registry"),
    ]:
        err = await fails(ctx, action, args)
        assert err.code == "invalid_request", (args, err.message)
        assert err.details["field"] == field, (args, err.details)
        assert err.message
    # Nothing half-made was left behind by the refused requests.
    page = await call(ctx, "ps", {"label": LABEL})
    assert page["total"] == 2


async def test_images_stats_prune(ctx: ContainersContext, docker_env: DockerEnv) -> None:
    imgs = await call(ctx, "images")
    assert any(docker_env.image in i["tags"] for i in imgs["images"])
    assert all(i["size"] > 0 for i in imgs["images"])
    first = await call(ctx, "images", {"limit": 1})
    assert len(first["images"]) == 1 and first["total"] == imgs["total"]

    c = await run_sleeper(ctx, docker_env)
    st = await call(ctx, "stats")
    mine = [s for s in st if s["name"] == c["name"]]
    assert mine and mine[0]["memory_limit"] > 0 and mine[0]["pids"] >= 1
    one = await call(ctx, "stats", {"name": c["name"]})
    assert len(one) == 1 and one[0]["id"] == c["id"]

    done = await call(
        ctx, "run", {"image": docker_env.image, "command": ["true"], "labels": {LABEL: "1"}}
    )
    await wait_exited(ctx, done["id"])
    pruned = await call(ctx, "prune", {"images": "none"})
    assert done["id"] in pruned["containers_deleted"]
    assert c["id"] not in pruned["containers_deleted"]  # running: kept
    assert (await fails(ctx, "ps", {"name": done["id"]})).code == "not_found"
    # A dangling image (untagged) goes with images = "dangling".
    dclient = docker_env.client()
    try:
        tar = docker_env.dir / "base.tar"
        dclient.api.import_image_from_file(str(tar), repository="tether-test/dangling", tag="x")
        img_id = dclient.api.inspect_image("tether-test/dangling:x")["Id"]
        dclient.api.tag(docker_env.image, "tether-test/dangling", "x")  # steal the tag
        pruned = await call(ctx, "prune", {"containers": False, "images": "dangling"})
        assert img_id in pruned["images_deleted"]
    finally:
        dclient.api.remove_image("tether-test/dangling:x")
        dclient.close()


# --- registries ------------------------------------------------------------------------------


async def test_login_pull_with_progress_logout(
    ctx: ContainersContext, docker_env: DockerEnv
) -> None:
    bad = await fails(
        ctx,
        "login",
        {"registry": docker_env.registry, "username": docker_env.username, "password": "wrong"},
    )
    assert bad.code == "auth_failed" and "wrong" not in bad.message
    creds = Path(ctx.creds.path)
    assert not creds.exists()

    # Without credentials the registry refuses the pull.
    ref = await call(ctx, "pull", {"image": docker_env.private_image})
    final = await wait_job(ctx, ref["job_id"])
    assert final.state == "failed" and final.error is not None
    assert final.error.code == "auth_failed", final.error

    ok = await call(
        ctx,
        "login",
        {
            "registry": docker_env.registry,
            "username": docker_env.username,
            "password": docker_env.password,
        },
    )
    assert ok == {"registry": docker_env.registry, "username": docker_env.username, "stored": True}
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.parent.stat().st_mode) == 0o700
    assert docker_env.password not in repr(ok)

    ref = await call(ctx, "pull", {"image": docker_env.private_image})
    final = await wait_job(ctx, ref["job_id"], 60)
    assert final.state == "succeeded", final
    result = final.result
    assert result is not None and result["image"] == docker_env.private_image
    assert docker_env.private_image in result["tags"]
    assert result["layers"] and all(la["status"] == "Pull complete" for la in result["layers"])
    events = sink(ctx).of(ref["job_id"])
    progress = [e.progress for e in events if e.progress is not None]
    assert progress == sorted(progress) and 0 < max(progress) <= 100
    lines = [ln for e in events for ln in e.lines]
    assert any("Download complete" in ln or "Downloading" in ln for ln in lines), lines
    assert any("Pull complete" in ln for ln in lines), lines
    everything = msgspec.json.encode(events).decode()
    assert docker_env.password not in everything

    # The stored login is used for run's pull, too.
    client = docker_env.client()
    client.api.remove_image(docker_env.private_image)
    client.close()
    c = await call(
        ctx,
        "run",
        {"image": docker_env.private_image, "command": ["true"], "labels": {LABEL: "1"}},
    )
    assert c["image"] == docker_env.private_image

    assert await call(ctx, "logout", {"registry": docker_env.registry}) == {
        "registry": docker_env.registry,
        "removed": True,
    }
    assert (await call(ctx, "logout", {"registry": docker_env.registry}))["removed"] is False
    assert docker_env.password not in creds.read_text()

    # Per-request credentials work without a stored login, and wrong ones are refused.
    client = docker_env.client()
    client.api.remove_image(docker_env.private_image, force=True)
    client.close()
    auth = {"username": docker_env.username, "password": "nope"}
    ref = await call(ctx, "pull", {"image": docker_env.private_image, "auth": auth})
    final = await wait_job(ctx, ref["job_id"])
    assert final.error is not None and final.error.code == "auth_failed"
    auth["password"] = docker_env.password
    ref = await call(ctx, "pull", {"image": docker_env.private_image, "auth": auth})
    assert (await wait_job(ctx, ref["job_id"])).state == "succeeded"

    missing = await call(
        ctx, "pull", {"image": f"{docker_env.registry}/tether/nope:1", "auth": auth}
    )
    final = await wait_job(ctx, missing["job_id"])
    assert final.error is not None and final.error.code == "not_found", final.error


# --- the engine ------------------------------------------------------------------------------


async def test_engine_info_and_install_is_idempotent(
    ctx: ContainersContext, docker_env: DockerEnv
) -> None:
    info = await call(ctx, "engine")
    assert info["installed"] is True and info["running"] is True
    assert info["version"].startswith("20.") or info["version"]
    assert info["storage"]["data_root"] == str(docker_env.dir / "data")
    assert info["storage"]["free"] > 0 and info["host"] == docker_env.host
    ref = await call(ctx, "engine/install")
    final = await wait_job(ctx, ref["job_id"])
    assert final.state == "succeeded"
    assert final.result == {"installed": True, "changed": False, "version": info["version"]}


async def test_engine_missing_error_says_how_to_install(tmp_path: Path) -> None:
    err = backend.unreachable(f"unix://{tmp_path}/docker.sock", "x", search_path=str(tmp_path))
    assert err.code == "engine_missing" and "engine/install" in err.message
    assert err.details["package"] == "docker.io"
    # With dockerd present (the real one) a missing socket means "not running".
    err = backend.unreachable(f"unix://{tmp_path}/docker.sock", "x")
    assert err.code == "service_unavailable" and "docker" in err.message.lower()


async def test_engine_stopped_midway_and_back(
    ctx: ContainersContext, docker_env: DockerEnv
) -> None:
    c = await run_sleeper(ctx, docker_env, restart="always")
    follow = await call(ctx, "logs/follow", {"name": c["name"], "max_seconds": 120})
    await asyncio.sleep(0.3)
    docker_env.stop_engine()

    # The stream breaks, and the job says why.
    final = await wait_job(ctx, follow["job_id"], 15)
    assert final.state == "failed" and final.error is not None
    assert final.error.code == "service_unavailable", final.error

    # Every call answers at once, naming the engine; nothing hangs.
    for action, args in [("ps", None), ("inspect", {"name": c["name"]}), ("images", None)]:
        t0 = time.monotonic()
        err = await fails(ctx, action, args)
        assert time.monotonic() - t0 < 3  # well below the 5 s call timeout
        assert err.code == "service_unavailable", (action, err.code, err.message)
        assert docker_env.host in err.message
    info = await call(ctx, "engine")
    assert info["running"] is False and info["installed"] is True and info["reason"]
    await ctx.engine.probe()
    rep = report(ctx)
    assert rep.state == "degraded" and rep.facts["engine"] == "stopped"

    # The engine comes back: the same context recovers without a restart.
    docker_env.start_engine()
    page = await call(ctx, "ps", {"label": LABEL})
    assert [x["name"] for x in page["containers"]] == [c["name"]]
    assert report(ctx).state == "ok"


async def test_hung_engine_times_out_and_recovers(
    ctx: ContainersContext, docker_env: DockerEnv
) -> None:
    ctx.engine.timeout = 1.5
    ctx.engine.close()  # the next call builds a client with the short timeout
    await call(ctx, "ps")
    assert docker_env.dockerd is not None
    pid = docker_env.dockerd.pid
    try:
        for _attempt in range(3):
            os.kill(pid, signal.SIGSTOP)
            deadline = time.monotonic() + 2
            while not stopped(pid):
                assert time.monotonic() < deadline, "dockerd did not stop on SIGSTOP"
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            failure: TetherError | None = None
            try:
                await call(ctx, "ps")
            except TetherError as err:
                failure = err
            if failure is not None:
                assert time.monotonic() - t0 < 5
                assert failure.code == "timeout" and "Docker engine" in failure.message
                break
            # It answered: something continued it meanwhile (the kernel sends SIGCONT to a
            # process group that becomes orphaned while it holds stopped members).
            assert not stopped(pid), "a stopped engine answered"
        else:
            pytest.fail("could not keep dockerd stopped long enough")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (await call(ctx, "ps"))["total"] >= 0


async def test_failed_start_leaves_nothing_and_pages(
    ctx: ContainersContext, docker_env: DockerEnv
) -> None:
    name = uname("broken")
    err = await fails(
        ctx,
        "run",
        {
            "image": docker_env.image,
            "name": name,
            "command": ["/no/such/binary"],
            "labels": {LABEL: "1"},
        },
    )
    assert err.code in ("failed", "invalid_request") and "no/such/binary" in err.message
    assert (await fails(ctx, "ps", {"name": name})).code == "not_found"

    made = [await run_sleeper(ctx, docker_env) for _ in range(3)]
    first = await call(ctx, "ps", {"label": LABEL, "limit": 2})
    assert first["total"] == 3 and len(first["containers"]) == 2 and first["next_offset"] == 2
    rest = await call(ctx, "ps", {"label": LABEL, "limit": 2, "offset": first["next_offset"]})
    assert len(rest["containers"]) == 1 and rest["next_offset"] is None
    seen = {c["name"] for c in first["containers"] + rest["containers"]}
    assert seen == {c["name"] for c in made}
