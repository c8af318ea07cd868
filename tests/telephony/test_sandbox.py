"""The Asterisk sandbox itself: AMI, the dialplan of asterisk-config/, real SIP phones, recordings.

These run against a real Asterisk 22 with baresip phones (see conftest.py). Each call test hangs up
what it started; agent1001 is then in wrap-up for a few seconds, so tests that need a specific agent
use one that did not just talk.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest
from asterisk_sandbox import AmiClient, BaresipPhone, Sandbox, SandboxError, _proc_alive, _state_procs

pytestmark = pytest.mark.telephony

MEMBER_SERVICE_DID = "4008001234"
VIP_DID = "4008001235"


async def _answered_queue_call(
    ami: AmiClient, customer: BaresipPhone, agent: BaresipPhone, did: str, queue: str
) -> dict[str, str]:
    """Customer dials ``did``; waits until the queue rings ``agent``, accepts, and returns AgentConnect."""
    since, agent_mark, cust_mark = ami.mark(), agent.mark(), customer.mark()
    await customer.dial(did)
    join = await ami.wait_for_event("QueueCallerJoin", since=since, Queue=queue)
    await agent.wait_for_event("CALL_INCOMING", since=agent_mark)
    await agent.accept()
    connect = await ami.wait_for_event("AgentConnect", since=since, Linkedid=join["Linkedid"])
    await customer.wait_for_event("CALL_ESTABLISHED", since=cust_mark)
    return connect


async def _recording_stats(sandbox: Sandbox, path: Path, wait: float = 5.0) -> dict[str, float]:
    """sox stats of a MixMonitor file once written: MixMonitor closes it shortly after the hangup
    (there is no MixMonitorStop event on hangup to wait for)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            stats = sandbox.sox_stat(path)
            if stats.get("Length (seconds)", 0) > 0.5:
                return stats
        except SandboxError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no usable recording at {path}")
        await asyncio.sleep(0.1)


async def test_ami_login_and_fully_booted(sandbox: Sandbox, ami: AmiClient) -> None:
    assert ami.banner.startswith("Asterisk Call Manager/")
    booted = await ami.wait_for_event("FullyBooted", timeout=5)
    assert booted["Status"] == "Fully Booted"
    a = sandbox.state["ami"]
    with pytest.raises(SandboxError, match="login"):
        await AmiClient.connect(a["host"], a["port"], a["user"], "wrong-secret")
    contacts = await ami.action_list("PJSIPShowContacts")
    assert {c["Endpoint"] for c in contacts} == set(sandbox.phones())


async def test_inbound_call_is_queued_answered_and_recorded(
    sandbox: Sandbox, ami: AmiClient, phones: dict[str, BaresipPhone]
) -> None:
    customer, agent, other_agent = phones["cust1"], phones["agent1001"], phones["agent1002"]
    since, other_mark = ami.mark(), other_agent.mark()
    connect = await _answered_queue_call(ami, customer, agent, MEMBER_SERVICE_DID, "member-service")
    linkedid = connect["Linkedid"]
    assert connect["Interface"] == "PJSIP/agent1001"
    assert connect["Uniqueid"] == linkedid  # the customer leg is the first channel of the call
    # ringall: the other agent rang too, and stopped ringing when agent1001 answered
    await other_agent.wait_for_event("CALL_INCOMING", since=other_mark)
    await other_agent.wait_for_event("CALL_CLOSED", since=other_mark)
    await ami.wait_for_event("BridgeEnter", since=since, Uniqueid=connect["DestUniqueid"])

    dnis = ami.find("VarSet", since=since, Uniqueid=linkedid, Variable="__CTI_DNIS")
    assert dnis and dnis[0]["Value"] == MEMBER_SERVICE_DID
    # the filtered CTI user does not get dialplan noise
    assert not ami.find("Newexten", since=since)
    assert not [
        e
        for e in ami.events[since:]
        if e["Event"] == "VarSet" and "CTI_" not in e["Variable"] and e["Variable"] != "MIXMONITOR_FILENAME"
    ]

    await asyncio.sleep(1.5)  # talk: both phones send their tone
    await customer.hangup()
    cdr = await ami.wait_for_event("Cdr", since=since, UniqueID=linkedid, Disposition="ANSWERED")
    await ami.wait_for_event("Hangup", since=since, Uniqueid=linkedid)
    recfile = cdr["RecordingFile"]
    assert recfile == f"{sandbox.state['recordings_dir_chroot']}/{linkedid}.wav"
    stats = await _recording_stats(sandbox, sandbox.host_path(recfile))
    assert stats["RMS amplitude"] > 0.01, stats


async def test_vip_line_goes_to_vip_queue(sandbox: Sandbox, ami: AmiClient, phones: dict[str, BaresipPhone]) -> None:
    since = ami.mark()
    connect = await _answered_queue_call(ami, phones["cust2"], phones["agent1002"], VIP_DID, "vip")
    assert connect["Queue"] == "vip"
    assert connect["Interface"] == "PJSIP/agent1002"
    join = ami.find("QueueCallerJoin", since=since, Linkedid=connect["Linkedid"])
    assert [j["Queue"] for j in join] == ["vip"]

    # DTMF from the phone reaches Asterisk (DTMF events are filtered for the CTI user: use the raw one)
    async with await sandbox.ami(raw=True) as raw:
        await phones["cust2"].send_dtmf("5")
        await raw.wait_for_event("DTMFEnd", Digit="5", Direction="Received", Uniqueid=connect["Uniqueid"])

    await phones["agent1002"].hangup()
    await ami.wait_for_event("AgentComplete", since=since, Linkedid=connect["Linkedid"])


async def test_unanswered_call_takes_the_queue_timeout_branch(
    sandbox: Sandbox, ami: AmiClient, phones: dict[str, BaresipPhone]
) -> None:
    """Nobody accepts: after CTI_QUEUE_MAX_WAIT (a global, shortened here) the caller leaves the queue
    and the dialplan reports CtiQueueTimeout (what the missed-call callbacks start from)."""
    await ami.action("Setvar", {"Variable": "CTI_QUEUE_MAX_WAIT", "Value": "1"})
    try:
        since = ami.mark()
        await phones["cust1"].dial(VIP_DID)
        event = await ami.wait_for_event("UserEvent", since=since, UserEvent="CtiQueueTimeout")
        assert event["Queue"] == "vip"
        assert ami.find("QueueCallerLeave", since=since, Uniqueid=event["Uniqueid"])
        assert not ami.find("AgentConnect", since=since)
        outcome = ami.find("VarSet", since=since, Uniqueid=event["Uniqueid"], Variable="CTI_OUTCOME")
        assert [o["Value"] for o in outcome] == ["queue-timeout"]
    finally:
        await ami.action(
            "Setvar", {"Variable": "CTI_QUEUE_MAX_WAIT", "Value": str(sandbox.state["settings"]["queue_max_wait"])}
        )


async def test_after_hours_branch_sends_user_event(
    sandbox: Sandbox, ami: AmiClient, phones: dict[str, BaresipPhone]
) -> None:
    resp = await ami.action("Setvar", {"Variable": "CTI_FORCE_AFTER_HOURS", "Value": "1"})
    assert resp["Response"] == "Success"
    try:
        since = ami.mark()
        await phones["cust1"].dial(MEMBER_SERVICE_DID)
        event = await ami.wait_for_event("UserEvent", since=since, UserEvent="CtiAfterHours")
        assert event["DNIS"] == MEMBER_SERVICE_DID
        assert event["Queue"] == "member-service"
        assert event["CallerIDNum"] == sandbox.state["endpoints"]["cust1"]["number"]
        assert not ami.find("QueueCallerJoin", since=since)
    finally:
        await ami.action("Setvar", {"Variable": "CTI_FORCE_AFTER_HOURS", "Value": "0"})


async def test_click_to_dial_and_supervisor_listen(
    sandbox: Sandbox, ami: AmiClient, phones: dict[str, BaresipPhone]
) -> None:
    """Originate the agent leg into click-to-dial: the customer sees the 400 number; CTI_* variables
    reach the customer leg; a supervisor can then listen in with ChanSpy."""
    agent, customer, supervisor = phones["agent1003"], phones["cust2"], phones["agent1002"]
    since, agent_mark, cust_mark, sup_mark = ami.mark(), agent.mark(), customer.mark(), supervisor.mark()
    resp = await ami.action(
        "Originate",
        {
            "Channel": "PJSIP/agent1003",
            "Context": "click-to-dial",
            "Exten": "13800138002",
            "Priority": "1",
            "CallerID": "Customer 2 <13800138002>",
            "Async": "true",
        },
        variables={"__CTI_CALLID": "c2d-test", "CTI_AGENT": "agent1003"},
    )
    assert resp["Response"] == "Success"
    await agent.wait_for_event("CALL_INCOMING", since=agent_mark)
    await agent.accept()
    ringing = await customer.wait_for_event("CALL_INCOMING", since=cust_mark)
    assert ringing["peeruri"].startswith("sip:4008001234@")
    await customer.accept()
    await customer.wait_for_event("CALL_ESTABLISHED", since=cust_mark)
    callid = await ami.wait_for_event(
        "VarSet", since=since, Variable="__CTI_CALLID", predicate=lambda e: e["Channel"].startswith("PJSIP/cust2")
    )
    assert callid["Value"] == "c2d-test"

    resp = await ami.action(
        "Originate",
        {
            "Channel": "PJSIP/agent1002",
            "Context": "supervisor-listen",
            "Exten": "agent1003",
            "Priority": "1",
            "Async": "true",
        },
    )
    await supervisor.wait_for_event("CALL_INCOMING", since=sup_mark)
    await supervisor.accept()
    spy = await ami.wait_for_event("ChanSpyStart", since=since)
    assert spy["SpyeeChannel"].startswith("PJSIP/agent1003-")
    await customer.hangup()
    await ami.wait_for_event("ChanSpyStop", since=since)


def test_down_stops_everything_it_started() -> None:
    """A second, small sandbox beside the session one: its own ports and processes, all gone after down."""
    sb = Sandbox.up(agents=1, customers=1, instance=f"pytest-down-{os.getpid()}")
    pids = sb.pids()
    procs = [dict(p) for p in _state_procs(sb.state)]
    ami_port = sb.state["ami"]["port"]
    try:
        assert len(pids) == 3
        assert sb.is_running()
        assert "agent1001" in sb.cli("pjsip show contacts")
    finally:
        sb.down(purge=True)
    assert not sb.is_running()
    assert not sb.host_dir.exists()
    # Same pid AND start time: on a busy machine a pid can be reused by an unrelated process at once.
    assert [p["pid"] for p in procs if _proc_alive(p)] == []
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", ami_port), timeout=1):
        pass
