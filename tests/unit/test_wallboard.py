"""The wallboard's KPI state against values computed by hand (definitions: docs/KPIS.md)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from crm_core.settings import QueuePolicy
from cti.calls.events import (
    AgentLeg,
    AgentState,
    AgentStateChanged,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallMissed,
    CallOffered,
    CallOutcome,
    CallTransferred,
    MissedReason,
)
from cti.wallboard import LiveCall, SeedCounts, Wallboard

TZ = ZoneInfo("Asia/Shanghai")
Q = "member-service"


def local(hour: int, minute: int = 0, second: float = 0, day: int = 24) -> float:
    """Epoch seconds of a local (Asia/Shanghai) time on 2026-11-<day>."""
    whole = int(second)
    base = dt.datetime(2026, 11, day, hour, minute, whole, tzinfo=TZ).timestamp()
    return base + (second - whole)


def board(**policy: float) -> Wallboard:
    return Wallboard({Q: QueuePolicy(**policy), "vip": QueuePolicy()}, "Asia/Shanghai", now=local(8))


# ----------------------------------------------------------------------------- event builders
def offered(linkedid: str, at: float, queue: str = Q) -> CallOffered:
    return CallOffered(
        at=at, linkedid=linkedid, uniqueid=linkedid, caller_number="13800000000", caller_name=None,
        dnis="4008001234", queue=queue, position=1,
    )  # fmt: skip


def answered(linkedid: str, at: float, wait: float, agent: str = "agent1001", *, first: bool = True) -> CallAnswered:
    return CallAnswered(
        at=at, linkedid=linkedid, uniqueid=f"{linkedid}.{agent}", agent=agent, interface=f"PJSIP/{agent}",
        queue=Q, wait_seconds=wait, ring_seconds=1.0, first=first,
    )  # fmt: skip


def abandoned(linkedid: str, at: float, wait: float, queue: str = Q) -> CallAbandoned:
    return CallAbandoned(
        at=at, linkedid=linkedid, queue=queue, caller_number=None, caller_name=None, dnis=None,
        wait_seconds=wait, position=1, original_position=1,
    )  # fmt: skip


def missed(linkedid: str, at: float, wait: float, reason: MissedReason = "queue_timeout") -> CallMissed:
    return CallMissed(
        at=at, linkedid=linkedid, reason=reason, queue=Q, caller_number=None, caller_name=None, dnis=None,
        wait_seconds=wait,
    )  # fmt: skip


def ended(
    linkedid: str,
    at: float,
    *,
    outcome: CallOutcome = "answered",
    talk: float = 0.0,
    agents: tuple[str, ...] = ("agent1001",),
    queue: str = Q,
    entered: float | None = None,
    wait: float = 0.0,
) -> CallEnded:
    """``entered``: when the caller entered the queue (the call log's started_at); ``wait``: its queue wait."""
    legs = tuple(
        AgentLeg(
            agent=a, interface=f"PJSIP/{a}", uniqueid=f"{linkedid}.{a}", via="queue", queue=queue, rang_at=at - talk,
            answered_at=at - talk, connected_at=at - talk if outcome == "answered" else None, ended_at=at,
            ring_seconds=1.0, talk_seconds=talk, result="answered" if outcome == "answered" else "cancelled",
        )
        for a in agents
    )  # fmt: skip
    return CallEnded(
        at=at, linkedid=linkedid, direction="inbound", caller_number="13800000000", caller_name=None,
        callee_number="4008001234", customer_number="13800000000", dnis="4008001234", queue=queue,
        queues=(queue,), started_at=at - talk - 10 if entered is None else entered,
        answered_at=at - talk if outcome == "answered" else None, ended_at=at, wait_seconds=wait,
        ring_seconds=1.0, talk_seconds=talk, duration_seconds=talk + 10,
        outcome=outcome, reason=None, answered_by=agents[0] if outcome == "answered" and agents else None,
        agents=legs, transfers=(), legs=(), recording_file=None, variables={}, hangup_cause=16,
        hangup_cause_text="Normal Clearing", hangup_side="customer",
    )  # fmt: skip


def agent_state(
    agent: str,
    at: float,
    state: AgentState,
    *,
    reason: str | None = None,
    queues: tuple[str, ...] = (Q,),
) -> AgentStateChanged:
    paused = state == "paused"
    return AgentStateChanged(
        at=at, agent=agent, interface=f"PJSIP/{agent}", name=agent.upper(), state=state, previous_state=None,
        paused=paused, pause_reason=reason, queues=queues if state != "logged_out" else (),
        paused_queues=queues if paused else (), available=True, linkedid=None,
    )  # fmt: skip


def scripted_day(b: Wallboard) -> None:
    """Five calls into member-service (T = 20 s), the hand-computed values are in the tests below."""
    b.feed(offered("c1", local(9, 0, 0)))
    b.feed(answered("c1", local(9, 0, 10), wait=10))  # within T
    b.feed(offered("c2", local(9, 0, 5)))
    b.feed(answered("c2", local(9, 0, 35), wait=30))  # not within T
    b.feed(ended("c1", local(9, 1, 10), talk=60))
    b.feed(agent_state("agent1001", local(9, 1, 10), "wrap_up"))
    b.feed(agent_state("agent1001", local(9, 1, 15), "ready"))  # 5 s wrap-up after c1
    b.feed(ended("c2", local(9, 2, 35), talk=120, agents=("agent1002",)))
    b.feed(offered("c3", local(9, 10)))
    b.feed(abandoned("c3", local(9, 10, 8), wait=8))
    b.feed(ended("c3", local(9, 10, 8), outcome="abandoned", agents=()))
    b.feed(offered("c4", local(10, 5)))
    b.feed(missed("c4", local(10, 6), wait=60))
    b.feed(ended("c4", local(10, 6, 5), outcome="no_answer", agents=()))
    b.feed(offered("c5", local(10, 6)))  # still waiting


def test_scripted_day_gives_the_hand_computed_kpis() -> None:
    b = board(service_level_seconds=20)
    scripted_day(b)
    q = b.snapshot(local(10, 7))["queues"][Q]
    assert (q["offered"], q["answered"], q["abandoned"], q["timed_out"]) == (5, 2, 1, 1)
    assert q["left"] == 4  # answered 2 + abandoned 1 + timed out 1; c5 still waits
    assert q["answered_within"] == 1
    assert q["service_level"] == 25.0  # 1 / 4
    assert q["abandon_rate"] == 25.0  # 1 / 4
    assert q["asa"] == 20.0  # (10 + 30) / 2
    assert q["aht"] == 92.5  # (60 + 5 wrap-up + 120) / 2
    assert q["waiting"] == 1
    assert q["longest_wait"] == 60.0  # c5 entered at 10:06, now 10:07
    assert q["waiting_since"] == [local(10, 6)]


def test_by_hour_series_bucket_by_hour_of_entry() -> None:
    b = board(service_level_seconds=20)
    scripted_day(b)
    snap = b.snapshot(local(10, 7))
    assert snap["hours"] == list(range(24))
    by_hour = snap["queues"][Q]["by_hour"]
    assert by_hour["offered"][9] == 3 and by_hour["offered"][10] == 2
    assert by_hour["answered"][9] == 2 and by_hour["answered"][10] == 0
    assert by_hour["abandoned"][9] == 1
    assert by_hour["service_level"][9] == 33.3  # 1 within T of 3 left (2 answered + 1 abandoned)
    assert by_hour["service_level"][10] == 0.0  # the timed-out c4 left; c5 has not
    assert by_hour["service_level"][8] is None  # nothing left the queue: no figure rather than 0 %
    assert sum(by_hour["offered"]) == 5


def test_duplicates_count_once() -> None:
    b = board()
    b.feed(offered("c1", local(9)))
    b.feed(offered("c1", local(9, 0, 1)))  # a resync announcing the same caller again
    b.feed(answered("c1", local(9, 0, 5), wait=5))
    b.feed(answered("c1", local(9, 0, 5), wait=5))
    b.feed(abandoned("c1", local(9, 0, 6), wait=6))  # an outcome after the answer changes nothing
    b.feed(ended("c1", local(9, 1), talk=55))
    b.feed(ended("c1", local(9, 1), talk=55))
    q = b.snapshot(local(9, 2))["queues"][Q]
    assert (q["offered"], q["answered"], q["abandoned"], q["handled"]) == (1, 1, 0, 1)
    assert q["aht"] == 55.0


def test_a_transferred_call_counts_once() -> None:
    b = board()
    b.feed(offered("c1", local(9)))
    b.feed(answered("c1", local(9, 0, 4), wait=4))
    b.feed(
        CallTransferred(
            at=local(9, 1), linkedid="c1", kind="blind", from_agent="agent1001", to_target="1002@agents",
            to_agent="agent1002",
        )
    )  # fmt: skip
    b.feed(answered("c1", local(9, 1, 3), wait=63, agent="agent1002", first=False))
    b.feed(offered("c1", local(9, 2), queue="vip"))  # transferred into another queue after the answer
    b.feed(ended("c1", local(9, 3), talk=170, agents=("agent1001", "agent1002")))
    snap = b.snapshot(local(9, 4))["queues"]
    assert (snap[Q]["offered"], snap[Q]["answered"], snap[Q]["handled"]) == (1, 1, 1)
    assert snap[Q]["asa"] == 4.0 and snap[Q]["aht"] == 170.0
    assert snap["vip"]["offered"] == 0


def test_a_caller_moved_to_another_queue_while_waiting_is_offered_in_both() -> None:
    b = board()
    b.feed(offered("c1", local(9)))
    b.feed(offered("c1", local(9, 1), queue="vip"))  # overflow to vip
    b.feed(abandoned("c1", local(9, 1, 20), wait=20, queue="vip"))
    snap = b.snapshot(local(9, 2))["queues"]
    assert snap[Q]["offered"] == 1 and snap[Q]["left"] == 0
    assert snap["vip"]["offered"] == 1 and snap["vip"]["abandoned"] == 1


def test_short_abandons_leave_service_level_and_abandon_rate() -> None:
    b = board(service_level_seconds=20, short_abandon_seconds=5)
    b.feed(offered("c1", local(9)))
    b.feed(abandoned("c1", local(9, 0, 3), wait=3))  # short: under 5 s
    b.feed(offered("c2", local(9, 1)))
    b.feed(abandoned("c2", local(9, 1, 40), wait=40))
    b.feed(offered("c3", local(9, 2)))
    b.feed(answered("c3", local(9, 2, 10), wait=10))
    q = b.snapshot(local(9, 3))["queues"][Q]
    assert (q["offered"], q["abandoned"], q["short_abandoned"], q["left"]) == (3, 2, 1, 2)
    assert q["service_level"] == 50.0  # 1 within T / (1 answered + 1 counted abandon)
    assert q["abandon_rate"] == 50.0


def test_with_no_short_abandon_threshold_every_abandon_counts() -> None:
    b = board(service_level_seconds=20)
    b.feed(offered("c1", local(9)))
    b.feed(abandoned("c1", local(9, 0, 0.4), wait=0.4))
    q = b.snapshot(local(9, 1))["queues"][Q]
    assert (q["abandoned"], q["short_abandoned"], q["abandon_rate"], q["service_level"]) == (1, 0, 100.0, 0.0)


def test_answer_exactly_at_the_threshold_is_within_service_level() -> None:
    b = board(service_level_seconds=20)
    b.feed(offered("c1", local(9)))
    b.feed(answered("c1", local(9, 0, 20), wait=20.0))
    assert b.snapshot(local(9, 1))["queues"][Q]["service_level"] == 100.0


def test_timeouts_and_no_agents_are_missed_not_abandoned() -> None:
    b = board()
    b.feed(offered("c1", local(9)))
    b.feed(missed("c1", local(9, 1), wait=60, reason="queue_timeout"))
    b.feed(offered("c2", local(9, 2)))
    b.feed(missed("c2", local(9, 2, 1), wait=1, reason="no_agents"))
    b.feed(abandoned("c2", local(9, 2, 2), wait=2))  # too late: it already left
    q = b.snapshot(local(9, 3))["queues"][Q]
    assert (q["timed_out"], q["abandoned"], q["left"], q["abandon_rate"], q["service_level"]) == (2, 0, 2, 0.0, 0.0)


def test_day_rollover_starts_from_zero_and_keeps_yesterdays_calls_out() -> None:
    b = board()
    b.feed(offered("c1", local(23, 59, 50)))
    b.feed(offered("c2", local(23, 59, 55)))
    assert b.snapshot(local(23, 59, 58))["queues"][Q]["offered"] == 2
    b.feed(answered("c1", local(0, 0, 5, day=25), wait=15))  # entered yesterday: not today's answer
    b.feed(offered("c3", local(0, 1, day=25)))
    snap = b.snapshot(local(0, 2, day=25))
    q = snap["queues"][Q]
    assert snap["day"] == "2026-11-25"
    assert (q["offered"], q["answered"], q["asa"]) == (1, 0, None)
    assert q["by_hour"]["offered"][0] == 1
    assert q["waiting"] == 2  # c2 (from yesterday) and c3 still wait: waiting is about now
    b.feed(ended("c1", local(0, 3, day=25), talk=170))
    q = b.snapshot(local(0, 4, day=25))["queues"][Q]
    assert (q["handled"], q["aht"]) == (1, 170.0)  # AHT: answered calls that ended today


def test_a_quiet_board_rolls_over_at_midnight_on_its_own() -> None:
    b = board()
    scripted_day(b)
    snap = b.snapshot(local(0, 0, 1, day=25))
    assert snap["day"] == "2026-11-25"
    q = snap["queues"][Q]
    assert (q["offered"], q["answered"], q["service_level"], q["aht"]) == (0, 0, None, None)
    assert q["waiting"] == 1  # c5 still waits across midnight


def test_agents_by_state_with_pause_reasons_per_queue() -> None:
    b = board()
    b.feed(agent_state("agent1001", local(9), "ready", queues=(Q, "vip")))
    b.feed(agent_state("agent1002", local(9), "paused", reason="lunch"))
    b.feed(agent_state("agent1003", local(9), "on_call"))
    b.feed(agent_state("agent1004", local(9), "paused", reason="wrap-up"))  # a required wrap-up hold
    b.feed(agent_state("agent1005", local(9), "logged_out"))
    snap = b.snapshot(local(9, 5))
    agents = snap["queues"][Q]["agents"]
    assert {k: agents[k] for k in ("ready", "paused", "on_call", "wrap_up", "ringing")} == {
        "ready": 1, "paused": 1, "on_call": 1, "wrap_up": 1, "ringing": 0,
    }  # fmt: skip
    assert agents["pause_reasons"] == {"lunch": 1}
    assert snap["queues"]["vip"]["agents"]["ready"] == 1
    by_agent = {a["agent"]: a for a in snap["agents"]}
    assert by_agent["agent1002"]["pause_reason"] == "lunch" and by_agent["agent1002"]["since"] == local(9)
    assert by_agent["agent1005"]["state"] == "logged_out"
    b.feed(agent_state("agent1002", local(9, 30), "paused", reason="lunch"))  # same state: duration goes on
    assert {a["agent"]: a for a in b.snapshot(local(9, 31))["agents"]}["agent1002"]["since"] == local(9)


def test_seed_restores_the_counters_and_live_calls_count_once() -> None:
    b = board(service_level_seconds=20)
    b.seed(
        [
            SeedCounts(queue=Q, hour=9, offered=3, answered=2, answered_within=1, abandoned=1,
                       answered_wait_sum=40.0, handled=2, talk_sum=180.0, wrapup_sum=5.0),
            SeedCounts(queue=Q, hour=-1, handled=1, talk_sum=15.0),  # entered yesterday, ended today
        ],
        {"c9": LiveCall(Q, local(10), 10, "waiting")},
    )  # fmt: skip
    b.feed(offered("c9", local(10, 0, 1)))  # the resync announces the waiting caller again
    b.feed(answered("c9", local(10, 0, 9), wait=9))
    q = b.snapshot(local(10, 1))["queues"][Q]
    assert (q["offered"], q["answered"], q["answered_within"]) == (3, 3, 2)
    assert q["asa"] == pytest.approx(round(49 / 3, 1))
    assert q["aht"] == pytest.approx(round(200 / 3, 1))
    assert q["by_hour"]["answered"][10] == 1  # the live call's answer lands in its hour of entry


def test_every_change_bumps_the_version_and_calls_back() -> None:
    calls: list[int] = []
    b = board()
    b.on_change = lambda: calls.append(b.version)
    b.feed(offered("c1", local(9)))
    b.feed(offered("c1", local(9)))  # duplicate: nothing changed
    b.feed(answered("c1", local(9, 0, 1), wait=1))
    assert calls == [1, 2]


def test_a_seeded_live_call_the_pbx_no_longer_has_stops_waiting() -> None:
    b = board()
    b.seed(
        [SeedCounts(queue=Q, hour=10, offered=2)],
        {"gone": LiveCall(Q, local(10), 10, "waiting"), "here": LiveCall(Q, local(10, 0, 30), 10, "waiting")},
    )
    assert b.snapshot(local(10, 1))["queues"][Q]["waiting"] == 2
    assert b.forget_seeded_unless(lambda linkedid: linkedid == "here") == 1
    q = b.snapshot(local(10, 1))["queues"][Q]
    assert (q["waiting"], q["offered"], q["longest_wait"]) == (1, 2, 30.0)
