"""The on-disk part of the outbox: messages that must survive a link outage or a gateway
restart (replies produced while offline, every job's final event), one small file each under
``{state_dir}/spool``, named by a sequence number so they are published in order."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import msgspec

log = logging.getLogger("tether.gateway.spool")


class SpooledMessage(msgspec.Struct, array_like=True):
    topic: str
    payload: bytes
    qos: int
    retain: bool
    correlation: bytes | None
    #: A job's final state: never dropped when the spool is full.
    final: bool


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(SpooledMessage)


class Spool:
    def __init__(self, directory: str, limit: int = 10000) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.limit = limit
        self._seq = 0
        self._names: list[str] = sorted(p.name for p in self.dir.glob("*.msg"))
        if self._names:
            self._seq = int(self._names[-1].split(".")[0])
        self.dropped = 0

    def load(self) -> list[tuple[str, SpooledMessage]]:
        out = []
        for name in self._names:
            try:
                out.append((name, _dec.decode((self.dir / name).read_bytes())))
            except (OSError, msgspec.MsgspecError):
                log.warning("dropped unreadable spool file %s", name)
                self.remove(name)
        return out

    def add(self, msg: SpooledMessage) -> str:
        self._seq += 1
        name = f"{self._seq:016d}.msg"
        tmp = self.dir / (name + ".tmp")
        tmp.write_bytes(_enc.encode(msg))
        os.replace(tmp, self.dir / name)  # a crash leaves the old file or the new, never half
        self._names.append(name)
        if len(self._names) > self.limit:
            self._evict()
        return name

    def _evict(self) -> None:
        for name in self._names:
            with contextlib.suppress(OSError, msgspec.MsgspecError):
                if not _dec.decode((self.dir / name).read_bytes()).final:
                    self.remove(name)
                    self.dropped += 1
                    return

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / name).unlink()
        with contextlib.suppress(ValueError):
            self._names.remove(name)

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def __len__(self) -> int:
        return len(self._names)
