"""A private Docker Engine for the containers comparison: its own network namespace, data root,
exec root and unix socket (nothing touches the machine's own engine or network), an image made
by ``docker import`` of a busybox rootfs, and a few created (not started) containers."""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE = "tether-bench/busybox:1"


@dataclass
class Engine:
    dir: Path
    socket: Path
    netns: str
    proc: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.host, timeout=30, version="1.41")


def why_not() -> str | None:
    """None if a private engine can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root to run a private dockerd"
    for tool in ("dockerd", "ip", "nsenter"):
        if shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is None:
            return f"{tool} is not installed (Debian: docker.io, iproute2)"
    if not os.path.exists("/bin/busybox"):
        return "/bin/busybox is missing (Debian: busybox-static)"
    if not (Path(__file__).resolve().parent.parent / "services" / "containers").is_dir():
        return "services/containers does not exist in this tree"
    return None


@contextlib.contextmanager
def engine(containers: int = 20) -> Iterator[Engine]:
    from tests.containers_fixtures import rootfs_tar

    d = Path(tempfile.mkdtemp(prefix="bdk-", dir="/tmp"))
    netns = f"tether-bdk-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True)
    log = open(d / "dockerd.log", "ab")  # noqa: SIM115 - kept by the child
    argv = ["nsenter", f"--net=/run/netns/{netns}", "dockerd", "--data-root", str(d / "data")]
    argv += ["--exec-root", str(d / "exec"), "-H", f"unix://{d / 'docker.sock'}"]
    argv += ["--pidfile", str(d / "dockerd.pid"), "--bridge=none", "--iptables=false"]
    argv += ["--ip-masq=false", "--log-level", "warn"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    e = Engine(d, d / "docker.sock", netns, proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError((d / "dockerd.log").read_text()[-2000:])
            with contextlib.suppress(Exception):
                c = e.client()
                try:
                    if c.ping():
                        break
                finally:
                    c.close()
            if time.monotonic() > deadline:
                raise RuntimeError("dockerd did not answer within 60 s")
            time.sleep(0.2)
        c = e.client()
        try:
            tar = rootfs_tar(d / "rootfs.tar")
            repo, tag = IMAGE.split(":")
            c.api.import_image(src=str(tar), repository=repo, tag=tag)
            for i in range(containers):
                c.containers.create(IMAGE, ["sleep", "1"], name=f"bench-{i}", network_disabled=True)
        finally:
            c.close()
        yield e
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for m in sorted((m for m in mounts if m.startswith(str(d))), reverse=True):
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self._path)
        self.sock = s


def raw_list(sock: Path) -> int:
    """``GET /containers/json?all=1`` (what ``docker ps -a`` asks), over a fresh connection."""
    conn = _UnixHTTP(str(sock))
    try:
        conn.request("GET", "/v1.41/containers/json?all=1")
        body = conn.getresponse().read()
    finally:
        conn.close()
    return body.count(b'"Id"')
