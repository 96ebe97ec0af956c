"""Never lose the device: the link watcher and the checkpoint guard around protected changes.

A change to an interface that carries the MQTT link runs inside a NetworkManager checkpoint
(``CheckpointCreate`` with a rollback timeout). It is committed (``CheckpointDestroy``) only
once the gateway proves its link works — its heartbeat on the local health topic says
``link: up`` continuously for ``link_settle`` seconds after the change — or the operator sends
``network/confirm`` (a command that arrived proves the link). Otherwise NetworkManager rolls the
change back by itself when the timeout expires. The outcome is kept in ``last_change.json``
under the state directory and shown by ``network/state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import zmq.asyncio

from common.errors import Failed, NotFound, TetherError
from common.health import HealthSubscriber
from common.jobs import JobHandle
from services.network.backend import NetworkManager
from services.network.models import LastChange

log = logging.getLogger("tether.network.guard")
T = TypeVar("T")


class LinkWatcher:
    """Follows the gateway's heartbeats: is its MQTT link up, and since when."""

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self.link_up = False
        self.up_since: float | None = None
        self.last_beat = 0.0
        self.changed = asyncio.Condition()

    def observe(self, link: str | None, ts: float) -> None:
        up = link == "up"
        if up and not self.link_up:
            self.up_since = ts
        if not up:
            self.up_since = None
        self.link_up = up
        self.last_beat = ts

    def up_for(self, since: float, now: float | None = None) -> float:
        """Seconds the link has been up without a break since ``since`` (0 if down/stale)."""
        now = time.time() if now is None else now
        if not self.link_up or self.up_since is None or now - self.last_beat > self.stale_after:
            return 0.0
        return max(0.0, now - max(self.up_since, since))

    async def run(self, zctx: zmq.asyncio.Context, runtime_dir: str) -> None:
        sub = HealthSubscriber(zctx, runtime_dir, ["gateway"])
        try:
            while True:
                beat = await sub.recv()
                if beat is None or beat.service != "gateway":
                    continue
                async with self.changed:
                    self.observe(beat.facts.get("link"), time.time())
                    self.changed.notify_all()
        finally:
            sub.close()


class Guard:
    """Runs protected changes under a checkpoint and records their outcome."""

    def __init__(
        self,
        nm: NetworkManager,
        link: LinkWatcher,
        state_dir: str,
        rollback_timeout: int,
        settle: float,
    ) -> None:
        self.nm = nm
        self.link = link
        self.rollback_timeout = rollback_timeout
        self.settle = settle
        self.path = Path(state_dir) / "network" / "last_change.json"
        self.pending: dict[str, asyncio.Event] = {}
        self.last: LastChange | None = self._load()

    def _load(self) -> LastChange | None:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=LastChange)
        except (OSError, msgspec.MsgspecError):
            return None

    def _save(self, change: LastChange) -> None:
        self.last = change
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(msgspec.json.encode(change))
            os.replace(tmp, self.path)
        except OSError as err:
            log.warning("cannot record the change outcome in %s: %s", self.path, err)

    async def reconcile(self) -> None:
        """After a restart: a change still recorded as pending was never committed (the job
        died with the worker), so NetworkManager rolls it back when its timer expires; wait
        for that and record it."""
        last = self.last
        if last is None or last.outcome != "pending" or last.job_id in self.pending:
            return  # nothing left over, or the change belongs to a job of this process
        with contextlib.suppress(TetherError):
            if last.checkpoint and last.checkpoint in await self.nm.checkpoints():
                await self.nm.wait_checkpoint_gone(last.checkpoint)
            last.outcome = "rolled_back"
            last.finished_at = time.time()
            last.message = (
                "the network service restarted during the change; NetworkManager rolled it back"
            )
            self._save(last)

    def confirm(self, job_id: str | None) -> str:
        """The operator's confirmation; returns the job id it applied to."""
        if job_id is None:
            if not self.pending:
                raise NotFound("no network change is waiting for confirmation")
            job_id = next(iter(self.pending))
        ev = self.pending.get(job_id)
        if ev is None:
            raise NotFound(
                f"job {job_id!r} is not a network change waiting for confirmation",
                {"field": "job_id", "value": job_id},
            )
        ev.set()
        return job_id

    async def run(
        self,
        h: JobHandle,
        interfaces: list[str],
        dev_paths: list[str],
        apply: Callable[[], Awaitable[T]],
    ) -> tuple[T, str]:
        """Apply under a checkpoint; return (apply's result, "committed")."""
        cp = await self.nm.checkpoint_create(dev_paths, self.rollback_timeout)
        change = LastChange(h.job_id, h.action, interfaces, "pending", time.time(), checkpoint=cp)
        self._save(change)
        h.line(
            f"checkpoint created for {', '.join(interfaces)}; NetworkManager rolls back by "
            f"itself after {self.rollback_timeout}s unless the link is confirmed"
        )
        confirmed = asyncio.Event()
        self.pending[h.job_id] = confirmed
        try:
            try:
                result = await apply()
            except TetherError as err:
                with contextlib.suppress(TetherError):
                    await self.nm.checkpoint_rollback(cp)
                self._finish(change, "failed", f"the change failed and was undone: {err.message}")
                raise
            applied = time.time()
            h.line(f"applied; waiting for the gateway's link to stay up for {self.settle:g}s")
            await h.progress(60, "waiting for the MQTT link")
            how = await self._await_outcome(cp, applied, confirmed)
            if how == "rolled_back":
                msg = (
                    f"the gateway's MQTT link did not prove itself within {self.rollback_timeout}"
                    "s, so NetworkManager rolled the change back; the previous configuration "
                    "is active again"
                )
                self._finish(change, "rolled_back", msg)
                raise Failed(msg, {"outcome": "rolled_back", "interfaces": interfaces})
            try:
                await self.nm.checkpoint_destroy(cp)
            except TetherError as err:
                if cp in await self.nm.checkpoints():
                    raise
                msg = "NetworkManager rolled the change back before it could be committed"
                self._finish(change, "rolled_back", msg)
                raise Failed(msg, {"outcome": "rolled_back", "interfaces": interfaces}) from err
            self._finish(change, "committed", f"committed ({how})")
            h.line(f"committed ({how})")
            return result, "committed"
        finally:
            self.pending.pop(h.job_id, None)

    def _finish(self, change: LastChange, outcome: str, message: str) -> None:
        change.checkpoint = None
        change.outcome = outcome
        change.finished_at = time.time()
        change.message = message
        self._save(change)

    async def _await_outcome(self, cp: str, applied: float, confirmed: asyncio.Event) -> str:
        async def link_settled() -> str:
            async with self.link.changed:
                while self.link.up_for(applied) < self.settle:
                    wait = self.settle - self.link.up_for(applied)
                    # Heartbeats wake us; the timeout re-checks when the window closes.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.1, wait)):
                            await self.link.changed.wait()
            return "gateway link stayed up"

        async def operator() -> str:
            await confirmed.wait()
            return "confirmed by the operator"

        async def rolled_back() -> str:
            await self.nm.wait_checkpoint_gone(cp)
            return "rolled_back"

        tasks = [asyncio.ensure_future(c) for c in (link_settled(), operator(), rolled_back())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            return next(iter(done)).result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
