"""What every benchmark shares: a dev PKI, one private mosquitto (TLS with client certificates,
plus a plaintext loopback listener for the echo's extra figures), production-like bundles,
process figures read from /proc, and the machine's description.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.client import ClientSettings
from common.devbroker import Mosquitto, free_port
from common.pki import DevPki, make_dev_pki
from tests.harness import Bundle, short_tmpdir

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

#: The configuration a device ships with, not the tests' fast-heartbeat, debug-log one.
PRODUCTION_LIKE: dict[str, Any] = {
    "log_level": "info",
    "health": {"interval": 2.0},
    "stats": {"interval": 60.0},
    "gateway": {"request_timeout": 15.0},
}


def present_services() -> list[str]:
    """Worker services that exist in this tree (others are being written elsewhere)."""
    from common.config import KNOWN_SERVICES

    return [s for s in KNOWN_SERVICES if (REPO / "services" / s / "__main__.py").exists()]


@dataclass
class Env:
    pki: DevPki
    broker: Mosquitto
    plain_port: int
    dirs: list[Path] = field(default_factory=list)

    def client_settings(self, tls: bool = True) -> ClientSettings:
        if not tls:
            return ClientSettings(host="127.0.0.1", port=self.plain_port, tls=False, timeout=30)
        return ClientSettings(
            host="localhost",
            port=self.broker.port,
            ca_file=str(self.pki.ca.cert),
            cert_file=str(self.pki.operator.cert),
            key_file=str(self.pki.operator.key),
            timeout=30,
        )

    def bundle(
        self, services: list[str], config: dict[str, Any] | None = None, extra_env: Any = None
    ) -> Bundle:
        from tests.harness import deep_merge

        b = Bundle(self.pki, self.broker, services, deep_merge(PRODUCTION_LIKE, config or {}))
        if extra_env:
            base_env = b.supervisor.env

            def env() -> dict[str, str]:
                return {**base_env(), **extra_env}

            b.supervisor.env = env  # type: ignore[method-assign]
        return b


@contextlib.contextmanager
def environment(broker_nodelay: bool = True) -> Iterator[Env]:
    d = short_tmpdir("bpki-")
    pki = make_dev_pki(d, "device")
    plain = free_port()
    broker = Mosquitto(
        short_tmpdir("bmq-"),
        pki,
        free_port(),
        # Its own listener block (per_listener_settings), before the TLS one.
        extra_global=[
            f"set_tcp_nodelay {'true' if broker_nodelay else 'false'}",
            f"\nlistener {plain} 127.0.0.1",
            "protocol mqtt",
            "allow_anonymous true",
        ],
    )
    broker.start()
    env = Env(pki, broker, plain, [d, broker.dir])
    try:
        yield env
    finally:
        broker.kill()
        for p in env.dirs:
            shutil.rmtree(p, ignore_errors=True)


# --- /proc ---------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (0 if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def smaps(pid: int) -> dict[str, int]:
    """Rss, Pss and Uss (private clean + dirty) in kB, from /proc/PID/smaps_rollup."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {"rss": 0, "pss": 0, "uss": 0}
    for line in text.splitlines()[1:]:
        k, _, v = line.partition(":")
        parts = v.split()
        if parts:
            out[k.strip()] = int(parts[0])
    return {
        "rss": out.get("Rss", 0),
        "pss": out.get("Pss", 0),
        "uss": out.get("Private_Clean", 0) + out.get("Private_Dirty", 0),
    }


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    except OSError:
        return []


def bundle_processes(b: Bundle) -> dict[str, int]:
    """{"supervisord": pid, "gateway": pid, "stats": pid, ...} of a running bundle."""
    assert b.supervisor.proc is not None
    sup = b.supervisor.proc.pid
    procs = {"supervisord": sup}
    for c in children(sup):
        argv = cmdline(c)
        if "-m" in argv:
            mod = argv[argv.index("-m") + 1]
            procs[mod.removeprefix("services.")] = c
    return procs


# --- figures -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in samples_s]
    return {
        "n": len(ms),
        "p50": round(pct(ms, 0.50), 3),
        "p90": round(pct(ms, 0.90), 3),
        "p99": round(pct(ms, 0.99), 3),
        "mean": round(statistics.fmean(ms), 3) if ms else float("nan"),
    }


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict[str, Any]:
    def run(*argv: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        return ""

    lscpu = run("lscpu")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")),
        platform.processor(),
    )
    mem_total = 0
    for ln in Path("/proc/meminfo").read_text().splitlines():
        if ln.startswith("MemTotal:"):
            mem_total = int(ln.split()[1])
    mosq = run("/usr/sbin/mosquitto", "-h").splitlines()
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "arch": platform.machine(),
        "mem_total_mb": mem_total // 1024,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "mosquitto": mosq[0] if mosq else "?",
        "loadavg_start": loadavg(),
        "lscpu": lscpu,
        "free_h": run("free", "-h"),
        "when_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


__all__ = ["Bundle", "Env", "environment"]
