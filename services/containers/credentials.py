"""Registry credentials stored on the device by ``login``: one JSON file, mode 0600 in a 0700
directory, replaced atomically. Nothing here ever logs or returns a password."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec

from common.errors import Failed


class Entry(msgspec.Struct):
    username: str
    password: str


class _File(msgspec.Struct):
    registries: dict[str, Entry] = msgspec.field(default_factory=dict)


class CredentialStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _load(self) -> _File:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return _File()
        except OSError as err:
            raise Failed(f"cannot read the stored registry credentials: {err.strerror}") from err
        try:
            return msgspec.json.decode(data, type=_File)
        except msgspec.MsgspecError as err:
            raise Failed(
                f"the stored registry credentials ({self.path}) are corrupt; log in again "
                "after removing the file"
            ) from err

    def _save(self, content: _File) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.encode(content))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)  # whatever the umask
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def get(self, registry: str) -> Entry | None:
        return self._load().registries.get(registry)

    def put(self, registry: str, username: str, password: str) -> None:
        content = self._load()
        content.registries[registry] = Entry(username, password)
        self._save(content)

    def remove(self, registry: str) -> bool:
        content = self._load()
        if content.registries.pop(registry, None) is None:
            return False
        self._save(content)
        return True

    def registries(self) -> list[str]:
        return sorted(self._load().registries)
