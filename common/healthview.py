"""``tether health``: read the local health topic and show each process's latest beat."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import zmq.asyncio

from common.config import Settings
from common.health import ALL_PROCESSES, HealthSubscriber
from common.messages import Heartbeat


def _processes(settings: Settings) -> list[str]:
    return ["gateway", "watchdog", *settings.services]


def _fmt_age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _fmt_fact(v: object) -> str:
    # The watchdog's facts nest: {"stats": {"state": "ok", "restarts": 0}} -> "stats:ok"
    if isinstance(v, dict):
        return ",".join(
            f"{k}:{x.get('state', x) if isinstance(x, dict) else x}" for k, x in v.items()
        )
    if isinstance(v, list):
        return "; ".join(str(x) for x in v)
    return str(v)


def render(beats: dict[str, Heartbeat], processes: list[str], now: float) -> str:
    rows = [("PROCESS", "STATE", "PID", "UPTIME", "LAST BEAT", "VERSION", "DETAILS")]
    for p in processes:
        b = beats.get(p)
        if b is None:
            rows.append((p, "silent", "-", "-", "-", "-", "no heartbeat heard"))
            continue
        stale = now - b.ts > max(3 * b.interval, 5.0)
        state = "silent" if stale else str(b.state)
        facts = " ".join(f"{k}={_fmt_fact(v)}" for k, v in b.facts.items() if v not in ([], {}))
        details = f"{b.reason}; {facts}" if b.reason else facts
        rows.append(
            (
                p,
                state,
                str(b.pid),
                _fmt_age(b.uptime),
                f"{_fmt_age(now - b.ts)} ago",
                b.version,
                details,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "\n".join(
        "  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:6])) + "  " + r[6] for r in rows
    )


async def collect(settings: Settings, wait: float) -> dict[str, Heartbeat]:
    ctx = zmq.asyncio.Context()
    sub = HealthSubscriber(ctx, settings.runtime_dir, ALL_PROCESSES)
    beats: dict[str, Heartbeat] = {}
    want = set(_processes(settings))
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline and not want <= beats.keys():
            try:
                b = await asyncio.wait_for(sub.recv(), deadline - time.monotonic())
            except TimeoutError:
                break
            if b is not None:
                beats[b.service] = b
    finally:
        sub.close()
        ctx.term()
    return beats


async def _watch(settings: Settings, as_json: bool) -> None:
    ctx = zmq.asyncio.Context()
    sub = HealthSubscriber(ctx, settings.runtime_dir, ALL_PROCESSES)
    beats: dict[str, Heartbeat] = {}
    last = ""
    try:
        while True:
            try:
                b = await asyncio.wait_for(sub.recv(), 1.0)
            except TimeoutError:
                b = None
            if b is not None:
                if as_json:
                    print(msgspec.json.encode(b).decode(), flush=True)
                    continue
                beats[b.service] = b
            if not as_json:
                text = render(beats, _processes(settings), time.time())
                key = "\n".join(line.split("  ")[1] for line in text.splitlines())
                if key != last:
                    print(f"--- {time.strftime('%H:%M:%S')}\n{text}", flush=True)
                    last = key
    finally:
        sub.close()
        ctx.term()


def show_health(settings: Settings, *, as_json: bool, watch: bool, wait: float) -> int:
    if watch:
        try:
            asyncio.run(_watch(settings, as_json))
        except KeyboardInterrupt:
            return 0
        return 0
    beats = asyncio.run(collect(settings, wait))
    procs = _processes(settings)
    if as_json:
        print(
            json.dumps(
                {p: msgspec.to_builtins(beats[p]) if p in beats else None for p in procs}, indent=2
            )
        )
    else:
        print(render(beats, procs, time.time()))
    ok = all(p in beats and beats[p].state in ("ok", "starting") for p in procs if p != "watchdog")
    return 0 if ok else 1
