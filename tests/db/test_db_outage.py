"""A dropped database connection loses no call-centre fact: missed calls, agent states, lookups."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.business_calendar import BusinessCalendar
from crm_core.callbacks.models import Callback
from crm_core.calllog.models import AgentStateLog
from crm_core.db import make_engine, make_sessionmaker
from crm_core.settings import Settings
from cti.agents import AgentManager
from cti.callbacks import CallbackFeeder
from cti.calls.events import AgentStateChanged, CallAbandoned
from cti.crm import CrmGateway
from tests.conftest import _pg_admin, create_pg_database, drop_pg_database
from tests.db import factories
from tests.db.factories import FlakySessions

AT = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC).timestamp()


async def test_missed_call_is_recorded_after_the_database_comes_back(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    flaky = FlakySessions(sessions, failures=4)
    feeder = CallbackFeeder(flaky, CrmGateway(flaky), settings, BusinessCalendar())  # type: ignore[arg-type]
    await feeder(
        CallAbandoned(
            at=AT,
            linkedid="outage.1",
            queue="vip",
            caller_number="13800138000",
            caller_name=None,
            dnis="4008001235",
            wait_seconds=12.0,
            position=1,
            original_position=1,
        )
    )
    async with sessions() as session:
        callback = (await session.execute(select(Callback))).scalar_one()
    assert callback.miss_count == 1 and callback.source == "abandoned" and flaky.failures == 0


async def test_agent_state_is_recorded_after_the_database_comes_back(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    flaky = FlakySessions(sessions, failures=3)
    manager = AgentManager(None, flaky, settings)  # type: ignore[arg-type]
    await manager(
        AgentStateChanged(
            at=AT,
            agent="agent1001",
            interface="PJSIP/agent1001",
            name=None,
            state="paused",
            previous_state="ready",
            paused=True,
            pause_reason="lunch",
            queues=("vip",),
            paused_queues=("vip",),
            available=True,
            linkedid=None,
        )
    )
    await manager.drain()
    async with sessions() as session:
        row = (await session.execute(select(AgentStateLog))).scalar_one()
    assert (row.state, row.reason) == ("paused", "lunch")


async def test_lookup_survives_postgresql_dropping_its_connections(settings: Settings) -> None:
    """Pooled connections killed on the server (as by a PostgreSQL restart): the next screen-pop
    lookup runs on a fresh connection instead of failing."""
    url = await create_pg_database()
    try:
        from crm_core import migrate

        await migrate.upgrade(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        await factories.member(sessions, Settings(database_url=url))
        crm = CrmGateway(sessions)
        assert [c.name for c in await crm.lookup("13800138000")] == ["张伟"]
        admin = await _pg_admin()
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
                url.rsplit("/", 1)[1],
            )
        finally:
            await admin.close()
        assert killed >= 1
        assert [c.name for c in await crm.lookup("13800138000")] == ["张伟"]
        await engine.dispose()
    finally:
        await drop_pg_database(url)


def test_only_disconnects_are_retried() -> None:
    from sqlalchemy.exc import IntegrityError, OperationalError

    from crm_core.db import is_disconnect

    assert is_disconnect(OperationalError("x", {}, Exception("server closed the connection")))
    assert is_disconnect(ConnectionResetError())
    assert not is_disconnect(IntegrityError("x", {}, Exception("duplicate key")))
    assert not is_disconnect(ValueError("bug"))
