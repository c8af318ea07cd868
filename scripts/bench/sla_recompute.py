"""SLA recomputation for 100,000 open service requests on PostgreSQL (goal < 10 s).

What an administrator's calendar change costs: `crm_core.service.sla_store.recompute_open` reads
every open request's history in batches (one read of the requests, one of their events in order),
recomputes both clocks in business time on the team's calendar (`crm_core.service.sla.compute`) and
writes the status with one multi-row upsert per 1,000. The histories are realistic: created at a
random working moment of the last 60 days, then 2–7 further events (assignment, first response,
waiting for the customer and back, a priority change, a reopen) spread over the following days.
The database (`cti_bench_sla_<n>`) is kept between runs; `--fresh` rebuilds it.

    .venv/bin/python scripts/bench/sla_recompute.py --requests 100000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common
from sqlalchemy import func, select

from crm_core import calendar_store
from crm_core.db import make_engine, make_sessionmaker, transaction
from crm_core.security import service as security
from crm_core.service import sla_store
from crm_core.service.models import ServiceRequest, ServiceRequestEvent

GOAL_S = 10.0
NOW = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)
TYPES = ("enquiry", "complaint", "repair", "suggestion")
PRIORITIES = ("low", "normal", "normal", "high", "urgent")
BLANK: dict[str, Any] = {"from_state": None, "to_state": None, "data": {}}  # one shape for executemany


def history(rng: random.Random, created: dt.datetime) -> list[dict[str, Any]]:
    at = created
    events: list[dict[str, Any]] = []
    state = "new"
    for _ in range(rng.randint(2, 7)):
        at += dt.timedelta(minutes=rng.randint(5, 60 * 30))
        if at >= NOW:
            break
        choice = rng.random()
        if state == "new":
            events.append({"at": at, "kind": "assigned", "from_state": "new", "to_state": "assigned"})
            events.append({"at": at, "kind": "state", "from_state": "new", "to_state": "assigned"})
            state = "assigned"
        elif choice < 0.15:
            events.append({"at": at, "kind": "priority", "data": {"priority": rng.choice(PRIORITIES)}})
        elif state in ("assigned", "in_progress") and choice < 0.55:
            nxt = "waiting_customer" if state == "in_progress" else "in_progress"
            events.append({"at": at, "kind": "state", "from_state": state, "to_state": nxt})
            state = nxt
        elif state == "waiting_customer":
            events.append({"at": at, "kind": "state", "from_state": state, "to_state": "in_progress"})
            state = "in_progress"
        else:
            events.append({"at": at, "kind": "responded", "data": {"note": "已联系客户"}})
    return events


async def build(url: str, requests: int, seed: int) -> None:
    rng = random.Random(seed)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        async with transaction(sessions) as session:
            await security.add_org_unit(session, "300", "电话中心")
            team = await security.add_org_unit(session, "310", "一组", parent_code="300", kind="team")
            team_id = team.id
        for start in range(0, requests, 5_000):
            rows, events = [], []
            for n in range(start, min(start + 5_000, requests)):
                created = NOW - dt.timedelta(days=rng.uniform(0, 60))
                kind, priority = rng.choice(TYPES), rng.choice(PRIORITIES)
                rows.append(
                    {
                        "id": n + 1,
                        "no": f"SR{n + 1:09d}",
                        "type": kind,
                        "priority": priority,
                        "state": "new",
                        "team_id": team_id,
                        "subject": "bench",
                        "description": "",
                        "categories": [],
                        "created_at": created,
                        "updated_at": created,
                        "version": 1,
                    }
                )
                events.append(
                    {
                        **BLANK,
                        "request_id": n + 1,
                        "at": created,
                        "kind": "created",
                        "to_state": "new",
                        "data": {"type": kind, "priority": priority},
                    }
                )
                for event in history(rng, created):
                    events.append({**BLANK, "request_id": n + 1, **event})
                    if event["kind"] == "state":
                        rows[-1]["state"] = event["to_state"]
            async with transaction(sessions) as session:
                await session.execute(ServiceRequest.__table__.insert(), rows)
                await session.execute(ServiceRequestEvent.__table__.insert(), events)
            common.log(f"  {min(start + 5_000, requests):,} requests")
        async with sessions() as session:
            await session.execute(func.setval("service_requests_id_seq", requests).select())
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    name = f"{common.BENCH_PREFIX}sla_{args.requests}"
    database = "reused"
    if args.fresh or not await common.pg_database_exists(name):
        started = time.perf_counter()
        url = await common.create_pg_database(name)
        await build(url, args.requests, args.seed)
        database = f"built in {time.perf_counter() - started:.1f}s"
    url = common.pg_url(name)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    runs = []
    try:
        async with sessions() as session:
            events = (await session.execute(select(func.count()).select_from(ServiceRequestEvent))).scalar_one()
        for run in range(args.runs):
            calendar_store.STORE.invalidate()
            started = time.perf_counter()
            cpu = time.process_time()
            done = await sla_store.recompute_open(sessions, now=NOW, batch=args.batch)
            elapsed = time.perf_counter() - started
            runs.append(
                {
                    "seconds": round(elapsed, 2),
                    "requests": done,
                    "python_cpu_s": round(time.process_time() - cpu, 2),
                    "requests_per_s": round(done / elapsed),
                    "peak_rss_mib": common.peak_rss_mib(),
                }
            )
            common.log(f"run {run + 1}: {runs[-1]}")
        async with sessions() as session:
            paused = (
                await session.execute(select(func.count()).where(sla_store.SlaStatus.paused.is_(True)))
            ).scalar_one()
    finally:
        await engine.dispose()
    seconds = common.median_of(runs, "seconds")
    common.emit(
        {
            "bench": "sla_recompute",
            "requests": args.requests,
            "events": events,
            "database": database,
            "goal_s": GOAL_S,
            "median_s": seconds,
            "meets_goal": seconds < GOAL_S,
            "paused_requests": paused,
            "runs": runs,
            "peak_rss_mib": common.peak_rss_mib(),
            "machine": common.machine(),
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
