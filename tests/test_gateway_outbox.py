"""The gateway's outbox with several publishes in flight: order, acknowledgement, requeue."""

from __future__ import annotations

import asyncio

from services.gateway.mqtt_link import Outbox, Outgoing


def _msg(i: int, droppable: bool = False) -> Outgoing:
    return Outgoing(f"t/{i}", str(i).encode(), droppable=droppable)


async def test_take_keeps_messages_counted_until_acked() -> None:
    box = Outbox()
    a, b = _msg(1), _msg(2)
    box.put(a)
    box.put(b)
    assert await box.take() is a
    assert await box.take() is b
    assert len(box) == 2  # in flight still counts (a restart waits for the broker's PUBACKs)
    box.acked(b)
    assert len(box) == 1
    box.acked(a)
    assert len(box) == 0


async def test_requeue_puts_unacknowledged_first_in_their_order() -> None:
    box = Outbox()
    msgs = [_msg(i) for i in range(5)]
    for m in msgs:
        box.put(m)
    taken = [await box.take() for _ in range(3)]
    box.acked(taken[1])
    box.put(_msg(99))
    box.requeue()
    order = [await box.take() for _ in range(5)]
    assert [m.topic for m in order] == ["t/0", "t/2", "t/3", "t/4", "t/99"]


async def test_acked_removes_that_object_not_an_equal_one() -> None:
    box = Outbox()
    first, twin = _msg(7), _msg(7)
    assert first == twin
    box.put(first)
    box.put(twin)
    await box.take()
    got = await box.take()
    box.acked(got)
    box.requeue()
    assert await box.take() is first


async def test_take_waits_for_a_message() -> None:
    box = Outbox()
    waiter = asyncio.ensure_future(box.take())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    m = _msg(1)
    box.put(m)
    assert await asyncio.wait_for(waiter, 1) is m


async def test_full_outbox_drops_oldest_droppable_not_in_flight() -> None:
    box = Outbox(limit=2)
    keep = _msg(1)
    box.put(keep)
    assert await box.take() is keep  # in flight: never dropped
    box.put(_msg(2, droppable=True))
    box.put(_msg(3))
    box.put(_msg(4))  # full: the droppable one goes
    assert box.dropped == 1
    box.requeue()
    assert [(await box.take()).topic for _ in range(3)] == ["t/1", "t/3", "t/4"]
