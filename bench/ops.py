"""Service operations next to their native tools, and what a call costs the worker in CPU."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench.env import CLK_TCK, Env, bundle_processes, cpu_ticks, summary_ms
from bench.rtt import client
from tests.harness import Bundle


async def call_cost(
    env: Env, b: Bundle, service: str, action: str, args: Any, n: int
) -> dict[str, Any]:
    """Wall time and CPU milliseconds per call of the worker and of the gateway (one in
    flight, so the deltas are this action's; clock ticks are 1/CLK_TCK s, hence many calls)."""
    procs = bundle_processes(b)
    async with client(env) as c:
        for _ in range(5):
            await c.call(b.device, service, action, args, timeout=60)
        w0, g0 = cpu_ticks(procs[service]), cpu_ticks(procs["gateway"])
        walls = []
        fails = 0
        for _ in range(n):
            t = time.perf_counter()
            r = await c.call(b.device, service, action, args, timeout=60)
            walls.append(time.perf_counter() - t)
            fails += 0 if r.get("ok") else 1
        w1, g1 = cpu_ticks(procs[service]), cpu_ticks(procs["gateway"])
    return {
        "calls": n,
        "failures": fails,
        "wall_ms": summary_ms(walls),
        "worker_cpu_ms_per_call": round((w1 - w0) * 1000 / CLK_TCK / n, 3),
        "gateway_cpu_ms_per_call": round((g1 - g0) * 1000 / CLK_TCK / n, 3),
    }


async def apt_vs_dpkg(env: Env, b: Bundle | None, rounds: int) -> dict[str, Any]:
    """apt ``list`` (every installed package) in-process and through the bundle, next to
    ``dpkg-query -W`` (process start included: a caller of it pays that too)."""
    try:
        from bench.apt_list import dpkg_query, list_all
        from common.config import AptSettings
        from common.jobs import JobManager
        from services.apt.actions import AptContext
    except ImportError as err:
        return {"skipped": f"services/apt cannot be imported here: {err}"}

    async def noop(_ev: Any) -> None:
        return None

    ctx = AptContext(JobManager("apt", noop), AptSettings())
    m = 0

    async def one_round(c: Any, inproc: list[float], dq: list[float], via: list[float]) -> None:
        nonlocal m
        t = time.perf_counter()
        await list_all(ctx)
        inproc.append(time.perf_counter() - t)
        t = time.perf_counter()
        m = await asyncio.to_thread(dpkg_query)
        dq.append(time.perf_counter() - t)
        if b is not None:
            t = time.perf_counter()
            await bundle_list_all(c, b.device)
            via.append(time.perf_counter() - t)

    t = time.perf_counter()
    n = await list_all(ctx)
    cold = time.perf_counter() - t
    inproc: list[float] = []
    dq: list[float] = []
    via: list[float] = []
    async with client(env) as c:
        if b is not None:
            await bundle_list_all(c, b.device)  # the worker's caches warm too
        for _ in range(rounds):
            await one_round(c, inproc, dq, via)
    d = statistics.median(dq)
    out: dict[str, Any] = {
        "packages": n,
        "dpkg_query_lines": m,
        "first_list_ms": round(cold * 1000, 1),
        "list_in_process_ms": round(statistics.median(inproc) * 1000, 2),
        "dpkg_query_ms": round(d * 1000, 2),
        "ratio_in_process": round(statistics.median(inproc) / d, 2),
    }
    if via:
        out["list_via_bundle_ms"] = round(statistics.median(via) * 1000, 2)
        out["ratio_via_bundle"] = round(statistics.median(via) / d, 2)
    return out


async def bundle_list_all(c: Any, device: str) -> int:
    page, count = 1, 0
    while True:
        args = {"filter": "installed", "page": page, "page_size": 1000}
        r = await c.call(device, "apt", "list", args, timeout=60)
        if not r.get("ok"):
            raise RuntimeError(f"apt/list failed: {r.get('error')}")
        count += len(r["result"]["packages"])
        if page >= r["result"]["pages"]:
            return count
        page += 1


async def containers_vs_docker(
    env: Env, b: Bundle, engine: Any, rounds: int, skipped: str | None
) -> dict[str, Any]:
    """containers ``ps`` (all) in-process and through the bundle, next to the Docker API asked
    directly: the raw ``GET /containers/json`` that ``docker ps -a`` sends, the docker SDK's
    ``containers.list(all=True)``, and the ``docker ps -a`` command (process start included)."""
    if engine is None:
        return {"skipped": skipped or "no private Docker Engine"}
    from dataclasses import dataclass

    from bench.docker import raw_list
    from common.config import ContainersSettings, Settings
    from common.jobs import JobManager
    from services.containers.actions import ACTIONS, ContainersContext

    async def noop(_ev: Any) -> None:
        return None

    @dataclass
    class Holder:
        jobs: JobManager

    settings = Settings(
        device_id="bench",
        state_dir=str(engine.dir / "state"),
        containers=ContainersSettings(docker_host=engine.host),
    )
    ctx = ContainersContext.build(Holder(JobManager("containers", noop)), settings)
    sdk = engine.client()
    cli = ["docker", "-H", engine.host, "ps", "-a", "-q"]
    timings: dict[str, list[float]] = {
        k: [] for k in ("ps_in_process", "ps_via_bundle", "raw_api", "sdk_list", "docker_cli")
    }
    count = 0
    try:
        async with client(env) as c:
            for _ in range(2):  # warm: API version probe, connections
                await ACTIONS.invoke(ctx, "ps", b"{}", 30)
                await c.call(b.device, "containers", "ps", {}, timeout=30)
            for _ in range(rounds):
                t = time.perf_counter()
                page: Any = await ACTIONS.invoke(ctx, "ps", b"{}", 30)
                timings["ps_in_process"].append(time.perf_counter() - t)
                count = len(page.containers)
                t = time.perf_counter()
                r = await c.call(b.device, "containers", "ps", {}, timeout=30)
                timings["ps_via_bundle"].append(time.perf_counter() - t)
                if not r.get("ok"):
                    return {"skipped": f"containers/ps failed in the bundle: {r.get('error')}"}
                t = time.perf_counter()
                await asyncio.to_thread(raw_list, engine.socket)
                timings["raw_api"].append(time.perf_counter() - t)
                t = time.perf_counter()
                await asyncio.to_thread(sdk.containers.list, all=True)
                timings["sdk_list"].append(time.perf_counter() - t)
                t = time.perf_counter()
                proc = await asyncio.create_subprocess_exec(
                    *cli, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
                )
                await proc.wait()
                timings["docker_cli"].append(time.perf_counter() - t)
    finally:
        sdk.close()
    med = {k: statistics.median(v) * 1000 for k, v in timings.items()}
    out: dict[str, Any] = {"containers": count}
    out.update({f"{k}_ms": round(v, 2) for k, v in med.items()})
    out["ratio_in_process_vs_raw_api"] = round(med["ps_in_process"] / med["raw_api"], 2)
    out["ratio_via_bundle_vs_docker_cli"] = round(med["ps_via_bundle"] / med["docker_cli"], 2)
    return out
