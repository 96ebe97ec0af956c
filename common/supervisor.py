"""supervisord's XML-RPC interface over its unix socket, for the gateway (agent/* actions) and
the watchdog. xmlrpc is blocking, so every call runs in a thread with a fresh proxy (proxies
are not thread-safe); faults become our errors here, once."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import xmlrpc.client
from typing import Any

import msgspec

from common.errors import Conflict, Failed, NotFound, ServiceUnavailable

# supervisord's fault codes (supervisor.xmlrpc.Faults). Importing that module would cost each
# process that talks to supervisord ~3 MB of private memory (127 modules) for four numbers.
BAD_NAME = 10
NO_FILE = 20
ALREADY_STARTED = 60
NOT_RUNNING = 70


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")  # the Host header; the socket is ``path``
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over supervisord's unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = self._connection[1]
        if conn is None:
            conn = _UnixConnection(self._path)
            self._connection = (host, conn)
        return conn


class ProcessInfo(msgspec.Struct):
    name: str
    #: RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL, STOPPING or UNKNOWN
    state: str = msgspec.field(name="statename")
    pid: int
    start: float
    stop: float
    now: float
    exitstatus: int
    spawnerr: str
    description: str

    @property
    def uptime(self) -> float:
        return max(0.0, self.now - self.start) if self.state == "RUNNING" else 0.0


_info_type = list[ProcessInfo]


class SupervisorClient:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    def _proxy(self) -> Any:
        transport = _UnixTransport(self.socket_path)
        return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=transport)

    def _call_sync(self, method: str, *args: Any) -> Any:
        proxy = self._proxy()
        try:
            return getattr(proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as err:
            name = args[0] if args else ""
            if err.faultCode == BAD_NAME:
                raise NotFound(f"no process {name!r} under supervisord", {"service": name}) from err
            if err.faultCode == ALREADY_STARTED:
                raise Conflict(f"{name} is already running", {"service": name}) from err
            if err.faultCode == NOT_RUNNING:
                raise Conflict(f"{name} is not running", {"service": name}) from err
            if err.faultCode == NO_FILE:
                raise NotFound(f"{name} has no log file yet", {"service": name}) from err
            raise Failed(f"supervisord: {err.faultString}", {"service": name}) from err
        except OSError as err:
            raise ServiceUnavailable(
                f"supervisord is not reachable at {self.socket_path}: {err.strerror or err}",
            ) from err
        finally:
            proxy("close")()

    async def call(self, method: str, *args: Any) -> Any:
        return await asyncio.to_thread(self._call_sync, method, *args)

    async def all_info(self) -> list[ProcessInfo]:
        raw = await self.call("getAllProcessInfo")
        return msgspec.convert(raw, _info_type, strict=False)

    async def info(self, name: str) -> ProcessInfo:
        return msgspec.convert(await self.call("getProcessInfo", name), ProcessInfo, strict=False)

    async def start(self, name: str) -> None:
        await self.call("startProcess", name, True)

    async def stop(self, name: str) -> None:
        await self.call("stopProcess", name, True)

    async def restart(self, name: str) -> None:
        with contextlib.suppress(Conflict):  # not running: just start it
            await self.stop(name)
        await self.start(name)

    async def signal(self, name: str, sig: str) -> None:
        await self.call("signalProcess", name, sig)

    async def tail(self, name: str, nbytes: int) -> str:
        text, _offset, _overflow = await self.call("tailProcessStdoutLog", name, 0, nbytes)
        return str(text)
