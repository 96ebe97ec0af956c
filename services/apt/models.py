"""Argument and result types of the apt service.

Package specs are ``name``, ``name=version`` or ``name:arch`` (Debian policy names, lowercase);
they are validated in :mod:`services.apt.backend` before apt ever sees them.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

PackageStatus = Literal[
    "installed", "upgradable", "not-installed", "config-files", "half-installed"
]
Specs = Annotated[list[str], Meta(min_length=1, max_length=200)]


class ListArgs(Struct):
    #: ``installed`` (default), ``upgradable``, or ``all`` known packages.
    filter: Literal["installed", "upgradable", "all"] = "installed"
    #: Case-insensitive substring matched against name and summary.
    search: Annotated[str, Meta(max_length=200)] | None = None
    page: Annotated[int, Meta(ge=1)] = 1
    page_size: Annotated[int, Meta(ge=1, le=1000)] = 100


class Package(Struct, omit_defaults=True):
    name: str
    architecture: str
    status: PackageStatus
    #: Installed version (None when not installed).
    version: str | None = None
    #: apt's candidate version (None when no repository offers the package).
    candidate: str | None = None
    summary: str = ""
    held: bool = False


class PackageList(Struct):
    packages: list[Package]
    total: int
    page: int
    page_size: int
    pages: int


class GetArgs(Struct):
    #: Package names (optionally ``name:arch``).
    names: Specs


class PackageInfo(Struct, omit_defaults=True):
    name: str
    architecture: str
    status: PackageStatus
    installed_version: str | None = None
    candidate_version: str | None = None
    summary: str = ""
    section: str | None = None
    #: Installed size in KiB (of the installed version, else of the candidate).
    installed_size: int | None = None
    #: Download size in bytes of the candidate version.
    download_size: int | None = None
    depends: list[str] = msgspec.field(default_factory=list)
    pre_depends: list[str] = msgspec.field(default_factory=list)
    held: bool = False


class GetResult(Struct):
    packages: list[PackageInfo]


class InstallArgs(Struct):
    packages: Specs
    #: Report what would change without changing anything.
    dry_run: bool = False


class RemoveArgs(Struct):
    packages: Specs
    #: Also delete configuration files (``apt-get purge``).
    purge: bool = False
    dry_run: bool = False


class UpgradeArgs(Struct):
    #: Packages to upgrade; empty means every upgradable package.
    packages: Annotated[list[str], Meta(max_length=200)] = msgspec.field(default_factory=list)
    #: With no packages: allow installing new and removing packages (``dist-upgrade``).
    full: bool = False
    dry_run: bool = False


class Change(Struct, omit_defaults=True):
    name: str
    architecture: str
    #: installed, upgraded, downgraded, reinstalled, removed, purged or configured.
    action: str
    old_version: str | None = None
    new_version: str | None = None


class ChangeResult(Struct):
    """What a package job changed (or, with ``dry_run``, would change)."""

    dry_run: bool
    changes: list[Change]


class HoldArgs(Struct):
    packages: Specs


class HoldResult(Struct):
    #: Packages whose hold state this call changed.
    changed: list[str]
    #: Every held package after the call.
    held: list[str]


class RepoFetch(Struct, omit_defaults=True):
    """One repository index (``uri suite``) as apt-get update saw it."""

    repository: str
    #: fetched (new data), unchanged (hit), ignored, or failed.
    status: Literal["fetched", "unchanged", "ignored", "failed"]
    reason: str | None = None


class UpdateResult(Struct):
    ok: bool
    repositories: list[RepoFetch]
    warnings: list[str]


# --- repositories ------------------------------------------------------------------------

RepoOptions = dict[str, str | list[str]]


class Repo(Struct, omit_defaults=True):
    """One entry of a sources file, in either format."""

    file: str
    #: Entry number within its file, from 0; with ``file`` it names the entry.
    index: int
    format: Literal["one-line", "deb822"]
    enabled: bool
    types: list[str]
    uris: list[str]
    suites: list[str]
    components: list[str] = msgspec.field(default_factory=list)
    #: One-line option names: arch, signed-by, trusted, lang, target, ...
    options: RepoOptions = msgspec.field(default_factory=dict)
    #: True for /etc/apt/sources.list, which Tether only reads.
    readonly: bool = False


class RepoList(Struct):
    repos: list[Repo]
    #: Files that could not be parsed, with the reason (their entries are not listed).
    errors: dict[str, str] = msgspec.field(default_factory=dict)


class RepoAddArgs(Struct):
    #: File name in sources.list.d: ``<name>.sources`` (deb822) or ``<name>.list`` (one-line).
    #: An existing file gets the entry appended; the rest of it is kept as it was.
    file: str
    uris: Annotated[list[str], Meta(min_length=1, max_length=16)]
    suites: Annotated[list[str], Meta(min_length=1, max_length=16)]
    components: Annotated[list[str], Meta(max_length=64)] = msgspec.field(default_factory=list)
    types: Annotated[list[str], Meta(min_length=1, max_length=2)] = msgspec.field(
        default_factory=lambda: ["deb"]
    )
    options: RepoOptions = msgspec.field(default_factory=dict)
    enabled: bool = True
    #: An ASCII-armored public key: written to the keyring dir and set as ``signed-by``.
    key: Annotated[str, Meta(max_length=256 * 1024)] | None = None


class RepoRef(Struct):
    file: str
    #: The entry to remove; omitted, the whole file goes (and the keyring Tether wrote for it).
    index: int | None = None


class RepoEditArgs(Struct):
    file: str
    index: Annotated[int, Meta(ge=0)]
    enabled: bool | None = None
    types: list[str] | None = None
    uris: list[str] | None = None
    suites: list[str] | None = None
    components: list[str] | None = None
    #: Replaces the entry's options when given (an empty object clears them).
    options: RepoOptions | None = None
