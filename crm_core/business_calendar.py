"""The product's business calendar: working hours, Chinese public holidays and make-up working days (调休).

Every "within N business hours / working days" rule (callback due times now; SLA clocks and the
seeds' 30-working-day reviews later) goes through one `BusinessCalendar`, so they all agree.
Holidays come from the maintained `chinesecalendar` package; an administrator's overrides win over it;
years it does not cover fall back to Monday–Friday (logged once).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo

import chinese_calendar

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkingHours:
    start: dt.time = dt.time(9, 0)
    end: dt.time = dt.time(18, 0)

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("working hours must end after they start")


@lru_cache(maxsize=8192)
def _library_workday(day: dt.date) -> bool | None:
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


_warned_years: set[int] = set()


@dataclass(frozen=True)
class BusinessCalendar:
    """Working time in one time zone; `overrides` maps a date to True (working) or False (closed)."""

    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    hours: tuple[WorkingHours, ...] = (
        WorkingHours(dt.time(9, 0), dt.time(12, 0)),
        WorkingHours(dt.time(13, 0), dt.time(18, 0)),
    )
    overrides: Mapping[dt.date, bool] = field(default_factory=dict)
    # Working intervals per date, filled on first use: SLA recomputation asks for the same few days
    # hundreds of thousands of times (the dict is mutable state behind a frozen, value-compared calendar).
    _day_cache: dict[dt.date, list[tuple[dt.datetime, dt.datetime]]] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False
    )

    def is_workday(self, day: dt.date) -> bool:
        if day in self.overrides:
            return self.overrides[day]
        known = _library_workday(day)
        if known is None:
            if day.year not in _warned_years:
                _warned_years.add(day.year)
                log.warning("no holiday data for %s: treating Monday–Friday as working days", day.year)
            return day.weekday() < 5
        return known

    def _intervals(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        cached = self._day_cache.get(day)
        if cached is None:
            cached = (
                [
                    (dt.datetime.combine(day, h.start, self.tz), dt.datetime.combine(day, h.end, self.tz))
                    for h in self.hours
                ]
                if self.is_workday(day)
                else []
            )
            self._day_cache[day] = cached
        return cached

    def add_business_time(self, start: dt.datetime, duration: dt.timedelta) -> dt.datetime:
        """The instant `duration` of working time after `start` (aware datetimes; result in UTC)."""
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        remaining = duration
        cursor = start.astimezone(self.tz)
        day = cursor.date()
        for _ in range(3660):  # ten years of days: a calendar with no working time at all is an error
            for opens, closes in self._intervals(day):
                if closes <= cursor:
                    continue
                begin = max(opens, cursor)
                available = closes - begin
                if remaining <= available:
                    return (begin + remaining).astimezone(dt.UTC)
                remaining -= available
            day += dt.timedelta(days=1)
            cursor = dt.datetime.combine(day, dt.time(0, 0), self.tz)
        raise ValueError("the calendar has no working time in the next ten years")

    def business_time_between(self, start: dt.datetime, end: dt.datetime) -> dt.timedelta:
        """Working time elapsed from `start` to `end` (zero if end <= start)."""
        if end <= start:
            return dt.timedelta(0)
        total = dt.timedelta(0)
        local_start, local_end = start.astimezone(self.tz), end.astimezone(self.tz)
        day = local_start.date()
        while day <= local_end.date():
            for opens, closes in self._intervals(day):
                lo, hi = max(opens, local_start), min(closes, local_end)
                if hi > lo:
                    total += hi - lo
            day += dt.timedelta(days=1)
        return total

    def add_working_days(self, day: dt.date, days: int) -> dt.date:
        """Seed 001: "30 个工作日" — the date `days` working days after `day`."""
        if days < 0:
            raise ValueError("days must not be negative")
        current = day
        while days:
            current += dt.timedelta(days=1)
            if self.is_workday(current):
                days -= 1
        return current
