"""The only module that imports the docker SDK (and runs the engine installer).

Every SDK call runs in a worker thread with the client's timeout; SDK objects are turned into
our msgspec types inside that thread (their lazy attributes make hidden API calls). Docker's
errors are translated into ours here, once:

- ``NotFound`` -> not_found; ``APIError`` 409 -> conflict, 400 -> invalid_request,
  rejected registry credentials -> auth_failed, anything else -> failed;
- no connection to the engine -> service_unavailable naming the engine, or engine_missing
  (with how to install it) when neither its socket nor ``dockerd`` exists;
- a call that outlives ``containers.call_timeout`` -> timeout.

The client is created lazily and dropped after any connection failure, so the service
recovers by itself when the engine comes back (no restart of the worker needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

import docker
import docker.constants
import docker.errors
import requests.exceptions
import urllib3.exceptions

from common.config import ContainersSettings
from common.errors import (
    AuthFailed,
    Conflict,
    EngineMissing,
    Failed,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
    TetherError,
    Timeout,
)
from services.containers.models import (
    Container,
    ContainerDetails,
    ContainerPage,
    ContainerStats,
    EngineInfo,
    Image,
    ImagePage,
    LayerProgress,
    Port,
    PruneResult,
    Removed,
    Storage,
)
from services.containers.validate import DOCKER_HUB, Bind, ImageRef, PortSpec

log = logging.getLogger("tether.containers")

T = TypeVar("T")
Client = Any  # docker.DockerClient; typed loosely because its stubs lag the SDK.

#: Where ``dockerd`` may live, besides $PATH (supervisord's PATH often lacks the sbin dirs).
DOCKERD_SEARCH = "/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin"
INSTALL_HINT = (
    "install it with the containers/engine/install action (Debian package docker.io), "
    "or: apt-get install docker.io"
)
#: Longest single log line we pass on; longer lines are cut (and marked).
MAX_LINE = 16 * 1024

EngineStatus = Literal["unknown", "running", "stopped", "missing"]


# --- error translation -----------------------------------------------------------------------


def find_dockerd(search_path: str | None = None) -> str | None:
    """Path of the ``dockerd`` binary, or None when Docker Engine is not installed."""
    path = search_path
    if path is None:
        path = f"{os.environ.get('PATH', '')}:{DOCKERD_SEARCH}"
    return shutil.which("dockerd", path=path)


def unreachable(host: str, reason: str, search_path: str | None = None) -> TetherError:
    """The engine did not answer: missing (not installed) or unavailable (stopped)."""
    if host.startswith("unix://"):
        sock = host.removeprefix("unix://")
        if not os.path.exists(sock) and find_dockerd(search_path) is None:
            return EngineMissing(
                f"Docker Engine is not installed on this device; {INSTALL_HINT}",
                {"engine": "docker", "host": host, "package": "docker.io"},
            )
    return ServiceUnavailable(
        f"the Docker engine at {host} is not reachable ({reason}); it is stopped or "
        "restarting - start it (e.g. systemctl start docker) or retry later",
        {"engine": "docker", "host": host},
    )


_AUTH_MARKERS = (
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "denied",
    "incorrect username or password",
)


def _explanation(err: docker.errors.APIError) -> str:
    text: Any = err.explanation
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text or err).strip()


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def translate(
    err: Exception, host: str, *, secrets: Iterable[str] = (), what: str | None = None
) -> TetherError:
    """Docker SDK / transport error -> our error (the one place this is decided)."""
    secrets = tuple(secrets)
    if isinstance(err, TetherError):
        return err
    if isinstance(err, docker.errors.NotFound):
        msg = _scrub(_explanation(err), secrets)
        return NotFound(f"{msg}", {"what": what} if what else None)
    if isinstance(err, docker.errors.APIError):
        msg = _scrub(_explanation(err), secrets)
        low = msg.lower()
        status = err.status_code
        if status == 409:
            return Conflict(msg, {"what": what} if what else None)
        if status in (401, 403) or any(m in low for m in _AUTH_MARKERS):
            return AuthFailed(
                f"the registry refused access: {msg}; check the username and password, log "
                "in with containers/login or pass auth with the request",
                {"registry_error": msg},
            )
        if "manifest unknown" in low or low.startswith(("no such container", "no such image")):
            return NotFound(msg, {"what": what} if what else None)
        if "oci runtime" in low:
            return Failed(
                f"the container could not start: {msg}; check the command and the image",
                {"status": status},
            )
        if status == 400:
            return InvalidRequest(f"the Docker engine refused the request: {msg}")
        return Failed(f"the Docker engine reported: {msg}", {"status": status})
    if isinstance(err, docker.errors.InvalidArgument | docker.errors.InvalidVersion):
        return InvalidRequest(str(err))
    if isinstance(err, requests.exceptions.Timeout | TimeoutError):
        return Timeout(
            f"the Docker engine at {host} did not answer in time; it may be overloaded or "
            "hung - retry later",
            {"engine": "docker", "host": host},
        )
    if isinstance(
        err,
        requests.exceptions.ConnectionError
        | urllib3.exceptions.HTTPError
        | ConnectionError
        | FileNotFoundError,
    ):
        return unreachable(host, _reason(err))
    if isinstance(err, docker.errors.DockerException):
        text = _scrub(str(err), secrets)
        if "Error while fetching server API version" in text:
            return unreachable(host, _reason(err))
        return Failed(f"Docker client error: {text}")
    return Failed(f"Docker call failed: {type(err).__name__}: {_scrub(str(err), secrets)}")


def _reason(err: BaseException) -> str:
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, FileNotFoundError):
            return "its socket does not exist"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, ConnectionResetError | BrokenPipeError):
            return "connection reset"
        nxt = e.__cause__ or e.__context__
        if nxt is None and e.args and isinstance(e.args[-1], BaseException):
            nxt = e.args[-1]
        e = nxt
    return "no connection"


# --- the engine handle ------------------------------------------------------------------------


@dataclass
class EngineState:
    """What the last call or probe learned; read by the heartbeat without any I/O."""

    status: EngineStatus = "unknown"
    version: str | None = None
    reason: str | None = None


class Engine:
    """One Docker Engine endpoint: a lazily (re)created client and thread-run calls."""

    def __init__(self, settings: ContainersSettings) -> None:
        self.host = settings.docker_host
        self.timeout = settings.call_timeout
        self.state = EngineState()
        self._client: Client | None = None
        self._api_version: str | None = None
        self._lock = threading.Lock()

    # -- client lifecycle (threads only) --

    def _check_socket(self) -> None:
        """Fail fast when nothing listens on the engine's unix socket: before the SDK opens
        (and, when the connect fails, leaks) a socket of its own."""
        if not self.host.startswith("unix://"):
            return
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self.host.removeprefix("unix://"))
        except OSError as err:
            raise unreachable(self.host, _reason(err)) from err
        finally:
            s.close()

    def _new_client(self, timeout: float | None) -> Client:
        """A client speaking the engine's API version. The SDK's version="auto" asks the
        engine from inside the constructor and leaks that connection when it fails, so the
        version is asked once by a client we close ourselves."""
        self._check_socket()
        # The stubs say int; the SDK passes it to requests, where None means no read timeout.
        read_timeout: Any = timeout
        version = self._api_version
        if version is None:
            probe = docker.DockerClient(
                base_url=self.host,
                timeout=read_timeout,
                version=docker.constants.MINIMUM_DOCKER_API_VERSION,
            )
            try:
                version = str(probe.api.version(api_version=False)["ApiVersion"])
            finally:
                probe.close()
            self._api_version = version
        return docker.DockerClient(base_url=self.host, timeout=read_timeout, version=version)

    def _get(self) -> Client:
        with self._lock:
            if self._client is None:
                self._client = self._new_client(self.timeout)
            return self._client

    def _drop(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def close(self) -> None:
        self._drop()

    def _note(self, err: TetherError | None) -> None:
        if err is None:
            self.state.status = "running"
            self.state.reason = None
        elif isinstance(err, EngineMissing):
            self.state.status = "missing"
            self.state.reason = err.message
        elif isinstance(err, ServiceUnavailable | Timeout):
            self.state.status = "stopped"
            self.state.reason = err.message

    def _run(
        self,
        fn: Callable[[Client], T],
        what: str | None,
        secrets: tuple[str, ...],
        timeout: float | None = None,
    ) -> T:
        try:
            self._check_socket()
            if timeout is None:
                result = fn(self._get())
            else:  # a slow call (prune) gets a client of its own with a longer timeout
                client = self._new_client(timeout)
                try:
                    result = fn(client)
                finally:
                    client.close()
        except Exception as err:
            ours = translate(err, self.host, secrets=secrets, what=what)
            if isinstance(ours, ServiceUnavailable | EngineMissing | Timeout):
                self._drop()  # a fresh connection next time: the engine may come back
            self._note(ours)
            raise ours from err
        self._note(None)
        return result

    async def call(
        self,
        fn: Callable[[Client], T],
        *,
        what: str | None = None,
        secrets: Iterable[str] = (),
        timeout: float | None = None,
    ) -> T:
        """Run ``fn(client)`` in a thread; docker errors come out as ours. ``timeout``
        replaces ``containers.call_timeout`` for calls known to be slow."""
        return await asyncio.to_thread(self._run, fn, what, tuple(secrets), timeout)

    def stream(
        self,
        open_stream: Callable[[Client], Iterator[T]],
        *,
        timeout: float | None,
        what: str | None = None,
        secrets: Iterable[str] = (),
    ) -> Stream[T]:
        """Start iterating a blocking docker stream (pull progress, followed logs) in a daemon
        thread of its own, so a long stream never occupies the shared thread pool nor blocks
        the worker's exit. ``timeout`` is the client's read timeout (None: wait for ever)."""
        return Stream(self, open_stream, timeout, what, tuple(secrets))

    # -- probing --

    def _probe(self) -> EngineState:
        try:
            v = self._run(lambda c: c.version(), None, ())
        except TetherError:
            return self.state
        self.state.version = str(v.get("Version") or "") or None
        return self.state

    async def probe(self) -> EngineState:
        """Ping the engine (heartbeat facts, and recovery after it comes back)."""
        return await asyncio.to_thread(self._probe)


class Stream(Generic[T]):
    """Items of a docker stream, read by a daemon thread and handed to the event loop.

    ``await next(timeout)`` returns the next item, or None when ``timeout`` passed first;
    it raises ``StopAsyncIteration`` at the end and our error if the stream failed."""

    def __init__(
        self,
        engine: Engine,
        open_stream: Callable[[Client], Iterator[T]],
        timeout: float | None,
        what: str | None,
        secrets: tuple[str, ...],
    ) -> None:
        self._engine = engine
        self._open = open_stream
        self._timeout = timeout
        self._what = what
        self._secrets = secrets
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stop = threading.Event()
        self._it: Iterator[T] | None = None
        self._done = False
        threading.Thread(target=self._pump, name="docker-stream", daemon=True).start()

    def _put(self, kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))

    def _pump(self) -> None:
        client = None
        try:
            client = self._engine._new_client(self._timeout)
            self._it = self._open(client)
            for item in self._it:
                if self._stop.is_set():
                    break
                self._put("item", item)
            self._put("end", None)
        except Exception as err:
            ours = translate(err, self._engine.host, secrets=self._secrets, what=self._what)
            self._engine._note(ours)
            self._put("error", ours)
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()

    async def next(self, timeout: float | None = None) -> T | None:
        if self._done:
            raise StopAsyncIteration
        try:
            kind, value = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        if kind == "item":
            return cast(T, value)
        self._done = True
        if kind == "error":
            raise value
        raise StopAsyncIteration

    async def close(self) -> None:
        """Stop reading; closes the connection where docker allows it (followed logs)."""
        self._done = True
        self._stop.set()
        closer = getattr(self._it, "close", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(closer)


# --- conversions (threads only) ---------------------------------------------------------------


def _ts(value: Any) -> float:
    """Docker gives Unix seconds in lists and RFC 3339 strings in inspect documents."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        text = value.rstrip("Z")
        main, _, frac = text.partition(".")
        with contextlib.suppress(ValueError):
            t = dt.datetime.fromisoformat(main).replace(tzinfo=dt.UTC).timestamp()
            return t + (float(f"0.{frac[:6]}") if frac.isdigit() else 0.0)
    return 0.0


def _ports(raw: list[dict[str, Any]] | None) -> list[Port]:
    out = []
    for p in raw or []:
        out.append(
            Port(
                int(p.get("PrivatePort", 0)),
                str(p.get("Type", "tcp")),
                p.get("IP") or None,
                int(p["PublicPort"]) if p.get("PublicPort") else None,
            )
        )
    out.sort(key=lambda p: (p.container_port, p.protocol, p.host_ip or "", p.host_port or 0))
    return out


def _container(summary: dict[str, Any], restart_count: int) -> Container:
    names = summary.get("Names") or []
    return Container(
        id=str(summary["Id"])[:12],
        name=str(names[0]).lstrip("/") if names else "",
        image=str(summary.get("Image", "")),
        state=str(summary.get("State", "")),
        status=str(summary.get("Status", "")),
        created=_ts(summary.get("Created")),
        ports=_ports(summary.get("Ports")),
        labels=dict(summary.get("Labels") or {}),
        restart_count=restart_count,
    )


def _summary(c: Client, full_id: str) -> dict[str, Any]:
    rows = c.api.containers(all=True, filters={"id": full_id})
    for r in rows:
        if r["Id"] == full_id:
            return dict(r)
    raise NotFound(f"no such container: {full_id[:12]}", {"what": "container"})


def container(c: Client, name: str) -> Container:
    doc = c.api.inspect_container(name)
    return _container(_summary(c, doc["Id"]), int(doc.get("RestartCount") or 0))


def inspect(c: Client, name: str) -> ContainerDetails:
    doc = c.api.inspect_container(name)
    summary = _summary(c, doc["Id"])
    return ContainerDetails(_container(summary, int(doc.get("RestartCount") or 0)), dict(doc))


def containers(c: Client, all_: bool, label: str | None, limit: int, offset: int) -> ContainerPage:
    filters = {"label": label} if label else None
    rows = c.api.containers(all=all_, filters=filters)
    rows.sort(key=lambda r: (-float(r.get("Created") or 0), r["Id"]))
    page = rows[offset : offset + limit]
    out = []
    for r in page:
        try:
            restarts = int(c.api.inspect_container(r["Id"]).get("RestartCount") or 0)
        except docker.errors.NotFound:
            continue  # removed between list and inspect
        out.append(_container(r, restarts))
    return ContainerPage(len(rows), offset, out)


def images(c: Client, all_: bool, limit: int, offset: int) -> ImagePage:
    rows = c.api.images(all=all_)
    rows.sort(key=lambda r: (-float(r.get("Created") or 0), r["Id"]))
    out = [
        Image(
            id=str(r["Id"]),
            tags=[t for t in (r.get("RepoTags") or []) if t != "<none>:<none>"],
            digests=[d for d in (r.get("RepoDigests") or []) if d != "<none>@<none>"],
            size=int(r.get("Size") or 0),
            created=_ts(r.get("Created")),
        )
        for r in rows[offset : offset + limit]
    ]
    return ImagePage(len(rows), offset, out)


def image(c: Client, ref: str) -> Image:
    doc = c.api.inspect_image(ref)
    return Image(
        id=str(doc["Id"]),
        tags=list(doc.get("RepoTags") or []),
        digests=list(doc.get("RepoDigests") or []),
        size=int(doc.get("Size") or 0),
        created=_ts(doc.get("Created")),
    )


def running_ids(c: Client) -> list[tuple[str, str]]:
    return [
        (str(r["Id"]), str((r.get("Names") or ["/"])[0]).lstrip("/"))
        for r in c.api.containers(all=False)
    ]


def stats(c: Client, name: str) -> ContainerStats:
    s = c.api.stats(name, stream=False)
    cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (
        pre.get("cpu_usage") or {}
    ).get("total_usage", 0)
    sys_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    ncpu = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [1])
    cpu_pct = cpu_delta / sys_delta * ncpu * 100.0 if sys_delta > 0 and cpu_delta > 0 else 0.0
    mem = s.get("memory_stats") or {}
    mstats = mem.get("stats") or {}
    # As `docker stats`: page cache is not the application's memory.
    cache = mstats.get("total_inactive_file", mstats.get("inactive_file", 0))
    usage = max(0, int(mem.get("usage") or 0) - int(cache or 0))
    limit = int(mem.get("limit") or 0)
    rx = tx = 0
    for n in (s.get("networks") or {}).values():
        rx += int(n.get("rx_bytes") or 0)
        tx += int(n.get("tx_bytes") or 0)
    rd = wr = 0
    for b in (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str(b.get("op", "")).lower()
        if op == "read":
            rd += int(b.get("value") or 0)
        elif op == "write":
            wr += int(b.get("value") or 0)
    return ContainerStats(
        id=str(s.get("id", name))[:12],
        name=str(s.get("name", name)).lstrip("/"),
        cpu_percent=round(cpu_pct, 2),
        memory_usage=usage,
        memory_limit=limit,
        memory_percent=round(usage / limit * 100.0, 2) if limit else 0.0,
        net_rx=rx,
        net_tx=tx,
        block_read=rd,
        block_write=wr,
        pids=int((s.get("pids_stats") or {}).get("current") or 0),
    )


# --- mutations (threads only) -----------------------------------------------------------------


def start(c: Client, name: str) -> Container:
    c.api.start(name)
    return container(c, name)


def stop(c: Client, name: str, timeout: int) -> Container:
    c.api.stop(name, timeout=timeout)  # the SDK extends its read timeout by ``timeout``
    return container(c, name)


def restart(c: Client, name: str, timeout: int) -> Container:
    c.api.restart(name, timeout=timeout)
    return container(c, name)


def remove(c: Client, name: str, force: bool, volumes: bool) -> Removed:
    full = c.api.inspect_container(name)["Id"]
    c.api.remove_container(full, force=force, v=volumes)
    return Removed(str(full)[:12])


def rename(c: Client, name: str, new: str) -> Container:
    full = c.api.inspect_container(name)["Id"]
    c.api.rename(full, new)
    return container(c, full)


def has_image(c: Client, ref: str) -> bool:
    try:
        c.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def auth_config(username: str, password: str, registry: str) -> dict[str, str]:
    cfg = {"username": username, "password": password}
    if registry != DOCKER_HUB:
        cfg["serveraddress"] = registry
    return cfg


def pull_events(c: Client, ref: ImageRef, auth: dict[str, str] | None) -> Iterator[LayerProgress]:
    """The pull stream as our events; an error inside the stream raises."""
    for ev in c.api.pull(
        ref.repository, tag=ref.pull_tag, stream=True, decode=True, auth_config=auth
    ):
        if "error" in ev:
            detail = ev.get("errorDetail") or {}
            raise docker.errors.APIError(
                str(ev["error"]), explanation=str(detail.get("message") or ev["error"])
            )
        detail = ev.get("progressDetail") or {}
        yield LayerProgress(
            id=str(ev.get("id") or ""),
            status=str(ev.get("status") or ""),
            current=int(detail["current"]) if detail.get("current") is not None else None,
            total=int(detail["total"]) if detail.get("total") else None,
        )


def pull_quiet(c: Client, ref: ImageRef, auth: dict[str, str] | None) -> Image:
    for _ in pull_events(c, ref, auth):
        pass
    return image(c, ref.local)


@dataclass
class RunSpec:
    """A validated ``run`` request in the SDK's terms."""

    image: ImageRef
    name: str | None
    command: list[str] | None
    entrypoint: list[str] | None
    env: list[str]
    ports: list[PortSpec]
    binds: list[Bind]
    restart: str
    restart_max_retries: int
    network: str | None
    labels: dict[str, str]
    memory: int | None
    cpus: float | None
    user: str | None
    workdir: str | None
    start: bool
    pull: str
    auth: dict[str, str] | None = None


def run(c: Client, spec: RunSpec) -> Container:
    ref = spec.image.local
    present = has_image(c, ref)
    if spec.pull == "always" or (spec.pull == "missing" and not present):
        pull_quiet(c, spec.image, spec.auth)
    elif not present:
        raise NotFound(
            f"image {ref} is not on the device; pull it first (containers/pull) or run with "
            'pull = "missing"',
            {"what": "image", "image": ref},
        )
    bindings: dict[str, list[Any]] = {}
    for p in spec.ports:
        if p.host_ip is not None and p.host_port is not None:
            b: Any = (p.host_ip, p.host_port)
        elif p.host_ip is not None:
            b = (p.host_ip,)
        else:
            b = p.host_port
        bindings.setdefault(p.key, []).append(b)
    restart_policy: dict[str, Any] = {"Name": spec.restart}
    if spec.restart == "on-failure":
        restart_policy["MaximumRetryCount"] = spec.restart_max_retries
    host_config = c.api.create_host_config(
        port_bindings=bindings or None,
        binds=[f"{b.source}:{b.target}:{'ro' if b.read_only else 'rw'}" for b in spec.binds]
        or None,
        restart_policy=restart_policy if spec.restart != "no" else None,
        network_mode=spec.network,
        mem_limit=spec.memory,
        nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
    )
    created = c.api.create_container(
        ref,
        command=spec.command,
        entrypoint=spec.entrypoint,
        environment=spec.env or None,
        ports=[(p.container_port, p.protocol) for p in spec.ports] or None,
        labels=spec.labels or None,
        name=spec.name,
        user=spec.user,
        working_dir=spec.workdir,
        host_config=host_config,
    )
    cid = str(created["Id"])
    if spec.start:
        try:
            c.api.start(cid)
        except docker.errors.APIError:
            # Like a failed `docker run`, but without leaving a dead container holding the name.
            with contextlib.suppress(docker.errors.APIError):
                c.api.remove_container(cid, force=True)
            raise
    return container(c, cid)


def logs(
    c: Client,
    name: str,
    *,
    tail: int,
    since: float | None,
    until: float | None,
    timestamps: bool,
    stdout: bool,
    stderr: bool,
) -> bytes:
    data = c.api.logs(
        name,
        stdout=stdout,
        stderr=stderr,
        timestamps=timestamps,
        tail=tail,
        since=since,
        until=until,
        stream=False,
    )
    return bytes(data)


def follow_logs(
    c: Client,
    name: str,
    *,
    tail: int,
    since: float | None,
    timestamps: bool,
    stdout: bool,
    stderr: bool,
) -> Iterator[bytes]:
    stream: Iterator[bytes] = c.api.logs(
        name,
        stdout=stdout,
        stderr=stderr,
        timestamps=timestamps,
        tail=tail,
        since=since,
        stream=True,
        follow=True,
    )
    return stream


def container_running(c: Client, name: str) -> bool:
    return bool((c.api.inspect_container(name).get("State") or {}).get("Running"))


def prune(c: Client, containers_: bool, images_: str) -> PruneResult:
    deleted_c: list[str] = []
    deleted_i: list[str] = []
    space = 0
    if containers_:
        r = c.api.prune_containers() or {}
        deleted_c = [str(x)[:12] for x in r.get("ContainersDeleted") or []]
        space += int(r.get("SpaceReclaimed") or 0)
    if images_ != "none":
        r = c.api.prune_images(filters={"dangling": images_ == "dangling"}) or {}
        for item in r.get("ImagesDeleted") or []:
            if item.get("Deleted"):
                deleted_i.append(str(item["Deleted"]))
            elif item.get("Untagged"):
                deleted_i.append(f"untagged {item['Untagged']}")
        space += int(r.get("SpaceReclaimed") or 0)
    return PruneResult(deleted_c, deleted_i, space)


# --- registries, engine ---------------------------------------------------------------------


def login(engine: Engine, registry: str, username: str, password: str) -> None:
    """Have the engine check the credentials against the registry.

    A throwaway client is used: the SDK keeps credentials of a successful login in memory,
    and we keep them only in the 0600 file."""

    def check() -> None:
        client = engine._new_client(engine.timeout)
        try:
            client.login(
                username=username,
                password=password,
                registry=None if registry == DOCKER_HUB else registry,
                reauth=True,
            )
        finally:
            client.close()

    try:
        check()
    except Exception as err:
        ours = translate(err, engine.host, secrets=(password,), what="registry")
        engine._note(ours)
        raise ours from err
    engine._note(None)


def engine_info(engine: Engine) -> EngineInfo:
    installed = find_dockerd() is not None
    try:
        v, info = engine._run(lambda c: (c.version(), c.info()), None, ())
    except (ServiceUnavailable, EngineMissing, Timeout) as err:
        return EngineInfo(
            installed=installed and not isinstance(err, EngineMissing),
            running=False,
            host=engine.host,
            reason=err.message,
        )
    engine.state.version = str(v.get("Version") or "") or None
    root = str(info.get("DockerRootDir") or "")
    storage = Storage(driver=str(info.get("Driver") or ""), data_root=root)
    if engine.host.startswith("unix://") and root and os.path.isdir(root):
        with contextlib.suppress(OSError):
            du = shutil.disk_usage(root)
            storage.total, storage.free = du.total, du.free
    return EngineInfo(
        installed=True,  # it answers, so it is installed (perhaps not on our PATH)
        running=True,
        host=engine.host,
        version=engine.state.version,
        api_version=str(v.get("ApiVersion") or "") or None,
        os=str(info.get("OperatingSystem") or "") or None,
        arch=str(info.get("Architecture") or "") or None,
        kernel=str(info.get("KernelVersion") or "") or None,
        containers=int(info.get("Containers") or 0),
        running_containers=int(info.get("ContainersRunning") or 0),
        images=int(info.get("Images") or 0),
        storage=storage,
    )


class PullTracker:
    """Per-layer and total progress from docker's pull events.

    A layer counts 0-80 % while downloading (bytes) and 80-100 % while extracting; layers
    that already exist count as done. The total weighs layers by size once sizes are known."""

    def __init__(self) -> None:
        self.layers: dict[str, LayerProgress] = {}
        self._frac: dict[str, float] = {}
        self._size: dict[str, int] = {}
        self._best = 0.0

    def update(self, ev: LayerProgress) -> bool:
        """Record one event; True when a layer changed state (worth a line of output)."""
        if not ev.id or ev.id in ("latest",) or ev.status.startswith("Pulling from"):
            return False
        if ev.status.startswith(("Digest:", "Status:")):
            return False
        prev = self.layers.get(ev.id)
        self.layers[ev.id] = ev
        if ev.total:
            self._size.setdefault(ev.id, ev.total)
        frac = self._frac.get(ev.id, 0.0)
        if ev.status == "Downloading" and ev.total:
            frac = 0.8 * min(1.0, (ev.current or 0) / ev.total)
        elif ev.status in ("Verifying Checksum", "Download complete"):
            frac = 0.8
        elif ev.status == "Extracting" and ev.total:
            frac = 0.8 + 0.2 * min(1.0, (ev.current or 0) / ev.total)
        elif ev.status in ("Pull complete", "Already exists"):
            frac = 1.0
        self._frac[ev.id] = max(frac, self._frac.get(ev.id, 0.0))
        return prev is None or prev.status != ev.status

    @property
    def percent(self) -> float:
        """Total progress; never goes back (layer sizes become known one by one)."""
        if not self._frac:
            return 0.0
        known = sum(self._size.values())
        if known and len(self._size) == len(self._frac):
            pct = 100.0 * sum(self._frac[k] * self._size[k] for k in self._frac) / known
        else:
            pct = 100.0 * sum(self._frac.values()) / len(self._frac)
        self._best = max(self._best, pct)
        return self._best

    def describe(self, ev: LayerProgress) -> str:
        if ev.total and ev.current is not None:
            return f"{ev.id}: {ev.status} {ev.current}/{ev.total} bytes"
        return f"{ev.id}: {ev.status}"
