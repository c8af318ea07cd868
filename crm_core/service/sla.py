"""SLA clocks computed from a request's history, in business time (crm_core.business_calendar).

Two clocks per request:

* **response** runs from creation until the first response: a `responded` event (an agent contacted
  the customer) or the first move to in_progress, waiting_customer, resolved or closed.
* **resolution** runs while the request is new, assigned or in_progress; it is *paused* while waiting
  for the customer and *stopped* when resolved, closed or merged. A reopen (resolved → in_progress)
  resumes it from where it stopped: time spent resolved never counts.

Targets come from the policy of the request's (type, priority) at each moment: a `priority` event
switches the targets from then on, and the business time already used counts against the new target
(a complaint raised to urgent after 50 minutes has 10 of its 60 left, not 60).

Levels per clock: 0 = warning (`warn_percent` of the target used; tells the owner), 1 = breached (the
target used up; tells the team lead), 2 = escalated (`escalate_percent`; tells the supervisors above).
Each level's instant is exact: it is where the used time crosses the threshold, found with
`add_business_time` from the last event, so recomputing after a calendar change moves it exactly.

Everything here is pure (no I/O) so that the same history always gives the same answer.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crm_core.business_calendar import BusinessCalendar

RESPONSE_STATES = frozenset({"in_progress", "waiting_customer", "resolved", "closed"})
RESOLUTION_RUNNING = frozenset({"new", "assigned", "in_progress"})
RESOLUTION_PAUSED = frozenset({"waiting_customer"})
LEVELS = (0, 1, 2)


@dataclass(frozen=True, slots=True)
class Targets:
    response: dt.timedelta
    resolution: dt.timedelta
    warn_percent: int = 80
    escalate_percent: int = 150

    def threshold(self, clock: str, level: int) -> dt.timedelta:
        return _thresholds(self)[clock, level]


@functools.lru_cache(maxsize=256)
def _thresholds(targets: Targets) -> dict[tuple[str, int], dt.timedelta]:
    """Each clock's level thresholds, computed once per policy (they are asked for millions of times)."""
    out = {}
    for clock, target in (("response", targets.response), ("resolution", targets.resolution)):
        for level, percent in enumerate((targets.warn_percent, 100, targets.escalate_percent)):
            out[clock, level] = target * percent / 100
    return out


# The seeds' KPIs (DOMAIN.md: "1小时回复率、24小时解决率") are the normal priority's targets, counted in
# business hours like every SLA here; the other priorities are ours and configurable (sla_policies).
DEFAULT_TARGETS: dict[str, Targets] = {
    "urgent": Targets(dt.timedelta(minutes=30), dt.timedelta(hours=8)),
    "high": Targets(dt.timedelta(hours=1), dt.timedelta(hours=16)),
    "normal": Targets(dt.timedelta(hours=1), dt.timedelta(hours=24)),
    "low": Targets(dt.timedelta(hours=4), dt.timedelta(hours=40)),
}


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    at: dt.datetime
    kind: str
    to_state: str | None = None
    data: dict[str, Any] | None = None


@dataclass(slots=True)
class Clock:
    target: dt.timedelta
    used: dt.timedelta = dt.timedelta(0)  # business time used up to the last event
    done_at: dt.datetime | None = None
    running: bool = True
    paused: bool = False
    crossed: dict[int, dt.datetime] = field(default_factory=dict)  # level -> instant it was crossed
    upcoming: dict[int, dt.datetime] = field(default_factory=dict)  # level -> instant it will be, if running
    due_at: dt.datetime | None = None
    breached: bool = False
    used_now: dt.timedelta = dt.timedelta(0)


@dataclass(frozen=True, slots=True)
class SlaResult:
    response: Clock
    resolution: Clock
    next_check_at: dt.datetime | None

    @property
    def paused(self) -> bool:
        return self.resolution.paused


TargetsFor = Callable[[str, str], Targets]


def compute(
    events: Sequence[HistoryEvent], targets_for: TargetsFor, calendar: BusinessCalendar, now: dt.datetime
) -> SlaResult:
    """The two clocks of one request at `now`, from its events in order (the first is `created`)."""
    if not events or events[0].kind != "created":
        raise ValueError("a request's history starts with its `created` event")
    first = events[0].data or {}
    kind, priority = str(first.get("type", "")), str(first.get("priority", "normal"))
    targets = targets_for(kind, priority)
    response = Clock(targets.response)
    resolution = Clock(targets.resolution)
    state = "new"
    last = events[0].at
    clocks = {"response": response, "resolution": resolution}

    for event in events[1:]:
        at = max(event.at, last)  # a clock never runs backwards, even with skewed stamps
        _advance(clocks, targets, calendar, last, at)
        last = at
        if event.kind == "priority" and event.data:
            kind = str(event.data.get("type", kind))
            priority = str(event.data.get("priority", priority))
            targets = targets_for(kind, priority)
            response.target, resolution.target = targets.response, targets.resolution
            _catch_up(clocks, targets, calendar, at)
        if response.running and (
            event.kind == "responded" or (event.kind == "state" and event.to_state in RESPONSE_STATES)
        ):
            response.running, response.done_at = False, at
        if event.kind == "state" and event.to_state:
            state = event.to_state
            resolution.paused = state in RESOLUTION_PAUSED
            resolution.running = state in RESOLUTION_RUNNING
            if state in ("resolved", "closed", "merged") and resolution.done_at is None:
                resolution.done_at = at
            elif resolution.running:
                resolution.done_at = None  # reopened
    if state in ("closed", "merged"):
        response.running = False
    for name, clock in clocks.items():
        _finish(name, clock, targets, calendar, last, now)
    upcoming = [
        at
        for clock in clocks.values()
        if clock.running
        for level, at in clock.upcoming.items()
        if level not in clock.crossed or clock.crossed[level] > now
    ]
    return SlaResult(response, resolution, min(upcoming) if upcoming else None)


def _advance(
    clocks: dict[str, Clock], targets: Targets, calendar: BusinessCalendar, start: dt.datetime, end: dt.datetime
) -> None:
    """Run the clocks that are running over [start, end), noting the levels they cross on the way."""
    elapsed: dt.timedelta | None = None  # the same for every running clock: computed once
    for name, clock in clocks.items():
        if not clock.running:
            continue
        if elapsed is None:
            elapsed = calendar.business_time_between(start, end)
        if elapsed <= dt.timedelta(0):
            continue
        for level in LEVELS:
            threshold = targets.threshold(name, level)
            if level not in clock.crossed and clock.used < threshold <= clock.used + elapsed:
                clock.crossed[level] = calendar.add_business_time(start, threshold - clock.used)
        clock.used += elapsed


def _catch_up(clocks: dict[str, Clock], targets: Targets, calendar: BusinessCalendar, at: dt.datetime) -> None:
    """After a target change, levels the used time is already past are crossed at that moment."""
    for name, clock in clocks.items():
        if not clock.running:
            continue
        for level in LEVELS:
            if level not in clock.crossed and clock.used >= targets.threshold(name, level):
                clock.crossed[level] = at


def _finish(
    name: str, clock: Clock, targets: Targets, calendar: BusinessCalendar, last: dt.datetime, now: dt.datetime
) -> None:
    if clock.running:
        for level in LEVELS:
            threshold = targets.threshold(name, level)
            if level not in clock.crossed:
                clock.upcoming[level] = calendar.add_business_time(last, threshold - clock.used)
        clock.due_at = clock.crossed.get(1) or clock.upcoming.get(1)
        clock.used_now = clock.used + _since(calendar, last, now)
        clock.breached = clock.used_now >= clock.target
        # levels whose instant has come are crossed by now
        for level, at in list(clock.upcoming.items()):
            if at <= now:
                clock.crossed[level] = at
    else:
        clock.used_now = clock.used
        clock.breached = clock.used > clock.target
        clock.due_at = None if clock.paused else clock.crossed.get(1)
        if clock.paused:
            clock.upcoming = {}


def _since(calendar: BusinessCalendar, last: dt.datetime, now: dt.datetime) -> dt.timedelta:
    return calendar.business_time_between(last, now) if now > last else dt.timedelta(0)


def target_table(rows: Sequence[tuple[str, str, int, int, int, int]]) -> TargetsFor:
    """`targets_for` from policy rows (type, priority, response min, resolution min, warn %, escalate %):
    an exact (type, priority) row wins over ("*", priority), which wins over DEFAULT_TARGETS."""
    table = {(t, p): Targets(dt.timedelta(minutes=r), dt.timedelta(minutes=s), w, e) for t, p, r, s, w, e in rows}

    def targets_for(kind: str, priority: str) -> Targets:
        return (
            table.get((kind, priority))
            or table.get(("*", priority))
            or DEFAULT_TARGETS.get(priority, DEFAULT_TARGETS["normal"])
        )

    return targets_for
