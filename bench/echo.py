"""The baseline: a plain MQTT echo client in its own process (as the gateway is).

It subscribes to ``{prefix}/{device}/cmd/#`` and publishes each payload unchanged to the
message's MQTT 5 Response Topic with its Correlation Data, QoS 1, with the same library as the
gateway (aiomqtt). By default each reply is published from its own task, so the echo never
waits for one PUBACK before sending the next reply; ``--sequential`` awaits each publish in
the receive loop instead (what the gateway's send loop does).

    python -m bench.echo --host localhost --port 8883 --device echo [--tls CA CERT KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import ssl
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def _tls(ca: str, cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


async def serve(a: argparse.Namespace) -> None:
    tls = _tls(*a.tls) if a.tls else None
    tasks: set[asyncio.Task[Any]] = set()
    async with aiomqtt.Client(
        a.host,
        a.port,
        identifier=f"bench-echo-{a.device}",
        tls_context=tls,
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        if not a.nagle:  # the same socket option as the gateway's link
            with contextlib.suppress(AttributeError, OSError):
                sock: Any = client._client.socket()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.pending_calls_threshold = 1000  # replies in flight together are the point
        await client.subscribe(f"{a.prefix}/{a.device}/cmd/#", qos=1)
        print("ready", flush=True)
        async for m in client.messages:
            props_in = m.properties
            topic = getattr(props_in, "ResponseTopic", None) if props_in else None
            if not topic:
                continue
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = getattr(props_in, "CorrelationData", b"")
            payload = m.payload if isinstance(m.payload, bytes) else b""
            publish = client.publish(topic, payload, qos=1, properties=props)
            if a.sequential:
                await publish
            else:
                t = asyncio.ensure_future(publish)
                tasks.add(t)
                t.add_done_callback(tasks.discard)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.echo")
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--prefix", default="tether")
    p.add_argument("--tls", nargs=3, metavar=("CA", "CERT", "KEY"))
    p.add_argument("--sequential", action="store_true")
    p.add_argument("--nagle", action="store_true", help="leave TCP_NODELAY off (paho's default)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
