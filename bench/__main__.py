"""Run every benchmark and write bench/results/latest.json and latest.md.

    .venv/bin/python -m bench            # full run (about 5-8 minutes)
    .venv/bin/python -m bench --quick    # under 2 minutes, coarser figures

Needs mosquitto (and, for the service comparisons, what those services need: dpkg for apt).
Nothing here asserts: the figures and the targets are reported, met or not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import docker, footprint, ops, report, rtt
from bench.env import Bundle, Env, environment, loadavg, machine, present_services

RESULTS = Path(__file__).resolve().parent / "results"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def run_all(env: Env, quick: bool, only: set[str] | None) -> dict[str, Any]:
    def want(section: str) -> bool:
        return only is None or section in only

    services = present_services()
    res: dict[str, Any] = {"quick": quick, "services": services}
    modules: dict[str, list[str]] = {}
    if want("startup") or want("footprint"):
        log(f"start-up ({services})")
        res["startup"], modules = await footprint.startup(env, services, 1 if quick else 3)
        log(f"start-up: {res['startup']['median']}")

    with contextlib.ExitStack() as stack:
        engine, no_engine = None, docker.why_not()
        if no_engine is None and "containers" in services and want("ops"):
            log("a private Docker Engine for the containers comparison")
            try:
                engine = stack.enter_context(docker.engine())
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                no_engine = f"the private dockerd did not start: {str(err)[-300:]}"
        config = {"containers": {"docker_host": engine.host}} if engine else None
        b = env.bundle(services, config)
        b.start()
        try:
            await _sections(env, b, res, quick, want, services, engine, no_engine)
        finally:
            b.cleanup()
    if want("footprint") and modules:
        log("import floor")
        res["floor"] = await asyncio.to_thread(footprint.floor, modules)
    return res


async def _sections(
    env: Env,
    b: Bundle,
    res: dict[str, Any],
    quick: bool,
    want: Callable[[str], bool],
    services: list[str],
    engine: Any,
    no_engine: str | None,
) -> None:
    if want("footprint"):
        idle = 10.0 if quick else 60.0
        log(f"footprint: idle {idle:.0f} s, then under load")
        res["footprint"] = await footprint.bundle_footprint(env, b, idle, 3.0 if quick else 6.0)
    if want("rtt"):
        log("round trip and throughput (echo vs bundle, interleaved)")
        res["rtt"] = await rtt.run_rtt(env, quick, b.device)
    if want("slowlink"):
        log("a device behind a slow link (10 ms each way)")
        res["slow_link"] = await rtt.run_slow_link(env, quick)
    if want("interference"):
        log("a slow service next to stats/ping throughput")
        seconds = 3.0 if quick else 5.0
        slow: list[tuple[str, str, Any, bool]] = [
            ("stats", "sample", {"seconds": seconds, "interval": 0.1}, True)
        ]
        if "apt" in services:
            slow.append(("apt", "list", {"filter": "all", "page_size": 1000}, False))
        res["interference"] = await rtt.run_interference(env, quick, b.device, slow)
    if want("ops"):
        log("service operations")
        n = 60 if quick else 200
        res["ops"] = {
            "stats/ping": await ops.call_cost(env, b, "stats", "ping", None, n),
            "stats/get": await ops.call_cost(env, b, "stats", "get", None, n),
        }
        if "apt" in services:
            res["ops"]["apt"] = await ops.apt_vs_dpkg(env, b, 3 if quick else 10)
        else:
            res["ops"]["apt"] = {"skipped": "services/apt does not exist in this tree"}
        res["ops"]["containers"] = await ops.containers_vs_docker(
            env, b, engine, 3 if quick else 10, no_engine
        )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter runs (< 2 min)")
    p.add_argument(
        "--only",
        action="append",
        choices=["startup", "footprint", "rtt", "slowlink", "interference", "ops"],
        help="run only these sections (repeatable)",
    )
    p.add_argument(
        "--broker-nagle",
        action="store_true",
        help="leave mosquitto's set_tcp_nodelay at its default (false): Nagle's algorithm on",
    )
    p.add_argument("--out", default=str(RESULTS), help="folder for latest.json / latest.md")
    a = p.parse_args()
    # aiomqtt warns when more than 10 publishes wait for their PUBACK: that is the point here.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    t0 = time.monotonic()
    info = machine()
    with environment(broker_nodelay=not a.broker_nagle) as env:
        results = asyncio.run(run_all(env, a.quick, set(a.only) if a.only else None))
    results["machine"] = info
    results["machine"]["loadavg_end"] = loadavg()
    results["duration_s"] = round(time.monotonic() - t0, 1)
    results["targets"] = report.targets(results)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "latest.md").write_text(report.markdown(results))
    log(f"done in {results['duration_s']} s: {out / 'latest.md'}")
    print(report.markdown(results))


if __name__ == "__main__":
    main()
