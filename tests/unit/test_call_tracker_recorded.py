"""The call tracker on the captures recorded for this repository (tests/fixtures/ami, README there):
the product's own dialplan on a real Asterisk 22.10, for the scenarios the shared captures lack."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from cti.ami.protocol import AmiMessage
from cti.calls.events import (
    AgentRinging,
    AgentStateChanged,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallMissed,
    CallOffered,
    CallTransferred,
    DomainEvent,
)
from cti.calls.tracker import CallTracker
from tests.unit.test_call_tracker import OWN_CAPTURES, call_events, clocked, of_type, only_ended, parse, replay

pytestmark = pytest.mark.skipif(not any(OWN_CAPTURES.glob("*.ami")), reason="no recorded captures")


def capture(name: str) -> Path:
    return OWN_CAPTURES / f"{name}.ami"


def kinds(events: list[DomainEvent]) -> list[str]:
    return [type(e).__name__ for e in call_events(events)]


def test_11_ring_no_answer_then_queue_timeout_is_a_missed_call_not_an_abandon() -> None:
    """app_queue sends QueueCallerAbandon on its own timeout too; the caller had not hung up."""
    _, events = replay(capture("11-queue-timeout-ring-no-answer"))
    assert kinds(events) == ["CallArrived", "CallOffered", "AgentRinging", "AgentRinging", "CallMissed", "CallEnded"]
    assert of_type(events, CallAbandoned) == []
    missed = of_type(events, CallMissed)[0]
    assert (missed.reason, missed.queue, missed.dnis, missed.caller_number) == (
        "queue_timeout",
        "vip",
        "4008001235",
        "13800138001",
    )
    assert missed.wait_seconds == pytest.approx(12.0, abs=0.1)  # QUEUE_MAX_WAIT of the recording
    summary = only_ended(events)
    assert (summary.outcome, summary.reason, summary.queue, summary.answered_by) == (
        "no_answer",
        "queue_timeout",
        "vip",
        None,
    )
    assert [(a.agent, a.result) for a in summary.agents] == [("agent1002", "no_answer"), ("agent1002", "no_answer")]
    assert [a.ring_seconds for a in summary.agents] == [pytest.approx(4.0, abs=0.05)] * 2  # ring timeout 4 s
    assert summary.recording_file is not None and summary.recording_file.endswith(f"/{summary.linkedid}.wav")
    assert summary.variables["CTI_OUTCOME"] == "queue-timeout"


def test_11_without_the_dialplans_signals_still_reports_the_missed_call() -> None:
    """A site whose dialplan sends no CtiQueueTimeout (like the shared captures' reference one)."""
    messages = [
        m
        for m in parse(capture("11-queue-timeout-ring-no-answer"))
        if m.get("Event") != "UserEvent" and m.get("Variable") != "CTI_OUTCOME"
    ]
    _, events = replay(messages)
    assert kinds(events) == ["CallArrived", "CallOffered", "AgentRinging", "AgentRinging", "CallMissed", "CallEnded"]
    assert of_type(events, CallMissed)[0].reason == "queue_exit"
    assert (only_ended(events).outcome, only_ended(events).reason) == ("no_answer", "queue_exit")


def test_12_attended_transfer_through_the_atxfer_feature() -> None:
    """Atxfer dials the target through Local/1002@agents: one Linkedid throughout, Local halves are
    neither a call nor an agent; the consultation rings agent1002 as a transfer."""
    _, events = replay(capture("12-attended-transfer-atxfer"))
    shown = [(type(e).__name__, getattr(e, "agent", None), getattr(e, "via", None)) for e in call_events(events)]
    assert shown == [
        ("CallArrived", None, None),
        ("CallOffered", None, None),
        ("AgentRinging", "agent1002", "queue"),
        ("AgentRinging", "agent1001", "queue"),
        ("CallAnswered", "agent1001", None),
        ("AgentRinging", "agent1002", "transfer"),
        ("CallAnswered", "agent1002", None),  # the consultation: agent1002 talks to agent1001 first
        ("CallTransferred", None, None),
        ("CallEnded", None, None),
    ]
    transferred = of_type(events, CallTransferred)[0]
    assert (transferred.kind, transferred.from_agent, transferred.to_agent, transferred.to_target) == (
        "attended",
        "agent1001",
        "agent1002",
        "1002@agents",
    )
    assert transferred.merged_linkedid is None
    summary = only_ended(events)
    assert (summary.outcome, summary.answered_by, summary.answered_agents) == (
        "answered",
        "agent1001",
        ("agent1001", "agent1002"),
    )
    assert [(a.agent, a.via, a.result) for a in summary.agents] == [
        ("agent1002", "queue", "cancelled"),
        ("agent1001", "queue", "answered"),
        ("agent1002", "transfer", "answered"),
    ]
    assert [leg.role for leg in summary.legs].count("local") == 2
    assert summary.hangup_side == "customer"  # agent1001's hang-up only completed the transfer
    assert [t.kind for t in summary.transfers] == ["attended"]


def test_13_bridging_two_calls_merges_them_into_the_older_one() -> None:
    _, events = replay(capture("13-bridge-joins-two-calls"))
    summaries = of_type(events, CallEnded)
    echo, customer = summaries
    assert echo.merged_into == customer.linkedid
    assert (echo.direction, echo.reason, echo.caller_number) == ("internal", "merged", "1002")
    assert [a.agent for a in echo.agents] == ["agent1002"]  # a closed copy: who took part in it
    assert customer.merged_into is None
    assert (customer.outcome, customer.answered_agents) == ("answered", ("agent1001", "agent1002"))
    assert customer.agents[-1].via == "transfer"
    answered = of_type(events, CallAnswered)
    assert [(a.agent, a.first, a.linkedid) for a in answered] == [
        ("agent1001", True, customer.linkedid),
        ("agent1002", False, customer.linkedid),
    ]
    assert len({s.linkedid for s in summaries}) == 2


def test_14_internal_call_between_agents() -> None:
    _, events = replay(capture("14-internal-agent-to-agent"))
    assert kinds(events) == ["AgentRinging", "CallAnswered", "CallEnded"]
    ringing = of_type(events, AgentRinging)[0]
    assert (ringing.agent, ringing.via, ringing.direction, ringing.caller_number) == (
        "agent1002",
        "direct",
        "internal",
        "1001",
    )
    summary = only_ended(events)
    assert (summary.direction, summary.outcome, summary.answered_by) == ("internal", "answered", "agent1002")
    assert (summary.caller_number, summary.callee_number, summary.customer_number) == ("1001", "1002", None)
    assert [(a.agent, a.via, a.result) for a in summary.agents] == [
        ("agent1001", "outbound", "answered"),
        ("agent1002", "direct", "answered"),
    ]
    states = [(e.agent, e.state) for e in of_type(events, AgentStateChanged)]
    assert ("agent1001", "on_call") in states  # the calling agent is busy from the first moment
    assert summary.hangup_side == "agent"


def test_15_click_to_dial_customer_busy() -> None:
    _, events = replay(capture("15-click-to-dial-customer-busy"))
    assert kinds(events) == ["AgentRinging", "CallEnded"]
    summary = only_ended(events)
    assert (summary.direction, summary.outcome, summary.reason) == ("outbound", "busy", "busy")
    assert (summary.caller_number, summary.callee_number, summary.customer_number) == (
        "4008001234",
        "13800138001",
        "13800138001",
    )
    assert summary.cti_call_id == "c2d-0015"
    assert (summary.hangup_cause, summary.hangup_cause_text) == (17, "User busy")
    assert summary.recording_file is not None


def test_16_click_to_dial_agent_never_answers() -> None:
    """No DialEnd at all; OriginateResponse Failure (Reason 3, Uniqueid <unknown>) before the Hangup."""
    _, events = replay(capture("16-click-to-dial-agent-no-answer"))
    assert kinds(events) == ["AgentRinging", "CallEnded"]
    summary = only_ended(events)
    assert (summary.direction, summary.outcome, summary.reason) == ("outbound", "failed", "originate_failed:no_answer")
    assert (summary.callee_number, summary.cti_call_id) == ("13800138001", "c2d-0016")
    assert [(a.agent, a.via, a.result) for a in summary.agents] == [("agent1001", "click_to_dial", "no_answer")]
    assert summary.hangup_cause == 19


def test_17_originate_to_an_unregistered_phone_is_logged_as_failed() -> None:
    _, events = replay(capture("17-originate-unregistered-agent"))
    summary = only_ended(events)
    assert summary.linkedid.startswith("originate-")  # no channel, no Uniqueid: named by the ActionID
    assert (summary.direction, summary.outcome, summary.reason) == ("outbound", "failed", "originate_failed:failed")
    assert (summary.callee_number, summary.legs) == ("13800138001", ())
    assert [(a.agent, a.result) for a in summary.agents] == [("agent1003", "failed")]


def test_18_after_hours_call_goes_to_the_callback_queue() -> None:
    tracker, events = replay(capture("18-after-hours"))
    assert kinds(events) == [
        "CallArrived",
        "CallMissed",
        "CallEnded",
    ]  # the line is known before the after-hours branch
    missed = of_type(events, CallMissed)[0]
    assert (missed.reason, missed.queue, missed.dnis, missed.caller_number) == (
        "after_hours",
        "member-service",
        "4008001234",
        "13800138001",
    )
    summary = only_ended(events)
    assert (summary.direction, summary.outcome, summary.reason, summary.queue) == (
        "inbound",
        "no_answer",
        "after_hours",
        None,
    )
    assert tracker.live_calls == 0  # the global Setvar (Channel: none) is not a call


def _session_pair(name: str) -> tuple[CallTracker, list[DomainEvent], list[DomainEvent]]:
    """Feed ``NN-x-during-call`` then ``NN-x-after`` (the next AMI session: its list items go to
    ``resync`` as the CTI server's reconnect does); return the events of each part."""
    tracker, before = replay(next(OWN_CAPTURES.glob(f"{name}-*-during-call.ami")))
    after: list[DomainEvent] = []
    items: list[AmiMessage] = []
    now = 0.0
    for now, msg in clocked(parse(next(OWN_CAPTURES.glob(f"{name}-*-after.ami")))):
        if isinstance(msg, AmiMessage) and msg.is_event and "ActionID" in msg:
            items.append(msg)
        else:
            after.extend(tracker.feed(msg, now))

    def named(kind: str) -> list[Mapping[str, str]]:
        return [m for m in items if m.name == kind]

    after.extend(tracker.resync(named("CoreShowChannel"), named("QueueMember"), named("QueueEntry"), now))
    return tracker, before, after


def test_19_clean_restart_hangs_calls_up_before_it_goes() -> None:
    tracker, before, after = _session_pair("19")
    assert (only_ended(before).outcome, only_ended(before).reason) == ("answered", None)
    assert of_type(after, CallEnded) == []
    assert tracker.live_calls == 0


def test_20_crash_ends_the_live_call_as_lost_when_asterisk_is_back() -> None:
    tracker, before, after = _session_pair("20")
    assert of_type(before, CallEnded) == []
    assert of_type(before, CallAnswered)  # the call was up when Asterisk died
    summary = only_ended(after)
    assert (summary.outcome, summary.reason, summary.answered_by) == ("lost", "pbx_restart", "agent1001")
    assert summary.linkedid == of_type(before, CallOffered)[0].linkedid
    assert tracker.live_calls == 0
    assert {a.agent: a.state for a in tracker.snapshot().agents} == {"agent1001": "ready", "agent1002": "ready"}


def test_21_call_that_ended_while_disconnected_is_lost_on_resync() -> None:
    tracker, before, after = _session_pair("21")
    assert of_type(before, CallEnded) == []
    summary = only_ended(after)
    assert (summary.outcome, summary.reason) == ("lost", "reconnect")  # same Asterisk: no restart
    assert tracker.live_calls == 0
    states = {e.agent: e.state for e in of_type(after, AgentStateChanged)}
    assert states["agent1001"] == "ready"


def _lists(name: str) -> tuple[list[AmiMessage], list[AmiMessage], float]:
    messages = parse(capture(name))
    items = [m for m in messages if m.is_event and "ActionID" in m]
    return items, [m for m in messages if not (m.is_event and "ActionID" in m)], clocked(messages)[-1][0]


def test_22_resync_adopts_calls_found_in_progress() -> None:
    """A tracker that starts (or restarts) mid-traffic rebuilds from CoreShowChannels and QueueStatus:
    an answered call, a caller waiting in a queue while an agent's phone rings, and the agents."""
    items, _, now = _lists("22-resync-lists")

    def named(kind: str) -> list[AmiMessage]:
        return [m for m in items if m.name == kind]

    tracker = CallTracker()
    events = tracker.resync(named("CoreShowChannel"), named("QueueMember"), named("QueueEntry"), now)
    assert kinds(events) == ["CallOffered", "CallAnswered", "AgentRinging"]
    offered = of_type(events, CallOffered)[0]
    assert (offered.queue, offered.caller_number, offered.position) == ("vip", "13800138002", 1)
    answered = of_type(events, CallAnswered)[0]
    assert (answered.agent, answered.queue, answered.first) == ("agent1001", "member-service", True)
    ringing = of_type(events, AgentRinging)[0]
    assert (ringing.agent, ringing.via, ringing.queue, ringing.direction, ringing.caller_number) == (
        "agent1002",
        "queue",
        "vip",
        "inbound",
        "13800138002",
    )
    snap = tracker.snapshot(now)
    assert sorted((c.status, c.queue, c.caller_number) for c in snap.calls) == [
        ("queued", "vip", "13800138002"),
        ("talking", "member-service", "13800138001"),
    ]
    assert {(a.agent, a.state, a.queues) for a in snap.agents} == {
        ("agent1001", "on_call", ("member-service",)),
        ("agent1002", "ringing", ("member-service", "vip")),
    }
    # The adopted calls go on with ordinary events and end once each.
    ended: list[DomainEvent] = []
    for leg in [leg for call in snap.calls for leg in tracker._calls[call.linkedid].legs.values()]:
        ended += tracker.feed({"Event": "Hangup", "Uniqueid": leg.uniqueid, "Cause": "16"}, now + 1)
    assert sorted((e.linkedid, e.outcome) for e in of_type(ended, CallEnded)) == [
        ("1795530967.0", "answered"),
        ("1795530968.3", "no_answer"),
    ]


def test_22_resync_of_a_tracker_that_saw_everything_changes_nothing() -> None:
    items, stream, now = _lists("22-resync-lists")
    tracker, _ = replay(stream)

    def named(kind: str) -> list[AmiMessage]:
        return [m for m in items if m.name == kind]

    assert tracker.resync(named("CoreShowChannel"), named("QueueMember"), named("QueueEntry"), now) == []
    assert tracker.live_calls == 2
