"""A client of one worker, for the gateway (and a worker that asks another, e.g. containers
asking apt to install Docker): a DEALER socket, a future per request id, a timeout on each,
and a bound on requests in flight. Never REQ/REP: a lost reply must not wedge the socket.

``IMMEDIATE`` makes a send fail at once when the worker is not connected (not running), which
becomes ``service_unavailable``; a socket monitor notices the worker going away mid-request and
fails what it held, so a crash is reported in milliseconds instead of at the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import Any

import zmq
import zmq.asyncio
from msgspec import Raw
from zmq.utils.monitor import parse_monitor_message

from common.errors import Busy, ServiceUnavailable, Timeout
from common.ipc import encoder, reply_decoder, service_endpoint, tune
from common.messages import IpcReply, IpcRequest

log = logging.getLogger("tether.gateway.worker_client")


class WorkerClient:
    def __init__(
        self, zctx: zmq.asyncio.Context, service: str, runtime_dir: str, max_in_flight: int
    ) -> None:
        self.service = service
        self.max_in_flight = max_in_flight
        self._rids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[IpcReply]] = {}
        self._sock: Any = zctx.socket(zmq.DEALER)
        tune(self._sock)
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        self._monitor: Any = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._sock.connect(service_endpoint(runtime_dir, service))

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def call(self, action: str, args: Raw, timeout: float) -> IpcReply:
        """Send one request and wait for its reply; raises our errors, never hangs."""
        if len(self._pending) >= self.max_in_flight:
            raise Busy(
                f"{self.service} has {len(self._pending)} commands in flight; retry later",
                {"service": self.service, "in_flight": len(self._pending)},
            )
        rid = next(self._rids)
        frame = encoder.encode(IpcRequest(rid, action, args, time.time() + timeout))
        fut: asyncio.Future[IpcReply] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            try:
                await self._sock.send(frame, flags=zmq.NOBLOCK)
            except zmq.Again as err:
                raise ServiceUnavailable(
                    f"the {self.service} service is not running (restarting, stopped, or failing "
                    "to start; agent/services tells which); retry later",
                    {"service": self.service},
                ) from err
            try:
                return await asyncio.wait_for(fut, timeout)
            except TimeoutError as err:
                raise Timeout(
                    f"{self.service}/{action} did not answer within {timeout:.1f}s",
                    {"service": self.service, "action": action},
                ) from err
        finally:
            self._pending.pop(rid, None)

    async def run(self) -> None:
        """Read replies and disconnect events until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._read_replies())
            tg.create_task(self._watch_disconnects())

    async def _read_replies(self) -> None:
        while True:
            frame = await self._sock.recv()
            try:
                reply = reply_decoder.decode(frame)
            except Exception:  # a corrupt frame from a worker must not stop the reader
                log.warning("%s sent a malformed reply (%d bytes)", self.service, len(frame))
                continue
            fut = self._pending.get(reply.rid)
            if fut is not None and not fut.done():
                fut.set_result(reply)

    async def _watch_disconnects(self) -> None:
        while True:
            msg = parse_monitor_message(await self._monitor.recv_multipart())
            if msg["event"] == zmq.EVENT_DISCONNECTED and self._pending:
                log.warning(
                    "%s went away with %d requests in flight", self.service, len(self._pending)
                )
                err = ServiceUnavailable(
                    f"the {self.service} service stopped while handling the command; it may or "
                    "may not have taken effect",
                    {"service": self.service},
                )
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(err)

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._monitor.close(0)
        self._sock.close(0)
