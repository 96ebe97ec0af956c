"""Checks of every external name before it reaches the engine: container names, image
references, port specs, bind mounts, environment keys, registries.

Each check raises :class:`InvalidRequest` naming the field and the bad value, and returns the
value in the form the backend wants. The grammar follows Docker's own (the distribution
``reference`` package and the daemon's name rules) so we refuse only what Docker would.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass

from common.errors import InvalidRequest

# Docker's container (and volume) name rule.
_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_ID = re.compile(r"^[0-9a-f]{1,64}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# The distribution reference grammar, in pieces.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_PART}(?:/{_PATH_PART})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_REGISTRY = re.compile(rf"^{_DOMAIN}$")

DOCKER_HUB = "docker.io"

MAX_NAME = 255
MAX_PATH = 4096


def _bad(field: str, value: object, why: str) -> InvalidRequest:
    shown = value if not isinstance(value, str) or len(value) <= 200 else value[:200] + "..."
    return InvalidRequest(f"invalid {field} {shown!r}: {why}", {"field": field, "value": shown})


def container_ref(value: str, field: str = "name") -> str:
    """An existing container: a name or an id (or unique id prefix)."""
    if len(value) <= MAX_NAME and (_NAME.match(value) or _ID.match(value)):
        return value.lstrip("/")
    raise _bad(field, value, "a container name ([a-zA-Z0-9][a-zA-Z0-9_.-]+) or id")


def new_name(value: str, field: str = "name") -> str:
    """A name for a new container (Docker's rule, at least two characters)."""
    if len(value) <= MAX_NAME and _NAME.match(value):
        return value.lstrip("/")
    raise _bad(
        field,
        value,
        "container names start with a letter or digit, then letters, digits, _ . or - "
        "(at least two characters)",
    )


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference. ``repository`` includes the registry if one was named."""

    repository: str
    tag: str | None
    digest: str | None
    registry: str

    def __str__(self) -> str:
        s = self.repository
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    @property
    def local(self) -> str:
        """How the engine names the image once it is here."""
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or 'latest'}"

    @property
    def pull_tag(self) -> str:
        """What the pull API wants next to the repository: a digest, a tag or ``latest``."""
        return self.digest or self.tag or "latest"


def image_ref(value: str, field: str = "image") -> ImageRef:
    """An image reference like ``debian:12`` or ``registry:5000/team/app@sha256:...``."""
    m = _REFERENCE.match(value) if len(value) <= MAX_NAME else None
    if m is None:
        raise _bad(
            field,
            value,
            "expected [registry[:port]/]name[:tag][@digest] with a lowercase name, "
            "e.g. debian:12 or registry.example.com:5000/team/app:1.0",
        )
    domain, path = m.group("domain"), m.group("path")
    # Like Docker: the first part is a registry only if it looks like a host.
    if domain is not None and not ("." in domain or ":" in domain or domain == "localhost"):
        if domain != domain.lower() or not re.fullmatch(_PATH_PART, domain):
            raise _bad(field, value, "repository names must be lowercase")
        path, domain = f"{domain}/{path}", None
    repository = f"{domain}/{path}" if domain else path
    return ImageRef(repository, m.group("tag"), m.group("digest"), domain or DOCKER_HUB)


def image_or_id(value: str, field: str = "image") -> str:
    """An existing image: a reference or an id (``sha256:...`` or a hex prefix)."""
    if re.fullmatch(r"(sha256:)?[0-9a-f]{4,64}", value):
        return value
    return str(image_ref(value, field))


def registry(value: str, field: str = "registry") -> str:
    """A registry host[:port]; Docker Hub's many spellings become ``docker.io``."""
    v = value.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    if v in ("docker.io", "index.docker.io", "registry-1.docker.io", "index.docker.io/v1"):
        return DOCKER_HUB
    if len(v) > MAX_NAME or not _REGISTRY.match(v):
        raise _bad(field, value, "expected a registry host[:port], e.g. registry.example.com:5000")
    return v


@dataclass(frozen=True)
class PortSpec:
    container_port: int
    protocol: str
    host_ip: str | None
    host_port: int | None

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.protocol}"


def _port(text: str, spec: str, field: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _bad(field, spec, f"{text!r} is not a port number (1-65535)")
    return int(text)


def port_spec(spec: str, field: str = "ports") -> PortSpec:
    """``[[host_ip:]host_port:]container_port[/tcp|udp|sctp]``; an empty host port means any."""
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise _bad(field, spec, "protocol must be tcp, udp or sctp")
    host_ip: str | None = None
    if body.startswith("["):  # [ipv6]:host:container
        end = body.find("]")
        if end < 0:
            raise _bad(field, spec, "unclosed '[' around an IPv6 address")
        host_ip, body = body[1:end], body[end + 1 :].removeprefix(":")
        parts = body.split(":")
    else:
        parts = body.split(":")
        if len(parts) == 3:
            host_ip = parts.pop(0)
    if "-" in body:
        raise _bad(field, spec, "port ranges are not supported; give one spec per port")
    if len(parts) == 1:
        return PortSpec(_port(parts[0], spec, field), proto, host_ip, None)
    if len(parts) != 2:
        raise _bad(field, spec, "expected [[host_ip:]host_port:]container_port[/protocol]")
    if host_ip is not None:
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise _bad(field, spec, f"{host_ip!r} is not an IP address") from None
    host_port = _port(parts[0], spec, field) if parts[0] else None
    return PortSpec(_port(parts[1], spec, field), proto, host_ip, host_port)


def _abs_path(path: str, spec: str, field: str, what: str) -> str:
    if not path.startswith("/"):
        raise _bad(field, spec, f"the {what} path must be absolute")
    if len(path) > MAX_PATH or "\0" in path:
        raise _bad(field, spec, f"the {what} path is too long or contains NUL")
    if ".." in path.split("/"):
        raise _bad(field, spec, f"the {what} path must not contain '..'")
    return path


@dataclass(frozen=True)
class Bind:
    source: str
    target: str
    read_only: bool


def bind(spec: str, field: str = "binds") -> Bind:
    """``/host/path:/container/path[:ro|rw]`` or ``volume_name:/container/path[:ro|rw]``."""
    parts = spec.split(":")
    mode = "rw"
    if len(parts) == 3:
        mode = parts.pop()
        if mode not in ("ro", "rw"):
            raise _bad(field, spec, "the mode must be ro or rw")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise _bad(field, spec, "expected source:/container/path[:ro|rw]")
    source, target = parts
    if source.startswith("/"):
        _abs_path(source, spec, field, "host")
    elif not _NAME.match(source) or len(source) > MAX_NAME:
        raise _bad(field, spec, "the source must be an absolute host path or a volume name")
    _abs_path(target, spec, field, "container")
    if target == "/":
        raise _bad(field, spec, "the container path must not be /")
    return Bind(source, target, mode == "ro")


def env(values: dict[str, str], field: str = "env") -> list[str]:
    out = []
    for k, v in values.items():
        if not _ENV_KEY.match(k):
            raise _bad(f"{field}.{k}", k, "environment names are letters, digits and _")
        if "\0" in v:
            raise _bad(f"{field}.{k}", k, "the value contains NUL")
        out.append(f"{k}={v}")
    return out


def labels(values: dict[str, str], field: str = "labels") -> dict[str, str]:
    for k, v in values.items():
        if not k or len(k) > MAX_NAME or "\0" in k or "=" in k or "\0" in v:
            raise _bad(f"{field}.{k}", k, "label keys are 1-255 characters without = or NUL")
    return values


def label_filter(value: str, field: str = "label") -> str:
    key, _, val = value.partition("=")
    labels({key: val}, field)
    return value


def network(value: str, field: str = "network") -> str:
    if value in ("bridge", "host", "none", "default"):
        return value
    if value.startswith("container:"):
        container_ref(value.removeprefix("container:"), field)
        return value
    if len(value) <= MAX_NAME and _NAME.match(value):
        return value
    raise _bad(field, value, "bridge, host, none, container:<name> or a network name")


def command(value: list[str] | str | None, field: str = "command") -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as err:
            raise _bad(field, value, f"cannot split it into arguments: {err}") from err
    if any("\0" in a for a in value):
        raise _bad(field, value, "an argument contains NUL")
    return value


def plain(value: str | None, field: str, limit: int = MAX_NAME) -> str | None:
    """Short free text (user, workdir...): bounded, without control characters."""
    if value is None:
        return None
    if len(value) > limit or any(ord(c) < 32 for c in value):
        raise _bad(field, value, f"at most {limit} characters, no control characters")
    return value
