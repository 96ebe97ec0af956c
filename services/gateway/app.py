"""Wiring of the gateway: MQTT link <-> router <-> worker clients, events, health, capabilities.

The event loop never blocks: MQTT I/O is aiomqtt's, worker I/O is zmq.asyncio, and nothing
here touches a blocking library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import zmq
import zmq.asyncio
from msgspec import Raw

from common import __version__
from common.config import Settings
from common.errors import TetherError
from common.health import HealthPublisher, HealthReport
from common.ipc import encoder, ensure_runtime_dir, event_decoder, events_endpoint, tune
from common.logs import setup_logging
from common.messages import (
    API_VERSION,
    Capabilities,
    DeviceHealth,
    EventKind,
    ServiceInfo,
    ServiceState,
)
from common.supervisor import SupervisorClient
from common.topics import Topics
from common.worker import load_or_exit, run_until_signalled
from common.worker_client import WorkerClient
from services.gateway import agent
from services.gateway.authz import Authorizer, mutating_lookup
from services.gateway.health_mirror import HealthMirror
from services.gateway.jobs_watch import OpenJobs
from services.gateway.mqtt_link import MqttLink, Outgoing
from services.gateway.router import Router
from services.gateway.spool import Spool

log = logging.getLogger("tether.gateway")

_service_info_decoder = msgspec.json.Decoder(ServiceInfo)


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix, settings.device_id)
        self.zctx = zmq.asyncio.Context()
        ensure_runtime_dir(settings.runtime_dir)
        ensure_runtime_dir(settings.state_dir)  # spool and open jobs: not for other users
        self.workers = {
            name: WorkerClient(
                self.zctx, name, settings.runtime_dir, settings.gateway.max_in_flight
            )
            for name in settings.services
        }
        self.described: dict[str, ServiceInfo] = {}
        self.link = MqttLink(
            settings.mqtt,
            self.topics,
            client_id=f"tether-{settings.device_id}",
            on_message=self._on_message,
            on_connect=self._on_connect,
            spool=Spool(str(Path(settings.state_dir) / "spool")),
        )
        self.open_jobs = OpenJobs(settings.state_dir, self._publish_job_final)
        self.mirror = HealthMirror(
            self.zctx, settings, self._publish_health, self.open_jobs.worker_pid
        )
        self.agent_ctx = agent.AgentContext(
            settings,
            self.capabilities,
            self.mirror.snapshot,
            SupervisorClient(settings.supervisor.socket),
            self._restart_self,
        )
        self._stop_task: asyncio.Task[None] | None = None
        agent_info = agent.ACTIONS.info()
        self.authorizer = Authorizer(
            settings.authz,
            mutating_lookup(lambda: [agent_info, *self.described.values()]),
        )
        self.router = Router(
            settings,
            self.topics,
            self.link.publish,
            self.workers,
            local={"agent": self._agent_call},
            authorize=self.authorizer.authorize,
        )
        self.health = HealthPublisher(
            self.zctx, "gateway", settings.runtime_dir, settings.health.interval, self._report
        )
        self.mirror.own = self.health.beat
        self._events: Any = None
        self._learn_timeouts(agent.ACTIONS.info())

    async def _on_message(self, msg: Any) -> None:
        await self.router.handle(msg)

    async def _agent_call(self, action: str, args: Raw, timeout: float) -> Any:
        return await agent.ACTIONS.invoke(self.agent_ctx, action, args, timeout)

    def _report(self) -> HealthReport:
        up = self.link.connected.is_set()
        return HealthReport(
            ServiceState.OK if up else ServiceState.DEGRADED,
            None if up else f"MQTT link down: {self.link.last_error or 'connecting'}",
            {
                "link": "up" if up else "down",
                "broker": f"{self.settings.mqtt.host}:{self.settings.mqtt.port}",
                "mqtt": "5" if self.link.v5 else "3.1.1",
                "in_flight": self.router.in_flight,
                "outbox": len(self.link.outbox),
                "handled": self.router.handled,
            },
        )

    # --- capabilities -------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        services = [agent.ACTIONS.info()]
        services += [self.described[n] for n in self.settings.services if n in self.described]
        missing = [n for n in self.settings.services if n not in self.described]
        return Capabilities(self.settings.device_id, API_VERSION, __version__, services, missing)

    def _publish_capabilities(self) -> None:
        self.link.publish(
            Outgoing(self.topics.capabilities, encoder.encode(self.capabilities()), retain=True)
        )

    async def _describe_loop(self) -> None:
        # Workers may start after the gateway; ask until each has answered, then now and then
        # (a restarted worker may have been upgraded).
        while True:
            changed = False
            for name, client in self.workers.items():
                try:
                    reply = await client.call("_describe", Raw(b"{}"), 2.0)
                except TetherError:  # not up yet: asked again next round
                    continue
                if reply.ok:
                    info = _service_info_decoder.decode(reply.result)
                    if self.described.get(name) != info:
                        self.described[name] = info
                        self._learn_timeouts(info)
                        changed = True
            if changed:
                self._publish_capabilities()
            missing = len(self.described) < len(self.workers)
            await asyncio.sleep(1.0 if missing else 30.0)

    def _learn_timeouts(self, info: ServiceInfo) -> None:
        for a in info.actions:
            if a.timeout:
                self.router.timeouts[(info.name, a.name)] = a.timeout

    async def _on_connect(self) -> None:
        self._publish_capabilities()
        self.health.publish_now()
        self.mirror.publish_now()

    def _publish_health(self, h: DeviceHealth) -> None:
        self.link.publish(
            Outgoing(self.topics.health, encoder.encode(h), retain=True, droppable=True)
        )

    def _publish_job_final(self, job_id: str, payload: bytes) -> None:
        self.link.publish(Outgoing(self.topics.job(job_id), payload, retain=True, final=True))

    def _restart_self(self) -> None:
        async def later() -> None:
            # Let the reply (and anything queued before it) reach the broker first.
            for _ in range(50):
                await asyncio.sleep(0.1)
                if not len(self.link.outbox):
                    break
            log.info("restarting on request")
            os.kill(os.getpid(), signal.SIGTERM)  # supervisord (autorestart) starts us again

        self._stop_task = asyncio.get_running_loop().create_task(later())

    # --- events from workers -----------------------------------------------------------

    async def _events_loop(self) -> None:
        while True:
            frame = await self._events.recv()
            try:
                ev = event_decoder.decode(frame)
            except msgspec.MsgspecError:
                log.warning("dropped a malformed worker event (%d bytes)", len(frame))
                continue
            if ev.kind is EventKind.JOB:
                payload = bytes(ev.payload)
                self.open_jobs.seen(ev.key, payload, ev.final, ev.pid)
                # The final event is retained: whoever looks later still learns how it ended;
                # it is also spooled (final=True) so a gateway restart cannot lose it.
                self.link.publish(
                    Outgoing(self.topics.job(ev.key), payload, retain=ev.final, final=ev.final)
                )
            elif ev.kind is EventKind.TELEMETRY:
                self.link.publish(
                    Outgoing(self.topics.stats, bytes(ev.payload), qos=0, droppable=True)
                )

    # --- run ---------------------------------------------------------------------------

    async def run(self) -> None:
        path = events_endpoint(self.settings.runtime_dir)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.removeprefix("ipc://"))
        self._events = self.zctx.socket(zmq.PULL)
        tune(self._events)
        self._events.bind(path)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.health.run())
                for w in self.workers.values():
                    tg.create_task(w.run())
                tg.create_task(self._events_loop())
                tg.create_task(self._describe_loop())
                tg.create_task(self.mirror.run())
                self.health.set_running()
                await self.link.run()
        finally:
            await self._close()

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self.health.stopping()
        self.health.close()
        for w in self.workers.values():
            w.close()
        if self._events is not None:
            self._events.close(0)
        self.zctx.term()


def main(argv: Sequence[str] | None = None) -> None:
    settings = load_or_exit("gateway", argv)
    setup_logging("gateway", settings.log_level)
    asyncio.run(run_until_signalled(Gateway(settings).run()))
