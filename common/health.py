"""The local health topic: every process PUBlishes heartbeats on its own ipc socket
(``{runtime_dir}/{process}.health.sock``); readers SUBscribe to all of them.

Frames are ``[b"health", <Heartbeat JSON>]``. Having no central proxy means no single process
whose death hides everyone's health; a reader simply connects to each known process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from common import __version__
from common.ipc import (
    HEALTH_TOPIC,
    encoder,
    ensure_runtime_dir,
    health_endpoint,
    heartbeat_decoder,
    tune,
)
from common.messages import Heartbeat, ServiceState

#: Every process that beats: the gateway, the watchdog and the worker services.
ALL_PROCESSES = ("gateway", "watchdog", "stats", "apt", "network", "containers")


@dataclass
class HealthReport:
    state: ServiceState = ServiceState.OK
    reason: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)


class HealthPublisher:
    """Publishes this process's heartbeat every ``interval`` seconds and on demand."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        process: str,
        runtime_dir: str,
        interval: float,
        report: Callable[[], HealthReport] | None = None,
    ) -> None:
        self.process = process
        self.interval = interval
        self.started_at = time.time()
        self._report = report or HealthReport
        self._state_override: ServiceState | None = ServiceState.STARTING
        self._sock = ctx.socket(zmq.PUB)
        tune(self._sock)
        ensure_runtime_dir(runtime_dir)  # the watchdog may start before anyone made it
        path = health_endpoint(runtime_dir, process)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.removeprefix("ipc://"))
        self._sock.bind(path)
        self._wake = asyncio.Event()

    def beat(self) -> Heartbeat:
        rep = self._report()
        state = self._state_override or rep.state
        return Heartbeat(
            service=self.process,
            pid=os.getpid(),
            version=__version__,
            started_at=self.started_at,
            ts=time.time(),
            state=state,
            interval=self.interval,
            reason=rep.reason,
            facts=rep.facts,
        )

    def set_running(self) -> None:
        self._state_override = None
        self._wake.set()

    def publish_now(self) -> None:
        self._wake.set()

    async def stopping(self) -> None:
        self._state_override = ServiceState.STOPPING
        await self._send()

    async def _send(self) -> None:
        await self._sock.send_multipart([HEALTH_TOPIC, encoder.encode(self.beat())])

    async def run(self) -> None:
        while True:
            await self._send()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    def close(self) -> None:
        self._sock.close(0)


class HealthSubscriber:
    """Receives heartbeats of the given processes (all known ones by default)."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        runtime_dir: str,
        processes: Iterable[str] = ALL_PROCESSES,
    ) -> None:
        self._sock = ctx.socket(zmq.SUB)
        tune(self._sock)
        self._sock.setsockopt(zmq.SUBSCRIBE, HEALTH_TOPIC)
        for p in processes:
            self._sock.connect(health_endpoint(runtime_dir, p))

    async def recv(self) -> Heartbeat | None:
        """The next well-formed heartbeat; malformed frames are skipped (returns None)."""
        frames = await self._sock.recv_multipart()
        if len(frames) != 2:
            return None
        try:
            return heartbeat_decoder.decode(frames[1])
        except Exception:  # a foreign or corrupt frame must not stop a monitor
            return None

    def close(self) -> None:
        self._sock.close(0)
