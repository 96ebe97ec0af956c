"""Real components for the tests: a private TLS mosquitto, the real bundle under the real
supervisord (from the repository's supervisord.conf), and an operator client.

Every bundle gets a unique device id, so tests sharing a broker never see each other's topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.client import ClientSettings, TetherClient
from common.demo import REPO, Supervisor
from common.devbroker import Mosquitto, free_port
from common.pki import DevPki
from common.supervisor import SupervisorClient

IS_ROOT = os.geteuid() == 0


def needs_root(reason: str = "needs root") -> None:
    if not IS_ROOT:
        pytest.skip(f"{reason}: run the tests as root (CI does)")


def needs_tool(*names: str) -> None:
    for n in names:
        if not (
            shutil.which(n) or any(os.access(f"{d}/{n}", os.X_OK) for d in ("/usr/sbin", "/sbin"))
        ):
            pytest.skip(f"{n} is not installed (scripts/setup installs it)")


def short_tmpdir(prefix: str) -> Path:
    # ipc:// paths must stay short (unix socket paths are limited to ~107 bytes).
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def client_settings(pki: DevPki, broker: Mosquitto) -> ClientSettings:
    return ClientSettings(
        host="localhost",
        port=broker.port,
        ca_file=str(pki.ca.cert),
        cert_file=str(pki.operator.cert),
        key_file=str(pki.operator.key),
        timeout=20,
    )


class Bundle:
    """The bundle for one device: a config file, supervisord, and helpers to talk to it."""

    def __init__(
        self,
        pki: DevPki,
        broker: Mosquitto,
        services: list[str],
        config: dict[str, Any] | None = None,
    ) -> None:
        self.pki = pki
        self.broker = broker
        self.device = f"t-{uuid.uuid4().hex[:8]}"
        self.services = services
        self.dir = short_tmpdir("tb-")
        self.config_data = deep_merge(
            {
                "device_id": self.device,
                "runtime_dir": str(self.dir / "run"),
                "state_dir": str(self.dir / "state"),
                "services": services,
                "log_level": "debug",
                "mqtt": {
                    "host": "localhost",
                    "port": broker.port,
                    "ca_file": str(pki.ca.cert),
                    "cert_file": str(pki.device.cert),
                    "key_file": str(pki.device.key),
                    "reconnect_min": 0.2,
                    "reconnect_max": 2.0,
                },
                "gateway": {"request_timeout": 5.0},
                "health": {"interval": 0.5},
                "stats": {"interval": 0.0},
                "supervisor": {"socket": str(self.dir / "sv" / "supervisor.sock")},
            },
            config or {},
        )
        self.config_path = self.dir / "tether.toml"
        self.config_path.write_text(toml(self.config_data))
        self.supervisor = Supervisor(self.dir / "sv", self.config_path)

    @property
    def client_settings(self) -> ClientSettings:
        return client_settings(self.pki, self.broker)

    def start(self, timeout: float = 30.0) -> None:
        self.supervisor.start()
        run_sync(self._wait_ready(timeout))

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with self.client() as c:
            await c.wait_status(self.device, "online", timeout)
            sup = SupervisorClient(self.config_data["supervisor"]["socket"])
            while True:
                r = await c.call(self.device, "agent", "capabilities", timeout=5)
                if r.get("ok") and not r["result"]["unavailable"]:
                    # ... and supervisord agrees every program is past its startsecs.
                    states = {i.name: i.state for i in await sup.all_info()}
                    if all(s == "RUNNING" for s in states.values()):
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"bundle not ready: {r}\n{self.logs()}")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        self.supervisor.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def supervisorctl(self, *args: str) -> str:
        r = self.supervisor.ctl(*args)
        return r.stdout + r.stderr

    def pid(self, program: str) -> int:
        out = self.supervisorctl("pid", program).strip()
        return int(out)

    def kill(self, program: str, sig: int = signal.SIGKILL) -> int:
        pid = self.pid(program)
        os.kill(pid, sig)
        return pid

    def logs(self, program: str | None = None) -> str:
        names = [program] if program else ["gateway", *self.services, "watchdog"]
        out = []
        for n in names:
            p = self.dir / "sv" / f"{n}.log"
            if p.exists():
                out.append(f"--- {n}.log\n" + p.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    @contextlib.asynccontextmanager
    async def client(self, **kw: Any) -> AsyncIterator[TetherClient]:
        async with TetherClient(self.client_settings, **kw) as c:
            yield c

    async def call(
        self, service: str, action: str, args: Any = None, timeout: float = 20.0, **kw: Any
    ) -> dict[str, Any]:
        async with self.client() as c:
            return await c.call(self.device, service, action, args, timeout=timeout, **kw)

    async def follow_job(self, job_id: str, timeout: float = 120.0) -> list[dict[str, Any]]:
        async with self.client() as c:
            return [ev async for ev in c.follow_job(self.device, job_id, timeout)]

    async def run_job(
        self, service: str, action: str, args: Any = None, timeout: float = 120.0
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Start a job and follow it to its end: (reply, events)."""
        async with self.client() as c:
            reply = await c.call(self.device, service, action, args, timeout=20)
            if not reply.get("ok"):
                return reply, []
            job_id = reply["result"]["job_id"]
            return reply, [ev async for ev in c.follow_job(self.device, job_id, timeout)]


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop
    (fixtures called from async tests): on a fresh loop in a helper thread."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


def wait_for(cond: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def json_loads(b: bytes) -> Any:
    return msgspec.json.decode(b)


__all__ = [
    "IS_ROOT",
    "REPO",
    "Bundle",
    "Mosquitto",
    "free_port",
    "needs_root",
    "needs_tool",
    "short_tmpdir",
    "wait_for",
]
_ = subprocess  # re-exported for tests that run tools
