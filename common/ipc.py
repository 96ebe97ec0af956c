"""Local IPC endpoints and codecs, built once.

Every socket is ``ipc://`` inside ``runtime_dir`` (mode 0700, so no other user can connect):

- ``{service}.sock``          ROUTER bound by each worker; the gateway's DEALER connects.
- ``events.sock``             PULL bound by the gateway; workers PUSH job events and telemetry.
- ``{process}.health.sock``   PUB bound by each process; health readers SUB to all of them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import msgspec
import zmq

from common.messages import Heartbeat, IpcEvent, IpcReply, IpcRequest

encoder = msgspec.json.Encoder()
request_decoder = msgspec.json.Decoder(IpcRequest)
reply_decoder = msgspec.json.Decoder(IpcReply)
event_decoder = msgspec.json.Decoder(IpcEvent)
heartbeat_decoder = msgspec.json.Decoder(Heartbeat)

#: Subscription prefix of heartbeats on the health topic: frames are [b"health", beat_json].
HEALTH_TOPIC = b"health"


def ensure_runtime_dir(path: str | os.PathLike[str]) -> Path:
    """Create a private dir (0700), or tighten one that exists. A setgid dir is a shared
    group dir (e.g. /run/tether 2770 root:tether so an unprivileged worker can bind there):
    it keeps its group bits, never others'. A dir owned by someone else is only checked."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = p.stat()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == os.geteuid():
        os.chmod(p, mode & 0o2770 if mode & stat.S_ISGID else 0o700)
    elif mode & 0o007:
        raise PermissionError(f"{p} is reachable by other users: run `chmod o-rwx {p}`")
    return p


def service_endpoint(runtime_dir: str, service: str) -> str:
    return f"ipc://{runtime_dir}/{service}.sock"


def events_endpoint(runtime_dir: str) -> str:
    return f"ipc://{runtime_dir}/events.sock"


def health_endpoint(runtime_dir: str, process: str) -> str:
    return f"ipc://{runtime_dir}/{process}.health.sock"


def tune(sock: Any) -> None:
    """Options every Tether socket shares: never block exit on unsent messages, reconnect
    quickly after a peer restarts (supervisord restarts are sub-second)."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
