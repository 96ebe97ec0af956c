"""The apt service end to end: real gateway, broker, supervisord, apt-get and dpkg.

Packages come from a signed ``file:`` repository built for the session (tests/apt_fixtures.py)
and added through ``repos/add`` with its key; every ``tether-fixture-*`` package is purged
before and after each test. The service is configured with private sources/lists/cache
directories, so ``update`` is offline and the machine's own package lists stay untouched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.devbroker import Mosquitto
from common.pki import DevPki
from tests.apt_fixtures import (
    CONF_CONFFILE,
    FAIL_FLAG,
    PREFIX,
    UP_CONFFILE,
    AptDirs,
    FixtureRepo,
    LockHolder,
    apt_dirs,
    fixture_repo,
    fixture_version,
    installed_fixtures,
    purge_fixtures,
)
from tests.harness import Bundle, run_sync

pytestmark = pytest.mark.system
__all__ = ["apt_dirs", "fixture_repo"]  # fixtures used by name

PLAIN, DEP, CONF, FAILING, UP, SLOW = (
    f"{PREFIX}{n}" for n in ("plain", "dep", "conf", "failing", "up", "slow")
)
LOCK_WAIT = 6.0


@pytest.fixture(scope="module")
def bundle(
    pki: DevPki, broker: Mosquitto, apt_dirs: AptDirs, fixture_repo: FixtureRepo
) -> Iterator[Bundle]:
    b = Bundle(
        pki,
        broker,
        ["apt"],
        {"apt": apt_dirs.config(lock_wait=LOCK_WAIT), "gateway": {"request_timeout": 20.0}},
    )
    try:
        b.start()
        reply = run_sync(
            b.call(
                "apt",
                "repos/add",
                {
                    "file": "tether-fixture.sources",
                    "uris": [fixture_repo.uri],
                    "suites": ["./"],
                    "key": fixture_repo.key,
                },
            )
        )
        assert reply["ok"], reply
        yield b
    finally:
        b.cleanup()


@pytest.fixture(autouse=True)
def clean_packages() -> Iterator[None]:
    purge_fixtures()
    yield
    purge_fixtures()


class Job:
    """A job started through the gateway, with every event seen on its topic."""

    def __init__(self, reply: dict[str, Any], q: asyncio.Queue[tuple[str, bytes]] | None) -> None:
        self.reply = reply
        self.events: list[dict[str, Any]] = []
        self._q = q

    @property
    def id(self) -> str:
        return str(self.reply["result"]["job_id"])

    async def next(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self._q is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no event for job {self.id} within {timeout}s: {self.events}")
            _, payload = await asyncio.wait_for(self._q.get(), left)
            ev = msgspec.json.decode(payload)
            if ev.get("job_id") != self.id or any(e["seq"] == ev["seq"] for e in self.events):
                continue
            self.events.append(ev)
            return dict(ev)

    async def until(self, pred: Any, timeout: float = 60.0) -> dict[str, Any]:
        for ev in self.events:
            if pred(ev):
                return ev
        while True:
            ev = await self.next(timeout)
            if pred(ev):
                return ev

    async def final(self, timeout: float = 90.0) -> dict[str, Any]:
        return await self.until(
            lambda e: e["state"] in ("succeeded", "failed", "cancelled"), timeout
        )


class Operator:
    def __init__(self, bundle: Bundle, client: Any) -> None:
        self.b = bundle
        self.c = client
        self._subs: list[Any] = []

    async def call(self, action: str, args: Any = None) -> dict[str, Any]:
        return dict(await self.c.call(self.b.device, "apt", action, args, timeout=30))

    async def start(self, action: str, args: Any = None) -> Job:
        # one subscription per job, opened before the command so no event is missed
        sub = self.c.subscribe(self.c.topics(self.b.device).jobs_filter())
        q = await sub.__aenter__()
        self._subs.append(sub)
        reply = await self.call(action, args)
        return Job(reply, q if reply.get("ok") else None)

    async def run(self, action: str, args: Any = None) -> tuple[Job, dict[str, Any]]:
        job = await self.start(action, args)
        assert job.reply["ok"], job.reply
        return job, await job.final()

    async def close(self) -> None:
        for sub in reversed(self._subs):
            await sub.__aexit__(None, None, None)


@pytest.fixture
async def op(bundle: Bundle) -> Any:
    async with bundle.client() as c:
        o = Operator(bundle, c)
        try:
            yield o
        finally:
            await o.close()


def changes(final: dict[str, Any]) -> dict[str, tuple[str, str | None, str | None]]:
    return {
        c["name"]: (c["action"], c.get("old_version"), c.get("new_version"))
        for c in final["result"]["changes"]
    }


async def update_ok(op: Operator) -> dict[str, Any]:
    _, final = await op.run("update")
    assert final["state"] == "succeeded", final
    return dict(final["result"])


# --- repositories, list and get --------------------------------------------------------


async def test_repo_added_with_key_updates_and_lists(op: Operator, apt_dirs: AptDirs) -> None:
    repos = (await op.call("repos/list"))["result"]["repos"]
    (mine,) = [r for r in repos if r["file"] == "tether-fixture.sources"]
    keyring = Path(mine["options"]["signed-by"])
    assert keyring.parent == apt_dirs.base / "keyrings" and keyring.stat().st_size > 0
    # the repository is signed and not trusted=yes: this fetch proves the key was installed
    result = await update_ok(op)
    (repo,) = [r for r in result["repositories"] if r["repository"].endswith(" ./")]
    assert repo["status"] in ("fetched", "unchanged") and result["ok"]

    listed = (await op.call("list", {"filter": "all", "search": "tether test FIXTURE"}))["result"]
    names = {p["name"]: p for p in listed["packages"]}
    assert set(names) == {PLAIN, DEP, CONF, FAILING, UP, SLOW} and listed["total"] == 6
    assert names[UP]["candidate"] == "2.0" and names[UP]["status"] == "not-installed"
    paged = (await op.call("list", {"filter": "all", "search": PREFIX, "page": 2, "page_size": 2}))[
        "result"
    ]
    assert [p["name"] for p in paged["packages"]] == [FAILING, PLAIN]
    assert (paged["total"], paged["pages"]) == (6, 3)

    got = (await op.call("get", {"names": [DEP]}))["result"]["packages"][0]
    assert got["candidate_version"] == "1.0" and got["depends"] == [PLAIN]
    assert got["status"] == "not-installed" and got["download_size"] > 0
    missing = await op.call("get", {"names": [DEP, f"{PREFIX}nope"]})
    assert missing["error"]["code"] == "not_found"
    assert missing["error"]["details"]["value"] == [f"{PREFIX}nope"]


async def test_update_reports_a_failed_repository(op: Operator, apt_dirs: AptDirs) -> None:
    r = await op.call(
        "repos/add",
        {"file": "tether-broken.list", "uris": [f"file:{apt_dirs.base}/no-such-repo"],
         "suites": ["./"], "options": {"trusted": "yes"}},
    )  # fmt: skip
    assert r["ok"], r
    try:
        _, final = await op.run("update")
        assert final["state"] == "failed" and final["error"]["code"] == "failed"
        by_repo = {x["repository"]: x["status"] for x in final["error"]["details"]["repositories"]}
        assert by_repo[f"file:{apt_dirs.base}/no-such-repo ./"] == "failed"
        assert [s for k, s in by_repo.items() if "no-such-repo" not in k] in (
            ["fetched"],
            ["unchanged"],
        )
    finally:
        assert (await op.call("repos/remove", {"file": "tether-broken.list"}))["ok"]
    await update_ok(op)


# --- install, upgrade, hold, remove ------------------------------------------------------


async def test_install_reports_progress_and_changes(op: Operator) -> None:
    await update_ok(op)
    job, final = await op.run("install", {"packages": [DEP]})
    assert final["state"] == "succeeded", final
    assert changes(final) == {DEP: ("installed", None, "1.0"), PLAIN: ("installed", None, "1.0")}
    progress = [e["progress"] for e in job.events if e["state"] == "running" and e.get("progress")]
    assert progress and progress == sorted(progress) and 20 < max(progress) < 100
    messages = [e.get("message") or "" for e in job.events]
    assert any(m.startswith(("Installing", "Installed", "Configuring")) for m in messages)
    lines = [ln for e in job.events for ln in e.get("lines", [])]
    assert any(f"Setting up {DEP} (1.0)" in ln for ln in lines)
    assert installed_fixtures() == {DEP: "installed", PLAIN: "installed"}

    listed = (await op.call("list", {"search": PREFIX}))["result"]["packages"]
    assert {(p["name"], p["status"], p["version"]) for p in listed} == {
        (DEP, "installed", "1.0"),
        (PLAIN, "installed", "1.0"),
    }


async def test_dry_run_changes_nothing(op: Operator) -> None:
    await update_ok(op)
    _, final = await op.run("install", {"packages": [DEP], "dry_run": True})
    assert final["state"] == "succeeded" and final["result"]["dry_run"] is True
    assert changes(final) == {DEP: ("installed", None, "1.0"), PLAIN: ("installed", None, "1.0")}
    assert installed_fixtures() == {}


async def test_upgrade_v1_to_v2_keeps_the_local_conffile(op: Operator) -> None:
    await update_ok(op)
    _, final = await op.run("install", {"packages": [f"{UP}=1.0"]})
    assert final["state"] == "succeeded", final
    assert fixture_version(UP) == "1.0"
    upgradable = (await op.call("list", {"filter": "upgradable", "search": PREFIX}))["result"]
    assert [(p["name"], p["version"], p["candidate"]) for p in upgradable["packages"]] == [
        (UP, "1.0", "2.0")
    ]
    UP_CONFFILE.write_text("edited locally\n")  # a conffile prompt would hang a naive run
    _, final = await op.run("upgrade", {"packages": [UP]})
    assert final["state"] == "succeeded", final
    assert changes(final) == {UP: ("upgraded", "1.0", "2.0")}
    assert fixture_version(UP) == "2.0"
    assert UP_CONFFILE.read_text() == "edited locally\n"


async def test_hold_keeps_a_package_back(op: Operator) -> None:
    await update_ok(op)
    _, final = await op.run("install", {"packages": [f"{UP}=1.0"]})
    assert final["state"] == "succeeded", final
    _, final = await op.run("hold", {"packages": [UP]})
    assert final["state"] == "succeeded", final
    assert final["result"]["changed"] == [f"{UP}:all"] and f"{UP}:all" in final["result"]["held"]
    (pkg,) = (await op.call("list", {"search": UP}))["result"]["packages"]
    assert pkg["held"] is True
    _, final = await op.run("upgrade")
    assert final["state"] == "succeeded" and final["result"]["changes"] == []
    assert fixture_version(UP) == "1.0"
    _, final = await op.run("unhold", {"packages": [UP]})
    assert final["state"] == "succeeded" and final["result"]["changed"] == [f"{UP}:all"]
    _, final = await op.run("upgrade")
    assert changes(final) == {UP: ("upgraded", "1.0", "2.0")}


async def test_remove_then_purge(op: Operator) -> None:
    await update_ok(op)
    _, final = await op.run("install", {"packages": [CONF]})
    assert final["state"] == "succeeded" and CONF_CONFFILE.exists()
    _, final = await op.run("remove", {"packages": [CONF]})
    assert changes(final) == {CONF: ("removed", "1.0", None)}
    assert installed_fixtures() == {CONF: "config-files"} and CONF_CONFFILE.exists()
    (pkg,) = (await op.call("list", {"search": CONF}))["result"]["packages"]
    assert pkg["status"] == "config-files"
    _, final = await op.run("remove", {"packages": [CONF], "purge": True})
    assert final["state"] == "succeeded", final
    assert changes(final) == {CONF: ("purged", "1.0", None)}
    assert installed_fixtures() == {} and not CONF_CONFFILE.exists()


async def test_failing_postinst_then_repair(op: Operator, bundle: Bundle) -> None:
    await update_ok(op)
    FAIL_FLAG.touch()
    _, final = await op.run("install", {"packages": [FAILING]})
    assert final["state"] == "failed" and final["error"]["code"] == "failed", final
    assert "repair" in final["error"]["message"]
    assert any("fails on purpose" in ln for ln in final["error"]["details"]["output_tail"])
    assert installed_fixtures() == {FAILING: "half-configured"}
    (pkg,) = (await op.call("list", {"search": FAILING}))["result"]["packages"]
    assert pkg["status"] == "half-installed"
    FAIL_FLAG.unlink()
    _, final = await op.run("repair")
    assert final["state"] == "succeeded", final
    assert changes(final) == {FAILING: ("configured", "1.0", "1.0")}
    assert installed_fixtures() == {FAILING: "installed"}


# --- the dpkg lock, queueing and cancelling ------------------------------------------------


async def test_waits_for_the_dpkg_lock_and_queues_a_second_job(op: Operator) -> None:
    await update_ok(op)
    holder = LockHolder()
    try:
        first = await op.start("install", {"packages": [PLAIN]})
        waiting = await first.until(lambda e: "waiting for lock" in (e.get("message") or ""))
        assert f"pid {holder.pid}" in waiting["message"]
        # read-only actions answer while a job runs
        t0 = time.monotonic()
        assert (await op.call("list", {"search": PREFIX}))["ok"]
        assert (await op.call("repos/list"))["ok"]
        assert time.monotonic() - t0 < 3
        second = await op.start("install", {"packages": [CONF]})
        queued = await second.until(lambda e: e["state"] == "queued")
        assert queued["message"] == "queued behind 1 job(s)"
        cancelled = await op.call("jobs/cancel", {"job_id": second.id})
        assert cancelled["ok"] and cancelled["result"]["state"] == "cancelled"
    finally:
        holder.release()
    final = await first.final()
    assert final["state"] == "succeeded", final
    assert installed_fixtures() == {PLAIN: "installed"}


async def test_lock_held_too_long_fails_locked_naming_the_holder(op: Operator) -> None:
    holder = LockHolder()
    try:
        t0 = time.monotonic()
        _, final = await op.run("install", {"packages": [PLAIN]})
        assert time.monotonic() - t0 >= LOCK_WAIT - 0.5
    finally:
        holder.release()
    assert final["state"] == "failed" and final["error"]["code"] == "locked", final
    assert final["error"]["details"]["holder"]["pid"] == holder.pid
    assert "python" in final["error"]["details"]["holder"]["command"]
    assert installed_fixtures() == {}


async def test_cancel_while_waiting_for_the_lock(op: Operator) -> None:
    holder = LockHolder()
    try:
        job = await op.start("install", {"packages": [PLAIN]})
        await job.until(lambda e: "waiting for lock" in (e.get("message") or ""))
        assert (await op.call("jobs/cancel", {"job_id": job.id}))["ok"]
        final = await job.final(timeout=LOCK_WAIT)
    finally:
        holder.release()
    assert final["state"] == "cancelled", final
    assert installed_fixtures() == {}


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "args", "field", "value"),
    [
        ("install", {"packages": ["foo; rm -rf /"]}, "packages", "foo; rm -rf /"),
        ("install", {"packages": ["../x"]}, "packages", "../x"),
        ("install", {"packages": ["-o"]}, "packages", "-o"),
        ("install", {"packages": ["APT::Get::Force=1"]}, "packages", "APT::Get::Force=1"),
        ("remove", {"packages": ["foo=1.0"]}, "packages", "foo=1.0"),
        ("get", {"names": ["$(reboot)"]}, "packages", "$(reboot)"),
        ("hold", {"packages": ["Foo"]}, "packages", "Foo"),
        ("repos/add", {"file": "../x.list", "uris": ["file:/x"], "suites": ["./"]}, "file",
         "../x.list"),
        ("repos/add", {"file": "x.list", "uris": ["file:/x; rm -rf /"], "suites": ["./"]}, "uris",
         "file:/x; rm -rf /"),
        ("repos/add", {"file": "x.list", "uris": ["http://h/d"], "suites": ["-o"],
                       "components": ["main"]}, "suites", "-o"),
        ("repos/edit", {"file": "a/b.sources", "index": 0}, "file", "a/b.sources"),
        ("repos/remove", {"file": ".hidden.list"}, "file", ".hidden.list"),
    ],
)  # fmt: skip
async def test_bad_names_are_invalid_requests(
    op: Operator, action: str, args: dict[str, Any], field: str, value: str
) -> None:
    reply = await op.call(action, args)
    assert reply["ok"] is False and reply["error"]["code"] == "invalid_request", reply
    assert reply["error"]["details"] == {"field": field, "value": value}
    assert installed_fixtures() == {}


async def test_unknown_package_is_not_found(op: Operator) -> None:
    await update_ok(op)
    _, final = await op.run("install", {"packages": [PLAIN, f"{PREFIX}does-not-exist"]})
    assert final["state"] == "failed" and final["error"]["code"] == "not_found", final
    assert final["error"]["details"]["packages"] == [f"{PREFIX}does-not-exist"]
    assert installed_fixtures() == {}


# --- repository files are edited in place -------------------------------------------------

DEB822 = """\
# Hand-written: keep this comment.
Types: deb
URIs: http://deb.example.org/debian
Suites: bookworm
Components: main
X-Custom: untouched

# second entry
Types: deb deb-src
# a comment inside the paragraph
URIs: http://other.example.org/debian
Suites: bookworm bookworm-updates
Components: main contrib
Architectures: amd64
"""

ONE_LINE = """\
# first comment
deb http://deb.example.org/debian bookworm main
# deb-src http://deb.example.org/debian bookworm main

deb [arch=amd64 trusted=yes] http://other.example.org/debian bookworm main contrib # why
"""


async def test_deb822_edit_preserves_the_rest(op: Operator, apt_dirs: AptDirs) -> None:
    path = apt_dirs.sources_dir / "handmade.sources"
    path.write_text(DEB822)
    try:
        repos = [
            r for r in (await op.call("repos/list"))["result"]["repos"] if r["file"] == path.name
        ]
        assert [(r["index"], r["types"], r.get("options", {})) for r in repos] == [
            (0, ["deb"], {}),
            (1, ["deb", "deb-src"], {"arch": ["amd64"]}),
        ]
        r = await op.call(
            "repos/edit",
            {"file": path.name, "index": 1, "enabled": False, "components": ["main"],
             "options": {"arch": ["amd64", "arm64"]}},
        )  # fmt: skip
        assert r["ok"] and r["result"]["enabled"] is False, r
        assert path.read_text() == DEB822.replace("main contrib", "main").replace(
            "Architectures: amd64", "Architectures: amd64 arm64\nEnabled: no"
        )
        r = await op.call("repos/remove", {"file": path.name, "index": 0})
        assert r["ok"], r
        assert path.read_text() == DEB822.split("\n\n", 1)[1].replace(
            "main contrib", "main"
        ).replace("Architectures: amd64", "Architectures: amd64 arm64\nEnabled: no")
    finally:
        path.unlink(missing_ok=True)


async def test_one_line_edit_preserves_the_rest(op: Operator, apt_dirs: AptDirs) -> None:
    path = apt_dirs.sources_dir / "handmade.list"
    path.write_text(ONE_LINE)
    try:
        repos = [
            r for r in (await op.call("repos/list"))["result"]["repos"] if r["file"] == path.name
        ]
        assert [(r["enabled"], r["types"], r["components"]) for r in repos] == [
            (True, ["deb"], ["main"]),
            (False, ["deb-src"], ["main"]),
            (True, ["deb"], ["main", "contrib"]),
        ]
        assert repos[2]["options"] == {"arch": ["amd64"], "trusted": "yes"}
        r = await op.call("repos/edit", {"file": path.name, "index": 1, "enabled": True})
        assert r["ok"], r
        r = await op.call("repos/edit", {"file": path.name, "index": 2, "suites": ["trixie"]})
        assert r["ok"], r
        assert path.read_text() == (
            "# first comment\n"
            "deb http://deb.example.org/debian bookworm main\n"
            "deb-src http://deb.example.org/debian bookworm main\n"
            "\n"
            "deb [arch=amd64 trusted=yes] http://other.example.org/debian trixie main contrib"
            " # why\n"
        )
        assert (await op.call("repos/remove", {"file": path.name, "index": 0}))["ok"]
        assert "bookworm main\n" not in path.read_text().split("\n")[1]
        assert path.read_text().startswith("# first comment\ndeb-src ")
        gone = await op.call("repos/edit", {"file": path.name, "index": 7, "enabled": False})
        assert gone["error"]["code"] == "not_found"
    finally:
        path.unlink(missing_ok=True)


# --- a job's end survives a gateway restart ------------------------------------------------


async def test_final_state_arrives_across_a_gateway_restart(op: Operator, bundle: Bundle) -> None:
    await update_ok(op)
    job = await op.start("install", {"packages": [SLOW]})
    await job.until(
        lambda e: any("slow fixture configuring" in ln for ln in e.get("lines", [])), timeout=60
    )
    out = await asyncio.to_thread(bundle.supervisorctl, "restart", "gateway")
    assert "started" in out, out
    # a new operator connection gets the retained final event of the job
    events = await bundle.follow_job(job.id, timeout=60)
    assert events[-1]["state"] == "succeeded", events
    assert changes(events[-1]) == {SLOW: ("installed", None, "1.0")}
    assert installed_fixtures() == {SLOW: "installed"}


# --- stopping the service never interrupts dpkg (keep this test last: it restarts apt) -----


async def test_stopping_the_service_lets_dpkg_finish(op: Operator, bundle: Bundle) -> None:
    await update_ok(op)
    job = await op.start("install", {"packages": [SLOW]})
    await job.until(
        lambda e: any("slow fixture configuring" in ln for ln in e.get("lines", [])), timeout=60
    )
    t0 = time.monotonic()
    out = await asyncio.to_thread(bundle.supervisorctl, "stop", "apt")
    assert "stopped" in out, out
    assert time.monotonic() - t0 > 1.0  # it waited for the postinst's sleep
    # dpkg finished configuring instead of being killed half-way
    assert installed_fixtures() == {SLOW: "installed"}
    final = await job.final()
    assert final["state"] == "failed" and "stopped during the job" in final["error"]["message"]
    out = await asyncio.to_thread(bundle.supervisorctl, "start", "apt")
    assert "started" in out, out
    deadline = time.monotonic() + 20
    while not (await op.call("repos/list")).get("ok"):
        assert time.monotonic() < deadline, "apt did not come back"
        await asyncio.sleep(0.3)
