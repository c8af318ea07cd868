"""Hand-built calls for the call-log review, access and QA tests: a team tree with agents and
supervisors, and call rows written as the call log stores them (UTC times, call_agents offers)."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.models import Call, CallAgent
from crm_core.db import transaction
from crm_core.security.policy import Principal, Role
from tests.db import factories

_SEQ = itertools.count(1)
# 2026-03-10 09:00 in Asia/Shanghai.
BASE = dt.datetime(2026, 3, 10, 1, 0, tzinfo=dt.UTC)


@dataclass
class Team:
    """310 (team A): agent_a, sup_a; 320 (team B): agent_b, sup_b; admin; crm staff in 300."""

    agent_a: Principal
    agent_a2: Principal
    agent_b: Principal
    sup_a: Principal
    sup_b: Principal
    admin: Principal
    staff: Principal


async def team(sessions: async_sessionmaker[AsyncSession]) -> Team:
    await factories.org_tree(sessions)
    return Team(
        agent_a=await factories.principal(sessions, "agent_a", Role.AGENT, "310", "agent1001"),
        agent_a2=await factories.principal(sessions, "agent_a2", Role.AGENT, "310", "agent1003"),
        agent_b=await factories.principal(sessions, "agent_b", Role.AGENT, "320", "agent1002"),
        sup_a=await factories.principal(sessions, "sup_a", Role.SUPERVISOR, "310"),
        sup_b=await factories.principal(sessions, "sup_b", Role.SUPERVISOR, "320"),
        admin=await factories.principal(sessions, "admin", Role.ADMIN),
        staff=await factories.principal(sessions, "staff", Role.CRM_STAFF, "300"),
    )


@dataclass
class NewCall:
    row: Call
    offers: list[tuple[Principal, bool]]


def call(
    *,
    started_at: dt.datetime = BASE,
    agent: Principal | None = None,
    rang: tuple[Principal, ...] = (),
    outcome: str = "answered",
    **fields: Any,
) -> Call:
    """A finished call; `agent` answered it, `rang` were offered it first (unanswered)."""
    n = next(_SEQ)
    answered = outcome == "answered"
    values: dict[str, Any] = {
        "pbx": "default",
        "linkedid": f"test-{n}",
        "state": "ended",
        "direction": "inbound",
        "caller_raw": "13800138000",
        "caller_e164": "+8613800138000",
        "callee_raw": "4008001000",
        "callee_e164": "+864008001000",
        "dnis": "4008001000",
        "queue": "member-service",
        "started_at": started_at,
        "answered_at": started_at + dt.timedelta(seconds=12) if answered else None,
        "ended_at": started_at + dt.timedelta(seconds=140),
        "wait_s": 12.0,
        "ring_s": 4.0,
        "talk_s": 128.0 if answered else None,
        "outcome": outcome,
        "agent_user_id": agent.user_id if agent else None,
        "agent_endpoint": None,
        "transfers": 0,
        "revision": 1,
    }
    values.update(fields)
    offers = [(p, False) for p in rang] + ([(agent, True)] if agent is not None and answered else [])
    return NewCall(Call(**values), offers)


async def add_calls(sessions: async_sessionmaker[AsyncSession], *calls: NewCall) -> list[int]:
    """Insert the calls and their offers; returns their ids in order."""
    async with transaction(sessions) as session:
        return await add_calls_in(session, *calls)


async def add_calls_in(session: AsyncSession, *calls: NewCall) -> list[int]:
    session.add_all([c.row for c in calls])
    await session.flush()
    for new in calls:
        row = new.row
        for seq, (who, answered) in enumerate(new.offers):
            session.add(
                CallAgent(
                    call_id=row.id,
                    seq=seq,
                    agent_endpoint=who.username,
                    agent_user_id=who.user_id,
                    rang_at=row.started_at + dt.timedelta(seconds=2 + 4 * seq),
                    ring_s=4.0,
                    answered=answered,
                    via="queue",
                )
            )
    await session.flush()
    return [c.row.id for c in calls]
