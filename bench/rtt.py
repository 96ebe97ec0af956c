"""Command round trip and throughput: the bundle next to a plain MQTT echo, interleaved.

Every target is called through the same operator client (common.client.TetherClient: aiomqtt,
MQTT 5 Response Topic + Correlation Data, QoS 1) with the same payload (``{"id": <32 hex>}``),
so the only difference is what answers: the echo process, the gateway alone (``agent/ping``)
or the gateway plus the ZeroMQ hop to the stats worker (``stats/ping``).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from bench.env import REPO, Env, loadavg, summary_ms
from common.client import ClientError, TetherClient


@dataclass
class Target:
    name: str
    client: TetherClient
    device: str
    service: str
    action: str

    async def call(self, timeout: float = 20.0) -> bool:
        try:
            r = await self.client.call(self.device, self.service, self.action, timeout=timeout)
        except ClientError:
            return False
        return bool(r.get("ok", True))  # the echo returns the request: no "ok" key


@contextlib.contextmanager
def echo_process(
    env: Env, tls: bool, sequential: bool = False, port: int | None = None
) -> Iterator[str]:
    """Start ``bench.echo`` for a fresh device id; yields that id."""
    device = f"echo-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-m", "bench.echo", "--device", device]
    if tls:
        p = env.pki
        argv += ["--host", "localhost", "--port", str(port or env.broker.port)]
        argv += ["--tls", str(p.ca.cert), str(p.device.cert), str(p.device.key)]
    else:
        argv += ["--host", "127.0.0.1", "--port", str(env.plain_port)]
    if sequential:
        argv.append("--sequential")
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"bench.echo did not start (exit {proc.poll()})")
        yield device
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def client(env: Env, tls: bool = True) -> AsyncIterator[TetherClient]:
    async with TetherClient(env.client_settings(tls)) as c:
        yield c


async def latency(targets: list[Target], rounds: int, per_round: int, warmup: int) -> Any:
    """Sequential calls, one in flight; targets interleaved round by round (ABAB...)."""
    for t in targets:
        for _ in range(warmup):
            await t.call()
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    failures = {t.name: 0 for t in targets}
    for _ in range(rounds):
        for t in targets:
            for _ in range(per_round):
                t0 = time.perf_counter()
                ok = await t.call()
                dt = time.perf_counter() - t0
                if ok:
                    samples[t.name].append(dt)
                else:
                    failures[t.name] += 1
    return {n: {**summary_ms(s), "failures": failures[n]} for n, s in samples.items()}


async def rate(t: Target, concurrency: int, seconds: float) -> dict[str, float]:
    """Commands answered per second with ``concurrency`` calls always in flight."""
    done = 0
    failed = 0
    stop = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal done, failed
        while time.perf_counter() < stop:
            if await t.call(timeout=30):
                done += 1
            else:
                failed += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {"per_s": done / elapsed, "failed": failed}


async def throughput(
    targets: list[Target], concurrency: int, rounds: int, seconds: float
) -> dict[str, Any]:
    for t in targets:
        await rate(t, concurrency, min(1.0, seconds))  # warm-up
    per: dict[str, list[float]] = {t.name: [] for t in targets}
    failed = {t.name: 0.0 for t in targets}
    for _ in range(rounds):
        for t in targets:
            r = await rate(t, concurrency, seconds)
            per[t.name].append(r["per_s"])
            failed[t.name] += r["failed"]
    return {
        n: {
            "per_s_median": round(sorted(v)[len(v) // 2], 1),
            "per_s_rounds": [round(x, 1) for x in v],
            "failed": int(failed[n]),
        }
        for n, v in per.items()
    }


async def run_rtt(env: Env, quick: bool, bundle_device: str) -> dict[str, Any]:
    rounds, per_round, warmup = (4, 50, 30) if quick else (10, 100, 100)
    tp_rounds, tp_seconds = (2, 2.0) if quick else (4, 4.0)
    out: dict[str, Any] = {"load_before": loadavg()}
    with (
        echo_process(env, tls=True) as echo_tls,
        echo_process(env, tls=False) as echo_plain,
        echo_process(env, tls=True, sequential=True) as echo_seq,
    ):
        async with (
            client(env) as c_echo,
            client(env) as c_bundle,
            client(env) as c_agent,
            client(env, tls=False) as c_plain,
            client(env) as c_seq,
        ):
            echo = Target("echo (TLS)", c_echo, echo_tls, "bench", "echo")
            stats = Target("stats/ping (TLS)", c_bundle, bundle_device, "stats", "ping")
            agent = Target("agent/ping (TLS)", c_agent, bundle_device, "agent", "ping")
            plain = Target("echo (plaintext)", c_plain, echo_plain, "bench", "echo")
            seq = Target("echo, sequential PUBACK (TLS)", c_seq, echo_seq, "bench", "echo")
            out["latency"] = await latency([echo, stats, agent, plain], rounds, per_round, warmup)
            out["latency_params"] = {"rounds": rounds, "per_round": per_round, "warmup": warmup}
            out["throughput"] = {}
            for conc in (1, 64) if not quick else (64,):
                out["throughput"][str(conc)] = await throughput(
                    [echo, stats, agent, seq], conc, tp_rounds, tp_seconds
                )
            out["throughput_params"] = {"rounds": tp_rounds, "seconds": tp_seconds}
    out["load_after"] = loadavg()
    e, s, a = (
        out["latency"][k]["p50"] for k in ("echo (TLS)", "stats/ping (TLS)", "agent/ping (TLS)")
    )
    out["ratio_p50_stats_vs_echo"] = round(s / e, 2)
    out["ratio_p50_agent_vs_echo"] = round(a / e, 2)
    tp = out["throughput"]["64"]
    out["ratio_tp_stats_vs_echo"] = round(
        tp["stats/ping (TLS)"]["per_s_median"] / tp["echo (TLS)"]["per_s_median"], 2
    )
    return out


async def run_interference(
    env: Env, quick: bool, device: str, slow: list[tuple[str, str, dict[str, Any] | None, bool]]
) -> dict[str, Any]:
    """stats/ping throughput alone, then while slow work runs in the background (ABAB)."""
    seconds, rounds = (2.0, 2) if quick else (4.0, 3)
    out: dict[str, Any] = {}
    async with client(env) as c, client(env) as c_bg:
        ping = Target("stats/ping", c, device, "stats", "ping")
        await rate(ping, 64, 1.0)
        for service, action, args, is_job in slow:
            name = f"{service}/{action}"
            alone: list[float] = []
            busy: list[float] = []
            bg_done = 0
            for _ in range(rounds):
                alone.append((await rate(ping, 64, seconds))["per_s"])
                stop = asyncio.Event()

                async def background(
                    service: str = service,
                    action: str = action,
                    args: Any = args,
                    is_job: bool = is_job,
                    stop: asyncio.Event = stop,
                ) -> None:
                    nonlocal bg_done
                    while not stop.is_set():
                        r = await c_bg.call(device, service, action, args, timeout=120)
                        if is_job and r.get("ok"):
                            async for _ev in c_bg.follow_job(device, r["result"]["job_id"], 120):
                                pass
                        bg_done += 1

                bgs = [asyncio.create_task(background()) for _ in range(2)]
                await asyncio.sleep(0.5)
                busy.append((await rate(ping, 64, seconds))["per_s"])
                stop.set()
                await asyncio.gather(*bgs)
            a_med = sorted(alone)[len(alone) // 2]
            b_med = sorted(busy)[len(busy) // 2]
            out[name] = {
                "alone_per_s": round(a_med, 1),
                "with_slow_per_s": round(b_med, 1),
                "ratio": round(b_med / a_med, 2),
                "slow_calls_completed": bg_done,
                "rounds_alone": [round(x, 1) for x in alone],
                "rounds_with": [round(x, 1) for x in busy],
            }
    return out


async def run_slow_link(env: Env, quick: bool, delay: float = 0.010) -> dict[str, Any]:
    """The device (gateway or echo) behind a link adding ``delay`` each way; the operator
    stays next to the broker. Shows what waiting for each PUBACK in turn would cost."""
    from bench.slowlink import slow_link

    rounds, per_round, warmup = (2, 25, 10) if quick else (4, 50, 20)
    tp_rounds, tp_seconds = (2, 2.0) if quick else (3, 3.0)
    out: dict[str, Any] = {"one_way_delay_ms": delay * 1000}
    async with slow_link(env.broker.port, delay) as port:
        b = env.bundle(["stats"], {"mqtt": {"port": port}})
        await asyncio.to_thread(b.start)
        stack = contextlib.ExitStack()
        try:
            # The relay runs on this loop: wait for the echo's "ready" in a thread.
            echo_dev = await asyncio.to_thread(
                stack.enter_context, echo_process(env, tls=True, port=port)
            )
            async with client(env) as c_echo, client(env) as c_bundle:
                echo = Target("echo (TLS)", c_echo, echo_dev, "bench", "echo")
                stats = Target("stats/ping (TLS)", c_bundle, b.device, "stats", "ping")
                out["latency"] = await latency([echo, stats], rounds, per_round, warmup)
                out["throughput"] = await throughput([echo, stats], 64, tp_rounds, tp_seconds)
        finally:
            await asyncio.to_thread(stack.close)
            await asyncio.to_thread(b.cleanup)
    return out
