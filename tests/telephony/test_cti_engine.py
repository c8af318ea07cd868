"""The CTI engine end to end: real Asterisk + baresip phones → AMI → tracker → call log, screen pop,
callbacks, agent states, click-to-dial — with the PostgreSQL call log asserted after each scenario.

Runs on PostgreSQL, the production engine (the data-layer rules themselves are tested on both engines
in tests/db). Each test hangs up what it started and waits for the agents to be ready again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asterisk_sandbox import AmiClient as SandboxAmi
from asterisk_sandbox import BaresipPhone, Sandbox
from sqlalchemy import select

from crm_core.callbacks.models import Callback
from crm_core.calllog.models import AgentStateLog, Call
from crm_core.security.policy import SYSTEM
from crm_core.settings import Settings
from cti.calls.events import AgentStateChanged
from cti.dialer import DialRefused
from cti.engine import CtiEngine
from cti.screenpop import ScreenPop
from tests.telephony.support import (
    MEMBER_SERVICE,
    VIP,
    Recorder,
    Sessions,
    agents_of,
    call_row,
    ended_by_call_id,
    engine_settings,
    ready,
    ring,
    running_engine,
)

pytestmark = pytest.mark.telephony


@pytest.fixture(scope="module")
async def engine(sandbox: Sandbox, pg_sessions: Sessions) -> AsyncIterator[CtiEngine]:
    async with running_engine(engine_settings(sandbox), pg_sessions) as cti:
        yield cti


async def test_queue_call_pops_the_member_before_answer_and_is_logged(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
    sandbox: Sandbox,
) -> None:
    await ready(engine, "agent1001", "agent1002")
    since = recorder.mark()
    await ring(phones["cust1"], MEMBER_SERVICE, phones["agent1001"])
    pop = await recorder.wait(ScreenPop, since=since, where=lambda p: not p.partial and p.agent == "agent1001")
    # Before anyone answers: the pop names the member, as the agent may see her.
    assert pop.member is not None and pop.member["profile"]["name"] == "张伟"
    assert pop.dnis == MEMBER_SERVICE and pop.queue == "member-service"
    assert [c["match"] for c in pop.candidates] == ["own_mobile"]
    other = await recorder.wait(ScreenPop, since=since, where=lambda p: not p.partial and p.agent == "agent1002")
    assert other.linkedid == pop.linkedid  # ringall: both agents got the pop
    await phones["agent1001"].accept()
    await asyncio.sleep(2.0)
    await phones["cust1"].hangup()
    call = await call_row(pg_sessions, pop.linkedid)
    assert call.outcome == "answered" and call.direction == "inbound" and call.queue == "member-service"
    assert call.agent_endpoint == "agent1001" and call.agent_user_id is not None
    assert call.caller_e164 == "+8613800138001" and call.member_id is not None and call.dnis == MEMBER_SERVICE
    assert call.talk_s is not None and 1.5 < call.talk_s < 5.0
    assert call.recording_file and call.recording_file.endswith(f"{pop.linkedid}.wav")
    agents = await agents_of(pg_sessions, call.id)
    assert ("agent1001", True) in agents and ("agent1002", False) in agents


async def test_abandoned_calls_from_one_number_make_one_callback(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
) -> None:
    await ready(engine, "agent1001", "agent1002")
    linkedids = []
    for _ in range(2):
        since = recorder.mark()
        await ring(phones["cust2"], MEMBER_SERVICE, phones["agent1001"])
        pop = await recorder.wait(ScreenPop, since=since, where=lambda p: not p.partial)
        await asyncio.sleep(0.5)
        await phones["cust2"].hangup()
        call = await call_row(pg_sessions, pop.linkedid)
        assert call.outcome == "abandoned"
        linkedids.append(pop.linkedid)
        await ready(engine, "agent1001", "agent1002")
    async with pg_sessions() as session:
        callbacks = (await session.execute(select(Callback).where(Callback.phone_e164 == "+8613800138002"))).all()
    assert len(callbacks) == 1
    assert callbacks[0][0].miss_count == 2 and callbacks[0][0].status == "open"


async def test_pause_with_reason_is_seen_in_agent_state(
    engine: CtiEngine,
    recorder: Recorder,
    pg_sessions: Sessions,
) -> None:
    await ready(engine, "agent1002")
    since = recorder.mark()
    await engine.agents.pause("agent1002", "lunch")
    paused = await recorder.wait(AgentStateChanged, since=since, where=lambda e: e.agent == "agent1002" and e.paused)
    assert paused.state == "paused" and paused.pause_reason == "lunch"
    await engine.agents.ready("agent1002")
    await recorder.wait(AgentStateChanged, since=since, where=lambda e: e.agent == "agent1002" and e.state == "ready")
    await asyncio.sleep(0.2)  # the agents subscriber has the event once the recorder has it, give or take
    await engine.agents.drain()
    async with pg_sessions() as session:
        rows = (
            await session.execute(
                select(AgentStateLog.state, AgentStateLog.reason)
                .where(AgentStateLog.agent_endpoint == "agent1002")
                .order_by(AgentStateLog.id)
            )
        ).all()
    assert ("paused", "lunch") in rows and rows[-1] == ("ready", None)
    with pytest.raises(Exception, match="unknown pause reason"):
        await engine.agents.pause("agent1002", "nap")


async def test_click_to_dial_answered_rings_agent_first_then_customer(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
) -> None:
    await engine.agents.login("agent1003", ["vip"])
    await ready(engine, "agent1003")
    agent, customer = phones["agent1003"], phones["cust2"]
    agent_mark, cust_mark = agent.mark(), customer.mark()
    started = await engine.dialer.dial(SYSTEM, "agent1003", number="+86 138 0013 8002")
    incoming = await agent.wait_for_event("CALL_INCOMING", since=agent_mark)
    assert "13800138002" in str(incoming)
    await agent.accept()
    await customer.wait_for_event("CALL_INCOMING", since=cust_mark)
    await customer.accept()
    await asyncio.sleep(1.0)
    await customer.hangup()
    call = await ended_by_call_id(pg_sessions, started.call_id)
    assert call.direction == "outbound" and call.outcome == "answered"
    assert call.callee_e164 == "+8613800138002" and call.agent_endpoint == "agent1003"
    await engine.agents.logout("agent1003", ["vip"])


async def test_click_to_dial_refusals(engine: CtiEngine) -> None:
    with pytest.raises(DialRefused, match="not logged in"):
        await engine.dialer.dial(SYSTEM, "agent1004", number="13800138002")
    with pytest.raises(DialRefused):
        await engine.dialer.dial(SYSTEM, "agent1001", number="12345")


async def agent_channel(ami: SandboxAmi, endpoint: str) -> str:
    channels = await ami.action_list("CoreShowChannels")
    names = [c["Channel"] for c in channels if c["Channel"].startswith(f"PJSIP/{endpoint}-")]
    assert names, f"no live channel for {endpoint}"
    return names[-1]


async def answered_queue_call(
    recorder: Recorder, phones: dict[str, BaresipPhone], customer: str, agent: str, did: str = MEMBER_SERVICE
) -> ScreenPop:
    since = recorder.mark()
    await ring(phones[customer], did, phones[agent])
    pop = await recorder.wait(ScreenPop, since=since, where=lambda p: not p.partial and p.agent == agent)
    await phones[agent].accept()
    await asyncio.sleep(0.5)
    return pop


async def test_blind_transfer_keeps_one_call_and_adds_the_agent(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
    ami: SandboxAmi,
) -> None:
    await ready(engine, "agent1001", "agent1002")
    pop = await answered_queue_call(recorder, phones, "cust1", "agent1001")
    mark = phones["agent1002"].mark()
    await ami.action(
        "BlindTransfer", {"Channel": await agent_channel(ami, "agent1001"), "Context": "agents", "Exten": "1002"}
    )
    await phones["agent1002"].wait_for_event("CALL_INCOMING", since=mark)
    await phones["agent1002"].accept()
    await asyncio.sleep(1.0)
    await phones["cust1"].hangup()
    call = await call_row(pg_sessions, pop.linkedid)
    assert call.outcome == "answered" and call.transfers == 1
    answered = [a for a, ok in await agents_of(pg_sessions, call.id) if ok]
    assert answered == ["agent1001", "agent1002"]
    async with pg_sessions() as session:
        rows = (await session.execute(select(Call.linkedid).where(Call.started_at >= call.started_at))).all()
    assert [r[0] for r in rows] == [pop.linkedid]  # the transfer made no second call


async def test_attended_transfer_merges_the_consultation(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
    ami: SandboxAmi,
) -> None:
    await ready(engine, "agent1001", "agent1002")
    pop = await answered_queue_call(recorder, phones, "cust1", "agent1001")
    mark = phones["agent1002"].mark()
    await ami.action("Atxfer", {"Channel": await agent_channel(ami, "agent1001"), "Exten": "1002", "Context": "agents"})
    await phones["agent1002"].wait_for_event("CALL_INCOMING", since=mark, timeout=15)
    await phones["agent1002"].accept()
    await asyncio.sleep(1.0)
    await phones["agent1001"].hangup()  # the transferring agent leaves: customer and agent1002 stay
    await asyncio.sleep(1.0)
    await phones["cust1"].hangup()
    call = await call_row(pg_sessions, pop.linkedid)
    assert call.outcome == "answered" and call.transfers >= 1
    answered = [a for a, ok in await agents_of(pg_sessions, call.id) if ok]
    assert answered[0] == "agent1001" and "agent1002" in answered


async def test_queue_timeout_is_no_answer_and_becomes_a_callback(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
    ami: SandboxAmi,
    sandbox: Sandbox,
) -> None:
    await ready(engine, "agent1002")
    await ami.action("Setvar", {"Variable": "CTI_QUEUE_MAX_WAIT", "Value": "3"})
    try:
        since = recorder.mark()
        await ring(phones["cust1"], VIP, phones["agent1002"])  # rings, never accepted
        pop = await recorder.wait(ScreenPop, since=since, where=lambda p: not p.partial)
        call = await call_row(pg_sessions, pop.linkedid, timeout=20)
    finally:
        await ami.action(
            "Setvar", {"Variable": "CTI_QUEUE_MAX_WAIT", "Value": str(sandbox.state["settings"]["queue_max_wait"])}
        )
    assert call.outcome == "no_answer" and call.queue == "vip"
    assert await agents_of(pg_sessions, call.id) == [("agent1002", False)] or all(
        not ok for _, ok in await agents_of(pg_sessions, call.id)
    )
    async with pg_sessions() as session:
        callback = (
            await session.execute(
                select(Callback).where(Callback.phone_e164 == "+8613800138001", Callback.status == "open")
            )
        ).scalar_one()
    assert callback.source == "queue_timeout" and callback.member_id == call.member_id


async def test_direct_agent_call_is_internal(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
) -> None:
    await ready(engine, "agent1001", "agent1002")
    since = recorder.mark()
    await ring(phones["agent1001"], "1002", phones["agent1002"])
    pop = await recorder.wait(ScreenPop, since=since, where=lambda p: not p.partial and p.agent == "agent1002")
    assert pop.direction == "internal" and pop.queue is None
    await phones["agent1002"].accept()
    await asyncio.sleep(0.5)
    await phones["agent1001"].hangup()
    call = await call_row(pg_sessions, pop.linkedid)
    assert call.direction == "internal" and call.outcome == "answered" and call.queue is None
    assert call.member_id is None


async def test_local_channel_caller_with_a_chinese_name(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
    ami: SandboxAmi,
) -> None:
    """An Originate of Local/<did>@from-customers (how load tests call in): one call, not two, and the
    caller name 张伟 arrives intact through AMI and into the call log."""
    await ready(engine, "agent1001", "agent1002")
    since = recorder.mark()
    await ami.action(
        "Originate",
        {
            "Channel": f"Local/{MEMBER_SERVICE}@from-customers",
            "Context": "load-generator",
            "Exten": "30",
            "Priority": "1",
            "CallerID": '"张伟" <13800138001>',
            "Async": "true",
        },
    )
    pop = await recorder.wait(ScreenPop, since=since, where=lambda p: not p.partial and p.agent == "agent1001")
    assert pop.caller_name == "张伟" and pop.member is not None
    await phones["agent1001"].wait_for_event("CALL_INCOMING", since=0)
    await phones["agent1001"].accept()
    await asyncio.sleep(1.0)
    await phones["agent1001"].hangup()
    call = await call_row(pg_sessions, pop.linkedid)
    assert call.caller_name == "张伟" and call.outcome == "answered" and call.caller_e164 == "+8613800138001"
    async with pg_sessions() as session:
        rows = (await session.execute(select(Call.linkedid).where(Call.started_at >= call.started_at))).all()
    assert len(rows) == 1, "a Local channel pair must not become a call of its own"


async def test_click_to_dial_busy_and_agent_no_answer(
    engine: CtiEngine,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
) -> None:
    await engine.agents.login("agent1003", ["vip"])
    await ready(engine, "agent1003")
    agent, customer = phones["agent1003"], phones["cust2"]
    agent_mark, cust_mark = agent.mark(), customer.mark()
    busy = await engine.dialer.dial(SYSTEM, "agent1003", number="13800138002")
    await agent.wait_for_event("CALL_INCOMING", since=agent_mark)
    await agent.accept()
    await customer.wait_for_event("CALL_INCOMING", since=cust_mark)
    await customer.hangup()  # rejecting a ringing call answers 486 Busy Here
    call = await ended_by_call_id(pg_sessions, busy.call_id)
    assert call.outcome == "busy" and call.direction == "outbound"

    await ready(engine, "agent1003")
    engine.dialer.ring_agent_ms = 3000
    try:
        unanswered = await engine.dialer.dial(SYSTEM, "agent1003", number="13800138002")
        call = await ended_by_call_id(pg_sessions, unanswered.call_id, timeout=15)
    finally:
        engine.dialer.ring_agent_ms = 30_000
    assert call.outcome in ("no_answer", "failed") and call.talk_s in (None, 0.0)
    await engine.agents.logout("agent1003", ["vip"])


async def test_replaying_a_call_duplicates_nothing(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
) -> None:
    """Every AMI event of a real call fed again — into the live engine and into a fresh one, as after a
    crash — leaves exactly one call row and one callback miss."""
    await ready(engine, "agent1001", "agent1002")
    captured: list[Any] = []
    unsubscribe = engine.ami.on_event(captured.append)
    try:
        since = recorder.mark()
        await ring(phones["cust2"], MEMBER_SERVICE, phones["agent1001"])
        pop = await recorder.wait(ScreenPop, since=since, where=lambda p: not p.partial)
        await phones["cust2"].hangup()  # abandoned: a callback miss too
        before = await call_row(pg_sessions, pop.linkedid)
    finally:
        unsubscribe()
    after_live = recorder.mark()
    for msg in captured:
        engine.feed(msg)
    await asyncio.sleep(0.5)
    assert [e for e in recorder.events[after_live:] if getattr(e, "linkedid", None) == pop.linkedid] == []

    fresh = CtiEngine(engine.settings, pg_sessions)
    fresh.subscribe_all()
    for msg in captured:
        fresh.feed(msg)
    await fresh.bus.close()
    await fresh.call_log.drain()
    async with pg_sessions() as session:
        calls = (await session.execute(select(Call).where(Call.linkedid == pop.linkedid))).scalars().all()
        callback = (
            await session.execute(
                select(Callback).where(Callback.phone_e164 == "+8613800138002", Callback.status != "closed")
            )
        ).scalar_one()
    assert len(calls) == 1 and calls[0].outcome == before.outcome == "abandoned"
    misses_before = callback.miss_count
    assert misses_before >= 1
    fresh2 = CtiEngine(engine.settings, pg_sessions)
    fresh2.subscribe_all()
    for msg in captured:
        fresh2.feed(msg)
    await fresh2.bus.close()
    await fresh2.call_log.drain()
    async with pg_sessions() as session:
        again = (await session.execute(select(Callback.miss_count).where(Callback.id == callback.id))).scalar_one()
    assert again == misses_before


async def test_asterisk_restart_mid_call_ends_the_call_as_lost_once(pg_sessions: Sessions) -> None:
    """A second sandbox whose Asterisk crashes (SIGKILL) under a live call and is started again: after
    the reconnect the engine resyncs, the call ends with outcome lost (reason pbx_restart) exactly
    once, and new calls are tracked again."""
    import os

    sb = Sandbox.up(agents=1, customers=1, instance=f"pytest-restart-{os.getpid()}")
    try:
        ami = sb.state["ami"]
        settings = Settings(ami_host=ami["host"], ami_port=ami["port"], ami_user=ami["user"], ami_secret=ami["secret"])
        cti = CtiEngine(settings, pg_sessions)
        rec = Recorder()
        cti.bus.subscribe(rec, name="restart-recorder", maxsize=100_000)
        await cti.start(wait=20)
        customer, agent = await sb.phone("cust1").connect(), await sb.phone("agent1001").connect()
        try:
            pop = await answered_queue_call(rec, {"cust1": customer, "agent1001": agent}, "cust1", "agent1001")
            await call_row(pg_sessions, pop.linkedid, state="live")
            # Talk a while: a restart is told from a reconnect by the boot time moving by more than the
            # tracker's tolerance (1.5 s), and uptime has whole-second resolution.
            await asyncio.sleep(4)
            sb.crash_and_restart_asterisk()
            call = await call_row(pg_sessions, pop.linkedid, timeout=30)
            assert call.outcome == "lost" and call.hangup_cause == "pbx_restart"
            # Tracking works again after the restart (phones re-register when started again).
            await customer.close()
            await agent.close()
            sb.restart_phones()
            customer, agent = await sb.phone("cust1").connect(), await sb.phone("agent1001").connect()
            await cti.ami.wait_connected(20)
            await ready(cti, "agent1001", timeout=30)
            second = await answered_queue_call(rec, {"cust1": customer, "agent1001": agent}, "cust1", "agent1001")
            await customer.hangup()
            assert (await call_row(pg_sessions, second.linkedid)).outcome == "answered"
            async with pg_sessions() as session:
                rows = (await session.execute(select(Call.linkedid).where(Call.linkedid == pop.linkedid))).all()
            assert len(rows) == 1
        finally:
            await customer.close()
            await agent.close()
            await cti.stop()
    finally:
        sb.down(purge=True)


async def test_pause_made_outside_the_product_is_reflected(
    engine: CtiEngine, recorder: Recorder, ami: SandboxAmi
) -> None:
    """State comes from Asterisk's events: a pause made on the PBX directly shows up like ours."""
    await ready(engine, "agent1002")
    since = recorder.mark()
    await ami.action("QueuePause", {"Interface": "PJSIP/agent1002", "Paused": "true", "Reason": "主管操作"})
    state = await recorder.wait(AgentStateChanged, since=since, where=lambda e: e.agent == "agent1002" and e.paused)
    assert state.state == "paused" and state.pause_reason == "主管操作"
    await asyncio.sleep(0.3)  # one QueueMemberPause per queue: let the last one land
    current = engine.agents.state_of("agent1002")
    assert current is not None and current.paused and current.pause_reason == "主管操作"
    await ami.action("QueuePause", {"Interface": "PJSIP/agent1002", "Paused": "false"})
    await ready(engine, "agent1002")


async def test_click_to_dial_a_member_shows_the_name_on_the_agent_phone(
    engine: CtiEngine,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
) -> None:
    async with pg_sessions() as session:
        from crm_core.members.models import Member

        member_id = (await session.execute(select(Member.id).where(Member.name == "张伟"))).scalar_one()
    await engine.agents.login("agent1003", ["vip"])
    await ready(engine, "agent1003")
    agent, customer = phones["agent1003"], phones["cust1"]
    agent_mark, cust_mark = agent.mark(), customer.mark()
    started = await engine.dialer.dial(SYSTEM, "agent1003", member_id=member_id)
    incoming = await agent.wait_for_event("CALL_INCOMING", since=agent_mark)
    assert "张伟" in str(incoming), incoming
    assert started.number_masked == "138****8001"
    await agent.accept()
    await customer.wait_for_event("CALL_INCOMING", since=cust_mark)
    await customer.accept()
    await asyncio.sleep(0.5)
    await agent.hangup()
    call = await ended_by_call_id(pg_sessions, started.call_id)
    assert call.outcome == "answered" and call.member_id == member_id
    await engine.agents.logout("agent1003", ["vip"])


async def test_answered_call_closes_the_callers_open_callback(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
) -> None:
    await ready(engine, "agent1001", "agent1002")
    since = recorder.mark()
    await ring(phones["cust1"], MEMBER_SERVICE, phones["agent1001"])
    await recorder.wait(ScreenPop, since=since, where=lambda p: not p.partial)
    await phones["cust1"].hangup()  # a miss: the callback is open
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        async with pg_sessions() as session:
            open_cb = (
                await session.execute(
                    select(Callback).where(Callback.phone_e164 == "+8613800138001", Callback.status == "open")
                )
            ).scalar_one_or_none()
        if open_cb is not None:
            break
        await asyncio.sleep(0.1)
    assert open_cb is not None
    await ready(engine, "agent1001", "agent1002")
    pop = await answered_queue_call(recorder, phones, "cust1", "agent1001")
    await phones["cust1"].hangup()
    await call_row(pg_sessions, pop.linkedid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        async with pg_sessions() as session:
            closed = await session.get(Callback, open_cb.id, populate_existing=True)
        if closed is not None and closed.status == "closed":
            break
        await asyncio.sleep(0.1)
    assert closed is not None and closed.status == "closed" and closed.close_reason == "answered_inbound"
    assert closed.closed_by_linkedid == pop.linkedid
