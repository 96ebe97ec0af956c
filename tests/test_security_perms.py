"""Least privilege on disk: keys, the runtime dir and its IPC sockets, the state dir and its
files, supervisord's control socket and logs of a real running bundle are not reachable by
other users."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from common.pki import DevPki
from common.provision import make_request
from tests.harness import Bundle, wait_for


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_private_keys_are_0600(pki: DevPki, tmp_path: Path) -> None:
    for pair in (pki.ca, pki.server, pki.device, pki.operator):
        assert _mode(pair.key) == 0o600, pair.key
    os.umask(old := os.umask(0))  # a permissive umask must not loosen a new key
    try:
        os.umask(0)
        files, _ = make_request(tmp_path / "etc", "gw-01")
    finally:
        os.umask(old)
    assert _mode(files.key) == 0o600
    assert _mode(files.csr) == 0o644


#: supervisord applies ``[supervisord] umask`` only when it daemonizes (never with
#: nodaemon=true), so the programs inherit the caller's umask unless each ``[program:x]``
#: sets ``umask=007`` or ``077`` (proposed in docs/security.md). Until then only the weaker
#: checks run; with it, the strict ones do.
PROGRAM_UMASK = all(
    re.search(r"^umask=0?[0-7]7$", section, re.M)
    for section in (Path(__file__).parent.parent / "supervisord.conf").read_text().split("\n[")
    if section.startswith("program:")
)


def test_running_bundle_files_are_private(bundle_factory: Callable[..., Bundle]) -> None:
    b = bundle_factory(services=["stats"])
    run, state, sv = b.dir / "run", b.dir / "state", b.dir / "sv"
    wait_for(lambda: (run / "stats.sock").exists(), 10, "the stats socket")
    wait_for(lambda: (run / "watchdog.health.sock").exists(), 10, "the watchdog socket")
    me = os.geteuid()
    # Strict: nothing for others. Weak (today): nothing writable by group/other; the 0700
    # directories stop everyone else from reaching what is inside.
    private = 0o007 if PROGRAM_UMASK else 0o022

    assert _mode(run) == 0o700
    sockets = [p for p in run.iterdir() if stat.S_ISSOCK(p.lstat().st_mode)]
    names = {p.name for p in sockets}
    assert {"stats.sock", "events.sock", "gateway.health.sock"} <= names, names
    for p in sockets:
        assert p.lstat().st_uid == me
        assert _mode(p) & private == 0, f"{p} is {oct(_mode(p))}"

    # state_dir itself: see test_state_dir_itself_is_private below.
    assert _mode(state) & 0o022 == 0, f"{state} is {oct(_mode(state))}"
    found = list(state.rglob("*"))
    assert found, "the gateway keeps its spool in the state dir"
    for p in found:
        assert p.lstat().st_uid == me
        strict = 0o077 if p.is_dir() else private
        assert _mode(p) & strict == 0, f"{p} is {oct(_mode(p))}"

    # supervisord itself creates the program logs, with its own umask (the systemd unit's
    # UMask=0077 in production); its folder (TETHER_RUN) is private either way.
    assert _mode(sv) & 0o077 == 0, f"{sv} is {oct(_mode(sv))}"
    assert _mode(sv / "supervisor.sock") & 0o077 == 0
    logs = list(sv.glob("*.log"))
    assert logs
    for p in logs:
        assert _mode(p) & 0o022 == 0, f"{p} is {oct(_mode(p))}"


def test_state_dir_itself_is_private(bundle_factory: Callable[..., Bundle]) -> None:
    b = bundle_factory(services=["stats"])
    state = b.dir / "state"
    wait_for(state.exists, 10, "the state dir")
    assert _mode(state) == 0o700, oct(_mode(state))
