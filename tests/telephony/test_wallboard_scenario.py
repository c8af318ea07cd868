"""The wallboard's KPIs for a scripted scenario through the real sandbox, against hand-computed values.

Customer baresip phones call the 400 number of member-service (T = 3 s here, so one answer falls
inside and one outside); agents answer on their baresip phones:

  A  cust1 → answered at once by agent1001 (wait ≈ 0.5 s, inside T), talks ~2 s, caller hangs up
  B  cust2 → agent1001 is in wrap-up, only agent1002 rings; answered after ~4.5 s (outside T), talks ~1.5 s
  C  cust1 → caller hangs up after ~1 s in the queue: abandoned
  D  both agents paused (lunch, training); cust2 waits until the queue's max wait (3 s): timed out

Hand computation from the test's own clock (times taken around each phone action):
  offered 4, answered 2, abandoned 1, timed out 1 → left 4; SL = 1/4 = 25 %; abandon rate = 1/4 = 25 %;
  ASA = mean(accept − dial) of A and B; AHT = (talk A + talk B + 2 × wrap-up) / 2 with the sandbox's
  wrap-up time. Tolerances: a wait starts when Queue() runs, a little after our dial (SIP set-up and
  the dialplan's Answer, < 1 s) and ends when the agent's 200 OK is seen, just after accept() returns
  (≤ 0.3 s); talk is bounded the same way by accept and hangup (± 0.5 s); the end of wrap-up is seen
  by the tracker's 0.5 s tick (+ 0.75 s).
Then a board seeded from the call log alone (a restart) gives the same counts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from asterisk_sandbox import AmiClient as SandboxAmi
from asterisk_sandbox import BaresipPhone, Sandbox

from crm_core.settings import QueuePolicy
from cti.calls.events import AgentStateChanged, CallAbandoned, CallAnswered, CallEnded, CallMissed, CallOffered
from cti.engine import CtiEngine
from cti.wallboard import Wallboard
from cti.wallboard_seed import seed_board
from tests.telephony.support import (
    MEMBER_SERVICE,
    Recorder,
    Sessions,
    engine_settings,
    ready,
    running_engine,
    wrapup_of,
)

pytestmark = pytest.mark.telephony

Q = "member-service"
T = 3.0


@pytest.fixture(scope="module")
async def engine(sandbox: Sandbox, pg_sessions: Sessions) -> AsyncIterator[CtiEngine]:
    queues = {Q: QueuePolicy(wrapup_seconds=wrapup_of(sandbox), service_level_seconds=T), "vip": QueuePolicy()}
    async with running_engine(engine_settings(sandbox, queues=queues), pg_sessions) as cti:
        yield cti


async def answered_call(
    recorder: Recorder, customer: BaresipPhone, agent: BaresipPhone, *, answer_after: float, talk: float
) -> tuple[float, float]:
    """Dial member-service, let ``agent`` answer ``answer_after`` s after the dial, talk, caller hangs up.
    Returns (wait, talk) as the test's clock saw them."""
    since, mark = recorder.mark(), agent.mark()
    dialled = time.monotonic()
    await customer.dial(MEMBER_SERVICE)
    await agent.wait_for_event("CALL_INCOMING", since=mark)
    await asyncio.sleep(max(0.0, dialled + answer_after - time.monotonic()))
    await agent.accept()
    accepted = time.monotonic()
    answer = await recorder.wait(CallAnswered, since=since)
    await asyncio.sleep(max(0.0, accepted + talk - time.monotonic()))
    hung_up = time.monotonic()
    await customer.hangup()
    await recorder.wait(CallEnded, since=since, where=lambda e: e.linkedid == answer.linkedid)
    return accepted - dialled, hung_up - accepted


async def test_scripted_scenario_gives_the_hand_computed_kpis(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
    ami: SandboxAmi,
    sandbox: Sandbox,
) -> None:
    board = engine.wallboard
    wrapup = float(sandbox.state["settings"].get("wrapup_seconds", 5))
    await ready(engine, "agent1001", "agent1002")
    before = board.snapshot(time.time())["queues"][Q]
    assert before["offered"] == 0  # a fresh call log and a fresh board

    # A: answered inside T; B: answered outside T (agent1001 is in wrap-up after A).
    wait_a, talk_a = await answered_call(recorder, phones["cust1"], phones["agent1001"], answer_after=0.0, talk=2.0)
    wait_b, talk_b = await answered_call(recorder, phones["cust2"], phones["agent1002"], answer_after=4.5, talk=1.5)
    # The scenario itself is on the intended side of T. These waits run from the dial, so they include
    # call set-up before the queue; on a loaded machine A's took 2.1 s (its queue wait less than that).
    assert wait_a < T - 0.25 and wait_b > T + 1.0

    # C: the caller gives up after ~1 s in the queue.
    since = recorder.mark()
    await phones["cust1"].dial(MEMBER_SERVICE)
    offered_c = await recorder.wait(CallOffered, since=since)
    await asyncio.sleep(1.0)
    await phones["cust1"].hangup()
    abandon = await recorder.wait(CallAbandoned, since=since, where=lambda e: e.linkedid == offered_c.linkedid)
    assert 0.5 < abandon.wait_seconds < 2.5
    await ready(engine, "agent1001", "agent1002")  # both wrap-ups over: AHT has them

    # D: nobody available (both paused with a reason); the queue's max wait (3 s) times the caller out.
    since = recorder.mark()
    await engine.agents.pause("agent1001", "lunch")
    await engine.agents.pause("agent1002", "training")
    for agent in ("agent1001", "agent1002"):
        await recorder.wait(AgentStateChanged, since=since, where=lambda e, a=agent: e.agent == a and e.paused)
    await ami.action("Setvar", {"Variable": "CTI_QUEUE_MAX_WAIT", "Value": "3"})
    try:
        await phones["cust2"].dial(MEMBER_SERVICE)
        offered_d = await recorder.wait(CallOffered, since=since)
        await asyncio.sleep(1.5)
        live = board.snapshot(time.time())["queues"][Q]
        assert live["waiting"] == 1 and 1.0 <= live["longest_wait"] <= 3.5
        assert live["agents"]["paused"] == 2 and live["agents"]["pause_reasons"] == {"lunch": 1, "training": 1}
        reasons = {a["agent"]: a["pause_reason"] for a in board.snapshot(time.time())["agents"]}
        assert (reasons["agent1001"], reasons["agent1002"]) == ("lunch", "training")
        await recorder.wait(CallMissed, since=since, where=lambda e: e.linkedid == offered_d.linkedid, timeout=10)
        await phones["cust2"].hangup()
        await recorder.wait(CallEnded, since=since, where=lambda e: e.linkedid == offered_d.linkedid, timeout=10)
    finally:
        await ami.action(
            "Setvar", {"Variable": "CTI_QUEUE_MAX_WAIT", "Value": str(sandbox.state["settings"]["queue_max_wait"])}
        )
        await engine.agents.ready("agent1001")
        await engine.agents.ready("agent1002")

    q = board.snapshot(time.time())["queues"][Q]
    assert (q["offered"], q["answered"], q["abandoned"], q["timed_out"], q["left"]) == (4, 2, 1, 1, 4)
    assert q["waiting"] == 0
    assert q["answered_within"] == 1 and q["service_level"] == 25.0
    assert q["abandon_rate"] == 25.0
    asa_by_hand = (wait_a + wait_b) / 2
    aht_by_hand = (talk_a + talk_b + 2 * wrapup) / 2
    print(f"board {q['asa']=} {q['aht']=}; by hand: {asa_by_hand=:.2f} {aht_by_hand=:.2f}")  # shown with -s
    assert asa_by_hand - 1.0 <= q["asa"] <= asa_by_hand + 0.3, (q["asa"], wait_a, wait_b)
    assert aht_by_hand - 0.5 <= q["aht"] <= aht_by_hand + 0.75, (q["aht"], talk_a, talk_b, wrapup)
    assert sum(q["by_hour"]["offered"]) == 4 and sum(q["by_hour"]["abandoned"]) == 1

    # A restart: a board seeded from the call log alone counts the same calls.
    await engine.call_log.drain()
    restarted = Wallboard(engine.settings.queues, engine.settings.timezone, now=time.time())
    assert await seed_board(pg_sessions, restarted, engine.settings.pbx_name) == 4
    seeded = restarted.snapshot(time.time())["queues"][Q]
    for kpi in ("offered", "answered", "abandoned", "timed_out", "answered_within", "service_level", "abandon_rate"):
        assert seeded[kpi] == q[kpi], kpi
    assert seeded["asa"] == pytest.approx(q["asa"], abs=0.15)
