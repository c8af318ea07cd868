"""The call tracker on synthetic event sequences, for what the recorded captures cannot show.

Every event is built with the field shapes of the real captures (channel snapshots as in 01/12,
AttendedTransfer's prefixes as in 12, Pickup-less bridging as in 13); each test says which real
behaviour it stands in for.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from cti.calls.events import (
    AgentRinging,
    AgentStateChanged,
    CallAnswered,
    CallEnded,
    CallOffered,
    CallTransferred,
    DomainEvent,
)
from cti.calls.tracker import CallTracker
from tests.unit.test_call_tracker import (
    SHARED_CAPTURES,
    all_captures,
    call_events,
    clocked,
    of_type,
    only_ended,
    parse,
    replay,
)

Message = dict[str, str]


class Pbx:
    """Builds AMI events shaped like Asterisk 22's, feeds them to a tracker at a moving clock."""

    def __init__(self, tracker: CallTracker | None = None, start: float = 1_795_600_000.0) -> None:
        self.tracker = tracker or CallTracker()
        self.now = start
        self.events: list[DomainEvent] = []
        self.channels: dict[str, Message] = {}
        self._seq = itertools.count()
        self._chan_seq = itertools.count()

    def tick(self, seconds: float) -> None:
        self.now += seconds

    def feed(self, event: str, **fields: str) -> list[DomainEvent]:
        msg = {"Event": event, **fields}
        out = self.tracker.feed(msg, self.now)
        self.events.extend(out)
        return out

    def snap(self, name: str, prefix: str = "") -> Message:
        return {prefix + k: v for k, v in self.channels[name].items()}

    def new(
        self, name: str, tech: str, linked_to: str | None = None, *, number: str, cid_name: str, state: str = "0"
    ) -> str:
        uid = f"{int(self.now)}.{next(self._seq)}"
        linkedid = self.channels[linked_to]["Linkedid"] if linked_to else uid
        self.channels[name] = {
            "Channel": f"{tech}-{next(self._chan_seq):08x}",
            "ChannelState": state,
            "CallerIDNum": number,
            "CallerIDName": cid_name,
            "ConnectedLineNum": "<unknown>",
            "Context": "agents",
            "Exten": "s",
            "Uniqueid": uid,
            "Linkedid": linkedid,
        }
        self.feed("Newchannel", **self.snap(name))
        return uid

    def state(self, name: str, state: str) -> None:
        self.channels[name]["ChannelState"] = state
        self.feed("Newstate", **self.snap(name))

    def dial(self, src: str | None, dest: str, status: str | None = None, exten: str = "s") -> None:
        fields = self.snap(dest, "Dest")
        if src is not None:
            fields |= self.snap(src) | {"Exten": exten}
        if status is None:
            self.feed("DialBegin", **fields, DialString=self.channels[dest]["Channel"].rsplit("-", 1)[0])
        else:
            self.feed("DialEnd", **fields, DialStatus=status)

    def bridge(self, bridge_id: str, *names: str, enter: bool = True) -> None:
        for name in names:
            self.feed(
                "BridgeEnter" if enter else "BridgeLeave",
                BridgeUniqueid=bridge_id,
                BridgeType="basic",
                **self.snap(name),
            )

    def hangup(self, name: str, cause: str = "16", request: bool = False) -> None:
        if request:
            self.feed("HangupRequest", **self.snap(name))
        self.feed("Hangup", **self.snap(name), Cause=cause, **{"Cause-txt": "Normal Clearing"})

    def relink(self, name: str, to: str) -> None:
        """Asterisk gave the channel another call's Linkedid (bridging keeps the oldest, 13)."""
        self.channels[name]["Linkedid"] = self.channels[to]["Linkedid"]


def queue_call_answered(pbx: Pbx, agent: str = "agent1001") -> None:
    """A customer through queue member-service to ``agent``, answered (the shape of 01)."""
    pbx.new("cust", "PJSIP/cust1", number="13800138001", cid_name="Customer 1", state="4")
    pbx.feed("VarSet", **pbx.snap("cust"), Variable="__CTI_DNIS", Value="4008001234")
    pbx.state("cust", "6")
    pbx.feed("QueueCallerJoin", **pbx.snap("cust"), Queue="member-service", Position="1", Count="1")
    pbx.new("a1", f"PJSIP/{agent}", "cust", number="1001", cid_name="Agent 1001")
    called = pbx.snap("cust") | pbx.snap("a1", "Dest")
    pbx.feed("AgentCalled", **called, Queue="member-service", Interface=f"PJSIP/{agent}", MemberName=agent)
    pbx.dial("cust", "a1")
    pbx.state("a1", "5")
    pbx.tick(2)
    pbx.state("a1", "6")
    pbx.dial("cust", "a1", "ANSWER")
    pbx.feed("QueueCallerLeave", **pbx.snap("cust"), Queue="member-service", Position="1", Count="0")
    pbx.feed("AgentConnect", **called, Queue="member-service", Interface=f"PJSIP/{agent}", HoldTime="2", RingTime="2")
    pbx.bridge("b-main", "a1", "cust")


# ------------------------------------------------------------------------------- transfers
@pytest.mark.parametrize("merge_seen_first", [False, True], ids=["transfer-event-first", "bridge-merge-first"])
def test_phone_attended_transfer_merges_the_consultation_call(merge_seen_first: bool) -> None:
    """REFER with Replaces from agent1001's phone (baresip 1.1.0 cannot do it, so no capture): the
    consultation call has its own Linkedid; after the transfer the customer talks to agent1002."""
    pbx = Pbx()
    queue_call_answered(pbx)
    pbx.tick(5)
    pbx.feed("Hold", **pbx.snap("a1"))
    consult = pbx.new("a1b", "PJSIP/agent1001", number="1001", cid_name="Agent 1001", state="4")
    pbx.new("a2", "PJSIP/agent1002", "a1b", number="1002", cid_name="Agent 1002")
    pbx.dial("a1b", "a2", exten="1002")
    pbx.state("a2", "5")
    pbx.tick(3)
    pbx.state("a2", "6")
    pbx.state("a1b", "6")
    pbx.dial("a1b", "a2", "ANSWER", exten="1002")
    pbx.bridge("b-consult", "a2", "a1b")
    pbx.tick(10)
    if merge_seen_first:  # the customer takes agent1001's place in agent1002's bridge (a swap) first
        pbx.bridge("b-consult", "a1b", enter=False)
        pbx.bridge("b-main", "cust", enter=False)
        pbx.bridge("b-consult", "cust")
    transfer = {"Result": "Success", "IsExternal": "Yes", "DestType": "Bridge", "DestBridgeUniqueid": "b-consult"}
    transfer |= pbx.snap("a1", "OrigTransferer") | pbx.snap("a1b", "SecondTransferer")
    transfer |= pbx.snap("cust", "Transferee") | pbx.snap("a2", "TransferTarget")
    pbx.feed("AttendedTransfer", **transfer)
    pbx.relink("a2", "cust")
    if not merge_seen_first:
        pbx.bridge("b-main", "a2")
    pbx.hangup("a1b")
    pbx.hangup("a1")
    pbx.tick(20)
    pbx.hangup("cust", request=True)
    pbx.hangup("a2")

    main_id, consult_id = pbx.channels["cust"]["Linkedid"], consult
    transferred = of_type(pbx.events, CallTransferred)[0]
    assert (transferred.linkedid, transferred.kind, transferred.from_agent, transferred.to_agent) == (
        main_id,
        "attended",
        "agent1001",
        "agent1002",
    )
    assert transferred.merged_linkedid == consult_id
    summaries = {e.linkedid: e for e in of_type(pbx.events, CallEnded)}
    assert set(summaries) == {main_id, consult_id}  # each ends exactly once
    consultation, main = summaries[consult_id], summaries[main_id]
    assert (consultation.merged_into, consultation.direction, consultation.outcome) == (main_id, "internal", "answered")
    assert consultation.answered_by == "agent1002"
    assert (main.outcome, main.answered_by, main.answered_agents) == (
        "answered",
        "agent1001",
        ("agent1001", "agent1002"),
    )
    assert [(a.agent, a.via) for a in main.agents] == [("agent1001", "queue"), ("agent1002", "transfer")]
    assert [(t.kind, t.from_agent, t.to_agent) for t in main.transfers] == [("attended", "agent1001", "agent1002")]
    assert main.talk_seconds == pytest.approx(38.0)
    assert main.hangup_side == "customer"
    assert pbx.tracker.live_calls == 0
    assert {a.agent: a.state for a in pbx.tracker.snapshot().agents} == {
        "agent1001": "logged_out",
        "agent1002": "logged_out",
    }


# ------------------------------------------------------------------------------- direct calls
@pytest.mark.parametrize(
    ("status", "outcome", "reason"),
    [("ANSWER", "answered", None), ("CANCEL", "no_answer", "cancelled"), ("BUSY", "busy", "busy")],
)
def test_customer_dialling_an_agent_directly(status: str, outcome: str, reason: str | None) -> None:
    """A DID routed to one agent's phone with Dial() instead of a queue."""
    pbx = Pbx()
    pbx.new("cust", "PJSIP/cust1", number="13800138001", cid_name="Customer 1", state="4")
    pbx.channels["cust"]["Exten"] = "4008009999"
    pbx.new("a1", "PJSIP/agent1001", "cust", number="1001", cid_name="Agent 1001")
    pbx.dial("cust", "a1", exten="4008009999")
    pbx.state("a1", "5")
    pbx.tick(4)
    if status == "ANSWER":
        pbx.state("a1", "6")
    pbx.dial("cust", "a1", status, exten="4008009999")
    pbx.tick(6)
    pbx.hangup("cust", request=True)
    pbx.hangup("a1")
    ringing = of_type(pbx.events, AgentRinging)[0]
    assert (ringing.agent, ringing.via, ringing.direction, ringing.caller_number) == (
        "agent1001",
        "direct",
        "inbound",
        "13800138001",
    )
    summary = only_ended(pbx.events)
    assert (summary.direction, summary.outcome, summary.reason, summary.queue) == ("inbound", outcome, reason, None)
    assert (summary.caller_number, summary.callee_number) == ("13800138001", "4008009999")
    assert summary.answered_by == ("agent1001" if status == "ANSWER" else None)
    assert len(of_type(pbx.events, CallAnswered)) == (1 if status == "ANSWER" else 0)


def test_pickup_by_another_agent_is_seen_through_the_bridge() -> None:
    """Call pickup sends no Dial/Agent event for the picker: an agent's channel bridged with the
    customer connects it (the basic bridge merges the picker's own Linkedid, as in 13)."""
    pbx = Pbx()
    pbx.new("cust", "PJSIP/cust1", number="13800138001", cid_name="Customer 1", state="6")
    pbx.feed("QueueCallerJoin", **pbx.snap("cust"), Queue="member-service", Position="1", Count="1")
    pbx.new("a1", "PJSIP/agent1001", "cust", number="1001", cid_name="Agent 1001")
    pbx.dial("cust", "a1")
    pbx.tick(3)
    picker = pbx.new("a2", "PJSIP/agent1002", number="1002", cid_name="Agent 1002", state="4")
    pbx.hangup("a1", cause="26")
    pbx.feed("QueueCallerLeave", **pbx.snap("cust"), Queue="member-service", Position="1", Count="0")
    pbx.state("a2", "6")
    pbx.bridge("b-pick", "a2", "cust")
    pbx.tick(30)
    pbx.hangup("a2", request=True)
    pbx.hangup("cust")
    answered = of_type(pbx.events, CallAnswered)
    assert [(a.agent, a.linkedid, a.first) for a in answered] == [("agent1002", pbx.channels["cust"]["Linkedid"], True)]
    summaries = {e.linkedid: e for e in of_type(pbx.events, CallEnded)}
    assert summaries[picker].merged_into == pbx.channels["cust"]["Linkedid"]
    main = summaries[pbx.channels["cust"]["Linkedid"]]
    assert (main.outcome, main.answered_by, main.talk_seconds) == ("answered", "agent1002", pytest.approx(30.0))
    assert [(a.agent, a.result) for a in main.agents] == [("agent1001", "cancelled"), ("agent1002", "answered")]


# ------------------------------------------------------------------------------- agents
def test_wrap_up_after_a_queue_call_ends_by_the_clock() -> None:
    pbx = Pbx(CallTracker(wrapup_seconds={"member-service": 5.0}))
    queue_call_answered(pbx)
    pbx.tick(10)
    pbx.hangup("cust", request=True)
    pbx.hangup("a1")
    states = [e.state for e in of_type(pbx.events, AgentStateChanged)]
    assert states[-1] == "wrap_up"
    assert pbx.tracker.tick(pbx.now + 4.9) == []
    (ready,) = pbx.tracker.tick(pbx.now + 5.0)
    assert isinstance(ready, AgentStateChanged)
    assert (ready.state, ready.previous_state, ready.at) == ("logged_out", "wrap_up", pbx.now + 5.0)


def test_member_wrapup_time_wins_when_longer_and_feed_expires_it_too() -> None:
    pbx = Pbx(CallTracker(wrapup_seconds=2.0))
    member = {"Queue": "member-service", "Interface": "PJSIP/agent1001", "MemberName": "Agent 1001"}
    pbx.feed("QueueMemberStatus", **member, Status="1", Paused="0", Wrapuptime="8", Membership="static")
    queue_call_answered(pbx)
    pbx.hangup("cust")
    pbx.hangup("a1")
    assert pbx.tracker.snapshot(pbx.now + 7).agents[0].state == "wrap_up"
    pbx.tick(8)
    out = pbx.feed("TestEvent")  # ignored event, but the clock moved: wrap-up is over
    assert out == []
    out = pbx.feed("Newexten")
    out = pbx.feed("QueueMemberStatus", **member, Status="1", Paused="0", Wrapuptime="8", Membership="static")
    assert [e.state for e in of_type(pbx.events, AgentStateChanged)][-1] == "ready"


def test_login_pause_unavailable_and_logout() -> None:
    pbx = Pbx()
    base = {"Interface": "PJSIP/webrtc2001", "MemberName": "Alice", "Membership": "dynamic", "Wrapuptime": "0"}
    pbx.feed("QueueMemberAdded", **base, Queue="member-service", Status="1", Paused="0")
    pbx.feed("QueueMemberAdded", **base, Queue="vip", Status="1", Paused="0")
    pbx.feed("QueueMemberPause", **base, Queue="vip", Status="1", Paused="1", PausedReason="培训")
    pbx.feed("QueueMemberStatus", **base, Queue="vip", Status="5", Paused="1", PausedReason="培训")
    pbx.feed("QueueMemberRemoved", **base, Queue="vip", Status="5")
    pbx.feed("QueueMemberRemoved", **base, Queue="member-service", Status="5")
    shown = [
        (e.state, e.queues, e.paused_queues, e.pause_reason, e.available)
        for e in of_type(pbx.events, AgentStateChanged)
    ]
    assert shown == [
        ("ready", ("member-service",), (), None, True),
        ("ready", ("member-service", "vip"), (), None, True),
        ("paused", ("member-service", "vip"), ("vip",), "培训", True),
        ("paused", ("member-service", "vip"), ("vip",), "培训", False),  # the browser phone went away
        ("ready", ("member-service",), (), None, False),
        ("logged_out", (), (), None, False),
    ]
    assert {e.agent for e in of_type(pbx.events, AgentStateChanged)} == {"webrtc2001"}


def test_a_local_channel_queue_member_is_an_agent() -> None:
    """Load agents are queue members like Local/5@load-agent/n (asterisk-config): AgentCalled makes
    their Local channel an agent's, other Local channels stay neither agent nor customer."""
    pbx = Pbx()
    pbx.new("cust", "PJSIP/cust1", number="13800138001", cid_name="Customer 1", state="6")
    pbx.feed("QueueCallerJoin", **pbx.snap("cust"), Queue="member-service", Position="1", Count="1")
    pbx.new("load", "Local/5@load-agent", "cust", number="<unknown>", cid_name="<unknown>")
    called = pbx.snap("cust") | pbx.snap("load", "Dest")
    pbx.feed("AgentCalled", **called, Queue="member-service", Interface="Local/5@load-agent/n", MemberName="load 1")
    pbx.dial("cust", "load")
    pbx.state("load", "6")
    pbx.feed("AgentConnect", **called, Queue="member-service", Interface="Local/5@load-agent/n", HoldTime="0")
    pbx.tick(5)
    pbx.hangup("load")
    pbx.hangup("cust")
    summary = only_ended(pbx.events)
    assert (summary.answered_by, summary.outcome) == ("Local/5@load-agent/n", "answered")
    assert [leg.role for leg in summary.legs] == ["customer", "agent"]


# ------------------------------------------------------------------------------- robustness
COMPLETE_CAPTURES = [p for p in all_captures() if replay(p)[0].live_calls == 0]


@pytest.mark.parametrize("path", COMPLETE_CAPTURES, ids=lambda p: p.name)
def test_replaying_a_whole_capture_again_resurrects_no_call(path: Path) -> None:
    """Late or repeated events about ended legs and calls are ignored (bounded memory of them)."""
    tracker, _ = replay(path)
    _, again = replay(path, tracker=tracker)
    assert call_events(again) == []
    assert tracker.live_calls == 0


def test_a_tracker_started_mid_call_adopts_the_channels_it_hears_about() -> None:
    """Events before Newchannel (the CTI server came up during the call, before its resync)."""
    messages = parse(SHARED_CAPTURES / "05b-blind-transfer-ami.ami")
    cut = next(i for i, m in enumerate(messages) if m.get("Event") == "AgentConnect") + 1
    tracker, events = replay(messages[cut:])
    summary = only_ended(events)
    assert (summary.linkedid, summary.outcome) == ("1795528293.19", "answered")
    # agent1001's answer was missed, but its channel's BridgeEnter with the customer shows the connection.
    assert (summary.answered_by, summary.answered_agents) == ("agent1001", ("agent1001", "agent1002"))
    assert [t.to_agent for t in summary.transfers] == ["agent1002"]
    assert tracker.live_calls == 0


def test_unknown_channel_ids_are_not_calls() -> None:
    tracker = CallTracker()
    globals_ = {"Event": "VarSet", "Channel": "none", "Uniqueid": "none", "Variable": "CTI_X", "Value": "1"}
    assert tracker.feed(globals_, 1.0) == []
    assert tracker.live_calls == 0


def test_shutdown_ends_whatever_is_left() -> None:
    pbx = Pbx()
    queue_call_answered(pbx)
    pbx.feed("Shutdown", Shutdown="Uncleanly", Restart="False")
    summary = only_ended(pbx.events)
    assert (summary.outcome, summary.reason) == ("lost", "pbx_shutdown")
    assert pbx.tracker.live_calls == 0


def test_memory_stays_bounded_over_many_calls() -> None:
    tracker = CallTracker(recent_limit=500)
    timeline = clocked(parse(SHARED_CAPTURES / "10-burst-20-calls.ami"))
    ended = 0
    for run in range(30):
        for now, msg in timeline:
            if msg.get("Event") == "FullyBooted":
                continue
            renamed = {
                k: (f"{v}.{run}" if k.endswith(("Uniqueid", "Linkedid", "UniqueID")) else v) for k, v in msg.items()
            }
            ended += len(of_type(tracker.feed(renamed, now + run * 100), CallEnded))
    assert ended == 600
    assert tracker.live_calls == 0
    assert len(tracker._legs) == len(tracker._bridges) == 0
    assert len(tracker._ended_legs) <= 500 and len(tracker._ended_calls) <= 500
    assert len(tracker._originates) <= 1000


def _burst_offers() -> Iterator[CallOffered]:
    _, events = replay(SHARED_CAPTURES / "10-burst-20-calls.ami")
    return iter(of_type(events, CallOffered))


def test_queue_positions_follow_the_burst() -> None:
    assert [o.position for o in _burst_offers()] == list(range(1, 21))
