"""The call tracker on real AMI captures (raw bytes of Asterisk 22 sessions through the real parser).

Captures: ``shared/fixtures/ami`` (described in its README) and ``tests/fixtures/ami`` (recorded for
this repository with the product's own dialplan, see ``tests/fixtures/ami/README.md``). The helpers
at the top are also used by the other ``test_call_tracker_*`` modules.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from cti.ami.protocol import AmiMessage, AmiParser
from cti.calls.events import (
    AgentRinging,
    AgentStateChanged,
    CallAbandoned,
    CallAnswered,
    CallArrived,
    CallEnded,
    CallOffered,
    CallTransferred,
    DomainEvent,
    event_to_dict,
)
from cti.calls.tracker import HANDLED_EVENTS, CallTracker

REPO = Path(__file__).resolve().parents[2]
SHARED_CAPTURES = REPO.parent / "shared" / "fixtures" / "ami"
OWN_CAPTURES = REPO / "tests" / "fixtures" / "ami"
MANAGER_CONF = REPO / "asterisk-config" / "manager.conf"


# ------------------------------------------------------------------------------------------ helpers
def all_captures() -> list[Path]:
    """Every ``*.ami`` capture: the shared ones and the ones recorded for this repository."""
    return sorted(SHARED_CAPTURES.glob("*.ami")) + sorted(OWN_CAPTURES.glob("*.ami"))


def parse(path: Path) -> list[AmiMessage]:
    return AmiParser().feed(path.read_bytes())


def clocked(messages: Iterable[Mapping[str, str]]) -> list[tuple[float, Mapping[str, str]]]:
    """Pair each message with a clock: its ``Timestamp`` header (the captures were recorded with
    timestampevents=yes), carried over Responses and the FullyBooted sent on login, which have none
    (before the first stamped message: that message's time). Only the test driver reads it."""
    messages = list(messages)
    now = next((float(m["Timestamp"]) for m in messages if m.get("Timestamp")), 0.0)
    out = []
    for msg in messages:
        stamp = msg.get("Timestamp")
        if stamp:
            now = float(stamp)
        out.append((now, msg))
    return out


def replay(
    messages: Sequence[Mapping[str, str]] | Path,
    *,
    tracker: CallTracker | None = None,
    repeat_each: int = 1,
) -> tuple[CallTracker, list[DomainEvent]]:
    """Feed messages in order, each ``repeat_each`` times in a row; return the tracker and its output."""
    msgs = parse(messages) if isinstance(messages, Path) else messages
    tracker = tracker or CallTracker()
    events: list[DomainEvent] = []
    for now, msg in clocked(msgs):
        for _ in range(repeat_each):
            events.extend(tracker.feed(msg, now))
    return tracker, events


def of_type(events: Iterable[DomainEvent], *types: type[DomainEvent]) -> list[Any]:
    return [e for e in events if isinstance(e, types)]


def call_events(events: Iterable[DomainEvent]) -> list[DomainEvent]:
    """Everything but agent state changes (those are checked on their own)."""
    return [e for e in events if not isinstance(e, AgentStateChanged)]


def only_ended(events: Iterable[DomainEvent]) -> CallEnded:
    (summary,) = of_type(events, CallEnded)
    return summary  # type: ignore[no-any-return]


def shape(value: Any) -> Any:
    """An event with every time and duration removed: what must not depend on the clock."""
    if isinstance(value, DomainEvent):
        value = event_to_dict(value)
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items() if not isinstance(v, float)}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return value


def product_event_filter() -> Any:
    """A predicate that keeps what asterisk-config/manager.conf lets through to the CTI user."""
    names: set[str] = set()
    varset_patterns: list[re.Pattern[str]] = []
    for line in MANAGER_CONF.read_text().split("[", 2)[2].splitlines():  # the CTI user's section
        m = re.match(r"eventfilter\(action\(include\),name\((\w+)\)(.*)\)\s*=\s*(.*)$", line.strip())
        if not m:
            continue
        name, rest, value = m.groups()
        if name == "VarSet" and "method(regex)" in rest:
            varset_patterns.append(re.compile(value.strip()))
        elif name == "VarSet" and "method(exact)" in rest:
            varset_patterns.append(re.compile(re.escape(value.strip()) + "$"))
        else:
            names.add(name)

    def keep(msg: Mapping[str, str]) -> bool:
        event = msg.get("Event")
        if event is None or "ActionID" in msg:
            return True  # Responses and action list items are not subject to eventfilter
        if event == "VarSet":
            return any(p.match(msg.get("Variable", "")) for p in varset_patterns)
        return event in names

    return keep


CAPTURES = all_captures()
CAPTURE_IDS = [p.name for p in CAPTURES]


# ----------------------------------------------------------------------------- every capture
@pytest.mark.parametrize("path", CAPTURES, ids=CAPTURE_IDS)
def test_every_call_in_a_capture_ends_exactly_once(path: Path) -> None:
    tracker, events = replay(path)
    linkedids = [e.linkedid for e in of_type(events, CallEnded)]
    assert len(linkedids) == len(set(linkedids))
    announced = {e.linkedid for e in of_type(events, CallOffered, AgentRinging, CallAnswered, CallAbandoned)}
    live = {call.linkedid for call in tracker.snapshot().calls}
    assert announced <= set(linkedids) | live
    assert not live & set(linkedids)
    # The "-during-call" captures stop while a call is up (crash, dropped connection): it ends in the
    # "-after" session (test_call_tracker_recorded); 22 stops with two calls up (it is about resync).
    assert tracker.live_calls == 0 or path.name.endswith(("-during-call.ami", "22-resync-lists.ami"))


@pytest.mark.parametrize("path", CAPTURES, ids=CAPTURE_IDS)
def test_every_event_fed_twice_changes_nothing(path: Path) -> None:
    _, once = replay(path)
    _, twice = replay(path, repeat_each=2)
    assert twice == once


@pytest.mark.parametrize("path", CAPTURES, ids=CAPTURE_IDS)
def test_tracker_does_not_depend_on_the_timestamp_header(path: Path) -> None:
    _, stamped = replay(path)
    tracker = CallTracker()
    unstamped: list[DomainEvent] = []
    for index, msg in enumerate(parse(path)):
        bare = {k: v for k, v in msg.items() if k != "Timestamp"}
        unstamped.extend(tracker.feed(bare, 1000.0 + index * 0.01))
    assert [shape(e) for e in unstamped] == [shape(e) for e in stamped]


@pytest.mark.parametrize("path", CAPTURES, ids=CAPTURE_IDS)
def test_product_ami_event_filter_keeps_everything_the_tracker_needs(path: Path) -> None:
    """The captures are unfiltered; the product's CTI user gets only manager.conf's include list."""
    keep = product_event_filter()
    timeline = clocked(parse(path))
    full: list[DomainEvent] = []
    filtered: list[DomainEvent] = []
    tracker_full, tracker_filtered = CallTracker(), CallTracker()
    for now, msg in timeline:
        full.extend(tracker_full.feed(msg, now))
        if keep(msg):
            filtered.extend(tracker_filtered.feed(msg, now))
    assert filtered == full


def test_handled_events_all_pass_the_product_filter() -> None:
    keep = product_event_filter()
    for name in HANDLED_EVENTS - {"QueueMember", "VarSet"}:  # QueueMember answers QueueStatus
        assert keep({"Event": name}), name


def test_unknown_events_and_responses_are_ignored() -> None:
    tracker = CallTracker()
    assert tracker.feed({"Event": "SomethingNew", "Uniqueid": "1.1", "Linkedid": "1.1", "Channel": "X/y-1"}, 1.0) == []
    response = {"Response": "Success", "ActionID": "a1", "Message": "Originate successfully queued"}
    assert tracker.feed(response, 1.0) == []
    assert tracker.feed({"Event": "TestEvent", "Type": "StateChange", "State": "DIAL"}, 1.0) == []
    assert tracker.feed({"Event": "VarSet", "Variable": "QUEUEPOSITION", "Value": "1", "Uniqueid": "1.1"}, 1.0) == []
    assert tracker.live_calls == 0


# ----------------------------------------------------------------------------- per scenario
def test_01_queue_call_answered_by_the_only_agent() -> None:
    _, events = replay(SHARED_CAPTURES / "01-inbound-queue-answered.ami")
    arrived, offered, ringing, answered, summary = call_events(events)
    # The caller is known as soon as the dialplan names the line, before the answer and the queue.
    assert isinstance(arrived, CallArrived)
    assert (arrived.linkedid, arrived.caller_number, arrived.caller_name, arrived.dnis) == (
        "1795528219.0",
        "13800138000",
        "Customer",
        "4008001234",
    )
    assert arrived.at <= offered.at
    assert isinstance(offered, CallOffered)
    assert (offered.linkedid, offered.caller_number, offered.caller_name) == ("1795528219.0", "13800138000", "Customer")
    assert (offered.dnis, offered.queue, offered.position) == ("4008001234", "support", 1)
    assert isinstance(ringing, AgentRinging)
    assert (ringing.agent, ringing.interface, ringing.queue, ringing.via) == (
        "agent1001",
        "PJSIP/agent1001",
        "support",
        "queue",
    )
    assert (ringing.caller_number, ringing.dnis, ringing.direction) == ("13800138000", "4008001234", "inbound")
    assert isinstance(answered, CallAnswered)
    assert (answered.agent, answered.queue, answered.first) == ("agent1001", "support", True)
    assert answered.wait_seconds == pytest.approx(0.018, abs=0.01)
    assert isinstance(summary, CallEnded)
    assert (summary.outcome, summary.reason, summary.direction) == ("answered", None, "inbound")
    assert summary.talk_seconds == pytest.approx(3.0, abs=0.1)
    assert summary.recording_file is None
    assert (summary.caller_number, summary.callee_number, summary.customer_number) == (
        "13800138000",
        "4008001234",
        "13800138000",
    )
    assert (summary.answered_by, summary.answered_agents, summary.queue) == ("agent1001", ("agent1001",), "support")
    assert [(a.agent, a.via, a.result) for a in summary.agents] == [("agent1001", "queue", "answered")]
    assert [leg.role for leg in summary.legs] == ["customer", "agent"]
    assert (summary.hangup_cause, summary.hangup_cause_text, summary.hangup_side) == (16, "Normal Clearing", "customer")
    assert summary.variables == {"CTI_DID": "4008001234", "CTI_QUEUE": "support"}
    assert summary.duration_seconds == pytest.approx(3.83, abs=0.05)


def test_02_caller_abandons_while_the_agent_rings() -> None:
    _, events = replay(SHARED_CAPTURES / "02-inbound-queue-abandoned.ami")
    assert [type(e) for e in call_events(events)] == [CallArrived, CallOffered, AgentRinging, CallAbandoned, CallEnded]
    abandoned = of_type(events, CallAbandoned)[0]
    assert (abandoned.queue, abandoned.caller_number, abandoned.position) == ("support", "13800138000", 1)
    assert abandoned.wait_seconds == pytest.approx(4.0, abs=0.1)  # QueueCallerAbandon HoldTime: 4
    summary = only_ended(events)
    assert (summary.outcome, summary.reason, summary.answered_by) == ("abandoned", "caller_hangup", None)
    assert [(a.agent, a.result) for a in summary.agents] == [("agent1001", "cancelled")]
    assert summary.agents[0].ring_seconds == pytest.approx(4.0, abs=0.1)
    assert summary.talk_seconds == 0.0
    assert summary.hangup_side is None


def test_03_click_to_dial_is_outbound_with_our_variables() -> None:
    _, events = replay(SHARED_CAPTURES / "03-click-to-dial-originate.ami")
    ringing, answered, summary = call_events(events)
    assert isinstance(ringing, AgentRinging)
    assert (ringing.agent, ringing.via, ringing.direction, ringing.caller_number) == (
        "agent1001",
        "click_to_dial",
        "outbound",
        "13800138000",
    )
    assert isinstance(answered, CallAnswered)
    assert (answered.agent, answered.first) == ("agent1001", True)
    assert isinstance(summary, CallEnded)
    assert (summary.direction, summary.outcome) == ("outbound", "answered")
    assert (summary.caller_number, summary.caller_name) == ("4008001234", "ACME Support")
    assert (summary.callee_number, summary.customer_number, summary.dnis) == ("13800138000", "13800138000", None)
    assert summary.variables == {"CTI_AGENT": "1001", "CTI_TICKET": "T-20261124-0001"}
    assert summary.answered_by == "agent1001"
    assert [(a.agent, a.via, a.result) for a in summary.agents] == [("agent1001", "click_to_dial", "answered")]
    assert [leg.role for leg in summary.legs] == ["agent", "customer"]
    assert summary.talk_seconds == pytest.approx(3.0, abs=0.1)
    assert summary.hangup_side == "agent"


def test_04_recording_file_comes_from_the_channel_variables() -> None:
    _, events = replay(SHARED_CAPTURES / "04-inbound-mixmonitor.ami")
    assert [type(e) for e in call_events(events)] == [CallArrived, CallOffered, AgentRinging, CallAnswered, CallEnded]
    summary = only_ended(events)
    assert summary.recording_file == "/opt/ast/spool/monitor/1795528258.9.wav"
    assert summary.linkedid == "1795528258.9"  # the file is named by the customer channel's Uniqueid
    assert (summary.dnis, summary.outcome) == ("4008001235", "answered")
    assert summary.talk_seconds == pytest.approx(5.0, abs=0.1)


def test_05b_blind_transfer_keeps_the_call_and_adds_the_agent() -> None:
    _, events = replay(SHARED_CAPTURES / "05b-blind-transfer-ami.ami")
    shown = [(type(e).__name__, getattr(e, "agent", None)) for e in call_events(events)]
    assert shown == [
        ("CallArrived", None),
        ("CallOffered", None),
        ("AgentRinging", "agent1002"),  # ringall: both agents ring, agent1001 answers
        ("AgentRinging", "agent1001"),
        ("CallAnswered", "agent1001"),
        ("CallTransferred", None),
        ("AgentRinging", "agent1002"),
        ("CallAnswered", "agent1002"),
        ("CallEnded", None),
    ]
    transferred = of_type(events, CallTransferred)[0]
    assert (transferred.kind, transferred.from_agent, transferred.to_target) == ("blind", "agent1001", "1002@agents")
    answers = of_type(events, CallAnswered)
    assert [a.first for a in answers] == [True, False]
    assert answers[1].wait_seconds == pytest.approx(2.06, abs=0.05)  # from the transfer to the answer
    summary = only_ended(events)
    assert (summary.outcome, summary.answered_by) == ("answered", "agent1001")
    assert summary.answered_agents == ("agent1001", "agent1002")
    assert [(a.agent, a.via, a.result) for a in summary.agents] == [
        ("agent1002", "queue", "cancelled"),
        ("agent1001", "queue", "answered"),
        ("agent1002", "transfer", "answered"),
    ]
    (transfer,) = summary.transfers
    assert (transfer.kind, transfer.from_agent, transfer.to_agent) == ("blind", "agent1001", "agent1002")
    assert summary.talk_seconds == pytest.approx(8.07, abs=0.1)


def test_08_pause_with_reason_and_dynamic_members() -> None:
    _, events = replay(SHARED_CAPTURES / "08-queue-pause-add-remove.ami")
    states = [(e.agent, e.state, e.pause_reason, e.queues, e.paused_queues) for e in of_type(events, AgentStateChanged)]
    assert states[:3] == [
        ("agent1001", "ready", None, ("billing",), ()),  # QueueStatus: static member
        ("agent1002", "ready", None, ("billing",), ()),  # QueueAdd: dynamic member
        ("agent1001", "paused", "Lunch break", ("billing",), ("billing",)),
    ]
    assert ("agent1001", "ready", None, ("billing",), ()) in states[3:]  # QueuePause Paused=false
    assert states[-1] == ("agent1002", "ready", None, ("support",), ())  # QueueRemove from billing
    agent1002 = [s[1] for s in states if s[0] == "agent1002"]
    assert agent1002 == ["ready", "ringing", "ringing", "on_call", "ready", "ready"]
    summary = only_ended(events)
    assert (summary.queue, summary.answered_by, summary.dnis) == ("billing", "agent1002", "4008001237")
    assert [a.agent for a in summary.agents] == ["agent1002"]  # paused agent1001 was never rung


def test_10_burst_of_twenty_calls() -> None:
    tracker, events = replay(SHARED_CAPTURES / "10-burst-20-calls.ami")
    summaries = of_type(events, CallEnded)
    assert len(summaries) == 20
    assert len({s.linkedid for s in summaries}) == 20
    assert {s.linkedid for s in of_type(events, CallOffered)} == {s.linkedid for s in summaries}
    assert Counter(s.outcome for s in summaries) == {"answered": 12, "abandoned": 8}
    assert Counter(s.answered_by for s in summaries if s.outcome == "answered") == {"agent1001": 6, "agent1002": 6}
    assert len(of_type(events, CallAbandoned)) == 8
    assert len(of_type(events, CallAnswered)) == 12
    for summary in summaries:
        # The Originate's Local pair is the caller of one call, never a call or an agent of its own.
        assert [leg.role for leg in summary.legs][:2] == ["local", "local"]
        assert all(leg.role == "agent" for leg in summary.legs[2:])
        assert summary.direction == "inbound"
        seq = summary.variables["CTI_SEQ"]
        assert summary.caller_number == f"139000000{int(seq):02d}"
        assert summary.caller_name == f"Burst Caller {int(seq):02d}"
    assert sum(len(s.legs) for s in summaries) == 55  # 40 Local halves + 15 agent channels
    assert tracker.live_calls == 0
    assert tracker.snapshot().calls == ()


def test_snapshot_shows_live_calls_and_agents_mid_capture() -> None:
    messages = parse(SHARED_CAPTURES / "05b-blind-transfer-ami.ami")
    cut = next(i for i, m in enumerate(messages) if m.get("Event") == "BlindTransfer")
    tracker, _ = replay(messages[:cut])
    snap = tracker.snapshot()
    (call,) = snap.calls
    assert (call.linkedid, call.status, call.direction, call.answered_by) == (
        "1795528293.19",
        "talking",
        "inbound",
        "agent1001",
    )
    assert call.agents == ("agent1001",)
    states = {a.agent: a.state for a in snap.agents}
    assert states == {"agent1001": "on_call", "agent1002": "ready"}
