"""SLA clocks from a request's history, against hand-computed figures on the real Chinese calendar.

Working hours are the default 09:00–12:00 and 13:00–18:00 (8 h a day). Around the 2025 National
Day: 10-01..10-08 closed, Sunday 09-28 and Saturday 10-11 are make-up working days (调休).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from crm_core.business_calendar import BusinessCalendar
from crm_core.service import sla
from crm_core.service.sla import HistoryEvent

SH = ZoneInfo("Asia/Shanghai")
CAL = BusinessCalendar()
TARGETS = sla.target_table([])  # the defaults: normal 1 h / 24 h, urgent 30 min / 8 h


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=SH)


def created(when: str, priority: str = "normal", kind: str = "complaint") -> HistoryEvent:
    return HistoryEvent(at(when), "created", "new", {"type": kind, "priority": priority})


def state(when: str, to: str) -> HistoryEvent:
    return HistoryEvent(at(when), "state", to)


def local(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(SH).strftime("%Y-%m-%d %H:%M")


def test_over_a_weekend_with_a_make_up_sunday() -> None:
    # Fri 17:00: 1 h Fri, Sat closed, Sun 09-28 working (调休) 8 h, Mon 8 h, Tue 7 h → Tue 17:00.
    result = sla.compute([created("2025-09-26 17:00")], TARGETS, CAL, at("2025-09-26 17:30"))
    assert local(result.response.due_at) == "2025-09-26 18:00"
    assert local(result.resolution.due_at) == "2025-09-30 17:00"
    assert local(result.response.upcoming[0]) == "2025-09-26 17:48"  # warning at 80 % of 60 min
    assert local(result.next_check_at) == "2025-09-26 17:48"
    assert result.resolution.used_now == dt.timedelta(minutes=30)
    assert not result.response.breached


def test_across_the_national_day_holiday_to_a_make_up_saturday() -> None:
    # Tue 09-30 17:00: 1 h, 10-01..10-08 closed, Thu 8 h, Fri 8 h, Sat 10-11 (调休) 7 h → Sat 17:00.
    result = sla.compute([created("2025-09-30 17:00")], TARGETS, CAL, at("2025-10-05 12:00"))
    assert local(result.resolution.due_at) == "2025-10-11 17:00"
    # Response: 1 h from Tue 17:00 → Tue 18:00, long past on 10-05: breached, and so at 150 %? No:
    # 90 min of business time is needed for level 2, and only 60 min of it existed before the holiday.
    assert result.response.breached
    assert local(result.response.crossed[1]) == "2025-09-30 18:00"
    assert 2 not in result.response.crossed
    assert local(result.response.upcoming[2]) == "2025-10-09 09:30"


def test_waiting_for_the_customer_pauses_and_resumes_the_resolution_clock() -> None:
    events = [
        created("2025-10-09 09:00"),
        state("2025-10-09 10:00", "in_progress"),  # first response after exactly 1 h: met
        state("2025-10-09 11:00", "waiting_customer"),  # 2 h used
    ]
    paused = sla.compute(events, TARGETS, CAL, at("2025-10-10 12:00"))
    assert paused.paused and paused.resolution.due_at is None
    assert paused.resolution.used_now == dt.timedelta(hours=2)
    assert not paused.response.breached and local(paused.response.done_at) == "2025-10-09 10:00"
    assert paused.next_check_at is None  # nothing can fire while paused

    events.append(state("2025-10-10 14:00", "in_progress"))
    # 22 h left from Fri 14:00: Fri 4 h, Sat 10-11 (调休) 8 h, Sun closed, Mon 8 h, Tue 2 h → Tue 11:00.
    resumed = sla.compute(events, TARGETS, CAL, at("2025-10-10 15:00"))
    assert local(resumed.resolution.due_at) == "2025-10-14 11:00"
    assert resumed.resolution.used_now == dt.timedelta(hours=3)


def test_a_reopened_request_continues_where_it_stopped() -> None:
    events = [
        created("2025-10-09 09:00"),
        state("2025-10-09 12:00", "resolved"),  # 3 h used
        state("2025-10-10 09:00", "in_progress"),  # reopened next morning: the night and 13–18 don't count
    ]
    result = sla.compute(events, TARGETS, CAL, at("2025-10-10 10:00"))
    assert result.resolution.used_now == dt.timedelta(hours=4)
    # 21 h left from Fri 09:00: Fri 8, Sat 8, Mon 5 → Mon 10-13 09:00 + 3 h + lunch + 2 h = 15:00.
    assert local(result.resolution.due_at) == "2025-10-13 15:00"
    done = sla.compute([*events[:2]], TARGETS, CAL, at("2025-10-10 10:00"))
    assert not done.resolution.running and not done.resolution.breached and done.resolution.due_at is None


def test_raising_the_priority_switches_targets_and_keeps_the_time_used() -> None:
    events = [
        created("2025-10-09 09:00"),
        HistoryEvent(at("2025-10-09 09:20"), "priority", None, {"priority": "urgent", "type": "complaint"}),
    ]
    result = sla.compute(events, TARGETS, CAL, at("2025-10-09 09:21"))
    # Urgent: 30 min to respond, 20 used: due 09:30; warning (80 % = 24 min) at 09:24.
    assert local(result.response.due_at) == "2025-10-09 09:30"
    assert local(result.response.upcoming[0]) == "2025-10-09 09:24"
    late = [created("2025-10-09 09:00"), HistoryEvent(at("2025-10-09 09:50"), "priority", None, {"priority": "urgent"})]
    result = sla.compute(late, TARGETS, CAL, at("2025-10-09 09:51"))
    assert result.response.breached and local(result.response.crossed[1]) == "2025-10-09 09:50"


def test_a_calendar_change_moves_the_due_time_exactly() -> None:
    closed_monday = BusinessCalendar(overrides={dt.date(2025, 9, 29): False})
    result = sla.compute([created("2025-09-26 17:00")], TARGETS, closed_monday, at("2025-09-26 17:30"))
    # Fri 1 h, Sun 8 h, (Mon closed), Tue 8 h, holiday, Thu 10-09 7 h → 17:00.
    assert local(result.resolution.due_at) == "2025-10-09 17:00"


def test_a_team_with_other_hours() -> None:
    from crm_core.calendar_store import parse_hours

    evening = BusinessCalendar(hours=parse_hours([["12:00", "20:00"]]))
    result = sla.compute([created("2025-10-09 19:30")], TARGETS, evening, at("2025-10-09 19:31"))
    assert local(result.response.due_at) == "2025-10-10 12:30"


def test_history_must_start_with_creation() -> None:
    with pytest.raises(ValueError, match="created"):
        sla.compute([state("2025-10-09 10:00", "in_progress")], TARGETS, CAL, at("2025-10-09 10:00"))
    with pytest.raises(ValueError, match="overlap"):
        from crm_core.calendar_store import parse_hours

        parse_hours([["09:00", "12:00"], ["11:00", "13:00"]])
