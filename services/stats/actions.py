"""The stats service's actions: the only list of what it can do."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from msgspec import Raw

from common import __version__
from common.dispatch import Action, ActionTable, NoArgs
from common.errors import Cancelled
from common.ipc import encoder
from common.jobs import JOB_ACTIONS, JobHandle, JobManager
from common.messages import EventKind, IpcEvent, JobRef
from common.worker import Worker
from services.stats import backend
from services.stats.models import (
    GetArgs,
    PingResult,
    SampleArgs,
    SampleResult,
    Snapshot,
)


@dataclass
class StatsContext:
    worker: Worker[StatsContext]
    interval: float

    @property
    def jobs(self) -> JobManager:
        return self.worker.jobs


async def ping(_ctx: StatsContext, _args: NoArgs) -> PingResult:
    """Answer at once (a round trip through gateway and worker)."""
    return PingResult(True, time.time())


async def get(_ctx: StatsContext, args: GetArgs) -> Snapshot:
    """CPU, load, memory, filesystems, network interfaces, uptime, OS and temperatures."""
    return await asyncio.to_thread(backend.snapshot, args.per_cpu)


async def sample(ctx: StatsContext, args: SampleArgs) -> JobRef:
    """Sample CPU and memory for a while, as a job with progress; the result has the figures."""

    async def work(h: JobHandle) -> SampleResult:
        cpu: list[float] = []
        mem: list[float] = []
        load = 0.0
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < args.seconds:
            if h.cancel_requested:  # sampling is safe to stop at any point
                raise Cancelled(f"cancelled after {len(cpu)} samples")
            t = await asyncio.to_thread(backend.telemetry)
            cpu.append(t.cpu)
            mem.append(t.mem)
            load = t.load1
            await h.progress(100.0 * elapsed / args.seconds, f"cpu {t.cpu:.1f}% mem {t.mem:.1f}%")
            await asyncio.sleep(min(args.interval, max(0.0, args.seconds - elapsed)))
        return SampleResult(
            samples=len(cpu),
            seconds=round(time.monotonic() - start, 2),
            cpu_avg=round(sum(cpu) / len(cpu), 2),
            cpu_max=max(cpu),
            mem_avg=round(sum(mem) / len(mem), 2),
            mem_max=max(mem),
            load1_last=load,
        )

    return await ctx.jobs.start("sample", work)


async def telemetry_loop(ctx: StatsContext) -> None:
    """Publishes a small sample every ``stats.interval`` seconds (0 disables it)."""
    await asyncio.to_thread(backend.prime)
    if ctx.interval <= 0:
        return
    while True:
        await asyncio.sleep(ctx.interval)
        sample = await asyncio.to_thread(backend.telemetry)
        await ctx.worker.emit(IpcEvent(EventKind.TELEMETRY, "stats", Raw(encoder.encode(sample))))


ACTIONS: ActionTable[StatsContext] = ActionTable(
    "stats",
    __version__,
    [
        Action("ping", ping, NoArgs, PingResult),
        Action("get", get, GetArgs, Snapshot),
        Action("sample", sample, SampleArgs, SampleResult, job=True),
        *JOB_ACTIONS,
    ],
)
