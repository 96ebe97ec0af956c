"""The ``agent`` service, built into the gateway: about the device and the bundle itself."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from common import __version__
from common.config import Settings, redacted
from common.dispatch import Action, ActionTable, NoArgs
from common.messages import API_VERSION, Capabilities


@dataclass
class AgentContext:
    settings: Settings
    capabilities: Callable[[], Capabilities]


class Pong(msgspec.Struct):
    pong: bool
    device: str


class VersionInfo(msgspec.Struct):
    version: str
    api_version: str
    python: str


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


ACTIONS: ActionTable[AgentContext] = ActionTable(
    "agent",
    __version__,
    [
        Action("ping", ping, NoArgs, Pong),
        Action("capabilities", capabilities, NoArgs, Capabilities),
        Action("version", version, NoArgs, VersionInfo),
        Action("config", config, NoArgs, dict[str, Any]),
    ],
)
