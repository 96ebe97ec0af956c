"""Property-based fuzzing of the command path (hypothesis, bounded time).

1. Every action of every table in the tree (``common.apidocs.tables()``): its argument
   decoding (``ActionTable.decode_args``) gets arbitrary bytes, arbitrary JSON values, and
   JSON objects built from the action's own field names with hostile values; only our
   ``TetherError``s (in practice ``invalid_request``) may come out.
2. The router (``Router.handle``, i.e. ``_decode`` + reply target + expiry + ``_check_names`` +
   authorization + dispatch): arbitrary topics below the device's command prefix and arbitrary
   payloads, MQTT 5 properties included; every command gets exactly one well-formed reply
   with a known error code, and nothing escapes.

Examples per property are kept small so the module runs in well under a minute; set
``TETHER_FUZZ_EXAMPLES`` to fuzz longer (e.g. nightly).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import zmq.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import Raw

from common.apidocs import tables
from common.config import AuthzSettings, parse_settings
from common.dispatch import Action, ActionTable
from common.errors import ErrorCode, TetherError, UnknownAction
from common.messages import Reply
from common.topics import Topics
from common.worker_client import WorkerClient
from services.gateway import agent
from services.gateway.authz import Authorizer, mutating_lookup
from services.gateway.mqtt_link import Incoming, Outgoing
from services.gateway.router import Router
from tests.harness import short_tmpdir

EXAMPLES = int(os.environ.get("TETHER_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

ALL: list[tuple[ActionTable[Any], Action[Any, Any, Any]]] = [(t, a) for t in tables() for a in t]
IDS = [f"{t.service}/{a.name}" for t, a in ALL]

# JSON scalars that upset decoders: huge and negative numbers, odd floats, odd strings.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -1, 0]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "../../etc/passwd", "a" * 300, "é🙂", "-rf", "$(id)", "*"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def _field_objects(args_type: Any) -> st.SearchStrategy[dict[str, Any]]:
    names = list(getattr(args_type, "__struct_fields__", ())) or ["x"]
    return st.dictionaries(st.sampled_from([*names, "extra"]), json_values, max_size=len(names) + 1)


def _check_decode(table: ActionTable[Any], action: str, data: bytes) -> None:
    error: TetherError | None = None
    try:
        table.decode_args(action, data)
    except TetherError as err:
        error = err
    if error is not None:
        assert error.code in set(ErrorCode)
        assert error.message
        msgspec.json.encode(error.details)  # details must be JSON-able


@pytest.mark.parametrize(("table", "action"), ALL, ids=IDS)
@FUZZ
@given(data=st.data())
def test_decode_args_raises_only_our_errors(
    table: ActionTable[Any], action: Action[Any, Any, Any], data: st.DataObject
) -> None:
    raw = data.draw(
        st.one_of(
            st.binary(max_size=64),
            json_values.map(msgspec.json.encode),
            _field_objects(action.args).map(msgspec.json.encode),
        ),
        label="args",
    )
    _check_decode(table, action.name, raw)


# --- the router --------------------------------------------------------------------------


class RouterRig:
    """A real Router with real (not running) worker clients, the agent's real argument
    decoding, the real Authorizer, and a publish that records every reply."""

    def __init__(self) -> None:
        self.dir = short_tmpdir("tfz-")
        self.settings = parse_settings(
            f'device_id = "fz"\nruntime_dir = "{self.dir}"\nstate_dir = "{self.dir}"\n'
        )
        self.loop = asyncio.new_event_loop()
        self.zctx = zmq.asyncio.Context()
        self.out: list[Outgoing] = []
        names = [t.service for t in tables() if t.service != "agent"]
        self.workers = {n: WorkerClient(self.zctx, n, str(self.dir), 8) for n in names}
        authz = Authorizer(
            AuthzSettings(deny=["containers/*"], read_only=True),
            mutating_lookup(lambda: [t.info() for t in tables()]),
        )
        self.topics = Topics("tether", "fz")
        self.router = Router(
            self.settings,
            self.topics,
            self.out.append,
            self.workers,  # type: ignore[arg-type]
            local={"agent": self._agent},
            authorize=authz.authorize,
        )

    async def _agent(self, action: str, args: Raw, timeout: float) -> Any:
        if action not in agent.ACTIONS:
            raise UnknownAction(f"agent has no action {action!r}")
        agent.ACTIONS.decode_args(action, args)  # decoding only: no supervisor here
        return {}

    def close(self) -> None:
        for w in self.workers.values():
            w.close()
        self.zctx.term()
        self.loop.close()
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def rig() -> Iterator[RouterRig]:
    r = RouterRig()
    yield r
    r.close()


segment = st.from_regex(r"\A[a-z][a-z0-9_]{0,8}\Z") | st.text(max_size=12)
known_targets = st.sampled_from([f"{t.service}/{a.name}" for t, a in ALL])
payloads = st.one_of(
    st.binary(max_size=80),
    json_values.map(msgspec.json.encode),
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(st.text(max_size=20), scalars),
            "args": json_values,
            "reply_to": st.one_of(st.text(max_size=30), scalars),
            "expires_at": st.one_of(st.floats(allow_nan=False), scalars),
        },
    ).map(msgspec.json.encode),
)


@FUZZ
@given(
    target=known_targets | st.tuples(segment, segment).map("/".join),
    payload=payloads,
    response_topic=st.none() | st.text(max_size=30),
    correlation=st.none() | st.binary(max_size=8),
)
def test_router_answers_every_command_exactly_once(
    rig: RouterRig,
    target: str,
    payload: bytes,
    response_topic: str | None,
    correlation: bytes | None,
) -> None:
    topic = f"tether/fz/cmd/{target}"
    if rig.topics.parse_cmd(topic) is None:
        return  # not a command topic (e.g. empty service): the router ignores it
    rig.out.clear()
    msg = Incoming(topic, payload, response_topic or None, correlation)
    rig.loop.run_until_complete(asyncio.wait_for(rig.router.handle(msg), 10))
    assert len(rig.out) <= 1
    if not rig.out:
        return  # a redelivery of a command id still running: answered when it ends
    reply = msgspec.json.decode(rig.out[0].payload, type=Reply)
    if not reply.ok:
        assert reply.error is not None and reply.error.code in set(ErrorCode)
        assert reply.error.code is not ErrorCode.INTERNAL, reply.error


# --- regression tests for what the fuzzers found -----------------------------------------


def test_regression_null_and_scalar_args_are_invalid_requests() -> None:
    # args that are JSON scalars or arrays must be invalid_request, never a crash.
    for t, a in ALL:
        for raw in (b"null", b"[]", b"1", b'"x"', b"\xff", b"{", b'{"' + b"a" * 10 + b'":'):
            _check_decode(t, a.name, raw)
