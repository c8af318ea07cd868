"""The product's business calendar: working hours, Chinese public holidays and make-up working days (调休).

Every "within N business hours / working days" rule (callback due times now; SLA clocks and the
seeds' 30-working-day reviews later) goes through one `BusinessCalendar`, so they all agree.
Holidays come from the maintained `chinesecalendar` package; an administrator's overrides win over it;
years it does not cover fall back to Monday–Friday (logged once).
"""

from __future__ import annotations

import bisect
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
PREFIX_FROM = dt.date(2015, 1, 1)
PREFIX_DAYS = 50 * 366


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
    # Working time from PREFIX_FROM to the start of each day since, grown on demand: business time
    # between two instants is then a difference of two lookups, not a walk over the days between.
    _prefix: list[dt.timedelta] = field(
        default_factory=lambda: [dt.timedelta(0)], init=False, compare=False, hash=False, repr=False
    )
    # The last instant asked for: a history's segments share their ends, so half the asks repeat it.
    _last: list[tuple[dt.datetime, dt.timedelta | None]] = field(
        default_factory=list, init=False, compare=False, hash=False, repr=False
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
        before = self._working_before(start)
        if before is not None and duration > dt.timedelta(0):  # zero: the next opening, found below
            found = self._instant_at(before + duration)
            if found is not None:
                return found
        return self._add_by_walk(start, duration)

    def _add_by_walk(self, start: dt.datetime, duration: dt.timedelta) -> dt.datetime:
        """Day by day: for instants outside the prefix's range (and zero durations)."""
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

    def _working_before(self, at: dt.datetime) -> dt.timedelta | None:
        """Working time from PREFIX_FROM to `at`, or None outside the prefix's range."""
        last = self._last
        if last and last[0][0] == at:
            return last[0][1]
        value = self._working_before_uncached(at)
        last[:] = [(at, value)]
        return value

    def _working_before_uncached(self, at: dt.datetime) -> dt.timedelta | None:
        local = at.astimezone(self.tz)
        day = local.date()
        index = (day - PREFIX_FROM).days
        if not 0 <= index < PREFIX_DAYS:
            return None
        prefix = self._prefix
        while len(prefix) <= index:
            self._extend_prefix()
        within = dt.timedelta(0)
        for opens, closes in self._intervals(day):
            if local <= opens:
                break
            within += min(closes, local) - opens
        return prefix[index] + within

    def _extend_prefix(self) -> None:
        day = PREFIX_FROM + dt.timedelta(days=len(self._prefix) - 1)
        self._prefix.append(self._prefix[-1] + sum((c - o for o, c in self._intervals(day)), dt.timedelta(0)))

    def _instant_at(self, target: dt.timedelta) -> dt.datetime | None:
        """The instant at which working time since PREFIX_FROM reaches `target` (prefix search)."""
        prefix = self._prefix
        # The day during which it is reached: the last one starting strictly before it (an instant at
        # the very end of a day's work belongs to that day, as in the day-by-day walk below).
        index = bisect.bisect_left(prefix, target) - 1
        while index >= len(prefix) - 1 and len(prefix) < PREFIX_DAYS:  # grow until a day ends past it
            self._extend_prefix()
            index = bisect.bisect_left(prefix, target) - 1
        if index >= len(prefix) - 1:
            return None
        remaining = target - prefix[index]
        day = PREFIX_FROM + dt.timedelta(days=index)
        for opens, closes in self._intervals(day):
            if remaining <= closes - opens:
                return (opens + remaining).astimezone(dt.UTC)
            remaining -= closes - opens
        return None

    def business_time_between(self, start: dt.datetime, end: dt.datetime) -> dt.timedelta:
        """Working time elapsed from `start` to `end` (zero if end <= start)."""
        if end <= start:
            return dt.timedelta(0)
        before_start = self._working_before(start)  # first: the memo then keeps `end`, the next start
        before_end = self._working_before(end)
        if before_end is not None and before_start is not None:
            return before_end - before_start
        return self._between_by_walk(start, end)

    def _between_by_walk(self, start: dt.datetime, end: dt.datetime) -> dt.timedelta:
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
