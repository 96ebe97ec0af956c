"""Start-up time, memory (PSS/RSS/USS) at idle and under load, the import floor, idle CPU."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.env import CLK_TCK, REPO, Env, bundle_processes, cpu_ticks, smaps
from bench.rtt import Target, client, rate
from tests.harness import Bundle

PROBE_DIR = Path(__file__).resolve().parent / "probe"


def _kind(argv0: str) -> str | None:
    if argv0.endswith("supervisord"):
        return "supervisord"
    parts = Path(argv0).parts
    if len(parts) >= 3 and parts[-1] == "__main__.py" and parts[-3] == "services":
        return parts[-2]
    return None


def read_probe(d: Path) -> dict[str, list[str]]:
    """{process kind: modules it had imported} from the probe's dump files."""
    out: dict[str, list[str]] = {}
    for f in d.glob("*.txt"):
        first, _, rest = f.read_text().partition("\n")
        kind = _kind(first.split(" ")[0])
        if kind:
            out[kind] = rest.split()
    return out


async def _wait_online(c: Any, device: str, t0: float, timeout: float = 30.0) -> float:
    async with c.subscribe(c.topics(device).status) as q:
        deadline = time.monotonic() + timeout
        while True:
            _, payload = await asyncio.wait_for(q.get(), max(0.1, deadline - time.monotonic()))
            body = msgspec.json.decode(payload)
            if isinstance(body, dict) and body.get("state") == "online":
                return time.perf_counter() - t0


async def _first_ok(c: Any, device: str, service: str, action: str, t0: float) -> float:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            r = await c.call(device, service, action, timeout=1.0)
            if r.get("ok"):
                return time.perf_counter() - t0
        await asyncio.sleep(0.01)
    return float("nan")


async def startup_once(env: Env, services: list[str], probe: Path | None) -> dict[str, float]:
    extra = {"PYTHONPATH": str(PROBE_DIR), "TETHER_BENCH_MODULES": str(probe)} if probe else None
    b = env.bundle(services, extra_env=extra)
    try:
        async with client(env) as c:
            await c._ensure_reply_sub(b.device)  # not part of the timing
            async with c.subscribe(c.topics(b.device).status):
                wall0 = time.time()
                t0 = time.perf_counter()
                b.supervisor.start()
                online = await _wait_online(c, b.device, t0)
                agent = await _first_ok(c, b.device, "agent", "ping", t0)
                stats = await _first_ok(c, b.device, "stats", "ping", t0)
        return {
            "online_s": online,
            "agent_ping_s": agent,
            "stats_ping_s": stats,
            **milestones(b.dir / "sv", wall0),
        }
    finally:
        b.cleanup()  # SIGTERM: the probe writes its files at exit


def _log_times(path: Path, needle: str) -> float | None:
    """Wall-clock time of the first log line containing ``needle`` (ms resolution)."""
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            if needle in line:
                stamp = line[:23]  # 2026-01-01 12:00:00,123
                with contextlib.suppress(ValueError):
                    t = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
                    return t + int(stamp[20:23]) / 1000
    return None


def milestones(sv: Path, wall0: float) -> dict[str, float]:
    """Where the start-up time goes, from supervisord's and the gateway's logs."""
    marks = {
        "supervisord_ready_s": _log_times(sv / "supervisord.log", "supervisord started with"),
        "gateway_spawned_s": _log_times(sv / "supervisord.log", "spawned: 'gateway'"),
        "gateway_connected_s": _log_times(sv / "gateway.log", "connected to"),
    }
    return {k: round(v - wall0, 3) for k, v in marks.items() if v is not None}


async def startup(env: Env, services: list[str], rounds: int) -> tuple[dict[str, Any], Any]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="bprobe-") as d:
        for i in range(rounds):
            runs.append(await startup_once(env, services, Path(d) if i == 0 else None))
        modules = read_probe(Path(d))
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    med = {k: round(sorted(r[k] for r in runs)[len(runs) // 2], 3) for k in keys}
    return {"median": med, "runs": runs, "services": services}, modules


# --- memory and CPU --------------------------------------------------------------------------


def snapshot(procs: dict[str, int]) -> dict[str, dict[str, int]]:
    per = {name: smaps(pid) for name, pid in procs.items()}
    per["total"] = {k: sum(v[k] for v in per.values()) for k in ("rss", "pss", "uss")}
    return per


async def settle(procs: dict[str, int], limit: float = 60.0) -> float:
    """Wait until start-up work is over (apt reads its package lists, workers describe
    themselves): two quiet seconds in a row, at most ``limit``; returns the wait."""
    t0 = time.perf_counter()
    quiet = 0
    before = sum(cpu_ticks(p) for p in procs.values())
    while quiet < 2 and time.perf_counter() - t0 < limit:
        await asyncio.sleep(1.0)
        now = sum(cpu_ticks(p) for p in procs.values())
        quiet = quiet + 1 if now - before <= 3 else 0  # <= 3% of one core over that second
        before = now
    return round(time.perf_counter() - t0, 1)


async def bundle_footprint(
    env: Env, b: Bundle, idle_seconds: float, load_seconds: float
) -> dict[str, Any]:
    procs = bundle_processes(b)
    settled = await settle(procs)
    t_start = {n: cpu_ticks(p) for n, p in procs.items()}
    t0 = time.perf_counter()
    await asyncio.sleep(idle_seconds)
    elapsed = time.perf_counter() - t0
    t_end = {n: cpu_ticks(p) for n, p in procs.items()}
    idle_mem = snapshot(procs)
    cpu = {n: 100.0 * (t_end[n] - t_start[n]) / CLK_TCK / elapsed for n in procs}
    cpu["total"] = sum(cpu.values())

    peak: dict[str, dict[str, int]] = {}

    async def sample(stop: asyncio.Event) -> None:
        while not stop.is_set():
            for n, v in snapshot(procs).items():
                cur = peak.setdefault(n, {"rss": 0, "pss": 0, "uss": 0})
                for k in cur:
                    cur[k] = max(cur[k], v[k])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(stop))
    async with client(env) as c1, client(env) as c2:
        ping = Target("stats/ping", c1, b.device, "stats", "ping")
        get = Target("stats/get", c2, b.device, "stats", "get")
        await asyncio.gather(rate(ping, 64, load_seconds), rate(get, 4, load_seconds))
    stop.set()
    await sampler
    return {
        "pids": procs,
        "idle": idle_mem,
        "load_peak": peak,
        "idle_cpu_pct_of_one_core": {n: round(v, 3) for n, v in cpu.items()},
        "idle_seconds": round(elapsed, 1),
        "settled_after_s": settled,
    }


FLOOR_SCRIPT = """
import importlib, signal, sys
for m in open(sys.argv[1]).read().split():
    if m == "__main__" or m.endswith(".__main__"):
        continue
    try:
        importlib.import_module(m)
    except BaseException:
        pass
print("ready", flush=True)
signal.pause()
"""


def floor(modules: dict[str, list[str]], settle: float = 2.0) -> dict[str, Any]:
    """The same interpreter importing the same modules, doing nothing: one per process."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="bfloor-") as d:
        try:
            for kind, mods in modules.items():
                f = Path(d) / f"{kind}.txt"
                f.write_text("\n".join(mods))
                procs[kind] = subprocess.Popen(
                    [sys.executable, "-c", FLOOR_SCRIPT, str(f)],
                    cwd=REPO,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )
            for p in procs.values():
                assert p.stdout is not None
                p.stdout.readline()
            time.sleep(settle)
            mem = snapshot({k: p.pid for k, p in procs.items()})
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(10)
    return {"memory": mem, "modules": {k: len(v) for k, v in modules.items()}}
