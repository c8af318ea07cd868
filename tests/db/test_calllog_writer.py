"""The call-log writer batches and coalesces snapshots and loses nothing while the database is down."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.models import Call
from crm_core.calllog.schemas import CallLogEntry
from cti.calllog_writer import CallLogWriter
from cti.crm import CrmGateway
from tests.db.factories import FlakySessions

T0 = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC)


def entry(linkedid: str, revision: int, state: str = "live") -> CallLogEntry:
    return CallLogEntry(
        linkedid=linkedid,
        revision=revision,
        state=state,
        direction="inbound",
        started_at=T0,
        caller_raw="13800138000",
        outcome="answered" if state == "ended" else None,
    )


async def test_snapshots_are_coalesced_per_call_and_written_in_batches(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    writer = CallLogWriter(sessions, CrmGateway(sessions), flush_interval=0.05)
    for n in range(50):
        for revision in range(1, 6):
            writer.enqueue(entry(f"call-{n}", revision, "ended" if revision == 5 else "live"))
    await writer.drain()
    assert writer.written == 50 and writer.batches == 1
    async with sessions() as session:
        states = (await session.execute(select(Call.state, func.count()).group_by(Call.state))).all()
    assert states == [("ended", 50)]


async def test_a_dropped_database_loses_nothing(sessions: async_sessionmaker[AsyncSession]) -> None:
    flaky = FlakySessions(sessions, failures=3)
    writer = CallLogWriter(flaky, CrmGateway(sessions), flush_interval=0.01, max_retry_delay=0.2)  # type: ignore[arg-type]
    for n in range(20):
        writer.enqueue(entry(f"down-{n}", 1))
    writer.enqueue(entry("down-0", 2, "ended"))
    await writer.drain()
    assert writer.failures == 3 and writer.written == 20
    async with sessions() as session:
        rows = (await session.execute(select(Call.linkedid, Call.state).order_by(Call.linkedid))).all()
    assert len(rows) == 20 and ("down-0", "ended") in rows
