"""Targets (met or not) and the Markdown table of a run."""

from __future__ import annotations

from typing import Any


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, limit: float, unit: str, higher_is_better: bool = False) -> None:
        if value is None:
            out.append({"target": name, "value": None, "limit": limit, "met": None})
            return
        met = value >= limit if higher_is_better else value <= limit
        out.append({"target": name, "value": value, "limit": limit, "unit": unit, "met": met})

    add("round-trip p50 stats/ping / echo", _get(r, "rtt", "ratio_p50_stats_vs_echo"), 1.5, "x")
    add(
        "throughput stats/ping / echo (64 in flight)",
        _get(r, "rtt", "ratio_tp_stats_vs_echo"),
        0.5,
        "x",
        higher_is_better=True,
    )
    pss = _get(r, "footprint", "idle", "total", "pss")
    add("bundle idle PSS", round(pss / 1024, 1) if pss else None, 110.0, "MB")
    floor = _get(r, "floor", "memory", "total", "pss")
    add(
        "bundle idle PSS / import floor",
        round(pss / floor, 3) if pss and floor else None,
        1.15,
        "x",
    )
    add(
        "bundle idle CPU",
        _get(r, "footprint", "idle_cpu_pct_of_one_core", "total"),
        1.0,
        "% of one core",
    )
    add("online after supervisord starts", _get(r, "startup", "median", "online_s"), 2.0, "s")
    return out


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f}"


def markdown(r: dict[str, Any]) -> str:
    m = r.get("machine", {})
    lines = [
        "# Tether benchmark results",
        "",
        f"Run {m.get('when_utc', '?')} UTC, {'quick' if r.get('quick') else 'full'} mode, "
        f"{r.get('duration_s', '?')} s. Machine: {m.get('cpu_model')} x {m.get('cpus')} "
        f"({m.get('arch')}), {m.get('mem_total_mb')} MB RAM, Linux {m.get('kernel')}, "
        f"Python {m.get('python')}, {m.get('mosquitto')}. Load average at start "
        f"{m.get('loadavg_start')}, at end {m.get('loadavg_end')}. Services: "
        f"{', '.join(r.get('services', []))}.",
        "",
        "## Targets",
        "",
        "| target | value | limit | met |",
        "| --- | ---: | ---: | --- |",
    ]
    for t in r.get("targets", []):
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        unit = t.get("unit", "")
        lines.append(f"| {t['target']} | {t['value']} {unit} | {t['limit']} {unit} | {met} |")

    lat = _get(r, "rtt", "latency")
    if lat:
        lines += [
            "",
            "## Command round trip (one in flight, QoS 1, MQTT 5, same client)",
            "",
            "| target | p50 ms | p90 ms | p99 ms | mean ms | n | failures |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, s in lat.items():
            lines.append(
                f"| {name} | {s['p50']} | {s['p90']} | {s['p99']} | {s['mean']} | {s['n']} "
                f"| {s['failures']} |"
            )
        lines.append("")
        lines.append(
            f"Ratios of p50: stats/ping / echo = **{r['rtt']['ratio_p50_stats_vs_echo']}**, "
            f"agent/ping / echo = {r['rtt']['ratio_p50_agent_vs_echo']}."
        )
    tp = _get(r, "rtt", "throughput")
    if tp:
        lines += [
            "",
            "## Throughput (commands answered per second)",
            "",
            "| in flight | target | median /s | rounds | failed |",
            "| ---: | --- | ---: | --- | ---: |",
        ]
        for conc, per in tp.items():
            for name, s in per.items():
                lines.append(
                    f"| {conc} | {name} | {s['per_s_median']} | {s['per_s_rounds']} "
                    f"| {s['failed']} |"
                )
        lines.append("")
        lines.append(
            f"Ratio at 64 in flight: stats/ping / echo = **{r['rtt']['ratio_tp_stats_vs_echo']}**."
        )
    sl = r.get("slow_link")
    if sl:
        lines += [
            "",
            f"## Device behind a slow link ({sl['one_way_delay_ms']:.0f} ms each way, "
            "operator next to the broker)",
            "",
            "| target | p50 ms | p90 ms | p99 ms | 64 in flight /s |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, s in sl["latency"].items():
            tput = sl["throughput"][name]["per_s_median"]
            lines.append(f"| {name} | {s['p50']} | {s['p90']} | {s['p99']} | {tput} |")
    inter = r.get("interference")
    if inter:
        lines += [
            "",
            "## A slow service next to stats/ping throughput (64 in flight)",
            "",
            "| background work (2 at a time) | alone /s | with it /s | ratio | background calls |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, s in inter.items():
            lines.append(
                f"| {name} | {s['alone_per_s']} | {s['with_slow_per_s']} | {s['ratio']} "
                f"| {s['slow_calls_completed']} |"
            )
    fp = r.get("footprint")
    if fp:
        floor = _get(r, "floor", "memory") or {}
        lines += [
            "",
            "## Footprint (MB; PSS shares shared pages among their users, USS is private)",
            "",
            "| process | idle PSS | idle RSS | idle USS | peak PSS under load "
            "| peak RSS under load | floor PSS | floor RSS | idle CPU % of a core |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        cpu = fp.get("idle_cpu_pct_of_one_core", {})
        for name, v in fp["idle"].items():
            pk = fp.get("load_peak", {}).get(name, {})
            fl = floor.get(name, {})
            lines.append(
                f"| {name} | {_mb(v['pss'])} | {_mb(v['rss'])} | {_mb(v['uss'])} "
                f"| {_mb(pk.get('pss'))} | {_mb(pk.get('rss'))} | {_mb(fl.get('pss'))} "
                f"| {_mb(fl.get('rss'))} | {cpu.get(name, 0):.2f} |"
            )
        lines.append("")
        lines.append(
            f"Idle CPU measured over {fp['idle_seconds']} s, once start-up work was over "
            f"({fp.get('settled_after_s', '?')} s after the bundle answered). "
            "The floor is one `python -c` per process importing the same modules (as listed "
            "in that process's `sys.modules` at exit) and then sleeping; floor processes run "
            "together, without the bundle."
        )
    st = r.get("startup")
    if st:
        med = st["median"]
        lines += [
            "",
            f"## Start-up (from starting supervisord; median of {len(st['runs'])} run(s))",
            "",
            "| milestone | seconds |",
            "| --- | ---: |",
            f"| retained status `online` seen by the operator | {med['online_s']} |",
            f"| first answered `agent/ping` | {med['agent_ping_s']} |",
            f"| first answered `stats/ping` | {med['stats_ping_s']} |",
        ]
        for k, what in (
            ("supervisord_ready_s", "supervisord logs 'started' (its own imports)"),
            ("gateway_spawned_s", "supervisord spawns the gateway"),
            ("gateway_connected_s", "gateway logs 'connected' (imports, TLS, CONNECT)"),
        ):
            if k in med:
                lines.append(f"| of which: {what} | {med[k]} |")
    o = r.get("ops")
    if o:
        lines += [
            "",
            "## Service operations",
            "",
            "| call | wall p50 ms | worker CPU ms/call | gateway CPU ms/call |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name in ("stats/ping", "stats/get"):
            s = o.get(name)
            if s:
                lines.append(
                    f"| {name} | {s['wall_ms']['p50']} | {s['worker_cpu_ms_per_call']} "
                    f"| {s['gateway_cpu_ms_per_call']} |"
                )
        lines += ["", _native("apt `list` (all installed) vs `dpkg-query -W`", o.get("apt"))]
        lines += ["", _native("containers `ps` vs the Docker API", o.get("containers"))]
    return "\n".join(lines) + "\n"


def _native(title: str, d: dict[str, Any] | None) -> str:
    if not d:
        return f"{title}: not run."
    if "skipped" in d:
        return f"{title}: skipped ({d['skipped']})."
    rows = [f"{title}:", "", "| figure | value |", "| --- | ---: |"]
    rows += [f"| {k} | {v} |" for k, v in d.items()]
    return "\n".join(rows)
