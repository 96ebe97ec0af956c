"""The operator side: send commands to devices through the broker and read their replies.

Used by the ``tether`` CLI, the tests and the benchmarks. MQTT 5 clients use Response Topic +
Correlation Data; with ``protocol="3.1.1"`` the reply target travels in the body as
``reply_to`` and replies are matched by ``id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import aiomqtt
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.topics import Topics


class ClientSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "localhost"
    port: int = 8883
    tls: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
    topic_prefix: str = "tether"
    timeout: float = 30.0


def load_client_settings(path: Path) -> ClientSettings:
    return msgspec.toml.decode(path.read_bytes(), type=ClientSettings)


class ClientError(Exception):
    """The client could not get an answer (broker unreachable, timeout)."""


class ClientConfigError(ClientError):
    """The client's own settings are unusable (e.g. a missing CA file)."""


def _tls(s: ClientSettings) -> ssl.SSLContext | None:
    if not s.tls:
        return None
    ctx = ssl.create_default_context(cafile=s.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if s.cert_file and s.key_file:
        ctx.load_cert_chain(s.cert_file, s.key_file)
    return ctx


class TetherClient:
    def __init__(
        self,
        settings: ClientSettings,
        *,
        protocol: Literal["5", "3.1.1"] = "5",
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.v5 = protocol == "5"
        self.client_id = client_id or f"tether-cli-{uuid.uuid4().hex[:10]}"
        self._mqtt: aiomqtt.Client | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._subs: dict[str, list[asyncio.Queue[tuple[str, bytes]]]] = {}
        self._reply_topics: set[str] = set()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TetherClient:
        s = self.settings
        try:
            tls = await asyncio.to_thread(_tls, s)
        except (OSError, ssl.SSLError) as err:
            raise ClientConfigError(
                f"cannot load the TLS files of the client settings: {err}"
            ) from err
        self._mqtt = aiomqtt.Client(
            s.host,
            s.port,
            identifier=self.client_id,
            username=s.username,
            password=s.password,
            tls_context=tls,
            timeout=10,
            protocol=aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311,
        )
        try:
            await self._mqtt.__aenter__()
        except aiomqtt.MqttError as err:
            _close_socket(self._mqtt)
            raise ClientError(f"cannot connect to broker {s.host}:{s.port}: {err}") from err
        # A command must not wait for the TCP ACK of the PUBACK sent before it (Nagle's
        # algorithm meets delayed ACKs: ~40 ms per call on Linux); paho leaves it on.
        with contextlib.suppress(AttributeError, OSError):
            sock: Any = self._mqtt._client.socket()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        if self._mqtt:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._mqtt.__aexit__(et, e, tb)
            _close_socket(self._mqtt)

    @property
    def mqtt(self) -> aiomqtt.Client:
        assert self._mqtt is not None, "use 'async with TetherClient(...)'"
        return self._mqtt

    def topics(self, device: str) -> Topics:
        return Topics(self.settings.topic_prefix, device)

    async def _read(self) -> None:
        async for m in self.mqtt.messages:
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            topic = m.topic.value
            if topic in self._reply_topics:
                key = None
                corr = getattr(m.properties, "CorrelationData", None) if m.properties else None
                if corr:
                    key = corr.decode(errors="replace")
                try:
                    body = msgspec.json.decode(payload)
                except msgspec.DecodeError:
                    continue
                if key is None and isinstance(body, dict):
                    key = body.get("id")
                fut = self._pending.get(key) if isinstance(key, str) else None
                if fut and not fut.done():
                    fut.set_result(body)
            for filt, queues in self._subs.items():
                if aiomqtt.Topic(topic).matches(filt):
                    for q in queues:
                        q.put_nowait((topic, payload))

    async def _ensure_reply_sub(self, device: str) -> str:
        topic = self.topics(device).res("client", self.client_id.replace("-", "_").lower())
        if topic not in self._reply_topics:
            await self.mqtt.subscribe(topic, qos=1)
            self._reply_topics.add(topic)
        return topic

    async def call(
        self,
        device: str,
        service: str,
        action: str,
        args: Any = None,
        *,
        timeout: float | None = None,
        cmd_id: str | None = None,
        raw_payload: bytes | None = None,
        expires_at: float | None = None,
    ) -> dict[str, Any]:
        """Send one command and return the reply body (raises ClientError on no answer)."""
        reply_topic = await self._ensure_reply_sub(device)
        cid = cmd_id or uuid.uuid4().hex
        body: dict[str, Any] = {"id": cid}
        if args is not None:
            body["args"] = args
        if expires_at is not None:
            body["expires_at"] = expires_at
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = reply_topic
            props.CorrelationData = cid.encode()
        else:
            body["reply_to"] = reply_topic
        payload = raw_payload if raw_payload is not None else msgspec.json.encode(body)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[cid] = fut
        try:
            await self.mqtt.publish(
                self.topics(device).cmd(service, action), payload, qos=1, properties=props
            )
            wait = timeout if timeout is not None else self.settings.timeout
            try:
                return await asyncio.wait_for(fut, wait)
            except TimeoutError as err:
                raise ClientError(
                    f"no reply from {device} to {service}/{action} within {wait:.0f}s "
                    "(is the device online?)"
                ) from err
        finally:
            self._pending.pop(cid, None)

    @contextlib.asynccontextmanager
    async def subscribe(self, topic_filter: str) -> AsyncIterator[asyncio.Queue[tuple[str, bytes]]]:
        q: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        first = topic_filter not in self._subs
        self._subs.setdefault(topic_filter, []).append(q)
        if first:
            await self.mqtt.subscribe(topic_filter, qos=1)
        try:
            yield q
        finally:
            self._subs[topic_filter].remove(q)
            if not self._subs[topic_filter]:
                del self._subs[topic_filter]
                with contextlib.suppress(aiomqtt.MqttError):
                    await self.mqtt.unsubscribe(topic_filter)

    async def follow_job(
        self,
        device: str,
        job_id: str,
        timeout: float = 300.0,
        early: asyncio.Queue[tuple[str, bytes]] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield a job's events until its final one (retained, so never missed). ``early`` is
        a queue subscribed to the device's jobs before the job was started, so that its first
        events are not missed either."""
        topic = self.topics(device).job(job_id)
        if early is not None:
            async for ev in self._job_events(early, topic, job_id, timeout):
                yield ev
            return
        async with self.subscribe(topic) as q:
            async for ev in self._job_events(q, topic, job_id, timeout):
                yield ev

    async def _job_events(
        self, q: asyncio.Queue[tuple[str, bytes]], topic: str, job_id: str, timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        last_seq = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientError(f"job {job_id} did not finish within {timeout:.0f}s")
            try:
                t, payload = await asyncio.wait_for(q.get(), left)
            except TimeoutError:
                continue
            if t != topic:
                continue  # another job of the same device
            ev = msgspec.json.decode(payload)
            if not isinstance(ev, dict) or ev.get("seq", 0) <= last_seq:
                continue  # a retained copy of an event already seen
            last_seq = ev["seq"]
            yield ev
            if ev.get("state") in ("succeeded", "failed", "cancelled"):
                return

    async def last_status(self, device: str, wait: float = 1.0) -> dict[str, Any] | None:
        """The device's retained status, or None if the broker has none (never connected)."""
        async with self.subscribe(self.topics(device).status) as q:
            try:
                _, payload = await asyncio.wait_for(q.get(), wait)
            except TimeoutError:
                return None
        body = msgspec.json.decode(payload)
        return body if isinstance(body, dict) else None

    async def wait_status(self, device: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the device's retained status says ``state`` ("online"/"offline")."""
        deadline = time.monotonic() + timeout
        async with self.subscribe(self.topics(device).status) as q:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ClientError(f"{device} did not become {state} within {timeout:.0f}s")
                try:
                    _, payload = await asyncio.wait_for(q.get(), left)
                except TimeoutError:
                    continue
                body = msgspec.json.decode(payload)
                if isinstance(body, dict) and body.get("state") == state:
                    return body


def _close_socket(client: aiomqtt.Client) -> None:
    # When the broker vanishes mid-session, aiomqtt's forced disconnect can leave paho's
    # socket open (a ResourceWarning later); closing it twice is harmless.
    with contextlib.suppress(AttributeError, OSError):
        client._client._sock_close()
