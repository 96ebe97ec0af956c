"""Secrets never leave the device: a bundle configured with a broker password never shows it
in replies (``agent/config``, ``agent/logs``, health, capabilities), retained topics, or
any log file it wrote."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from common.config import ConfigError, parse_settings
from tests.harness import Bundle

SECRET = "Sx-9f2e1c7a-do-not-leak"


async def test_broker_password_never_appears_in_outputs(
    bundle_factory: Callable[..., Bundle],
) -> None:
    b = bundle_factory(
        services=["stats"], config={"mqtt": {"username": "dev-user", "password": SECRET}}
    )
    seen: list[bytes] = []

    r = await b.call("agent", "config")
    assert r["ok"] and r["result"]["mqtt"]["password"] == "***"
    assert r["result"]["mqtt"]["username"] == "dev-user"
    seen.append(msgspec.json.encode(r))
    for action, args in [
        ("health", None),
        ("capabilities", None),
        ("services", None),
        ("version", None),
        *[("logs", {"service": s, "tail": 5000}) for s in ("gateway", "stats", "watchdog")],
    ]:
        r = await b.call("agent", action, args)
        assert r["ok"], r
        seen.append(msgspec.json.encode(r))
    seen.append(msgspec.json.encode(await b.call("stats", "get")))
    # Error replies too (one naming the configured programs).
    seen.append(msgspec.json.encode(await b.call("agent", "logs", {"service": "nope"})))

    # Every retained topic of the device (status, health, capabilities).
    async with b.client() as c, c.subscribe(f"tether/{b.device}/#") as q:
        with contextlib.suppress(TimeoutError):
            while True:
                _, payload = await asyncio.wait_for(q.get(), 1.0)
                seen.append(payload)
    assert len(seen) > 12

    for blob in seen:
        assert SECRET.encode() not in blob
    # Every file the bundle wrote: supervisord's and each program's logs, spool, state.
    files = [p for p in b.dir.rglob("*") if p.is_file() and p != b.config_path]
    assert any(p.suffix == ".log" for p in files)
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p


@pytest.mark.parametrize(
    "bad",
    [
        {"password": [SECRET]},
        {"password": SECRET, "username": None, "cert_file": "/x"},
        {"password": SECRET, "port": 0},
    ],
)
def test_config_errors_do_not_echo_the_password(bad: dict[str, Any]) -> None:
    import tomli_w

    text = tomli_w.dumps({"device_id": "gw", "mqtt": {k: v for k, v in bad.items() if v}})
    with pytest.raises(ConfigError) as info:
        parse_settings(text)
    assert SECRET not in str(info.value)
