"""The ``tether`` command line.

  tether call DEVICE SERVICE/ACTION [JSON]   send a command, print the reply
  tether demo                                local broker + bundle until Ctrl-C
  tether health [--json] [--watch]           the bundle's health from the local topic
  tether api-docs [--check]                  regenerate docs/api.md and docs/asyncapi.json

Exit codes: 0 success, 1 error reply or failed job, 2 usage or configuration error,
3 no answer (broker unreachable, timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

EXIT_OK, EXIT_ERROR_REPLY, EXIT_USAGE, EXIT_NO_ANSWER = 0, 1, 2, 3


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def cmd_call(a: argparse.Namespace) -> int:
    from common.client import ClientError, TetherClient, load_client_settings
    from common.demo import default_client_config

    service, sep, action = a.target.partition("/")
    if not sep or not service or not action:
        print("tether call: give SERVICE/ACTION, e.g. stats/get", file=sys.stderr)
        return EXIT_USAGE
    args = None
    if a.args is not None:
        try:
            args = json.loads(a.args)
        except json.JSONDecodeError as err:
            print(f"tether call: JSON arguments are invalid: {err}", file=sys.stderr)
            return EXIT_USAGE
    path = Path(a.client_config) if a.client_config else default_client_config()
    if path is None:
        print(
            "tether call: no client configuration: pass --client-config FILE, set "
            "TETHER_CLIENT_CONFIG, create ~/.config/tether/client.toml, or start "
            "`tether demo`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        settings = load_client_settings(path)
    except (OSError, msgspec.MsgspecError) as err:
        print(f"tether call: {path}: {err}", file=sys.stderr)
        return EXIT_USAGE

    async def go() -> int:
        async with TetherClient(settings) as c:
            reply = await c.call(a.device, service, action, args, timeout=a.timeout)
            _print_json(reply)
            if not reply.get("ok"):
                return EXIT_ERROR_REPLY
            result = reply.get("result")
            if a.follow and isinstance(result, dict) and "job_id" in result:
                final: dict[str, Any] = {}
                async for ev in c.follow_job(a.device, result["job_id"], a.job_timeout):
                    _print_json(ev)
                    final = ev
                return EXIT_OK if final.get("state") == "succeeded" else EXIT_ERROR_REPLY
            return EXIT_OK

    try:
        return asyncio.run(go())
    except ClientError as err:
        print(f"tether call: {err}", file=sys.stderr)
        return EXIT_NO_ANSWER


def cmd_demo(a: argparse.Namespace) -> int:
    from common.demo import run_demo

    return run_demo(a.port, a.ws_port)


def cmd_health(a: argparse.Namespace) -> int:
    from common.config import ConfigError, load_settings
    from common.healthview import show_health

    try:
        settings = load_settings(a.config)
    except ConfigError as err:
        print(f"tether health: {err}", file=sys.stderr)
        return EXIT_USAGE
    return show_health(settings, as_json=a.json, watch=a.watch, wait=a.wait)


def cmd_api_docs(a: argparse.Namespace) -> int:
    from common.apidocs import write_docs

    rc: int = write_docs(Path(a.out), check=a.check)
    return rc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tether", description="Manage Tether devices over MQTT.")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("call", help="send a command to a device and print the reply")
    c.add_argument("device")
    c.add_argument("target", metavar="SERVICE/ACTION")
    c.add_argument("args", nargs="?", metavar="JSON", help="the action's arguments object")
    c.add_argument(
        "--client-config",
        help="broker settings (default: ~/.config/tether/client.toml, or the running demo's)",
    )
    c.add_argument("--timeout", type=float, default=30.0)
    c.add_argument(
        "--follow", action="store_true", help="for a job: print its events until it ends"
    )
    c.add_argument("--job-timeout", type=float, default=3600.0)
    c.set_defaults(func=cmd_call)

    d = sub.add_parser("demo", help="run a local broker and the bundle until Ctrl-C")
    d.add_argument("--port", type=int, default=8883)
    d.add_argument("--ws-port", type=int, default=9001)
    d.set_defaults(func=cmd_demo)

    h = sub.add_parser("health", help="the bundle's health from the local health topic")
    h.add_argument(
        "--config",
        help="the device configuration (default: $TETHER_CONFIG or /etc/tether/tether.toml)",
    )
    h.add_argument("--json", action="store_true")
    h.add_argument("--watch", action="store_true", help="follow changes until Ctrl-C")
    h.add_argument("--wait", type=float, default=3.0, help="seconds to listen for heartbeats")
    h.set_defaults(func=cmd_health)

    g = sub.add_parser("api-docs", help="generate docs/api.md and docs/asyncapi.json")
    g.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs"))
    g.add_argument("--check", action="store_true", help="fail if the files are stale")
    g.set_defaults(func=cmd_api_docs)
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    try:
        rc = a.func(a)
    except KeyboardInterrupt:
        rc = 130
    raise SystemExit(rc)


if __name__ == "__main__":
    main()
