"""Call-log writes are idempotent and never move backwards, on both engines."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog import service as calllog
from crm_core.calllog.models import AgentStateLog, Call, CallAgent, CallLeg
from crm_core.calllog.schemas import AgentOffer, CallLogEntry, LegEntry
from crm_core.db import transaction
from crm_core.security.policy import Role
from crm_core.settings import Settings
from tests.db import factories

Sessions = async_sessionmaker[AsyncSession]
T0 = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC)


def snapshot(revision: int, **fields: object) -> CallLogEntry:
    base: dict[str, object] = {
        "linkedid": "1795528258.9",
        "revision": revision,
        "state": "live",
        "direction": "inbound",
        "started_at": T0,
        "caller_raw": "13800138000",
        "caller_name": "张伟",
        "dnis": "4008001234",
        "queue": "member-service",
    }
    return CallLogEntry(**(base | fields))  # type: ignore[arg-type]


async def write(sessions: Sessions, entry: CallLogEntry) -> int | None:
    async with transaction(sessions) as session:
        return await calllog.write_call(session, entry)


async def test_snapshots_upsert_one_row_and_stale_ones_are_ignored(sessions: Sessions, settings: Settings) -> None:
    agent = await factories.principal(sessions, "agent1", Role.AGENT, agent_endpoint="agent1001")
    zhang = await factories.member(sessions, settings)
    ringing = snapshot(1, member_id=zhang.member_id, agents=(AgentOffer("agent1001", T0, None, False, "queue"),))
    ended = snapshot(
        3,
        state="ended",
        answered_at=T0 + dt.timedelta(seconds=8),
        ended_at=T0 + dt.timedelta(seconds=70),
        wait_s=8.0,
        ring_s=3.0,
        talk_s=62.0,
        outcome="answered",
        agent_endpoint="agent1001",
        recording_file="/opt/ast/spool/monitor/1795528258.9.wav",
        agents=(AgentOffer("agent1002", T0, 3.0, False, "queue"), AgentOffer("agent1001", T0, 3.0, True, "queue")),
        legs=(
            LegEntry("1795528258.9", "PJSIP/cust-00000006", "customer", T0),
            LegEntry("1795528258.10", "PJSIP/agent1001-00000007", "agent", T0),
        ),
    )
    call_id = await write(sessions, ringing)
    assert await write(sessions, ended) == call_id
    assert await write(sessions, ended) is None  # the same snapshot again: nothing to do
    assert await write(sessions, ringing) is None  # an older snapshot arriving late: ignored
    async with sessions() as session:
        call = (await session.execute(select(Call))).scalar_one()
        assert call.state == "ended" and call.outcome == "answered" and call.talk_s == 62.0
        assert call.caller_e164 == "+8613800138000" and call.member_id == zhang.member_id
        assert call.agent_user_id == agent.user_id
        offers = await calllog.agents_of(session, call.id)
        assert [(o.agent_endpoint, o.answered, o.agent_user_id) for o in offers] == [
            ("agent1002", False, None),
            ("agent1001", True, agent.user_id),
        ]
        assert (await session.execute(select(func.count(CallLeg.id)))).scalar_one() == 2


async def test_later_snapshot_without_member_keeps_the_matched_member(sessions: Sessions, settings: Settings) -> None:
    zhang = await factories.member(sessions, settings)
    await write(sessions, snapshot(1, member_id=zhang.member_id, recording_file="/rec/a.wav"))
    await write(sessions, snapshot(2, state="ended", outcome="abandoned"))
    async with sessions() as session:
        call = (await session.execute(select(Call))).scalar_one()
    assert call.member_id == zhang.member_id and call.recording_file == "/rec/a.wav" and call.outcome == "abandoned"


async def test_concurrent_writers_of_one_call_leave_the_newest(sessions: Sessions) -> None:
    snapshots = [
        snapshot(
            r,
            state="ended" if r == 30 else "live",
            outcome="answered" if r == 30 else None,
            agents=tuple(AgentOffer(f"agent{n}", T0, None, False, "queue") for n in range(r % 4)),
        )
        for r in range(1, 31)
    ]

    async def put(entry: CallLogEntry) -> None:
        await write(sessions, entry)

    await asyncio.gather(*(put(s) for s in reversed(snapshots)))
    async with sessions() as session:
        call = (await session.execute(select(Call))).scalar_one()
        assert call.revision == 30 and call.state == "ended"
        assert (await session.execute(select(func.count(CallAgent.id)))).scalar_one() == 30 % 4


async def test_wrapup_and_disposition(sessions: Sessions) -> None:
    await write(sessions, snapshot(1, state="ended", outcome="answered"))
    async with transaction(sessions) as session:
        assert await calllog.set_wrapup(session, "1795528258.9", disposition="resolved", wrapup_s=12.5)
        assert not await calllog.set_wrapup(session, "no-such-call", disposition="x", wrapup_s=1.0)
    async with sessions() as session:
        call = await calllog.call_by_linkedid(session, "1795528258.9")
    assert call is not None and call.disposition == "resolved" and call.wrapup_s == 12.5


async def test_agent_state_history_has_durations_and_ignores_duplicates(sessions: Sessions) -> None:
    steps = [
        ("ready", None, 0),
        ("ready", None, 5),
        ("paused", "午休", 60),
        ("paused", "午休", 61),
        ("ready", None, 960),
    ]
    for state, reason, offset in steps:
        async with transaction(sessions) as session:
            await calllog.log_agent_state(session, "agent1001", state, reason, T0 + dt.timedelta(seconds=offset))
    async with sessions() as session:
        rows = (await session.execute(select(AgentStateLog).order_by(AgentStateLog.id))).scalars().all()
    assert [(r.state, r.reason, r.duration_s) for r in rows] == [
        ("ready", None, 60.0),
        ("paused", "午休", 900.0),
        ("ready", None, None),
    ]
