"""Argument and result types of the containers service.

Argument types stay lenient (unknown fields are ignored); their values are checked by
``validate.py`` before anything reaches the engine.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

Page = Annotated[int, Meta(ge=1, le=500)]
Offset = Annotated[int, Meta(ge=0)]
StopSeconds = Annotated[int, Meta(ge=0, le=600)]


# --- arguments ------------------------------------------------------------------------------


class PsArgs(Struct):
    #: Include stopped containers.
    all: bool = True
    #: One container, by id (or unique id prefix) or name; None lists them all.
    name: str | None = None
    #: Only containers with this label (``key`` or ``key=value``).
    label: str | None = None
    limit: Page = 100
    offset: Offset = 0


class NameArgs(Struct):
    #: Container id (or unique id prefix) or name.
    name: str


class ImagesArgs(Struct):
    #: Include intermediate images.
    all: bool = False
    limit: Page = 100
    offset: Offset = 0


class StatsArgs(Struct):
    #: One container; None gives every running container.
    name: str | None = None


class RegistryAuth(Struct):
    """Credentials for one request; never stored, echoed or logged."""

    username: str
    password: str


class PullArgs(Struct):
    #: Image reference, e.g. ``debian:12``, ``registry.example.com:5000/team/app@sha256:...``.
    image: str
    #: Credentials for this pull only; without them the device's stored login for the image's
    #: registry is used (see ``login``).
    auth: RegistryAuth | None = None


class RunArgs(Struct):
    image: str
    name: str | None = None
    #: The command (a list of arguments; a string is split like a shell would, without a shell).
    command: list[str] | str | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    #: ``"8080:80"``, ``"127.0.0.1:8080:80/tcp"``, ``"53:53/udp"`` or ``"80"`` (any host port).
    ports: list[str] = msgspec.field(default_factory=list)
    #: ``"/host/path:/container/path[:ro]"`` or ``"volume_name:/container/path[:ro]"``.
    binds: list[str] = msgspec.field(default_factory=list)
    restart: Literal["no", "always", "unless-stopped", "on-failure"] = "no"
    #: Only with ``restart = "on-failure"``; 0 retries for ever.
    restart_max_retries: Annotated[int, Meta(ge=0, le=1000)] = 0
    #: ``bridge``, ``host``, ``none``, ``container:<name>`` or a user network's name.
    network: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    #: Memory limit in bytes (Docker's minimum is 6 MiB).
    memory: Annotated[int, Meta(ge=6 * 1024 * 1024)] | None = None
    #: CPU limit in CPUs (e.g. 0.5).
    cpus: Annotated[float, Meta(gt=0, le=1024)] | None = None
    user: str | None = None
    workdir: str | None = None
    #: ``missing`` pulls the image only when it is not on the device.
    pull: Literal["missing", "always", "never"] = "missing"
    auth: RegistryAuth | None = None
    #: Create without starting.
    start: bool = True


class StopArgs(Struct):
    name: str
    #: Seconds to wait after SIGTERM before SIGKILL.
    timeout: StopSeconds = 10


class RemoveArgs(Struct):
    name: str
    #: Remove a running container (it is killed).
    force: bool = False
    #: Remove its anonymous volumes too.
    volumes: bool = False


class RenameArgs(Struct):
    name: str
    new_name: str


class LogsArgs(Struct):
    name: str
    #: The last N lines (at most the device's ``containers.logs_max_lines``).
    tail: Annotated[int, Meta(ge=1)] = 100
    #: Only lines after this Unix time.
    since: Annotated[float, Meta(gt=0)] | None = None
    #: Only lines before this Unix time.
    until: Annotated[float, Meta(gt=0)] | None = None
    timestamps: bool = False
    stdout: bool = True
    stderr: bool = True


class FollowArgs(Struct):
    name: str
    #: Start with the last N lines (0: only new ones).
    tail: Annotated[int, Meta(ge=0)] = 10
    since: Annotated[float, Meta(gt=0)] | None = None
    timestamps: bool = False
    stdout: bool = True
    stderr: bool = True
    #: Stop after this many seconds (at most the device's ``containers.follow_max_seconds``).
    max_seconds: Annotated[float, Meta(gt=0)] = 300.0
    #: ... or after this many lines.
    max_lines: Annotated[int, Meta(ge=1, le=1_000_000)] = 10000


class PruneArgs(Struct):
    #: Remove stopped containers.
    containers: bool = True
    #: ``dangling``: untagged images; ``unused``: every image no container uses; ``none``.
    images: Literal["none", "dangling", "unused"] = "dangling"


class LoginArgs(Struct):
    #: Registry host[:port], e.g. ``registry.example.com:5000``; ``docker.io`` for Docker Hub.
    registry: str
    username: str
    password: str


class LogoutArgs(Struct):
    registry: str


class EngineInstallArgs(Struct):
    #: Run the installer even when the engine is already installed.
    force: bool = False


# --- results --------------------------------------------------------------------------------


class Port(Struct, omit_defaults=True):
    container_port: int
    protocol: str
    host_ip: str | None = None
    host_port: int | None = None


class Container(Struct):
    id: str
    name: str
    image: str
    #: created, running, paused, restarting, removing, exited or dead.
    state: str
    #: Docker's human status, e.g. "Up 3 minutes", "Exited (0) 2 hours ago".
    status: str
    created: float
    ports: list[Port]
    labels: dict[str, str]
    restart_count: int


class ContainerPage(Struct):
    total: int
    offset: int
    containers: list[Container]
    #: Where the next page starts (None: this was the last); a page is also cut short to keep
    #: the reply small.
    next_offset: int | None = None


class ContainerDetails(Struct):
    container: Container
    #: Docker's inspect document (``docker inspect``).
    attrs: dict[str, Any]


class Image(Struct):
    id: str
    tags: list[str]
    digests: list[str]
    size: int
    created: float


class ImagePage(Struct):
    total: int
    offset: int
    images: list[Image]
    next_offset: int | None = None


class ContainerStats(Struct):
    id: str
    name: str
    cpu_percent: float
    memory_usage: int
    memory_limit: int
    memory_percent: float
    net_rx: int
    net_tx: int
    block_read: int
    block_write: int
    pids: int


class LayerProgress(Struct, omit_defaults=True):
    id: str
    status: str
    current: int | None = None
    total: int | None = None


class PullResult(Struct):
    image: str
    id: str
    tags: list[str]
    digests: list[str]
    layers: list[LayerProgress]


class Removed(Struct):
    id: str
    removed: bool = True


class LogsResult(Struct):
    lines: list[str]
    #: Older lines were left out to stay within the size limit.
    truncated: bool
    bytes: int


class FollowResult(Struct):
    lines: int
    #: cancelled, max_seconds, max_lines, ended (container stopped) or engine_gone.
    stopped: str


class PruneResult(Struct):
    containers_deleted: list[str]
    images_deleted: list[str]
    space_reclaimed: int


class LoginResult(Struct):
    registry: str
    username: str
    stored: bool


class LogoutResult(Struct):
    registry: str
    removed: bool


class Storage(Struct, omit_defaults=True):
    driver: str
    data_root: str
    total: int | None = None
    free: int | None = None


class EngineInfo(Struct, omit_defaults=True):
    installed: bool
    running: bool
    host: str
    version: str | None = None
    api_version: str | None = None
    os: str | None = None
    arch: str | None = None
    kernel: str | None = None
    containers: int | None = None
    running_containers: int | None = None
    images: int | None = None
    storage: Storage | None = None
    #: Why the engine is not running, and what to do.
    reason: str | None = None


class InstallResult(Struct):
    installed: bool
    #: False when the engine was already installed and nothing was run.
    changed: bool
    version: str | None = None
