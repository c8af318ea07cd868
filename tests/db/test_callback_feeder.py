"""The callback feeder closes callbacks on answered calls, and spends no query on numbers without one."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_core.business_calendar import BusinessCalendar
from crm_core.callbacks import service as callbacks
from crm_core.callbacks.models import Callback
from crm_core.db import transaction
from crm_core.settings import Settings
from cti.callbacks import CallbackFeeder
from cti.calls.events import CallAbandoned, CallEnded
from cti.crm import CrmGateway

Sessions = async_sessionmaker[AsyncSession]
T0 = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC).timestamp()


def answered(linkedid: str, number: str) -> CallEnded:
    return CallEnded(
        at=T0 + 60,
        linkedid=linkedid,
        direction="inbound",
        caller_number=number,
        caller_name=None,
        callee_number="4008001234",
        customer_number=number,
        dnis="4008001234",
        queue="member-service",
        queues=("member-service",),
        started_at=T0,
        answered_at=T0 + 5,
        ended_at=T0 + 60,
        wait_seconds=5.0,
        ring_seconds=2.0,
        talk_seconds=55.0,
        duration_seconds=60.0,
        outcome="answered",
        reason=None,
        answered_by="agent1001",
        agents=(),
        transfers=(),
        legs=(),
        recording_file=None,
        variables={},
        hangup_cause=16,
        hangup_cause_text="Normal Clearing",
        hangup_side="customer",
    )


def abandoned(linkedid: str, number: str) -> CallAbandoned:
    return CallAbandoned(
        at=T0 + 20,
        linkedid=linkedid,
        queue="member-service",
        caller_number=number,
        caller_name=None,
        dnis="4008001234",
        wait_seconds=20.0,
        position=1,
        original_position=1,
    )


class StatementCounter:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.statements: list[str] = []

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine.sync_engine, "before_cursor_execute", self._count)

    def _count(self, _conn: object, _cursor: object, sql: str, *_args: object) -> None:
        self.statements.append(sql)


async def test_answered_calls_from_numbers_without_a_callback_cost_no_query(
    sessions: Sessions, settings: Settings, engine: AsyncEngine
) -> None:
    feeder = CallbackFeeder(sessions, CrmGateway(sessions), settings, BusinessCalendar())
    assert await feeder.load_open_numbers() == 0
    await feeder(abandoned("9.1", "13800138000"))  # a miss: the number now has an open callback
    assert feeder.open_numbers == {"+8613800138000"}
    with StatementCounter(engine) as counter:
        for n in range(20):
            await feeder(answered(f"9.{n + 10}", f"139{n:08d}"))
    assert counter.statements == []
    await feeder(answered("9.2", "+86 138 0013 8000"))  # the caller reached: the callback closes
    assert feeder.open_numbers == set()
    async with sessions() as session:
        callback = (await session.execute(select(Callback))).scalar_one()
    assert callback.status == "closed" and callback.closed_by_linkedid == "9.2"


async def open_elsewhere(sessions: Sessions, settings: Settings, linkedid: str, number: str) -> int | None:
    """A callback recorded by another process (or before this feeder started)."""
    missed = callbacks.MissedCall(
        linkedid=linkedid, phone_raw=number, source="abandoned", missed_at=dt.datetime.fromtimestamp(T0, dt.UTC)
    )
    async with transaction(sessions) as session:
        return await callbacks.record_missed(session, missed, settings, BusinessCalendar())


async def test_callbacks_opened_before_start_or_elsewhere_are_still_closed(
    sessions: Sessions, settings: Settings
) -> None:
    before_start = await open_elsewhere(sessions, settings, "7.1", "13700137000")
    feeder = CallbackFeeder(sessions, CrmGateway(sessions), settings, BusinessCalendar(), reload_after=0.0)
    await feeder(answered("7.2", "13700137000"))  # the open numbers load on first use
    elsewhere = await open_elsewhere(sessions, settings, "7.3", "13600136000")
    await feeder(answered("7.4", "13600136000"))  # seen at the next reload (every reload_after seconds)
    async with sessions() as session:
        rows = (await session.execute(select(Callback.id, Callback.status, Callback.closed_by_linkedid))).all()
    assert sorted(rows) == sorted([(before_start, "closed", "7.2"), (elsewhere, "closed", "7.4")])


async def test_the_due_time_follows_the_administrators_calendar(sessions: Sessions, settings: Settings) -> None:
    """Without a calendar of its own (as in the engine) the feeder reads the calendar store, so a day
    the administrator closed (here the day of the miss, a Tuesday) moves the due time to the next."""
    from zoneinfo import ZoneInfo

    from crm_core import calendar_store

    async with transaction(sessions) as session:
        await calendar_store.set_day(session, dt.date(2026, 11, 24), False, note="盘点")
    calendar_store.STORE.invalidate()
    try:
        feeder = CallbackFeeder(sessions, CrmGateway(sessions), settings)
        await feeder(abandoned("8.1", "13500135000"))
        async with sessions() as session:
            due = (await session.execute(select(Callback.due_at))).scalar_one()
        # Closed Tuesday: 2 business hours from Wednesday 09:00 (Asia/Shanghai) is 11:00.
        assert due.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M") == "2026-11-25 11:00"
    finally:
        calendar_store.STORE.invalidate()
