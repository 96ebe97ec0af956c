"""Fixtures for the security tests: a fleet made with the real CLI (CA, provisioned devices,
operators), a mosquitto started from ``tether broker-config``'s output, raw MQTT clients."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import getpass
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from common.cli import build_parser
from common.devbroker import find_mosquitto, free_port, port_in_use
from common.pki import CertPair, DevPki, issue, load_ca, load_csr, sign_device_csr, write_cert
from common.provision import DeviceFiles, make_request


def tether(*argv: str) -> int:
    """Run a ``tether`` subcommand in-process; returns its exit code."""
    a = build_parser().parse_args(list(argv))
    rc: int = a.func(a)
    return rc


@dataclass
class Fleet:
    """A fleet CA folder plus the certificates the tests use."""

    dir: Path
    server: CertPair = field(init=False)

    def __post_init__(self) -> None:
        assert tether("pki", "init", str(self.ca_dir)) == 0
        ca = load_ca(self.ca_dir)
        self.server = issue(
            self.dir / "broker", "server", "localhost", ca.key, ca.cert, ["localhost", "127.0.0.1"]
        )

    @property
    def ca_dir(self) -> Path:
        return self.dir / "ca"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "ca.crt"

    def provision(
        self, device: str, *, days: int = 30, not_before: dt.datetime | None = None
    ) -> DeviceFiles:
        """The device flow: key + CSR on the device, signed by the CA, installed."""
        d = self.dir / "devices" / device
        if not_before is None:
            assert tether("provision", "--device-id", device, "--dir", str(d)) == 0
            crt = self.dir / f"{device}.crt"
            args = ["pki", "sign", "--ca", str(self.ca_dir), str(d / "device.csr")]
            assert tether(*args, "--out", str(crt), "--days", str(days)) == 0
            assert (
                tether(
                    "provision", "--dir", str(d), "--install", str(crt), "--ca", str(self.ca_cert)
                )
                == 0
            )
            return DeviceFiles(d)
        # A certificate valid in the past only (tests of expiry): same CA, same checks.
        files, _ = make_request(d, device)
        cert = sign_device_csr(
            load_ca(self.ca_dir),
            load_csr(files.csr.read_bytes()),
            days=days,
            not_before=not_before,
        )
        write_cert(files.cert, cert)
        shutil.copyfile(self.ca_cert, files.ca)
        return files

    def operator(self, name: str) -> CertPair:
        out = self.dir / "operators"
        assert (
            tether("pki", "issue", "--ca", str(self.ca_dir), "--name", name, "--out-dir", str(out))
            == 0
        )
        return CertPair(out / f"{name}.crt", out / f"{name}.key")

    def dev_pki(self, device: DeviceFiles, operator: CertPair) -> DevPki:
        """A ``DevPki`` view for tests.harness.Bundle: its device and operator certs."""
        ca = CertPair(self.ca_cert, self.ca_dir / "ca.key")
        return DevPki(self.dir, ca, self.server, CertPair(device.cert, device.key), operator)


class FleetBroker:
    """mosquitto started from a ``tether broker-config`` folder (``.port``/``.log`` like
    ``common.devbroker.Mosquitto``, so a harness Bundle can use it)."""

    def __init__(self, fleet: Fleet, out: Path, *extra: str) -> None:
        self.dir = out
        self.port = free_port()
        self.ws_port = free_port()
        self.log = out / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        rc = tether(
            "broker-config",
            "--out",
            str(out),
            "--ca",
            str(fleet.ca_cert),
            "--server-cert",
            str(fleet.server.cert),
            "--server-key",
            str(fleet.server.key),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ws-port",
            str(self.ws_port),
            "--log-file",
            str(self.log),
            "--user",
            getpass.getuser(),
            *extra,
        )
        assert rc == 0

    def start(self, timeout: float = 10.0) -> None:
        exe = find_mosquitto()
        assert exe is not None
        self.proc = subprocess.Popen(
            [exe, "-c", str(self.dir / "mosquitto.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while not (port_in_use(self.port) and port_in_use(self.ws_port)):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited: {err}{self.log_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen: {self.log_text()}")
            time.sleep(0.05)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
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


def tls_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert and key:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


@contextlib.asynccontextmanager
async def mqtt(
    broker: FleetBroker,
    ca: Path,
    cert: Path | None = None,
    key: Path | None = None,
    *,
    websocket: bool = False,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 10,
) -> AsyncIterator[aiomqtt.Client]:
    """A raw MQTT 5 client: on the certificate listener, or on the WebSocket one."""
    kw: dict[str, Any] = {}
    if websocket:
        kw = {"transport": "websockets", "websocket_path": "/mqtt"}
    async with aiomqtt.Client(
        "localhost",
        broker.ws_port if websocket else broker.port,
        identifier=f"t-{uuid.uuid4().hex[:10]}",
        username=username,
        password=password,
        tls_context=tls_context(ca, cert, key),
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=timeout,
        **kw,
    ) as c:
        yield c


async def collect(client: aiomqtt.Client, seconds: float) -> list[tuple[str, bytes]]:
    """Every message ``client`` receives within ``seconds``."""
    out: list[tuple[str, bytes]] = []

    async def read() -> None:
        async for m in client.messages:
            p = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            out.append((m.topic.value, p))

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), seconds)
    return out


async def first(client: aiomqtt.Client, timeout: float) -> tuple[str, bytes] | None:
    """The first message ``client`` receives within ``timeout``, or None."""

    async def read() -> tuple[str, bytes]:
        async for m in client.messages:
            p = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            return m.topic.value, p
        raise AssertionError("message stream ended")

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        return None
