"""The administrator's side of the business calendar: day overrides and each team's working hours.

`chinese_calendar` knows the State Council's holidays and make-up working days (调休); a site may
still close or open on a given day (a local holiday, a stock-take Saturday) and teams keep different
hours. Those live here and become one `BusinessCalendar` per team, cached until something changes.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.business_calendar import BusinessCalendar, WorkingHours
from crm_core.db import Base, insert_for, utcnow
from crm_core.security.models import OrgUnit


class CalendarDay(Base):
    """A date that is working (True) or closed (False) whatever the national calendar says; a row
    with a team applies to that team only and wins over a site-wide row of the same date."""

    __tablename__ = "calendar_days"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[dt.date]
    team_id: Mapped[int | None] = mapped_column(ForeignKey("org_units.id", ondelete="CASCADE"))
    working: Mapped[bool]
    note: Mapped[str] = mapped_column(String(100), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("day", "team_id", name="uq_calendar_day_team"),)


class TeamHours(Base):
    """A team's working hours, e.g. [["08:30", "12:00"], ["13:00", "20:00"]] (local time)."""

    __tablename__ = "calendar_team_hours"

    team_id: Mapped[int] = mapped_column(ForeignKey("org_units.id", ondelete="CASCADE"), primary_key=True)
    hours: Mapped[list[list[str]]] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


def parse_hours(spans: list[list[str]] | list[tuple[str, str]]) -> tuple[WorkingHours, ...]:
    """Validated, sorted and non-overlapping working hours from ["HH:MM", "HH:MM"] pairs."""
    if not spans:
        raise ValueError("at least one span of working hours is needed")
    hours = sorted(
        (WorkingHours(dt.time.fromisoformat(start), dt.time.fromisoformat(end)) for start, end in spans),
        key=lambda h: h.start,
    )
    for before, after in itertools.pairwise(hours):
        if after.start < before.end:
            raise ValueError("working hours overlap")
    return tuple(hours)


class CalendarStore:
    """Loads and caches one calendar per team (None: the site default). Call `invalidate` after a
    change made through this process; `version` lets other processes notice with one cheap read."""

    def __init__(self, timezone: str = "Asia/Shanghai") -> None:
        self.tz = ZoneInfo(timezone)
        self._cache: dict[int | None, BusinessCalendar] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    def use_timezone(self, timezone: str) -> None:
        """The site's time zone (settings.timezone): the server and the engine set it at start."""
        if ZoneInfo(timezone) != self.tz:
            self.tz = ZoneInfo(timezone)
            self.invalidate()

    async def for_team(self, session: AsyncSession, team_id: int | None) -> BusinessCalendar:
        cached = self._cache.get(team_id)
        if cached is None:
            cached = self._cache[team_id] = await load_calendar(session, team_id, self.tz)
        return cached

    async def for_unit_code(self, session: AsyncSession, code: str | None) -> BusinessCalendar:
        """The calendar of the org unit with this code (e.g. a queue's team); the site's without one."""
        team_id = None
        if code:
            team_id = (await session.execute(select(OrgUnit.id).where(OrgUnit.code == code))).scalar_one_or_none()
        return await self.for_team(session, team_id)


# One store per process: the panel, the CTI engine (callback due times) and the jobs read it; the
# panel invalidates it after an administrator's change.
STORE = CalendarStore()


async def load_calendar(session: AsyncSession, team_id: int | None, tz: ZoneInfo) -> BusinessCalendar:
    days = await session.execute(
        select(CalendarDay.day, CalendarDay.team_id, CalendarDay.working).where(
            (CalendarDay.team_id.is_(None)) | (CalendarDay.team_id == team_id)
        )
    )
    overrides: dict[dt.date, bool] = {}
    for day, _team, working in sorted(days.all(), key=lambda r: r[1] is not None):  # team rows last: they win
        overrides[day] = working
    kwargs: dict[str, Any] = {"tz": tz, "overrides": overrides}
    if team_id is not None:
        hours = (await session.execute(select(TeamHours.hours).where(TeamHours.team_id == team_id))).scalar()
        if hours:
            kwargs["hours"] = parse_hours(hours)
    return BusinessCalendar(**kwargs)


async def set_day(
    session: AsyncSession, day: dt.date, working: bool | None, *, team_id: int | None = None, note: str = ""
) -> None:
    """Override a date (None removes the override, so the national calendar applies again)."""
    match = (CalendarDay.day == day) & (
        CalendarDay.team_id.is_(None) if team_id is None else CalendarDay.team_id == team_id
    )
    await session.execute(delete(CalendarDay).where(match))
    if working is not None:
        session.add(CalendarDay(day=day, team_id=team_id, working=working, note=note))
    await session.flush()


async def set_team_hours(session: AsyncSession, team_id: int, spans: list[list[str]]) -> None:
    parse_hours(spans)
    stmt = insert_for(session, TeamHours.__table__).values(team_id=team_id, hours=spans, updated_at=utcnow())
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["team_id"], set_={"hours": spans, "updated_at": utcnow()})
    )


async def list_days(session: AsyncSession, year: int) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(CalendarDay)
        .where(CalendarDay.day >= dt.date(year, 1, 1), CalendarDay.day <= dt.date(year, 12, 31))
        .order_by(CalendarDay.day, CalendarDay.team_id)
    )
    return [
        {"day": d.day.isoformat(), "team_id": d.team_id, "working": d.working, "note": d.note} for d in rows.scalars()
    ]
