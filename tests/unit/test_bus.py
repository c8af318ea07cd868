"""The in-process event bus: per-subscriber queues, overflow policies, errors, draining."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import pytest

from cti.bus import EventBus
from cti.calls.events import AgentStateChanged, CallOffered, DomainEvent


def offered(n: int) -> CallOffered:
    return CallOffered(
        at=float(n), linkedid=f"L{n}", uniqueid=f"U{n}", caller_number=None, caller_name=None, dnis=None,
        queue="q", position=n,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class VipOffered(CallOffered):
    """A subclass: subscribers of CallOffered get it too."""


def agent_state(n: int) -> AgentStateChanged:
    return AgentStateChanged(
        at=float(n), agent="agent1001", interface="PJSIP/agent1001", name=None, state="ready", previous_state=None,
        paused=False, pause_reason=None, queues=(), paused_queues=(), available=True, linkedid=None,
    )  # fmt: skip


class Gate:
    """A handler that records events and waits for ``open`` before returning."""

    def __init__(self, opened: bool = False) -> None:
        self.seen: list[DomainEvent] = []
        self.event = asyncio.Event()
        if opened:
            self.event.set()

    async def __call__(self, event: DomainEvent) -> None:
        self.seen.append(event)
        await self.event.wait()

    def open(self) -> None:
        self.event.set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_events_arrive_in_order_filtered_by_type_and_subclass() -> None:
    bus = EventBus()
    calls: list[DomainEvent] = []
    everything: list[DomainEvent] = []
    bus.subscribe(calls.append, (CallOffered,), name="calls")
    bus.subscribe(everything.append, name="all")
    sent = [offered(1), agent_state(2), VipOffered(**dataclasses.asdict(offered(3))), offered(4)]
    bus.publish_all(sent)
    await bus.close()
    assert calls == [sent[0], sent[2], sent[3]]
    assert everything == sent


async def test_a_slow_subscriber_never_blocks_publish_or_the_others() -> None:
    bus = EventBus()
    slow = Gate()
    fast: list[DomainEvent] = []
    bus.subscribe(slow, name="slow", maxsize=10, overflow="drop_new")
    bus.subscribe(fast.append, name="fast", maxsize=10_000)
    # CPU time of this thread, not wall time: the claim is "publish only enqueues",
    # and a loaded CI machine stretches wall time without any more work being done.
    started = time.thread_time()
    for n in range(5000):
        bus.publish(offered(n))
    assert time.thread_time() - started < 0.5  # enqueue only; the slow handler is stuck
    await settle()
    assert len(fast) == 5000
    slow.open()
    await bus.close()


async def test_drop_new_counts_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    gate = Gate()
    sub = bus.subscribe(gate, name="panel", maxsize=3, overflow="drop_new")
    bus.publish(offered(0))
    await settle()  # the worker holds event 0
    with caplog.at_level(logging.WARNING, logger="cti.bus"):
        for n in range(1, 10):
            bus.publish(offered(n))
    assert sub.dropped == 6
    assert "panel" in caplog.text and "dropped" in caplog.text
    assert len(caplog.records) == 3  # drops 1, 2 and 4 are logged, not each one
    gate.open()
    await bus.close()
    assert [e.position for e in gate.seen] == [0, 1, 2, 3]  # type: ignore[attr-defined]


async def test_drop_old_keeps_the_freshest() -> None:
    bus = EventBus()
    gate = Gate()
    sub = bus.subscribe(gate, name="wallboard", maxsize=3, overflow="drop_old")
    bus.publish(offered(0))
    await settle()
    for n in range(1, 10):
        bus.publish(offered(n))
    gate.open()
    await bus.close()
    assert [e.position for e in gate.seen] == [0, 7, 8, 9]  # type: ignore[attr-defined]
    assert sub.dropped == 6


async def test_block_policy_loses_nothing_and_keeps_order() -> None:
    bus = EventBus()
    gate = Gate()
    sub = bus.subscribe(gate, name="call-log", maxsize=2, overflow="block")
    for n in range(50):
        bus.publish(offered(n))  # returns at once although the subscriber is stuck
    await settle()
    assert (sub.stats.queued, sub.stats.backlog, sub.dropped) == (2, 47, 0)
    gate.open()
    await bus.close()
    assert [e.position for e in gate.seen] == list(range(50))  # type: ignore[attr-defined]
    assert (sub.handled, sub.dropped) == (50, 0)


async def test_publish_wait_gives_back_pressure_from_block_subscribers() -> None:
    bus = EventBus()
    gate = Gate()
    bus.subscribe(gate, name="call-log", maxsize=1, overflow="block")
    bus.subscribe(lambda e: None, name="fire-and-forget", maxsize=1)  # drop policy: never waited for
    bus.publish(offered(0))
    await settle()
    bus.publish(offered(1))  # fills the queue
    waiting = asyncio.create_task(bus.publish_wait(offered(2)))
    await settle()
    assert not waiting.done()
    gate.open()
    await asyncio.wait_for(waiting, 1)
    await bus.close()
    assert [e.position for e in gate.seen] == [0, 1, 2]  # type: ignore[attr-defined]


async def test_handler_errors_are_logged_with_the_event_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    handled: list[int] = []

    async def flaky(event: CallOffered) -> None:
        if event.position == 1:
            raise RuntimeError("database went away")
        handled.append(event.position or 0)

    sub = bus.subscribe(flaky, (CallOffered,), name="flaky")
    with caplog.at_level(logging.ERROR, logger="cti.bus"):
        bus.publish_all([offered(0), offered(1), offered(2)])
        await bus.close()
    assert handled == [0, 2]
    assert (sub.handled, sub.failed) == (2, 1)
    (record,) = caplog.records
    assert "flaky" in record.getMessage() and "L1" in record.getMessage()
    assert record.exc_info is not None and "database went away" in str(record.exc_info[1])


async def test_close_drains_then_refuses(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[DomainEvent] = []

    async def slowish(event: DomainEvent) -> None:
        await asyncio.sleep(0.001)
        seen.append(event)

    bus.subscribe(slowish, name="slowish", maxsize=100, overflow="block")
    bus.publish_all(offered(n) for n in range(150))
    await bus.close()
    assert len(seen) == 150
    with caplog.at_level(logging.WARNING, logger="cti.bus"):
        bus.publish(offered(999))
    assert "closed" in caplog.text
    with pytest.raises(RuntimeError):
        bus.subscribe(seen.append)


async def test_close_cancels_a_stuck_subscriber_after_the_grace(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    stuck = Gate()
    sub = bus.subscribe(stuck, name="stuck")
    bus.publish_all([offered(0), offered(1)])
    await settle()
    with caplog.at_level(logging.WARNING, logger="cti.bus"):
        await bus.close(grace=0.05)
    assert sub.done
    assert "did not drain" in caplog.text


async def test_unsubscribe_drains_and_stops_delivery() -> None:
    bus = EventBus()
    seen: list[DomainEvent] = []
    sub = bus.subscribe(seen.append, name="temporary")
    bus.publish(offered(1))
    await bus.unsubscribe(sub)
    bus.publish(offered(2))
    await bus.close()
    assert [e.linkedid for e in seen] == ["L1"]  # type: ignore[attr-defined]
    assert bus.stats() == []


async def test_a_queue_must_be_bounded() -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match="bounded"):
        bus.subscribe(lambda e: None, maxsize=0)
    await bus.close()


async def test_an_inline_subscriber_runs_inside_publish_in_route_order_and_its_errors_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[str] = []

    def pop(event: DomainEvent) -> None:
        if isinstance(event, CallOffered) and event.position == 2:
            raise RuntimeError("broken pop")
        seen.append(f"inline {event.linkedid}")
        if isinstance(event, CallOffered):
            bus.publish(agent_state(event.position))  # what it publishes reaches the others first

    queued = Gate(opened=True)
    inline = bus.subscribe(pop, (CallOffered,), name="pop", inline=True)
    bus.subscribe(queued, (CallOffered, AgentStateChanged), name="queued")
    with caplog.at_level(logging.ERROR, logger="cti.bus"):
        bus.publish(offered(1))
        assert seen == ["inline L1"]  # before publish returned, nothing awaited
        bus.publish(offered(2))
        bus.publish(agent_state(3))  # not its type
    await bus.close()
    assert [type(e).__name__ for e in queued.seen] == [
        "AgentStateChanged",
        "CallOffered",
        "CallOffered",
        "AgentStateChanged",
    ]
    stats = inline.stats
    assert (stats.handled, stats.failed, stats.queued, stats.dropped) == (1, 1, 0, 0)
    assert "subscriber pop failed" in caplog.text and "L2" in caplog.text
    assert inline.done
    bus2 = EventBus()
    after_close = bus2.subscribe(pop, (CallOffered,), name="pop", inline=True)
    await bus2.unsubscribe(after_close)
    after_close.offer(offered(4))
    assert seen == ["inline L1"]  # stopped: no more calls


async def test_an_inline_subscriber_must_be_synchronous() -> None:
    bus = EventBus()

    async def handler(event: DomainEvent) -> None:
        return None

    class Handler:
        async def __call__(self, event: DomainEvent) -> None:
            return None

    for wrong in (handler, Handler()):
        with pytest.raises(ValueError, match="must be synchronous"):
            bus.subscribe(wrong, inline=True)
    await bus.close()
