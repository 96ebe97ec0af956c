"""The one MQTT connection (the only module that imports aiomqtt).

Keeps the link up forever: MQTT 5 (or 3.1.1 when the broker refuses 5), TLS verified against
the configured CA, a persistent session so QoS 1 commands sent while the device was offline are
delivered on return, a retained online status with a Last Will that marks it offline, and
reconnects with exponential backoff and jitter. Outgoing messages go through an outbox so a
publisher never waits for the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common import __version__
from common.config import MqttSettings
from common.ipc import encoder
from common.messages import API_VERSION
from common.topics import Topics
from services.gateway.spool import Spool, SpooledMessage

log = logging.getLogger("tether.gateway.mqtt")

# CONNACK codes meaning "I do not speak MQTT 5": 3.1.1's 1 and MQTT 5's 0x84.
_UNSUPPORTED_PROTOCOL = {1, 0x84}

#: Publishes waiting for their PUBACK at once (paho caps it further, at its max_inflight).
SEND_WINDOW = 32


@dataclass(slots=True)
class Incoming:
    """An inbound MQTT message, reduced to what the router needs (no aiomqtt types leak)."""

    topic: str
    payload: bytes
    response_topic: str | None
    correlation: bytes | None


@dataclass(slots=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    correlation: bytes | None = None
    #: Telemetry may be dropped when the outbox is full; replies and job events never.
    droppable: bool = False
    #: A job's final event: written to the spool even while the link is up.
    final: bool = False
    #: Name of this message's spool file, when it has one.
    spool: str | None = None


def build_tls_context(m: MqttSettings) -> ssl.SSLContext | None:
    if not m.tls:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=m.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if m.cert_file and m.key_file:
        ctx.load_cert_chain(m.cert_file, m.key_file)
    return ctx


def status_payload(state: str) -> bytes:
    return encoder.encode(
        {"state": state, "ts": time.time(), "version": __version__, "api_version": API_VERSION}
    )


class Outbox:
    """Bounded FIFO of messages waiting for the link. When full, the oldest droppable message
    (telemetry) goes first; if none is droppable the bound stretches rather than lose a reply."""

    def __init__(self, limit: int = 10000) -> None:
        self.limit = limit
        self._items: list[Outgoing] = []
        #: Taken for sending, not yet acknowledged by the broker; in sending order.
        self._in_flight: list[Outgoing] = []
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, msg: Outgoing) -> None:
        if len(self._items) >= self.limit:
            for i, old in enumerate(self._items):
                if old.droppable:
                    del self._items[i]
                    self.dropped += 1
                    break
            else:
                if msg.droppable:
                    self.dropped += 1
                    return
        self._items.append(msg)
        self._ready.set()

    async def take(self) -> Outgoing:
        """The oldest message, now in flight: it stays counted until :meth:`acked`."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        msg = self._items.pop(0)
        self._in_flight.append(msg)
        return msg

    def acked(self, msg: Outgoing) -> None:
        """The broker has ``msg``: forget it."""
        for i, m in enumerate(self._in_flight):
            if m is msg:
                del self._in_flight[i]
                return

    def requeue(self) -> None:
        """The link dropped: what was in flight goes first, in its order, on the next link."""
        if self._in_flight:
            self._items[:0] = self._in_flight
            self._in_flight.clear()
            self._ready.set()

    def __len__(self) -> int:
        return len(self._items) + len(self._in_flight)


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        client_id: str,
        on_message: Callable[[Incoming], Awaitable[None]],
        on_connect: Callable[[], Coroutine[Any, Any, None]],
        spool: Spool | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.client_id = client_id
        self._on_message = on_message
        self._on_connect = on_connect
        self.outbox = Outbox()
        self.spool = spool
        if spool is not None:
            for name, m in spool.load():
                self.outbox.put(
                    Outgoing(
                        m.topic,
                        m.payload,
                        m.qos,
                        m.retain,
                        m.correlation,
                        final=m.final,
                        spool=name,
                    )
                )
            if len(self.outbox):
                log.info("%d spooled messages to send once connected", len(self.outbox))
        self.connected = asyncio.Event()
        self.v5 = settings.protocol != "3.1.1"
        self.connects = 0
        self.last_error: str | None = None
        self._tls: ssl.SSLContext | None = None
        self._cert_problem: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def publish(self, msg: Outgoing) -> None:
        """Queue ``msg``; never waits. While the link is down (and always for a job's final
        event) it is also written to the spool, so a gateway restart does not lose it."""
        if (
            self.spool is not None
            and not msg.droppable
            and (msg.final or not self.connected.is_set())
        ):
            msg.spool = self.spool.add(
                SpooledMessage(
                    msg.topic, msg.payload, msg.qos, msg.retain, msg.correlation, msg.final
                )
            )
        self.outbox.put(msg)

    def _client(self) -> aiomqtt.Client:
        m = self.settings
        will = aiomqtt.Will(self.topics.status, status_payload("offline"), qos=1, retain=True)
        common: dict[str, Any] = {
            "hostname": m.host,
            "port": m.port,
            "identifier": self.client_id,
            "username": m.username,
            "password": m.password,
            "will": will,
            "keepalive": m.keepalive,
            "tls_context": self._tls,
            "timeout": 10.0,
        }
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = m.session_expiry
            return aiomqtt.Client(
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,
                properties=props,
                **common,
            )
        return aiomqtt.Client(protocol=aiomqtt.ProtocolVersion.V311, clean_session=False, **common)

    async def run(self) -> None:
        """Connect, serve, reconnect; returns only when cancelled."""
        self._tls = await asyncio.to_thread(build_tls_context, self.settings)
        attempt = 0
        while True:
            try:
                async with self._client() as client:
                    attempt = 0
                    await self._serve(client)
            except aiomqtt.MqttCodeError as err:
                self.last_error = str(err)
                if self.settings.protocol == "auto" and self.v5 and err.rc in _UNSUPPORTED_PROTOCOL:
                    log.warning("broker refused MQTT 5; falling back to 3.1.1")
                    self.v5 = False
                    continue
                log.warning("MQTT connection refused: %s", err)
            except aiomqtt.MqttError as err:
                self.last_error = str(err)
                log.warning("MQTT link down: %s", err)
            finally:
                self.connected.clear()
            attempt += 1
            await self._explain_certificate()
            await asyncio.sleep(self._backoff(attempt))

    async def _explain_certificate(self) -> None:
        # The broker refuses an expired or foreign certificate with a bare TLS alert; say which
        # file is wrong and why (once per distinct problem, not on every retry).
        m = self.settings
        if not m.tls or not m.cert_file:
            return
        # Only after a failed attempt: the happy path never loads cryptography (memory).
        from common.pki import cert_problem

        ca = Path(m.ca_file) if m.ca_file else None
        problem = await asyncio.to_thread(cert_problem, Path(m.cert_file), ca)
        if problem is not None and problem != self._cert_problem:
            log.error("MQTT: the broker will refuse this device: %s", problem)
        self._cert_problem = problem

    def _backoff(self, attempt: int) -> float:
        m = self.settings
        ceiling = min(m.reconnect_max, m.reconnect_min * 2 ** min(attempt, 20))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto

    async def _serve(self, client: aiomqtt.Client) -> None:
        self.connects += 1
        self.last_error = None
        log.info(
            "connected to %s:%d (MQTT %s)",
            self.settings.host,
            self.settings.port,
            "5" if self.v5 else "3.1.1",
        )
        _no_delay(client)
        # aiomqtt warns past 10 pending calls; SEND_WINDOW publishes (+ a few subscribes) in
        # flight are by design.
        client.pending_calls_threshold = SEND_WINDOW + 8
        await client.subscribe(self.topics.cmd_filter(), qos=1)
        await client.publish(self.topics.status, status_payload("online"), qos=1, retain=True)
        self.connected.set()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._send_loop(client, tg))
                tg.create_task(self._on_connect())
                async for message in client.messages:
                    self._spawn(self._on_message(self._incoming(message)))
        except* aiomqtt.MqttError as eg:
            raise eg.exceptions[0] from None
        finally:
            self.connected.clear()
            self.outbox.requeue()
            if not _link_broken(client):
                with contextlib.suppress(Exception):
                    await client.publish(
                        self.topics.status,
                        status_payload("offline"),
                        qos=1,
                        retain=True,
                        timeout=2,
                    )

    async def _send_loop(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        # Up to SEND_WINDOW publishes wait for their PUBACK together (waiting for each in turn
        # capped replies at one per broker round trip). Each publish task starts in outbox
        # order and hands its packet to paho at once, so the wire order is the outbox order.
        # A message leaves the outbox only once the broker acknowledged it; a failed publish
        # fails the link (the task group), and _serve requeues what was in flight.
        window = asyncio.Semaphore(SEND_WINDOW)
        while True:
            await window.acquire()
            msg = await self.outbox.take()
            tg.create_task(self._send_one(client, msg, window))

    async def _send_one(
        self, client: aiomqtt.Client, msg: Outgoing, window: asyncio.Semaphore
    ) -> None:
        try:
            props = None
            if msg.correlation is not None and self.v5:
                props = Properties(PacketTypes.PUBLISH)
                props.CorrelationData = msg.correlation
            await client.publish(
                msg.topic,
                msg.payload,
                qos=msg.qos,
                retain=msg.retain,
                properties=props,
                timeout=30,
            )
        finally:
            window.release()
        self.outbox.acked(msg)
        if msg.spool is not None and self.spool is not None:
            self.spool.remove(msg.spool)

    def _incoming(self, message: aiomqtt.Message) -> Incoming:
        props = message.properties
        rt = getattr(props, "ResponseTopic", None) if props is not None else None
        corr = getattr(props, "CorrelationData", None) if props is not None else None
        payload: Any = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = b"" if payload is None else str(payload).encode()
        return Incoming(message.topic.value, bytes(payload), rt or None, corr)

    def _spawn(self, coro: Awaitable[None]) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)


def _no_delay(client: aiomqtt.Client) -> None:
    # A reply must not wait for the TCP ACK of the packet before it (Nagle's algorithm meets
    # delayed ACKs: ~40 ms per command on Linux). paho leaves TCP_NODELAY off.
    sock = client._client.socket()
    with contextlib.suppress(AttributeError, OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]


def _link_broken(client: aiomqtt.Client) -> bool:
    return not client._client.is_connected()
