"""A TCP relay that delays every byte by a fixed time each way: a device on a slow link
(cellular, satellite) in front of the same local broker. TLS passes through it untouched."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator


async def _pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, delay: float) -> None:
    q: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await q.get()
            if not data:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            w.write(data)
            await w.drain()

    sender = asyncio.create_task(send())
    try:
        while data := await r.read(65536):
            q.put_nowait((time.monotonic() + delay, data))
    except (ConnectionError, OSError):
        pass
    finally:
        q.put_nowait((0.0, b""))
        with contextlib.suppress(ConnectionError, OSError):
            await sender
        w.close()


@contextlib.asynccontextmanager
async def slow_link(port: int, delay: float) -> AsyncIterator[int]:
    """Listen on a free loopback port; relay to ``port`` with ``delay`` seconds each way."""
    conns: set[asyncio.Task[None]] = set()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            w.close()
            return
        await asyncio.gather(_pump(r, uw, delay), _pump(ur, w, delay))

    def track(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        t = asyncio.ensure_future(handle(r, w))
        conns.add(t)
        t.add_done_callback(conns.discard)

    server = await asyncio.start_server(track, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for t in list(conns):
            t.cancel()
        await asyncio.gather(*conns, return_exceptions=True)
