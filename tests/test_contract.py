"""The shared contract: topics, configuration, generated API docs."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pytest

import common.topics
from common.config import ConfigError, parse_settings
from common.dispatch import ActionTable
from common.errors import ERROR_DOCS, ErrorCode


def test_topics_doctests() -> None:
    result = doctest.testmod(common.topics)
    assert result.attempted > 5
    assert result.failed == 0


def test_every_error_code_is_documented() -> None:
    assert set(ERROR_DOCS) == set(ErrorCode)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('device_id = "a"\nbogus = 1\n', "bogus"),
        ('device_id = "bad id"\n', "device_id"),
        ('device_id = "a"\nservices = ["printer"]\n', "unknown service 'printer'"),
        ('device_id = "a"\n[mqtt]\ntls = false\n', "TLS is required"),
        (
            'device_id = "a"\n[mqtt]\ntls = false\nallow_plaintext_loopback = true\n'
            'host = "10.1.1.1"\n',
            "only allowed to a loopback broker",
        ),
        ('device_id = "a"\n[mqtt]\ncert_file = "/x.crt"\n', "given together"),
        ('device_id = "a"\n[gateway]\nmax_in_flight = 0\n', "gateway.max_in_flight"),
        ("device_id = [\n", "not valid TOML"),
        ("", "device_id"),
    ],
)
def test_invalid_config_names_key_and_reason(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=r"t\.toml") as info:
        parse_settings(text, "t.toml")
    assert expected in str(info.value)


def test_plaintext_loopback_allowed_when_explicit() -> None:
    s = parse_settings(
        'device_id = "a"\n[mqtt]\ntls = false\nallow_plaintext_loopback = true\n'
        'host = "127.0.0.1"\n'
    )
    assert s.mqtt.tls is False


def test_action_names_are_checked() -> None:
    from common.dispatch import Action, NoArgs

    async def h(_c: None, _a: NoArgs) -> None:
        return None

    with pytest.raises(ValueError, match="bad action name"):
        ActionTable("x", "1", [Action("Bad", h, NoArgs, None)])
    with pytest.raises(ValueError, match="declared twice"):
        ActionTable("x", "1", [Action("a", h, NoArgs, None), Action("a", h, NoArgs, None)])


def test_api_docs_are_current(repo: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "common.cli", "api-docs", "--check"],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, f"{r.stderr}\nrun: .venv/bin/tether api-docs"


def test_missing_argument_names_the_field() -> None:
    import msgspec

    from common.dispatch import Action
    from common.errors import InvalidRequest

    class Args(msgspec.Struct):
        ssid: str

    async def h(_c: None, _a: Args) -> None:
        return None

    table = ActionTable("x", "1", [Action("a", h, Args, None)])
    with pytest.raises(InvalidRequest, match="missing argument 'ssid'") as info:
        table.decode_args("a", b"{}")
    assert info.value.details == {"field": "ssid"}


def test_api_docs_keep_same_named_types_of_services_apart() -> None:
    # A fresh user followed docs/api.md for stats/get and agent/logs and got apt's and
    # containers' argument types, which share the class names GetArgs and LogsArgs.
    import json

    from common.apidocs import render_asyncapi, tables

    schemas = json.loads(render_asyncapi(tables()))["components"]["schemas"]
    assert "per_cpu" in schemas["stats.GetArgs"]["properties"]
    assert "tail" in schemas["agent.LogsArgs"]["properties"]
    assert "service" in schemas["agent.LogsArgs"]["required"]


def test_mutating_actions_refuse_unknown_arguments() -> None:
    # A typo such as "dryrun" for "dry_run" must not remove packages for real.
    import msgspec

    from common.dispatch import Action
    from common.errors import InvalidRequest

    class Args(msgspec.Struct):
        packages: list[str]
        dry_run: bool = False

    async def h(_c: None, _a: Args) -> None:
        return None

    table = ActionTable(
        "x", "1", [Action("remove", h, Args, None, mutating=True), Action("get", h, Args, None)]
    )
    with pytest.raises(InvalidRequest, match="unknown argument 'dryrun'") as info:
        table.decode_args("remove", b'{"packages": ["a"], "dryrun": true}')
    assert info.value.details["field"] == "dryrun"
    assert table.decode_args("remove", b'{"packages": ["a"], "dry_run": true}').dry_run
    assert table.decode_args("get", b'{"packages": ["a"], "dryrun": true}').packages == ["a"]
