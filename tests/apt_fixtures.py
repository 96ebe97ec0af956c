"""Fixtures for the apt service tests: tiny .deb packages built with dpkg-deb, a signed flat
``file:`` repository made with apt-ftparchive and gpg, and cleanup that purges every
``tether-fixture-*`` package however a test ended.

The apt service under test is configured with private sources, lists and cache directories,
so ``update`` only ever reads the fixture repository (offline, fast) and the machine's own
package lists are never touched; dpkg's database is the real one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PREFIX = "tether-fixture-"
#: While this file exists, tether-fixture-failing's postinst fails.
FAIL_FLAG = Path("/run/tether-fixture-fail")
UP_CONFFILE = Path("/etc/tether-fixture/up.conf")
CONF_CONFFILE = Path("/etc/tether-fixture/conf.conf")


@dataclass
class FixtureRepo:
    dir: Path
    #: The armored public key that signs the repository's InRelease.
    key: str

    @property
    def uri(self) -> str:
        return f"file:{self.dir}"


def _tools_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("apt system test: needs root (run the tests as root, as CI does)")
    for tool in ("dpkg-deb", "apt-get", "apt-ftparchive", "gpg"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-utils, dpkg-dev, gnupg)")


def _deb(
    out: Path,
    name: str,
    version: str,
    *,
    depends: str | None = None,
    files: dict[str, str] | None = None,
    conffiles: list[str] | None = None,
    postinst: str | None = None,
) -> None:
    root = out / f"build-{name}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    control = [
        f"Package: {name}",
        f"Version: {version}",
        "Architecture: all",
        "Maintainer: Tether tests <tests@tether.invalid>",
        "Section: misc",
        "Priority: optional",
    ]
    if depends:
        control.append(f"Depends: {depends}")
    control.append(f"Description: Tether test fixture {name.removeprefix(PREFIX)}")
    control.append(" A tiny package built by the Tether test suite; safe to purge.")
    (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    for path, text in (files or {"usr/share/doc/" + name + "/README": name + "\n"}).items():
        p = root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    if conffiles:
        (root / "DEBIAN" / "conffiles").write_text("".join(c + "\n" for c in conffiles))
    if postinst:
        script = root / "DEBIAN" / "postinst"
        script.write_text(postinst)
        script.chmod(0o755)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(root)


def build_repo(base: Path) -> FixtureRepo:
    repo = base / "repo"
    repo.mkdir(parents=True)
    _deb(repo, f"{PREFIX}plain", "1.0")
    _deb(repo, f"{PREFIX}dep", "1.0", depends=f"{PREFIX}plain")
    _deb(
        repo,
        f"{PREFIX}conf",
        "1.0",
        files={str(CONF_CONFFILE): "setting = packaged\n"},
        conffiles=[str(CONF_CONFFILE)],
    )
    _deb(
        repo,
        f"{PREFIX}failing",
        "1.0",
        postinst=(
            "#!/bin/sh\n"
            f"if [ -e {FAIL_FLAG} ]; then\n"
            "  echo 'fixture postinst fails on purpose' >&2; exit 1\n"
            "fi\n"
            "exit 0\n"
        ),
    )
    _deb(
        repo,
        f"{PREFIX}slow",
        "1.0",
        postinst="#!/bin/sh\necho 'slow fixture configuring'\nsleep 4\nexit 0\n",
    )
    for v in ("1.0", "2.0"):
        _deb(
            repo,
            f"{PREFIX}up",
            v,
            files={str(UP_CONFFILE): f"packaged {v}\n"},
            conffiles=[str(UP_CONFFILE)],
        )
    packages = subprocess.run(
        ["apt-ftparchive", "packages", "."], cwd=repo, check=True, capture_output=True
    ).stdout
    (repo / "Packages").write_bytes(packages)
    release = subprocess.run(
        ["apt-ftparchive", "-o", "APT::FTPArchive::Release::Suite=tether-fixture",
         "release", "."],
        cwd=repo, check=True, capture_output=True,
    ).stdout  # fmt: skip
    (repo / "Release").write_bytes(release)
    gnupg = base / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(gnupg)}
    gpg = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(
        [*gpg, "--quick-gen-key", "Tether Fixture <fixture@tether.invalid>", "ed25519", "sign",
         "never"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*gpg, "--yes", "--clearsign", "-o", str(repo / "InRelease"), str(repo / "Release")],
        env=env,
        check=True,
        capture_output=True,
    )
    key = subprocess.run(
        ["gpg", "--batch", "--armor", "--export"], env=env, check=True, capture_output=True
    ).stdout.decode()
    subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False, capture_output=True)
    # apt reads file: repositories as the unprivileged _apt user where it can
    for p in (base, repo):
        p.chmod(0o755)
    for f in repo.iterdir():
        f.chmod(0o644)
    return FixtureRepo(repo, key)


def installed_fixtures() -> dict[str, str]:
    """name -> dpkg status word ("installed", "config-files", ...) of fixture packages."""
    r = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status} ${Version}\n", f"{PREFIX}*"],
        capture_output=True,
        text=True,
        check=False,
    )
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] != "not-installed":
            out[parts[0]] = parts[1]
    return out


def fixture_version(name: str) -> str | None:
    r = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    parts = r.stdout.split()
    return parts[1] if len(parts) == 2 and parts[0] == "installed" else None


def purge_fixtures() -> None:
    """Remove every fixture package, whatever state a failed test left it in."""
    FAIL_FLAG.unlink(missing_ok=True)
    names = list(installed_fixtures())
    if names:
        subprocess.run(["dpkg", "--purge", "--force-all", *names], capture_output=True, check=False)
    with contextlib.suppress(OSError):
        shutil.rmtree("/etc/tether-fixture")


@pytest.fixture(scope="session")
def fixture_repo() -> Iterator[FixtureRepo]:
    _tools_or_skip()
    base = Path(tempfile.mkdtemp(prefix="tapt-repo-", dir="/tmp"))
    try:
        yield build_repo(base)
    finally:
        purge_fixtures()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class AptDirs:
    base: Path

    def config(self, **extra: object) -> dict[str, object]:
        """The ``[apt]`` configuration section pointing at these private directories."""
        return {
            "sources_list": str(self.base / "sources.list"),
            "sources_dir": str(self.base / "sources.list.d"),
            "keyring_dir": str(self.base / "keyrings"),
            "lists_dir": str(self.base / "lists"),
            "cache_dir": str(self.base / "cache"),
            "lock_wait": 3.0,
            **extra,
        }

    @property
    def sources_dir(self) -> Path:
        return self.base / "sources.list.d"


@pytest.fixture(scope="module")
def apt_dirs() -> Iterator[AptDirs]:
    _tools_or_skip()
    base = Path(tempfile.mkdtemp(prefix="tapt-", dir="/tmp"))
    (base / "sources.list.d").mkdir()
    base.chmod(0o755)
    try:
        yield AptDirs(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


class LockHolder:
    """Another process holding dpkg's frontend lock the way apt does (fcntl write lock)."""

    def __init__(self, path: str = "/var/lib/dpkg/lock-frontend") -> None:
        code = (
            "import fcntl, os, sys\n"
            f"fd = os.open({path!r}, os.O_RDWR | os.O_CREAT, 0o640)\n"
            "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "locked":
            self.release()
            raise RuntimeError("could not take the dpkg lock for the test (is apt running?)")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
