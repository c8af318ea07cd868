"""Call-log writes are idempotent and never move backwards, on both engines."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

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


def ended_call(linkedid: str, revision: int, *, agents: int = 2) -> CallLogEntry:
    """A finished queue call with `agents` offers and a leg per party, as the writer batches it."""
    return snapshot(
        revision,
        linkedid=linkedid,
        state="ended",
        outcome="answered",
        agent_endpoint="agent1001",
        agents=tuple(AgentOffer(f"agent100{n + 1}", T0, 2.0, n == agents - 1, "queue") for n in range(agents)),
        legs=(
            LegEntry(linkedid, "PJSIP/cust-00000006", "customer", T0),
            LegEntry(f"{linkedid}.1", "PJSIP/agent1001-00000007", "agent", T0),
        ),
    )


async def write_batch(sessions: Sessions, entries: list[CallLogEntry]) -> list[int | None]:
    async with transaction(sessions) as session:
        return await calllog.write_calls(session, entries, {})


async def table_counts(sessions: Sessions) -> tuple[int, int, int]:
    async with sessions() as session:
        calls = (await session.execute(select(func.count(Call.id)))).scalar_one()
        agents = (await session.execute(select(func.count(CallAgent.id)))).scalar_one()
        legs = (await session.execute(select(func.count(CallLeg.id)))).scalar_one()
    return calls, agents, legs


async def test_a_batch_costs_the_same_statements_for_one_call_or_two_hundred(
    sessions: Sessions, engine: AsyncEngine
) -> None:
    statements: list[str] = []

    def count(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        if not sql.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")):
            statements.append(sql)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        await write_batch(sessions, [ended_call("single.1", 10)])
        single = len(statements)
        statements.clear()
        ids = await write_batch(sessions, [ended_call(f"bulk.{n}", 10) for n in range(200)])
        bulk = len(statements)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    # upsert of the calls, delete of their agents and legs, insert of the new agents and legs
    assert single == bulk == 5, statements
    assert len(set(ids)) == 200 and None not in ids
    assert await table_counts(sessions) == (201, 402, 402)


async def test_a_replayed_batch_duplicates_nothing(sessions: Sessions) -> None:
    batch = [ended_call(f"replay.{n}", 100 + n) for n in range(30)]
    first = await write_batch(sessions, batch)
    assert None not in first
    counts = await table_counts(sessions)
    assert await write_batch(sessions, batch) == [None] * 30  # every snapshot already stored: no-op
    assert await write_batch(sessions, list(reversed(batch))) == [None] * 30
    assert await table_counts(sessions) == counts == (30, 60, 60)


async def test_an_older_revision_in_a_batch_never_overwrites_a_newer_one(sessions: Sessions) -> None:
    await write_batch(sessions, [ended_call("mixed.old", 50, agents=3), snapshot(50, linkedid="mixed.new")])
    ids = await write_batch(
        sessions,
        [
            snapshot(40, linkedid="mixed.old"),  # older than the stored ended call: ignored
            ended_call("mixed.new", 60, agents=1),  # newer than the stored live row: wins
            snapshot(1, linkedid="mixed.fresh"),  # the same call twice in one batch: the newest wins
            ended_call("mixed.fresh", 2, agents=2),
        ],
    )
    assert ids[0] is None and ids[1] is not None and ids[2] is None and ids[3] is not None
    async with sessions() as session:
        calls = {c.linkedid: c for c in (await session.execute(select(Call))).scalars()}
        assert {k: (c.state, c.revision) for k, c in calls.items()} == {
            "mixed.old": ("ended", 50),
            "mixed.new": ("ended", 60),
            "mixed.fresh": ("ended", 2),
        }
        assert [
            len(await calllog.agents_of(session, calls[k].id)) for k in ("mixed.old", "mixed.new", "mixed.fresh")
        ] == [
            3,
            1,
            2,
        ]


async def test_concurrent_batches_over_the_same_calls_leave_the_newest(sessions: Sessions) -> None:
    # Each writer's batch lists the calls in another order; rows are locked in key order whatever
    # the input order, so two writers cannot deadlock on PostgreSQL.
    linkedids = [f"race.{n}" for n in range(40)]

    async def put(revision: int) -> None:
        order = linkedids if revision % 2 else list(reversed(linkedids))
        await write_batch(sessions, [ended_call(linkedid, revision, agents=revision % 3 + 1) for linkedid in order])

    await asyncio.gather(*(put(revision) for revision in range(1, 9)))
    async with sessions() as session:
        rows = (await session.execute(select(Call.revision, func.count()).group_by(Call.revision))).all()
    assert rows == [(8, 40)]
    assert await table_counts(sessions) == (40, 40 * (8 % 3 + 1), 80)
