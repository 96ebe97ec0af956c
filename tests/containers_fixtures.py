"""A real, private Docker Engine and image registry for the containers service's tests.

Layout (names random per session; the finalizer removes everything):

    netns tether-dk-<id>   dockerd (own --data-root, --exec-root, unix socket, pidfile, default
                           bridge *inside* the namespace so port publishing really works) and
                           docker-registry on 127.0.0.1:5000 with htpasswd (bcrypt) auth.

Only the engine's unix socket is shared with the host: the service under test (in-process or
under the bundle's supervisord) talks to it like to /var/run/docker.sock. Nothing touches the
machine's own network namespace, /etc/docker or ~/.docker.

Images: no registry is reachable from here, so a busybox image is made by ``docker import``
of a rootfs holding Debian's static /bin/busybox; a second, larger image is pushed to the
private registry (and removed locally) for authenticated pulls with progress.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "echo", "sleep", "cat", "ls", "env", "httpd", "wget", "true", "false", "kill")
IMAGE = "tether-test/busybox:1"
LABEL = "tether-test"
REGISTRY_PORT = 5000


def _root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("system test: needs root to run dockerd (run as root, as CI does)")
    for tool in ("dockerd", "docker-registry", "htpasswd", "nsenter", "ip"):
        if shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") is None:
            pytest.skip(
                f"{tool} is not installed (Debian: docker.io docker-registry apache2-utils)"
            )
    if not os.path.exists(BUSYBOX):
        pytest.skip("/bin/busybox is missing (Debian: busybox-static)")


def rootfs_tar(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A minimal root filesystem: static busybox, its applets as symlinks, /tmp, /etc."""
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "tmp", "etc", "data"):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(ti)
        tar.add(BUSYBOX, "bin/busybox")
        for a in APPLETS:
            ti = tarfile.TarInfo(f"bin/{a}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(ti)
        etc = {"etc/passwd": b"root:x:0:0:root:/:/bin/sh\n", "etc/group": b"root:x:0:\n"}
        for name, data in {**etc, **(extra or {})}.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))
    return path


@dataclass
class DockerEnv:
    dir: Path
    netns: str
    socket: Path
    registry: str
    username: str
    password: str
    image: str
    #: In the registry only (pull it to get it), larger than the base image.
    private_image: str
    dockerd: subprocess.Popen[bytes] | None = None
    registry_proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def client(self, timeout: int = 30) -> Any:
        # A fixed API version: "auto" connects inside the constructor (and leaks on failure).
        return docker.DockerClient(base_url=self.host, timeout=timeout, version="1.41")

    def in_netns(self, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.netns}", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- engine lifecycle --

    def start_engine(self, timeout: float = 30) -> None:
        d = self.dir
        log = open(d / "dockerd.log", "ab")  # noqa: SIM115 - kept by the child
        self.dockerd = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{self.netns}",
                "dockerd",
                "--data-root",
                str(d / "data"),
                "--exec-root",
                str(d / "exec"),
                "-H",
                self.host,
                "--pidfile",
                str(d / "dockerd.pid"),
                "--iptables=false",
                "--ip-masq=false",
                "--insecure-registry",
                self.registry,
                "--shutdown-timeout",
                "2",
                "--log-level",
                "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.dockerd.poll() is not None:
                raise RuntimeError(f"dockerd exited: {self.log()}")
            with contextlib.suppress(Exception):
                # A raw connect first: the SDK leaks its socket when the connect fails
                # (and a killed dockerd leaves its socket file behind).
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect(str(self.socket))
                c = self.client(timeout=2)
                try:
                    if c.ping():
                        return
                finally:
                    c.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not come up in {timeout}s: {self.log()}")
            time.sleep(0.1)

    def stop_engine(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.dockerd is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.dockerd.send_signal(sig)
        try:
            self.dockerd.wait(timeout)
        except subprocess.TimeoutExpired:
            self.dockerd.kill()
            self.dockerd.wait(10)
        self.dockerd = None

    def log(self) -> str:
        p = self.dir / "dockerd.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""

    def remove_test_containers(self) -> None:
        c = self.client()
        try:
            for ct in c.containers.list(all=True, filters={"label": LABEL}):
                with contextlib.suppress(docker.errors.NotFound):
                    ct.remove(force=True)
        finally:
            c.close()


def _start_registry(env: DockerEnv) -> None:
    d = env.dir / "registry"
    (d / "data").mkdir(parents=True)
    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", env.username, env.password],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    (d / "htpasswd").write_text(htpasswd)
    (d / "config.yml").write_text(
        f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {d / "data"}
  delete:
    enabled: true
http:
  addr: {env.registry}
  secret: {secrets.token_hex(16)}
auth:
  htpasswd:
    realm: tether-test
    path: {d / "htpasswd"}
"""
    )
    log = open(d / "registry.log", "ab")  # noqa: SIM115 - kept by the child
    env.registry_proc = subprocess.Popen(
        [
            "nsenter",
            f"--net=/run/netns/{env.netns}",
            "docker-registry",
            "serve",
            str(d / "config.yml"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    deadline = time.monotonic() + 15
    while True:
        r = env.in_netns("/bin/busybox", "wget", "-q", "-O-", f"http://{env.registry}/v2/")
        # 401 means it is up and asking for credentials.
        if "401" in r.stderr or "Unauthorized" in r.stderr:
            return
        if env.registry_proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"docker-registry did not start: {r.stderr}")
        time.sleep(0.1)


def _make_images(env: DockerEnv) -> None:
    c = env.client(timeout=120)
    try:
        tar = rootfs_tar(env.dir / "base.tar")
        repo, tag = env.image.rsplit(":", 1)
        c.api.import_image_from_file(str(tar), repository=repo, tag=tag)
        # A distinct, larger layer, so the pull has bytes to download and report.
        big = rootfs_tar(env.dir / "app.tar", {"data/blob": os.urandom(3 * 1024 * 1024)})
        repo, tag = env.private_image.rsplit(":", 1)
        c.api.import_image_from_file(str(big), repository=repo, tag=tag)
        auth = {"username": env.username, "password": env.password}
        for ev in c.api.push(repo, tag=tag, auth_config=auth, stream=True, decode=True):
            if "error" in ev:
                raise RuntimeError(f"push failed: {ev}")
        c.api.remove_image(env.private_image, force=True)
    finally:
        c.close()


def _kill_leftovers(path: Path) -> None:
    """Processes a killed dockerd leaves behind (containerd shims and the containers under
    them), found by this session's unique directory in their command line."""
    mine = str(path).encode()
    shims = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            with contextlib.suppress(OSError):
                if mine in (p / "cmdline").read_bytes():
                    shims.append(int(p.name))
    victims = []
    for pid in shims:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                victims += [int(c) for c in (task / "children").read_text().split()]
    for pid in victims + shims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _umount_under(path: Path) -> None:
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f]
    for m in sorted((m for m in mounts if m.startswith(str(path))), reverse=True):
        subprocess.run(["umount", "-l", m], check=False, capture_output=True)


@pytest.fixture(scope="session")
def docker_env() -> Iterator[DockerEnv]:
    _root_and_tools()
    d = Path(tempfile.mkdtemp(prefix="tdk-", dir="/tmp"))
    netns = f"tether-dk-{secrets.token_hex(4)}"
    env = DockerEnv(
        dir=d,
        netns=netns,
        socket=d / "docker.sock",
        registry=f"127.0.0.1:{REGISTRY_PORT}",
        username="operator",
        password=secrets.token_urlsafe(12),
        image=IMAGE,
        private_image=f"127.0.0.1:{REGISTRY_PORT}/tether/app:1",
    )
    made = subprocess.run(["ip", "netns", "add", netns], capture_output=True, text=True)
    if made.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"cannot create a network namespace for dockerd: {made.stderr.strip()}")
    try:
        env.in_netns("ip", "link", "set", "lo", "up").check_returncode()
        _start_registry(env)
        env.start_engine()
        _make_images(env)
        yield env
    finally:
        with contextlib.suppress(Exception):
            env.remove_test_containers()
        env.stop_engine()
        if env.registry_proc is not None:
            env.registry_proc.terminate()
            try:
                env.registry_proc.wait(10)
            except subprocess.TimeoutExpired:
                env.registry_proc.kill()
                env.registry_proc.wait(5)
        _kill_leftovers(d)
        _umount_under(d)
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def clean_containers(docker_env: DockerEnv) -> Iterator[DockerEnv]:
    """The engine, with every container labelled ``tether-test`` removed after the test."""
    yield docker_env
    if docker_env.dockerd is None:
        docker_env.start_engine()
    docker_env.remove_test_containers()
