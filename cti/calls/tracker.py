"""The call tracker: a pure state machine from AMI events to domain events.

``CallTracker.feed(msg, now) -> list[DomainEvent]``. No I/O, no clock (``now`` is injected), no
dependence on the optional ``Timestamp:`` header, so it runs the same on the recorded captures in
``shared/fixtures/ami`` as on a live PBX, and it is cheap enough to sit inline on the AMI reader.

Model (Wazo style): a **call** is keyed by Asterisk's ``Linkedid``, its **legs** (channels) by
``Uniqueid``. A call ends when its last leg hangs up: that single rule covers queues, ringall, Local
channel pairs, transfers and click-to-dial alike, and makes every Linkedid end exactly once. Nothing
is keyed by channel *name*: after an Asterisk restart names start again at ``-00000000`` with new
Uniqueids (ASTERISK-SANDBOX.md, Pitfalls).

Idempotence: every handler checks state before it changes anything, so an event fed twice changes
nothing and emits nothing the second time; legs and calls that ended are remembered (bounded) so a
late or repeated event about them cannot resurrect them. Evidence that this matters on a real PBX:
``DialEnd CANCEL`` arrives twice for the same ringing agent (02, 05b, 10), ``NewCallerid`` of a Local
channel arrives *after* its Hangup (10), ``Cdr`` comes after the last Hangup (02), and
``OriginateResponse`` comes before, between or after its channel's events (03, 15, 16).

Capture numbers in comments: 01-10 are ``shared/fixtures/ami``, 11-22 ``tests/fixtures/ami`` (recorded
with the product's dialplan; see the README there).

Cost: one dict lookup on the event name rejects everything the tracker does not use (Newexten,
TestEvent, RTCP..., ~60 % of an unfiltered stream); VarSet is rejected on its variable name before
any leg lookup (it is half of all events); everything else is a few dict lookups by Uniqueid, so the
per-event cost does not grow with the number of live calls (``scripts/bench/tracker.py`` shows it).
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from cti.calls.events import (
    AgentLeg,
    AgentRinging,
    AgentState,
    AgentStateChanged,
    AgentVia,
    CallAbandoned,
    CallAnswered,
    CallArrived,
    CallDirection,
    CallEnded,
    CallLeg,
    CallMissed,
    CallOffered,
    CallOutcome,
    CallTransferred,
    DomainEvent,
    LegRole,
    MissedReason,
    Transfer,
    TransferKind,
)

__all__ = [
    "DEFAULT_AGENT_INTERFACE_PATTERN",
    "HANDLED_EVENTS",
    "AgentSnapshot",
    "CallSnapshot",
    "CallTracker",
    "TrackerSnapshot",
]

log = logging.getLogger(__name__)

Message = Mapping[str, str]
Out = list[DomainEvent]

DEFAULT_AGENT_INTERFACE_PATTERN: Final = r"^(?:PJSIP|SIP|IAX2)/(?:agent|webrtc)\d+$"
"""Interfaces treated as agents' phones even before a queue names them (asterisk-config/pjsip.conf:
agent100X SIP phones, webrtc200X browsers). Queue members (QueueMember*, AgentCalled) are agents
whatever their name; the pattern covers direct and click-to-dial calls of agents no queue mentioned
yet. Configure it for a site with other endpoint names."""

# ChannelState values (include/asterisk/channelstate.h)
_DOWN: Final = 0
_RING: Final = 4  # an inbound channel: the phone behind it is calling us (14: agent1001 dialling 1002)
_UP: Final = 6

_UNKNOWN_IDS: Final = frozenset({"", "<unknown>", "<null>"})
_NOT_A_CHANNEL: Final = frozenset({"", "none", "<unknown>", "<null>"})
"""Uniqueids of events about no channel: a global ``Setvar`` gives ``VarSet`` with ``Channel: none``
and ``Uniqueid: none`` (18); a failed Originate names ``Uniqueid: <unknown>`` (16, 17)."""
_MISSED_USER_EVENTS: Final[Mapping[str, MissedReason]] = {
    "CtiQueueTimeout": "queue_timeout",
    "CtiNoAgents": "no_agents",
    "CtiAfterHours": "after_hours",
}
_OUTCOME_VALUES: Final[Mapping[str, MissedReason]] = {
    "queue-timeout": "queue_timeout",
    "no-agents": "no_agents",
    "after-hours": "after_hours",
}
_DIAL_FAILURES: Final[Mapping[str, tuple[CallOutcome, str]]] = {
    "BUSY": ("busy", "busy"),
    "NOANSWER": ("no_answer", "no_answer"),
    "CANCEL": ("no_answer", "cancelled"),
    "CONGESTION": ("failed", "congestion"),
    "CHANUNAVAIL": ("failed", "chanunavail"),
}
_AGENT_RESULTS: Final[Mapping[str, str]] = {
    "CANCEL": "cancelled",
    "NOANSWER": "no_answer",
    "BUSY": "busy",
    "CONGESTION": "failed",
    "CHANUNAVAIL": "failed",
}
_ORIGINATE_REASONS: Final[Mapping[str, str]] = {
    # OriginateResponse Reason: the last control frame seen on the channel (include/asterisk/frame.h)
    "0": "failed",  # no channel could be made (17: unregistered phone)
    "1": "hangup",
    "3": "no_answer",  # rang, never answered (16)
    "5": "busy",
    "8": "congestion",
}
_UNAVAILABLE_DEVICE: Final = frozenset({4, 5})  # AST_DEVICE_INVALID, AST_DEVICE_UNAVAILABLE
_PHONE_TECHS: Final = frozenset({"PJSIP", "SIP", "IAX2"})
_DEFAULT_RECENT_LIMIT: Final = 50_000
_MAX_PENDING_ORIGINATES: Final = 1_000
_SAME_BOOT_TOLERANCE: Final = 1.5
# The fields naming a channel in an event: its own, or the Dest* side of Dial*/Agent* events.
_OWN_FIELDS: Final = ("Uniqueid", "Channel", "Linkedid", "")
_DEST_FIELDS: Final = ("DestUniqueid", "DestChannel", "DestLinkedid", "Dest")
"""Two estimates (now - Uptime) of one Asterisk's boot time differ by under a second (Uptime is whole
seconds): 0.3 s across the dropped connection of 21. A crash and restart moved it 2.9 s (20)."""
_LATE_ORIGINATE_RESPONSE: Final = 5.0
"""Seconds after an originated call ended in which a failed OriginateResponse for the same interface is
taken as that call's (it comes within milliseconds of the Hangup, 16), not as a new attempt."""

HANDLED_EVENTS: Final = frozenset(
    {
        "Newchannel", "Newstate", "NewCallerid", "Rename", "Hangup", "HangupRequest", "SoftHangupRequest",
        "DialBegin", "DialEnd", "BridgeEnter", "BridgeLeave",
        "BlindTransfer", "AttendedTransfer",
        "QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon",
        "AgentCalled", "AgentConnect", "AgentRingNoAnswer", "AgentComplete",
        "QueueMemberStatus", "QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause", "QueueMember",
        "VarSet", "UserEvent", "OriginateResponse", "Cdr", "FullyBooted", "Shutdown",
    }
)  # fmt: skip
"""AMI events the tracker reads; everything else is dropped on one dict lookup. An AMI client may also
use this set to subscribe (or to build a manager.conf event filter)."""


# ------------------------------------------------------------------------------------ internal state
@dataclass(slots=True, eq=False)
class _AgentPart:
    agent: str
    interface: str
    uniqueid: str
    via: AgentVia | None = None
    queue: str | None = None
    rang_at: float | None = None
    answered_at: float | None = None
    connected_at: float | None = None
    ended_at: float | None = None
    result: str | None = None
    ringing_emitted: bool = False


@dataclass(slots=True, eq=False)
class _Leg:
    uniqueid: str
    channel: str
    interface: str
    role: LegRole
    call: _Call
    state: int
    started_at: float
    is_caller: bool
    """Created in state Ring: the phone behind it is calling in (not being called)."""
    caller_number: str | None = None
    caller_name: str | None = None
    exten: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    cause: int | None = None
    cause_text: str | None = None
    agent: _Agent | None = None
    part: _AgentPart | None = None
    queue: str | None = None
    """The queue this leg is waiting in (QueueCallerJoin .. QueueCallerLeave)."""
    hangup_requested: bool = False
    """A (Soft)HangupRequest was seen: the channel is going away (decides abandon vs timeout)."""
    dialed: bool = False
    dial_status: str | None = None
    originated: bool = False
    """Rung by an Originate (DialBegin without a calling channel)."""
    connected: bool = False
    bridge: str | None = None


@dataclass(slots=True, eq=False)
class _TransferRecord:
    kind: TransferKind
    at: float
    from_agent: str | None
    to_target: str | None
    to_agent: str | None = None


@dataclass(slots=True, eq=False)
class _Call:
    linkedid: str
    started_at: float
    legs: dict[str, _Leg] = field(default_factory=dict)
    live: int = 0
    caller_number: str | None = None
    caller_name: str | None = None
    outbound_cli_number: str | None = None
    outbound_cli_name: str | None = None
    callee_number: str | None = None
    dnis: str | None = None
    queue: str | None = None
    queues: list[str] = field(default_factory=list)
    first_queued_at: float | None = None
    queued_at: float | None = None
    queue_left_at: float | None = None
    answered_at: float | None = None
    answered_by: str | None = None
    answer_ring_seconds: float | None = None
    abandoned: bool = False
    missed_reason: MissedReason | None = None
    missed_emitted: bool = False
    dial_failure: str | None = None
    originate_failure: str | None = None
    originated: bool = False
    agents: list[_AgentPart] = field(default_factory=list)
    transfers: list[_TransferRecord] = field(default_factory=list)
    transfer_keys: set[tuple[str, ...]] = field(default_factory=set)
    pending_transfer: _TransferRecord | None = None
    last_transfer_at: float | None = None
    recording_file: str | None = None
    recording_channel: str | None = None
    """The channel running MixMonitor: the one a PCI pause (MixMonitorMute) must name."""
    variables: dict[str, str] = field(default_factory=dict)
    hangup_cause: int | None = None
    hangup_cause_text: str | None = None
    hangup_cause_from_customer: bool = False
    hangup_side: Literal["customer", "agent"] | None = None
    lost_reason: str | None = None
    merged_into: str | None = None


@dataclass(slots=True, eq=False)
class _Membership:
    paused: bool = False
    reason: str | None = None
    wrapup_seconds: float = 0.0


@dataclass(slots=True, eq=False)
class _Agent:
    agent: str
    interface: str
    name: str | None = None
    memberships: dict[str, _Membership] = field(default_factory=dict)
    device_status: int = 0
    legs: dict[str, _Leg] = field(default_factory=dict)
    wrapup_until: float | None = None
    state: AgentState | None = None
    reported: tuple[object, ...] | None = None
    since: float = 0.0


# ------------------------------------------------------------------------------------------- snapshot
@dataclass(frozen=True, slots=True, kw_only=True)
class CallSnapshot:
    """A live call as the wallboard and a reconnecting panel need it."""

    linkedid: str
    direction: CallDirection
    status: Literal["ivr", "queued", "ringing", "dialing", "talking"]
    caller_number: str | None
    caller_name: str | None
    callee_number: str | None
    dnis: str | None
    queue: str | None
    started_at: float
    queued_at: float | None
    answered_at: float | None
    answered_by: str | None
    agents: tuple[str, ...]
    """Agents with a live channel in the call."""
    recording_file: str | None
    variables: Mapping[str, str]
    recording_channel: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSnapshot:
    agent: str
    interface: str
    name: str | None
    state: AgentState
    since: float
    paused: bool
    pause_reason: str | None
    queues: tuple[str, ...]
    paused_queues: tuple[str, ...]
    available: bool
    linkedid: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerSnapshot:
    calls: tuple[CallSnapshot, ...]
    agents: tuple[AgentSnapshot, ...]


# -------------------------------------------------------------------------------------------- helpers
def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _known(value: str | None) -> str | None:
    """None for Asterisk's placeholders of an absent caller ID."""
    return None if value is None or value in _UNKNOWN_IDS else value


def _interface_of(channel: str) -> str:
    """``PJSIP/agent1001-00000001`` -> ``PJSIP/agent1001``; Local ``...-0000000a;2`` -> ``Local/...``."""
    cut = channel.rfind("-")
    return channel[:cut] if cut > 0 else channel


def _agent_id(interface: str) -> str:
    """The agent's endpoint name for a phone interface (``PJSIP/agent1001`` -> ``agent1001``); other
    interfaces (a Local queue member such as ``Local/5@load-agent/n``) are their own id."""
    tech, sep, rest = interface.partition("/")
    return rest if sep and tech in _PHONE_TECHS else interface


def _remember(recent: OrderedDict[str, None], key: str, limit: int) -> None:
    """Bounded insertion-ordered set: O(1) add, the oldest key drops out. An OrderedDict, not a
    dict: deleting a plain dict's first key leaves a hole that every later ``next(iter(d))`` scans
    again (measured 42 us per eviction at 50,000 keys against 1 us)."""
    if key in recent:
        return
    recent[key] = None
    if len(recent) > limit:
        recent.popitem(last=False)


def _target_name(channel: str) -> str:
    """A transfer target as people read it: ``Local/1002@agents-00000000;1`` -> ``1002@agents``,
    ``PJSIP/agent1002-00000005`` -> ``PJSIP/agent1002``."""
    if not channel:
        return ""
    interface = _interface_of(channel)
    return interface.removeprefix("Local/") if interface.startswith("Local/") else interface


def _linkedid_age(linkedid: str) -> tuple[int, int]:
    """Sort key of a Uniqueid/Linkedid by creation: ``[system-]<epoch>.<sequence>``. Asterisk keeps
    the oldest Linkedid when it bridges channels of two calls."""
    stamp = linkedid.rpartition("-")[2]
    epoch, _, seq = stamp.partition(".")
    try:
        return int(epoch), int(seq)
    except ValueError:
        return (2**62, 0)


def _duration(text: str | None) -> float:
    """CoreShowChannel ``Duration: HH:MM:SS`` in seconds (0 when absent or odd)."""
    if not text:
        return 0.0
    total = 0.0
    for part in text.split(":"):
        try:
            total = total * 60 + float(part)
        except ValueError:
            return 0.0
    return total


# -------------------------------------------------------------------------------------------- tracker
class CallTracker:
    """Follows calls and agents from AMI events; see the module docstring for the model.

    ``agent_interfaces``: which interfaces are agents' phones, as a regex (string or compiled) or a
    predicate; queue members are agents in any case. ``wrapup_seconds``: wrap-up after a queue call,
    per queue or for all (Asterisk does not report a queue's ``wrapuptime`` over AMI; a member's own
    ``Wrapuptime`` from QueueMemberStatus wins when larger). ``recent_limit``: how many ended legs and
    calls are remembered to ignore late or repeated events about them.
    """

    def __init__(
        self,
        *,
        agent_interfaces: str | re.Pattern[str] | Callable[[str], bool] | None = DEFAULT_AGENT_INTERFACE_PATTERN,
        wrapup_seconds: float | Mapping[str, float] = 0.0,
        recent_limit: int = _DEFAULT_RECENT_LIMIT,
    ) -> None:
        if agent_interfaces is None:
            self._agent_pattern: Callable[[str], bool] = lambda _interface: False
        elif isinstance(agent_interfaces, str | re.Pattern):
            compiled = re.compile(agent_interfaces)
            self._agent_pattern = lambda interface: compiled.match(interface) is not None
        else:
            self._agent_pattern = agent_interfaces
        self._wrapup_default = 0.0 if isinstance(wrapup_seconds, Mapping) else float(wrapup_seconds)
        self._wrapup_by_queue: Mapping[str, float] = wrapup_seconds if isinstance(wrapup_seconds, Mapping) else {}
        self._recent_limit = recent_limit
        self._legs: dict[str, _Leg] = {}
        self._calls: dict[str, _Call] = {}
        self._agents: dict[str, _Agent] = {}  # by interface
        self._ended_legs: OrderedDict[str, None] = OrderedDict()
        self._ended_calls: OrderedDict[str, None] = OrderedDict()
        self._aliases: OrderedDict[str, str] = OrderedDict()  # Linkedid of a merged call -> its new call
        self._bridges: dict[str, list[_Leg]] = {}
        self._originates: OrderedDict[str, str] = OrderedDict()  # ringing Originate's interface -> Linkedid
        self._originate_ended: OrderedDict[str, float] = OrderedDict()  # originated call's Linkedid -> end
        self._originate_responses: OrderedDict[str, None] = OrderedDict()  # OriginateResponse ActionIDs
        self._wrapups: list[tuple[float, str]] = []  # heap of (until, interface)
        self._boot_at: float | None = None
        self._restarted = False
        handlers: dict[str, Callable[[Message, float, Out], None]] = {
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_newstate,
            "NewCallerid": self._on_newcallerid,
            "Rename": self._on_rename,
            "Hangup": self._on_hangup,
            "HangupRequest": self._on_hangup_request,
            "SoftHangupRequest": self._on_soft_hangup_request,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "QueueCallerJoin": self._on_queue_join,
            "QueueCallerLeave": self._on_queue_leave,
            "QueueCallerAbandon": self._on_queue_abandon,
            "AgentCalled": self._on_agent_called,
            "AgentConnect": self._on_agent_connect,
            "AgentRingNoAnswer": self._on_agent_ring_no_answer,
            "AgentComplete": self._on_agent_complete,
            "QueueMemberStatus": self._on_queue_member,
            "QueueMemberAdded": self._on_queue_member,
            "QueueMemberPause": self._on_queue_member,
            "QueueMember": self._on_queue_member,
            "QueueMemberRemoved": self._on_queue_member_removed,
            "VarSet": self._on_varset,
            "UserEvent": self._on_user_event,
            "OriginateResponse": self._on_originate_response,
            "Cdr": self._on_cdr,
            "FullyBooted": self._on_fully_booted,
            "Shutdown": self._on_shutdown,
        }
        assert handlers.keys() == HANDLED_EVENTS
        self._handlers = handlers

    # ------------------------------------------------------------------------------- public API
    def feed(self, msg: Message, now: float) -> list[DomainEvent]:
        """Apply one AMI event; return the domain events it caused (often none).

        Responses, unknown and uninteresting events return ``[]`` after one dict lookup.
        """
        # Fast path first: the handler table doubles as the set of wanted event names (HANDLED_EVENTS).
        handler = self._handlers.get(msg.get("Event", ""))
        if handler is None:
            return []
        out: Out = []
        if self._wrapups and self._wrapups[0][0] <= now:
            self._expire_wrapups(now, out)
        handler(msg, now, out)
        return out

    def tick(self, now: float) -> list[DomainEvent]:
        """Advance time without an event: ends wrap-up periods that are over. Call it about once a
        second while idle (``feed`` does the same check on every event)."""
        out: Out = []
        if self._wrapups and self._wrapups[0][0] <= now:
            self._expire_wrapups(now, out)
        return out

    @property
    def live_calls(self) -> int:
        return len(self._calls)

    def call_snapshot(self, linkedid: str) -> CallSnapshot | None:
        """One live call as it stands now (None once it ended): O(1) lookup, for a subscriber that
        persists live calls after each change without reaching into the tracker's state."""
        call = self._calls.get(self._aliases.get(linkedid, linkedid))
        return self._call_snapshot(call) if call is not None else None

    def snapshot(self, now: float | None = None) -> TrackerSnapshot:
        """The live calls and every known agent, for a panel or wallboard that (re)connects."""
        calls = tuple(self._call_snapshot(call) for call in self._calls.values())
        agents = tuple(
            self._agent_snapshot(agent, now) for agent in sorted(self._agents.values(), key=lambda a: a.agent)
        )
        return TrackerSnapshot(calls=calls, agents=agents)

    def resync(
        self,
        channels: Iterable[Message],
        queue_members: Iterable[Message],
        queue_entries: Iterable[Message],
        now: float,
        *,
        restarted: bool | None = None,
        uptime: float | None = None,
    ) -> list[DomainEvent]:
        """Reconcile with the PBX after a (re)connect, from CoreShowChannels and QueueStatus lists.

        Legs the PBX no longer has are gone; a call left without legs ends with outcome ``lost`` and
        reason ``pbx_restart`` (Asterisk restarted: ``restarted`` or detected from FullyBooted's
        Uptime) or ``reconnect`` (we missed its end while disconnected). Channels we do not know are
        adopted, with CallOffered for callers waiting in a queue and AgentRinging/CallAnswered for
        agents, so panels rebuild. Queue membership is replaced by ``queue_members`` (the QueueMember
        items of a QueueStatus of *all* queues); agents in no queue any more are logged out.
        """
        out: Out = []
        if uptime is not None:
            # The PBX's uptime read with the lists (``core show uptime seconds``) decides restart vs
            # reconnect without waiting for FullyBooted, which may arrive before or after the lists.
            boot_at = now - uptime
            if self._boot_at is not None and boot_at > self._boot_at + _SAME_BOOT_TOLERANCE:
                self._restarted = True
            if self._boot_at is None or boot_at > self._boot_at + _SAME_BOOT_TOLERANCE:
                self._boot_at = boot_at
        was_restart = self._restarted if restarted is None else restarted
        self._restarted = False
        reason = "pbx_restart" if was_restart else "reconnect"
        channel_list = [c for c in channels if c.get("Uniqueid") not in _NOT_A_CHANNEL]
        present = {c["Uniqueid"] for c in channel_list}
        for gone in [leg for uid, leg in self._legs.items() if uid not in present]:
            self._lose_leg(gone, now, reason, out)
        self._replace_memberships(queue_members, now, out)
        # List items come in no particular order (22: an agent's channel before its caller's); the
        # oldest channel of a call is its originating one, so adopt oldest first.
        adopted: list[tuple[_Leg, Message]] = []
        for chan in sorted(channel_list, key=lambda c: _linkedid_age(c["Uniqueid"])):
            uid = chan["Uniqueid"]
            if uid in self._legs:
                continue
            started = now - _duration(chan.get("Duration"))
            new_leg = self._create_leg(uid, chan.get("Linkedid") or uid, chan, "", now, out, started_at=started)
            if new_leg is not None:
                adopted.append((new_leg, chan))
                if chan.get("Application") == "Queue":  # ApplicationData: "member-service,tT,,,12"
                    queue = chan.get("ApplicationData", "").partition(",")[0]
                    if queue and queue not in new_leg.call.queues:
                        new_leg.call.queues.append(queue)
                        new_leg.call.queue = queue
                bridge_id = chan.get("BridgeId")
                if bridge_id:
                    self._bridges.setdefault(bridge_id, []).append(new_leg)
                    new_leg.bridge = bridge_id
        entries = {e["Uniqueid"]: e for e in queue_entries if e.get("Uniqueid")}
        for uid, entry in entries.items():
            queued_leg = self._legs.get(uid)
            entry_queue = entry.get("Queue")
            if queued_leg is not None and entry_queue and queued_leg.queue != entry_queue:
                joined = now - _duration(entry.get("Wait"))  # QueueEntry Wait is whole seconds
                queued_leg.call.started_at = min(queued_leg.call.started_at, joined)
                self._join_queue(queued_leg, entry_queue, _int(entry.get("Position")), entry, joined, now, out)
        for new_leg, chan in adopted:
            self._adopt_details(new_leg, chan, now, out)
        for live_leg in list(self._legs.values()):
            if live_leg.queue is not None and live_leg.uniqueid not in entries:
                live_leg.queue = None  # left the queue while we were away
        for agent in list(self._agents.values()):
            self._update_agent(agent, now, out)
        return out

    # ------------------------------------------------------------------------------- legs and calls
    def _leg(self, msg: Message, now: float, out: Out) -> _Leg | None:
        """The leg an event is about (``Uniqueid``), adopting a channel first seen mid-call."""
        return self._leg_named(msg, _OWN_FIELDS, now, out)

    def _dest_leg(self, msg: Message, now: float, out: Out) -> _Leg | None:
        """The leg a Dial*/Agent* event's ``Dest*`` fields are about."""
        return self._leg_named(msg, _DEST_FIELDS, now, out)

    def _leg_named(self, msg: Message, fields: tuple[str, str, str, str], now: float, out: Out) -> _Leg | None:
        uid_key, channel_key, linkedid_key, prefix = fields
        uid = msg.get(uid_key)
        if uid is None:
            return None
        leg = self._legs.get(uid)
        if leg is None:
            if uid in self._ended_legs or uid in _NOT_A_CHANNEL or channel_key not in msg:
                return None
            return self._create_leg(uid, msg.get(linkedid_key) or uid, msg, prefix, now, out)
        linkedid = msg.get(linkedid_key)
        if linkedid is not None and linkedid != leg.call.linkedid:
            self._relink(leg, linkedid, now, out)
        return leg

    def _create_leg(
        self,
        uid: str,
        linkedid: str,
        msg: Message,
        prefix: str,
        now: float,
        out: Out,
        started_at: float | None = None,
    ) -> _Leg | None:
        if uid in self._ended_legs:
            return None
        started = now if started_at is None else started_at
        linkedid = self._aliases.get(linkedid, linkedid)
        call = self._calls.get(linkedid)
        if call is None:
            call = _Call(linkedid=linkedid, started_at=started)
            self._calls[linkedid] = call
        elif started < call.started_at:
            call.started_at = started
        channel = msg.get(prefix + "Channel", "")
        interface = _interface_of(channel)
        state = _int(msg.get(prefix + "ChannelState")) or _DOWN
        role: LegRole
        if channel.startswith("Local/"):
            role = "local"
        elif interface in self._agents or self._agent_pattern(interface):
            role = "agent"
        else:
            role = "customer"
        leg = _Leg(
            uniqueid=uid,
            channel=channel,
            interface=interface,
            role=role,
            call=call,
            state=state,
            started_at=started,
            is_caller=state == _RING,
            caller_number=_known(msg.get(prefix + "CallerIDNum")),
            caller_name=_known(msg.get(prefix + "CallerIDName")),
            exten=msg.get(prefix + "Exten"),
        )
        if state == _UP:
            leg.answered_at = started
        self._legs[uid] = leg
        call.legs[uid] = leg
        call.live += 1
        if uid == linkedid or len(call.legs) == 1:
            self._note_caller(call, leg)
        if role == "agent":
            self._attach_agent(leg, interface, None, now, out)
        return leg

    def _attach_agent(self, leg: _Leg, interface: str, name: str | None, now: float, out: Out) -> None:
        """Make ``leg`` an agent's channel: agent record, participation, agent state."""
        agent = self._agent_record(interface, name)
        previous = leg.agent
        if previous is not None and previous is not agent:
            previous.legs.pop(leg.uniqueid, None)
            self._update_agent(previous, now, out)
        leg.role = "agent"
        leg.agent = agent
        leg.interface = interface
        if leg.part is None:
            part = _AgentPart(agent=agent.agent, interface=interface, uniqueid=leg.uniqueid)
            if leg.is_caller:
                part.via = "outbound"
                part.answered_at = leg.started_at
            leg.part = part
            leg.call.agents.append(part)
        agent.legs[leg.uniqueid] = leg
        self._update_agent(agent, now, out)

    def _note_caller(self, call: _Call, leg: _Leg) -> None:
        """The caller is the first real caller ID on the call's originating channel."""
        if call.caller_number is None and leg.caller_number is not None:
            call.caller_number = leg.caller_number
            call.caller_name = leg.caller_name

    def _relink(self, leg: _Leg, linkedid: str, now: float, out: Out) -> None:
        """Asterisk moved a channel to another Linkedid (bridging gives every channel in a bridge the
        oldest Linkedid): move the leg, and end the call it leaves if that was its last leg."""
        target_id = self._aliases.get(linkedid, linkedid)
        source = leg.call
        if target_id == source.linkedid:
            return
        target = self._calls.get(target_id)
        if target is None:
            if target_id in self._ended_calls:
                return  # stale id of a call that is over: keep the leg where it is
            target = _Call(linkedid=target_id, started_at=now)
            self._calls[target_id] = target
        self._move_leg(leg, source, target, now)
        source.merged_into = target.linkedid
        if source.live == 0:
            self._end_call(source, now, out)

    def _move_leg(self, leg: _Leg, source: _Call, target: _Call, now: float) -> None:
        """Move a leg to another call. The agent it carries continues in ``target`` as joined by
        transfer; ``source`` keeps a copy closed at this moment, so its own summary still shows who
        took part in it (e.g. the consultation call of an attended transfer)."""
        del source.legs[leg.uniqueid]
        target.legs[leg.uniqueid] = leg
        if leg.ended_at is None:
            source.live -= 1
            target.live += 1
        leg.call = target
        part = leg.part
        if part is not None and part in source.agents:
            index = source.agents.index(part)
            source.agents[index] = dataclasses.replace(part, ended_at=part.ended_at or now)
            target.agents.append(part)
            if part.via != "queue" or target.answered_at is not None:
                part.via = "transfer"

    # ------------------------------------------------------------------------------- channel events
    def _on_newchannel(self, msg: Message, now: float, out: Out) -> None:
        uid = msg.get("Uniqueid")
        if uid is None or uid in self._legs or uid in self._ended_legs:
            return
        self._create_leg(uid, msg.get("Linkedid") or uid, msg, "", now, out)

    def _on_newstate(self, msg: Message, now: float, out: Out) -> None:
        leg = self._leg(msg, now, out)
        if leg is None:
            return
        state = _int(msg.get("ChannelState"))
        if state is None or state == leg.state:
            return
        leg.state = state
        number = _known(msg.get("CallerIDNum"))
        if number is not None:
            leg.caller_number = number
        if state == _UP and leg.answered_at is None:
            leg.answered_at = now
            if leg.part is not None and leg.part.answered_at is None:
                leg.part.answered_at = now
        if leg.agent is not None:
            self._update_agent(leg.agent, now, out)

    def _on_newcallerid(self, msg: Message, now: float, out: Out) -> None:
        leg = self._leg(msg, now, out)
        if leg is None:
            return
        number = _known(msg.get("CallerIDNum"))
        if number is None:
            return
        leg.caller_number = number
        leg.caller_name = _known(msg.get("CallerIDName"))
        call = leg.call
        if leg.uniqueid == call.linkedid or next(iter(call.legs.values())) is leg:
            self._note_caller(call, leg)

    def _on_rename(self, msg: Message, now: float, out: Out) -> None:
        leg = self._leg(msg, now, out)
        newname = msg.get("Newname")
        if leg is not None and newname:
            leg.channel = newname

    def _on_hangup_request(self, msg: Message, now: float, out: Out) -> None:
        leg = self._leg(msg, now, out)
        if leg is None:
            return
        leg.hangup_requested = True
        call = leg.call
        if call.answered_at is not None and leg.role != "local":
            # The last one wins: the transferring agent's hang-up that completes a transfer (12) is
            # followed by the real end's. Local halves echo the real party's request (10): skipped.
            call.hangup_side = "agent" if leg.role == "agent" else "customer"

    def _on_soft_hangup_request(self, msg: Message, now: float, out: Out) -> None:
        leg = self._leg(msg, now, out)
        if leg is not None:
            leg.hangup_requested = True

    def _on_hangup(self, msg: Message, now: float, out: Out) -> None:
        uid = msg.get("Uniqueid")
        if uid is None:
            return
        leg = self._legs.get(uid)
        if leg is None:
            _remember(self._ended_legs, uid, self._recent_limit)
            return
        linkedid = msg.get("Linkedid")
        if linkedid is not None and linkedid != leg.call.linkedid:
            self._relink(leg, linkedid, now, out)
        self._end_leg(leg, now, _int(msg.get("Cause")), msg.get("Cause-txt"), out)

    def _end_leg(self, leg: _Leg, now: float, cause: int | None, cause_text: str | None, out: Out) -> None:
        del self._legs[leg.uniqueid]
        _remember(self._ended_legs, leg.uniqueid, self._recent_limit)
        leg.ended_at = now
        leg.cause = cause
        leg.cause_text = cause_text
        call = leg.call
        call.live -= 1
        if leg.bridge is not None:
            self._leave_bridge(leg)
        # The call's hangup cause is the customer's when there is one (the agents' legs mostly end
        # with "Normal Clearing" or "Answered elsewhere", which says nothing about the call).
        if leg.role != "agent" and not call.hangup_cause_from_customer:
            call.hangup_cause, call.hangup_cause_text = cause, cause_text
            call.hangup_cause_from_customer = leg.role == "customer"
        elif call.hangup_cause is None and not call.hangup_cause_from_customer:
            call.hangup_cause, call.hangup_cause_text = cause, cause_text
        part = leg.part
        if part is not None:
            part.ended_at = now
            if part.result is None and part.connected_at is None and cause == 26:
                part.result = "cancelled"  # 26 = "Answered elsewhere" (ringall, 05b and 10)
        agent = leg.agent
        if agent is not None:
            agent.legs.pop(leg.uniqueid, None)
            if part is not None and part.via == "queue" and part.connected_at is not None:
                self._start_wrapup(agent, part.queue, now)
            self._update_agent(agent, now, out)
        if call.live == 0:
            self._end_call(call, now, out)

    # ------------------------------------------------------------------------------- dialling
    def _on_dial_begin(self, msg: Message, now: float, out: Out) -> None:
        dest = self._dest_leg(msg, now, out)
        if dest is None or dest.dialed:
            return
        dest.dialed = True
        # The Originate action dials its first channel from no channel at all: DialBegin without
        # Channel/Uniqueid, only Dest* fields (03 click-to-dial, 10 Local originates).
        src = self._leg(msg, now, out) if "Uniqueid" in msg else None
        call = dest.call
        if src is None:
            dest.originated = True
            call.originated = True
            self._originates.pop(dest.interface, None)  # re-insert: the dict's order is by age
            self._originates[dest.interface] = call.linkedid
            if len(self._originates) > _MAX_PENDING_ORIGINATES:
                self._originates.popitem(last=False)
        exten = msg.get("Exten")
        if src is not None and call.callee_number is None:
            if exten and exten != "s":
                call.callee_number = exten
            elif dest.role == "customer":
                dial_string = msg.get("DialString", "")
                number = dial_string.rpartition("/")[2].partition("@")[0]
                call.callee_number = number or _known(msg.get("DestCallerIDNum"))
        if dest.role == "agent" and dest.part is not None:
            part = dest.part
            if part.via is None:
                if src is None:
                    part.via = "click_to_dial"
                elif call.pending_transfer is not None or call.answered_at is not None:
                    # An agent dialled into a call that is already answered: a blind transfer's target
                    # or an attended transfer's consultation (12: Atxfer dials through Local/1002@agents;
                    # its AttendedTransfer only comes when the transfer completes).
                    part.via = "transfer"
                else:
                    part.via = "direct"
            if part.rang_at is None:
                part.rang_at = now
            self._resolve_transfer(call, part)
            self._ring(call, dest, src, now, out)
        elif dest.role == "customer" and src is not None and src.role == "agent":
            # An agent dialling a customer: what the customer sees is the agent channel's caller ID
            # at this point (the dialplan has set our 400 number by now, 03).
            call.outbound_cli_number = _known(msg.get("CallerIDNum"))
            call.outbound_cli_name = _known(msg.get("CallerIDName"))

    def _on_dial_end(self, msg: Message, now: float, out: Out) -> None:
        dest = self._dest_leg(msg, now, out)
        if dest is None:
            return
        status = msg.get("DialStatus", "")
        if not status or dest.dial_status == status:
            return  # a repeated DialEnd (02, 05b and 10 carry each CANCEL twice)
        dest.dial_status = status
        src = self._leg(msg, now, out) if "Uniqueid" in msg else None
        call = dest.call
        if dest.role == "agent" and dest.part is not None:
            part = dest.part
            if status == "ANSWER":
                if src is not None:
                    self._agent_connected(call, dest, now, out)
                    if src.part is not None and src.part.connected_at is None:
                        src.part.connected_at = now  # the calling agent of an internal call
                return
            if part.connected_at is None and part.result is None:
                part.result = _AGENT_RESULTS.get(status, status.lower())
            if src is None:
                call.originate_failure = call.originate_failure or status
            elif part.via != "queue":
                call.dial_failure = status
        elif dest.role == "customer":
            if status == "ANSWER":
                if src is not None:
                    self._customer_connected(call, dest, src, now, out)
            elif src is None:
                call.originate_failure = call.originate_failure or status
            else:
                call.dial_failure = status
        # Local legs: the real outcome shows on the dial made from the Local channel's other half.

    def _ring(self, call: _Call, leg: _Leg, src: _Leg | None, now: float, out: Out) -> None:
        part = leg.part
        if part is None or part.ringing_emitted:
            return
        part.ringing_emitted = True
        direction = self._direction(call)
        if direction == "inbound":
            number, name = call.caller_number, call.caller_name
        elif direction == "outbound":
            number, name = call.callee_number or leg.caller_number, leg.caller_name
        elif src is not None:
            number, name = src.caller_number, src.caller_name
        else:
            number, name = leg.caller_number, leg.caller_name
        out.append(
            AgentRinging(
                at=now,
                linkedid=call.linkedid,
                uniqueid=leg.uniqueid,
                agent=part.agent,
                interface=part.interface,
                via=part.via or "direct",
                queue=part.queue,
                direction=direction,
                caller_number=number,
                caller_name=name,
                dnis=call.dnis,
            )
        )

    def _agent_connected(self, call: _Call, leg: _Leg, now: float, out: Out, when: float | None = None) -> None:
        """An agent's channel was connected to the other party (AgentConnect, Dial ANSWER, bridge).
        ``when``: the connection time if it is not ``now`` (an estimate for adopted calls)."""
        part = leg.part
        if part is None or part.connected_at is not None:
            return
        at = now if when is None else when
        part.connected_at = at
        if part.answered_at is None:
            part.answered_at = leg.answered_at or at
        leg.connected = True
        first = call.answered_at is None
        ring = at - part.rang_at if part.rang_at is not None else None
        if first:
            call.answered_at = at
            call.answered_by = part.agent
            call.answer_ring_seconds = ring
        out.append(
            CallAnswered(
                at=now,
                linkedid=call.linkedid,
                uniqueid=leg.uniqueid,
                agent=part.agent,
                interface=part.interface,
                queue=part.queue,
                wait_seconds=max(0.0, at - self._wait_from(call, first, part.rang_at)),
                ring_seconds=ring,
                first=first,
            )
        )

    def _customer_connected(self, call: _Call, dest: _Leg, src: _Leg, now: float, out: Out) -> None:
        """A dialled customer answered (outbound call, or a call forwarded to an outside number)."""
        if dest.connected:
            return
        dest.connected = True
        part = src.part if src.role == "agent" else None
        if part is not None and part.connected_at is None:
            part.connected_at = now
        first = call.answered_at is None
        ring = now - dest.started_at
        if first:
            call.answered_at = now
            call.answered_by = part.agent if part is not None else None
            call.answer_ring_seconds = ring
        elif part is None:
            return
        out.append(
            CallAnswered(
                at=now,
                linkedid=call.linkedid,
                uniqueid=src.uniqueid,
                agent=part.agent if part is not None else None,
                interface=part.interface if part is not None else None,
                queue=None,
                wait_seconds=now - self._wait_from(call, first, dest.started_at),
                ring_seconds=ring,
                first=first,
            )
        )

    @staticmethod
    def _wait_from(call: _Call, first: bool, rang_at: float | None) -> float:
        """The caller's wait: since the queue or the start for the first answer; for a later answer
        (after a transfer) since the transfer or, if earlier, since this agent's phone rang."""
        if not first:
            starts = [t for t in (call.last_transfer_at, rang_at) if t is not None]
            if starts:
                return min(starts)
        if call.queued_at is not None:
            return call.queued_at
        return call.started_at

    # ------------------------------------------------------------------------------- bridges
    def _on_bridge_enter(self, msg: Message, now: float, out: Out) -> None:
        """Two jobs. Merging: when a basic (two-party) bridge joins channels of different calls,
        Asterisk gives them all the oldest Linkedid, but the BridgeEnter of the first channel still
        shows its old one (13: agent1002's channel keeps Linkedid ...637.3 on BridgeEnter and shows the
        customer's ...636.0 from its next event on), so the tracker merges here, at once. Connecting:
        the fallback for connections no Dial/Agent event reports (call pickup, the Bridge action, a
        completed transfer): an agent's channel sharing a bridge with a non-agent channel of the same
        call is connected to it. Normally DialEnd/AgentConnect got there first and this is a no-op."""
        leg = self._leg(msg, now, out)
        bridge_id = msg.get("BridgeUniqueid")
        if leg is None or bridge_id is None:
            return
        if leg.bridge is not None and leg.bridge != bridge_id:
            self._leave_bridge(leg)
        members = self._bridges.setdefault(bridge_id, [])
        if leg not in members:
            members.append(leg)
        leg.bridge = bridge_id
        if msg.get("BridgeType") == "basic" and any(m.call is not leg.call for m in members):
            # Holding/parking bridges hold unrelated calls side by side: only basic bridges merge.
            oldest = min((m.call.linkedid for m in members), key=_linkedid_age)
            for member in list(members):
                if member.call.linkedid != oldest:
                    self._relink(member, oldest, now, out)
        call = leg.call
        if leg.role == "agent":
            if (
                leg.part is not None
                and leg.part.connected_at is None
                and any(m.role != "agent" and m.call is call for m in members)
            ):
                self._agent_connected(call, leg, now, out)
        else:
            for member in members:
                part = member.part
                if member.call is call and part is not None and part.connected_at is None:
                    self._agent_connected(call, member, now, out)

    def _on_bridge_leave(self, msg: Message, now: float, out: Out) -> None:
        uid = msg.get("Uniqueid")
        leg = self._legs.get(uid) if uid is not None else None
        if leg is not None and leg.bridge == msg.get("BridgeUniqueid"):
            self._leave_bridge(leg)

    def _leave_bridge(self, leg: _Leg) -> None:
        bridge_id = leg.bridge
        leg.bridge = None
        if bridge_id is None:
            return
        members = self._bridges.get(bridge_id)
        if members is None:
            return
        if leg in members:
            members.remove(leg)
        if not members:
            del self._bridges[bridge_id]

    # ------------------------------------------------------------------------------- transfers
    def _on_blind_transfer(self, msg: Message, now: float, out: Out) -> None:
        """BlindTransfer (phone REFER or the AMI action look the same, 05b): the transferee stays,
        the transferer's channel leaves; the target's phone rings next in the same call."""
        if msg.get("Result") != "Success":
            return
        uid = msg.get("TransfererUniqueid", "")
        leg = self._legs.get(uid)
        call = leg.call if leg is not None else self._calls.get(self._resolve(msg.get("TransfererLinkedid")))
        if call is None:
            return
        key = ("blind", uid)
        if key in call.transfer_keys:
            return
        call.transfer_keys.add(key)
        exten = msg.get("Extension")
        context = msg.get("Context")
        target = f"{exten}@{context}" if exten and context else exten
        from_agent = leg.part.agent if leg is not None and leg.part is not None else None
        record = _TransferRecord(kind="blind", at=now, from_agent=from_agent, to_target=target)
        call.transfers.append(record)
        call.pending_transfer = record
        call.last_transfer_at = now
        out.append(
            CallTransferred(
                at=now, linkedid=call.linkedid, kind="blind", from_agent=from_agent, to_target=target, to_agent=None
            )
        )

    def _on_attended_transfer(self, msg: Message, now: float, out: Out) -> None:
        """AttendedTransfer. Two shapes: the DTMF/AMI Atxfer feature dials the target through a Local
        channel created from the transferer, so everything keeps one Linkedid; a phone's own attended
        transfer (REFER with Replaces) joins two calls with two Linkedids. In the second case the
        consultation call is merged into the customer's call (its legs move over, its Linkedid becomes
        an alias) and it ends with ``merged_into``."""
        if msg.get("Result") != "Success":
            return
        orig_uid = msg.get("OrigTransfererUniqueid", "")
        second_uid = msg.get("SecondTransfererUniqueid", "")
        orig_leg = self._legs.get(orig_uid)
        second_leg = self._legs.get(second_uid)
        main = (
            orig_leg.call if orig_leg is not None else self._calls.get(self._resolve(msg.get("OrigTransfererLinkedid")))
        )
        second = (
            second_leg.call
            if second_leg is not None
            else self._calls.get(self._resolve(msg.get("SecondTransfererLinkedid")))
        )
        if main is None:
            main, second = second, None
        if main is None:
            return
        key = ("attended", orig_uid, second_uid)
        if key in main.transfer_keys:
            return
        main.transfer_keys.add(key)
        from_leg = orig_leg or second_leg
        from_agent = from_leg.part.agent if from_leg is not None and from_leg.part is not None else None
        merged: str | None = None
        if second is not None and second is not main:
            merged = second.linkedid
            self._merge(second, main, second_leg, now, out)
        elif (second_linkedid := msg.get("SecondTransfererLinkedid")) and second_linkedid != main.linkedid:
            merged = second_linkedid  # already merged when the target joined the customer's bridge
        target_leg = self._legs.get(msg.get("TransferTargetUniqueid", ""))
        to_agent = None
        if target_leg is not None and target_leg.part is not None:
            to_agent = target_leg.part.agent
        else:
            for part in reversed(main.agents):
                if part.agent != from_agent and part.ended_at is None:
                    to_agent = part.agent
                    break
        to_target = _target_name(msg.get("TransferTargetChannel") or "") or msg.get("DestType")
        record = _TransferRecord(kind="attended", at=now, from_agent=from_agent, to_target=to_target, to_agent=to_agent)
        main.transfers.append(record)
        main.last_transfer_at = now
        out.append(
            CallTransferred(
                at=now,
                linkedid=main.linkedid,
                kind="attended",
                from_agent=from_agent,
                to_target=to_target,
                to_agent=to_agent,
                merged_linkedid=merged,
            )
        )

    def _merge(self, source: _Call, target: _Call, consult_leg: _Leg | None, now: float, out: Out) -> None:
        """Fold the consultation call ``source`` into ``target``: it ends (merged_into) and its live
        legs and the agents it rang continue as part of ``target``."""
        source.merged_into = target.linkedid
        for leg in [leg for leg in source.legs.values() if leg.ended_at is None and leg is not consult_leg]:
            self._move_leg(leg, source, target, now)
        self._aliases[source.linkedid] = target.linkedid
        self._end_call(source, now, out)

    def _resolve_transfer(self, call: _Call, part: _AgentPart) -> None:
        record = call.pending_transfer
        if record is not None and part.via == "transfer":
            record.to_agent = part.agent
            call.pending_transfer = None

    def _resolve(self, linkedid: str | None) -> str:
        if linkedid is None:
            return ""
        return self._aliases.get(linkedid, linkedid)

    # ------------------------------------------------------------------------------- queues
    def _on_queue_join(self, msg: Message, now: float, out: Out) -> None:
        leg = self._leg(msg, now, out)
        queue = msg.get("Queue")
        if leg is None or not queue or leg.queue == queue:
            return
        self._join_queue(leg, queue, _int(msg.get("Position")), msg, now, now, out)

    def _join_queue(
        self, leg: _Leg, queue: str, position: int | None, msg: Message, joined_at: float, now: float, out: Out
    ) -> None:
        leg.queue = queue
        call = leg.call
        call.queue = queue
        if queue not in call.queues:
            call.queues.append(queue)
        call.queued_at = joined_at
        if call.first_queued_at is None:
            call.first_queued_at = joined_at
        if call.caller_number is None:
            call.caller_number = _known(msg.get("CallerIDNum"))
            call.caller_name = _known(msg.get("CallerIDName"))
        out.append(
            CallOffered(
                at=now,
                linkedid=call.linkedid,
                uniqueid=leg.uniqueid,
                caller_number=call.caller_number,
                caller_name=call.caller_name,
                dnis=call.dnis,
                queue=queue,
                position=position,
            )
        )

    def _on_queue_leave(self, msg: Message, now: float, out: Out) -> None:
        leg = self._leg(msg, now, out)
        if leg is None or leg.queue is None or leg.queue != msg.get("Queue"):
            return
        leg.queue = None
        leg.call.queue_left_at = now

    def _on_queue_abandon(self, msg: Message, now: float, out: Out) -> None:
        """QueueCallerAbandon does not mean the caller hung up: app_queue also sends it when the queue
        gives up on a caller who is still there (max wait reached, 11: no HangupRequest, then the
        dialplan goes on to CtiQueueTimeout). A real abandon always shows the caller's HangupRequest
        first (02 and all eight in 10), so that decides; the other case is a missed call whose reason
        the dialplan's UserEvent gives (or ``queue_exit`` when the call ends without one)."""
        leg = self._leg(msg, now, out)
        if leg is None:
            return
        call = leg.call
        if call.answered_at is not None:
            return
        if call.queue_left_at is None or leg.queue is not None:
            call.queue_left_at = now
        if not leg.hangup_requested or call.abandoned:
            return
        call.abandoned = True
        queued = call.queued_at if call.queued_at is not None else call.started_at
        out.append(
            CallAbandoned(
                at=now,
                linkedid=call.linkedid,
                queue=msg.get("Queue") or call.queue or "",
                caller_number=call.caller_number,
                caller_name=call.caller_name,
                dnis=call.dnis,
                wait_seconds=now - queued,
                position=_int(msg.get("Position")),
                original_position=_int(msg.get("OriginalPosition")),
            )
        )

    def _on_agent_called(self, msg: Message, now: float, out: Out) -> None:
        dest = self._dest_leg(msg, now, out)
        interface = msg.get("Interface")
        if dest is None or not interface:
            return
        if dest.part is None or dest.interface != interface:
            # A queue member is an agent whatever its channel: also a Local/... member (load agents).
            self._attach_agent(dest, interface, msg.get("MemberName"), now, out)
        part = dest.part
        assert part is not None
        queue = msg.get("Queue")
        if part.via == "queue" and part.queue == queue:
            return
        part.via = "queue"
        part.queue = queue
        if part.rang_at is None:
            part.rang_at = now
        self._ring(dest.call, dest, None, now, out)

    def _on_agent_connect(self, msg: Message, now: float, out: Out) -> None:
        dest = self._dest_leg(msg, now, out)
        if dest is None or dest.part is None:
            return
        if dest.part.queue is None:
            dest.part.queue = msg.get("Queue")
        self._agent_connected(dest.call, dest, now, out)

    def _on_agent_ring_no_answer(self, msg: Message, now: float, out: Out) -> None:
        dest = self._dest_leg(msg, now, out)
        if dest is not None and dest.part is not None and dest.part.connected_at is None:
            dest.part.result = "no_answer"

    def _on_agent_complete(self, msg: Message, now: float, out: Out) -> None:
        leg = self._leg(msg, now, out)
        if leg is None or leg.call.hangup_side is not None:
            return
        reason = msg.get("Reason")
        if reason == "caller":
            leg.call.hangup_side = "customer"
        elif reason == "agent":
            leg.call.hangup_side = "agent"

    # ------------------------------------------------------------------------------- variables & signals
    def _on_varset(self, msg: Message, now: float, out: Out) -> None:
        # Half of an unfiltered stream is VarSet (10: 1,501 of 2,869 events): reject on the name first.
        name = msg.get("Variable")
        if not name:
            return
        if name[0] == "_":
            name = name.lstrip("_")  # inherited __CTI_X is reported with its underscores (01: __CTI_DID)
        is_recfile = name == "MIXMONITOR_FILENAME"
        if not (is_recfile or name.startswith("CTI_")):
            return
        leg = self._leg(msg, now, out)
        if leg is None:
            return
        call = leg.call
        value = msg.get("Value", "")
        if is_recfile or name == "CTI_RECFILE":
            # 04: CTI_RECFILE and MIXMONITOR_FILENAME both name /opt/ast/spool/monitor/<Uniqueid>.wav.
            if value:
                call.recording_file = value
                call.recording_channel = leg.channel
            if is_recfile:
                return
        if call.variables.get(name) == value:
            return
        call.variables[name] = value
        if name in ("CTI_DNIS", "CTI_DID") and value:
            arrived = call.dnis is None
            call.dnis = value  # product dialplan: CTI_DNIS; the fixtures' reference dialplan: CTI_DID
            if arrived:
                out.append(
                    CallArrived(
                        at=now,
                        linkedid=call.linkedid,
                        caller_number=call.caller_number,
                        caller_name=call.caller_name,
                        dnis=value,
                    )
                )
        elif name == "CTI_OUTCOME":
            reason = _OUTCOME_VALUES.get(value)
            if reason is not None:
                call.missed_reason = call.missed_reason or reason
            elif value in _DIAL_FAILURES and call.dial_failure is None:
                call.dial_failure = value  # cti-outbound sets CTI_OUTCOME=${DIALSTATUS}

    def _on_user_event(self, msg: Message, now: float, out: Out) -> None:
        reason = _MISSED_USER_EVENTS.get(msg.get("UserEvent", ""))
        if reason is None:
            return
        leg = self._leg(msg, now, out)
        if leg is None:
            return
        call = leg.call
        if msg.get("DNIS") and call.dnis is None:
            call.dnis = msg["DNIS"]
        call.missed_reason = reason
        self._emit_missed(call, reason, now, out, queue=msg.get("Queue") or None)

    def _emit_missed(self, call: _Call, reason: MissedReason, now: float, out: Out, queue: str | None = None) -> None:
        if call.missed_emitted or call.answered_at is not None or call.abandoned:
            return
        call.missed_emitted = True
        since = call.first_queued_at if call.first_queued_at is not None else call.started_at
        until = call.queue_left_at if call.queue_left_at is not None else now
        out.append(
            CallMissed(
                at=now,
                linkedid=call.linkedid,
                reason=reason,
                queue=queue or call.queue,
                caller_number=call.caller_number,
                caller_name=call.caller_name,
                dnis=call.dnis,
                wait_seconds=max(0.0, until - since),
            )
        )

    def _on_originate_response(self, msg: Message, now: float, out: Out) -> None:
        """OriginateResponse is an event, not a Response, and its timing varies. On success it names the
        channel and its Uniqueid (03, 15). On failure it names only the *requested* channel
        (``PJSIP/agent1001``) with ``Uniqueid: <unknown>``: after the agent's phone rang unanswered
        it comes *before* that channel's Hangup and there is no DialEnd at all (16); when no channel
        could be created (phone not registered) nothing else is ever sent (17), so the attempt is
        logged here as a failed outbound call. The rung channel is found by the interface its
        channel-less DialBegin was recorded under."""
        uid = msg.get("Uniqueid", "")
        key = msg.get("ActionID") or f"{msg.get('Channel')}|{uid}|{msg.get('Reason')}"
        if key in self._originate_responses:
            return
        _remember(self._originate_responses, key, _MAX_PENDING_ORIGINATES)
        leg = self._legs.get(uid)
        failed = msg.get("Response") != "Success"
        if leg is None:
            if uid not in _NOT_A_CHANNEL or not failed:
                return  # a success about a channel that is already gone: its call told its story
            linkedid = self._originates.pop(msg.get("Channel", ""), None)
            call = self._calls.get(self._resolve(linkedid)) if linkedid is not None else None
            if call is None:
                ended_at = self._originate_ended.get(linkedid) if linkedid is not None else None
                if ended_at is None or now - ended_at > _LATE_ORIGINATE_RESPONSE:
                    self._originate_never_rang(msg, now, out)
                return  # else: the rung channel's call already ended and reported itself
        else:
            call = leg.call
            if self._resolve(self._originates.get(leg.interface)) == call.linkedid:
                del self._originates[leg.interface]
        exten = msg.get("Exten")
        if call.callee_number is None and exten and exten != "s" and "Application" not in msg:
            call.callee_number = exten  # click-to-dial: the Originate's Exten is the customer's number
        if failed and call.originate_failure is None:
            call.originate_failure = _ORIGINATE_REASONS.get(msg.get("Reason", ""), msg.get("Reason", ""))

    def _originate_never_rang(self, msg: Message, now: float, out: Out) -> None:
        uid = msg.get("Uniqueid", "")
        interface = msg.get("Channel", "")
        reason_code = msg.get("Reason", "")
        reason = f"originate_failed:{_ORIGINATE_REASONS.get(reason_code, reason_code)}"
        # With Originate's ChannelId the Uniqueid is the one we chose, even though no channel exists.
        linkedid = uid if uid not in _NOT_A_CHANNEL else f"originate-{msg.get('ActionID', '')}"
        if linkedid in self._ended_calls or linkedid in self._calls:
            return
        _remember(self._ended_calls, linkedid, self._recent_limit)
        agents: tuple[AgentLeg, ...] = ()
        if interface in self._agents or self._agent_pattern(interface):
            agents = (
                AgentLeg(
                    agent=_agent_id(interface),
                    interface=interface,
                    uniqueid="",
                    via="click_to_dial",
                    queue=None,
                    rang_at=None,
                    answered_at=None,
                    connected_at=None,
                    ended_at=now,
                    ring_seconds=None,
                    talk_seconds=None,
                    result="failed",
                ),
            )
        exten = msg.get("Exten")
        callee = exten if exten and exten != "s" and msg.get("Application") is None else None
        out.append(
            CallEnded(
                at=now,
                linkedid=linkedid,
                direction="outbound",
                caller_number=None,  # OriginateResponse's CallerID is what the agent's phone would show
                caller_name=None,
                callee_number=callee,
                customer_number=callee,
                dnis=None,
                queue=None,
                queues=(),
                started_at=now,
                answered_at=None,
                ended_at=now,
                wait_seconds=0.0,
                ring_seconds=0.0,
                talk_seconds=0.0,
                duration_seconds=0.0,
                outcome="failed",
                reason=reason,
                answered_by=None,
                agents=agents,
                transfers=(),
                legs=(),
                recording_file=None,
                variables=MappingProxyType({}),
                hangup_cause=None,
                hangup_cause_text=None,
                hangup_side=None,
            )
        )

    def _on_cdr(self, msg: Message, now: float, out: Out) -> None:
        # Cdr has no Linkedid, only the channel's UniqueID, and often comes after the call ended (02):
        # it only fills a recording file nothing else named.
        leg = self._legs.get(msg.get("UniqueID", ""))
        recording = msg.get("RecordingFile")
        if leg is not None and recording and leg.call.recording_file is None:
            leg.call.recording_file = recording

    def _on_fully_booted(self, msg: Message, now: float, out: Out) -> None:
        """FullyBooted comes after every Login. A boot time (now - Uptime) later than the last one seen
        means Asterisk restarted while we were away: every channel we knew is gone (a crash sends no
        Hangup: 20), so those calls end now as lost/pbx_restart. The one sent on login has no
        Timestamp header; ``now`` is our clock anyway."""
        uptime = _int(msg.get("Uptime"))
        if uptime is None:
            return
        boot_at = now - uptime
        previous = self._boot_at
        if previous is not None and boot_at <= previous + _SAME_BOOT_TOLERANCE:
            return
        self._boot_at = boot_at
        if previous is None:
            return
        self._restarted = True
        for leg in list(self._legs.values()):
            self._lose_leg(leg, now, "pbx_restart", out)

    def _on_shutdown(self, msg: Message, now: float, out: Out) -> None:
        """Asterisk is stopping: nothing survives it. A clean stop hangs every channel up first (19:
        ``core restart now`` from the CLI gave Hangups, then ``Shutdown: Cleanly, Restart: True``), so
        usually nothing is left; whatever is ends as lost."""
        reason = "pbx_restart" if msg.get("Restart") == "True" else "pbx_shutdown"
        self._restarted = True
        for leg in list(self._legs.values()):
            self._lose_leg(leg, now, reason, out)

    def _lose_leg(self, leg: _Leg, now: float, reason: str, out: Out) -> None:
        """A leg vanished without a Hangup: the call ends as lost if it was its last leg."""
        if leg.uniqueid not in self._legs:
            return
        call = leg.call
        call.lost_reason = reason
        self._end_leg(leg, now, None, None, out)
        if call.live > 0:
            call.lost_reason = None  # other legs survive: the call goes on

    # ------------------------------------------------------------------------------- agents
    def _agent_record(self, interface: str, name: str | None) -> _Agent:
        agent = self._agents.get(interface)
        if agent is None:
            agent = _Agent(agent=_agent_id(interface), interface=interface, name=name)
            self._agents[interface] = agent
        elif name and agent.name is None:
            agent.name = name
        return agent

    def _on_queue_member(self, msg: Message, now: float, out: Out) -> None:
        interface = msg.get("Interface") or msg.get("Location")
        queue = msg.get("Queue")
        if not interface or not queue:
            return
        agent = self._agent_record(interface, msg.get("MemberName") or msg.get("Name"))
        self._set_membership(agent, queue, msg)
        self._update_agent(agent, now, out)

    def _set_membership(self, agent: _Agent, queue: str, msg: Message) -> None:
        membership = agent.memberships.get(queue)
        if membership is None:
            membership = agent.memberships[queue] = _Membership()
        paused = msg.get("Paused") == "1"
        membership.paused = paused
        # QueueMemberPause with Paused: 0 still carries the unpause Reason (08: "Back from lunch").
        membership.reason = (msg.get("PausedReason") or None) if paused else None
        wrapup = _int(msg.get("Wrapuptime"))
        if wrapup is not None:
            membership.wrapup_seconds = float(wrapup)
        status = _int(msg.get("Status"))
        if status is not None:
            agent.device_status = status

    def _on_queue_member_removed(self, msg: Message, now: float, out: Out) -> None:
        interface = msg.get("Interface")
        agent = self._agents.get(interface) if interface else None
        if agent is None:
            return
        if agent.memberships.pop(msg.get("Queue", ""), None) is not None:
            self._update_agent(agent, now, out)

    def _replace_memberships(self, members: Iterable[Message], now: float, out: Out) -> None:
        seen: dict[str, set[str]] = {}
        for msg in members:
            interface = msg.get("Location") or msg.get("Interface")
            queue = msg.get("Queue")
            if not interface or not queue:
                continue
            agent = self._agent_record(interface, msg.get("Name") or msg.get("MemberName"))
            self._set_membership(agent, queue, msg)
            seen.setdefault(interface, set()).add(queue)
        for interface, agent in self._agents.items():
            keep = seen.get(interface, set())
            for queue in [q for q in agent.memberships if q not in keep]:
                del agent.memberships[queue]

    def _start_wrapup(self, agent: _Agent, queue: str | None, now: float) -> None:
        seconds = self._wrapup_by_queue.get(queue or "", self._wrapup_default)
        membership = agent.memberships.get(queue or "")
        if membership is not None:
            seconds = max(seconds, membership.wrapup_seconds)
        if seconds <= 0:
            return
        agent.wrapup_until = now + seconds
        heapq.heappush(self._wrapups, (agent.wrapup_until, agent.interface))

    def _expire_wrapups(self, now: float, out: Out) -> None:
        heap = self._wrapups
        while heap and heap[0][0] <= now:
            until, interface = heapq.heappop(heap)
            agent = self._agents.get(interface)
            if agent is not None and agent.wrapup_until is not None and agent.wrapup_until <= now:
                agent.wrapup_until = None
                self._update_agent(agent, until, out)

    def _agent_state(self, agent: _Agent, now: float | None) -> tuple[AgentState, str | None]:
        ringing: _Leg | None = None
        for leg in agent.legs.values():
            if leg.state == _UP or leg.is_caller:
                return "on_call", leg.call.linkedid
            ringing = leg
        if ringing is not None:
            return "ringing", ringing.call.linkedid
        if agent.wrapup_until is not None and (now is None or agent.wrapup_until > now):
            return "wrap_up", None
        if not agent.memberships:
            return "logged_out", None
        if any(m.paused for m in agent.memberships.values()):
            return "paused", None
        return "ready", None

    def _update_agent(self, agent: _Agent, now: float, out: Out) -> None:
        """Recompute an agent's state; emit AgentStateChanged when anything shown changed."""
        state, linkedid = self._agent_state(agent, now)
        memberships = agent.memberships
        queues = tuple(sorted(memberships))
        paused_queues = tuple(q for q in queues if memberships[q].paused)
        reason = next((memberships[q].reason for q in paused_queues if memberships[q].reason), None)
        available = agent.device_status not in _UNAVAILABLE_DEVICE
        key = (state, reason, queues, paused_queues, available, linkedid)
        if key == agent.reported:
            return
        agent.reported = key
        previous = agent.state
        if state != previous:
            agent.since = now
        agent.state = state
        out.append(
            AgentStateChanged(
                at=now,
                agent=agent.agent,
                interface=agent.interface,
                name=agent.name,
                state=state,
                previous_state=previous,
                paused=bool(paused_queues),
                pause_reason=reason,
                queues=queues,
                paused_queues=paused_queues,
                available=available,
                linkedid=linkedid,
            )
        )

    # ------------------------------------------------------------------------------- end of a call
    def _direction(self, call: _Call) -> CallDirection:
        if call.queues or call.dnis:
            return "inbound"
        first: _Leg | None = None
        has_customer = False
        for leg in call.legs.values():
            if leg.role == "local":
                continue
            if first is None:
                first = leg
            if leg.role == "customer":
                has_customer = True
        if first is None:
            return "internal"
        if first.role == "customer" and not first.originated:
            return "inbound"
        if has_customer or any(part.via == "click_to_dial" for part in call.agents):
            return "outbound"
        return "internal"

    def _outcome(self, call: _Call, direction: CallDirection) -> tuple[CallOutcome, str | None]:
        if call.lost_reason is not None:
            return "lost", call.lost_reason
        if call.answered_at is not None:
            return "answered", "merged" if call.merged_into else None
        if call.abandoned:
            return "abandoned", "caller_hangup"
        if call.originate_failure is not None:
            return "failed", f"originate_failed:{call.originate_failure}"
        if call.missed_reason is not None:
            return "no_answer", call.missed_reason
        if call.queues:
            return "no_answer", "queue_exit"
        if call.dial_failure is not None:
            return _DIAL_FAILURES.get(call.dial_failure, ("failed", call.dial_failure.lower()))
        if call.merged_into is not None:
            return "no_answer", "merged"
        if direction == "inbound":
            return "abandoned", "before_queue"  # the caller hung up in the IVR
        return "no_answer", "cancelled"

    def _end_call(self, call: _Call, now: float, out: Out) -> None:
        if self._calls.get(call.linkedid) is not call:
            return
        del self._calls[call.linkedid]
        _remember(self._ended_calls, call.linkedid, self._recent_limit)
        if call.originated:
            self._originate_ended[call.linkedid] = now
            if len(self._originate_ended) > _MAX_PENDING_ORIGINATES:
                self._originate_ended.popitem(last=False)
        if len(self._aliases) > self._recent_limit:
            self._aliases.popitem(last=False)
        direction = self._direction(call)
        outcome, reason = self._outcome(call, direction)
        if (
            call.answered_at is None
            and not call.abandoned
            and call.lost_reason is None
            and call.merged_into is None
            and call.originate_failure is None
        ):
            missed: MissedReason | None = call.missed_reason or ("queue_exit" if call.queues else None)
            if missed is not None:
                self._emit_missed(call, missed, now, out)  # the dialplan sent no UserEvent: say it now
        out.append(self._summary(call, direction, outcome, reason, now))

    def _summary(
        self, call: _Call, direction: CallDirection, outcome: CallOutcome, reason: str | None, now: float
    ) -> CallEnded:
        if direction == "inbound":
            caller_number, caller_name = call.caller_number, call.caller_name
            callee_number = call.dnis or call.callee_number
            customer_number = caller_number
        elif direction == "outbound":
            caller_number = call.outbound_cli_number or call.caller_number
            caller_name = call.outbound_cli_name if call.outbound_cli_number else call.caller_name
            callee_number = call.callee_number
            customer_number = callee_number
        else:
            caller_number, caller_name = call.caller_number, call.caller_name
            callee_number = call.callee_number
            customer_number = None
        answered_by = call.answered_by
        if direction == "outbound" and answered_by is None and outcome == "answered":
            answered_by = next((p.agent for p in call.agents), None)
        wait_from = call.first_queued_at if call.first_queued_at is not None else call.started_at
        if call.answered_at is not None:
            wait_until = call.answered_at
        elif call.queue_left_at is not None:
            wait_until = call.queue_left_at
        else:
            wait_until = now
        if call.answered_at is not None:
            ring = call.answer_ring_seconds or 0.0
        else:
            ring = max((((p.ended_at or now) - p.rang_at) for p in call.agents if p.rang_at is not None), default=0.0)
        agents = tuple(self._agent_leg(part, call, now) for part in call.agents)
        legs = tuple(
            CallLeg(
                uniqueid=leg.uniqueid,
                channel=leg.channel,
                role=leg.role,
                started_at=leg.started_at,
                answered_at=leg.answered_at,
                ended_at=leg.ended_at,
                hangup_cause=leg.cause,
                hangup_cause_text=leg.cause_text,
            )
            for leg in call.legs.values()
        )
        transfers = tuple(
            Transfer(kind=t.kind, at=t.at, from_agent=t.from_agent, to_target=t.to_target, to_agent=t.to_agent)
            for t in call.transfers
        )
        return CallEnded(
            at=now,
            linkedid=call.linkedid,
            direction=direction,
            caller_number=caller_number,
            caller_name=caller_name,
            callee_number=callee_number,
            customer_number=customer_number,
            dnis=call.dnis,
            queue=call.queue,
            queues=tuple(call.queues),
            started_at=call.started_at,
            answered_at=call.answered_at,
            ended_at=now,
            wait_seconds=max(0.0, wait_until - wait_from),
            ring_seconds=max(0.0, ring),
            talk_seconds=now - call.answered_at if call.answered_at is not None else 0.0,
            duration_seconds=now - call.started_at,
            outcome=outcome,
            reason=reason,
            answered_by=answered_by,
            agents=agents,
            transfers=transfers,
            legs=legs,
            recording_file=call.recording_file,
            variables=MappingProxyType(dict(call.variables)),
            hangup_cause=call.hangup_cause,
            hangup_cause_text=call.hangup_cause_text,
            hangup_side=call.hangup_side if call.answered_at is not None else None,
            merged_into=call.merged_into,
        )

    @staticmethod
    def _agent_leg(part: _AgentPart, call: _Call, now: float) -> AgentLeg:
        ended = part.ended_at
        if part.connected_at is not None:
            result = "answered"
        elif part.result is not None:
            result = part.result
        elif part.via in ("outbound", "click_to_dial") and part.answered_at is not None:
            result = "not_connected"
        else:
            result = "no_answer"
        ring_end = part.answered_at or part.connected_at or ended or now
        return AgentLeg(
            agent=part.agent,
            interface=part.interface,
            uniqueid=part.uniqueid,
            via=part.via or "direct",
            queue=part.queue,
            rang_at=part.rang_at,
            answered_at=part.answered_at,
            connected_at=part.connected_at,
            ended_at=ended,
            ring_seconds=ring_end - part.rang_at if part.rang_at is not None else None,
            talk_seconds=(ended or now) - part.connected_at if part.connected_at is not None else None,
            result=result,
        )

    # ------------------------------------------------------------------------------- resync helpers
    def _adopt_details(self, leg: _Leg, chan: Message, now: float, out: Out) -> None:
        """After adopting a channel from CoreShowChannels: an agent found ringing or connected gets
        its AgentRinging or CallAnswered, so a panel that reconnects shows it. Times are estimated
        from the channel's Duration (whole seconds)."""
        part = leg.part
        if part is None:
            return
        call = leg.call
        if part.via is None:
            # 22: a queue's agent channel runs "AppQueue" (Outgoing Line); its caller runs "Queue".
            part.via = "queue" if chan.get("Application") == "AppQueue" else "adopted"
            if part.via == "queue":
                part.queue = call.queue
        if leg.state == _UP:
            part.answered_at = part.answered_at or leg.started_at
            connected = leg.bridge is not None and any(
                other.role != "agent" and other.call is call for other in self._bridges.get(leg.bridge, ())
            )
            if connected and not leg.is_caller:
                part.rang_at = part.rang_at or leg.started_at
                self._agent_connected(call, leg, now, out, when=leg.started_at)
        elif not leg.is_caller:
            part.rang_at = part.rang_at or leg.started_at
            self._ring(call, leg, None, now, out)

    # ------------------------------------------------------------------------------- snapshots
    def _call_snapshot(self, call: _Call) -> CallSnapshot:
        live_agents = tuple(
            dict.fromkeys(leg.part.agent for leg in call.legs.values() if leg.part is not None and leg.ended_at is None)
        )
        status: Literal["ivr", "queued", "ringing", "dialing", "talking"]
        if call.answered_at is not None:
            status = "talking"
        elif any(leg.queue is not None for leg in call.legs.values()):
            status = "queued"
        elif any(leg.part is not None and leg.ended_at is None and not leg.is_caller for leg in call.legs.values()):
            status = "ringing"
        elif any(leg.role == "customer" and leg.dialed and leg.ended_at is None for leg in call.legs.values()):
            status = "dialing"
        else:
            status = "ivr"
        direction = self._direction(call)
        return CallSnapshot(
            linkedid=call.linkedid,
            direction=direction,
            status=status,
            caller_number=call.caller_number if direction != "outbound" else call.outbound_cli_number,
            caller_name=call.caller_name if direction != "outbound" else call.outbound_cli_name,
            callee_number=call.dnis if direction == "inbound" else call.callee_number,
            dnis=call.dnis,
            queue=call.queue,
            started_at=call.started_at,
            queued_at=call.queued_at,
            answered_at=call.answered_at,
            answered_by=call.answered_by,
            agents=live_agents,
            recording_file=call.recording_file,
            variables=MappingProxyType(dict(call.variables)),
            recording_channel=call.recording_channel,
        )

    def _agent_snapshot(self, agent: _Agent, now: float | None) -> AgentSnapshot:
        state, linkedid = self._agent_state(agent, now)
        memberships = agent.memberships
        queues = tuple(sorted(memberships))
        paused_queues = tuple(q for q in queues if memberships[q].paused)
        return AgentSnapshot(
            agent=agent.agent,
            interface=agent.interface,
            name=agent.name,
            state=state,
            since=agent.since,
            paused=bool(paused_queues),
            pause_reason=next((memberships[q].reason for q in paused_queues if memberships[q].reason), None),
            queues=queues,
            paused_queues=paused_queues,
            available=agent.device_status not in _UNAVAILABLE_DEVICE,
            linkedid=linkedid,
        )
