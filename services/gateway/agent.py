"""The ``agent`` service, built into the gateway: the device and the bundle itself.

Service control goes through supervisord's XML-RPC interface, so a restart is the same thing
an administrator's ``supervisorctl restart`` does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from common import __version__
from common.config import Settings, redacted
from common.dispatch import Action, ActionTable, NoArgs
from common.errors import Forbidden, InvalidRequest
from common.messages import API_VERSION, Capabilities, DeviceHealth
from common.supervisor import SupervisorClient

#: Most bytes of a log returned by ``logs`` (keeps a reply well under broker packet limits).
MAX_LOG_BYTES = 64 * 1024


@dataclass
class AgentContext:
    settings: Settings
    capabilities: Callable[[], Capabilities]
    health: Callable[[], DeviceHealth]
    supervisor: SupervisorClient
    #: Restarts the gateway once the reply has gone out.
    restart_self: Callable[[], None]

    @property
    def programs(self) -> list[str]:
        return ["gateway", "watchdog", *self.settings.services]

    def check_program(self, name: str) -> str:
        if name not in self.programs:
            raise InvalidRequest(
                f"unknown service {name!r}; services: {', '.join(self.programs)}",
                {"field": "service", "value": name},
            )
        return name


class Pong(msgspec.Struct):
    pong: bool
    device: str


class VersionInfo(msgspec.Struct):
    version: str
    api_version: str
    python: str


class ServiceArgs(msgspec.Struct):
    service: str


class LogsArgs(msgspec.Struct):
    service: str
    #: Last lines to return (bounded by MAX_LOG_BYTES).
    tail: Annotated[int, Meta(ge=1, le=5000)] = 100


class ServiceStatus(msgspec.Struct, omit_defaults=True):
    name: str
    state: str  # supervisord's: RUNNING, STOPPED, BACKOFF, FATAL, EXITED, STARTING, STOPPING
    health: str  # the heartbeat's: ok, degraded, starting, stopping, silent, down
    pid: int | None = None
    uptime: float | None = None
    restarts: int = 0
    last_exit: str | None = None
    version: str | None = None
    reason: str | None = None


class ControlResult(msgspec.Struct):
    service: str
    action: str
    state: str


class LogsResult(msgspec.Struct):
    service: str
    lines: list[str]
    truncated: bool


async def ping(ctx: AgentContext, _args: NoArgs) -> Pong:
    """Answer at once from the gateway (checks the link, not the workers)."""
    return Pong(True, ctx.settings.device_id)


async def capabilities(ctx: AgentContext, _args: NoArgs) -> Capabilities:
    """The services and actions this device offers, and its API version."""
    return ctx.capabilities()


async def version(_ctx: AgentContext, _args: NoArgs) -> VersionInfo:
    """Tether's version, API version and Python version."""
    return VersionInfo(__version__, API_VERSION, sys.version.split()[0])


async def config(ctx: AgentContext, _args: NoArgs) -> dict[str, Any]:
    """The effective configuration, with secrets redacted."""
    return redacted(ctx.settings)


async def health(ctx: AgentContext, _args: NoArgs) -> DeviceHealth:
    """The bundle's health now (the same document as the retained health topic)."""
    return ctx.health()


async def services(ctx: AgentContext, _args: NoArgs) -> list[ServiceStatus]:
    """Each service's state, pid, uptime, restarts, last exit and version."""
    infos = {i.name: i for i in await ctx.supervisor.all_info()}
    h = ctx.health().services
    out = []
    for name in ctx.programs:
        info = infos.get(name)
        sh = h.get(name)
        last_exit = sh.last_exit if sh else None
        if info is not None and info.state in ("EXITED", "FATAL", "BACKOFF") and not last_exit:
            last_exit = info.spawnerr or info.description
        out.append(
            ServiceStatus(
                name=name,
                state=info.state if info else "UNKNOWN",
                health=sh.state if sh else "silent",
                pid=info.pid if info and info.pid else None,
                uptime=round(info.uptime, 1) if info and info.state == "RUNNING" else None,
                restarts=sh.restarts if sh else 0,
                last_exit=last_exit,
                version=sh.version if sh else None,
                reason=sh.reason if sh else None,
            )
        )
    return out


async def restart(ctx: AgentContext, args: ServiceArgs) -> ControlResult:
    """Restart one service; restarting the gateway replies first, then restarts."""
    name = ctx.check_program(args.service)
    if name == "gateway":
        ctx.restart_self()
        return ControlResult(name, "restart", "restarting")
    await ctx.supervisor.restart(name)
    return ControlResult(name, "restart", (await ctx.supervisor.info(name)).state)


async def stop(ctx: AgentContext, args: ServiceArgs) -> ControlResult:
    """Stop one service until started again (the gateway cannot be stopped remotely)."""
    name = ctx.check_program(args.service)
    if name == "gateway":
        raise Forbidden("stopping the gateway would cut the device off; use agent/restart")
    await ctx.supervisor.stop(name)
    return ControlResult(name, "stop", (await ctx.supervisor.info(name)).state)


async def start(ctx: AgentContext, args: ServiceArgs) -> ControlResult:
    """Start a stopped service."""
    name = ctx.check_program(args.service)
    await ctx.supervisor.start(name)
    return ControlResult(name, "start", (await ctx.supervisor.info(name)).state)


async def logs(ctx: AgentContext, args: LogsArgs) -> LogsResult:
    """The last lines of a service's log (at most 64 KiB)."""
    name = ctx.check_program(args.service)
    text = await ctx.supervisor.tail(name, MAX_LOG_BYTES)
    lines = text.splitlines()
    full = len(text.encode()) < MAX_LOG_BYTES
    if not full and lines:
        lines = lines[1:]  # the first line is probably cut
    return LogsResult(name, lines[-args.tail :], truncated=not full or len(lines) > args.tail)


ACTIONS: ActionTable[AgentContext] = ActionTable(
    "agent",
    __version__,
    [
        Action("ping", ping, NoArgs, Pong),
        Action("capabilities", capabilities, NoArgs, Capabilities),
        Action("version", version, NoArgs, VersionInfo),
        Action("config", config, NoArgs, dict[str, Any]),
        Action("health", health, NoArgs, DeviceHealth),
        Action("services", services, NoArgs, list[ServiceStatus]),
        Action("restart", restart, ServiceArgs, ControlResult, mutating=True, timeout=60),
        Action("stop", stop, ServiceArgs, ControlResult, mutating=True, timeout=60),
        Action("start", start, ServiceArgs, ControlResult, mutating=True, timeout=60),
        Action("logs", logs, LogsArgs, LogsResult),
    ],
)
