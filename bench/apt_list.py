"""Benchmark: the apt service's ``list`` of every installed package vs ``dpkg-query -W``.

Both run on this machine in the same run. ``list`` is measured in-process through the action
table (argument decoding, handler, JSON encoding of the reply) in its steady state (caches
warm) and right after dpkg's database changed (status file re-read; apt's candidate cache
still valid, as after an install). ``dpkg-query -W`` includes its process start, which is
what a caller of it pays too.

    .venv/bin/python -m bench.apt_list [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
from typing import Any

from common.config import AptSettings
from common.ipc import encoder
from common.jobs import JobManager
from common.messages import IpcEvent
from services.apt.actions import ACTIONS, AptContext


async def _noop(_ev: IpcEvent) -> None:
    return None


async def list_all(ctx: AptContext) -> int:
    page, count = 1, 0
    while True:
        args = f'{{"filter": "installed", "page": {page}, "page_size": 1000}}'.encode()
        result: Any = await ACTIONS.invoke(ctx, "list", args, 60)
        encoder.encode(result)
        count += len(result.packages)
        if page >= result.pages:
            return count
        page += 1


def dpkg_query() -> int:
    out = subprocess.run(["dpkg-query", "-W"], capture_output=True, check=True).stdout
    return out.count(b"\n")


async def main(rounds: int) -> None:
    ctx = AptContext(JobManager("apt", _noop), AptSettings())
    t = time.perf_counter()
    n = await list_all(ctx)
    cold = time.perf_counter() - t
    warm, restat, dq = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        await list_all(ctx)
        warm.append(time.perf_counter() - t)
        ctx.apt.forget_status()  # as if dpkg's database had just changed
        t = time.perf_counter()
        await list_all(ctx)
        restat.append(time.perf_counter() - t)
        t = time.perf_counter()
        m = dpkg_query()
        dq.append(time.perf_counter() - t)
    w, r, d = (statistics.median(x) * 1000 for x in (warm, restat, dq))
    print(f"installed packages: list={n} dpkg-query={m}")
    print(f"first list (reads dpkg status and apt's candidates): {cold * 1000:.0f} ms")
    print(f"list, steady state:        {w:7.2f} ms  ratio to dpkg-query {w / d:5.2f}")
    print(f"list, after a dpkg change: {r:7.2f} ms  ratio to dpkg-query {r / d:5.2f}")
    print(f"dpkg-query -W:             {d:7.2f} ms  (median of {rounds})")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=20)
    asyncio.run(main(p.parse_args().rounds))
