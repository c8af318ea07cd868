"""A report period: local calendar dates [start, end) in the site's time zone, and its UTC bounds.

Days and hours are the site's (settings.timezone), so "Monday" and "09:00" mean what the supervisor
reads on the wall clock. The period is validated once here; every report takes a `Period`.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

MAX_DAYS = 366


class InvalidPeriod(ValueError):
    """The requested period cannot be reported (unparseable, empty, reversed or too long)."""


@dataclass(frozen=True, slots=True)
class Period:
    start: dt.date  # first local day included
    end: dt.date  # first local day not included
    timezone: str

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def utc_start(self) -> dt.datetime:
        return local_midnight(self.start, self.zone)

    @property
    def utc_end(self) -> dt.datetime:
        return local_midnight(self.end, self.zone)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def label(self) -> str:
        """For file names: the inclusive local dates, e.g. 2026-11-01_2026-11-07."""
        last = self.end - dt.timedelta(days=1)
        return f"{self.start.isoformat()}_{last.isoformat()}"


def local_midnight(day: dt.date, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=zone).astimezone(dt.UTC)


def make_period(start: dt.date, end: dt.date, timezone: str) -> Period:
    if end <= start:
        raise InvalidPeriod(f"the period must end after it starts ({start} .. {end})")
    if (end - start).days > MAX_DAYS:
        raise InvalidPeriod(f"a report covers at most {MAX_DAYS} days")
    return Period(start, end, timezone)


def parse_period(start: str | None, end: str | None, timezone: str, *, today: dt.date | None = None) -> Period:
    """From query-string dates (ISO, `to` exclusive); missing ones default to the last 7 days
    including today."""
    zone = zoneinfo.ZoneInfo(timezone)
    today = today or dt.datetime.now(zone).date()
    try:
        last = dt.date.fromisoformat(end) if end else today + dt.timedelta(days=1)
        first = dt.date.fromisoformat(start) if start else last - dt.timedelta(days=7)
    except ValueError as exc:
        raise InvalidPeriod(f"dates must be YYYY-MM-DD: {exc}") from exc
    return make_period(first, last, timezone)


def default_period(timezone: str, *, today: dt.date | None = None) -> Period:
    return parse_period(None, None, timezone, today=today)
