"""Shared by the telephony tests: waiting for events and call-log rows, and a running engine."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from asterisk_sandbox import BaresipPhone, Sandbox
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.models import Call, CallAgent
from crm_core.settings import QueuePolicy, Settings
from cti.calls.events import DomainEvent
from cti.engine import CtiEngine

MEMBER_SERVICE = "4008001234"
VIP = "4008001235"
Sessions = async_sessionmaker[AsyncSession]


class Recorder:
    """Collects domain events from the bus so tests can wait for them."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def __call__(self, event: DomainEvent) -> None:
        self.events.append(event)

    def mark(self) -> int:
        return len(self.events)

    async def wait(
        self,
        kind: type[DomainEvent],
        *,
        since: int = 0,
        timeout: float = 15.0,
        where: Callable[[Any], bool] = lambda _e: True,
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events[since:]:
                if isinstance(event, kind) and where(event):
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {kind.__name__} within {timeout}s; saw {[e.type for e in self.events[since:]]}")


async def wait_call(sessions: Sessions, *where: Any, state: str = "ended", timeout: float = 10.0) -> Call:
    """Poll the call log until the call matching `where` reaches `state`."""
    deadline = time.monotonic() + timeout
    call = None
    while time.monotonic() < deadline:
        async with sessions() as session:
            call = (await session.execute(select(Call).where(*where))).scalar_one_or_none()
        if call is not None and call.state == state:
            return call
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {where} not {state} in the call log (found {call and call.state})")


async def call_row(sessions: Sessions, linkedid: str, *, state: str = "ended", timeout: float = 10.0) -> Call:
    return await wait_call(sessions, Call.linkedid == linkedid, state=state, timeout=timeout)


async def ended_by_call_id(sessions: Sessions, call_id: str, timeout: float = 10.0) -> Call:
    """A click-to-dial call, found by the id the dialer put in __CTI_CALLID."""
    return await wait_call(sessions, Call.cti_call_id == call_id, timeout=timeout)


async def agents_of(sessions: Sessions, call_id: int) -> list[tuple[str, bool]]:
    async with sessions() as session:
        rows = await session.execute(
            select(CallAgent.agent_endpoint, CallAgent.answered)
            .where(CallAgent.call_id == call_id)
            .order_by(CallAgent.seq)
        )
        return [(a, b) for a, b in rows]


async def ready(engine: CtiEngine, *agents: str, timeout: float = 20.0) -> None:
    """Wait until the agents are back to ready (wrap-up over) so the next test's call rings them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [engine.agents.state_of(a) for a in agents]
        if all(s is not None and s.state == "ready" for s in states):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"agents not ready: {[engine.agents.state_of(a) for a in agents]}")


async def ring(customer: BaresipPhone, did: str, agent: BaresipPhone) -> None:
    mark = agent.mark()
    await customer.dial(did)
    await agent.wait_for_event("CALL_INCOMING", since=mark)


def engine_settings(sandbox: Sandbox, **overrides: Any) -> Settings:
    """Settings for an engine on the session sandbox: its AMI, both queues with its wrap-up time."""
    ami = sandbox.state["ami"]
    wrapup = float(sandbox.state["settings"].get("wrapup_seconds", 5))
    values: dict[str, Any] = {
        "ami_host": ami["host"],
        "ami_port": ami["port"],
        "ami_user": ami["user"],
        "ami_secret": ami["secret"],
        "queues": {"member-service": QueuePolicy(wrapup_seconds=wrapup), "vip": QueuePolicy(wrapup_seconds=wrapup)},
    }
    return Settings(**(values | overrides))


def wrapup_of(sandbox: Sandbox) -> float:
    return float(sandbox.state["settings"].get("wrapup_seconds", 5))


@contextlib.asynccontextmanager
async def running_engine(settings: Settings, sessions: Sessions) -> AsyncIterator[CtiEngine]:
    """An engine connected to the sandbox; on the way out it leaves the shared sandbox as found
    (agents out of wrap-up and unpaused, for the next module)."""
    cti = CtiEngine(settings, sessions)
    await cti.start(wait=20)
    try:
        yield cti
        await ready(cti, "agent1001", "agent1002")
    finally:
        await cti.stop()
