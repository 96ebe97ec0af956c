"""A private mosquitto for the demo and the tests: TLS with client certificates, plus an
MQTT-over-WebSocket listener, on loopback ports, with its files in one folder.

Production brokers are configured with ``tether broker-config``; this is the local default.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.pki import DevPki

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")


def find_mosquitto() -> str | None:
    for p in MOSQUITTO_PATHS:
        if os.access(p, os.X_OK):
            return p
    return shutil.which("mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Mosquitto:
    dir: Path
    pki: DevPki
    port: int
    ws_port: int | None = None
    #: Extra lines for the TLS listener (e.g. an acl_file) and for the whole file.
    extra_tls: list[str] = field(default_factory=list)
    extra_global: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def log(self) -> Path:
        return self.dir / "mosquitto.log"

    def write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = [
            "# written by Tether for a local broker; loopback only",
            "per_listener_settings true",
            "set_tcp_nodelay true",  # replies must not wait for delayed ACKs (Nagle)
            f"persistence true\npersistence_location {self.dir}/",
            f"log_dest file {self.log}",
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information",
            "connection_messages true",
            # Running as root, mosquitto would switch to its own user and lose our key files.
            f"user {getpass.getuser()}",
            *self.extra_global,
            f"\nlistener {self.port} 127.0.0.1",
            "protocol mqtt",
            f"cafile {self.pki.ca.cert}",
            f"certfile {self.pki.server.cert}",
            f"keyfile {self.pki.server.key}",
            "tls_version tlsv1.2",
            "require_certificate true",
            "use_identity_as_username true",
            "allow_anonymous false",
            *self.extra_tls,
        ]
        if self.ws_port:
            lines += [
                f"\nlistener {self.ws_port} 127.0.0.1",
                "protocol websockets",
                "allow_anonymous true",
            ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        exe = find_mosquitto()
        if exe is None:
            raise RuntimeError(
                "mosquitto is not installed: run `sudo apt-get install mosquitto` (Debian)"
            )
        self.write_config()
        self.proc = subprocess.Popen(
            [exe, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        ports = [self.port] + ([self.ws_port] if self.ws_port else [])
        while not all(port_in_use(p) for p in ports):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited at start: {err}{log}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not listen on {ports} within {timeout}s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
        self.stop()
