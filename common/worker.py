"""The generic worker runtime: receive -> look up -> decode args -> run -> reply.

Every worker service is ``python -m services.<name>``, whose ``__main__`` calls :func:`run`
with its ActionTable and a context factory. The runtime owns the ROUTER socket, the events
PUSH socket, the heartbeat and the job manager; services only write handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

import msgspec
import zmq
import zmq.asyncio
from msgspec import Raw

from common.config import ConfigError, Settings, load_settings
from common.dispatch import ActionTable, run_to_error
from common.health import HealthPublisher, HealthReport
from common.ipc import (
    encoder,
    ensure_runtime_dir,
    events_endpoint,
    request_decoder,
    service_endpoint,
    tune,
)
from common.jobs import JobManager
from common.logs import setup_logging
from common.messages import IpcEvent, IpcReply, IpcRequest

C = TypeVar("C")
NULL = Raw(b"null")
log = logging.getLogger("tether.worker")

#: Events a worker may queue for the gateway while it is down (then oldest-first blocking).
EVENTS_HWM = 10000


class Worker(Generic[C]):
    """One worker process's runtime. Handlers reach it through their context."""

    def __init__(self, service: str, settings: Settings, table: ActionTable[C]) -> None:
        self.service = service
        self.settings = settings
        self.table = table
        self.zctx = zmq.asyncio.Context()
        self.jobs = JobManager(service, self.emit)
        self._router: Any = None
        self._events: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.health: HealthPublisher | None = None
        self.report: Callable[[], HealthReport] = HealthReport
        self.context: C | None = None
        self._pid = os.getpid()

    async def emit(self, event: IpcEvent) -> None:
        """Send a job event or telemetry to the gateway (queued while it is away)."""
        assert self._events is not None
        event.pid = self._pid
        await self._events.send(encoder.encode(event))

    def _open(self) -> None:
        ensure_runtime_dir(self.settings.runtime_dir)
        path = service_endpoint(self.settings.runtime_dir, self.service)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.removeprefix("ipc://"))
        self._router = self.zctx.socket(zmq.ROUTER)
        tune(self._router)
        self._router.bind(path)
        self._events = self.zctx.socket(zmq.PUSH)
        tune(self._events)
        self._events.setsockopt(zmq.SNDHWM, EVENTS_HWM)
        self._events.connect(events_endpoint(self.settings.runtime_dir))
        self.health = HealthPublisher(
            self.zctx,
            self.service,
            self.settings.runtime_dir,
            self.settings.health.interval,
            lambda: self.report(),
        )

    async def serve(
        self, ctx: C, background: Sequence[Callable[[C], Coroutine[Any, Any, None]]]
    ) -> None:
        self.context = ctx
        self._open()
        assert self.health is not None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.health.run())
                for bg in background:
                    tg.create_task(bg(ctx))
                self.health.set_running()
                log.info("%s serving %d actions", self.service, len(self.table.names()))
                await self._receive_loop(ctx)
        finally:
            await self._close()

    async def _receive_loop(self, ctx: C) -> None:
        while True:
            ident, frame = await self._router.recv_multipart()
            t = asyncio.get_running_loop().create_task(self._handle(ctx, ident, frame))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _handle(self, ctx: C, ident: bytes, frame: bytes) -> None:
        try:
            req = request_decoder.decode(frame)
        except msgspec.MsgspecError:
            log.warning("dropped a malformed IPC frame (%d bytes)", len(frame))
            return
        remaining = req.deadline - time.time()
        if remaining <= 0:
            # The gateway has answered 'timeout' already; running it now would surprise.
            log.info("dropped %s: its deadline passed while queued", req.action)
            return
        result, error = await run_to_error(self._dispatch(ctx, req, remaining))
        body = NULL if error else Raw(encoder.encode(result))
        with contextlib.suppress(zmq.ZMQError):
            await self._router.send_multipart(
                [ident, encoder.encode(IpcReply(req.rid, error is None, body, error))]
            )

    async def _dispatch(self, ctx: C, req: IpcRequest, remaining: float) -> Any:
        if req.action == "_describe":
            return self.table.info()
        return await self.table.invoke(ctx, req.action, req.args, remaining)

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self.jobs.shutdown()
        if self.health:
            with contextlib.suppress(Exception):
                await self.health.stopping()
            self.health.close()
        for s in (self._router, self._events):
            if s is not None:
                s.close(0)
        self.zctx.term()


def parse_args(service: str, argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m services.{service}")
    p.add_argument(
        "--config", help="configuration file (default: $TETHER_CONFIG or /etc/tether/tether.toml)"
    )
    return p.parse_args(argv)


def load_or_exit(service: str, argv: Sequence[str] | None) -> Settings:
    args = parse_args(service, argv)
    try:
        return load_settings(args.config)
    except ConfigError as err:
        print(f"tether {service}: invalid configuration: {err}", file=sys.stderr)
        raise SystemExit(2) from err


async def run_until_signalled(main: Awaitable[None]) -> None:
    """Run ``main``; SIGTERM/SIGINT cancel it so CancelledError unwinds cleanly."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _idle() -> None:
    await asyncio.Event().wait()


def prepare_worker(service: str, argv: Sequence[str] | None = None) -> None:
    """The first thing a worker's ``__main__`` does, before importing its backend.

    Lowers the worker's CPU priority by ``worker_nice``: on a two-core gateway an apt upgrade
    or an image pull must not starve the gateway, which keeps the device reachable (and
    starts first). Then returns if ``service`` is enabled; otherwise idles until SIGTERM and
    exits, so supervisord does not restart a disabled worker in a loop, and a disabled worker
    costs a bare interpreter rather than the docker SDK or the D-Bus bindings."""
    settings = load_or_exit(service, argv)
    if settings.worker_nice:
        with contextlib.suppress(OSError):
            os.nice(settings.worker_nice)
    if service in settings.services:
        return
    setup_logging(service, settings.log_level)
    log.info("%s is not listed in 'services' in the configuration; idle", service)
    asyncio.run(run_until_signalled(_idle()))
    raise SystemExit(0)


def run(
    service: str,
    table: ActionTable[C],
    make_context: Callable[[Worker[C]], C],
    *,
    background: Sequence[Callable[[C], Coroutine[Any, Any, None]]] = (),
    report: Callable[[C], HealthReport] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """Entry point of every worker: load config, build the context, serve until SIGTERM."""
    settings = load_or_exit(service, argv)
    setup_logging(service, settings.log_level)

    async def main() -> None:
        worker = Worker(service, settings, table)
        ctx = make_context(worker)
        if report is not None:
            worker.report = lambda: report(ctx)
        await worker.serve(ctx, background)

    asyncio.run(run_until_signalled(main()))
