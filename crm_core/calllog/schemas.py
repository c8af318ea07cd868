"""What the telephony side hands to the call log: plain data, no Asterisk types."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AgentOffer:
    agent_endpoint: str
    rang_at: dt.datetime | None
    ring_s: float | None
    answered: bool
    via: str  # queue | direct | transfer | click_to_dial


@dataclass(frozen=True, slots=True)
class LegEntry:
    uniqueid: str
    channel: str
    role: str  # customer | agent | local | other
    started_at: dt.datetime | None = None
    answered_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    hangup_cause: str | None = None


@dataclass(frozen=True, slots=True)
class CallLogEntry:
    """A snapshot of one call. `revision` orders snapshots: a higher one always wins, so writes are
    idempotent and a replayed or late snapshot never moves the row backwards."""

    linkedid: str
    revision: int
    state: str  # live | ended
    direction: str
    started_at: dt.datetime
    pbx: str = "default"
    caller_raw: str | None = None
    caller_name: str | None = None
    callee_raw: str | None = None
    dnis: str | None = None
    queue: str | None = None
    member_id: int | None = None
    agent_endpoint: str | None = None
    answered_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    wait_s: float | None = None
    ring_s: float | None = None
    talk_s: float | None = None
    outcome: str | None = None
    hangup_cause: str | None = None
    recording_file: str | None = None
    cti_call_id: str | None = None
    transfers: int = 0
    agents: tuple[AgentOffer, ...] = ()
    legs: tuple[LegEntry, ...] = field(default=())
