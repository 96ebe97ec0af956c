"""Argument and result types of the stats service."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta, Struct


class GetArgs(Struct):
    #: Include per-core CPU percentages.
    per_cpu: bool = True


class SampleArgs(Struct):
    #: How long to sample.
    seconds: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    #: Time between samples.
    interval: Annotated[float, Meta(ge=0.1, le=60)] = 1.0


class SampleResult(Struct):
    """CPU and memory over the sampling window."""

    samples: int
    seconds: float
    cpu_avg: float
    cpu_max: float
    mem_avg: float
    mem_max: float
    load1_last: float


class PingResult(Struct):
    pong: bool
    ts: float


class Cpu(Struct):
    percent: float
    count: int
    per_cpu: list[float] | None
    load: list[float]
    freq_mhz: float | None


class Memory(Struct):
    total: int
    available: int
    used: int
    percent: float
    swap_total: int
    swap_used: int
    swap_percent: float


class Filesystem(Struct):
    mountpoint: str
    device: str
    fstype: str
    total: int
    used: int
    free: int
    percent: float


class Address(Struct, omit_defaults=True):
    family: str
    address: str
    netmask: str | None = None


class Interface(Struct):
    name: str
    up: bool
    mac: str | None
    addresses: list[Address]
    bytes_sent: int
    bytes_recv: int
    packets_sent: int
    packets_recv: int
    errors_in: int
    errors_out: int


class Temperature(Struct):
    sensor: str
    label: str
    celsius: float


class Snapshot(Struct):
    """A whole-system snapshot, read in one call."""

    ts: float
    hostname: str
    os: str
    kernel: str
    arch: str
    boot_time: float
    uptime: float
    cpu: Cpu
    memory: Memory
    filesystems: list[Filesystem]
    interfaces: list[Interface]
    #: None when the board has no readable sensors (not an error).
    temperatures: list[Temperature] | None = None


class Telemetry(Struct):
    """The periodic sample on ``{prefix}/{device}/stats``: small, for charts."""

    ts: float
    cpu: float
    load1: float
    mem: float
    swap: float
    disk: float
    net_sent: int
    net_recv: int
    temp: float | None = msgspec.field(default=None)
