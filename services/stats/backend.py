"""The only module that imports psutil. Every call runs in a worker thread (psutil blocks on
/proc and /sys), and psutil's objects are turned into our types inside that thread."""

from __future__ import annotations

import os
import platform
import socket
import time

import psutil

from services.stats.models import (
    Address,
    Cpu,
    Filesystem,
    Interface,
    Memory,
    Snapshot,
    Telemetry,
    Temperature,
)

# Pseudo and container filesystems that say nothing about the device's storage.
_VIRTUAL_FS = {
    "tmpfs",
    "devtmpfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "overlay",
    "squashfs",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "autofs",
    "fusectl",
    "configfs",
    "hugetlbfs",
    "nsfs",
    "ramfs",
    "efivarfs",
    "binfmt_misc",
    "rpc_pipefs",
}

_FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6", psutil.AF_LINK: "link"}


def prime() -> None:
    """psutil's first cpu_percent() is meaningless (0.0); take it at start-up."""
    psutil.cpu_percent(interval=None)
    psutil.cpu_percent(interval=None, percpu=True)


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    except OSError:
        return platform.system()


def _filesystems() -> list[Filesystem]:
    out: list[Filesystem] = []
    seen: set[str] = set()
    # Bind mounts repeat a device at other paths (docker data roots, /run/netns): report each
    # device once, at its shortest mount point.
    parts = sorted(psutil.disk_partitions(all=False), key=lambda p: len(p.mountpoint))
    for part in parts:
        if part.fstype in _VIRTUAL_FS or part.device in seen:
            continue
        try:
            u = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue  # unreadable mount: absent, not an error
        seen.add(part.device)
        out.append(
            Filesystem(
                part.mountpoint, part.device, part.fstype, u.total, u.used, u.free, u.percent
            )
        )
    return out


def _interfaces() -> list[Interface]:
    addrs = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    io = psutil.net_io_counters(pernic=True)
    out: list[Interface] = []
    for name in sorted(addrs.keys() | stats.keys()):
        mac = None
        addresses: list[Address] = []
        for a in addrs.get(name, []):
            fam = _FAMILIES.get(a.family)
            if fam == "link":
                mac = a.address
            elif fam:
                addresses.append(Address(fam, a.address.split("%")[0], a.netmask))
        c = io.get(name)
        st = stats.get(name)
        out.append(
            Interface(
                name,
                bool(st and st.isup),
                mac,
                addresses,
                c.bytes_sent if c else 0,
                c.bytes_recv if c else 0,
                c.packets_sent if c else 0,
                c.packets_recv if c else 0,
                c.errin if c else 0,
                c.errout if c else 0,
            )
        )
    return out


def _temperatures() -> list[Temperature] | None:
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    try:
        sensors = reader()
    except OSError:
        return None
    temps = [
        Temperature(chip, t.label or chip, t.current)
        for chip, entries in sensors.items()
        for t in entries
    ]
    return temps or None


def _cpu(per_cpu: bool) -> Cpu:
    freq = None
    try:
        f = psutil.cpu_freq()
        freq = f.current if f else None
    except (OSError, NotImplementedError):
        pass
    return Cpu(
        percent=psutil.cpu_percent(interval=None),
        count=psutil.cpu_count() or 1,
        per_cpu=psutil.cpu_percent(interval=None, percpu=True) if per_cpu else None,
        load=[round(x, 2) for x in os.getloadavg()],
        freq_mhz=freq,
    )


def _memory() -> Memory:
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    return Memory(vm.total, vm.available, vm.used, vm.percent, sw.total, sw.used, sw.percent)


def snapshot(per_cpu: bool = True) -> Snapshot:
    boot = psutil.boot_time()
    now = time.time()
    return Snapshot(
        ts=now,
        hostname=socket.gethostname(),
        os=_os_name(),
        kernel=platform.release(),
        arch=platform.machine(),
        boot_time=boot,
        uptime=round(now - boot, 1),
        cpu=_cpu(per_cpu),
        memory=_memory(),
        filesystems=_filesystems(),
        interfaces=_interfaces(),
        temperatures=_temperatures(),
    )


def telemetry() -> Telemetry:
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    try:
        root = psutil.disk_usage("/").percent
    except OSError:
        root = 0.0
    io = psutil.net_io_counters()
    temps = _temperatures()
    return Telemetry(
        ts=time.time(),
        cpu=psutil.cpu_percent(interval=None),
        load1=round(os.getloadavg()[0], 2),
        mem=vm.percent,
        swap=sw.percent,
        disk=root,
        net_sent=io.bytes_sent if io else 0,
        net_recv=io.bytes_recv if io else 0,
        temp=max(t.celsius for t in temps) if temps else None,
    )
