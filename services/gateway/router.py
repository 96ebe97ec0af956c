"""Routes each command from MQTT to its service and publishes exactly one reply.

Order of checks (each failure is a coded reply, never an exception that escapes):
size -> JSON envelope -> reply target -> expiry -> service -> de-duplication -> dispatch.
The gateway decodes only the envelope; ``args`` stays raw until the worker decodes it with the
action's type.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from msgspec import Raw

from common.config import Settings
from common.dispatch import invalid_from_validation, run_to_error
from common.errors import (
    ErrorCode,
    Expired,
    InvalidRequest,
    TetherError,
    TooLarge,
    UnknownAction,
    UnknownService,
)
from common.ipc import encoder
from common.messages import Command, ErrorBody, Reply
from common.topics import Topics, valid_name_segment, valid_publish_topic
from common.worker_client import WorkerClient
from services.gateway.mqtt_link import Incoming, Outgoing

log = logging.getLogger("tether.gateway.router")

_command_decoder = msgspec.json.Decoder(Command)

LocalCall = Callable[[str, Raw, float], Awaitable[Any]]


class DedupCache:
    """Remembers recent command ids so a QoS 1 redelivery is answered, not run again."""

    def __init__(self, ttl: float, limit: int) -> None:
        self.ttl = ttl
        self.limit = limit
        self._entries: collections.OrderedDict[str, tuple[float, bytes | None]] = (
            collections.OrderedDict()
        )

    def _expire(self, now: float) -> None:
        while self._entries:
            key, (ts, _) = next(iter(self._entries.items()))
            if now - ts < self.ttl and len(self._entries) <= self.limit:
                break
            del self._entries[key]

    def seen(self, key: str) -> tuple[bool, bytes | None]:
        """(True, reply or None while still running) if ``key`` was seen recently."""
        self._expire(time.monotonic())
        if key in self._entries:
            return True, self._entries[key][1]
        return False, None

    def start(self, key: str) -> None:
        self._entries[key] = (time.monotonic(), None)

    def finish(self, key: str, reply: bytes) -> None:
        if key in self._entries:
            self._entries[key] = (self._entries[key][0], reply)


class Router:
    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        publish: Callable[[Outgoing], None],
        workers: dict[str, WorkerClient],
        local: dict[str, LocalCall],
        authorize: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self._publish = publish
        self.workers = workers
        self.local = local
        self._authorize = authorize
        g = settings.gateway
        self.dedup = DedupCache(g.dedup_ttl, g.dedup_max)
        #: (service, action) -> timeout, for actions that declare their own.
        self.timeouts: dict[tuple[str, str], float] = {}
        self.handled = 0

    @property
    def in_flight(self) -> int:
        return sum(w.in_flight for w in self.workers.values())

    async def handle(self, msg: Incoming) -> None:
        """Answer ``msg`` exactly once, whatever it holds."""
        try:
            await self._handle(msg)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must still produce a reply, and never stop the gateway
            log.exception("unexpected error handling %s", msg.topic)
            parsed = self.topics.parse_cmd(msg.topic) or ("invalid", "invalid")
            bug = ErrorBody(ErrorCode.INTERNAL, "internal error in the gateway; see its log")
            self._reply(
                msg.response_topic or self.topics.res(*parsed),
                msg.correlation,
                encoder.encode(Reply(None, False, None, bug)),
            )

    async def _handle(self, msg: Incoming) -> None:
        parsed = self.topics.parse_cmd(msg.topic)
        if parsed is None:
            return
        service, action = parsed
        target = msg.response_topic or self.topics.res(service, action)
        cmd_id: str | None = None
        try:
            if len(msg.payload) > self.settings.gateway.max_payload:
                raise TooLarge(
                    f"payload is {len(msg.payload)} bytes; this device accepts at most "
                    f"{self.settings.gateway.max_payload}",
                    {"size": len(msg.payload), "limit": self.settings.gateway.max_payload},
                )
            cmd = self._decode(msg.payload)
            cmd_id = cmd.id
            if cmd.reply_to is not None:
                if not valid_publish_topic(cmd.reply_to):
                    raise InvalidRequest(
                        "reply_to must be a topic without wildcards (+, #), at most 1024 bytes",
                        {"field": "reply_to"},
                    )
                if msg.response_topic is None:  # MQTT 5's Response Topic wins
                    target = cmd.reply_to
            if cmd.expires_at is not None and cmd.expires_at < time.time():
                raise Expired(
                    f"the command expired {time.time() - cmd.expires_at:.0f}s ago; it was not run",
                    {"expires_at": cmd.expires_at},
                )
            self._check_names(service, action)
        except TetherError as err:
            self._reply(
                target,
                msg.correlation,
                encoder.encode(Reply(cmd_id, False, None, ErrorBody.from_exc(err))),
            )
            return

        key = self._dedup_key(service, action, cmd_id, msg.correlation)
        if key is not None:
            seen, cached = self.dedup.seen(key)
            if seen:
                if cached is not None:
                    log.info("answered a redelivered command %s from cache", cmd_id)
                    self._reply(target, msg.correlation, cached)
                return
            self.dedup.start(key)

        body = await self._dispatch(service, action, cmd)
        reply = encoder.encode(body)
        if key is not None:
            self.dedup.finish(key, reply)
        self.handled += 1
        self._reply(target, msg.correlation, reply)

    def _decode(self, payload: bytes) -> Command:
        if not payload.strip():
            return Command()
        try:
            return _command_decoder.decode(payload)
        except msgspec.ValidationError as err:
            raise invalid_from_validation(err) from err
        except msgspec.DecodeError as err:
            raise InvalidRequest(
                'payload is not a JSON object: send {"id": ..., "args": {...}}',
            ) from err
        except RecursionError as err:
            raise InvalidRequest("payload is nested too deeply") from err

    def _check_names(self, service: str, action: str) -> None:
        if service not in self.workers and service not in self.local:
            known = sorted([*self.workers, *self.local])
            raise UnknownService(
                f"no service {service!r} on this device (services: {', '.join(known)})",
                {"service": service, "services": known},
            )
        if not all(valid_name_segment(p) for p in action.split("/")):
            raise UnknownAction(f"{service} has no action {action!r}", {"service": service})
        if self._authorize is not None:
            self._authorize(service, action)

    @staticmethod
    def _dedup_key(service: str, action: str, cmd_id: str | None, corr: bytes | None) -> str | None:
        if cmd_id:
            return f"{service}/{action}#{cmd_id}"
        if corr:
            return f"{service}/{action}#c:{corr.hex()}"
        return None

    async def _dispatch(self, service: str, action: str, cmd: Command) -> Reply:
        timeout = self.timeouts.get((service, action), self.settings.gateway.request_timeout)
        if service in self.local:
            result, error = await run_to_error(self.local[service](action, cmd.args, timeout))
            if error is not None:
                return Reply(cmd.id, False, None, error)
            return Reply(cmd.id, True, Raw(encoder.encode(result)), None)
        try:
            ipc = await self.workers[service].call(action, cmd.args, timeout)
        except TetherError as err:
            if err.code is not ErrorCode.BUSY:
                log.warning("%s/%s: %s", service, action, err.message)
            return Reply(cmd.id, False, None, ErrorBody.from_exc(err))
        if ipc.ok:
            return Reply(cmd.id, True, ipc.result, None)
        return Reply(cmd.id, False, None, ipc.error)

    def _reply(self, topic: str, correlation: bytes | None, payload: bytes) -> None:
        self._publish(Outgoing(topic, payload, qos=1, correlation=correlation))
