"""Message types shared by every Tether process.

Wire formats:
- MQTT payloads are JSON objects (:class:`Command` in, :class:`Reply` / :class:`JobEvent` /
  :class:`Heartbeat` out).
- ZeroMQ IPC frames are JSON arrays (:class:`IpcRequest`, :class:`IpcReply`, :class:`IpcEvent`);
  ``array_like`` keeps them small and their decoding strict.

Schema evolution rules:
- Cloud-facing types (:class:`Command` and every action's argument type) ignore unknown fields,
  so an operator tool newer than the device still works for the fields both know.
- New fields are added with a default; fields are never renamed or repurposed.
- IPC types are strict: gateway and workers ship together in one bundle, and a mismatch there is
  a bug to surface, not to tolerate.
- ``API_VERSION`` is bumped (major) on any breaking change, (minor) on additions.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

import msgspec
from msgspec import Raw, Struct

from common.errors import ErrorCode, TetherError

API_VERSION = "1.0"


class ErrorBody(Struct, omit_defaults=True):
    """The ``error`` member of a failed reply or job."""

    code: ErrorCode
    message: str
    details: Any = None

    @classmethod
    def from_exc(cls, exc: TetherError) -> ErrorBody:
        return cls(exc.code, exc.message, exc.details)


class Command(Struct, omit_defaults=True):
    """A command's MQTT payload (on ``{prefix}/{device}/cmd/{service}/{action}``).

    ``id`` identifies the command for correlation and de-duplication (QoS 1 may deliver twice);
    ``reply_to`` is where an MQTT 3.1.1 client wants the reply (MQTT 5 clients use the Response
    Topic property instead); ``expires_at`` (Unix seconds) stops a stale command from running
    after the device was offline; ``args`` holds the action's arguments, decoded by the worker.
    """

    id: str | None = None
    reply_to: str | None = None
    expires_at: float | None = None
    args: Raw = msgspec.field(default_factory=lambda: Raw(b"{}"))


class Reply(Struct, omit_defaults=True):
    """A command's reply: ``{"id", "ok", "result"}`` or ``{"id", "ok", "error"}``."""

    id: str | None
    ok: bool
    result: Any = None
    error: ErrorBody | None = None


def ok_reply(cmd_id: str | None, result: Any) -> Reply:
    return Reply(cmd_id, True, result, None)


def error_reply(cmd_id: str | None, code: ErrorCode, message: str, details: Any = None) -> Reply:
    return Reply(cmd_id, False, None, ErrorBody(code, message, details))


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobRef(Struct):
    """What a job-starting action replies at once; follow ``{prefix}/{device}/jobs/{job_id}``."""

    job_id: str
    state: JobState = JobState.QUEUED
    topic: str | None = None


class JobEvent(Struct, omit_defaults=True):
    """One event on a job's topic. ``seq`` increases by one per event of the job; the final
    event (state succeeded/failed/cancelled) carries ``result`` or ``error`` and is retained."""

    job_id: str
    service: str
    action: str
    state: JobState
    seq: int
    ts: float
    progress: float | None = None
    message: str | None = None
    lines: list[str] = msgspec.field(default_factory=list)
    result: Any = None
    error: ErrorBody | None = None


class ServiceState(StrEnum):
    STARTING = "starting"
    OK = "ok"
    DEGRADED = "degraded"
    STOPPING = "stopping"
    DOWN = "down"


class Heartbeat(Struct, omit_defaults=True):
    """A process's beat on the local health topic (and inside the MQTT health message)."""

    service: str
    pid: int
    version: str
    started_at: float
    ts: float
    state: ServiceState
    interval: float
    reason: str | None = None
    facts: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def uptime(self) -> float:
        return max(0.0, self.ts - self.started_at)


class ServiceHealth(Struct, omit_defaults=True):
    """One process in the device's health. ``state`` adds to ServiceState: ``silent`` (no
    heartbeat lately), ``down`` (not running; see ``last_exit``)."""

    state: str
    pid: int | None = None
    version: str | None = None
    uptime: float | None = None
    reason: str | None = None
    restarts: int = 0
    last_exit: str | None = None
    facts: dict[str, Any] = msgspec.field(default_factory=dict)


class DeviceHealth(Struct):
    """Retained on ``{prefix}/{device}/health``: the bundle's health as the gateway sees it,
    published on change and every ``health.mqtt_interval`` seconds."""

    device: str
    ts: float
    state: str  # ok | degraded | down (the worst of the services)
    services: dict[str, ServiceHealth]


class ActionInfo(Struct, omit_defaults=True):
    """One action in the capabilities document."""

    name: str
    mutating: bool
    job: bool
    doc: str = ""
    #: Seconds the gateway waits for this action's reply, when not its default.
    timeout: float | None = None


class ServiceInfo(Struct):
    name: str
    version: str
    actions: list[ActionInfo]


class Capabilities(Struct):
    """Retained on ``{prefix}/{device}/capabilities`` and returned by ``agent/capabilities``."""

    device: str
    api_version: str
    version: str
    services: list[ServiceInfo]
    unavailable: list[str] = msgspec.field(default_factory=list)


# --- internal IPC (gateway <-> workers) --------------------------------------------------


class IpcRequest(Struct, array_like=True, forbid_unknown_fields=True):
    """Gateway -> worker. ``deadline`` is absolute (time.time()); a worker drops a request that
    reaches it after its deadline (the gateway has already answered ``timeout``)."""

    rid: int
    action: str
    args: Raw
    deadline: float


class IpcReply(Struct, array_like=True, forbid_unknown_fields=True):
    """Worker -> gateway. ``result`` stays raw JSON so the gateway relays it without decoding."""

    rid: int
    ok: bool
    result: Raw  # JSON null when not ok
    error: ErrorBody | None


class EventKind(StrEnum):
    JOB = "job"
    TELEMETRY = "telemetry"


class IpcEvent(Struct, array_like=True, forbid_unknown_fields=True):
    """Worker -> gateway, unsolicited: a job event or a telemetry sample to publish."""

    kind: EventKind
    key: str
    payload: Raw
    final: bool = False
    #: The sending worker's pid: a job whose worker's pid changed can never finish.
    pid: int = 0


def now() -> float:
    return time.time()
