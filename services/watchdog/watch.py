"""The watchdog's logic: compare each running program's heartbeats with supervisord's view.

- RUNNING but silent on the health topic for ``health.hang_after`` seconds (SIGSTOPped,
  deadlocked, stuck in a blocking call): SIGKILL through supervisord's XML-RPC, so supervisord's
  autorestart brings it back; reported ``hung`` until it beats again.
- FATAL (supervisord gave up after its start retries: a crash loop): reported ``down`` with the
  last exit reason and the last log line; retried every ``health.fatal_retry`` seconds, slowly
  enough that a broken service cannot load the device, often enough that a transient cause
  (a full disk, a missing mount) heals by itself. A device must never be lost to a FATAL gateway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import zmq.asyncio

from common.config import Settings
from common.errors import TetherError
from common.health import HealthPublisher, HealthReport, HealthSubscriber
from common.messages import Heartbeat, ServiceState
from common.supervisor import ProcessInfo, SupervisorClient

log = logging.getLogger("tether.watchdog")

MAX_EVENTS = 20


@dataclass
class Watched:
    name: str
    state: str = "unknown"  # ok | hung | restarting | down | stopped
    pid: int = 0
    restarts: int = 0
    last_exit: str | None = None
    reason: str | None = None
    fatal_since: float | None = None
    killed_pid: int | None = None

    def facts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "restarts": self.restarts}
        if self.last_exit:
            out["last_exit"] = self.last_exit
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class Watchdog:
    settings: Settings
    supervisor: SupervisorClient
    beats: dict[str, Heartbeat] = field(default_factory=dict)
    watched: dict[str, Watched] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    supervisor_ok: bool = True

    def __post_init__(self) -> None:
        for name in ["gateway", *self.settings.services]:
            self.watched[name] = Watched(name)

    def event(self, text: str) -> None:
        log.warning("%s", text)
        self.events = [*self.events[-(MAX_EVENTS - 1) :], f"{time.strftime('%H:%M:%S')} {text}"]

    def report(self) -> HealthReport:
        bad = [w for w in self.watched.values() if w.state in ("down", "hung")]
        facts: dict[str, Any] = {
            "watch": {n: w.facts() for n, w in self.watched.items()},
            "events": self.events[-5:],
        }
        if not self.supervisor_ok:
            return HealthReport(ServiceState.DEGRADED, "supervisord is not reachable", facts)
        if bad:
            reason = "; ".join(f"{w.name} {w.state}: {w.reason}" for w in bad)
            return HealthReport(ServiceState.DEGRADED, reason, facts)
        return HealthReport(ServiceState.OK, None, facts)

    async def _last_log_line(self, name: str) -> str | None:
        try:
            text = await self.supervisor.tail(name, 2048)
        except TetherError:
            return None
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-1][-300:] if lines else None

    async def check(self) -> None:
        try:
            infos = {i.name: i for i in await self.supervisor.all_info()}
        except TetherError as err:
            self.supervisor_ok = False
            log.warning("cannot ask supervisord: %s", err.message)
            return
        self.supervisor_ok = True
        now = time.time()
        for name, w in self.watched.items():
            info = infos.get(name)
            if info is not None:
                await self._check_one(w, info, now)

    async def _check_one(self, w: Watched, info: ProcessInfo, now: float) -> None:
        if info.state == "RUNNING":
            if w.pid and info.pid != w.pid:
                w.restarts += 1
                if w.state not in ("hung",):
                    w.last_exit = w.last_exit or "exited"
            w.pid = info.pid
            w.fatal_since = None
            beat = self.beats.get(w.name)
            last = beat.ts if beat is not None and beat.pid == info.pid else info.start
            silent = now - last
            if silent > self.settings.health.hang_after:
                if w.killed_pid != info.pid:
                    w.killed_pid = info.pid
                    w.state = "hung"
                    w.reason = f"no heartbeat for {silent:.0f}s while running; restarted"
                    w.last_exit = "killed by the watchdog: hung"
                    self.event(f"{w.name} (pid {info.pid}) hung for {silent:.0f}s: restarting")
                    try:
                        await self.supervisor.signal(w.name, "KILL")
                    except TetherError as err:
                        self.event(f"could not restart {w.name}: {err.message}")
            elif beat is not None and beat.pid == info.pid:
                w.state, w.reason = "ok", None
        elif info.state in ("BACKOFF", "STARTING", "EXITED"):
            # EXITED is transient: autorestart is on for every program.
            if w.state != "restarting" and info.state != "STARTING":
                w.last_exit = await self._exit_reason(w, info)
                self.event(f"{w.name} exited ({w.last_exit}); supervisord restarts it")
            w.state = "restarting"
            w.reason = f"restarting after: {w.last_exit}"
        elif info.state == "FATAL":
            if w.fatal_since is None:
                w.fatal_since = now
                w.last_exit = await self._exit_reason(w, info)
                self.event(f"{w.name} is down: {w.last_exit}")
            w.state = "down"
            w.reason = f"keeps failing to start: {w.last_exit}"
            if now - w.fatal_since >= self.settings.health.fatal_retry:
                w.fatal_since = now
                self.event(f"retrying {w.name}")
                try:
                    await self.supervisor.start(w.name)
                except TetherError as err:
                    log.info("retry of %s failed: %s", w.name, err.message)
        elif info.state == "STOPPED":
            w.state, w.reason = "stopped", "stopped by an operator"

    async def _exit_reason(self, w: Watched, info: ProcessInfo) -> str:
        parts = [info.spawnerr or info.description or info.state]
        if info.exitstatus:
            parts.append(f"exit status {info.exitstatus}")
        last = await self._last_log_line(w.name)
        if last:
            parts.append(f"last log line: {last}")
        return "; ".join(p for p in parts if p)


async def run_watchdog(settings: Settings) -> None:
    zctx = zmq.asyncio.Context()
    wd = Watchdog(settings, SupervisorClient(settings.supervisor.socket))
    pub = HealthPublisher(
        zctx, "watchdog", settings.runtime_dir, settings.health.interval, wd.report
    )
    sub = HealthSubscriber(zctx, settings.runtime_dir, list(wd.watched))

    async def listen() -> None:
        while True:
            b = await sub.recv()
            if b is not None:
                wd.beats[b.service] = b

    async def loop() -> None:
        pub.set_running()
        while True:
            await asyncio.sleep(min(settings.health.interval, 2.0))
            before = {n: w.state for n, w in wd.watched.items()}
            await wd.check()
            if before != {n: w.state for n, w in wd.watched.items()}:
                pub.publish_now()

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(pub.run())
            tg.create_task(listen())
            tg.create_task(loop())
    finally:
        await pub.stopping()
        pub.close()
        sub.close()
        zctx.term()
