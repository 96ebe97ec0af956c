"""apt sources files: parse, validate, edit in place, and install signing keys.

Two formats (sources.list(5)): one-line ``.list`` files (``deb [opts] uri suite comps``; a
commented-out entry ``# deb ...`` is a disabled entry) and deb822 ``.sources`` files
(paragraphs of ``Field: value``; ``Enabled: no`` disables). Edits touch only the entry asked
for: other lines, comments and fields this module does not manage are written back verbatim.
Everything here is plain file I/O; callers run it in a thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from common.errors import Conflict, InvalidRequest, NotFound
from services.apt.models import Repo, RepoOptions

TYPES = ("deb", "deb-src")
#: One-line option name -> deb822 field name (sources.list(5)).
OPTION_FIELDS = {
    "arch": "Architectures",
    "lang": "Languages",
    "target": "Targets",
    "pdiffs": "PDiffs",
    "by-hash": "By-Hash",
    "allow-insecure": "Allow-Insecure",
    "allow-weak": "Allow-Weak",
    "allow-downgrade-to-insecure": "Allow-Downgrade-To-Insecure",
    "trusted": "Trusted",
    "signed-by": "Signed-By",
    "check-valid-until": "Check-Valid-Until",
    "valid-until-min": "Valid-Until-Min",
    "valid-until-max": "Valid-Until-Max",
    "check-date": "Check-Date",
    "date-max-future": "Date-Max-Future",
    "inrelease-path": "InRelease-Path",
    "snapshot": "Snapshot",
}
FIELD_OPTIONS = {v.lower(): k for k, v in OPTION_FIELDS.items()}
LIST_OPTIONS = {"arch", "lang", "target"}
CORE_FIELDS = ("types", "uris", "suites", "components", "enabled")

_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\.(list|sources)$")
_SUITE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._~+/$()-]{0,99}|\./?|[A-Za-z0-9._~+/-]*/)$")
_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+/-]{0,99}$")
_OPTION_VALUE = re.compile(r"^[A-Za-z0-9._:/+=@~-]{1,500}$")
_URI_SCHEMES = {
    "http", "https", "file", "cdrom", "copy", "mirror", "mirror+http", "mirror+https",
    "mirror+file", "tor+http", "tor+https",
}  # fmt: skip
_ONE_LINE = re.compile(
    r"^(?P<dis>\s*#\s*)?\s*(?P<type>deb|deb-src)\s+(?:\[(?P<opts>[^\]]*)\]\s+)?"
    r"(?P<uri>[A-Za-z][A-Za-z0-9+.-]*:\S*)\s+(?P<suite>[^\s#]+)(?P<comps>(?:[ \t]+[^\s#]+)*)"
    r"\s*(?P<comment>#.*)?$"
)
TETHER_HEADER = "# Written by Tether (apt service); entries may be edited by hand.\n"


# --- validation --------------------------------------------------------------------------


def check_file_name(name: str, field_name: str = "file") -> str:
    if not isinstance(name, str) or not _FILE.fullmatch(name) or ".." in name:
        raise InvalidRequest(
            f"{field_name}: {name!r} is not a sources file name; use letters, digits, '_', '.'"
            " and '-', ending in .list (one-line) or .sources (deb822), no directories",
            {"field": field_name, "value": name},
        )
    return name


def check_uri(uri: str) -> str:
    bad = InvalidRequest(
        f"uris: {uri!r} is not a repository URI (e.g. http://deb.debian.org/debian or "
        "file:/srv/repo)",
        {"field": "uris", "value": uri},
    )
    if not uri or len(uri) > 1000 or any(c.isspace() or ord(c) < 32 for c in uri):
        raise bad
    if any(c in uri for c in "[]#\"'\\`$;"):
        raise bad
    try:
        parts = urlsplit(uri)
    except ValueError as err:
        raise bad from err
    if parts.scheme not in _URI_SCHEMES:
        raise bad
    if parts.scheme in ("http", "https", "tor+http", "tor+https") and not parts.hostname:
        raise bad
    if parts.scheme in ("file", "copy") and not parts.path.startswith("/"):
        raise bad
    return uri


def check_entry(
    types: list[str], uris: list[str], suites: list[str], components: list[str]
) -> None:
    for t in types:
        if t not in TYPES:
            raise InvalidRequest(
                f"types: {t!r} is not deb or deb-src", {"field": "types", "value": t}
            )
    if not types or not uris or not suites:
        raise InvalidRequest("an entry needs types, uris and suites", {"field": "suites"})
    for u in uris:
        check_uri(u)
    for s in suites:
        if not _SUITE.fullmatch(s) or ".." in s.replace("./", "", 1):
            raise InvalidRequest(
                f"suites: {s!r} is not a suite (e.g. bookworm, stable, or ./ for a flat repo)",
                {"field": "suites", "value": s},
            )
    for c in components:
        if not _COMPONENT.fullmatch(c) or ".." in c:
            raise InvalidRequest(
                f"components: {c!r} is not a component (e.g. main)",
                {"field": "components", "value": c},
            )
    flat = [s for s in suites if s.endswith("/")]
    if flat and components:
        raise InvalidRequest(
            "components must be empty when a suite is an exact path ending in '/'",
            {"field": "components", "value": components},
        )
    if not flat and not components:
        raise InvalidRequest(
            "components: at least one is needed (e.g. main) unless the suite ends in '/'",
            {"field": "components", "value": components},
        )


def check_options(options: RepoOptions) -> RepoOptions:
    out: RepoOptions = {}
    for key, value in options.items():
        if key not in OPTION_FIELDS:
            raise InvalidRequest(
                f"options: unknown option {key!r}; known: {', '.join(OPTION_FIELDS)}",
                {"field": "options", "value": key},
            )
        values = value if isinstance(value, list) else [value]
        if not values:
            raise InvalidRequest(f"options.{key}: empty", {"field": f"options.{key}"})
        for v in values:
            if not isinstance(v, str) or not _OPTION_VALUE.fullmatch(v):
                raise InvalidRequest(
                    f"options.{key}: {v!r} is not an allowed value",
                    {"field": f"options.{key}", "value": v},
                )
        if key in LIST_OPTIONS:
            out[key] = list(values)
        else:
            if len(values) != 1:
                raise InvalidRequest(
                    f"options.{key} takes one value", {"field": f"options.{key}", "value": value}
                )
            out[key] = values[0]
    return out


# --- the in-memory model of one file -----------------------------------------------------


@dataclass
class Entry:
    enabled: bool
    types: list[str]
    uris: list[str]
    suites: list[str]
    components: list[str]
    options: RepoOptions = field(default_factory=dict)


@dataclass
class _Field:
    key: str
    lines: list[str]  # the "Key: value" line and its continuation lines, verbatim

    @property
    def value(self) -> str:
        first = self.lines[0].split(":", 1)[1].strip()
        rest = [ln.strip() for ln in self.lines[1:]]
        return "\n".join([first, *rest]).strip()


@dataclass
class _Paragraph:
    items: list[_Field | str]  # fields, and comment lines kept in place

    def fields(self) -> dict[str, str]:
        return {i.key.lower(): i.value for i in self.items if isinstance(i, _Field)}


class SourcesFile:
    """One sources file: its text, split so that an edit rewrites one entry only."""

    def __init__(self, name: str, text: str, deb822: bool) -> None:
        self.name = name
        self.deb822 = deb822
        # one-line: the file's lines; deb822: blocks (paragraphs, or runs of other lines)
        self.lines: list[str] = []
        self.blocks: list[_Paragraph | list[str]] = []
        self.entries: list[Entry] = []
        self._where: list[int] = []  # entry -> line number / block number
        if deb822:
            self._parse_deb822(text)
        else:
            self._parse_one_line(text)

    # one-line ----------------------------------------------------------------------------

    def _parse_one_line(self, text: str) -> None:
        self.lines = text.splitlines(keepends=True)
        for n, line in enumerate(self.lines):
            entry = parse_one_line(line)
            if entry is not None:
                self.entries.append(entry)
                self._where.append(n)

    # deb822 ------------------------------------------------------------------------------

    def _parse_deb822(self, text: str) -> None:
        group: list[str] = []
        groups: list[list[str]] = []
        for line in text.splitlines(keepends=True):
            if line.strip() == "":
                if group:
                    groups.append(group)
                    group = []
                groups.append([line])
            else:
                group.append(line)
        if group:
            groups.append(group)
        for g in groups:
            if g[0].strip() == "" or all(ln.lstrip().startswith("#") for ln in g):
                self.blocks.append(g)
                continue
            para = _Paragraph([])
            for ln in g:
                if ln.startswith("#"):
                    para.items.append(ln)
                elif ln[:1] in (" ", "\t"):
                    last = para.items[-1] if para.items else None
                    if not isinstance(last, _Field):
                        raise ValueError(f"continuation line without a field: {ln.strip()!r}")
                    last.lines.append(ln)
                elif ":" in ln:
                    para.items.append(_Field(ln.split(":", 1)[0].strip(), [ln]))
                else:
                    raise ValueError(f"not a 'Field: value' line: {ln.strip()!r}")
            self.blocks.append(para)
            self.entries.append(_entry_from_fields(para.fields()))
            self._where.append(len(self.blocks) - 1)

    # edits -------------------------------------------------------------------------------

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self.entries):
            raise NotFound(
                f"{self.name} has no entry {index} (it has {len(self.entries)})",
                {"field": "index", "value": index},
            )

    def add(self, entry: Entry) -> int:
        if self.deb822:
            if self.blocks and not _ends_blank(self.blocks[-1]):
                self.blocks.append(["\n"])
            self.blocks.append(_Paragraph(_render_fields(entry)))
            self._where.append(len(self.blocks) - 1)
        else:
            if self.lines and not self.lines[-1].endswith("\n"):
                self.lines[-1] += "\n"
            self.lines.append(render_one_line(entry) + "\n")
            self._where.append(len(self.lines) - 1)
        self.entries.append(entry)
        return len(self.entries) - 1

    def replace(self, index: int, entry: Entry, options_changed: bool) -> None:
        self._check_index(index)
        where = self._where[index]
        if self.deb822:
            para = self.blocks[where]
            assert isinstance(para, _Paragraph)
            _update_paragraph(para, entry, options_changed)
        else:
            old = self.lines[where]
            m = _ONE_LINE.match(old.rstrip("\n"))
            tail = f" {m.group('comment')}" if m and m.group("comment") else ""
            self.lines[where] = render_one_line(entry) + tail + "\n"
        self.entries[index] = entry

    def remove(self, index: int) -> None:
        self._check_index(index)
        where = self._where[index]
        if self.deb822:
            self.blocks[where] = []
            # drop one blank separator after it so paragraphs don't drift apart
            if where + 1 < len(self.blocks):
                nxt = self.blocks[where + 1]
                if isinstance(nxt, list) and nxt and nxt[0].strip() == "":
                    self.blocks[where + 1] = []
        else:
            self.lines[where] = ""
        del self.entries[index]
        del self._where[index]

    def text(self) -> str:
        if not self.deb822:
            return "".join(self.lines)
        out: list[str] = []
        for b in self.blocks:
            if isinstance(b, _Paragraph):
                for item in b.items:
                    out.extend([item] if isinstance(item, str) else item.lines)
            else:
                out.extend(b)
        return "".join(out).lstrip("\n")


def _ends_blank(block: _Paragraph | list[str]) -> bool:
    return isinstance(block, list) and bool(block) and block[-1].strip() == ""


def parse_one_line(line: str) -> Entry | None:
    m = _ONE_LINE.match(line.rstrip("\n"))
    if m is None:
        return None
    options: RepoOptions = {}
    for opt in (m.group("opts") or "").split():
        key, _, value = opt.partition("=")
        options[key] = value.split(",") if key.rstrip("+-") in LIST_OPTIONS else value
    return Entry(
        enabled=m.group("dis") is None,
        types=[m.group("type")],
        uris=[m.group("uri")],
        suites=[m.group("suite")],
        components=m.group("comps").split(),
        options=options,
    )


def render_one_line(e: Entry) -> str:
    if len(e.types) != 1 or len(e.uris) != 1 or len(e.suites) != 1:
        raise InvalidRequest(
            "a one-line (.list) entry has exactly one type, URI and suite; use a .sources "
            "file for several",
            {"field": "types"},
        )
    opts = " ".join(
        f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in e.options.items()
    )
    parts = [e.types[0], f"[{opts}]" if opts else "", e.uris[0], e.suites[0], *e.components]
    line = " ".join(p for p in parts if p)
    return line if e.enabled else f"# {line}"


def _entry_from_fields(f: dict[str, str]) -> Entry:
    options: RepoOptions = {}
    for fname, value in f.items():
        opt = FIELD_OPTIONS.get(fname)
        if opt is not None:
            options[opt] = value.split() if opt in LIST_OPTIONS else value
    return Entry(
        enabled=f.get("enabled", "yes").strip().lower() != "no",
        types=f.get("types", "").split(),
        uris=f.get("uris", "").split(),
        suites=f.get("suites", "").split(),
        components=f.get("components", "").split(),
        options=options,
    )


def _field_values(e: Entry, with_options: bool) -> dict[str, str | None]:
    """deb822 field name -> rendered value (None removes the field)."""
    values: dict[str, str | None] = {
        "Types": " ".join(e.types),
        "URIs": " ".join(e.uris),
        "Suites": " ".join(e.suites),
        "Components": " ".join(e.components) or None,
        "Enabled": None if e.enabled else "no",
    }
    if with_options:
        for opt, fname in OPTION_FIELDS.items():
            v = e.options.get(opt)
            values[fname] = None if v is None else (" ".join(v) if isinstance(v, list) else v)
    return values


def _field_lines(name: str, value: str) -> list[str]:
    first, *rest = value.split("\n")
    return [f"{name}: {first}\n", *[f" {ln if ln.strip() else '.'}\n" for ln in rest]]


def _render_fields(e: Entry) -> list[_Field | str]:
    return [
        _Field(k, _field_lines(k, v)) for k, v in _field_values(e, True).items() if v is not None
    ]


def _update_paragraph(para: _Paragraph, e: Entry, with_options: bool) -> None:
    values = _field_values(e, with_options)
    by_lower = {k.lower(): k for k in values}
    done: set[str] = set()
    items: list[_Field | str] = []
    for item in para.items:
        if isinstance(item, _Field) and item.key.lower() in by_lower:
            name = by_lower[item.key.lower()]
            v = values[name]
            if name in done or v is None:
                continue
            done.add(name)
            if v != item.value:
                item = _Field(item.key, _field_lines(item.key, v))
        items.append(item)
    for name, v in values.items():
        if name not in done and v is not None:
            items.append(_Field(name, _field_lines(name, v)))
    para.items = items


# --- the directory -----------------------------------------------------------------------


@dataclass
class SourcesDirs:
    sources_list: Path
    sources_dir: Path
    keyring_dir: Path

    def path_of(self, file: str) -> Path:
        """sources.list is named by its full path; files in sources.list.d by their name."""
        if file == str(self.sources_list):
            return self.sources_list
        return self.sources_dir / check_file_name(file)

    def check_writable(self, file: str) -> str:
        if file == str(self.sources_list):
            raise InvalidRequest(
                f"{file} is read-only in Tether; add or edit entries in sources.list.d files",
                {"field": "file", "value": file},
            )
        return check_file_name(file)

    def load(self, file: str) -> SourcesFile:
        path = self.path_of(file)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as err:
            raise NotFound(f"no sources file {file!r}", {"field": "file", "value": file}) from err
        try:
            return SourcesFile(file, text, file.endswith(".sources"))
        except ValueError as err:
            raise InvalidRequest(
                f"{file} is not a valid deb822 file ({err}); fix it by hand first",
                {"field": "file", "value": file},
            ) from err

    def list(self) -> tuple[list[Repo], dict[str, str]]:
        repos: list[Repo] = []
        errors: dict[str, str] = {}
        files: list[tuple[str, Path, bool]] = []
        if self.sources_list.exists():
            files.append((str(self.sources_list), self.sources_list, True))
        if self.sources_dir.is_dir():
            for p in sorted(self.sources_dir.iterdir()):
                if _FILE.fullmatch(p.name) and p.is_file():
                    files.append((p.name, p, False))
        for name, path, readonly in files:
            try:
                sf = SourcesFile(name, path.read_text(encoding="utf-8"), name.endswith(".sources"))
            except (OSError, ValueError, UnicodeDecodeError) as err:
                errors[name] = str(err)
                continue
            for i, e in enumerate(sf.entries):
                repos.append(to_repo(name, i, sf.deb822, e, readonly))
        return repos, errors

    def write(self, file: str, text: str) -> None:
        path = self.path_of(file)
        if path == self.sources_list:
            raise InvalidRequest(
                f"{file} is read-only in Tether; add entries to files in sources.list.d",
                {"field": "file", "value": file},
            )
        if not text.strip() or text.strip() == TETHER_HEADER.strip():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        atomic_write(path, text.encode(), 0o644)

    def add(self, file: str, entry: Entry) -> Repo:
        path = self.path_of(file)
        if path.exists():
            sf = self.load(file)
            for e in sf.entries:
                if (e.types, e.uris, e.suites, e.components) == (
                    entry.types, entry.uris, entry.suites, entry.components,
                ):  # fmt: skip
                    raise Conflict(
                        f"{file} already has an entry for {' '.join(entry.uris)}",
                        {"field": "uris", "value": entry.uris},
                    )
        else:
            sf = SourcesFile(file, TETHER_HEADER, file.endswith(".sources"))
        index = sf.add(entry)
        self.write(file, sf.text())
        return to_repo(file, index, sf.deb822, entry, False)

    def delete(self, file: str) -> None:
        """Delete a whole sources file, and the keyring Tether wrote for it."""
        path = self.path_of(file)
        if path == self.sources_list:
            raise InvalidRequest(f"{file} is read-only in Tether", {"field": "file", "value": file})
        try:
            path.unlink()
        except FileNotFoundError as err:
            raise NotFound(f"no sources file {file!r}", {"field": "file", "value": file}) from err
        with contextlib.suppress(FileNotFoundError):
            self.keyring_path(file).unlink()

    def keyring_path(self, file: str) -> Path:
        return self.keyring_dir / f"tether-{file.rsplit('.', 1)[0]}.gpg"

    def install_key(self, file: str, armored: str) -> Path:
        data = dearmor_public_key(armored)
        path = self.keyring_path(file)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        atomic_write(path, data, 0o644)
        return path


def to_repo(file: str, index: int, deb822: bool, e: Entry, readonly: bool = False) -> Repo:
    return Repo(
        file=file,
        index=index,
        format="deb822" if deb822 else "one-line",
        enabled=e.enabled,
        types=e.types,
        uris=e.uris,
        suites=e.suites,
        components=e.components,
        options=e.options,
        readonly=readonly,
    )


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file in the same directory and rename: never a half file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --- OpenPGP armor -----------------------------------------------------------------------


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor_public_key(text: str) -> bytes:
    """The binary keyring for an ASCII-armored public key block (RFC 4880 section 6),
    checked: armor lines, base64, the CRC24 when present, and a public-key first packet."""
    bad = "key: not an ASCII-armored OpenPGP public key block (gpg --armor --export)"
    lines = [ln.strip() for ln in text.strip().splitlines()]
    try:
        start = lines.index("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        end = lines.index("-----END PGP PUBLIC KEY BLOCK-----", start)
    except ValueError as err:
        raise InvalidRequest(bad, {"field": "key"}) from err
    body = lines[start + 1 : end]
    if "" in body:  # armor headers (Version: ...) end at the first blank line
        body = body[body.index("") + 1 :]
    crc = None
    if body and body[-1].startswith("=") and len(body[-1]) == 5:
        crc = body.pop()
    try:
        data = base64.b64decode("".join(body), validate=True)
        if crc is not None and int.from_bytes(base64.b64decode(crc[1:]), "big") != _crc24(data):
            raise InvalidRequest(f"{bad}: checksum mismatch", {"field": "key"})
    except (binascii.Error, ValueError) as err:
        raise InvalidRequest(f"{bad}: bad base64", {"field": "key"}) from err
    if not data or not data[0] & 0x80:
        raise InvalidRequest(bad, {"field": "key"})
    tag = data[0] & 0x3F if data[0] & 0x40 else (data[0] >> 2) & 0x0F
    if tag != 6:
        raise InvalidRequest(f"{bad}: it holds no public key packet", {"field": "key"})
    return data
