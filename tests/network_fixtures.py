"""A real NetworkManager for the network service's tests, isolated from the host.

Layout (all names random per session, everything removed by the finalizer):

    netns <ns>-nm   NetworkManager (own mount + UTS namespace: read-only /sys so it manages the
                    veths without udev, tmpfs /run, overlay /etc so hostname writes stay private)
        eth0 ──veth── p0 10.77.0.1/24 ┐
        eth1 ──veth── p1 10.78.0.1/24 ┴ netns <ns>-peer: dnsmasq serving DHCP on both

    a private dbus-daemon (system-bus type, allows everything) on a unix socket in a temp dir.

Nothing runs in the machine's own network namespace; the host's /etc and hostname are
untouched. The Wi-Fi double (tests/network_double.py) gets its own private bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from common.config import parse_settings
from common.health import HealthPublisher, HealthReport
from common.messages import JobEvent
from common.worker import Worker

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""

NM_CONF = """[main]
plugins=keyfile
no-auto-default=*
dns=none
rc-manager=unmanaged
auth-polkit=false
hostname-mode=none
[logging]
level=INFO
[connectivity]
enabled=false
[keyfile]
path={root}/etc-nm/system-connections
"""

# Runs inside `ip netns exec NS unshare --mount --uts --`: private mounts for NetworkManager.
NM_SCRIPT = """#!/bin/sh
set -e
D="$1"
mount -o remount,ro /sys
mount -t tmpfs tmpfs /run
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$D/etc-up,workdir=$D/etc-work" /etc
mount --bind "$D/etc-nm" /etc/NetworkManager
mount --bind "$D/var-nm" /var/lib/NetworkManager
echo tether-test > /etc/hostname
hostname tether-test
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$D/bus.sock"
exec NetworkManager --no-daemon --config="$D/etc-nm/NetworkManager.conf" \
  --config-dir="$D/etc-nm/conf.d" --state-file="$D/var-nm/NetworkManager.state" \
  --pid-file="$D/nm.pid"
"""


def _run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=30)


def need_root_tools(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, NetworkManager)")
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"needs {t} (Debian package providing it)")


def short_dir(prefix: str) -> Path:
    # unix socket paths must stay short
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def start_bus(root: Path, name: str = "bus") -> tuple[subprocess.Popen[bytes], str]:
    sock = root / f"{name}.sock"
    conf = root / f"{name}.conf"
    conf.write_text(BUS_CONF.format(sock=sock))
    proc = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()  # printed once it listens
    if not line:
        proc.kill()
        raise RuntimeError("dbus-daemon did not start")
    return proc, f"unix:path={sock}"


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 10) -> None:
    if proc is None:
        return
    if proc.stdout is not None:
        proc.stdout.close()
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class NmEnv:
    root: Path
    ns: str
    peer: str
    address: str
    bus: subprocess.Popen[bytes] | None = None
    nm: subprocess.Popen[bytes] | None = None
    dnsmasq: subprocess.Popen[bytes] | None = None
    links: list[str] = field(default_factory=list)

    def start_nm(self) -> None:
        assert self.nm is None or self.nm.poll() is not None
        log = (self.root / "nm.log").open("ab")
        self.nm = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                "unshare",
                "--mount",
                "--uts",
                "--",
                "sh",
                str(self.root / "run-nm.sh"),
                str(self.root),
            ],
            stdout=log,
            stderr=log,
        )
        log.close()

    def stop_nm(self) -> None:
        stop(self.nm)

    def nm_in_netns(self, *args: str) -> str:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout


def _wait_nm_ready(env: NmEnv, timeout: float = 30) -> None:
    """Until NetworkManager owns its name and manages eth0 and eth1 (nmcli on the private bus)."""
    deadline = time.monotonic() + timeout
    envvars = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": env.address}
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["nmcli", "-t", "-f", "DEVICE,STATE", "device"],
            env=envvars,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        states = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        bad = ("unmanaged", "unavailable")
        if all(states.get(d, "unmanaged") not in bad for d in ("eth0", "eth1")):
            return
        time.sleep(0.2)
    log = (env.root / "nm.log").read_text()[-2000:]
    raise RuntimeError(f"NetworkManager did not manage eth0/eth1: {log}")


@pytest.fixture(scope="session")
def nm_env() -> Iterator[NmEnv]:
    """A real NetworkManager in its own network namespace, on a private bus (see module doc)."""
    need_root_tools("NetworkManager", "dbus-daemon", "dnsmasq", "ip", "unshare", "nmcli")
    tag = secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix="tnm-", dir="/tmp"))
    env = NmEnv(root, f"tnm-{tag}", f"tnm-{tag}-p", f"unix:path={root}/bus.sock")
    try:
        for d in ("etc-up", "etc-work", "etc-nm/conf.d", "etc-nm/system-connections", "var-nm"):
            (root / d).mkdir(parents=True)
        (root / "etc-nm" / "NetworkManager.conf").write_text(NM_CONF.format(root=root))
        (root / "run-nm.sh").write_text(NM_SCRIPT)
        _run("ip", "netns", "add", env.ns)
        _run("ip", "netns", "add", env.peer)
        for i in (0, 1):
            a, b = f"tnm{tag}{i}a", f"tnm{tag}{i}b"
            env.links.append(a)
            _run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            _run("ip", "link", "set", a, "netns", env.ns)
            _run("ip", "link", "set", b, "netns", env.peer)
            _run("ip", "-n", env.ns, "link", "set", a, "name", f"eth{i}")
            _run("ip", "-n", env.peer, "link", "set", b, "name", f"p{i}")
            _run("ip", "-n", env.peer, "addr", "add", f"10.7{7 + i}.0.1/24", "dev", f"p{i}")
            _run("ip", "-n", env.peer, "link", "set", f"p{i}", "up")
        _run("ip", "-n", env.ns, "link", "set", "lo", "up")
        _run("ip", "-n", env.peer, "link", "set", "lo", "up")
        dlog = (root / "dnsmasq.log").open("wb")
        env.dnsmasq = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                env.peer,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--port=0",
                "--bind-interfaces",
                "--interface=p0",
                "--interface=p1",
                "--except-interface=lo",
                "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,1h",
                "--dhcp-range=10.78.0.50,10.78.0.99,255.255.255.0,1h",
                "--dhcp-option=6,10.77.0.1",
                f"--dhcp-leasefile={root}/leases",
                f"--pid-file={root}/dnsmasq.pid",
            ],
            stdout=subprocess.DEVNULL,
            stderr=dlog,
        )
        dlog.close()
        env.bus, env.address = start_bus(root)
        env.start_nm()
        _wait_nm_ready(env)
        yield env
    finally:
        env.stop_nm()
        stop(env.dnsmasq)
        stop(env.bus)
        for ns in (env.ns, env.peer):
            with contextlib.suppress(subprocess.CalledProcessError):
                _run("ip", "netns", "del", ns)
        shutil.rmtree(root, ignore_errors=True)


# --- running the service in-process against the real backend -------------------------------


class FakeGatewayLink:
    """Publishes heartbeats as the process 'gateway' on the real local health topic, with
    ``facts.link`` set by the test: how the guard learns whether the MQTT link is up."""

    def __init__(self, worker: Worker[Any], runtime_dir: str) -> None:
        self.link = "up"
        self.pub = HealthPublisher(worker.zctx, "gateway", runtime_dir, 0.2, self._report)
        self.pub.set_running()

    def _report(self) -> HealthReport:
        return HealthReport(facts={"link": self.link})

    def set(self, link: str) -> None:
        self.link = link
        self.pub.publish_now()


def network_settings_toml(root: Path, address: str, **network: Any) -> str:
    lines = [
        'device_id = "test-net"',
        f'runtime_dir = "{root}/run"',
        f'state_dir = "{root}/state"',
        'services = ["network"]',
        "[health]",
        "interval = 0.2",
        "[network]",
        f'dbus_address = "{address}"',
    ]
    for k, v in network.items():
        if isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        elif isinstance(v, list):
            lines.append(f"{k} = [{', '.join(repr(x).replace(chr(39), chr(34)) for x in v)}]")
        else:
            lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def running_service(
    address: str, root: Path | None = None, **network: Any
) -> AsyncIterator[Any]:
    """The network service's context with its background tasks, as `python -m` would run it,
    plus a fake gateway link publisher. Yields ``(ctx, link)``. Pass ``root`` to keep the
    state directory across two runs (a restart)."""
    from services.network.actions import ACTIONS, keep_connected, make_context, watch_link

    own_root = root is None
    root = root or Path(tempfile.mkdtemp(prefix="tnw-", dir="/tmp"))
    settings = parse_settings(network_settings_toml(root, address, **network))
    worker: Worker[Any] = Worker("network", settings, ACTIONS)
    worker._open()
    ctx = make_context(worker)
    link = FakeGatewayLink(worker, settings.runtime_dir)
    tasks = [
        asyncio.ensure_future(keep_connected(ctx)),
        asyncio.ensure_future(watch_link(ctx)),
        asyncio.ensure_future(link.pub.run()),
    ]
    assert worker.health is not None
    tasks.append(asyncio.ensure_future(worker.health.run()))
    try:
        async with asyncio.timeout(10):
            while not ctx.nm.available:
                await asyncio.sleep(0.05)
        yield ctx, link
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await worker.jobs.shutdown()
        link.pub.close()
        await worker._close()
        if own_root:
            shutil.rmtree(root, ignore_errors=True)


async def call(ctx: Any, action: str, args: Any = None, timeout: float = 30) -> Any:
    import msgspec

    from services.network.actions import ACTIONS

    raw = msgspec.json.encode(args) if args is not None else None
    return msgspec.to_builtins(await ACTIONS.invoke(ctx, action, raw, timeout))


async def wait_job(ctx: Any, job_id: str, timeout: float = 60) -> JobEvent:
    async with asyncio.timeout(timeout):
        while True:
            ev = ctx.jobs.get(job_id)
            if ev.state.final:
                return ev  # type: ignore[no-any-return]
            await asyncio.sleep(0.05)
