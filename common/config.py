"""Typed configuration for every Tether process, loaded from one TOML file.

The file is ``/etc/tether/tether.toml`` unless ``TETHER_CONFIG`` or ``--config`` names another.
Unknown keys and wrong types fail at start with the key's path and the reason, so a typo never
silently falls back to a default. Every key is documented in docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

DEFAULT_CONFIG_PATH = Path("/etc/tether/tether.toml")
ENV_CONFIG = "TETHER_CONFIG"

#: The worker services Tether knows (``agent`` is built into the gateway).
KNOWN_SERVICES = ("stats", "apt", "network", "containers")

DeviceId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
TopicPrefix = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")]
Seconds = Annotated[float, Meta(gt=0, le=86400)]
Port = Annotated[int, Meta(ge=1, le=65535)]


class MqttSettings(Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "localhost"
    port: Port = 8883
    #: "auto" tries MQTT 5 and falls back to 3.1.1 when the broker refuses it.
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    tls: bool = True
    #: Plain TCP is refused unless this is set *and* the broker is a loopback address.
    allow_plaintext_loopback: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
    #: How long the broker keeps the device's session (and QoS 1 commands) while offline.
    session_expiry: Annotated[int, Meta(ge=0)] = 7 * 86400
    keepalive: Annotated[int, Meta(ge=5, le=3600)] = 30
    reconnect_min: Seconds = 0.5
    reconnect_max: Seconds = 60.0


class GatewaySettings(Struct, forbid_unknown_fields=True, kw_only=True):
    #: Default per-command timeout; an action may declare its own.
    request_timeout: Seconds = 15.0
    #: Commands in flight per service before new ones are answered ``busy``.
    max_in_flight: Annotated[int, Meta(ge=1, le=10000)] = 64
    #: Largest accepted command payload in bytes (``too_large`` beyond).
    max_payload: Annotated[int, Meta(ge=256, le=16 * 1024 * 1024)] = 256 * 1024
    #: How long a command id is remembered to answer QoS 1 redeliveries from cache.
    dedup_ttl: Seconds = 600.0
    dedup_max: Annotated[int, Meta(ge=16)] = 4096


class HealthSettings(Struct, forbid_unknown_fields=True, kw_only=True):
    #: Heartbeat interval of every process on the local health topic.
    interval: Seconds = 2.0
    #: Heartbeats missed for this long while the process lives => hung => restart.
    hang_after: Seconds = 10.0
    #: Slow republish interval of the retained MQTT health message (it is also sent on change).
    mqtt_interval: Seconds = 60.0
    #: A service supervisord gave up on (crash loop) is retried this often by the watchdog.
    fatal_retry: Seconds = 60.0


class StatsSettings(Struct, forbid_unknown_fields=True, kw_only=True):
    #: Telemetry interval on ``{prefix}/{device}/stats``; 0 disables telemetry.
    interval: Annotated[float, Meta(ge=0, le=86400)] = 60.0


class AptSettings(Struct, forbid_unknown_fields=True, kw_only=True):
    #: The read-only main sources file (``Dir::Etc::sourcelist``).
    sources_list: str = "/etc/apt/sources.list"
    #: Where repositories are listed and added (``Dir::Etc::sourceparts``).
    sources_dir: str = "/etc/apt/sources.list.d"
    #: Where keys given to ``repos/add`` are written (referenced by ``signed-by``).
    keyring_dir: str = "/etc/apt/keyrings"
    #: Overrides of apt's lists and cache directories (``Dir::State::Lists``,
    #: ``Dir::Cache``); unset means apt's own. Tests point them at a scratch directory.
    lists_dir: str | None = None
    cache_dir: str | None = None
    #: How long a job waits for another program's dpkg/apt lock before failing ``locked``.
    lock_wait: Annotated[float, Meta(ge=0, le=86400)] = 300.0


class NetworkSettings(Struct, forbid_unknown_fields=True, kw_only=True):
    #: D-Bus address of NetworkManager's bus; None means the system bus.
    dbus_address: str | None = None
    #: Interfaces whose changes go through a NetworkManager checkpoint. None (the default)
    #: means "the devices of NetworkManager's primary connection" (the default route, which
    #: normally carries the MQTT link); [] disables checkpoints.
    protected_interfaces: list[str] | None = None
    #: NetworkManager rolls a protected change back by itself after this many seconds unless
    #: Tether commits it first.
    rollback_timeout: Annotated[int, Meta(ge=10, le=3600)] = 180
    #: A protected change is committed once the gateway has reported its MQTT link up for this
    #: long after the change (None: 2 x mqtt.keepalive + 5 s, long enough for a dead TCP
    #: link to be noticed). `network/confirm` commits at once.
    link_settle: Seconds | None = None
    #: How long to wait for NetworkManager to activate a connection.
    activation_timeout: Seconds = 60.0


class ContainersSettings(Struct, forbid_unknown_fields=True, kw_only=True):
    #: Docker Engine API endpoint (``unix:///path`` or ``tcp://host:port``).
    docker_host: Annotated[str, Meta(pattern=r"^(unix|tcp|http|https)://.+$")] = (
        "unix:///var/run/docker.sock"
    )
    #: Timeout of each Docker API call, so a wedged or stopped engine never hangs a command.
    call_timeout: Seconds = 20.0
    #: Longest silence tolerated while reading an image pull stream (big layers extract slowly).
    pull_idle_timeout: Seconds = 300.0
    #: Registry credentials stored by ``login`` (mode 0600); default
    #: ``{state_dir}/containers/credentials.json``.
    credentials_file: str | None = None
    #: Most bytes of log text in one ``logs`` reply (keeps replies far below packet limits).
    logs_max_bytes: Annotated[int, Meta(ge=1024, le=1024 * 1024)] = 64 * 1024
    #: Most lines a ``logs`` call may ask for (``tail``).
    logs_max_lines: Annotated[int, Meta(ge=1, le=100000)] = 5000
    #: Longest a followed log stream (a ``logs`` job) runs before it stops by itself.
    follow_max_seconds: Seconds = 3600.0
    #: How often the engine is probed for the heartbeat and automatic recovery.
    probe_interval: Seconds = 10.0


class AuthzSettings(Struct, forbid_unknown_fields=True, kw_only=True):
    """Which commands this device accepts (docs/security.md). Rules are ``service/action``
    globs (``*`` matches anything, also ``/``), e.g. ``"containers/*"``, ``"apt/repos/*"``.
    A matching ``deny`` wins over ``allow``; neither matching means ``default``.
    ``agent/ping`` and ``agent/capabilities`` are always allowed (discovery)."""

    default: Literal["allow", "deny"] = "allow"
    allow: list[str] = msgspec.field(default_factory=list)
    deny: list[str] = msgspec.field(default_factory=list)
    #: Deny every mutating action (and any action whose kind is not known yet).
    read_only: bool = False


class SupervisorSettings(Struct, forbid_unknown_fields=True, kw_only=True):
    #: supervisord's XML-RPC unix socket (``[unix_http_server] file``).
    socket: str = "/run/tether/supervisor.sock"


class Settings(Struct, forbid_unknown_fields=True, kw_only=True):
    device_id: DeviceId
    topic_prefix: TopicPrefix = "tether"
    #: IPC sockets live here (created with mode 0700).
    runtime_dir: str = "/run/tether"
    #: Spool, job records and other state that survives restarts.
    state_dir: str = "/var/lib/tether"
    #: Worker services the gateway routes to (``agent`` is built into the gateway).
    services: list[str] = msgspec.field(default_factory=lambda: list(KNOWN_SERVICES))
    mqtt: MqttSettings = msgspec.field(default_factory=MqttSettings)
    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)
    health: HealthSettings = msgspec.field(default_factory=HealthSettings)
    stats: StatsSettings = msgspec.field(default_factory=StatsSettings)
    supervisor: SupervisorSettings = msgspec.field(default_factory=SupervisorSettings)
    containers: ContainersSettings = msgspec.field(default_factory=ContainersSettings)
    network: NetworkSettings = msgspec.field(default_factory=NetworkSettings)
    apt: AptSettings = msgspec.field(default_factory=AptSettings)
    authz: AuthzSettings = msgspec.field(default_factory=AuthzSettings)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Workers run this much nicer than the gateway, so busy work never starves the link.
    worker_nice: Annotated[int, Meta(ge=0, le=19)] = 5


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; the message says where."""


def _check(settings: Settings) -> None:
    for name in settings.services:
        if name not in KNOWN_SERVICES:
            raise ConfigError(
                f"services: unknown service {name!r} (known: {', '.join(KNOWN_SERVICES)})"
            )
    m = settings.mqtt
    if not m.tls:
        if not m.allow_plaintext_loopback:
            raise ConfigError(
                "mqtt.tls: TLS is required; set mqtt.allow_plaintext_loopback = true to use "
                "plain TCP to a broker on this machine"
            )
        if not _is_loopback(m.host):
            raise ConfigError(
                f"mqtt.host: plaintext is only allowed to a loopback broker, not {m.host!r}"
            )
    if (m.cert_file is None) != (m.key_file is None):
        raise ConfigError("mqtt.cert_file and mqtt.key_file must be given together")
    if m.password is not None and m.username is None:
        raise ConfigError("mqtt.password needs mqtt.username")
    if m.reconnect_min > m.reconnect_max:
        raise ConfigError("mqtt.reconnect_min must not exceed mqtt.reconnect_max")
    n = settings.network
    settle = n.link_settle if n.link_settle is not None else 2 * m.keepalive + 5
    if "network" in settings.services and settle >= n.rollback_timeout:
        raise ConfigError(
            f"network.rollback_timeout ({n.rollback_timeout}s) must exceed the link settle "
            f"time ({settle:g}s); raise it or lower network.link_settle"
        )
    for key in ("allow", "deny"):
        for rule in getattr(settings.authz, key):
            if not _AUTHZ_RULE.match(rule):
                raise ConfigError(
                    f"authz.{key}: {rule!r} is not a rule; write SERVICE/ACTION globs such as "
                    '"stats/*" or "apt/repos/list"'
                )
    if len(str(Path(settings.runtime_dir) / "containers.health.sock")) > 100:
        raise ConfigError("runtime_dir: path too long for unix sockets (keep it under 70 chars)")


_AUTHZ_RULE = re.compile(r"^[a-z0-9_*?]+/[a-z0-9_*?/]+$")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_settings(data: bytes | str, source: str = "<string>") -> Settings:
    try:
        settings = msgspec.toml.decode(data, type=Settings)
    except msgspec.ValidationError as err:
        raise ConfigError(f"{source}: {_describe_validation(err)}") from err
    except msgspec.DecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from err
    try:
        _check(settings)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from err
    return settings


def _describe_validation(err: msgspec.ValidationError) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.mqtt.port`"; lead with the key instead.
    text = str(err)
    if " - at `$." in text:
        reason, _, where = text.partition(" - at `$.")
        return f"{where.rstrip('`')}: {reason}"
    return text


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_CONFIG)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    p = config_path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise ConfigError(f"{p}: cannot read configuration: {err.strerror}") from err
    return parse_settings(data, str(p))


def redacted(settings: Settings) -> dict[str, object]:
    """The effective configuration as plain data, with every secret replaced."""
    data = msgspec.to_builtins(settings)
    mqtt = data["mqtt"]
    if mqtt.get("password") is not None:
        mqtt["password"] = "***"  # noqa: S105 - the redaction marker
    return dict(data)
