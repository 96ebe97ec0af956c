"""Follows the local health topic and mirrors the bundle's health to MQTT (retained).

Also notices a worker's restart (its pid changed), which is how the gateway learns that jobs
that worker was running will never finish by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq.asyncio

from common.config import Settings
from common.health import HealthSubscriber
from common.messages import DeviceHealth, Heartbeat, ServiceHealth

log = logging.getLogger("tether.gateway.health")

_RANK = {"ok": 0, "starting": 1, "stopping": 1, "degraded": 2, "silent": 3, "down": 3}


class HealthMirror:
    def __init__(
        self,
        zctx: zmq.asyncio.Context,
        settings: Settings,
        publish: Callable[[DeviceHealth], None],
        on_restart: Callable[[str, int], None],
    ) -> None:
        self.settings = settings
        self.processes = ["gateway", "watchdog", *settings.services]
        self._sub = HealthSubscriber(zctx, settings.runtime_dir, self.processes)
        self._publish = publish
        self._on_restart = on_restart
        self.beats: dict[str, Heartbeat] = {}
        #: The gateway's own beat, read directly rather than back from its own socket.
        self.own: Callable[[], Heartbeat] | None = None
        self._last_key: Any = None
        self._last_sent = 0.0

    def current_pid(self, service: str) -> int | None:
        b = self.beats.get(service)
        return b.pid if b else None

    def snapshot(self) -> DeviceHealth:
        now = time.time()
        watch: dict[str, Any] = {}
        wd = self.beats.get("watchdog")
        if wd is not None:
            watch = wd.facts.get("watch", {}) or {}
        services: dict[str, ServiceHealth] = {}
        for p in self.processes:
            b = self.own() if p == "gateway" and self.own is not None else self.beats.get(p)
            w = watch.get(p, {}) if isinstance(watch, dict) else {}
            if b is None:
                sh = ServiceHealth("silent", reason="no heartbeat yet")
            else:
                silent = now - b.ts > max(3 * b.interval, self.settings.health.hang_after)
                sh = ServiceHealth(
                    "silent" if silent else str(b.state),
                    b.pid,
                    b.version,
                    round(b.uptime, 1),
                    b.reason,
                    facts=b.facts,
                )
            if w:
                sh.restarts = int(w.get("restarts", 0))
                sh.last_exit = w.get("last_exit")
                ws = w.get("state")
                if ws in ("down", "hung", "restarting", "stopped"):
                    sh.state = "down" if ws in ("down", "stopped") else "degraded"
                    sh.reason = w.get("reason") or sh.reason
            services[p] = sh
        worst = max((_RANK.get(s.state, 3) for s in services.values()), default=0)
        state = (
            "ok" if worst == 0 else ("down" if services["gateway"].state == "down" else "degraded")
        )
        return DeviceHealth(self.settings.device_id, now, state, services)

    def _key(self, h: DeviceHealth) -> Any:
        return tuple((n, s.state, s.pid, s.reason, s.restarts) for n, s in h.services.items())

    def publish_now(self) -> None:
        h = self.snapshot()
        self._last_key = self._key(h)
        self._last_sent = time.monotonic()
        self._publish(h)

    async def run(self) -> None:
        tick = min(self.settings.health.interval, 5.0)
        try:
            while True:
                try:
                    beat = await asyncio.wait_for(self._sub.recv(), tick)
                except TimeoutError:
                    beat = None
                if beat is not None and beat.service in self.processes:
                    old = self.beats.get(beat.service)
                    self.beats[beat.service] = beat
                    if old is not None and old.pid != beat.pid:
                        log.warning("%s restarted (pid %d -> %d)", beat.service, old.pid, beat.pid)
                        self._on_restart(beat.service, beat.pid)
                h = self.snapshot()
                due = time.monotonic() - self._last_sent >= self.settings.health.mqtt_interval
                if self._key(h) != self._last_key or due:
                    self._last_key = self._key(h)
                    self._last_sent = time.monotonic()
                    self._publish(h)
        finally:
            with contextlib.suppress(Exception):
                self._sub.close()
