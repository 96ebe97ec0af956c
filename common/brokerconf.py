"""``tether broker-config``: a mosquitto (2.0+) configuration for a fleet.

Writes three files into one folder:

- ``mosquitto.conf``: a TLS listener for devices (client certificate required, the
  certificate's CN becomes the username) and a TLS WebSocket listener for browsers where
  operators log in with a username and password; TLS 1.2 minimum on both.
- ``acl``: a device may read only ``{prefix}/<its id>/cmd/#`` and write only its own reply,
  status, health, stats, job and capabilities topics (``pattern`` lines with ``%u``); an
  operator may command (write ``cmd/#``) and read everything of the devices granted to it,
  nothing else. Replies to an operator go to ``{prefix}/<device>/res/client/<client id>``
  (what ``common.client`` uses), which the device may write and the operator may read.
- ``passwd``: the operators' passwords as mosquitto's PBKDF2-SHA512 hashes (``$7$``, the
  format ``mosquitto_passwd`` writes), mode 0600.

Usernames are one namespace: a device id and an operator name must never be equal (an
operator named like a device would get that device's rights), so the known device ids are
checked against the operator names.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from common.pki import valid_device_id

#: PBKDF2 rounds for operator passwords (mosquitto_passwd's default is 101; more is safer,
#: each login costs one hash).
PBKDF2_ITERATIONS = 10000
SALT_BYTES = 12

#: Topics a device writes, relative to ``{prefix}/<device>/``.
DEVICE_WRITES = ("res/#", "status", "health", "stats", "jobs/#", "capabilities")


class BrokerConfigError(Exception):
    """The requested broker configuration is invalid; the message names the option."""


@dataclass(frozen=True)
class Operator:
    name: str
    password: str


@dataclass
class BrokerPlan:
    out: Path
    ca: Path
    server_cert: Path
    server_key: Path
    devices: list[str] = field(default_factory=list)
    operators: list[Operator] = field(default_factory=list)
    #: operator name -> device patterns (an id, ``*`` for all, or a glob over ``devices``).
    grants: dict[str, list[str]] = field(default_factory=dict)
    prefix: str = "tether"
    bind: str = "0.0.0.0"  # noqa: S104 - a broker listens on the network by design
    port: int = 8883
    #: None: no WebSocket listener.
    ws_port: int | None = 8884
    persistence_dir: Path | None = None
    #: None: log to syslog.
    log_file: Path | None = None
    #: The user mosquitto drops to (None: mosquitto's default, ``mosquitto``).
    user: str | None = None


def mosquitto_hash(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A password hash in mosquitto's ``$7$`` (PBKDF2-SHA512) format."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def check_mosquitto_hash(password: str, hashed: str) -> bool:
    """True if ``password`` matches a ``$7$`` hash (used by the tests and `--check`)."""
    try:
        _, kind, rounds, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        want = base64.b64decode(digest)
        got = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt), int(rounds), len(want)
        )
    except ValueError:
        return False
    return secrets.compare_digest(want, got)


def parse_operator(text: str) -> Operator:
    """``NAME:PASSWORD``, or ``NAME:@FILE`` to read the password from a file's first line
    (keeps it out of the process list and shell history)."""
    name, sep, password = text.partition(":")
    if not sep or not password:
        raise BrokerConfigError(f"--operator {name!r}: give NAME:PASSWORD or NAME:@FILE")
    _check_name("--operator", name)
    if password.startswith("@"):
        try:
            password = Path(password[1:]).read_text().splitlines()[0]
        except (OSError, IndexError) as err:
            raise BrokerConfigError(f"--operator {name}: cannot read {password[1:]}") from err
    if len(password) < 8:
        raise BrokerConfigError(f"--operator {name}: the password must have at least 8 chars")
    return Operator(name, password)


def parse_grant(text: str) -> tuple[str, str]:
    """``NAME:DEVICE_PATTERN``."""
    name, sep, pattern = text.partition(":")
    if not sep or not pattern:
        raise BrokerConfigError(
            f"--grant {text!r}: give NAME:DEVICE (a device id, a glob like 'gw-*', or '*')"
        )
    _check_name("--grant", name)
    return name, pattern


def read_devices(path: Path) -> list[str]:
    """Device ids, one per line; blank lines and ``#`` comments are ignored."""
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise BrokerConfigError(f"--devices-from {path}: {err.strerror}") from err
    out = []
    for n, line in enumerate(lines, 1):
        item = line.split("#", 1)[0].strip()
        if item:
            _check_name(f"--devices-from {path}:{n}", item)
            out.append(item)
    return out


def _check_name(option: str, name: str) -> None:
    if not valid_device_id(name):
        raise BrokerConfigError(
            f"{option}: {name!r} is not a valid name (letters, digits, '_', '.', '-'; at most "
            "64; starts with a letter or digit)"
        )


def _check_path(option: str, p: Path) -> None:
    if any(c in str(p) for c in "\n\r\0"):
        raise BrokerConfigError(f"{option}: the path must not contain line breaks")


def expand_grants(plan: BrokerPlan) -> dict[str, list[str]]:
    """operator -> sorted topic segments for the device level (device ids, or ``+``)."""
    operators = {o.name for o in plan.operators}
    clash = operators & set(plan.devices)
    if clash:
        raise BrokerConfigError(
            f"operator names {sorted(clash)} are also device ids; usernames must be unique"
        )
    out: dict[str, set[str]] = {}
    for name, patterns in plan.grants.items():
        segs = out.setdefault(name, set())
        for pat in patterns:
            if pat == "*":
                segs.add("+")
            elif valid_device_id(pat):
                segs.add(pat)
            elif any(c in pat for c in "*?["):
                if not plan.devices:
                    raise BrokerConfigError(
                        f"--grant {name}:{pat}: a glob needs the device list "
                        "(--devices-from FILE or --device ID)"
                    )
                hits = [d for d in plan.devices if fnmatch.fnmatchcase(d, pat)]
                if not hits:
                    raise BrokerConfigError(f"--grant {name}:{pat}: matches no known device")
                segs.update(hits)
            else:
                raise BrokerConfigError(f"--grant {name}:{pat}: not a device id, a glob, or '*'")
    return {k: sorted(v) for k, v in sorted(out.items())}


def acl_text(prefix: str, grants: dict[str, list[str]]) -> str:
    lines = [
        "# Tether fleet ACL (written by `tether broker-config`).",
        "# Devices: the username is the certificate's CN (the device id).",
        f"pattern read {prefix}/%u/cmd/#",
        *(f"pattern write {prefix}/%u/{t}" for t in DEVICE_WRITES),
    ]
    for name, segs in grants.items():
        lines += ["", f"# operator {name}", f"user {name}"]
        for seg in segs:
            lines += [f"topic write {prefix}/{seg}/cmd/#", f"topic read {prefix}/{seg}/#"]
    return "\n".join(lines) + "\n"


def passwd_text(operators: list[Operator]) -> str:
    return "".join(f"{o.name}:{mosquitto_hash(o.password)}\n" for o in operators)


def mosquitto_conf(plan: BrokerPlan) -> str:
    out = plan.out.resolve()
    persist = (plan.persistence_dir or out / "data").resolve()
    lines = [
        f"# Tether fleet broker (written by `tether broker-config`, {dt.date.today()}).",
        "# Needs mosquitto 2.0 or newer.",
        "per_listener_settings true",
        # Small request/reply packets must not wait for delayed ACKs (Nagle): ~40 ms each.
        "set_tcp_nodelay true",
        "persistence true",
        f"persistence_location {persist}/",
        f"log_dest file {plan.log_file.resolve()}" if plan.log_file else "log_dest syslog",
        "log_type error\nlog_type warning\nlog_type notice\nlog_type information",
        "connection_messages true",
    ]
    if plan.user:
        lines.append(f"user {plan.user}")
    lines += [
        "",
        "# Devices (and operators with certificates): TLS, client certificate required;",
        "# the certificate's CN is the username the ACL sees.",
        f"listener {plan.port} {plan.bind}",
        "protocol mqtt",
        f"cafile {plan.ca.resolve()}",
        f"certfile {plan.server_cert.resolve()}",
        f"keyfile {plan.server_key.resolve()}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        f"acl_file {out / 'acl'}",
    ]
    if plan.ws_port is not None:
        lines += [
            "",
            "# Browsers: MQTT over TLS WebSocket; operators log in with username + password.",
            f"listener {plan.ws_port} {plan.bind}",
            "protocol websockets",
            f"certfile {plan.server_cert.resolve()}",
            f"keyfile {plan.server_key.resolve()}",
            "tls_version tlsv1.2",
            "allow_anonymous false",
            f"password_file {out / 'passwd'}",
            f"acl_file {out / 'acl'}",
        ]
    return "\n".join(lines) + "\n"


def write_broker_config(plan: BrokerPlan) -> list[Path]:
    """Validate ``plan`` and write mosquitto.conf, acl and passwd into ``plan.out``."""
    for opt, p in (
        ("--out", plan.out),
        ("--ca", plan.ca),
        ("--server-cert", plan.server_cert),
        ("--server-key", plan.server_key),
    ):
        _check_path(opt, p)
    for opt, p in (
        ("--ca", plan.ca),
        ("--server-cert", plan.server_cert),
        ("--server-key", plan.server_key),
    ):
        if not p.is_file():
            raise BrokerConfigError(f"{opt} {p}: no such file")
    for opt, q in (("--persistence-dir", plan.persistence_dir), ("--log-file", plan.log_file)):
        if q is not None:
            _check_path(opt, q)
    if not all(c.isalnum() or c in "_.-/" for c in plan.prefix) or "//" in plan.prefix:
        raise BrokerConfigError(f"--prefix {plan.prefix!r}: letters, digits, '_.-' and '/' only")
    names = [o.name for o in plan.operators]
    if len(set(names)) != len(names):
        raise BrokerConfigError("--operator: each operator name may be given once")
    # A grant may name an operator without a password: one who connects with a certificate.
    grants = expand_grants(plan)
    plan.out.mkdir(parents=True, exist_ok=True, mode=0o755)
    (plan.persistence_dir or plan.out / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
    conf, acl, passwd = plan.out / "mosquitto.conf", plan.out / "acl", plan.out / "passwd"
    conf.write_text(mosquitto_conf(plan))
    acl.write_text(acl_text(plan.prefix, grants))
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(passwd_text(plan.operators))
    os.chmod(passwd, 0o600)
    return [conf, acl, passwd]
