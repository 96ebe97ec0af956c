"""The stats service's actions: the only list of what it can do."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from msgspec import Raw

from common import __version__
from common.dispatch import Action, ActionTable, NoArgs
from common.ipc import encoder
from common.messages import EventKind, IpcEvent
from common.worker import Worker
from services.stats import backend
from services.stats.models import GetArgs, PingResult, Snapshot


@dataclass
class StatsContext:
    worker: Worker[StatsContext]
    interval: float


async def ping(_ctx: StatsContext, _args: NoArgs) -> PingResult:
    """Answer at once (a round trip through gateway and worker)."""
    return PingResult(True, time.time())


async def get(_ctx: StatsContext, args: GetArgs) -> Snapshot:
    """CPU, load, memory, filesystems, network interfaces, uptime, OS and temperatures."""
    return await asyncio.to_thread(backend.snapshot, args.per_cpu)


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
    ],
)
