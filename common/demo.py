"""``tether demo``: a local TLS broker and the whole bundle under supervisord, in one folder,
until Ctrl-C. Everything it starts, it stops."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from common.client import ClientError, ClientSettings, TetherClient, load_client_settings
from common.config import KNOWN_SERVICES
from common.devbroker import Mosquitto, find_mosquitto, port_in_use
from common.pki import DevPki, make_dev_pki

DEMO_DEVICE = "demo"
REPO = Path(__file__).resolve().parent.parent


def demo_dir() -> Path:
    env = os.environ.get("TETHER_DEMO_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tether-demo"


def default_client_config() -> Path | None:
    """Where ``tether call`` finds its broker when given no option."""
    env = os.environ.get("TETHER_CLIENT_CONFIG")
    if env:
        return Path(env)
    user = Path.home() / ".config" / "tether" / "client.toml"
    if user.exists():
        return user
    demo = demo_dir() / "client.toml"
    return demo if demo.exists() else None


def _toml_str(s: str) -> str:
    return msgspec.json.encode(s).decode()  # a JSON string is a valid TOML basic string


def device_config(
    d: Path, pki: DevPki, port: int, services: list[str], read_only: bool = False
) -> str:
    return f"""# Tether demo device (written by `tether demo`)
device_id = "{DEMO_DEVICE}"
runtime_dir = {_toml_str(str(d / "run"))}
state_dir = {_toml_str(str(d / "state"))}
services = {msgspec.json.encode(services).decode()}

[mqtt]
host = "localhost"
port = {port}
ca_file = {_toml_str(str(pki.ca.cert))}
cert_file = {_toml_str(str(pki.device.cert))}
key_file = {_toml_str(str(pki.device.key))}

[stats]
interval = 5.0

[supervisor]
socket = {_toml_str(str(d / "supervisor" / "supervisor.sock"))}

[authz]
read_only = {"true" if read_only else "false"}
"""


def client_config(pki: DevPki, port: int) -> str:
    return f"""# operator client for the Tether demo (written by `tether demo`)
host = "localhost"
port = {port}
ca_file = {_toml_str(str(pki.ca.cert))}
cert_file = {_toml_str(str(pki.operator.cert))}
key_file = {_toml_str(str(pki.operator.key))}
"""


@dataclass
class Supervisor:
    """supervisord running the bundle from the repository's supervisord.conf."""

    run_dir: Path
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    #: The interpreter with Tether installed (default: this one).
    python: str | None = None
    #: The user the stats worker runs as (default: the invoking user, as the demo does).
    stats_user: str | None = None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TETHER_PYTHON": self.python or sys.executable,
            "TETHER_CONFIG": str(self.config),
            "TETHER_RUN": str(self.run_dir),
            "TETHER_STATS_USER": self.stats_user
            or os.environ.get("TETHER_STATS_USER")
            or getpass.getuser(),
        }

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        exe = Path(sys.executable).parent / "supervisord"
        self.proc = subprocess.Popen(
            [str(exe), "-c", str(REPO / "supervisord.conf")],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
        )

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        exe = Path(sys.executable).parent / "supervisorctl"
        return subprocess.run(
            [str(exe), "-c", str(REPO / "supervisord.conf"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _ensure_mosquitto() -> None:
    if find_mosquitto():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("mosquitto is missing; installing it with apt-get ...", flush=True)
        subprocess.run(["apt-get", "update", "-q"], check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "mosquitto"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        return
    raise SystemExit("mosquitto is not installed. Run:  sudo apt-get install -y mosquitto")


async def _show(settings: ClientSettings) -> None:
    async with TetherClient(settings) as c:
        await c.wait_status(DEMO_DEVICE, "online", timeout=30)
        print(f"device '{DEMO_DEVICE}' is online", flush=True)
        reply: dict[str, Any] = {}
        for _ in range(50):  # the stats worker may still be starting
            reply = await c.call(DEMO_DEVICE, "stats", "get", timeout=10)
            if reply.get("ok"):
                break
            await asyncio.sleep(0.2)
        if not reply.get("ok"):
            raise ClientError(f"stats/get failed: {reply.get('error')}")
        r = reply["result"]
        print(
            f"stats/get answered: {r['hostname']} · {r['os']} · kernel {r['kernel']} · "
            f"CPU {r['cpu']['percent']}% of {r['cpu']['count']} · "
            f"memory {r['memory']['percent']}% · up {r['uptime'] / 3600:.1f} h",
            flush=True,
        )


def run_demo(
    port: int = 8883, ws_port: int = 9001, console_port: int = 8080, read_only: bool = False
) -> int:
    from common.console import start_console

    d = demo_dir()
    _ensure_mosquitto()
    for p in (port, ws_port, console_port):
        if p and port_in_use(p):
            print(
                f"port {p} is in use (another demo or broker?); choose others with "
                "--port/--ws-port/--console-port",
                file=sys.stderr,
            )
            return 1
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = make_dev_pki(d / "pki", DEMO_DEVICE)
    (d / "tether.toml").write_text(device_config(d, pki, port, list(KNOWN_SERVICES), read_only))
    broker = Mosquitto(d / "broker", pki, port, ws_port)
    sup = Supervisor(d / "supervisor", d / "tether.toml")
    client_file = d / "client.toml"
    stop_console: Callable[[], None] | None = None
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        broker.start()
        print(
            f"broker: mqtts://localhost:{port} (client certificates), "
            f"ws://localhost:{ws_port} (MQTT over WebSocket)",
            flush=True,
        )
        console_url, stop_console = start_console(console_port, broker=f"ws://localhost:{ws_port}")
        print(f"web console: {console_url}", flush=True)
        sup.start()
        client_file.write_text(client_config(pki, port))
        asyncio.run(_show(load_client_settings(client_file)))
        tether = Path(sys.executable).parent / "tether"
        print(
            "\nThe demo is running. From another terminal try:\n"
            f"  {tether} call demo stats/get\n"
            f"  {tether} call demo agent/capabilities\n"
            f"  {tether} health --config {d / 'tether.toml'}\n"
            f"Files (certificates, configs, logs): {d}\n"
            "Press Ctrl-C to stop everything.",
            flush=True,
        )
        while not stop:
            if sup.proc is None or sup.proc.poll() is not None:
                print(
                    f"supervisord exited unexpectedly; see {d / 'supervisor' / 'supervisord.log'}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (ClientError, RuntimeError, OSError) as err:
        print(f"demo failed: {err}\nlogs: {d / 'supervisor'} and {broker.log}", file=sys.stderr)
        return 1
    finally:
        print("\nstopping ...", flush=True)
        with contextlib.suppress(FileNotFoundError):
            client_file.unlink()
        sup.stop()
        if stop_console is not None:
            stop_console()
        broker.stop()
        print("stopped.", flush=True)
    return 0
