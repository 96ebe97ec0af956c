"""Action tables: the one list of what a service can do, and the code that runs an action.

Each service declares ``ACTIONS = ActionTable(service, [Action(...), ...])`` in its
``actions.py``. The table is the single source for routing, argument decoding, the
capabilities document and docs/api.md. A handler is ``async def h(ctx, args) -> result``;
its docstring's first line is the action's description.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from msgspec import Raw

from common.errors import Internal, InvalidRequest, TetherError, Timeout, UnknownAction
from common.messages import ActionInfo, ErrorBody, ServiceInfo

C = TypeVar("C")
A = TypeVar("A")
R = TypeVar("R")

log = logging.getLogger("tether.dispatch")

_ACTION_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[a-z][a-z0-9_]*)*$")
_EMPTY = b"{}"


class NoArgs(msgspec.Struct):
    """For actions that take no arguments (unknown fields are ignored, as everywhere)."""


@dataclass(frozen=True, slots=True)
class Action(Generic[C, A, R]):
    name: str
    handler: Callable[[C, A], Awaitable[R]]
    args: type[A]
    result: Any
    #: Changes the system (installs, restarts, reconfigures); read-only devices deny these.
    mutating: bool = False
    #: Replies a JobRef at once and reports progress on the job topic.
    job: bool = False
    #: Overrides the gateway's default per-command timeout (seconds).
    timeout: float | None = None

    @property
    def doc(self) -> str:
        text = (self.handler.__doc__ or "").strip()
        return text.splitlines()[0] if text else ""


class ActionTable(Generic[C]):
    def __init__(self, service: str, version: str, actions: Iterable[Action[C, Any, Any]]) -> None:
        self.service = service
        self.version = version
        self._actions: dict[str, Action[C, Any, Any]] = {}
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {}
        #: Mutating actions refuse unknown arguments: an option this device does not know
        #: (a typo, or a newer tool's "dry_run") must not be ignored while the action runs.
        self._strict: dict[str, frozenset[str]] = {}
        for a in actions:
            if not _ACTION_NAME.match(a.name):
                raise ValueError(f"{service}: bad action name {a.name!r}")
            if a.name in self._actions:
                raise ValueError(f"{service}: action {a.name!r} declared twice")
            self._actions[a.name] = a
            self._decoders[a.name] = msgspec.json.Decoder(a.args)
            if a.mutating and isinstance(a.args, type) and issubclass(a.args, msgspec.Struct):
                self._strict[a.name] = frozenset(
                    f.encode_name for f in msgspec.structs.fields(a.args)
                )

    def __iter__(self) -> Any:
        return iter(self._actions.values())

    def __contains__(self, name: str) -> bool:
        return name in self._actions

    def get(self, name: str) -> Action[C, Any, Any] | None:
        return self._actions.get(name)

    def names(self) -> list[str]:
        return list(self._actions)

    def info(self) -> ServiceInfo:
        return ServiceInfo(
            self.service,
            self.version,
            [
                ActionInfo(a.name, a.mutating, a.job, a.doc, a.timeout)
                for a in self._actions.values()
            ],
        )

    def decode_args(self, name: str, raw: Raw | bytes | None) -> Any:
        data = bytes(raw) if raw else _EMPTY
        if data.strip() == b"null":  # "args": null means no arguments
            data = _EMPTY
        try:
            args = self._decoders[name].decode(data)
        except msgspec.ValidationError as err:
            raise invalid_from_validation(err) from err
        except msgspec.DecodeError as err:
            raise InvalidRequest(f"args is not valid JSON: {err}") from err
        except RecursionError as err:
            raise InvalidRequest("args are nested too deeply") from err
        allowed = self._strict.get(name)
        if allowed is not None:
            unknown = sorted(msgspec.json.decode(data, type=dict[str, Raw]).keys() - allowed)
            if unknown:
                raise InvalidRequest(
                    f"unknown argument {unknown[0]!r} for {self.service}/{name}, which changes "
                    "the device and so refuses what it does not know; it accepts: "
                    f"{', '.join(sorted(allowed)) or 'no arguments'}",
                    {"field": unknown[0], "unknown": unknown},
                )
        return args

    async def invoke(self, ctx: C, name: str, raw: Raw | bytes | None, timeout: float) -> Any:
        """Decode ``raw`` with the action's type and run its handler within ``timeout``."""
        action = self._actions.get(name)
        if action is None:
            raise UnknownAction(
                f"{self.service} has no action {name!r}",
                {"service": self.service, "actions": self.names()},
            )
        args = self.decode_args(name, raw)
        try:
            async with asyncio.timeout(timeout):
                return await action.handler(ctx, args)
        except TimeoutError as err:
            raise Timeout(f"{self.service}/{name} did not finish within {timeout:.1f}s") from err


def invalid_from_validation(err: msgspec.ValidationError) -> InvalidRequest:
    """Turn msgspec's "Expected `int`, got `str` - at `$.page`" into a field-named error."""
    text = str(err)
    reason, sep, where = text.partition(" - at `$")
    field = where.rstrip("`").lstrip(".") if sep else None
    missing = re.search(r"missing required field `([^`]+)`", reason)
    if missing:  # "Object missing required field `ssid` - at `$`": name the field itself
        field = f"{field}.{missing.group(1)}" if field else missing.group(1)
        return InvalidRequest(f"missing argument {field!r}", {"field": field})
    if field:
        return InvalidRequest(f"invalid argument {field!r}: {reason}", {"field": field})
    return InvalidRequest(f"invalid arguments: {reason}")


async def run_to_error(call: Awaitable[Any]) -> tuple[Any, ErrorBody | None]:
    """Await ``call``; map failures to an ErrorBody. The one place worker-side errors are
    logged: expected ones briefly, bugs with their traceback."""
    try:
        return await call, None
    except TetherError as err:
        log.info("%s: %s", err.code, err.message)
        return None, ErrorBody.from_exc(err)
    except asyncio.CancelledError:
        raise
    except Exception as err:
        log.exception("unexpected error")
        bug = Internal(f"internal error: {type(err).__name__}; see the device log")
        return None, ErrorBody.from_exc(bug)
