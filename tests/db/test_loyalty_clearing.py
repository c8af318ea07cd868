"""The seed's annual clearing end to end through the nightly job (DOMAIN.md, Sifan pharmacy): points
are cleared at 12-31 24:00 Shanghai time, removing what was earned up to 11-30 24:00; December's
points carry into the next year; a member who joined this year is first cleared at the end of next
year. 12-31 24:00 in Shanghai is 12-31 16:00 UTC. Run twice, the job changes nothing the second time."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import jobs, ledger
from crm_core.loyalty.rules import sifan_expiry
from crm_core.settings import Settings
from tests.db import factories

pytestmark = pytest.mark.db
SH = ZoneInfo("Asia/Shanghai")


def local(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=SH)


async def test_year_end_clearing_keeps_december_and_runs_once(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    old = await factories.member(sessions, settings, mobile="13700000101")
    new = await factories.member(sessions, settings, mobile="13700000102")  # joined in 2025 (its lots say so)
    earnings = (
        (old.member_id, 300, "2025-02-10 12:00", None),  # cleared at the end of 2025
        (old.member_id, 200, "2025-11-30 23:59", None),  # the last minute of the accumulation year
        (old.member_id, 100, "2025-12-01 00:00", None),  # December: carried into 2026
        (new.member_id, 500, "2025-04-01 10:00", dt.date(2025, 3, 1)),  # joined this year: end of 2026
    )
    async with transaction(sessions) as session:
        for member_id, points, at, joined in earnings:
            earned = local(at)
            await ledger.earn(session, member_id, points, earned_at=earned, expires_at=sifan_expiry(earned, joined))

    before = await jobs.run_nightly(sessions, local("2025-12-31 23:59:59").astimezone(dt.UTC))
    assert before.points_expired == 0
    cleared = await jobs.run_nightly(sessions, dt.datetime(2025, 12, 31, 16, 0, tzinfo=dt.UTC))  # 01-01 00:00 SH
    assert (cleared.lots_expired, cleared.points_expired, cleared.differences) == (2, 500, [])
    again = await jobs.run_nightly(sessions, dt.datetime(2025, 12, 31, 16, 0, 1, tzinfo=dt.UTC))
    assert (again.lots_expired, again.points_expired, again.differences) == (0, 0, [])
    async with transaction(sessions) as session:
        assert (await ledger.balances(session, old.member_id)).valid == 100
        assert (await ledger.balances(session, new.member_id)).valid == 500
    next_year = await jobs.run_nightly(sessions, dt.datetime(2026, 12, 31, 16, 0, tzinfo=dt.UTC))
    assert next_year.points_expired == 600  # December 2025's 100 and the new member's 500
