"""The apt service's actions: the only list of what it can do.

Every change to dpkg's database (install, remove, upgrade, hold, repair, update) is a
*serial* job: Tether never runs two apt/dpkg commands at once. A second mutating request is
accepted and queued behind the running one (its ``queued`` event says how many jobs are
ahead); it can be cancelled while queued or while it waits for another program's dpkg lock.
Read-only actions (``list``, ``get``, ``repos/list``) never wait for jobs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import logging
import math
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import __version__
from common.config import AptSettings
from common.dispatch import Action, ActionTable, NoArgs
from common.errors import Failed, InvalidRequest, Locked, NotFound, TetherError
from common.health import HealthReport
from common.jobs import JOB_ACTIONS, JobHandle, JobManager
from common.messages import JobRef, ServiceState
from services.apt import backend
from services.apt.backend import Apt, Candidates, Key, lock_holder, run_change, run_tool
from services.apt.models import (
    ChangeResult,
    GetArgs,
    GetResult,
    HoldArgs,
    HoldResult,
    InstallArgs,
    ListArgs,
    Package,
    PackageInfo,
    PackageList,
    RemoveArgs,
    Repo,
    RepoAddArgs,
    RepoEditArgs,
    RepoList,
    RepoRef,
    UpdateResult,
    UpgradeArgs,
)
from services.apt.sources import (
    Entry,
    SourcesDirs,
    check_entry,
    check_options,
    to_repo,
)

log = logging.getLogger("tether.apt")

#: Re-announce "waiting for lock" at most this often (seconds).
LOCK_ANNOUNCE_EVERY = 10.0
LOCK_POLL = 0.5


@dataclass
class AptContext:
    jobs: JobManager
    settings: AptSettings
    apt: Apt = field(init=False)
    dirs: SourcesDirs = field(init=False)
    #: Read the package caches at start (off when the service is not routed to).
    warm: bool = True
    repo_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.apt = Apt(self.settings)
        s = self.settings
        self.dirs = SourcesDirs(Path(s.sources_list), Path(s.sources_dir), Path(s.keyring_dir))


# --- read-only ---------------------------------------------------------------------------


def _status_of(inst: backend.Installed | None, candidate: str | None) -> str:
    if inst is None:
        return "not-installed"
    st = inst.status
    if st == "installed" and candidate and backend.compare_versions(candidate, inst.version) > 0:
        return "upgradable"
    return st


Listed = tuple[Key, int]  # (name, arch), index in Candidates or -1


def _merged_page(
    cands: Candidates, idx: Sequence[int], extra: list[Key], start: int, count: int
) -> list[Listed]:
    """Entries ``start``... of the sorted union of the candidates ``idx`` (ascending indexes)
    and ``extra`` (sorted keys apt has no candidate for), without building that union."""
    # extra[j] sorts before idx[ins[j]]
    ins = [bisect.bisect_left(idx, cands.insertion_point(k)) for k in extra]
    j = sum(1 for n, p in enumerate(ins) if p + n < start)
    c = start - j
    out: list[Listed] = []
    while len(out) < count:
        if j < len(extra) and (c >= len(idx) or ins[j] <= c):
            out.append((extra[j], -1))
            j += 1
        elif c < len(idx):
            out.append((cands.key(idx[c]), idx[c]))
            c += 1
        else:
            break
    return out


async def list_packages(ctx: AptContext, args: ListArgs) -> PackageList:
    """Installed, upgradable or all known packages, paged, optionally filtered by a search."""
    installed = await ctx.apt.installed()
    try:
        cands = await ctx.apt.candidates()
    except TetherError:
        if args.filter != "installed":
            raise
        cands = Candidates()  # installed packages are still listed, without candidates
    start = (args.page - 1) * args.page_size
    needle = args.search.casefold() if args.search else None

    def matches(k: Key, i: backend.Installed) -> bool:
        return needle is None or needle in k[0] or needle in i.summary.casefold()

    page: list[Listed]
    if args.filter == "all":
        # installed packages match on their installed summary, the others on apt's; the
        # candidates stay indexes (a search may match most of 60 000 packages)
        idx: Sequence[int] = range(len(cands))
        extra: list[Key] = []
        if needle is None:
            extra = sorted(k for k in installed if k not in cands)
        else:
            mine = {cands.index(k) for k in installed}
            found: list[int] = []
            for k, v in installed.items():
                if matches(k, v):
                    ix = cands.index(k)
                    if ix >= 0:
                        found.append(ix)
                    else:
                        extra.append(k)
            others = (ix for ix in cands.search(needle) if ix not in mine)
            hits = array("I", heapq.merge(others, sorted(found)))
            extra.sort()
            idx = hits
        total = len(idx) + len(extra)
        page = _merged_page(cands, idx, extra, start, args.page_size)
    else:
        entries = [
            (k, cands.index(k))
            for k, v in installed.items()
            if v.state != "not-installed" and matches(k, v)
        ]
        if args.filter == "upgradable":
            entries = [
                (k, c)
                for k, c in entries
                if c >= 0 and _status_of(installed[k], cands.version(c)) == "upgradable"
            ]
        entries.sort()
        total = len(entries)
        page = entries[start : start + args.page_size]
    packages = []
    for k, c in page:
        i = installed.get(k)
        candidate = cands.version(c) if c >= 0 else None
        present = i is not None and i.status != "not-installed"
        packages.append(
            Package(
                name=k[0],
                architecture=k[1],
                status=_status_of(i, candidate) if present else "not-installed",  # type: ignore[arg-type]
                version=i.version if i and present else None,
                candidate=candidate,
                summary=(i.summary if i and i.summary else cands.summary(c) if c >= 0 else ""),
                held=bool(i and i.want == "hold"),
            )
        )
    return PackageList(
        packages, total, args.page, args.page_size, max(1, math.ceil(total / args.page_size))
    )


async def get_packages(ctx: AptContext, args: GetArgs) -> GetResult:
    """Installed and candidate versions, summary, sizes, dependencies and hold state."""
    specs = backend.parse_specs(args.names, allow_version=False)
    installed = await ctx.apt.installed()
    cands = await ctx.apt.candidates()
    found: list[Key] = []
    missing: list[str] = []
    for s in specs:
        named = {k for k, v in installed.items() if k[0] == s.name and v.state != "not-installed"}
        named.update(cands.key(i) for i in cands.of_name(s.name))
        keys = sorted(k for k in named if s.arch is None or k[1] in (s.arch, "all"))
        if not keys:
            missing.append(str(s))
        found.extend(k for k in keys if k not in found)
    if missing:
        raise NotFound(
            f"no such package: {', '.join(missing)}; check the name, or run update",
            {"field": "names", "value": missing},
        )
    shown = await ctx.apt.show(sorted({k[0] for k in found if k in cands}))
    out: list[PackageInfo] = []
    for k in found:
        i, c = installed.get(k), cands.get(k)
        info = shown.get(k) or PackageInfo(name=k[0], architecture=k[1], status="not-installed")
        present = i is not None and i.state != "not-installed"
        candidate = c.version if c else None
        info.status = _status_of(i, candidate) if present else "not-installed"  # type: ignore[assignment]
        info.candidate_version = candidate
        if i is not None and present:
            info.installed_version = i.version
            info.summary = i.summary or info.summary
            info.section = i.section or info.section
            info.installed_size = i.installed_size
            info.depends = backend.split_deps(i.depends)
            info.pre_depends = backend.split_deps(i.pre_depends)
            info.held = i.want == "hold"
        out.append(info)
    return GetResult(out)


# --- jobs --------------------------------------------------------------------------------


def _stop_if_cancelled(h: JobHandle) -> None:
    """The last point where a cancel request is honoured: after it, apt runs to its end."""
    if h.cancel_requested:
        raise asyncio.CancelledError


async def _wait_for_lock(ctx: AptContext, h: JobHandle, lists: bool = False) -> float:
    """Wait while another program holds a dpkg/apt lock; return the wait time left.

    Reports ``waiting for lock: <holder>`` events; fails ``locked`` naming the holder after
    ``apt.lock_wait`` seconds; a cancel request while waiting cancels the job."""
    s = ctx.settings
    paths = list(backend.DPKG_LOCKS)
    lists_dir = Path(s.lists_dir or "/var/lib/apt/lists")
    paths.append(
        lists_dir / "lock" if lists else Path(s.cache_dir or "/var/cache/apt") / "archives/lock"
    )
    deadline = time.monotonic() + s.lock_wait
    announced: tuple[int | None, float] | None = None
    while True:
        holder = await asyncio.to_thread(lock_holder, paths)
        now = time.monotonic()
        if holder is None:
            return max(0.0, deadline - now)
        if h.cancel_requested:
            raise asyncio.CancelledError
        if now >= deadline:
            raise Locked(
                f"{holder.describe()}; gave up after waiting {s.lock_wait:g}s. Retry when it "
                "has finished (e.g. unattended-upgrades)",
                {"holder": holder.as_dict(), "waited": s.lock_wait},
            )
        if (
            announced is None
            or announced[0] != holder.pid
            or now - announced[1] > LOCK_ANNOUNCE_EVERY
        ):
            announced = (holder.pid, now)
            await h.progress(None, f"waiting for lock: {holder.describe()}")
        await asyncio.sleep(min(LOCK_POLL, max(0.01, deadline - now)))


def _progress_reporter(h: JobHandle) -> Callable[[str, float, str], Awaitable[None]]:
    last_pct, last_msg, last_at = -100.0, "", 0.0

    async def report(kind: str, pct: float, msg: str) -> None:
        nonlocal last_pct, last_msg, last_at
        if kind == "dlstatus":
            overall = pct * 0.2
        elif kind == "pmstatus":
            overall = 20.0 + pct * 0.8
        elif kind in ("pmerror", "pmconffile"):
            h.line(f"{kind}: {msg}")
            return
        else:
            return
        # at most ~100 percent steps, plus new messages twice a second: a 500-package
        # upgrade must not become thousands of MQTT messages
        now = time.monotonic()
        if overall - last_pct >= 1.0 or (msg != last_msg and now - last_at >= 0.5):
            last_pct, last_msg, last_at = overall, msg, now
            await h.progress(overall, msg)

    return report


async def _run_apt(
    ctx: AptContext, h: JobHandle, args: list[str], lock_left: float
) -> backend.RunResult:
    argv = ctx.apt.apt_get(*args, lock_timeout=lock_left)
    h.line("$ " + " ".join(["apt-get", *args]))
    return await run_change(
        argv, on_line=h.line, on_status=_progress_reporter(h), status_fd_option="APT::Status-Fd"
    )


async def _change_job(
    ctx: AptContext, h: JobHandle, args: list[str], dry_run: bool, what: str
) -> ChangeResult:
    await asyncio.to_thread(ctx.apt.ensure_dirs)
    sim = await run_tool(ctx.apt.apt_get(*args, simulate=True))
    if sim.rc != 0:
        for line in sim.tail:
            h.line(line)
        raise backend.error_from_apt(sim, what)
    plan = backend.plan_from_simulation(sim.lines)
    if dry_run:
        for line in sim.lines:
            h.line(line)
        return ChangeResult(True, plan)
    if not plan:
        h.line("nothing to do")
        return ChangeResult(False, [])
    left = await _wait_for_lock(ctx, h)
    _stop_if_cancelled(h)
    before = await ctx.apt.installed()
    res = await _run_apt(ctx, h, args, left)
    after = await ctx.apt.installed()
    changes = backend.diff_status(before, after)
    if res.rc != 0:
        err = backend.error_from_apt(res, what)
        if isinstance(err.details, dict):
            err.details["changes"] = [backend.change_dict(c) for c in changes]
        raise err
    return ChangeResult(False, changes)


async def _start(
    ctx: AptContext, action: str, work: Callable[[JobHandle], Awaitable[Any]]
) -> JobRef:
    return await ctx.jobs.start(action, work, serial=True)


async def install(ctx: AptContext, args: InstallArgs) -> JobRef:
    """Install packages (name, name=version, name:arch) as a job with progress."""
    specs = backend.parse_specs(args.packages)
    extra = ["--allow-downgrades"] if any(s.version for s in specs) else []
    apt_args = ["install", *extra, "--", *map(str, specs)]
    return await _start(
        ctx, "install", lambda h: _change_job(ctx, h, apt_args, args.dry_run, "install")
    )


async def remove(ctx: AptContext, args: RemoveArgs) -> JobRef:
    """Remove packages (purge: also their configuration files) as a job."""
    specs = backend.parse_specs(args.packages, allow_version=False)
    verb = "purge" if args.purge else "remove"
    apt_args = [verb, "--", *map(str, specs)]
    return await _start(ctx, verb, lambda h: _change_job(ctx, h, apt_args, args.dry_run, verb))


async def upgrade(ctx: AptContext, args: UpgradeArgs) -> JobRef:
    """Upgrade the named packages, or every upgradable one, as a job."""
    specs = backend.parse_specs(args.packages)
    if specs:
        if args.full:
            raise InvalidRequest("full applies only when no packages are named", {"field": "full"})
        apt_args = ["install", "--only-upgrade", "--", *map(str, specs)]
    else:
        apt_args = ["dist-upgrade" if args.full else "upgrade"]
    return await _start(
        ctx, "upgrade", lambda h: _change_job(ctx, h, apt_args, args.dry_run, "upgrade")
    )


async def update(ctx: AptContext, _args: NoArgs) -> JobRef:
    """Refresh the package lists; the result says per repository whether it was fetched."""

    async def work(h: JobHandle) -> UpdateResult:
        await asyncio.to_thread(ctx.apt.ensure_dirs)
        repos, _errors = await asyncio.to_thread(ctx.dirs.list)
        known = [f"{u} {s}" for r in repos if r.enabled for u in r.uris for s in r.suites]
        left = await _wait_for_lock(ctx, h, lists=True)
        _stop_if_cancelled(h)
        res = await _run_apt(ctx, h, ["update"], left)
        fetched, warnings = backend.parse_update(res.lines, known)
        result = UpdateResult(
            res.rc == 0 and all(r.status != "failed" for r in fetched), fetched, warnings
        )
        if res.rc != 0 and not fetched:
            raise backend.error_from_apt(res, "update")
        if not result.ok:
            failed = [r.repository for r in result.repositories if r.status == "failed"]
            raise Failed(
                f"update: {len(failed) or 'some'} repositor{'y' if len(failed) == 1 else 'ies'} "
                f"could not be fetched: {', '.join(failed) or 'see warnings'}",
                backend.to_builtins(result),
            )
        with contextlib.suppress(TetherError):
            await ctx.apt.candidates()  # warm the cache so list answers at once
        return result

    return await _start(ctx, "update", work)


def _hold_job(
    ctx: AptContext, packages: list[str], hold: bool
) -> Callable[[JobHandle], Awaitable[HoldResult]]:
    specs = backend.parse_specs(packages, allow_version=False)

    async def work(h: JobHandle) -> HoldResult:
        installed = await ctx.apt.installed()
        keys = {
            s: [
                k
                for k, v in installed.items()
                if k[0] == s.name and (s.arch in (None, k[1])) and v.state != "not-installed"
            ]
            for s in specs
        }
        missing = [str(s) for s, ks in keys.items() if not ks]
        if missing:
            raise NotFound(
                f"not installed: {', '.join(missing)}; only installed packages can be held",
                {"field": "packages", "value": missing},
            )
        before = {k: installed[k].want == "hold" for ks in keys.values() for k in ks}
        left = await _wait_for_lock(ctx, h)
        _stop_if_cancelled(h)
        argv = ["apt-mark", *ctx.apt.dir_options(), "-o", f"DPkg::Lock::Timeout={int(left)}",
                "hold" if hold else "unhold", "--", *map(str, specs)]  # fmt: skip
        res = await run_change(argv, on_line=h.line)
        if res.rc != 0:
            raise backend.error_from_apt(res, "hold" if hold else "unhold")
        after = await ctx.apt.installed()
        changed = (
            sorted(
                f"{k[0]}:{k[1]}" for k, was in before.items() if (after[k].want == "hold") != was
            )
            if all(k in after for k in before)
            else []
        )
        held = sorted(f"{k[0]}:{k[1]}" for k, v in after.items() if v.want == "hold")
        return HoldResult(changed, held)

    return work


async def hold(ctx: AptContext, args: HoldArgs) -> JobRef:
    """Hold installed packages at their version (apt-mark hold), as a job."""
    return await _start(ctx, "hold", _hold_job(ctx, args.packages, True))


async def unhold(ctx: AptContext, args: HoldArgs) -> JobRef:
    """Release held packages (apt-mark unhold), as a job."""
    return await _start(ctx, "unhold", _hold_job(ctx, args.packages, False))


async def repair(ctx: AptContext, _args: NoArgs) -> JobRef:
    """Finish an interrupted dpkg run (dpkg --configure -a) and fix broken dependencies."""

    async def work(h: JobHandle) -> ChangeResult:
        await asyncio.to_thread(ctx.apt.ensure_dirs)
        left = await _wait_for_lock(ctx, h)
        _stop_if_cancelled(h)
        before = await ctx.apt.installed()
        h.line("$ dpkg --configure -a")
        await h.progress(5, "dpkg --configure -a")
        dpkg = await run_change(
            ["dpkg", "--force-confdef", "--force-confold", "--configure", "-a"], on_line=h.line
        )
        fix = await _run_apt(ctx, h, ["install", "-f"], left)
        after = await ctx.apt.installed()
        changes = backend.diff_status(before, after)
        if dpkg.rc != 0 and fix.rc == 0:
            # apt-get -f may have removed what dpkg could not configure; check again
            dpkg = await run_change(["dpkg", "--configure", "-a"], on_line=h.line)
        bad = fix if fix.rc != 0 else dpkg if dpkg.rc != 0 else None
        if bad is not None:
            err = backend.error_from_apt(bad, "repair")
            if isinstance(err.details, dict):
                err.details["changes"] = [backend.change_dict(c) for c in changes]
            raise err
        return ChangeResult(False, changes)

    return await _start(ctx, "repair", work)


# --- repositories -------------------------------------------------------------------------


async def repos_list(ctx: AptContext, _args: NoArgs) -> RepoList:
    """Repository entries of sources.list (read-only) and sources.list.d (.list, .sources)."""
    repos, errors = await asyncio.to_thread(ctx.dirs.list)
    return RepoList(repos, errors)


async def repos_add(ctx: AptContext, args: RepoAddArgs) -> Repo:
    """Add a repository entry (and optionally its signing key) to a sources.list.d file."""
    ctx.dirs.check_writable(args.file)
    check_entry(args.types, args.uris, args.suites, args.components)
    options = check_options(args.options)
    if args.file.endswith(".list") and max(len(args.types), len(args.uris), len(args.suites)) > 1:
        raise InvalidRequest(
            "a one-line (.list) entry has exactly one type, URI and suite; use a .sources file",
            {"field": "file", "value": args.file},
        )
    if args.key is not None and "signed-by" in options:
        raise InvalidRequest("give either key or options.signed-by, not both", {"field": "key"})
    entry = Entry(args.enabled, args.types, args.uris, args.suites, args.components, options)
    async with ctx.repo_lock:
        if args.key is not None:
            keyring = await asyncio.to_thread(ctx.dirs.install_key, args.file, args.key)
            entry.options["signed-by"] = str(keyring)
        return await asyncio.to_thread(ctx.dirs.add, args.file, entry)


async def repos_edit(ctx: AptContext, args: RepoEditArgs) -> Repo:
    """Change one entry (enabled, types, URIs, suites, components, options) in place."""
    ctx.dirs.check_writable(args.file)
    options = check_options(args.options) if args.options is not None else None

    def edit() -> Repo:
        sf = ctx.dirs.load(args.file)
        if not 0 <= args.index < len(sf.entries):
            raise NotFound(
                f"{args.file} has no entry {args.index}", {"field": "index", "value": args.index}
            )
        old = sf.entries[args.index]
        new = Entry(
            old.enabled if args.enabled is None else args.enabled,
            old.types if args.types is None else args.types,
            old.uris if args.uris is None else args.uris,
            old.suites if args.suites is None else args.suites,
            old.components if args.components is None else args.components,
            old.options if options is None else options,
        )
        check_entry(new.types, new.uris, new.suites, new.components)
        sf.replace(args.index, new, options is not None)
        ctx.dirs.write(args.file, sf.text())
        return to_repo(args.file, args.index, sf.deb822, new)

    async with ctx.repo_lock:
        return await asyncio.to_thread(edit)


async def repos_remove(ctx: AptContext, args: RepoRef) -> RepoList:
    """Remove one entry of a sources file, or the whole file when no index is given."""
    ctx.dirs.check_writable(args.file)

    def remove() -> RepoList:
        sf = ctx.dirs.load(args.file)
        if args.index is None:
            ctx.dirs.delete(args.file)
        else:
            sf.remove(args.index)
            ctx.dirs.write(args.file, sf.text())
        repos, errors = ctx.dirs.list()
        return RepoList(repos, errors)

    async with ctx.repo_lock:
        return await asyncio.to_thread(remove)


# --- health ------------------------------------------------------------------------------


def report(ctx: AptContext) -> HealthReport:
    """Heartbeat facts: whether dpkg's database is readable and any package is half-done."""
    status = ctx.apt.cached_status()
    if status is None:
        return HealthReport(ServiceState.OK, None, {"dpkg": "not read yet"})
    half = sorted(f"{k[0]}:{k[1]}" for k, v in status.items() if v.status == "half-installed")
    facts: dict[str, Any] = {"installed": sum(v.status == "installed" for v in status.values())}
    if half and not ctx.jobs.busy:  # mid-install states are expected while a job runs
        facts["half_installed"] = half[:20]
        return HealthReport(
            ServiceState.DEGRADED, f"{len(half)} package(s) half-installed; run repair", facts
        )
    return HealthReport(ServiceState.OK, None, facts)


async def prime(ctx: AptContext) -> None:
    """Read dpkg's database and apt's candidates once at start so list answers at once."""
    if not ctx.warm:
        return
    with contextlib.suppress(TetherError):
        await ctx.apt.installed()
        await ctx.apt.candidates()
    while True:  # keep the health facts fresh after changes made by other programs
        await asyncio.sleep(30)
        with contextlib.suppress(TetherError):
            await ctx.apt.installed()


ACTIONS: ActionTable[AptContext] = ActionTable(
    "apt",
    __version__,
    [
        Action("list", list_packages, ListArgs, PackageList, timeout=60.0),
        Action("get", get_packages, GetArgs, GetResult, timeout=60.0),
        Action("update", update, NoArgs, JobRef, mutating=True, job=True),
        Action("install", install, InstallArgs, JobRef, mutating=True, job=True),
        Action("remove", remove, RemoveArgs, JobRef, mutating=True, job=True),
        Action("upgrade", upgrade, UpgradeArgs, JobRef, mutating=True, job=True),
        Action("hold", hold, HoldArgs, JobRef, mutating=True, job=True),
        Action("unhold", unhold, HoldArgs, JobRef, mutating=True, job=True),
        Action("repair", repair, NoArgs, JobRef, mutating=True, job=True),
        Action("repos/list", repos_list, NoArgs, RepoList),
        Action("repos/add", repos_add, RepoAddArgs, Repo, mutating=True),
        Action("repos/edit", repos_edit, RepoEditArgs, Repo, mutating=True),
        Action("repos/remove", repos_remove, RepoRef, RepoList, mutating=True),
        *JOB_ACTIONS,
    ],
)
