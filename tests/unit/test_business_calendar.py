"""Business-time arithmetic across nights, weekends, a Chinese holiday and a make-up working day."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from crm_core.business_calendar import BusinessCalendar, WorkingHours

SH = ZoneInfo("Asia/Shanghai")
CAL = BusinessCalendar()


def at(y: int, m: int, d: int, hh: int, mm: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=SH)


@pytest.mark.parametrize(
    ("start", "hours", "due"),
    [
        (at(2026, 11, 24, 10), 3, at(2026, 11, 24, 14)),  # lunch break 12–13 does not count
        (at(2026, 11, 24, 17), 2, at(2026, 11, 25, 10)),  # over the night
        (at(2026, 11, 27, 17), 2, at(2026, 11, 30, 10)),  # Friday → Monday
        (at(2026, 11, 28, 11), 1, at(2026, 11, 30, 10)),  # starts on a Saturday
        (at(2026, 11, 24, 20), 1, at(2026, 11, 25, 10)),  # starts after hours
        # National Day 2026: Oct 1–7 closed; Saturday Oct 10 is a make-up working day (调休).
        (at(2026, 9, 30, 17), 2, at(2026, 10, 8, 10)),
        (at(2026, 10, 9, 17, 30), 1, at(2026, 10, 10, 9, 30)),
    ],
)
def test_adds_business_hours(start: dt.datetime, hours: int, due: dt.datetime) -> None:
    assert CAL.add_business_time(start, dt.timedelta(hours=hours)) == due
    assert CAL.business_time_between(start, due) == dt.timedelta(hours=hours)


def test_overrides_win_over_the_library() -> None:
    cal = BusinessCalendar(overrides={dt.date(2026, 10, 8): False})
    assert cal.add_business_time(at(2026, 9, 30, 17), dt.timedelta(hours=2)) == at(2026, 10, 9, 10)
    assert cal.add_working_days(dt.date(2026, 9, 30), 1) == dt.date(2026, 10, 9)


def test_working_days_skip_holidays_and_count_make_up_days() -> None:
    assert CAL.add_working_days(dt.date(2026, 9, 30), 1) == dt.date(2026, 10, 8)
    assert CAL.add_working_days(dt.date(2026, 10, 9), 1) == dt.date(2026, 10, 10)


def test_years_without_data_fall_back_to_weekdays() -> None:
    assert CAL.is_workday(dt.date(2031, 1, 6)) and not CAL.is_workday(dt.date(2031, 1, 5))


def test_refuses_naive_times_and_empty_hours() -> None:
    with pytest.raises(ValueError):
        CAL.add_business_time(dt.datetime(2026, 1, 5, 9), dt.timedelta(hours=1))
    with pytest.raises(ValueError):
        WorkingHours(dt.time(18), dt.time(9))


def test_prefix_arithmetic_equals_the_day_by_day_walk() -> None:
    """The prefix sums (what SLA recomputation uses) give exactly what walking the days gives."""
    import random

    from crm_core.calendar_store import parse_hours

    rng = random.Random(7)
    tz = ZoneInfo("Asia/Shanghai")
    calendars = [
        BusinessCalendar(),
        BusinessCalendar(
            hours=parse_hours([["08:30", "12:00"], ["13:30", "21:00"]]), overrides={dt.date(2025, 10, 9): False}
        ),
    ]
    for calendar in calendars:
        for _ in range(1500):
            start = dt.datetime(2024, 1, 1, tzinfo=tz) + dt.timedelta(minutes=rng.randrange(0, 3 * 365 * 1440))
            end = start + dt.timedelta(minutes=rng.randrange(0, 40 * 1440))
            duration = dt.timedelta(minutes=rng.choice([1, 30, 59, 60, 61, 480, 1440, 2400, rng.randrange(1, 20000)]))
            assert calendar.business_time_between(start, end) == calendar._between_by_walk(start, end)
            assert calendar.add_business_time(start, duration) == calendar._add_by_walk(start, duration)


def test_the_seeds_thirty_working_day_review_spans_national_day() -> None:
    from crm_core.members.review import admission_due, review_due

    # Materials complete Fri 2025-09-19: Sept 22–26, 调休 Sun 28, 29, 30 (8 days); Oct 1–8 closed;
    # Oct 9, 10, 调休 Sat 11 (11); Oct 13–31 (26); Nov 3, 4, 5, 6 → the 30th is Thu 2025-11-06.
    assert review_due(BusinessCalendar(), dt.date(2025, 9, 19)) == dt.date(2025, 11, 6)
    closed = BusinessCalendar(overrides={dt.date(2025, 10, 10): False})  # one day closed: one day later
    assert admission_due(closed, dt.date(2025, 9, 19)) == dt.date(2025, 11, 7)


def test_the_calendar_store_follows_the_site_time_zone() -> None:
    from crm_core.calendar_store import CalendarStore

    store = CalendarStore()
    store._cache[None] = BusinessCalendar()
    store.use_timezone("Asia/Shanghai")  # unchanged: the cache stays
    assert None in store._cache
    store.use_timezone("Asia/Urumqi")
    assert store.tz == ZoneInfo("Asia/Urumqi") and store._cache == {}
