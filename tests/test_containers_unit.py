"""The containers service's pure parts: input validation, error translation, pull progress,
the credentials file. No engine needed (those tests are in test_containers_engine.py)."""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import docker.errors
import pytest
import requests

from common.config import ContainersSettings
from common.errors import InvalidRequest, ServiceUnavailable, TetherError
from services.containers import backend, validate
from services.containers.actions import ACTIONS
from services.containers.credentials import CredentialStore
from services.containers.models import LayerProgress


@pytest.mark.parametrize(
    ("ref", "repository", "tag", "digest", "registry"),
    [
        ("debian", "debian", None, None, "docker.io"),
        ("debian:12", "debian", "12", None, "docker.io"),
        ("library/debian:12-slim", "library/debian", "12-slim", None, "docker.io"),
        ("localhost/app", "localhost/app", None, None, "localhost"),
        ("localhost:5000/team/app:1.0", "localhost:5000/team/app", "1.0", None, "localhost:5000"),
        ("127.0.0.1:5000/tether/app:1", "127.0.0.1:5000/tether/app", "1", None, "127.0.0.1:5000"),
        ("ghcr.io/Org-x/app", None, None, None, None),  # uppercase path: refused
        (
            "reg.example.com/a/b/c@sha256:" + "a" * 64,
            "reg.example.com/a/b/c",
            None,
            "sha256:" + "a" * 64,
            "reg.example.com",
        ),
        ("my_app__x.y-z:v1_2", "my_app__x.y-z", "v1_2", None, "docker.io"),
    ],
)
def test_image_refs(
    ref: str, repository: str | None, tag: str | None, digest: str | None, registry: str | None
) -> None:
    if repository is None:
        with pytest.raises(InvalidRequest):
            validate.image_ref(ref)
        return
    r = validate.image_ref(ref)
    assert (r.repository, r.tag, r.digest, r.registry) == (repository, tag, digest, registry)
    assert str(r) == ref


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "UPPER",
        "Bad/x",
        "a:b:c",
        "a@sha256:short",
        "-lead",
        "a//b",
        "a:" + "t" * 200,
        "a b",
        "x" * 300,
    ],
)
def test_bad_image_refs_name_the_field(bad: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate.image_ref(bad)
    assert info.value.details["field"] == "image"


def test_names() -> None:
    assert validate.new_name("web-1.a_b") == "web-1.a_b"
    assert validate.container_ref("/web") == "web"
    assert validate.container_ref("0123abcd") == "0123abcd"
    for bad in ("a", "-x", "x y", "x/y", "é1", "n" * 300, ""):
        with pytest.raises(InvalidRequest):
            validate.new_name(bad)
    for bad in ("x y", "../etc", "", "a;b"):
        with pytest.raises(InvalidRequest):
            validate.container_ref(bad)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("80", (80, "tcp", None, None)),
        ("8080:80", (80, "tcp", None, 8080)),
        ("53:53/udp", (53, "udp", None, 53)),
        ("127.0.0.1:8080:80/tcp", (80, "tcp", "127.0.0.1", 8080)),
        ("127.0.0.1::80", (80, "tcp", "127.0.0.1", None)),
        ("[::1]:8080:80", (80, "tcp", "::1", 8080)),
    ],
)
def test_port_specs(spec: str, expected: tuple[object, ...]) -> None:
    p = validate.port_spec(spec)
    assert (p.container_port, p.protocol, p.host_ip, p.host_port) == expected


@pytest.mark.parametrize(
    "bad",
    ["", "0", "65536", "80/icmp", "a:80", "1.2.3:80:80", "8000-8010:80", "1:2:3:4", "[::1:80"],
)
def test_bad_port_specs(bad: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate.port_spec(bad)
    assert info.value.details == {"field": "ports", "value": bad}


def test_binds() -> None:
    b = validate.bind("/srv/data:/data:ro")
    assert (b.source, b.target, b.read_only) == ("/srv/data", "/data", True)
    assert validate.bind("appdata:/var/lib/app").read_only is False
    for bad in (
        "/srv/../etc:/x",
        "/srv:/x/../y",
        "rel/path:/x",
        "/srv:relative",
        "/srv:/",
        "/srv:/x:rx",
        "/srv",
        ":/x",
        "/a:/b:ro:extra",
    ):
        with pytest.raises(InvalidRequest):
            validate.bind(bad)


def test_env_labels_network_command_registry() -> None:
    assert validate.env({"A": "1", "_B2": "x=y"}) == ["A=1", "_B2=x=y"]
    for bad in ({"1A": "x"}, {"A-B": "x"}, {"": "x"}, {"A": "nul\0"}):
        with pytest.raises(InvalidRequest):
            validate.env(bad)
    with pytest.raises(InvalidRequest):
        validate.labels({"a=b": "x"})
    assert validate.network("container:web") == "container:web"
    with pytest.raises(InvalidRequest):
        validate.network("container:bad name")
    assert validate.command("sh -c 'echo hi'") == ["sh", "-c", "echo hi"]
    with pytest.raises(InvalidRequest):
        validate.command("unbalanced 'quote")
    assert validate.registry("https://index.docker.io/v1/") == "docker.io"
    assert validate.registry("127.0.0.1:5000") == "127.0.0.1:5000"
    for bad in ("", "bad host", "a/b", "x:y:z"):
        with pytest.raises(InvalidRequest):
            validate.registry(bad)


def _api_error(status: int, text: str) -> docker.errors.APIError:
    resp = requests.Response()
    resp.status_code = status
    return docker.errors.APIError(text, response=resp, explanation=text)


def test_translate_docker_errors() -> None:
    host = "unix:///run/x.sock"
    cases = [
        (docker.errors.NotFound("x", explanation="No such container: x"), "not_found"),
        (_api_error(409, 'Conflict. The container name "/a" is already in use'), "conflict"),
        (_api_error(400, "invalid reference format"), "invalid_request"),
        (_api_error(500, "unauthorized: authentication required"), "auth_failed"),
        (_api_error(500, "Get https://r/v2/: no basic auth credentials"), "auth_failed"),
        (_api_error(500, "manifest for x:1 not found: manifest unknown"), "not_found"),
        (_api_error(500, "driver failed programming external connectivity"), "failed"),
        (requests.exceptions.ReadTimeout("read timed out"), "timeout"),
        (requests.exceptions.ConnectionError(ConnectionRefusedError(111, "refused")), None),
    ]
    for err, code in cases:
        ours = backend.translate(err, host)
        if code is None:  # no connection: unavailable, or missing when dockerd is absent
            assert ours.code in ("service_unavailable", "engine_missing")
        else:
            assert ours.code == code, (err, ours.code, ours.message)
        assert ours.message
    scrubbed = backend.translate(_api_error(500, "bad creds s3cr3t"), host, secrets=["s3cr3t"])
    assert "s3cr3t" not in scrubbed.message


def test_unreachable_names_the_engine(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/docker.sock"
    missing = backend.unreachable(host, "its socket does not exist", search_path=str(tmp_path))
    assert missing.code == "engine_missing" and "apt-get install docker.io" in missing.message
    (tmp_path / "docker.sock").touch()  # a socket exists: installed, just not answering
    down = backend.unreachable(host, "connection refused", search_path=str(tmp_path))
    assert down.code == "service_unavailable" and host in down.message
    assert backend.unreachable("tcp://10.0.0.1:2375", "x", str(tmp_path)).code == (
        "service_unavailable"
    )


def test_pull_tracker_progress() -> None:
    t = backend.PullTracker()
    assert t.update(LayerProgress("1", "Pulling from tether/app")) is False
    assert t.update(LayerProgress("a", "Pulling fs layer")) is True
    assert t.update(LayerProgress("b", "Already exists")) is True
    assert t.update(LayerProgress("a", "Downloading", 500, 1000)) is True
    assert t.update(LayerProgress("a", "Downloading", 1000, 1000)) is False
    p1 = t.percent
    assert 0 < p1 < 100
    t.update(LayerProgress("a", "Extracting", 500, 1000))
    assert t.percent > p1
    t.update(LayerProgress("a", "Pull complete"))
    assert t.percent == 100.0
    assert t.describe(LayerProgress("a", "Downloading", 5, 10)) == "a: Downloading 5/10 bytes"


def test_credentials_file_is_private(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "c" / "credentials.json")
    assert store.get("r:5000") is None and store.remove("r:5000") is False
    store.put("r:5000", "u", "p1")
    store.put("docker.io", "v", "p2")
    assert store.get("r:5000") is not None and store.registries() == ["docker.io", "r:5000"]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert store.remove("r:5000") is True
    assert "p1" not in store.path.read_text()
    assert list(store.path.parent.iterdir()) == [store.path]  # no temp files left
    store.path.write_text("{not json")
    with pytest.raises(Exception, match="corrupt"):
        store.get("docker.io")


def test_action_table() -> None:
    names = ACTIONS.names()
    for n in ("ps", "inspect", "images", "stats", "pull", "run", "start", "stop", "restart"):
        assert n in names
    for n in ("remove", "rename", "logs", "logs/follow", "prune", "login", "logout", "engine"):
        assert n in names
    assert "engine/install" in names and "jobs/cancel" in names
    jobs = {a.name for a in ACTIONS if a.job}
    assert jobs == {"pull", "logs/follow", "engine/install"}
    assert all(a.doc for a in ACTIONS)
    read_only = {a.name for a in ACTIONS if not a.mutating}
    assert {"ps", "inspect", "images", "stats", "logs", "engine"} <= read_only


async def test_dead_socket_answers_service_unavailable_at_once(tmp_path: Path) -> None:
    # A socket file nobody listens on: what a crashed (SIGKILLed) dockerd leaves behind.
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
    engine = backend.Engine(ContainersSettings(docker_host=f"unix://{path}", call_timeout=5))
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailable) as info:
        await engine.call(lambda c: c.ping())
    assert time.monotonic() - t0 < 3
    assert "connection refused" in info.value.message and str(path) in info.value.message
    assert engine.state.status == "stopped"
    path.unlink()  # gone entirely: "not running", or "missing" where dockerd is not installed
    with pytest.raises(TetherError) as gone:
        await engine.call(lambda c: c.ping())
    expected = "service_unavailable" if backend.find_dockerd() else "engine_missing"
    assert gone.value.code == expected
