"""Reads ``apt-cache dumpavail`` into the compact candidate table, in a helper process.

``python -I -S dumpavail.py apt-cache [options] dumpavail`` runs the given apt-cache command
and writes the table :class:`services.apt.backend.Candidates` is made of to its stdout. The
apt worker starts it instead of parsing apt-cache's output itself: that output is tens of MB,
and parsing it in the long-running worker left it holding ~10 MB of freed but fragmented heap
for good. Here that heap dies with the helper; the worker only reads the ~4 MB result.
Standard library only (the helper starts in ~20 ms without site-packages).

Table: records sorted by (name, architecture), one per package and architecture.

- ``lines``: one bytes object of ``name\\tarch\\tversion\\n`` lines;
- ``starts``: ``array("I")`` of the offset of every line, plus one past the end;
- ``blocks``: the ``name\\tsummary`` lines of :data:`SUMMARY_BLOCK` records each,
  newline-joined and zlib-compressed.

Output: ``<III`` (length of lines, length of starts' bytes, number of blocks), lines, starts'
bytes, then per block ``<I`` length and data. Exit status: apt-cache's (its stderr passes
through), or 127 when it cannot be started.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator
from typing import IO, TypeAlias

#: Records per zlib-compressed block of ``name\tsummary`` lines.
SUMMARY_BLOCK = 256
HEADER = struct.Struct("<III")
LENGTH = struct.Struct("<I")

Table: TypeAlias = "tuple[bytes, array[int], list[bytes]]"


def _field(para: bytes, tag: bytes) -> bytes:
    i = para.find(tag)
    if i < 0:
        return b""
    i += len(tag)
    j = para.find(b"\n", i)
    return para[i : j if j >= 0 else len(para)].strip()


def _paragraphs(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The blank-line separated paragraphs of a stream, each with a leading newline."""
    rest = b""
    for chunk in chunks:
        buf = rest + chunk if rest else chunk
        end = buf.rfind(b"\n\n")
        if end < 0:
            rest = buf
            continue
        for para in buf[:end].split(b"\n\n"):
            yield b"\n" + para
        rest = buf[end + 2 :]
    if rest.strip():
        yield b"\n" + rest


def parse(chunks: Iterable[bytes]) -> Table:
    """The table of a ``dumpavail`` stream (one record per package: apt's candidate),
    parsed as it comes; fields are found with bytes.find, not line by line."""
    recs: list[tuple[bytes, bytes]] = []
    for para in _paragraphs(chunks):
        name = _field(para, b"\nPackage: ")
        version = _field(para, b"\nVersion: ")
        if name and version and b"\t" not in name + version:
            arch = _field(para, b"\nArchitecture: ").replace(b"\t", b" ")
            summary = _field(para, b"\nDescription: ")
            recs.append((b"%s\t%s\t%s" % (name, arch, version), b"%s\t%s" % (name, summary)))
    recs.sort()  # "\t" sorts before any character of a name: this is (name, arch) order
    lines: list[bytes] = []
    summaries: list[bytes] = []
    starts = array("I", [0])
    pos, last = 0, b""
    for line, summary in recs:
        key = line[: line.rfind(b"\t") + 1]
        if key == last:  # one record per package and architecture; keep the first
            continue
        last = key
        lines.append(line)
        summaries.append(summary)
        pos += len(line) + 1
        starts.append(pos)
    blocks = [
        zlib.compress(b"\n".join(summaries[i : i + SUMMARY_BLOCK]), 6)
        for i in range(0, len(summaries), SUMMARY_BLOCK)
    ]
    return b"".join(line + b"\n" for line in lines), starts, blocks


def write(table: Table, out: IO[bytes]) -> None:
    lines, starts, blocks = table
    raw = starts.tobytes()
    out.write(HEADER.pack(len(lines), len(raw), len(blocks)))
    out.write(lines)
    out.write(raw)
    for b in blocks:
        out.write(LENGTH.pack(len(b)) + b)


def _exact(src: IO[bytes], n: int) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise EOFError("the candidate table ended early")
    return data


def read(src: IO[bytes]) -> Table:
    """The table :func:`write` wrote (each part read straight into its final object)."""
    n_lines, n_starts, n_blocks = HEADER.unpack(_exact(src, HEADER.size))
    lines = _exact(src, n_lines)
    starts = array("I")
    starts.frombytes(_exact(src, n_starts))
    blocks = [_exact(src, LENGTH.unpack(_exact(src, LENGTH.size))[0]) for _ in range(n_blocks)]
    return lines, starts, blocks


def main(argv: list[str]) -> int:
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    except OSError as err:
        print(f"cannot run {argv[0]}: {err.strerror}", file=sys.stderr)
        return 127
    with proc:
        assert proc.stdout is not None
        read_chunk = proc.stdout.read
        table = parse(iter(lambda: read_chunk(1 << 16), b""))
    if proc.returncode != 0:
        return proc.returncode if proc.returncode > 0 else 1
    write(table, sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
