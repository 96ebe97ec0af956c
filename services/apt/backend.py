"""The only module that runs apt-get, apt-cache, apt-mark and dpkg, and reads dpkg's database.

Every tool runs as an asyncio subprocess with list arguments (never a shell), a fixed
non-interactive environment (``DEBIAN_FRONTEND=noninteractive``, ``LC_ALL=C``) and conffile
policy ``--force-confdef --force-confold`` (keep the local file). Progress comes from apt's
machine-readable status stream (``-o APT::Status-Fd=N``: ``dlstatus:``/``pmstatus:`` lines),
never from its human text. apt's failures are translated into our error codes here, once.

A running apt-get or dpkg is never killed nor cut off from its output: if the service is
stopped or the job is cancelled while one runs, it is waited for (see :func:`run_change`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from array import array
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import msgspec

from common.config import AptSettings
from common.errors import (
    Conflict,
    EngineMissing,
    Failed,
    InvalidRequest,
    Locked,
    NotFound,
    ServiceUnavailable,
    TetherError,
)
from services.apt import dumpavail
from services.apt.models import Change, PackageInfo, RepoFetch

log = logging.getLogger("tether.apt")

ADMIN_DIR = Path("/var/lib/dpkg")
STATUS_FILE = ADMIN_DIR / "status"
DPKG_LOCKS = (ADMIN_DIR / "lock-frontend", ADMIN_DIR / "lock")
OUTPUT_TAIL = 40

_NAME = r"[a-z0-9][a-z0-9+.-]+"
_ARCH = r"[a-z0-9][a-z0-9-]{0,31}"
_VERSION = r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]{0,127}"
_SPEC = re.compile(rf"^(?P<name>{_NAME})(?::(?P<arch>{_ARCH}))?(?:=(?P<version>{_VERSION}))?$")

ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN": "true",
    "APT_LISTCHANGES_FRONTEND": "none",
    "NEEDRESTART_MODE": "a",
    "UCF_FORCE_CONFFOLD": "1",
    "LC_ALL": "C",
    "LANG": "C",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}
CONFFILE_OPTS = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]


# --- names -------------------------------------------------------------------------------


class Spec(NamedTuple):
    name: str
    arch: str | None
    version: str | None

    def __str__(self) -> str:
        s = self.name + (f":{self.arch}" if self.arch else "")
        return s + (f"={self.version}" if self.version else "")


def parse_spec(text: object, field: str = "packages", allow_version: bool = True) -> Spec:
    """``name``, ``name:arch`` or ``name=version`` per Debian policy, else invalid_request."""
    m = _SPEC.fullmatch(text) if isinstance(text, str) and len(text) <= 300 else None
    if m is None or (m.group("version") and not allow_version):
        what = "name, name:arch or name=version" if allow_version else "name or name:arch"
        raise InvalidRequest(
            f"{field}: {text!r} is not a package {what} (Debian names: lowercase letters, "
            "digits, '+', '-', '.'; at least two characters, starting with a letter or digit)",
            {"field": field, "value": text},
        )
    return Spec(m.group("name"), m.group("arch"), m.group("version"))


def parse_specs(items: Iterable[object], allow_version: bool = True) -> list[Spec]:
    specs = [parse_spec(i, allow_version=allow_version) for i in items]
    if len({str(s) for s in specs}) != len(specs):
        raise InvalidRequest("packages: a package is named twice", {"field": "packages"})
    return specs


# --- Debian version comparison (dpkg's algorithm) ---------------------------------------


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit() or not c:
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    la, lb = len(a), len(b)
    while i < la or j < lb:
        while (i < la and not a[i].isdigit()) or (j < lb and not b[j].isdigit()):
            ac = _order(a[i] if i < la and not a[i].isdigit() else "")
            bc = _order(b[j] if j < lb and not b[j].isdigit() else "")
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < la and a[i] == "0":
            i += 1
        while j < lb and b[j] == "0":
            j += 1
        first_diff = 0
        while i < la and j < lb and a[i].isdigit() and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < la and a[i].isdigit():
            return 1
        if j < lb and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_version(v: str) -> tuple[int, str, str]:
    epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    try:
        e = int(epoch or "0")
    except ValueError:
        e = 0
    return e, upstream, revision


def compare_versions(a: str, b: str) -> int:
    """<0, 0, >0 as Debian version ``a`` sorts before, equal to, or after ``b``."""
    ea, ua, ra = _split_version(a)
    eb, ub, rb = _split_version(b)
    if ea != eb:
        return -1 if ea < eb else 1
    c = _verrevcmp(ua, ub)
    if c:
        return c
    return _verrevcmp(ra, rb)


# --- dpkg's database ---------------------------------------------------------------------


class Installed(NamedTuple):
    """One package as dpkg's status database records it."""

    name: str
    arch: str
    version: str
    want: str  # install, hold, deinstall, purge, unknown
    state: str  # installed, config-files, half-installed, unpacked, ...
    summary: str
    section: str | None
    installed_size: int | None
    depends: str
    pre_depends: str

    @property
    def status(self) -> str:
        if self.state in ("installed", "triggers-awaited", "triggers-pending"):
            return "installed"
        if self.state in ("config-files", "not-installed"):
            return self.state
        return "half-installed"


Key = tuple[str, str]  # (name, architecture)


def _paragraph_fields(para: str, wanted: frozenset[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in para.split("\n"):
        if not line or line[0] in " \t":
            continue
        k, sep, v = line.partition(":")
        if sep and k in wanted:
            out[k] = v.strip()
    return out


_STATUS_FIELDS = frozenset(
    {"Package", "Status", "Architecture", "Version", "Description", "Section",
     "Installed-Size", "Depends", "Pre-Depends"}
)  # fmt: skip


def parse_status(text: str) -> dict[Key, Installed]:
    out: dict[Key, Installed] = {}
    for para in text.split("\n\n"):
        f = _paragraph_fields(para, _STATUS_FIELDS)
        name = f.get("Package")
        status = f.get("Status", "").split()
        if not name or len(status) != 3:
            continue
        size = f.get("Installed-Size", "")
        out[(name, f.get("Architecture", ""))] = Installed(
            name,
            f.get("Architecture", ""),
            f.get("Version", ""),
            status[0],
            status[2],
            f.get("Description", ""),
            f.get("Section"),
            int(size) if size.isdigit() else None,
            f.get("Depends", ""),
            f.get("Pre-Depends", ""),
        )
    return out


class Candidate(NamedTuple):
    version: str
    summary: str


class Candidates:
    """apt's candidate version and summary of every known package, kept compact.

    ``apt-cache dumpavail`` knows tens of thousands of packages (63 000 with Debian's main
    archive); one Python object per package would cost the worker tens of MB for as long as
    it runs. The table (made by :mod:`services.apt.dumpavail` in a helper process) holds the
    records sorted by (name, architecture) as one bytes object of ``name\tarch\tversion``
    lines, found by binary search over an array of line offsets, and the summaries as
    zlib-compressed blocks of ``name\tsummary`` lines, decompressed for the page being
    returned or, for a search, one block at a time. Records are addressed by their index.
    """

    def __init__(self, table: dumpavail.Table | None = None) -> None:
        self._blob, self._starts, self._blocks = table or (b"", array("I", [0]), [])
        self._n = len(self._starts) - 1
        self._block: tuple[int, list[str]] = (-1, [])
        self._memo: dict[Key, int] = {}

    def __len__(self) -> int:
        return self._n

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and self.index(key) >= 0

    def _line(self, i: int) -> list[str]:
        s, e = self._starts[i], self._starts[i + 1] - 1
        return self._blob[s:e].decode("utf-8", "replace").split("\t")

    def _bisect(self, probe: bytes) -> int:
        """Index of the first record whose line is >= ``probe`` in its first bytes."""
        blob, starts, n = self._blob, self._starts, len(probe)
        lo, hi = 0, self._n
        while lo < hi:
            mid = (lo + hi) // 2
            s = starts[mid]
            if blob[s : s + n] < probe:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def key(self, i: int) -> Key:
        name, arch, _ = self._line(i)
        return name, arch

    def version(self, i: int) -> str:
        return self._line(i)[2]

    def summary(self, i: int) -> str:
        b, j = divmod(i, dumpavail.SUMMARY_BLOCK)
        if self._block[0] != b:
            text = zlib.decompress(self._blocks[b]).decode("utf-8", "replace")
            self._block = (b, text.split("\n"))
        return self._block[1][j].partition("\t")[2]

    def index(self, key: Key) -> int:
        """Index of the record of ``key``, or -1 when apt has no candidate for it."""
        i = self._memo.get(key)
        if i is None:
            probe = f"{key[0]}\t{key[1]}\t".encode()
            i = self._bisect(probe)
            if i >= self._n or not self._blob.startswith(probe, self._starts[i]):
                i = -1
            if len(self._memo) > 20_000:  # it holds installed packages and get's names
                self._memo.clear()
            self._memo[key] = i
        return i

    def insertion_point(self, key: Key) -> int:
        """How many records sort before ``key``."""
        return self._bisect(f"{key[0]}\t{key[1]}\t".encode())

    def get(self, key: Key) -> Candidate | None:
        i = self.index(key)
        return Candidate(self.version(i), self.summary(i)) if i >= 0 else None

    def of_name(self, name: str) -> list[int]:
        """Indexes of the records of package ``name`` (one per architecture)."""
        probe = f"{name}\t".encode()
        i, out = self._bisect(probe), []
        while i < self._n and self._blob.startswith(probe, self._starts[i]):
            out.append(i)
            i += 1
        return out

    def search(self, needle: str) -> array[int]:
        """Indexes (ascending) of the records whose name or summary contains ``needle``
        (casefolded)."""
        out = array("I")
        for b, block in enumerate(self._blocks):
            base = b * dumpavail.SUMMARY_BLOCK
            lines = zlib.decompress(block).decode("utf-8", "replace").casefold().split("\n")
            for j, line in enumerate(lines):
                if needle in line:
                    name, _, summary = line.partition("\t")
                    if needle in name or needle in summary:
                        out.append(base + j)
        return out


def _stat_key(paths: Iterable[Path]) -> tuple[tuple[str, int, int, int], ...]:
    key = []
    for p in paths:
        try:
            st = p.stat()
            key.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            key.append((str(p), 0, 0, 0))
    return tuple(key)


# --- running tools -----------------------------------------------------------------------


@dataclass
class RunResult:
    rc: int
    lines: list[str]

    @property
    def tail(self) -> list[str]:
        return self.lines[-OUTPUT_TAIL:]


OnLine = Callable[[str], None]
OnStatus = Callable[[str, float, str], Awaitable[None]]

#: apt-get/dpkg runs started by this process and not yet reaped (see wait_for_changes).
RUNNING: set[subprocess.Popen[bytes]] = set()
POLL = 0.1


async def run_tool(argv: list[str], *, on_line: OnLine | None = None) -> RunResult:
    """Run a read-only tool (apt-cache, apt-get -s) and collect its output lines.
    Cancelling this kills the tool, which is harmless: it changes nothing."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=ENV,
        )
    except FileNotFoundError as err:
        raise _missing(argv[0]) from err
    assert proc.stdout is not None
    lines: list[str] = []
    while raw := await proc.stdout.readline():
        text = raw.decode("utf-8", "replace").rstrip("\n")
        lines.append(text)
        if on_line is not None:
            on_line(text)
    return RunResult(await proc.wait(), lines)


def _missing(tool: str) -> EngineMissing:
    return EngineMissing(
        f"{tool} is not installed; this service needs apt and dpkg (a Debian system)",
        {"tool": tool},
    )


def _scratch_file() -> tuple[int, int]:
    """A deleted temporary file open twice: (write end for the child, read end for us)."""
    fd, path = tempfile.mkstemp(prefix="tether-apt-")
    try:
        rd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.unlink(path)
    return fd, rd


class _LineReader:
    """Reads the new complete lines appended to a file since the last call."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def lines(self, final: bool = False) -> list[str]:
        while chunk := os.read(self.fd, 1 << 16):
            self.buf += chunk
        *done, self.buf = self.buf.split(b"\n")
        if final and self.buf:
            done.append(self.buf)
            self.buf = b""
        return [d.decode("utf-8", "replace") for d in done]


async def run_change(
    argv: list[str],
    *,
    on_line: OnLine | None = None,
    on_status: OnStatus | None = None,
    status_fd_option: str | None = None,
) -> RunResult:
    """Run a tool that changes the system (apt-get, apt-mark, dpkg) to completion.

    It is never killed or cut off: its output and status stream go to deleted temporary
    files (not pipes, so our exit cannot SIGPIPE dpkg half-way), it runs in its own session
    (no process-group signal reaches it), and cancellation — a job cancel or SIGTERM — only
    makes this wait on and re-raise once the tool has exited. ``status_fd_option``
    (``"APT::Status-Fd"`` or dpkg's ``"--status-fd"``) routes machine-readable status lines
    to ``on_status(kind, percent, text)``.
    """
    out_w, out_r = _scratch_file()
    st_w = st_r = -1
    args = list(argv)
    if status_fd_option:
        st_w, st_r = _scratch_file()
        if status_fd_option.startswith("-"):
            args[1:1] = [status_fd_option, str(st_w)]
        else:
            args[1:1] = ["-o", f"{status_fd_option}={st_w}"]
    try:
        proc = await asyncio.to_thread(
            subprocess.Popen,
            args,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=subprocess.STDOUT,
            env=ENV,
            pass_fds=(st_w,) if st_w >= 0 else (),
            start_new_session=True,
        )
    except FileNotFoundError as err:
        for fd in (out_r, st_r):
            if fd >= 0:
                os.close(fd)
        raise _missing(argv[0]) from err
    finally:
        for fd in (out_w, st_w):
            if fd >= 0:
                os.close(fd)
    RUNNING.add(proc)
    out, status = _LineReader(out_r), _LineReader(st_r) if st_r >= 0 else None
    lines: list[str] = []
    cancelled = False

    async def deliver(final: bool) -> None:
        for text in out.lines(final):
            lines.append(text)
            if on_line is not None:
                on_line(text)
        for text in status.lines(final) if status else []:
            await _status_line(text, on_status)

    try:
        while True:
            try:
                exited = proc.poll() is not None
                await deliver(exited)
                if exited:
                    break
                await asyncio.sleep(POLL)
            except asyncio.CancelledError:
                if not cancelled:
                    log.warning("not interrupting %s (pid %d); waiting for it", argv[0], proc.pid)
                cancelled = True
    finally:
        RUNNING.discard(proc)
        for fd in (out_r, st_r):
            if fd >= 0:
                os.close(fd)
    if cancelled:
        raise asyncio.CancelledError
    assert proc.returncode is not None
    return RunResult(proc.returncode, lines)


async def _status_line(text: str, on_status: OnStatus | None) -> None:
    # "pmstatus:<pkg>:<percent>:<text>", "dlstatus:<n>:<percent>:<text>", "pmerror:..."
    kind, _, rest = text.strip().partition(":")
    parts = rest.split(":", 2)
    if on_status is None or len(parts) != 3:
        return
    try:
        pct = float(parts[1])
    except ValueError:
        return
    try:
        await on_status(kind, pct, parts[2])
    except asyncio.CancelledError:
        raise
    except Exception:  # reporting must never stop us following apt to its end
        log.debug("status report failed", exc_info=True)


def wait_for_changes() -> None:
    """At process exit: block until every apt-get/dpkg this process started has exited."""
    for proc in list(RUNNING):
        log.warning("waiting for %s (pid %d) to finish before exiting", proc.args, proc.pid)
        proc.wait()


# --- the dpkg lock -----------------------------------------------------------------------


@dataclass
class LockHolder:
    lock: str
    pid: int | None
    command: str | None

    def describe(self) -> str:
        who = (
            f"{self.command or 'unknown program'} (pid {self.pid})"
            if self.pid
            else "another program"
        )
        return f"{who} holds {self.lock}"

    def as_dict(self) -> dict[str, object]:
        return {"lock": self.lock, "pid": self.pid, "command": self.command}


def _proc_locks_pid(path: Path) -> int | None:
    try:
        st = path.stat()
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        parts = line.split()
        # "1: POSIX  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (OFDLCK shows pid -1)
        if len(parts) >= 6 and parts[5] == dev and parts[4].lstrip("-").isdigit():
            pid = int(parts[4])
            if pid > 0:
                return pid
    return None


def _command_of(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    args = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    return " ".join(args)[:200] if args else None


def lock_holder(paths: Iterable[Path] = DPKG_LOCKS) -> LockHolder | None:
    """Who holds one of the dpkg/apt locks right now (a POSIX lock test, no locking)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
            l_type, _, _, _, pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, query))
        except OSError:
            continue
        finally:
            os.close(fd)
        if l_type == fcntl.F_UNLCK:
            continue
        holder_pid = pid if pid > 0 else _proc_locks_pid(path)
        return LockHolder(str(path), holder_pid, _command_of(holder_pid) if holder_pid else None)
    return None


# --- apt ---------------------------------------------------------------------------------


_APT_LINE = re.compile(
    r"^(?P<op>Inst|Remv|Purg|Conf) (?P<name>[^\s:]+)(?::(?P<arch>\S+))?"
    r"(?: \[(?P<old>[^\]]*)\])?(?: \((?P<new>\S+) [^\[]*\[(?P<arch2>[^\]]+)\]\))?"
)
_NOT_FOUND = (
    re.compile(r"^E: Unable to locate package (\S+)"),
    re.compile(r"^E: Version '[^']*' for '([^']+)' was not found"),
    re.compile(r"^E: Package '([^']+)' has no installation candidate"),
    re.compile(r"^E: Couldn't find any package by (?:glob|regex) '([^']+)'"),
)
_FETCH = re.compile(r"^(?P<st>Hit|Get|Ign|Err):\d+ (?P<what>\S+ \S+)")


def plan_from_simulation(lines: list[str]) -> list[Change]:
    """The ``Inst``/``Remv``/``Purg`` lines of ``apt-get -s`` as changes."""
    changes: list[Change] = []
    for line in lines:
        m = _APT_LINE.match(line)
        if m is None or m.group("op") == "Conf":
            continue
        op, old, new = m.group("op"), m.group("old"), m.group("new")
        arch = m.group("arch") or m.group("arch2") or ""
        if op == "Inst":
            if old is None:
                action = "installed"
            else:
                c = compare_versions(new or "", old)
                action = "upgraded" if c > 0 else "downgraded" if c < 0 else "reinstalled"
        else:
            action = "purged" if op == "Purg" else "removed"
        changes.append(Change(m.group("name"), arch, action, old, new))
    return changes


def diff_status(before: dict[Key, Installed], after: dict[Key, Installed]) -> list[Change]:
    """What changed in dpkg's database between two reads of it."""
    present = ("installed", "half-installed")
    changes: list[Change] = []
    for key in sorted(before.keys() | after.keys()):
        b, a = before.get(key), after.get(key)
        bs = b.status if b else "not-installed"
        as_ = a.status if a else "not-installed"
        bv = b.version if b and bs in present else None
        av = a.version if a and as_ in present else None
        action = None
        if bs not in present and as_ in present:
            action = "installed"
        elif bs in present and as_ == "config-files":
            action = "removed"
        elif bs in ("installed", "half-installed", "config-files") and as_ == "not-installed":
            action = (
                "purged" if bs == "config-files" or (a is None or a.want == "purge") else "removed"
            )
        elif bs in present and as_ in present and b and a and b.version != a.version:
            c = compare_versions(a.version, b.version)
            action = "upgraded" if c > 0 else "downgraded"
        elif bs == "half-installed" and as_ == "installed":
            action = "configured"
        if action:
            old = bv or (b.version if b else None)
            changes.append(
                Change(key[0], key[1], action, old if action != "installed" else None, av)
            )
    return changes


def parse_update(lines: list[str], known: list[str]) -> tuple[list[RepoFetch], list[str]]:
    """Per-repository outcome of ``apt-get update`` from its Hit/Get/Ign/Err lines.

    ``known`` lists "uri suite" of the configured entries so index lines
    ("uri suite/main amd64 Packages") are attributed to their repository."""
    rank = {"failed": 3, "fetched": 2, "unchanged": 1, "ignored": 0}
    result: dict[str, RepoFetch] = {}
    warnings: list[str] = []
    last_err: RepoFetch | None = None
    for line in lines:
        m = _FETCH.match(line)
        if m:
            what = m.group("what")
            repo = next(
                (
                    k
                    for k in sorted(known, key=len, reverse=True)
                    if (what + " ").startswith(k + " ") or what.startswith(k.rstrip("/") + "/")
                ),
                None,
            )
            if repo is None:
                uri, suite = what.split(" ", 1)
                repo = f"{uri} {suite if suite.endswith('/') else suite.split('/', 1)[0]}"
            status = {"Hit": "unchanged", "Get": "fetched", "Ign": "ignored", "Err": "failed"}[
                m.group("st")
            ]
            entry = RepoFetch(repo, status)  # type: ignore[arg-type]
            old = result.get(repo)
            if old is None or rank[status] > rank[old.status]:
                result[repo] = entry
            last_err = result[repo] if status == "failed" else None
        elif line.startswith("  ") and last_err is not None and last_err.reason is None:
            last_err.reason = line.strip()
        elif line.startswith(("W: ", "E: ")):
            warnings.append(line)
            last_err = None
    for w in warnings:
        # "E: The repository 'file:/x ./ Release' does not have a Release file."
        m2 = re.search(r"repository '(\S+ \S+)", w)
        if m2:
            key = next((k for k in result if m2.group(1).startswith(k)), None)
            if key is not None:
                result[key].status = "failed"
                result[key].reason = result[key].reason or w[3:]
    return sorted(result.values(), key=lambda r: r.repository), warnings


def error_from_apt(result: RunResult, what: str) -> TetherError:
    """Translate a failed apt-get/apt-mark/dpkg run into one of our errors."""
    tail = result.tail
    details: dict[str, object] = {"exit_code": result.rc, "output_tail": tail}
    missing = [m.group(1) for line in result.lines for r in _NOT_FOUND if (m := r.match(line))]
    if missing:
        return NotFound(
            f"no such package or version: {', '.join(missing)}; check the name, or run "
            "update to refresh the package lists",
            {**details, "packages": missing},
        )
    text = "\n".join(result.lines)
    lock = re.search(
        r"Could not get lock (\S+?)\.? It is held by process (\d+)(?: \(([^)]*)\))?", text
    )
    if lock or "Unable to acquire the dpkg frontend lock" in text or "Could not get lock" in text:
        holder = (
            LockHolder(lock.group(1), int(lock.group(2)), lock.group(3)).as_dict() if lock else None
        )
        return Locked(
            f"{what}: the dpkg lock is held by another program", {**details, "holder": holder}
        )
    if "dpkg was interrupted" in text:
        return Conflict("dpkg was interrupted earlier; run the 'repair' action first", details)
    if "Held packages were changed" in text or "--allow-change-held" in text:
        return Conflict(f"{what} would change held packages; unhold them first", details)
    if (
        "unmet dependencies" in text
        or "Unable to correct problems" in text
        or "broken packages" in text
    ):
        return Conflict(
            f"{what}: dependencies cannot be satisfied (see output_tail); 'repair' may fix "
            "broken dependencies",
            details,
        )
    if "Sub-process /usr/bin/dpkg returned an error" in text or "dpkg: error" in text:
        return Failed(
            f"{what}: a package's maintainer script or dpkg failed (see output_tail); the "
            "system can be finished with the 'repair' action",
            details,
        )
    return Failed(f"{what} failed with exit code {result.rc} (see output_tail)", details)


class Apt:
    """apt and dpkg for one configuration: option building, caches, tool runs."""

    def __init__(self, settings: AptSettings) -> None:
        self.settings = settings
        self._status: tuple[object, dict[Key, Installed]] | None = None
        self._cands: tuple[object, Candidates] | None = None
        self._cand_lock = asyncio.Lock()

    # options -----------------------------------------------------------------------------

    def dir_options(self) -> list[str]:
        s = self.settings
        opts = [
            "-o", f"Dir::Etc::sourcelist={s.sources_list}",
            "-o", f"Dir::Etc::sourceparts={s.sources_dir}",
        ]  # fmt: skip
        if s.lists_dir:
            opts += ["-o", f"Dir::State::Lists={s.lists_dir}"]
        if s.cache_dir:
            opts += ["-o", f"Dir::Cache={s.cache_dir}"]
        return opts

    def ensure_dirs(self) -> None:
        """apt refuses to run when an overridden lists/cache dir lacks its partial/ dirs."""
        s = self.settings
        for d in (s.lists_dir, s.cache_dir and f"{s.cache_dir}/archives"):
            if d:
                Path(d, "partial").mkdir(parents=True, exist_ok=True, mode=0o755)

    def apt_get(self, *args: str, simulate: bool = False, lock_timeout: float = 0) -> list[str]:
        argv = ["apt-get", "-q", "-y", "-o", "APT::Color=0", "-o", "Dpkg::Use-Pty=0"]
        argv += self.dir_options()
        if simulate:
            argv += ["-s", "-o", "Debug::NoLocking=1"]
        else:
            argv += CONFFILE_OPTS
            argv += ["-o", f"DPkg::Lock::Timeout={int(lock_timeout)}"]
        return [*argv, *args]

    # reading -----------------------------------------------------------------------------

    def _read_status(self) -> dict[Key, Installed]:
        key = _stat_key([STATUS_FILE])
        if self._status is None or self._status[0] != key:
            text = STATUS_FILE.read_text(encoding="utf-8", errors="replace")
            self._status = (key, parse_status(text))
        return self._status[1]

    def forget_status(self) -> None:
        """Drop the parsed dpkg database (it is re-read on next use)."""
        self._status = None

    def cached_status(self) -> dict[Key, Installed] | None:
        return self._status[1] if self._status else None

    async def installed(self) -> dict[Key, Installed]:
        key = _stat_key([STATUS_FILE])
        if self._status is not None and self._status[0] == key:
            return self._status[1]
        try:
            return await asyncio.to_thread(self._read_status)
        except OSError as err:
            raise EngineMissing(
                f"cannot read dpkg's database {STATUS_FILE}: {err.strerror}",
                {"path": str(STATUS_FILE)},
            ) from err

    def _candidates_key(self) -> object:
        s = self.settings
        lists = Path(s.lists_dir) if s.lists_dir else Path("/var/lib/apt/lists")
        paths = [lists, Path(s.sources_list), Path(s.sources_dir), Path("/etc/apt/preferences"),
                 Path("/etc/apt/preferences.d")]  # fmt: skip
        with contextlib.suppress(OSError):
            paths += sorted(Path(s.sources_dir).iterdir())
        return _stat_key(paths)

    async def candidates(self) -> Candidates:
        """apt's candidate version of every known package (cached until lists change)."""
        async with self._cand_lock:
            key = await asyncio.to_thread(self._candidates_key)
            if self._cands is not None and self._cands[0] == key:
                return self._cands[1]
            started = time.monotonic()
            self._cands = None  # the old table is not kept alive while the new one is built
            cands = await asyncio.to_thread(self._read_candidates)
            self._cands = (key, cands)
            log.info("read %d candidates in %.2fs", len(cands), time.monotonic() - started)
            return cands

    def _read_candidates(self) -> Candidates:
        # a helper process parses apt-cache's tens of MB: see services.apt.dumpavail
        argv = [sys.executable, "-I", "-S", dumpavail.__file__, "apt-cache",
                *self.dir_options(), "dumpavail"]  # fmt: skip
        with tempfile.TemporaryFile() as err:  # a file: a chatty stderr cannot block it
            with subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=ENV
            ) as proc:
                assert proc.stdout is not None
                try:
                    table = dumpavail.read(proc.stdout)
                except (EOFError, struct.error):
                    table = None
            if proc.returncode == 127:
                raise _missing("apt-cache")
            if proc.returncode != 0 or table is None:
                err.seek(0)
                raise ServiceUnavailable(
                    "apt-cache cannot read the package lists: "
                    + err.read().decode("utf-8", "replace").strip()[-500:],
                    {"exit_code": proc.returncode},
                )
        return Candidates(table)

    async def show(self, names: list[str]) -> dict[Key, PackageInfo]:
        """Candidate records of known packages (``apt-cache show``), by (name, arch)."""
        if not names:
            return {}
        res = await run_tool(
            ["apt-cache", *self.dir_options(), "show", "--no-all-versions", "--", *names]
        )
        out: dict[Key, PackageInfo] = {}
        wanted = frozenset(
            {"Package", "Architecture", "Version", "Description", "Section", "Installed-Size",
             "Size", "Depends", "Pre-Depends"}
        )  # fmt: skip
        for para in "\n".join(res.lines).split("\n\n"):
            f = _paragraph_fields(para, wanted)
            if "Package" not in f:
                continue
            key = (f["Package"], f.get("Architecture", ""))
            out[key] = PackageInfo(
                name=f["Package"],
                architecture=key[1],
                status="not-installed",
                candidate_version=f.get("Version"),
                summary=f.get("Description", ""),
                section=f.get("Section"),
                installed_size=int(f["Installed-Size"])
                if f.get("Installed-Size", "").isdigit()
                else None,
                download_size=int(f["Size"]) if f.get("Size", "").isdigit() else None,
                depends=split_deps(f.get("Depends", "")),
                pre_depends=split_deps(f.get("Pre-Depends", "")),
            )
        return out

    def known_repositories(self, entries: list[tuple[list[str], list[str]]]) -> list[str]:
        return [f"{u} {s}" for uris, suites in entries for u in uris for s in suites]


def change_dict(c: Change) -> dict[str, object]:
    return dict(msgspec.to_builtins(c))


def to_builtins(obj: object) -> object:
    return msgspec.to_builtins(obj)


def split_deps(text: str) -> list[str]:
    return [d.strip() for d in text.split(",") if d.strip()]
