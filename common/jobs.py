"""Long-running work as jobs: an id at once, events on the job topic, a final state always.

A worker creates jobs through its :class:`JobManager`. Each job emits :class:`JobEvent` s
(queued -> running -> succeeded | failed | cancelled) with a ``seq`` per job. Output lines are
batched (at most one event per ``FLUSH_EVERY`` seconds) so a chatty apt run cannot flood MQTT.
``serial`` jobs run one at a time in FIFO order (apt/dpkg must never run twice at once); a
queued job can be cancelled, a running one only if its work checks ``handle.cancel_requested``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
from msgspec import Raw

from common.dispatch import Action, NoArgs
from common.errors import Cancelled, Conflict, Failed, Internal, NotFound, TetherError
from common.ipc import encoder
from common.messages import ErrorBody, EventKind, IpcEvent, JobEvent, JobRef, JobState

log = logging.getLogger("tether.jobs")

FLUSH_EVERY = 0.25
MAX_LINES_PER_EVENT = 200
KEEP_FINISHED = 200

Emit = Callable[[IpcEvent], Awaitable[None]]


class JobHandle:
    """What a job's work function uses to report progress and output."""

    def __init__(self, manager: JobManager, job_id: str, action: str) -> None:
        self._m = manager
        self.job_id = job_id
        self.action = action
        self.cancel_requested = False
        self._lines: list[str] = []
        self._progress: float | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=50)

    def line(self, text: str) -> None:
        """Queue one output line (sent in batches)."""
        text = text.rstrip("\n")
        self._lines.append(text)
        self.tail.append(text)
        if len(self._lines) >= MAX_LINES_PER_EVENT:
            self._m._spawn_flush(self)

    async def progress(self, percent: float | None, message: str | None = None) -> None:
        """Report progress (0-100) and an optional short status message."""
        if percent is not None:
            self._progress = max(0.0, min(100.0, round(percent, 1)))
        await self.flush(message)

    async def flush(self, message: str | None = None) -> None:
        lines, self._lines = self._lines, []
        if lines or message is not None:
            await self._m._emit(self, JobState.RUNNING, message=message, lines=lines)


class _Job:
    def __init__(self, handle: JobHandle, work: Callable[[JobHandle], Awaitable[Any]]) -> None:
        self.handle = handle
        self.work = work
        self.state = JobState.QUEUED
        self.seq = 0
        self.last: JobEvent | None = None
        self.task: asyncio.Task[None] | None = None
        self.created = time.time()


class JobManager:
    def __init__(self, service: str, emit: Emit) -> None:
        self.service = service
        self._emit_raw = emit
        self._jobs: dict[str, _Job] = {}
        self._serial_queue: collections.deque[_Job] = collections.deque()
        self._serial_running: _Job | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- public -----------------------------------------------------------------------

    async def start(
        self,
        action: str,
        work: Callable[[JobHandle], Awaitable[Any]],
        *,
        serial: bool = False,
    ) -> JobRef:
        job_id = f"{self.service}-{uuid.uuid4().hex[:12]}"
        job = _Job(JobHandle(self, job_id, action), work)
        self._jobs[job_id] = job
        self._trim()
        ahead = len(self._serial_queue) + (1 if self._serial_running else 0)
        await self._emit(
            job.handle,
            JobState.QUEUED,
            message=f"queued behind {ahead} job(s)" if serial and ahead else None,
        )
        if serial:
            self._serial_queue.append(job)
            self._pump()
        else:
            self._run(job)
        return JobRef(job_id, job.state)

    def get(self, job_id: str) -> JobEvent:
        job = self._jobs.get(job_id)
        if job is None or job.last is None:
            raise NotFound(f"no job {job_id!r} on {self.service}")
        return job.last

    def all(self) -> list[JobEvent]:
        return [j.last for j in self._jobs.values() if j.last is not None]

    @property
    def busy(self) -> bool:
        return any(not j.state.final for j in self._jobs.values())

    async def cancel(self, job_id: str) -> JobEvent:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} on {self.service}")
        if job.state.final:
            raise Conflict(f"job {job_id} already {job.state}")
        if job.state is JobState.QUEUED:
            if job in self._serial_queue:
                self._serial_queue.remove(job)
            if job.task:
                job.task.cancel()
            await self._finish(job, JobState.CANCELLED, error=Cancelled("cancelled while queued"))
        else:
            # Running work decides whether it can stop safely (dpkg is never interrupted).
            job.handle.cancel_requested = True
            await self._emit(job.handle, JobState.RUNNING, message="cancellation requested")
        assert job.last is not None
        return job.last

    async def shutdown(self) -> None:
        """On SIGTERM: report every unfinished job as failed so none is left 'running'."""
        self._serial_queue.clear()  # a queued job must not start while the worker stops
        for job in list(self._jobs.values()):
            if not job.state.final:
                if job.task:
                    job.task.cancel()
                await self._finish(
                    job,
                    JobState.FAILED,
                    error=Failed(
                        f"the {self.service} service stopped during the job (restart or "
                        "shutdown); the job did not finish",
                        {"interrupted": True},
                    ),
                )

    # --- internals --------------------------------------------------------------------

    def _pump(self) -> None:
        if self._serial_running is None and self._serial_queue:
            self._serial_running = self._serial_queue.popleft()
            self._run(self._serial_running)

    def _run(self, job: _Job) -> None:
        job.task = asyncio.get_running_loop().create_task(self._execute(job))

    async def _execute(self, job: _Job) -> None:
        h = job.handle
        flusher = asyncio.get_running_loop().create_task(self._flush_loop(h))
        try:
            job.state = JobState.RUNNING
            await self._emit(h, JobState.RUNNING, progress=0.0)
            result = await job.work(h)
            await h.flush()
            await self._finish(job, JobState.SUCCEEDED, result=result)
        except asyncio.CancelledError:
            if not job.state.final:
                await self._finish(job, JobState.CANCELLED, error=Cancelled("job cancelled"))
            raise
        except TetherError as err:
            await h.flush()
            # Work that honoured handle.cancel_requested ends 'cancelled', not 'failed'.
            state = JobState.CANCELLED if isinstance(err, Cancelled) else JobState.FAILED
            await self._finish(job, state, error=err)
        except Exception as err:
            log.exception("job %s crashed", h.job_id)
            await self._finish(job, JobState.FAILED, error=Internal(f"internal error: {err!r}"))
        finally:
            flusher.cancel()
            if self._serial_running is job:
                self._serial_running = None
                self._pump()

    async def _finish(
        self,
        job: _Job,
        state: JobState,
        *,
        result: Any = None,
        error: TetherError | None = None,
    ) -> None:
        job.state = state
        body = ErrorBody.from_exc(error) if error else None
        if body and body.details is None and job.handle.tail and state is JobState.FAILED:
            body.details = {"output_tail": list(job.handle.tail)}
        await self._emit(job.handle, state, result=result, error=body, progress=None)

    async def _emit(
        self,
        h: JobHandle,
        state: JobState,
        *,
        message: str | None = None,
        lines: list[str] | None = None,
        result: Any = None,
        error: ErrorBody | None = None,
        progress: float | None = -1.0,
    ) -> None:
        job = self._jobs[h.job_id]
        job.seq += 1
        if state is not JobState.RUNNING or job.state is not JobState.QUEUED:
            job.state = state
        prog = h._progress if progress == -1.0 else progress
        if state is JobState.SUCCEEDED:
            prog = 100.0
        ev = JobEvent(
            job_id=h.job_id,
            service=self.service,
            action=h.action,
            state=state,
            seq=job.seq,
            ts=time.time(),
            progress=prog,
            message=message,
            lines=lines or [],
            result=result,
            error=error,
        )
        job.last = ev
        payload = Raw(encoder.encode(ev))
        await self._emit_raw(IpcEvent(EventKind.JOB, h.job_id, payload, state.final))

    async def _flush_loop(self, h: JobHandle) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            await h.flush()

    def _spawn_flush(self, h: JobHandle) -> None:
        t = asyncio.get_running_loop().create_task(h.flush())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.state.final]
        for k in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[k]


# --- the job actions every job-running service adds to its table --------------------------


class HasJobs(Protocol):
    @property
    def jobs(self) -> JobManager: ...


class JobIdArgs(msgspec.Struct):
    job_id: str


async def jobs_list(ctx: HasJobs, _args: NoArgs) -> list[JobEvent]:
    """Recent jobs of this service with their latest event, oldest first."""
    return ctx.jobs.all()


async def jobs_get(ctx: HasJobs, args: JobIdArgs) -> JobEvent:
    """One job's latest event (state, progress, result or error)."""
    return ctx.jobs.get(args.job_id)


async def jobs_cancel(ctx: HasJobs, args: JobIdArgs) -> JobEvent:
    """Cancel a queued job; a running one stops only where that is safe."""
    return await ctx.jobs.cancel(args.job_id)


JOB_ACTIONS: list[Action[Any, Any, Any]] = [
    Action("jobs/list", jobs_list, NoArgs, list[JobEvent]),
    Action("jobs/get", jobs_get, JobIdArgs, JobEvent),
    Action("jobs/cancel", jobs_cancel, JobIdArgs, JobEvent, mutating=True),
]
