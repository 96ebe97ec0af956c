"""The ``tether`` command line.

  tether call DEVICE SERVICE/ACTION [JSON]   send a command, print the reply
  tether demo                                local broker + bundle until Ctrl-C
  tether health [--json] [--watch]           the bundle's health from the local topic
  tether api-docs [--check]                  regenerate docs/api.md and docs/asyncapi.json
  tether console [--port 8080] [--broker URL]  serve the web console on 127.0.0.1
  tether pki init DIR                        create (or reuse) a fleet CA
  tether pki sign --ca DIR CSR --out CRT     sign a device's CSR (operator side)
  tether pki issue --ca DIR --name N --out-dir D [--server HOST...]   broker/operator certs
  tether provision --device-id ID [--dir D]  on the device: key (0600) + CSR
  tether provision --install CRT --ca CA     on the device: install the signed certificate
  tether broker-config --out DIR ...         mosquitto.conf + ACL + passwords for a fleet

Exit codes: 0 success, 1 error reply or failed job, 2 usage or configuration error,
3 no answer (broker unreachable, timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import msgspec

EXIT_OK, EXIT_ERROR_REPLY, EXIT_USAGE, EXIT_NO_ANSWER = 0, 1, 2, 3

_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def cmd_call(a: argparse.Namespace) -> int:
    from common.client import ClientConfigError, ClientError, TetherClient, load_client_settings
    from common.demo import default_client_config
    from common.topics import valid_name_segment

    service, sep, action = a.target.partition("/")
    if (
        not sep
        or not valid_name_segment(service)
        or not all(valid_name_segment(p) for p in action.split("/"))
    ):
        print(
            "tether call: give SERVICE/ACTION in lowercase words, e.g. stats/get or "
            "network/wifi/scan",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not _DEVICE_ID.match(a.device):
        print(
            f"tether call: {a.device!r} is not a device id (letters, digits, '_', '.', '-'; "
            "at most 64)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    args = None
    if a.args is not None:
        try:
            args = json.loads(a.args)
            msgspec.json.encode(args)  # e.g. a lone surrogate ("\ud800") cannot be sent
        except (json.JSONDecodeError, UnicodeError) as err:
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
            status = await c.last_status(a.device)
            if status is None:
                raise ClientError(
                    f"device {a.device!r} has never connected to this broker (no retained "
                    "status); check the device id"
                )
            if status.get("state") != "online":
                print(
                    f"tether call: {a.device} is offline; the command waits at the broker "
                    f"for up to {a.timeout:.0f}s",
                    file=sys.stderr,
                )
            # Subscribed before the command is sent, so a job's first events are not missed.
            async with c.subscribe(c.topics(a.device).jobs_filter()) as early:
                reply = await c.call(a.device, service, action, args, timeout=a.timeout)
                _print_json(reply)
                if not reply.get("ok"):
                    return EXIT_ERROR_REPLY
                result = reply.get("result")
                if a.follow and isinstance(result, dict) and "job_id" in result:
                    final: dict[str, Any] = {}
                    async for ev in c.follow_job(
                        a.device, result["job_id"], a.job_timeout, early=early
                    ):
                        _print_json(ev)
                        final = ev
                    return EXIT_OK if final.get("state") == "succeeded" else EXIT_ERROR_REPLY
            return EXIT_OK

    try:
        return asyncio.run(go())
    except ClientConfigError as err:
        print(f"tether call: {path}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ClientError as err:
        print(f"tether call: {err}", file=sys.stderr)
        return EXIT_NO_ANSWER


def cmd_demo(a: argparse.Namespace) -> int:
    from common.demo import run_demo

    return run_demo(a.port, a.ws_port, a.console_port, a.read_only)


def cmd_health(a: argparse.Namespace) -> int:
    from common.config import DEFAULT_CONFIG_PATH, ENV_CONFIG, ConfigError, load_settings
    from common.demo import demo_dir
    from common.healthview import show_health

    path = a.config
    demo_config = demo_dir() / "tether.toml"
    if not path and not os.environ.get(ENV_CONFIG) and not DEFAULT_CONFIG_PATH.exists():
        path = str(demo_config) if demo_config.exists() else None  # the running demo's
    try:
        settings = load_settings(path)
    except ConfigError as err:
        print(f"tether health: {err}", file=sys.stderr)
        return EXIT_USAGE
    return show_health(settings, as_json=a.json, watch=a.watch, wait=a.wait)


def cmd_api_docs(a: argparse.Namespace) -> int:
    from common.apidocs import write_docs

    rc: int = write_docs(Path(a.out), check=a.check)
    return rc


def cmd_pki_init(a: argparse.Namespace) -> int:
    from common.pki import PkiError, init_ca

    try:
        ca, created = init_ca(Path(a.dir), a.cn, a.days)
    except PkiError as err:
        print(f"tether pki init: {err}", file=sys.stderr)
        return EXIT_USAGE
    verb = "created" if created else "using the existing"
    print(f"{verb} CA {ca.cert.subject.rfc4514_string()} in {ca.dir}")
    print(f"  {ca.cert_path}: give it to the broker and every device")
    print(f"  {ca.dir / 'ca.key'}: keep it private (mode 0600), never copy it to a device")
    return EXIT_OK


def cmd_pki_sign(a: argparse.Namespace) -> int:
    from common.pki import PkiError, load_ca, load_csr, sign_device_csr, write_cert

    try:
        ca = load_ca(Path(a.ca))
        try:
            data = Path(a.csr).read_bytes()
        except OSError as err:
            raise PkiError(f"{a.csr}: {err.strerror}") from err
        cert = sign_device_csr(ca, load_csr(data), days=a.days)
    except PkiError as err:
        print(f"tether pki sign: {err}", file=sys.stderr)
        return EXIT_USAGE
    write_cert(Path(a.out), cert)
    print(
        f"signed {cert.subject.rfc4514_string()} until {cert.not_valid_after_utc:%Y-%m-%d}: "
        f"{a.out}\ncopy it and {ca.cert_path} to the device and run "
        "`tether provision --install CRT --ca ca.crt`"
    )
    return EXIT_OK


def cmd_pki_issue(a: argparse.Namespace) -> int:
    from common.pki import PkiError, issue, load_ca, valid_device_id

    if not valid_device_id(a.name):  # also the file name: no '/' or '..'
        print(f"tether pki issue: {a.name!r} is not a valid name", file=sys.stderr)
        return EXIT_USAGE
    try:
        ca = load_ca(Path(a.ca))
    except PkiError as err:
        print(f"tether pki issue: {err}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    pair = issue(out, a.name, a.name, ca.key, ca.cert, a.server or None, a.days)
    print(f"{pair.cert}\n{pair.key} (mode 0600)")
    return EXIT_OK


def cmd_provision(a: argparse.Namespace) -> int:
    from common.pki import PkiError
    from common.provision import DeviceFiles, install, make_request, mqtt_section

    d = Path(a.dir)
    try:
        if a.install:
            if not a.ca:
                print("tether provision: --install needs --ca CA.crt", file=sys.stderr)
                return EXIT_USAGE
            device = install(d, Path(a.install), Path(a.ca))
            files = DeviceFiles(d)
            host, _, port = (a.broker or "BROKER").partition(":")
            print(f"installed the certificate of {device}; put this in tether.toml:\n")
            print(f'device_id = "{device}"\n')
            print(mqtt_section(files, host, int(port) if port.isdigit() else 8883), end="")
            return EXIT_OK
        if not a.device_id:
            print("tether provision: give --device-id ID (or --install CRT)", file=sys.stderr)
            return EXIT_USAGE
        files, created = make_request(d, a.device_id, new_key_=a.new_key)
    except PkiError as err:
        print(f"tether provision: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{'created' if created else 'kept'} the device key {files.key} (mode 0600)")
    print(
        f"certificate signing request: {files.csr}\nsign it on the operator side with "
        f"`tether pki sign --ca CA_DIR {files.csr.name} --out {a.device_id}.crt`"
    )
    return EXIT_OK


def cmd_broker_config(a: argparse.Namespace) -> int:
    from common.brokerconf import (
        BrokerConfigError,
        BrokerPlan,
        parse_grant,
        parse_operator,
        read_devices,
        write_broker_config,
    )

    try:
        devices = list(a.device)
        for f in a.devices_from:
            devices += read_devices(Path(f))
        grants: dict[str, list[str]] = {}
        for g in a.grant:
            name, pattern = parse_grant(g)
            grants.setdefault(name, []).append(pattern)
        plan = BrokerPlan(
            out=Path(a.out),
            ca=Path(a.ca),
            server_cert=Path(a.server_cert),
            server_key=Path(a.server_key),
            devices=devices,
            operators=[parse_operator(o) for o in a.operator],
            grants=grants,
            prefix=a.prefix,
            bind=a.bind,
            port=a.port,
            ws_port=a.ws_port or None,
            persistence_dir=Path(a.persistence_dir) if a.persistence_dir else None,
            log_file=Path(a.log_file) if a.log_file else None,
            user=a.user,
        )
        written = write_broker_config(plan)
    except BrokerConfigError as err:
        print(f"tether broker-config: {err}", file=sys.stderr)
        return EXIT_USAGE
    for p in written:
        print(p)
    return EXIT_OK


def cmd_console(a: argparse.Namespace) -> int:
    from common.console import run_console

    return run_console(a.port, a.host, a.broker)


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
    c.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the reply (default 30)"
    )
    c.add_argument(
        "--follow", action="store_true", help="for a job: print its events until it ends"
    )
    c.add_argument(
        "--job-timeout",
        type=float,
        default=3600.0,
        help="with --follow: seconds to wait for the job's end (default 3600)",
    )
    c.set_defaults(func=cmd_call)

    d = sub.add_parser("demo", help="run a local broker and the bundle until Ctrl-C")
    d.add_argument("--port", type=int, default=8883)
    d.add_argument("--ws-port", type=int, default=9001)
    d.add_argument(
        "--read-only",
        action="store_true",
        help="deny every action that changes this machine (authz read_only)",
    )
    d.add_argument("--console-port", type=int, default=8080, help="web console (0: any free)")
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

    k = sub.add_parser("pki", help="fleet CA: create it, sign device CSRs, issue certificates")
    ksub = k.add_subparsers(dest="pki_cmd", required=True)
    ki = ksub.add_parser("init", help="create a fleet CA in DIR (or use the one there)")
    ki.add_argument("dir")
    ki.add_argument("--cn", default="Tether fleet CA")
    ki.add_argument("--days", type=int, default=3650)
    ki.set_defaults(func=cmd_pki_init)
    ks = ksub.add_parser("sign", help="sign a device's CSR (CN = device id; client auth)")
    ks.add_argument("--ca", required=True, help="the CA folder (ca.crt + ca.key)")
    ks.add_argument("csr")
    ks.add_argument("--out", required=True, help="where to write the certificate")
    ks.add_argument("--days", type=int, default=825)
    ks.set_defaults(func=cmd_pki_sign)
    kc = ksub.add_parser("issue", help="issue a key + certificate here (broker, operator)")
    kc.add_argument("--ca", required=True)
    kc.add_argument("--name", required=True, help="the CN (operator name, or broker host)")
    kc.add_argument("--out-dir", required=True)
    kc.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="HOST",
        help="a server certificate for these DNS names / IPs (repeat); default: a client one",
    )
    kc.add_argument("--days", type=int, default=825)
    kc.set_defaults(func=cmd_pki_issue)

    v = sub.add_parser("provision", help="on a device: make its key and CSR, install its cert")
    v.add_argument("--device-id")
    v.add_argument("--dir", default="/etc/tether")
    v.add_argument("--new-key", action="store_true", help="replace an existing device key")
    v.add_argument("--install", metavar="CRT", help="install this signed certificate")
    v.add_argument("--ca", metavar="CA_CRT", help="the fleet CA certificate (with --install)")
    v.add_argument("--broker", metavar="HOST[:PORT]", help="for the printed [mqtt] section")
    v.set_defaults(func=cmd_provision)

    b = sub.add_parser("broker-config", help="write mosquitto.conf, acl and passwd for a fleet")
    b.add_argument("--out", required=True)
    b.add_argument("--ca", required=True, help="the fleet CA certificate")
    b.add_argument("--server-cert", required=True)
    b.add_argument("--server-key", required=True)
    b.add_argument("--device", action="append", default=[], metavar="ID")
    b.add_argument("--devices-from", action="append", default=[], metavar="FILE")
    b.add_argument(
        "--operator",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="a WebSocket operator login (NAME:@FILE reads the password from FILE)",
    )
    b.add_argument(
        "--grant",
        action="append",
        default=[],
        metavar="NAME:DEVICE",
        help="let operator NAME command DEVICE (an id, a glob over the device list, or '*')",
    )
    b.add_argument("--prefix", default="tether")
    b.add_argument("--bind", default="0.0.0.0")  # noqa: S104 - a broker serves the network
    b.add_argument("--port", type=int, default=8883)
    b.add_argument("--ws-port", type=int, default=8884, help="0 disables the WebSocket listener")
    b.add_argument("--persistence-dir")
    b.add_argument("--log-file", help="default: syslog")
    b.add_argument("--user", help="the user mosquitto runs as (default: mosquitto's own)")
    b.set_defaults(func=cmd_broker_config)

    w = sub.add_parser("console", help="serve the web console (static files) on a local port")
    w.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    w.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    w.add_argument(
        "--broker",
        help="the broker's WebSocket URL, e.g. ws://localhost:9001: the page connects at once",
    )
    w.set_defaults(func=cmd_console)
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    try:
        rc = a.func(a)
    except KeyboardInterrupt:
        rc = 130
    except BrokenPipeError:  # e.g. `tether health | head`
        sys.stderr.close()
        rc = 0
    raise SystemExit(rc)


if __name__ == "__main__":
    main()
