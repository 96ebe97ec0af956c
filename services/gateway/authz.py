"""Command authorization from the device's ``[authz]`` configuration.

Pure: no I/O. The gateway passes :meth:`Authorizer.authorize` to ``Router(authorize=...)``;
the router calls it after the service name is known and before dispatch, and a
:class:`~common.errors.Forbidden` it raises becomes the ``forbidden`` reply.

Order: always-allowed discovery actions -> ``read_only`` (mutating, or not known yet) ->
``deny`` rules -> ``allow`` rules -> ``default``. Whether an action is mutating comes from the
API definition (``Action(mutating=...)``), i.e. the ``ServiceInfo`` each worker describes and
the agent's own table.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

from common.config import AuthzSettings
from common.errors import Forbidden
from common.messages import ServiceInfo

#: (service, action) -> the action's ``mutating`` flag, or None when not known (yet).
MutatingLookup = Callable[[str, str], bool | None]

#: Discovery stays possible on every device, so an operator can learn what is allowed.
ALWAYS_ALLOWED = frozenset({"agent/ping", "agent/capabilities"})


def mutating_lookup(services: Callable[[], Iterable[ServiceInfo]]) -> MutatingLookup:
    """A lookup over the services' descriptions as they are *now* (workers describe
    themselves after start; ``services`` is called on every lookup)."""

    def lookup(service: str, action: str) -> bool | None:
        for info in services():
            if info.name == service:
                for a in info.actions:
                    if a.name == action:
                        return a.mutating
                return None
        return None

    return lookup


class Authorizer:
    def __init__(self, settings: AuthzSettings, lookup: MutatingLookup | None = None) -> None:
        self.settings = settings
        self._lookup = lookup

    def authorize(self, service: str, action: str) -> None:
        """The ``Router(authorize=...)`` hook: :meth:`check` with the looked-up kind."""
        mutating = self._lookup(service, action) if self._lookup is not None else None
        self.check(service, action, mutating)

    def check(self, service: str, action: str, mutating: bool | None) -> None:
        """Raise :class:`Forbidden` unless this device's configuration allows the command."""
        name = f"{service}/{action}"
        if name in ALWAYS_ALLOWED:
            return
        s = self.settings
        details = {"service": service, "action": action}
        if s.read_only and mutating is not False:
            why = (
                "changes the system"
                if mutating
                else "is not known to be read-only (its service has not described itself)"
            )
            raise Forbidden(
                f"{name} is not allowed: this device is read-only (authz.read_only) and the "
                f"action {why}",
                {**details, "rule": "read_only"},
            )
        rule = _first_match(name, s.deny)
        if rule is not None:
            raise Forbidden(
                f"{name} is denied by this device's configuration (authz.deny {rule!r})",
                {**details, "rule": f"deny {rule}"},
            )
        if _first_match(name, s.allow) is not None:
            return
        if s.default == "deny":
            raise Forbidden(
                f"{name} is not allowed on this device: no authz.allow rule matches and "
                'authz.default is "deny"',
                {**details, "rule": "default deny"},
            )


def _first_match(name: str, rules: list[str]) -> str | None:
    for rule in rules:
        if fnmatch.fnmatchcase(name, rule):
            return rule
    return None
