"""Least privilege for real: the stats worker runs as an unprivileged user under the root
supervisord, in a group-shared runtime dir, and the bundle still works."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.devbroker import Mosquitto
from common.pki import DevPki
from tests.harness import REPO, Bundle, needs_root, run_sync, short_tmpdir

pytestmark = pytest.mark.system

USER = "tether-ci"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def unprivileged() -> Iterator[tuple[str, pwd.struct_passwd]]:
    """A system user and a venv it can run (this machine's usual interpreter may live under
    /root, which no other user can reach; a device's lives in /opt or /usr)."""
    needs_root("creates a user")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is missing (Debian's python3)")
    if subprocess.run([SYSTEM_PYTHON, "-c", "import ensurepip"], check=False).returncode:
        pytest.skip("Debian's python3-venv is missing (scripts/setup --test installs it)")
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
        capture_output=True,
        text=True,
        check=False,
    )
    assert created.returncode in (0, 9), created.stderr  # 9: exists already
    venv = short_tmpdir("tvenv-")
    src = short_tmpdir("tsrc-")
    try:
        # Build from a copy: pip writes build/ and *.egg-info next to the sources.
        skip = shutil.ignore_patterns(
            ".venv", ".git", "node_modules", "build", "*.egg-info", "__pycache__", "web"
        )
        shutil.copytree(REPO, src / "tether", ignore=skip)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, str(src / "tether")], check=True, timeout=600, capture_output=True)
        os.chmod(venv, 0o755)
        yield str(venv / "bin" / "python"), pwd.getpwnam(USER)
    finally:
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)
        if created.returncode == 0:
            subprocess.run(["userdel", USER], check=False)


def test_stats_runs_unprivileged_and_answers(
    unprivileged: tuple[str, pwd.struct_passwd], pki: DevPki, broker: Mosquitto
) -> None:
    python, user = unprivileged
    b = Bundle(pki, broker, ["stats"])
    try:
        b.supervisor.python = python
        b.supervisor.stats_user = USER
        # What a device's setup does: a group-shared runtime dir (setgid, no access for
        # others) and a configuration the group may read.
        gid = user.pw_gid
        run = b.dir / "run"
        run.mkdir(mode=0o770)
        os.chown(run, 0, gid)
        os.chmod(run, 0o2770)
        os.chown(b.dir, 0, gid)
        os.chmod(b.dir, 0o750)
        os.chown(b.config_path, 0, gid)
        os.chmod(b.config_path, 0o640)
        b.start()
        stats_pid = b.pid("stats")
        assert _uid(stats_pid) == user.pw_uid
        assert _uid(b.pid("gateway")) == 0
        reply = run_sync(b.call("stats", "get"))
        assert reply["ok"], reply
        mode = stat.S_IMODE(run.stat().st_mode)
        assert mode == 0o2770, oct(mode)
        sock = run / "stats.sock"
        assert sock.stat().st_uid == user.pw_uid
        assert stat.S_IMODE(sock.stat().st_mode) & 0o007 == 0
        assert grp.getgrgid(sock.stat().st_gid).gr_gid == gid
    finally:
        b.cleanup()


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")
