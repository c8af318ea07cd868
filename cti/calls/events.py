"""Domain events of the call tracker: what happened to calls and agents, with no Asterisk types in them.

The tracker (:mod:`cti.calls.tracker`) turns AMI events into these; every subscriber (screen pop, call
log, callbacks, agent panel, wallboard, recordings) reads only these. They are frozen, slotted
dataclasses built from plain values so they can be queued, logged, compared in tests and serialised
to JSON (:func:`event_to_dict`) without touching the tracker again.

Times (``at``, ``started_at``...) are the tracker's injected clock (``feed(msg, now)``), epoch seconds;
durations are seconds (float). Agent identities are PBX endpoint names (``"agent1001"``) with the
queue interface beside them (``"PJSIP/agent1001"``); mapping them to CRM users is a subscriber's job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

__all__ = [
    "AgentLeg",
    "AgentRinging",
    "AgentState",
    "AgentStateChanged",
    "AgentVia",
    "CallAbandoned",
    "CallAnswered",
    "CallDirection",
    "CallEnded",
    "CallLeg",
    "CallMissed",
    "CallOffered",
    "CallOutcome",
    "CallTransferred",
    "DomainEvent",
    "LegRole",
    "MissedReason",
    "Transfer",
    "TransferKind",
    "event_to_dict",
]

CallDirection = Literal["inbound", "outbound", "internal"]
CallOutcome = Literal["answered", "abandoned", "no_answer", "busy", "failed", "lost"]
AgentState = Literal["logged_out", "ready", "ringing", "on_call", "wrap_up", "paused"]
TransferKind = Literal["blind", "attended"]
MissedReason = Literal["queue_timeout", "no_agents", "after_hours", "queue_exit"]
LegRole = Literal["customer", "agent", "local"]
AgentVia = Literal["queue", "direct", "transfer", "click_to_dial", "outbound", "adopted"]
"""How an agent came into a call: rung by a queue; dialled directly (Dial to the agent's phone); rung
after a transfer; the agent leg of a click-to-dial Originate; the agent's own phone placed the call;
found already in progress by :meth:`CallTracker.resync`."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DomainEvent:
    """Base of every domain event; ``at`` is when it happened on the tracker's clock."""

    at: float

    @property
    def type(self) -> str:
        """The event's name as used on the bus and in panel WebSocket frames (the class name)."""
        return type(self).__name__


# ----------------------------------------------------------------------------------------- parts
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AgentLeg:
    """One time an agent's phone was part of a call (one agent channel, i.e. one Uniqueid), in order.

    An agent appears once per channel: in a blind transfer back to an agent who was rung before, that
    agent appears twice (capture 05b: agent1002 rung by the queue, then rung again by the transfer).
    """

    agent: str
    interface: str
    uniqueid: str
    via: AgentVia
    queue: str | None
    rang_at: float | None
    answered_at: float | None
    """When the agent picked up (the agent channel went Up), whether or not the caller was connected."""
    connected_at: float | None
    """When the agent was connected to the other party (AgentConnect / Dial answered)."""
    ended_at: float | None
    ring_seconds: float | None
    talk_seconds: float | None
    result: str
    """answered (connected to the other party) | no_answer | cancelled (another agent took it or the
    caller left) | busy | failed | not_connected (the agent's own call or click-to-dial leg was up but
    the customer never answered)."""

    @property
    def answered(self) -> bool:
        return self.connected_at is not None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallLeg:
    """One channel (Uniqueid) of a call, for the call-detail timeline."""

    uniqueid: str
    channel: str
    role: LegRole
    started_at: float
    answered_at: float | None
    ended_at: float | None
    hangup_cause: int | None
    hangup_cause_text: str | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    """A transfer inside a call. ``to_agent`` is filled in once the target agent's phone rings."""

    kind: TransferKind
    at: float
    from_agent: str | None
    to_target: str | None
    """The dialled target as Asterisk reports it: ``"1002@agents"`` (blind) or the target channel."""
    to_agent: str | None


# ----------------------------------------------------------------------------------------- calls
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallArrived(DomainEvent):
    """A caller reached a service line: the dialplan named the call's DNIS, before it answered the
    call and queued it. The screen pop starts reading the caller here, since an idle agent rings
    within a few ms of the queue join: whatever the dialplan does before Queue() (answer, recording,
    a greeting: the fixtures' reference dialplan plays one, and its queue join came 0.78-0.81 s
    after the line was named) is time the read gets ahead of the ring."""

    linkedid: str
    caller_number: str | None
    caller_name: str | None
    dnis: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallOffered(DomainEvent):
    """A caller entered a queue (QueueCallerJoin): the wallboard counts a waiting call."""

    linkedid: str
    uniqueid: str
    caller_number: str | None
    caller_name: str | None
    dnis: str | None
    queue: str
    position: int | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AgentRinging(DomainEvent):
    """An agent's phone started ringing for a call: the moment to pop the member's card."""

    linkedid: str
    uniqueid: str
    agent: str
    interface: str
    via: AgentVia
    queue: str | None
    direction: CallDirection
    caller_number: str | None
    caller_name: str | None
    """The party the agent is about to talk to: the customer of an inbound or transferred call, the
    number being dialled by a click-to-dial, the calling agent of an internal call."""
    dnis: str | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallAnswered(DomainEvent):
    """An agent was connected to the call (once per agent channel; again after a transfer)."""

    linkedid: str
    uniqueid: str
    agent: str | None
    interface: str | None
    queue: str | None
    wait_seconds: float
    """From the call entering its queue (or starting, without a queue) to this answer."""
    ring_seconds: float | None
    first: bool
    """True for the call's first answer (the one ASA and service level count)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallTransferred(DomainEvent):
    """An agent transferred the call; the call itself goes on under the same ``linkedid``."""

    linkedid: str
    kind: TransferKind
    from_agent: str | None
    to_target: str | None
    to_agent: str | None
    merged_linkedid: str | None = None
    """For an attended transfer between two calls (the agent's consultation call had its own Linkedid):
    the consultation call's id, now part of ``linkedid``. Its own CallEnded says ``merged_into``."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallAbandoned(DomainEvent):
    """The caller hung up while waiting in a queue (QueueCallerAbandon)."""

    linkedid: str
    queue: str
    caller_number: str | None
    caller_name: str | None
    dnis: str | None
    wait_seconds: float
    position: int | None
    original_position: int | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallMissed(DomainEvent):
    """A caller left without an agent for a reason other than hanging up: the callback queue's input.

    Raised from the dialplan's UserEvents (CtiQueueTimeout, CtiNoAgents, CtiAfterHours) while the caller
    still hears the goodbye prompt, or, when the dialplan sends none, when a call that left a queue
    unanswered and not abandoned ends (``reason="queue_exit"``). At most once per call.
    """

    linkedid: str
    reason: MissedReason
    queue: str | None
    caller_number: str | None
    caller_name: str | None
    dnis: str | None
    wait_seconds: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded(DomainEvent):
    """The complete summary of a finished call, for the call log. Exactly once per Linkedid.

    ``at`` equals ``ended_at``. Numbers are as Asterisk reported them (not normalised).
    """

    linkedid: str
    direction: CallDirection
    caller_number: str | None
    """Inbound: the customer's caller ID as it reached us. Outbound: the caller ID presented to the
    customer (our 400 number). Internal: the calling agent's number."""
    caller_name: str | None
    callee_number: str | None
    """Inbound: the DNIS. Outbound: the dialled customer number. Internal: the dialled extension."""
    customer_number: str | None
    """The customer's number whatever the direction (None for internal calls): what the CRM joins on."""
    dnis: str | None
    queue: str | None
    """The last queue the call was offered to; all of them are in ``queues``."""
    queues: tuple[str, ...]
    started_at: float
    answered_at: float | None
    ended_at: float
    wait_seconds: float
    ring_seconds: float
    talk_seconds: float
    duration_seconds: float
    outcome: CallOutcome
    reason: str | None
    """Why, in more detail. answered: None, or ``merged`` (continued in ``merged_into``). abandoned:
    ``caller_hangup`` (in a queue), ``before_queue`` (in the IVR). no_answer: ``queue_timeout``,
    ``no_agents``, ``after_hours``, ``queue_exit`` (left a queue without the dialplan saying why),
    ``no_answer``, ``cancelled``, ``merged``. busy: ``busy``. failed: ``congestion``, ``chanunavail``,
    ``originate_failed:<failed|no_answer|busy|congestion|hangup|DIALSTATUS>``. lost: ``pbx_restart``,
    ``pbx_shutdown``, ``reconnect`` (ended unseen while the AMI connection was down)."""
    answered_by: str | None
    """The agent who answered first (inbound/internal) or who placed the call (outbound)."""
    agents: tuple[AgentLeg, ...]
    transfers: tuple[Transfer, ...]
    legs: tuple[CallLeg, ...]
    recording_file: str | None
    variables: Mapping[str, str]
    """CTI_* channel variables seen on any leg (leading underscores of inherited ones removed), e.g.
    CTI_CALLID set by our click-to-dial, CTI_DNIS, CTI_QUEUE, CTI_OUTCOME."""
    hangup_cause: int | None
    hangup_cause_text: str | None
    hangup_side: Literal["customer", "agent"] | None
    """Who hung up an answered call first, from the first HangupRequest."""
    merged_into: str | None = None

    @property
    def answered_agents(self) -> tuple[str, ...]:
        """Agents connected to the caller, in order, each once."""
        seen: dict[str, None] = {}
        for leg in self.agents:
            if leg.connected_at is not None:
                seen.setdefault(leg.agent, None)
        return tuple(seen)

    @property
    def offered_agents(self) -> tuple[str, ...]:
        """Every agent whose phone was part of the call, in order, each once."""
        return tuple(dict.fromkeys(leg.agent for leg in self.agents))

    @property
    def cti_call_id(self) -> str | None:
        """Our own id for the call when we created it (click-to-dial sets ``__CTI_CALLID``)."""
        return self.variables.get("CTI_CALLID")


# ---------------------------------------------------------------------------------------- agents
@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AgentStateChanged(DomainEvent):
    """An agent's state as the panel and wallboard show it changed.

    ``state`` summarises, in priority order: on_call (a channel of the agent is up, or the agent's phone
    is placing a call) > ringing > wrap_up > paused (paused in any queue) > ready (member of a queue) >
    logged_out (member of no queue). ``available`` is False while the phone is unregistered/invalid
    (queue member status 4/5): the agent is logged in but cannot take calls.
    """

    agent: str
    interface: str
    name: str | None
    state: AgentState
    previous_state: AgentState | None
    paused: bool
    pause_reason: str | None
    queues: tuple[str, ...]
    paused_queues: tuple[str, ...]
    available: bool
    linkedid: str | None
    """The call that made the agent ring or be on a call, if any."""


def event_to_dict(event: DomainEvent) -> dict[str, Any]:
    """A JSON-ready dict of an event (``type`` plus its fields, nested parts as dicts)."""
    out: dict[str, Any] = {"type": event.type}
    for f in dataclasses.fields(event):
        out[f.name] = _plain(getattr(event, f.name))
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
