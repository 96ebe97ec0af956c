"""Command authorization: the ``[authz]`` config section, the Authorizer, and (once the
gateway wires it) ``forbidden`` replies through a real bundle."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

import services.gateway.app
from common.apidocs import tables
from common.config import AuthzSettings, ConfigError, parse_settings
from common.errors import ErrorCode, Forbidden
from services.gateway.authz import Authorizer, mutating_lookup
from tests.harness import Bundle


def _authz(**kw: Any) -> Authorizer:
    return Authorizer(AuthzSettings(**kw), mutating_lookup(lambda: [t.info() for t in tables()]))


def _forbidden(a: Authorizer, service: str, action: str) -> Forbidden:
    with pytest.raises(Forbidden) as info:
        a.authorize(service, action)
    return info.value


def test_default_allows_everything() -> None:
    a = _authz()
    for t in tables():
        for action in t:
            a.authorize(t.service, action.name)


def test_deny_rule_wins_over_allow_and_names_the_rule() -> None:
    a = _authz(allow=["containers/*"], deny=["containers/images/*"])
    a.authorize("containers", "list")
    err = _forbidden(a, "containers", "images/pull")
    assert err.code is ErrorCode.FORBIDDEN
    assert "authz.deny 'containers/images/*'" in err.message
    assert err.details == {
        "service": "containers",
        "action": "images/pull",
        "rule": "deny containers/images/*",
    }


def test_default_deny_with_allow_list() -> None:
    a = _authz(default="deny", allow=["stats/*", "agent/health"])
    a.authorize("stats", "get")
    a.authorize("stats", "jobs/list")  # '*' spans '/'
    a.authorize("agent", "health")
    assert 'authz.default is "deny"' in _forbidden(a, "apt", "upgrade").message
    assert _forbidden(a, "agent", "config").details["rule"] == "default deny"


def test_discovery_is_always_allowed() -> None:
    a = _authz(default="deny", deny=["agent/*"], read_only=True)
    a.authorize("agent", "ping")
    a.authorize("agent", "capabilities")
    _forbidden(a, "agent", "version")


def test_read_only_denies_every_mutating_action_and_nothing_else() -> None:
    a = _authz(read_only=True)
    checked = 0
    for t in tables():
        for action in t:
            if action.mutating:
                err = _forbidden(a, t.service, action.name)
                assert "read-only" in err.message and "changes the system" in err.message
            else:
                a.authorize(t.service, action.name)
            checked += 1
    assert checked > 20
    # Known mutating actions of the built-in agent, independent of which services exist.
    _forbidden(a, "agent", "restart")
    a.authorize("agent", "services")


def test_read_only_fails_closed_when_the_kind_is_unknown() -> None:
    a = Authorizer(AuthzSettings(read_only=True), lambda s, n: None)
    err = _forbidden(a, "apt", "install")
    assert "not known to be read-only" in err.message
    Authorizer(AuthzSettings(), lambda s, n: None).authorize("apt", "install")
    a.check("apt", "list", mutating=False)


def test_config_section_parses_and_rejects_bad_rules() -> None:
    s = parse_settings(
        'device_id = "gw"\n[authz]\ndefault = "deny"\nallow = ["stats/*"]\nread_only = true\n'
    )
    assert s.authz.default == "deny" and s.authz.allow == ["stats/*"] and s.authz.read_only
    assert parse_settings('device_id = "gw"').authz == AuthzSettings()
    for bad in (
        'allow = ["stats"]',
        'deny = ["Stats/*"]',
        'deny = ["a/[b]"]',
        "foo = 1",
        'default = "maybe"',
    ):
        with pytest.raises(ConfigError, match="authz"):
            parse_settings(f'device_id = "gw"\n[authz]\n{bad}\n')


# --- end to end -------------------------------------------------------------------------

#: Enabled automatically once services/gateway/app.py passes ``authorize=`` to its Router
#: (see docs/security.md "Wiring"); until then it is skipped with this reason.
WIRED = "authorize=" in inspect.getsource(services.gateway.app)
needs_wiring = pytest.mark.skipif(
    not WIRED, reason="authz not wired into services/gateway/app.py yet (issue #7, lead)"
)


@needs_wiring
async def test_denied_actions_get_forbidden_through_a_real_bundle(
    bundle_factory: Callable[..., Bundle],
) -> None:
    b = bundle_factory(
        services=["stats"], config={"authz": {"deny": ["agent/restart", "stats/get"]}}
    )
    pid = b.pid("stats")
    r = await b.call("agent", "restart", {"service": "stats"})
    assert not r["ok"] and r["error"]["code"] == "forbidden", r
    assert "authz.deny" in r["error"]["message"]
    r = await b.call("stats", "get")
    assert not r["ok"] and r["error"]["code"] == "forbidden", r
    assert (await b.call("agent", "ping"))["ok"]
    assert b.pid("stats") == pid


@needs_wiring
async def test_read_only_device_through_a_real_bundle(
    bundle_factory: Callable[..., Bundle],
) -> None:
    b = bundle_factory(services=["stats"], config={"authz": {"read_only": True}})
    r = await b.call("agent", "stop", {"service": "stats"})
    assert not r["ok"] and r["error"]["code"] == "forbidden", r
    assert (await b.call("stats", "get"))["ok"]
    assert (await b.call("agent", "services"))["ok"]
