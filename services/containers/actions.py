"""The containers service's actions: the only list of what it can do."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec
import zmq.asyncio
from msgspec import Raw

from common import __version__
from common.config import Settings
from common.dispatch import Action, ActionTable, NoArgs
from common.errors import (
    Cancelled,
    Failed,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    Timeout,
)
from common.health import HealthReport
from common.ipc import encoder
from common.jobs import JOB_ACTIONS, JobHandle, JobManager
from common.messages import JobEvent, JobRef, JobState, ServiceState
from common.worker_client import WorkerClient
from services.containers import backend, validate
from services.containers.credentials import CredentialStore
from services.containers.models import (
    Container,
    ContainerDetails,
    ContainerPage,
    ContainerStats,
    EngineInfo,
    EngineInstallArgs,
    FollowArgs,
    FollowResult,
    ImagePage,
    ImagesArgs,
    InstallResult,
    LoginArgs,
    LoginResult,
    LogoutArgs,
    LogoutResult,
    LogsArgs,
    LogsResult,
    NameArgs,
    PruneArgs,
    PruneResult,
    PsArgs,
    PullArgs,
    PullResult,
    RegistryAuth,
    RemoveArgs,
    Removed,
    RenameArgs,
    RunArgs,
    StatsArgs,
    StopArgs,
)

log = logging.getLogger("tether.containers")
T = TypeVar("T")

#: Containers sampled at once by ``stats`` (each sample takes the engine about a second).
STATS_PARALLEL = 4
#: A followed log stream flushes its lines when this many bytes are pending.
FOLLOW_FLUSH_BYTES = 32 * 1024
#: Pruning many images can take minutes on slow storage.
PRUNE_TIMEOUT = 280.0
#: A page of ps/images is cut short beyond this size (MQTT brokers often cap packets at 256 KiB).
MAX_PAGE_BYTES = 128 * 1024


class HasJobs(Protocol):
    @property
    def jobs(self) -> JobManager: ...


@dataclass
class ContainersContext:
    worker: HasJobs
    settings: Settings
    engine: backend.Engine
    creds: CredentialStore

    @property
    def jobs(self) -> JobManager:
        return self.worker.jobs

    @classmethod
    def build(cls, worker: HasJobs, settings: Settings) -> ContainersContext:
        c = settings.containers
        path = c.credentials_file or str(
            Path(settings.state_dir) / "containers" / "credentials.json"
        )
        return cls(worker, settings, backend.Engine(c), CredentialStore(path))


# --- helpers ---------------------------------------------------------------------------------


async def _auth_for(
    ctx: ContainersContext, registry: str, given: RegistryAuth | None
) -> tuple[dict[str, str] | None, list[str]]:
    """Credentials for a registry: the request's own, else the device's stored login."""
    if given is not None:
        return backend.auth_config(given.username, given.password, registry), [given.password]
    entry = await asyncio.to_thread(ctx.creds.get, registry)
    if entry is None:
        return None, []
    return backend.auth_config(entry.username, entry.password, registry), [entry.password]


def _fit(items: list[T], offset: int, total: int) -> tuple[list[T], int | None]:
    """The longest prefix of a page that stays under MAX_PAGE_BYTES, and the next offset."""
    used, n = 0, 0
    for item in items:
        used += len(encoder.encode(item)) + 1
        if used > MAX_PAGE_BYTES and n > 0:
            break
        n += 1
    nxt = offset + n
    return items[:n], (nxt if nxt < total else None)


def _clip(line: str) -> str:
    if len(line) > backend.MAX_LINE:
        return line[: backend.MAX_LINE] + " [line cut]"
    return line


# --- read-only -------------------------------------------------------------------------------


async def ps(ctx: ContainersContext, args: PsArgs) -> ContainerPage:
    """Containers (all, or one by id or name) with state, ports, labels and restart count."""
    if args.name is not None:
        name = validate.container_ref(args.name)
        one = await ctx.engine.call(lambda c: backend.container(c, name), what="container")
        return ContainerPage(1, 0, [one])
    label = validate.label_filter(args.label) if args.label is not None else None
    page = await ctx.engine.call(
        lambda c: backend.containers(c, args.all, label, args.limit, args.offset)
    )
    page.containers, page.next_offset = _fit(page.containers, page.offset, page.total)
    return page


async def inspect(ctx: ContainersContext, args: NameArgs) -> ContainerDetails:
    """One container's summary and Docker's full inspect document."""
    name = validate.container_ref(args.name)
    return await ctx.engine.call(lambda c: backend.inspect(c, name), what="container")


async def images(ctx: ContainersContext, args: ImagesArgs) -> ImagePage:
    """Images on the device with tags, digests and size, newest first (paged)."""
    page = await ctx.engine.call(lambda c: backend.images(c, args.all, args.limit, args.offset))
    page.images, page.next_offset = _fit(page.images, page.offset, page.total)
    return page


async def stats(ctx: ContainersContext, args: StatsArgs) -> list[ContainerStats]:
    """CPU, memory, network and block I/O of running containers (or one)."""
    if args.name is not None:
        name = validate.container_ref(args.name)
        return [await ctx.engine.call(lambda c: backend.stats(c, name), what="container")]
    running = await ctx.engine.call(backend.running_ids)
    sem = asyncio.Semaphore(STATS_PARALLEL)

    async def one(cid: str) -> ContainerStats | None:
        async with sem:
            try:
                return await ctx.engine.call(lambda c: backend.stats(c, cid), what="container")
            except NotFound:
                return None  # it went away meanwhile

    found = await asyncio.gather(*(one(cid) for cid, _ in running))
    return sorted((s for s in found if s is not None), key=lambda s: s.name)


async def logs(ctx: ContainersContext, args: LogsArgs) -> LogsResult:
    """The last lines of a container's output, bounded in lines and bytes."""
    name = validate.container_ref(args.name)
    limit = ctx.settings.containers.logs_max_lines
    if args.tail > limit:
        raise InvalidRequest(
            f"tail {args.tail} is more than this device returns at once ({limit}); "
            "page with since/until or follow the stream (logs/follow)",
            {"field": "tail", "value": args.tail, "limit": limit},
        )
    data = await ctx.engine.call(
        lambda c: backend.logs(
            c,
            name,
            tail=args.tail,
            since=args.since,
            until=args.until,
            timestamps=args.timestamps,
            stdout=args.stdout,
            stderr=args.stderr,
        ),
        what="container",
    )
    budget = ctx.settings.containers.logs_max_bytes
    lines = data.decode(errors="replace").splitlines()
    kept: list[str] = []
    used = 0
    truncated = False
    for line in reversed(lines):
        clipped = _clip(line)
        truncated |= clipped is not line
        size = len(clipped.encode()) + 1
        if used + size > budget:
            truncated = True
            break
        kept.append(clipped)
        used += size
    kept.reverse()
    return LogsResult(kept, truncated, used)


async def engine(ctx: ContainersContext, _args: NoArgs) -> EngineInfo:
    """Whether Docker is installed and running, its version and storage."""
    return await asyncio.to_thread(backend.engine_info, ctx.engine)


# --- jobs ------------------------------------------------------------------------------------


async def pull(ctx: ContainersContext, args: PullArgs) -> JobRef:
    """Pull an image (a job with per-layer and total progress)."""
    ref = validate.image_ref(args.image)
    auth, secrets = await _auth_for(ctx, ref.registry, args.auth)
    idle = ctx.settings.containers.pull_idle_timeout

    async def work(h: JobHandle) -> PullResult:
        tracker = backend.PullTracker()
        h.line(f"pulling {ref} from {ref.registry}" + (" (authenticated)" if auth else ""))
        stream = ctx.engine.stream(
            lambda c: backend.pull_events(c, ref, auth), timeout=idle, what="image", secrets=secrets
        )
        last = 0.0
        try:
            while True:
                try:
                    ev = await stream.next(idle)
                except StopAsyncIteration:
                    break
                if ev is None:
                    raise Timeout(
                        f"the Docker engine reported no progress for {idle:.0f}s; the pull "
                        "was abandoned - retry later",
                        {"engine": "docker", "image": str(ref)},
                    )
                changed = tracker.update(ev)
                if changed:
                    h.line(tracker.describe(ev))
                now = time.monotonic()
                if changed or now - last >= 0.5:
                    last = now
                    await h.progress(tracker.percent, tracker.describe(ev) if ev.id else ev.status)
                if h.cancel_requested:
                    raise Cancelled("pull cancelled; layers already downloaded are kept")
        finally:
            await stream.close()
        img = await ctx.engine.call(lambda c: backend.image(c, ref.local), what="image")
        h.line(f"pulled {ref} ({img.id})")
        return PullResult(str(ref), img.id, img.tags, img.digests, list(tracker.layers.values()))

    return await ctx.jobs.start("pull", work)


async def logs_follow(ctx: ContainersContext, args: FollowArgs) -> JobRef:
    """Follow a container's output as a job; stops on jobs/cancel or at a time/line limit."""
    name = validate.container_ref(args.name)
    cap = ctx.settings.containers.follow_max_seconds
    if args.max_seconds > cap:
        raise InvalidRequest(
            f"max_seconds {args.max_seconds:g} is more than this device allows ({cap:g})",
            {"field": "max_seconds", "value": args.max_seconds, "limit": cap},
        )
    if args.tail > ctx.settings.containers.logs_max_lines:
        raise InvalidRequest(
            f"tail {args.tail} is more than this device allows "
            f"({ctx.settings.containers.logs_max_lines})",
            {"field": "tail", "value": args.tail},
        )
    # Fail at once (not in the job) for an unknown container or a stopped engine.
    full = await ctx.engine.call(lambda c: backend.container(c, name).id, what="container")

    async def work(h: JobHandle) -> FollowResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.max_seconds
        stream = ctx.engine.stream(
            lambda c: backend.follow_logs(
                c,
                full,
                tail=args.tail,
                since=args.since,
                timestamps=args.timestamps,
                stdout=args.stdout,
                stderr=args.stderr,
            ),
            timeout=None,
            what="container",
        )
        count, pending, buf, stopped = 0, 0, b"", "ended"
        try:
            while True:
                if h.cancel_requested:
                    stopped = "cancelled"
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    stopped = "max_seconds"
                    break
                try:
                    chunk = await stream.next(min(0.25, remaining))
                except StopAsyncIteration:
                    break
                if chunk is None:
                    continue
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for raw in complete:
                    text = _clip(raw.decode(errors="replace"))
                    h.line(text)
                    count += 1
                    pending += len(text)
                    if pending >= FOLLOW_FLUSH_BYTES:  # keeps each job event small
                        pending = 0
                        await h.flush()
                    if count >= args.max_lines:
                        stopped = "max_lines"
                        break
                if stopped == "max_lines":
                    break
        finally:
            await stream.close()
        if buf and stopped != "max_lines":
            h.line(_clip(buf.decode(errors="replace")))
            count += 1
        if stopped == "ended":
            # The stream ends when the container stops - or when the engine goes away.
            try:
                await ctx.engine.call(lambda c: backend.container_running(c, full))
            except ServiceUnavailable as err:
                raise ServiceUnavailable(
                    f"{err.message} (the log stream of {name} broke after {count} lines)",
                    err.details,
                ) from err
        return FollowResult(count, stopped)

    return await ctx.jobs.start("logs/follow", work)


async def install_through_apt(ctx: ContainersContext, h: JobHandle) -> None:
    """Install docker.io as an apt service job (so it queues behind other apt work and waits
    for the dpkg lock like any package change), relaying its progress into this job."""
    if "apt" not in ctx.settings.services:
        raise Failed(
            "the apt service is not enabled on this device; enable it (services) or install "
            "Docker Engine (Debian package docker.io) yourself",
            {"package": "docker.io"},
        )
    apt = WorkerClient(zmq.asyncio.Context.instance(), "apt", ctx.settings.runtime_dir, 4)
    reader = asyncio.get_running_loop().create_task(apt.run())
    try:
        # A new DEALER connects in the background; until it has, sends say "not running".
        for _ in range(50):
            try:
                reply = await apt.call("install", Raw(b'{"packages": ["docker.io"]}'), 30.0)
                break
            except ServiceUnavailable:
                await asyncio.sleep(0.1)
        else:
            raise ServiceUnavailable("the apt service is not running; retry later")
        if not reply.ok:
            assert reply.error is not None
            raise Failed(f"the apt service refused: {reply.error.message}", reply.error.details)
        job_id = msgspec.json.decode(reply.result)["job_id"]
        h.line(f"apt job {job_id}")
        while True:
            await asyncio.sleep(1.0)
            got = await apt.call("jobs/get", Raw(msgspec.json.encode({"job_id": job_id})), 10.0)
            if not got.ok:
                continue
            ev = msgspec.json.decode(got.result, type=JobEvent)
            for line in ev.lines:
                h.line(line)
            if ev.state is JobState.SUCCEEDED:
                return
            if ev.state.final:
                why = ev.error.message if ev.error else str(ev.state)
                raise Failed(f"installing docker.io failed: {why}", {"apt_job": job_id})
            await h.progress(5.0 + 0.9 * (ev.progress or 0.0), ev.message)
    finally:
        reader.cancel()
        apt.close()


async def engine_install(ctx: ContainersContext, args: EngineInstallArgs) -> JobRef:
    """Install Docker Engine (Debian's docker.io) as a job; does nothing if it is there."""

    async def work(h: JobHandle) -> InstallResult:
        present = await asyncio.to_thread(backend.find_dockerd)
        if present and not args.force:
            state = await ctx.engine.probe()
            h.line(f"Docker Engine is already installed ({present})")
            return InstallResult(True, False, state.version)
        await h.progress(5.0, "asking the apt service to install docker.io")
        await install_through_apt(ctx, h)
        state = await ctx.engine.probe()
        return InstallResult(True, True, state.version)

    return await ctx.jobs.start("engine/install", work, serial=True)


# --- mutations -------------------------------------------------------------------------------


async def run(ctx: ContainersContext, args: RunArgs) -> Container:
    """Create and start a container (pulls the image first if it is missing)."""
    ref = validate.image_ref(args.image)
    auth: dict[str, str] | None = None
    secrets: list[str] = []
    if args.pull != "never":
        auth, secrets = await _auth_for(ctx, ref.registry, args.auth)
    if args.restart_max_retries and args.restart != "on-failure":
        raise InvalidRequest(
            'restart_max_retries needs restart = "on-failure"',
            {"field": "restart_max_retries"},
        )
    spec = backend.RunSpec(
        image=ref,
        name=validate.new_name(args.name) if args.name is not None else None,
        command=validate.command(args.command),
        entrypoint=validate.command(args.entrypoint, "entrypoint"),
        env=validate.env(args.env),
        ports=[validate.port_spec(p) for p in args.ports],
        binds=[validate.bind(b) for b in args.binds],
        restart=args.restart,
        restart_max_retries=args.restart_max_retries,
        network=validate.network(args.network) if args.network is not None else None,
        labels=validate.labels(args.labels),
        memory=args.memory,
        cpus=args.cpus,
        user=validate.plain(args.user, "user"),
        workdir=validate.plain(args.workdir, "workdir", validate.MAX_PATH),
        start=args.start,
        pull=args.pull,
        auth=auth,
    )
    if spec.workdir is not None and not spec.workdir.startswith("/"):
        raise InvalidRequest("workdir must be an absolute path", {"field": "workdir"})
    return await ctx.engine.call(lambda c: backend.run(c, spec), what="container", secrets=secrets)


async def start(ctx: ContainersContext, args: NameArgs) -> Container:
    """Start a stopped container."""
    name = validate.container_ref(args.name)
    return await ctx.engine.call(lambda c: backend.start(c, name), what="container")


async def stop(ctx: ContainersContext, args: StopArgs) -> Container:
    """Stop a container (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
    name = validate.container_ref(args.name)
    return await ctx.engine.call(lambda c: backend.stop(c, name, args.timeout), what="container")


async def restart(ctx: ContainersContext, args: StopArgs) -> Container:
    """Restart a container (stop with ``timeout``, then start)."""
    name = validate.container_ref(args.name)
    return await ctx.engine.call(lambda c: backend.restart(c, name, args.timeout), what="container")


async def remove(ctx: ContainersContext, args: RemoveArgs) -> Removed:
    """Remove a container (``force`` kills a running one; ``volumes`` drops anonymous ones)."""
    name = validate.container_ref(args.name)
    return await ctx.engine.call(
        lambda c: backend.remove(c, name, args.force, args.volumes), what="container"
    )


async def rename(ctx: ContainersContext, args: RenameArgs) -> Container:
    """Rename a container; a name in use gives ``conflict``."""
    name = validate.container_ref(args.name)
    new = validate.new_name(args.new_name, "new_name")
    return await ctx.engine.call(lambda c: backend.rename(c, name, new), what="container")


async def prune(ctx: ContainersContext, args: PruneArgs) -> PruneResult:
    """Remove stopped containers and dangling (or all unused) images."""
    return await ctx.engine.call(
        lambda c: backend.prune(c, args.containers, args.images), timeout=PRUNE_TIMEOUT
    )


def _credential(value: str, field: str) -> str:
    if not value or len(value) > 4096 or any(ord(ch) < 32 for ch in value):
        raise InvalidRequest(
            f"{field} must be 1-4096 characters without control characters", {"field": field}
        )
    return value


async def login(ctx: ContainersContext, args: LoginArgs) -> LoginResult:
    """Check registry credentials with the engine and store them on the device (mode 0600)."""
    registry = validate.registry(args.registry)
    username = _credential(args.username, "username")
    password = _credential(args.password, "password")
    await asyncio.to_thread(backend.login, ctx.engine, registry, username, password)
    await asyncio.to_thread(ctx.creds.put, registry, username, password)
    return LoginResult(registry, username, True)


async def logout(ctx: ContainersContext, args: LogoutArgs) -> LogoutResult:
    """Forget the stored credentials of a registry."""
    registry = validate.registry(args.registry)
    removed = await asyncio.to_thread(ctx.creds.remove, registry)
    return LogoutResult(registry, removed)


# --- health ----------------------------------------------------------------------------------


async def probe_loop(ctx: ContainersContext) -> None:
    """Probes the engine every ``containers.probe_interval`` seconds for the heartbeat."""
    before: str | None = None
    while True:
        state = await ctx.engine.probe()
        if state.status != before:
            if state.status == "running":
                log.info("Docker engine at %s is running (%s)", ctx.engine.host, state.version)
            else:
                log.warning("Docker engine: %s", state.reason)
            before = state.status
        await asyncio.sleep(ctx.settings.containers.probe_interval)


def report(ctx: ContainersContext) -> HealthReport:
    s = ctx.engine.state
    facts: dict[str, Any] = {"engine": s.status, "docker_host": ctx.engine.host}
    if s.version:
        facts["engine_version"] = s.version
    if s.status in ("stopped", "missing"):
        return HealthReport(ServiceState.DEGRADED, s.reason, facts)
    return HealthReport(ServiceState.OK, None, facts)


ACTIONS: ActionTable[ContainersContext] = ActionTable(
    "containers",
    __version__,
    [
        Action("ps", ps, PsArgs, ContainerPage),
        Action("inspect", inspect, NameArgs, ContainerDetails),
        Action("images", images, ImagesArgs, ImagePage),
        Action("stats", stats, StatsArgs, list[ContainerStats], timeout=60.0),
        Action("logs", logs, LogsArgs, LogsResult),
        Action("logs/follow", logs_follow, FollowArgs, JobRef, job=True),
        Action("pull", pull, PullArgs, JobRef, mutating=True, job=True),
        Action("run", run, RunArgs, Container, mutating=True, timeout=300.0),
        Action("start", start, NameArgs, Container, mutating=True),
        Action("stop", stop, StopArgs, Container, mutating=True, timeout=660.0),
        Action("restart", restart, StopArgs, Container, mutating=True, timeout=660.0),
        Action("remove", remove, RemoveArgs, Removed, mutating=True),
        Action("rename", rename, RenameArgs, Container, mutating=True),
        Action("prune", prune, PruneArgs, PruneResult, mutating=True, timeout=300.0),
        Action("login", login, LoginArgs, LoginResult, mutating=True),
        Action("logout", logout, LogoutArgs, LogoutResult, mutating=True),
        Action("engine", engine, NoArgs, EngineInfo),
        Action(
            "engine/install", engine_install, EngineInstallArgs, JobRef, mutating=True, job=True
        ),
        *JOB_ACTIONS,
    ],
)
