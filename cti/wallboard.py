"""The live wallboard: today's call-centre KPIs per queue, kept incrementally from the domain events.

Every event costs O(1) whatever the number of calls so far today: the board keeps counters and sums
per queue (and per hour of today), never a list of today's calls. The only per-call state is the map
of calls still *live* (offered and not yet ended), which is bounded by the calls in progress and is
what makes duplicates, transfers and late outcomes count once. Definitions: docs/KPIS.md.

Pure: no I/O, no clock of its own (times are the events' ``at``, and ``snapshot(now)``). Seeding from
the call log after a restart is :mod:`cti.wallboard_seed`; pushing frames is the panel's job.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal
from zoneinfo import ZoneInfo

from crm_core.settings import QueuePolicy
from cti.calls.events import (
    AgentStateChanged,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallMissed,
    CallOffered,
    DomainEvent,
)

__all__ = ["WALLBOARD_EVENTS", "WRAPUP_REASON", "LiveCall", "QueueDay", "SeedCounts", "Wallboard"]

WRAPUP_REASON = "wrap-up"  # the pause reason of a required wrap-up hold (cti.agents.WRAPUP_REASON)

WALLBOARD_EVENTS: tuple[type[DomainEvent], ...] = (
    CallOffered,
    CallAnswered,
    CallAbandoned,
    CallMissed,
    CallEnded,
    AgentStateChanged,
)

CallStatus = Literal["waiting", "answered", "abandoned", "timed_out"]
SHOWN_STATES = ("ready", "ringing", "on_call", "wrap_up", "paused", "logged_out")


@dataclasses.dataclass(slots=True)
class LiveCall:
    """A call offered to a queue and not yet ended: where it waits and what already counted."""

    queue: str
    entered_at: float
    bucket: int  # hour of today it entered; -1: entered before today (counts nowhere today)
    status: CallStatus = "waiting"


@dataclasses.dataclass(slots=True)
class QueueDay:
    """One queue's counters for one local day; ``h_*`` are per hour of the day (by hour of entry)."""

    hours: int
    offered: int = 0
    answered: int = 0
    answered_within: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    timed_out: int = 0
    answered_wait_sum: float = 0.0
    handled: int = 0  # answered calls that ended today (the AHT's denominator)
    talk_sum: float = 0.0
    wrapup_sum: float = 0.0
    h_offered: list[int] = dataclasses.field(default_factory=list)
    h_answered: list[int] = dataclasses.field(default_factory=list)
    h_within: list[int] = dataclasses.field(default_factory=list)
    h_abandoned: list[int] = dataclasses.field(default_factory=list)
    h_short: list[int] = dataclasses.field(default_factory=list)
    h_timed_out: list[int] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("h_offered", "h_answered", "h_within", "h_abandoned", "h_short", "h_timed_out"):
            setattr(self, name, [0] * self.hours)

    def kpis(self, policy: QueuePolicy) -> dict[str, Any]:
        """The derived KPIs (docs/KPIS.md); None where the denominator is zero."""
        counted_abandons = self.abandoned - self.short_abandoned
        left = self.answered + counted_abandons + self.timed_out
        return {
            "service_level_seconds": policy.service_level_seconds,
            "short_abandon_seconds": policy.short_abandon_seconds,
            "offered": self.offered,
            "answered": self.answered,
            "answered_within": self.answered_within,
            "abandoned": self.abandoned,
            "short_abandoned": self.short_abandoned,
            "timed_out": self.timed_out,
            "left": left,
            "service_level": _pct(self.answered_within, left),
            "abandon_rate": _pct(counted_abandons, left),
            "asa": _mean(self.answered_wait_sum, self.answered),
            "aht": _mean(self.talk_sum + self.wrapup_sum, self.handled),
            "handled": self.handled,
            "by_hour": {
                "offered": list(self.h_offered),
                "answered": list(self.h_answered),
                "abandoned": list(self.h_abandoned),
                "service_level": [
                    _pct(w, a + ab - s + t)
                    for w, a, ab, s, t in zip(
                        self.h_within, self.h_answered, self.h_abandoned, self.h_short, self.h_timed_out, strict=True
                    )
                ],
            },
        }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SeedCounts:
    """One (queue, hour of entry) group of today's call log, as :mod:`cti.wallboard_seed` reads it.

    ``hour`` is -1 for calls that entered before today but ended today (they only add to AHT)."""

    queue: str
    hour: int
    offered: int = 0
    answered: int = 0
    answered_within: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    timed_out: int = 0
    answered_wait_sum: float = 0.0
    handled: int = 0
    talk_sum: float = 0.0
    wrapup_sum: float = 0.0


@dataclasses.dataclass(slots=True)
class _Agent:
    agent: str
    name: str | None
    state: str
    since: float
    pause_reason: str | None
    queues: tuple[str, ...]
    available: bool


class Wallboard:
    """Bus subscriber: ``feed(event)`` updates the counters; ``snapshot(now)`` is the board.

    ``on_change`` is called (synchronously, cheaply) after every event that changed something, so a
    pusher can coalesce frames; ``version`` counts those changes.
    """

    def __init__(
        self,
        queues: Mapping[str, QueuePolicy],
        timezone: str,
        *,
        now: float,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.policies = dict(queues)
        self.tz = ZoneInfo(timezone)
        self.on_change = on_change
        self.version = 0
        self.live: dict[str, LiveCall] = {}
        self.agents: dict[str, _Agent] = {}
        self._wrap_since: dict[str, float] = {}  # agent → when its wrap-up began
        self._wrap_queue: dict[str, str] = {}  # agent → queue of its last answered queue call
        self._seeded: set[str] = set()  # live calls taken from the call log, until a resync confirms them
        self.day: dt.date = dt.date.min
        self.day_start = 0.0
        self.day_end = 0.0
        self._hour_starts: list[float] = []
        self.hour_labels: list[int] = []
        self.days: dict[str, QueueDay] = {}
        self._start_day(now)

    # ------------------------------------------------------------------ the day
    def _start_day(self, at: float) -> None:
        """Zero the counters for the local day holding ``at``; hour boundaries follow the zone's own
        clock (a DST day has 23 or 25 hours; Asia/Shanghai always 24)."""
        day = dt.datetime.fromtimestamp(at, self.tz).date()
        start = dt.datetime(day.year, day.month, day.day, tzinfo=self.tz)
        end = start + dt.timedelta(days=1)
        self.day = day
        self.day_start = start.timestamp()
        self.day_end = end.timestamp()
        starts: list[float] = []
        labels: list[int] = []
        t = self.day_start
        while t < self.day_end:
            starts.append(t)
            labels.append(dt.datetime.fromtimestamp(t, self.tz).hour)
            t += 3600.0
        self._hour_starts, self.hour_labels = starts, labels
        self.days = {q: QueueDay(len(starts)) for q in self.policies}
        for call in self.live.values():
            call.bucket = -1  # yesterday's calls still live count nowhere today

    def roll(self, at: float) -> bool:
        """Start a new day when ``at`` is past today's end; True when it did."""
        if at < self.day_end:
            return False
        self._start_day(at)
        self._changed()
        return True

    def day_of(self, queue: str) -> QueueDay:
        day = self.days.get(queue)
        if day is None:
            day = self.days[queue] = QueueDay(len(self._hour_starts))
        return day

    def policy(self, queue: str) -> QueuePolicy:
        policy = self.policies.get(queue)
        if policy is None:
            policy = self.policies[queue] = QueuePolicy()
        return policy

    def bucket(self, at: float) -> int:
        if at < self.day_start:
            return -1
        return bisect.bisect_right(self._hour_starts, at) - 1

    # ------------------------------------------------------------------ events
    def __call__(self, event: DomainEvent) -> None:
        self.feed(event)

    def feed(self, event: DomainEvent) -> None:
        """Apply one domain event (see docs/KPIS.md for what each one counts)."""
        if event.at >= self.day_end:
            self.roll(event.at)
        if isinstance(event, AgentStateChanged):
            changed = self._on_agent(event)
        elif isinstance(event, CallOffered):
            changed = self._on_offered(event)
        elif isinstance(event, CallAnswered):
            changed = self._on_answered(event)
        elif isinstance(event, CallAbandoned):
            changed = self._left(event.linkedid, "abandoned", event.wait_seconds)
        elif isinstance(event, CallMissed):
            changed = self._left(event.linkedid, "timed_out", event.wait_seconds)
        elif isinstance(event, CallEnded):
            changed = self._on_ended(event)
        else:
            return
        if changed:
            self._changed()

    def _changed(self) -> None:
        self.version += 1
        if self.on_change is not None:
            self.on_change()

    def _on_offered(self, event: CallOffered) -> bool:
        call = self.live.get(event.linkedid)
        if call is not None:
            if call.status != "waiting" or call.queue == event.queue:
                return False  # a duplicate, or re-queued after an answer (a transfer): counted once
            call.queue = event.queue  # moved on to another queue while waiting: offered there too
        bucket = self.bucket(event.at)
        if call is None:
            self.live[event.linkedid] = LiveCall(event.queue, event.at, bucket)
        else:
            call.entered_at, call.bucket = event.at, bucket
        if bucket >= 0:
            day = self.day_of(event.queue)
            day.offered += 1
            day.h_offered[bucket] += 1
        return True

    def _on_answered(self, event: CallAnswered) -> bool:
        call = self.live.get(event.linkedid)
        if call is None or call.status != "waiting":
            return False  # not a queue call, or answered again after a transfer
        call.status = "answered"
        if call.bucket >= 0:
            day = self.day_of(call.queue)
            day.answered += 1
            day.h_answered[call.bucket] += 1
            day.answered_wait_sum += event.wait_seconds
            if event.wait_seconds <= self.policy(call.queue).service_level_seconds:
                day.answered_within += 1
                day.h_within[call.bucket] += 1
        return True

    def _left(self, linkedid: str, status: CallStatus, wait_seconds: float) -> bool:
        call = self.live.get(linkedid)
        if call is None or call.status != "waiting":
            return False
        call.status = status
        if call.bucket >= 0:
            day = self.day_of(call.queue)
            if status == "abandoned":
                day.abandoned += 1
                day.h_abandoned[call.bucket] += 1
                if wait_seconds < self.policy(call.queue).short_abandon_seconds:
                    day.short_abandoned += 1
                    day.h_short[call.bucket] += 1
            else:
                day.timed_out += 1
                day.h_timed_out[call.bucket] += 1
        return True

    def _on_ended(self, event: CallEnded) -> bool:
        call = self.live.pop(event.linkedid, None)
        if call is None or call.status != "answered":
            return call is not None  # a waiting call vanished (lost): the waiting count changed
        if event.at >= self.day_start:
            day = self.day_of(call.queue)
            day.handled += 1
            day.talk_sum += event.talk_seconds
        for agent in event.answered_agents:
            self._wrap_queue[agent] = call.queue
        return True

    def _on_agent(self, event: AgentStateChanged) -> bool:
        wrapping = event.state == "wrap_up" or (event.state == "paused" and event.pause_reason == WRAPUP_REASON)
        state = "wrap_up" if wrapping else event.state
        agent = self.agents.get(event.agent)
        if agent is None:
            agent = self.agents[event.agent] = _Agent(
                event.agent, event.name, state, event.at, event.pause_reason, event.queues, event.available
            )
        else:
            if agent.state != state:
                agent.since = event.at
            agent.state, agent.name = state, event.name or agent.name
            agent.pause_reason = event.pause_reason if state == "paused" else None
            agent.queues, agent.available = event.queues, event.available
        if wrapping:
            self._wrap_since.setdefault(event.agent, event.at)
        else:
            began = self._wrap_since.pop(event.agent, None)
            queue = self._wrap_queue.pop(event.agent, None)
            if began is not None and queue is not None and event.at >= self.day_start:
                self.day_of(queue).wrapup_sum += event.at - max(began, self.day_start)
        return True

    # ------------------------------------------------------------------ seeding
    def seed(self, groups: Iterable[SeedCounts], live: Mapping[str, LiveCall]) -> None:
        """Replace today's counters with the call log's (after a restart or resync) and remember its
        live calls, so their CallOffered / CallAnswered replayed by the tracker's resync count once."""
        self.days = {q: QueueDay(len(self._hour_starts)) for q in self.policies}
        for g in groups:
            day = self.day_of(g.queue)
            day.handled += g.handled
            day.talk_sum += g.talk_sum
            day.wrapup_sum += g.wrapup_sum
            if g.hour < 0:
                continue
            h = g.hour
            day.offered += g.offered
            day.answered += g.answered
            day.answered_within += g.answered_within
            day.abandoned += g.abandoned
            day.short_abandoned += g.short_abandoned
            day.timed_out += g.timed_out
            day.answered_wait_sum += g.answered_wait_sum
            day.h_offered[h] += g.offered
            day.h_answered[h] += g.answered
            day.h_within[h] += g.answered_within
            day.h_abandoned[h] += g.abandoned
            day.h_short[h] += g.short_abandoned
            day.h_timed_out[h] += g.timed_out
        for linkedid, call in live.items():
            if linkedid not in self.live:
                self.live[linkedid] = call
                self._seeded.add(linkedid)
        self._changed()

    def forget_seeded_unless(self, is_live: Callable[[str], bool]) -> int:
        """After the tracker's resync: drop the call log's live calls the PBX no longer has (the log
        keeps a row "live" when the process died mid-call; no CallEnded will ever come for it)."""
        gone = [linkedid for linkedid in self._seeded if not is_live(linkedid)]
        for linkedid in gone:
            self.live.pop(linkedid, None)
        self._seeded.clear()
        if gone:
            self._changed()
        return len(gone)

    def hour_starts(self) -> list[float]:
        """Epoch seconds of each hour of today (for the seed query's buckets)."""
        return list(self._hour_starts)

    # ------------------------------------------------------------------ the board
    def snapshot(self, now: float, *, agents: bool = True) -> dict[str, Any]:
        """The board as JSON-ready data; costs O(queues × hours + live calls + agents).

        ``agents=False`` leaves out the per-agent list (the per-queue counts stay): what the pushed
        frames carry, so a frame stays a few KiB with 2,000 agents; screens follow agents through the
        hub's own ``team_state`` frames."""
        self.roll(now)
        waiting: dict[str, list[float]] = {}
        for call in self.live.values():
            if call.status == "waiting":
                waiting.setdefault(call.queue, []).append(call.entered_at)
        agents_by_queue: dict[str, dict[str, Any]] = {}
        for agent in self.agents.values():
            for queue in agent.queues:
                q = agents_by_queue.setdefault(queue, {s: 0 for s in SHOWN_STATES} | {"pause_reasons": {}})
                q[agent.state] = q.get(agent.state, 0) + 1
                if agent.state == "paused":
                    reason = agent.pause_reason or ""
                    q["pause_reasons"][reason] = q["pause_reasons"].get(reason, 0) + 1
        queues: dict[str, Any] = {}
        for name in sorted(set(self.days) | set(waiting)):
            kpis = self.day_of(name).kpis(self.policy(name))
            since = sorted(waiting.get(name, ()))
            kpis["waiting"] = len(since)
            kpis["waiting_since"] = [round(t, 3) for t in since]
            kpis["longest_wait"] = round(now - since[0], 1) if since else 0.0
            kpis["agents"] = agents_by_queue.get(name, {s: 0 for s in SHOWN_STATES} | {"pause_reasons": {}})
            queues[name] = kpis
        agent_rows = None
        if agents:
            agent_rows = [
                {
                    "agent": a.agent,
                    "name": a.name,
                    "state": a.state,
                    "since": round(a.since, 3),
                    "pause_reason": a.pause_reason,
                    "queues": list(a.queues),
                    "available": a.available,
                }
                for a in sorted(self.agents.values(), key=lambda a: a.agent)
            ]
        return {
            "day": self.day.isoformat(),
            "timezone": str(self.tz),
            "at": round(now, 3),
            "hours": list(self.hour_labels),
            "queues": queues,
            "agents": agent_rows,
        }


def _pct(part: int, whole: int) -> float | None:
    return None if whole <= 0 else round(100.0 * part / whole, 1)


def _mean(total: float, count: int) -> float | None:
    return None if count <= 0 else round(total / count, 1)
