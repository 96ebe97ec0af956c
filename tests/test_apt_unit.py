"""The apt service's parsing and validation, without root: version ordering checked against
dpkg itself, package-name rules, sources files round-tripping byte for byte, key armor, and
apt's output (simulation plans, update results, error messages) turned into our types."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.config import AptSettings
from common.errors import InvalidRequest, Locked, NotFound, TetherError
from common.jobs import JobManager
from common.messages import IpcEvent
from services.apt import backend, sources
from services.apt.actions import ACTIONS, AptContext
from services.apt.backend import RunResult

# --- versions ------------------------------------------------------------------------------

PAIRS = [
    ("1.0", "1.0"),
    ("1.0", "1.0-1"),
    ("1.0~rc1", "1.0"),
    ("1:0.1", "2.0"),
    ("1.0+b1", "1.0"),
    ("2.10-3", "2.9-9"),
    ("1.0a", "1.0+"),
    ("1.0-1ubuntu1", "1.0-1"),
    ("0:1.0", "1.0"),
    ("1.0.0", "1.0"),
    ("5.2.15-2+b8", "5.2.15-2+b13"),
    ("1.0~~", "1.0~"),
    ("a", "1"),
]


def dpkg_cmp(a: str, b: str) -> int:
    for op, result in (("lt", -1), ("eq", 0)):
        if subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0:
            return result
    return 1


def sign(x: int) -> int:
    return (x > 0) - (x < 0)


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg is not installed")


@needs_dpkg
@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_version_order_matches_dpkg(a: str, b: str) -> None:
    assert sign(backend.compare_versions(a, b)) == dpkg_cmp(a, b)
    assert sign(backend.compare_versions(b, a)) == dpkg_cmp(b, a)


_part = st.text(alphabet="0123456789.+~ab", min_size=1, max_size=6).filter(lambda s: s[0].isdigit())
_version = st.builds(
    lambda e, u, r: f"{e}{u}{r}",
    st.sampled_from(["", "1:", "0:"]),
    _part,
    st.sampled_from(["", "-1", "-2", "-1~b1", "-0"]),
)


@needs_dpkg
@settings(max_examples=60, deadline=None)
@given(_version, _version)
def test_version_order_matches_dpkg_on_random_versions(a: str, b: str) -> None:
    assert sign(backend.compare_versions(a, b)) == dpkg_cmp(a, b)


# --- package names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bash", ("bash", None, None)),
        ("libc6:amd64", ("libc6", "amd64", None)),
        ("g++=4:12.2.0-3", ("g++", None, "4:12.2.0-3")),
        ("x11-apps:arm64=7.7+9", ("x11-apps", "arm64", "7.7+9")),
    ],
)
def test_valid_specs(text: str, expected: tuple[str, str | None, str | None]) -> None:
    assert tuple(backend.parse_spec(text)) == expected
    assert str(backend.parse_spec(text)) == text


@pytest.mark.parametrize(
    "text",
    ["", "a", "Bash", "-o", "--purge", "foo; rm -rf /", "../x", "foo bar", "foo=", "foo:",
     "foo=1.0;ls", "foo=abc", "foo/bookworm", "foo*", "$(id)", "f\u00e9e", "x" * 400, 7],
)  # fmt: skip
def test_invalid_specs(text: Any) -> None:
    with pytest.raises(InvalidRequest) as e:
        backend.parse_spec(text)
    assert e.value.details == {"field": "packages", "value": text}


def test_duplicate_and_versioned_specs_rejected() -> None:
    with pytest.raises(InvalidRequest):
        backend.parse_specs(["bash", "bash"])
    with pytest.raises(InvalidRequest):
        backend.parse_specs(["bash=1.0"], allow_version=False)


# --- sources files -------------------------------------------------------------------------

DEB822 = """\
# comment before
Types: deb deb-src
URIs: http://deb.debian.org/debian
# comment inside
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
X-Repolib-Name: kept


Types: deb
URIs: file:/srv/repo
Suites: ./
Enabled: no
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZ
 -----END PGP PUBLIC KEY BLOCK-----
"""

ONE_LINE = """\
deb http://deb.debian.org/debian bookworm main contrib
#deb-src http://deb.debian.org/debian bookworm main
# just a comment mentioning deb things
deb [ arch=amd64,arm64 signed-by=/k.gpg ] https://example.org/apt stable main # note
deb cdrom:[Debian GNU/Linux]/ bookworm main
"""


def test_deb822_parses_and_round_trips() -> None:
    sf = sources.SourcesFile("x.sources", DEB822, deb822=True)
    assert sf.text() == DEB822
    a, b = sf.entries
    assert (a.types, a.suites, a.enabled) == (
        ["deb", "deb-src"],
        ["bookworm", "bookworm-updates"],
        True,
    )
    assert a.options == {"signed-by": "/usr/share/keyrings/debian-archive-keyring.gpg"}
    assert (b.enabled, b.suites, b.components) == (False, ["./"], [])
    assert str(b.options["signed-by"]).startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----\n.\nmDMEZ")


def test_deb822_edit_touches_only_that_paragraph() -> None:
    sf = sources.SourcesFile("x.sources", DEB822, deb822=True)
    e = sf.entries[0]
    sf.replace(0, sources.Entry(False, e.types, e.uris, ["trixie"], e.components, e.options), False)
    text = sf.text()
    assert text == DEB822.replace("Suites: bookworm bookworm-updates", "Suites: trixie").replace(
        "X-Repolib-Name: kept\n", "X-Repolib-Name: kept\nEnabled: no\n"
    )
    again = sources.SourcesFile("x.sources", text, deb822=True)
    assert again.entries[0].suites == ["trixie"] and not again.entries[0].enabled


def test_one_line_parses_and_round_trips() -> None:
    sf = sources.SourcesFile("x.list", ONE_LINE, deb822=False)
    assert sf.text() == ONE_LINE
    assert [(e.enabled, e.types, e.uris[0]) for e in sf.entries[:3]] == [
        (True, ["deb"], "http://deb.debian.org/debian"),
        (False, ["deb-src"], "http://deb.debian.org/debian"),
        (True, ["deb"], "https://example.org/apt"),
    ]
    assert sf.entries[2].options == {"arch": ["amd64", "arm64"], "signed-by": "/k.gpg"}


@pytest.mark.parametrize("path", sorted(Path("/etc/apt/sources.list.d").glob("*.sources")))
def test_this_machines_sources_round_trip(path: Path) -> None:
    text = path.read_text()
    assert sources.SourcesFile(path.name, text, deb822=True).text() == text


@pytest.mark.parametrize(
    "name", ["../x.list", "x.conf", ".x.list", "a/b.sources", "x y.list", "x.list\n", "", "-o.list"]
)
def test_bad_file_names(name: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        sources.check_file_name(name)
    assert e.value.details == {"field": "file", "value": name}


@pytest.mark.parametrize(
    ("uris", "suites", "components", "field"),
    [
        (["ftp://x/debian"], ["bookworm"], ["main"], "uris"),
        (["http:///debian"], ["bookworm"], ["main"], "uris"),
        (["file:relative"], ["./"], [], "uris"),
        (["http://x/d]"], ["bookworm"], ["main"], "uris"),
        (["http://x/d"], ["../../etc"], ["main"], "suites"),
        (["http://x/d"], ["-o"], ["main"], "suites"),
        (["http://x/d"], ["bookworm"], ["main;ls"], "components"),
        (["http://x/d"], ["bookworm"], [], "components"),
        (["http://x/d"], ["./"], ["main"], "components"),
    ],
)
def test_bad_entries(uris: list[str], suites: list[str], components: list[str], field: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        sources.check_entry(["deb"], uris, suites, components)
    assert e.value.details["field"] == field


def test_bad_options() -> None:
    with pytest.raises(InvalidRequest):
        sources.check_options({"exec": "yes"})
    with pytest.raises(InvalidRequest):
        sources.check_options({"signed-by": "/k.gpg /other"})
    with pytest.raises(InvalidRequest):
        sources.check_options({"trusted": ["yes", "no"]})
    assert sources.check_options({"arch": "amd64"}) == {"arch": ["amd64"]}


def test_dearmor_checks_the_armor() -> None:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    import tempfile

    with tempfile.TemporaryDirectory() as home:
        env = {"GNUPGHOME": home, "PATH": "/usr/bin:/bin"}
        gpg = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
        subprocess.run([*gpg, "--quick-gen-key", "t <t@t.invalid>", "ed25519", "sign", "never"],
                       env=env, check=True, capture_output=True)  # fmt: skip
        armored = subprocess.run(
            ["gpg", "--armor", "--export"], env=env, check=True, capture_output=True, text=True
        ).stdout
        binary = subprocess.run(
            ["gpg", "--export"], env=env, check=True, capture_output=True
        ).stdout
        secret = subprocess.run(
            [*gpg, "--armor", "--export-secret-keys"], env=env, check=True, capture_output=True,
            text=True,
        ).stdout  # fmt: skip
        subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False)
    assert sources.dearmor_public_key(armored) == binary
    lines = armored.strip().splitlines()
    crc = next(i for i, ln in enumerate(lines) if ln.startswith("=") and len(ln) == 5)
    lines[crc] = "=AAAA" if lines[crc] != "=AAAA" else "=BBBB"
    for bad in ["\n".join(lines), secret, "hello", armored.replace("m", "!", 1)]:
        with pytest.raises(InvalidRequest):
            sources.dearmor_public_key(bad)


# --- apt's output --------------------------------------------------------------------------


def test_plan_from_simulation() -> None:
    lines = [
        "Inst tether-a (1.0 tether-fixture [all])",
        "Inst libfoo:arm64 [1.0-1] (1.0-2 Debian:12.5/stable [arm64]) []",
        "Inst bar [2.0] (1.0 local [amd64])",
        "Conf tether-a (1.0 tether-fixture [all])",
        "Remv baz [3.1]",
        "Purg qux [0.1]",
        "The following NEW packages will be installed:",
    ]
    plan = [(c.name, c.architecture, c.action, c.old_version, c.new_version)
            for c in backend.plan_from_simulation(lines)]  # fmt: skip
    assert plan == [
        ("tether-a", "all", "installed", None, "1.0"),
        ("libfoo", "arm64", "upgraded", "1.0-1", "1.0-2"),
        ("bar", "amd64", "downgraded", "2.0", "1.0"),
        ("baz", "", "removed", "3.1", None),
        ("qux", "", "purged", "0.1", None),
    ]


def test_update_results_per_repository_even_when_apt_exits_0() -> None:
    lines = [
        "Hit:1 http://deb.debian.org/debian bookworm InRelease",
        "Get:2 http://deb.debian.org/debian bookworm-updates InRelease [55.4 kB]",
        "Get:3 http://deb.debian.org/debian bookworm-updates/main amd64 Packages [13 kB]",
        "Ign:4 file:/srv/repo ./ InRelease",
        "Get:5 file:/srv/repo ./ Release [1 kB]",
        "Err:6 http://unreachable.invalid/debian stable InRelease",
        "  Temporary failure resolving 'unreachable.invalid'",
        "Reading package lists...",
        "W: Failed to fetch http://unreachable.invalid/debian/dists/stable/InRelease",
        "W: Some index files failed to download. They have been ignored, or old ones used instead.",
    ]
    known = [
        "http://deb.debian.org/debian bookworm",
        "http://deb.debian.org/debian bookworm-updates",
        "file:/srv/repo ./",
        "http://unreachable.invalid/debian stable",
    ]
    repos, warnings = backend.parse_update(lines, known)
    assert {r.repository: (r.status, r.reason) for r in repos} == {
        "http://deb.debian.org/debian bookworm": ("unchanged", None),
        "http://deb.debian.org/debian bookworm-updates": ("fetched", None),
        "file:/srv/repo ./": ("fetched", None),
        "http://unreachable.invalid/debian stable": (
            "failed",
            "Temporary failure resolving 'unreachable.invalid'",
        ),
    }
    assert len(warnings) == 2


@pytest.mark.parametrize(
    ("lines", "error", "check"),
    [
        (["E: Unable to locate package nope"], NotFound, {"packages": ["nope"]}),
        (["E: Version '9' for 'bash' was not found"], NotFound, {"packages": ["bash"]}),
        (
            ["E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 "
             "(unattended-upgr)", "N: Be aware that removing the lock file is not a solution"],
            Locked,
            {"holder": {"lock": "/var/lib/dpkg/lock-frontend", "pid": 4242,
                        "command": "unattended-upgr"}},
        ),
    ],
)  # fmt: skip
def test_apt_errors_are_translated(
    lines: list[str], error: type[TetherError], check: dict[str, Any]
) -> None:
    err = backend.error_from_apt(RunResult(100, lines), "install")
    assert isinstance(err, error)
    assert {k: err.details[k] for k in check} == check
    assert err.details["output_tail"] == lines


def test_lock_holder_is_none_for_an_unlocked_file(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.touch()
    assert backend.lock_holder([lock, tmp_path / "missing"]) is None


def test_lock_holder_names_another_process(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX)\nprint('ok', flush=True)\nsys.stdin.read()\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ok"
        holder = backend.lock_holder([lock])
        assert holder is not None and holder.pid == p.pid
        assert holder.command is not None and "python" in holder.command
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(10)
        if p.stdout is not None:
            p.stdout.close()


# --- handlers reject bad input before anything runs ---------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> AptContext:
    async def emit(_ev: IpcEvent) -> None:
        return None

    settings = AptSettings(
        sources_list=str(tmp_path / "sources.list"),
        sources_dir=str(tmp_path / "d"),
        keyring_dir=str(tmp_path / "k"),
    )
    return AptContext(JobManager("apt", emit), settings)


@pytest.mark.parametrize(
    ("action", "args", "field"),
    [
        ("install", b'{"packages": ["foo; rm -rf /"]}', "packages"),
        ("install", b'{"packages": []}', "packages"),
        ("install", b'{"packages": "bash"}', "packages"),
        ("remove", b'{"packages": ["-o"]}', "packages"),
        ("upgrade", b'{"packages": ["bash"], "full": true}', "full"),
        ("list", b'{"page": 0}', "page"),
        ("list", b'{"filter": "everything"}', "filter"),
        ("list", b'{"page_size": 100000}', "page_size"),
        ("repos/add", b'{"file": "x.list", "uris": ["http://x/d"], "suites": ["s"], '
                      b'"components": ["main"], "key": "junk"}', "key"),
        ("repos/edit", b'{"file": "/etc/apt/sources.list", "index": 0}', "file"),
    ],
)  # fmt: skip
async def test_handlers_reject_bad_arguments(
    ctx: AptContext, action: str, args: bytes, field: str
) -> None:
    if action == "repos/edit":
        ctx.dirs.sources_list = Path("/etc/apt/sources.list")
    with pytest.raises(InvalidRequest) as e:
        await ACTIONS.invoke(ctx, action, args, 5)
    assert e.value.details["field"] == field
    assert ctx.jobs.all() == []


async def test_repos_add_writes_files_tether_owns(ctx: AptContext, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    invoke: Callable[[str, bytes], Awaitable[Any]] = lambda a, b: ACTIONS.invoke(ctx, a, b, 5)  # noqa: E731
    r = await invoke(
        "repos/add",
        b'{"file": "x.list", "uris": ["https://h.example/d"], "suites": ["stable"],'
        b' "components": ["main"], "options": {"arch": ["amd64"]}}',
    )
    assert (r.file, r.index, r.format) == ("x.list", 0, "one-line")
    await invoke("repos/add", b'{"file": "x.list", "uris": ["https://h.example/d"], '
                 b'"suites": ["testing"], "components": ["main"], "enabled": false}')  # fmt: skip
    assert (tmp_path / "d" / "x.list").read_text() == (
        sources.TETHER_HEADER
        + "deb [arch=amd64] https://h.example/d stable main\n"
        + "# deb https://h.example/d testing main\n"
    )
    with pytest.raises(TetherError) as e:
        await invoke("repos/add", b'{"file": "x.list", "uris": ["https://h.example/d"], '
                     b'"suites": ["stable"], "components": ["main"]}')  # fmt: skip
    assert e.value.code == "conflict"
    listed = await invoke("repos/list", b"{}")
    assert [(x.index, x.enabled, x.suites) for x in listed.repos] == [
        (0, True, ["stable"]),
        (1, False, ["testing"]),
    ]
    await invoke("repos/remove", b'{"file": "x.list"}')
    assert not (tmp_path / "d" / "x.list").exists()


# --- the compact candidate table -------------------------------------------------------------


def _dumpavail_text(n: int) -> tuple[bytes, dict[tuple[str, str], tuple[str, str]]]:
    """A synthetic ``apt-cache dumpavail`` output and the (version, summary) it describes."""
    recs: dict[tuple[str, str], tuple[str, str]] = {}
    paras = []
    for i in range(n):
        name = f"pkg{i * 7919 % n:04d}" + ("-dev" if i % 5 == 0 else "")
        arch = "all" if i % 3 == 0 else "amd64"
        summary = f"Tool number {i} für {'Python' if i % 4 == 0 else 'C'} users"
        recs[(name, arch)] = (f"1:{i}.0-{i % 9}", summary)
        paras.append(
            f"Package: {name}\nVersion: 1:{i}.0-{i % 9}\nInstalled-Size: {i}\n"
            f"Architecture: {arch}\nDepends: libc6\nDescription: {summary}\n long text Zzz\n"
        )
    for name, arch in (("two-arch", "i386"), ("two-arch-x", "all"), ("two-arch", "amd64")):
        recs[(name, arch)] = ("2.0", f"{name} on {arch}")
        paras.append(f"Package: {name}\nArchitecture: {arch}\nVersion: 2.0\n"
                     f"Description: {name} on {arch}\n")  # fmt: skip
    paras.append("Package: no-version-here\nArchitecture: all\n")  # not a candidate
    return "\n".join(paras).encode(), recs


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 20])
def test_candidate_table_matches_the_records(chunk: int) -> None:
    import io

    from services.apt.actions import _merged_page
    from services.apt.dumpavail import parse, read, write

    text, recs = _dumpavail_text(700)
    buf = io.BytesIO()
    write(parse(text[i : i + chunk] for i in range(0, len(text), chunk)), buf)
    buf.seek(0)
    cands = backend.Candidates(read(buf))
    keys = sorted(recs)
    assert len(cands) == len(recs) and [cands.key(i) for i in range(len(cands))] == keys
    for i, k in enumerate(keys):
        assert cands.index(k) == i and cands.get(k) == recs[k] and k in cands
    assert cands.get(("pkg0001", "i386")) is None and ("no-version-here", "all") not in cands
    named = [cands.key(i) for i in cands.of_name("two-arch")]
    assert named == [("two-arch", "amd64"), ("two-arch", "i386")]
    for needle in ("python", "für", "zzz", "-dev", "pkg00", "nothing"):
        expected = [i for i, k in enumerate(keys)
                    if needle in k[0] or needle in recs[k][1].casefold()]  # fmt: skip
        assert list(cands.search(needle)) == expected, needle
    extra = [("pkg0000", "i386"), ("aaa", "all"), ("zzz", "all")]
    union = sorted(keys + extra)
    for start in (0, 1, 5, 100, len(union) - 2, len(union)):
        page = _merged_page(cands, range(len(cands)), sorted(extra), start, 50)
        assert [k for k, _ in page] == union[start : start + 50]
        assert all(i == -1 if k in extra else cands.key(i) == k for k, i in page)


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="apt-cache is not installed")
async def test_unreadable_package_lists_are_unavailable(ctx: AptContext, tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("this is not a sources.list line\n")
    with pytest.raises(TetherError) as e:
        await ctx.apt.candidates()
    assert e.value.code == "service_unavailable" and "sources.list" in e.value.message
