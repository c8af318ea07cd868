"""Wallboard update cost per event as the day's calls grow: it must stay flat (O(1) per event).

For each load level (calls already counted today: 1k, 10k, 100k by default) a fresh board is filled
with that many calls, then the same measured batch of calls (``--measure`` calls, ~6 events each:
offered, ringing, answered, on call, ended, wrap-up, ready; one call in five abandons, one in twenty
times out) is fed and timed in chunks of 1,000 events: ns per event, the median chunk (robust to
another process taking the CPU) and the mean. A constant number of callers stays waiting throughout
(``--waiting``), as on a busy afternoon. Also the cost of ``snapshot()`` (what each frame and the
JSON API pay) and the board's own memory (tracemalloc, in a separate pass) at each level; peak RSS of
the process beside them. Median of ``--runs`` runs.

    .venv/bin/python scripts/bench/wallboard.py --levels 1000 10000 100000 --runs 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, log, machine, peak_rss_mib

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
    DomainEvent,
)
from cti.wallboard import Wallboard

QUEUES = ("member-service", "vip", "orders", "complaints")
AGENTS = 50
DAY_START = dt.datetime(2026, 11, 24, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
CHUNK = 1_000  # events per timed chunk
SPACING = 0.2  # seconds between calls: 110k calls fit in about six hours of one day


def state(agent: str, at: float, value: AgentState, queue: str) -> AgentStateChanged:
    return AgentStateChanged(
        at=at,
        agent=agent,
        interface=f"PJSIP/{agent}",
        name=None,
        state=value,
        previous_state=None,
        paused=False,
        pause_reason=None,
        queues=(queue,),
        paused_queues=(),
        available=True,
        linkedid=None,
    )


def call_events(i: int, at: float) -> list[DomainEvent]:
    """The domain events of call ``i`` entering at ``at``, in the order the tracker emits them."""
    linkedid = f"17959{i:08d}.1"
    queue = QUEUES[i % len(QUEUES)]
    agent = f"agent{1000 + i % AGENTS}"
    out: list[DomainEvent] = [
        CallOffered(
            at=at,
            linkedid=linkedid,
            uniqueid=linkedid,
            caller_number="13800138000",
            caller_name=None,
            dnis="4008001234",
            queue=queue,
            position=1,
        )
    ]
    if i % 5 == 4:
        out.append(
            CallAbandoned(
                at=at + 9,
                linkedid=linkedid,
                queue=queue,
                caller_number=None,
                caller_name=None,
                dnis=None,
                wait_seconds=9.0,
                position=1,
                original_position=1,
            )
        )
        outcome = "abandoned"
    elif i % 20 == 3:
        out.append(
            CallMissed(
                at=at + 60,
                linkedid=linkedid,
                reason="queue_timeout",
                queue=queue,
                caller_number=None,
                caller_name=None,
                dnis=None,
                wait_seconds=60.0,
            )
        )
        outcome = "no_answer"
    else:
        wait = float(i % 40)
        out += [
            state(agent, at + 1, "ringing", queue),
            CallAnswered(
                at=at + wait,
                linkedid=linkedid,
                uniqueid=f"{linkedid}1",
                agent=agent,
                interface=f"PJSIP/{agent}",
                queue=queue,
                wait_seconds=wait,
                ring_seconds=1.0,
                first=True,
            ),
            state(agent, at + wait, "on_call", queue),
        ]
        outcome = "answered"
    talk = 90.0 if outcome == "answered" else 0.0
    legs = (
        (
            AgentLeg(
                agent=agent,
                interface=f"PJSIP/{agent}",
                uniqueid=f"{linkedid}1",
                via="queue",
                queue=queue,
                rang_at=at + 1,
                answered_at=at + 20,
                connected_at=at + 20,
                ended_at=at + 110,
                ring_seconds=1.0,
                talk_seconds=talk,
                result="answered",
            ),
        )
        if outcome == "answered"
        else ()
    )
    end = at + 110
    out.append(
        CallEnded(
            at=end,
            linkedid=linkedid,
            direction="inbound",
            caller_number="13800138000",
            caller_name=None,
            callee_number="4008001234",
            customer_number="13800138000",
            dnis="4008001234",
            queue=queue,
            queues=(queue,),
            started_at=at,
            answered_at=at + 20 if talk else None,
            ended_at=end,
            wait_seconds=20.0,
            ring_seconds=1.0,
            talk_seconds=talk,
            duration_seconds=110.0,
            outcome=outcome,  # type: ignore[arg-type]
            reason=None,
            answered_by=agent if talk else None,
            agents=legs,
            transfers=(),
            legs=(),
            recording_file=None,
            variables={},
            hangup_cause=16,
            hangup_cause_text=None,
            hangup_side="customer",
        )
    )
    if outcome == "answered":
        out += [state(agent, end, "wrap_up", queue), state(agent, end + 5, "ready", queue)]
    return out


def events_for(first: int, count: int) -> list[DomainEvent]:
    events: list[DomainEvent] = []
    for i in range(first, first + count):
        events += call_events(i, DAY_START + 8 * 3600 + i * SPACING)
    return events


def new_board(waiting: int) -> Wallboard:
    board = Wallboard(
        {q: QueuePolicy(service_level_seconds=20) for q in QUEUES}, "Asia/Shanghai", now=DAY_START + 8 * 3600
    )
    for i in range(waiting):  # callers who stay in the queue for the whole run
        board.feed(call_events(10_000_000 + i, DAY_START + 8 * 3600)[0])
    return board


def one_level(calls: int, waiting: int, filler: list[DomainEvent], batch: list[DomainEvent]) -> dict[str, Any]:
    board = new_board(waiting)
    feed = board.feed
    for event in filler[: calls_events(filler, calls)]:
        feed(event)
    assert board.snapshot(DAY_START + 20 * 3600)["queues"]["vip"]["offered"] > 0
    gc.collect()
    gc.disable()
    # Timed in chunks of CHUNK events: the median chunk shrugs off the moments another process
    # took the CPU (the machine is shared), the total includes them.
    chunks = []
    try:
        for start in range(0, len(batch), CHUNK):
            part = batch[start : start + CHUNK]
            started = time.perf_counter_ns()
            for event in part:
                feed(event)
            chunks.append((time.perf_counter_ns() - started) / len(part))
    finally:
        gc.enable()
    snaps = []
    for _ in range(50):
        t0 = time.perf_counter_ns()
        board.snapshot(DAY_START + 20 * 3600)
        snaps.append(time.perf_counter_ns() - t0)
    total_offered = sum(q["offered"] for q in board.snapshot(DAY_START + 20 * 3600)["queues"].values())
    return {
        "ns_per_event": statistics.median(chunks),
        "ns_per_event_mean": statistics.fmean(chunks),
        "snapshot_us": statistics.median(snaps) / 1000,
        "offered_today": total_offered,
        "live_calls": len(board.live),
    }


def calls_events(filler: list[DomainEvent], calls: int) -> int:
    """How many events of ``filler`` make up its first ``calls`` calls (each call starts with CallOffered)."""
    seen = 0
    for index, event in enumerate(filler):
        if isinstance(event, CallOffered):
            if seen == calls:
                return index
            seen += 1
    return len(filler)


def board_memory(calls: int, waiting: int, filler: list[DomainEvent]) -> float:
    """KiB the board itself holds after ``calls`` calls (tracemalloc, so not timed)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    board = new_board(waiting)
    for event in filler[: calls_events(filler, calls)]:
        board.feed(event)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del board
    return round(held / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--measure", type=int, default=5_000, help="calls in the timed batch")
    parser.add_argument("--waiting", type=int, default=200, help="callers waiting throughout")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    top = max(args.levels)
    log(f"building events for {top + args.measure:,} calls")
    filler = events_for(0, top)
    batch = events_for(top, args.measure)
    # Runs interleave the levels (1k, 10k, 100k, 1k, ...) so a busy moment of the machine does not
    # land on one level only.
    runs: dict[int, list[dict[str, Any]]] = {calls: [] for calls in args.levels}
    for run in range(args.runs):
        for calls in args.levels:
            runs[calls].append(one_level(calls, args.waiting, filler, batch))
            log(f"run {run + 1}: {calls:>7,} calls today: {runs[calls][-1]['ns_per_event']:.0f} ns/event")
    levels = []
    for calls in args.levels:
        done = runs[calls]
        levels.append(
            {
                "calls_today": calls,
                "ns_per_event_median": round(statistics.median(r["ns_per_event"] for r in done), 1),
                "ns_per_event_runs": [round(r["ns_per_event"], 1) for r in done],
                "ns_per_event_mean_median": round(statistics.median(r["ns_per_event_mean"] for r in done), 1),
                "snapshot_us_median": round(statistics.median(r["snapshot_us"] for r in done), 1),
                "live_calls": done[-1]["live_calls"],
                "offered_today_after_batch": done[-1]["offered_today"],
                "board_kib": board_memory(calls, args.waiting, filler),
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    base = levels[0]["ns_per_event_median"]
    emit(
        {
            "bench": "wallboard",
            "events_per_call": round(len(batch) / args.measure, 2),
            "measured_events": len(batch),
            "queues": len(QUEUES),
            "agents": AGENTS,
            "waiting_callers": args.waiting,
            "runs": args.runs,
            "levels": levels,
            "cost_ratio_vs_smallest": [round(level["ns_per_event_median"] / base, 2) for level in levels],
            "peak_rss_mib": peak_rss_mib(),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
