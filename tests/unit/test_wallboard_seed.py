"""A restart does not zero the wallboard: today's counters come back from the call log (both engines)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog import service as calllog
from crm_core.calllog.schemas import CallLogEntry
from crm_core.db import transaction
from crm_core.settings import QueuePolicy, Settings
from cti.calllog_writer import entry_from_ended
from cti.calls.events import CallEnded
from cti.engine import CtiEngine
from cti.wallboard import Wallboard
from tests.unit.test_wallboard import Q, abandoned, answered, ended, local, missed, offered

pytestmark = pytest.mark.db

Sessions = async_sessionmaker[AsyncSession]
NOW = local(10, 7)


def utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


# The scripted day of tests/unit/test_wallboard.py as the call log stores it, plus the edges.
ENDED: list[CallEnded] = [
    ended("c1", local(9, 1, 10), talk=60, entered=local(9), wait=10),
    ended("c2", local(9, 2, 35), talk=120, agents=("agent1002",), entered=local(9, 0, 5), wait=30),
    ended("c3", local(9, 10, 8), outcome="abandoned", agents=(), entered=local(9, 10), wait=8),
    ended("c4", local(10, 6, 5), outcome="no_answer", agents=(), entered=local(10, 5), wait=60),
    # Entered yesterday, answered and ended today: only in today's AHT.
    ended("y1", local(0, 1, day=24), talk=50, entered=local(23, 59, 30, day=23), wait=20),
    # Yesterday's call: nowhere today.
    ended("y2", local(22, 1, day=23), talk=70, entered=local(22, day=23), wait=5),
    # Another queue with its own T (vip: 10 s): answered after 15 s is outside it.
    ended("v1", local(9, 30), talk=30, queue="vip", entered=local(9, 28, 45), wait=15),
]


def live_row(linkedid: str, entered: float, answered_at: float | None = None) -> CallLogEntry:
    return CallLogEntry(
        linkedid=linkedid,
        revision=1,
        state="live",
        direction="inbound",
        started_at=utc(entered),
        queue=Q,
        answered_at=None if answered_at is None else utc(answered_at),
    )


async def write_call_log(sessions: Sessions) -> None:
    async with transaction(sessions) as session:
        for event in ENDED:
            await calllog.write_call(session, entry_from_ended(event, "default", None))
        await calllog.write_call(session, live_row("c5", local(10, 6)))  # waiting at the restart
        await calllog.write_call(session, live_row("c6", local(10, 3), answered_at=local(10, 3, 12)))  # talking
        await calllog.set_wrapup(session, "c1", disposition="resolved", wrapup_s=5.0)
        # Never in a queue: an outbound call and a caller who hung up in the IVR. Neither counts.
        for linkedid, direction, outcome in (("o1", "outbound", "answered"), ("i1", "inbound", "abandoned")):
            await calllog.write_call(
                session,
                CallLogEntry(
                    linkedid=linkedid, revision=2, state="ended", direction=direction, started_at=utc(local(9, 40)),
                    ended_at=utc(local(9, 42)), answered_at=utc(local(9, 40, 5)) if outcome == "answered" else None,
                    talk_s=115.0, wait_s=0.0, outcome=outcome,
                ),
            )  # fmt: skip


def restarted_engine(settings: Settings, sessions: Sessions) -> CtiEngine:
    settings = settings.model_copy(
        update={"queues": {Q: QueuePolicy(service_level_seconds=20), "vip": QueuePolicy(service_level_seconds=10)}}
    )
    return CtiEngine(settings, sessions, clock=lambda: NOW)


async def test_a_restart_seeds_todays_kpis_from_the_call_log(sessions: Sessions, settings: Settings) -> None:
    await write_call_log(sessions)
    engine = restarted_engine(settings, sessions)
    await engine.seed_wallboard()
    snap = engine.wallboard.snapshot(NOW)
    q = snap["queues"][Q]
    # offered: c1..c5 + c6 (live) = 6; answered: c1, c2, c6 (live, answered 12 s after entry) = 3
    assert (q["offered"], q["answered"], q["abandoned"], q["timed_out"]) == (6, 3, 1, 1)
    assert q["answered_within"] == 2  # c1 (10 s) and c6 (12 s); c2 waited 30 s
    assert q["left"] == 5 and q["service_level"] == 40.0  # 2 / (3 + 1 + 1)
    assert q["abandon_rate"] == 20.0  # 1 / 5
    assert q["asa"] == round((10 + 30 + 12) / 3, 1)
    # AHT: answered calls ended today: c1 (60 + 5 wrap-up), c2 (120) and y1 (50, entered yesterday)
    assert (q["handled"], q["aht"]) == (3, round((60 + 5 + 120 + 50) / 3, 1))
    assert q["waiting"] == 1 and q["longest_wait"] == 60.0  # c5, since 10:06
    assert q["by_hour"]["offered"][9] == 3 and q["by_hour"]["offered"][10] == 3
    assert q["by_hour"]["service_level"][9] == 33.3
    vip = snap["queues"]["vip"]
    assert (vip["offered"], vip["answered"], vip["answered_within"], vip["service_level"]) == (1, 1, 0, 0.0)


async def test_the_seeded_board_goes_on_counting_without_double_counts(sessions: Sessions, settings: Settings) -> None:
    await write_call_log(sessions)
    engine = restarted_engine(settings, sessions)
    await engine.seed_wallboard()
    board = engine.wallboard
    # The tracker's resync announces the live calls again; then c5 is answered and a new call abandons.
    board.feed(offered("c5", local(10, 6, 40)))
    board.feed(answered("c6", local(10, 7), wait=12))
    board.feed(answered("c5", local(10, 7), wait=60))
    board.feed(offered("c7", local(10, 7)))
    board.feed(abandoned("c7", local(10, 7, 30), wait=30))
    board.feed(missed("c6", local(10, 8), wait=1))  # nonsense after the answer: ignored
    q = board.snapshot(local(10, 8))["queues"][Q]
    assert (q["offered"], q["answered"], q["abandoned"], q["timed_out"], q["waiting"]) == (7, 4, 2, 1, 0)
    assert q["service_level"] == round(100 * 2 / 7, 1)


async def test_an_empty_call_log_seeds_an_empty_board(sessions: Sessions, settings: Settings) -> None:
    board = Wallboard(settings.queues, settings.timezone, now=NOW)
    engine = restarted_engine(settings, sessions)
    engine.wallboard = board
    await engine.seed_wallboard()
    snap = board.snapshot(NOW)
    assert all(q["offered"] == 0 and q["aht"] is None for q in snap["queues"].values())
