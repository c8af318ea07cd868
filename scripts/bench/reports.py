"""Reports bench: agent performance, callback SLA and the heat map over 1,000,000 calls on PostgreSQL.

The data set (database cti_bench_reports_<calls>, kept between runs; `--fresh` rebuilds it) is a call
centre simulated agent by agent: `--agents` agents in teams of 25 work 8-hour shifts every day of
`--span-days` days; each answered call is a real interval of the agent's state history (ringing →
on_call → wrap_up → ready, pauses with reasons in between), so agent_state_log matches the calls
(about 4.6 state rows per call). About 10% of the offered calls are abandoned or missed; each of
them leaves a callback (due 2 h later, most reached, some late, unreachable or still open).
It is written with COPY by a child process, so this process's peak RSS is the reports' own.

Each report runs `--runs` times (after one warm-up) through `crm_core.reports.run.run_report`, in an
AsyncSession like a request, for the last `--period-days` days, as the administrator (every agent)
and as one team's supervisor. Figures: median and max seconds, rows returned, this process's peak
RSS, and the PostgreSQL backend's peak RSS (VmHWM of the connection's server process).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

from crm_core.db import make_engine, make_sessionmaker, read_session
from crm_core.reports.period import make_period
from crm_core.reports.run import REPORT_NAMES, run_report
from crm_core.security.service import principal_by_username
from crm_core.settings import QueuePolicy, Settings

ZONE = ZoneInfo("Asia/Shanghai")
TEAM_SIZE = 25
QUEUES = ("member-service", "vip")
PAUSE_REASONS = ("break", "lunch", "training", "meeting")
SHIFT_HOURS = 8


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _count(url: str) -> int | None:
    try:
        conn = await asyncpg.connect(_dsn(url))
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        return int(await conn.fetchval("SELECT count(*) FROM calls"))
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()


def _settings(url: str, teams: int) -> Settings:
    return Settings(
        database_url=url,
        queues={"member-service": QueuePolicy(team="T01"), "vip": QueuePolicy(team=f"T{teams:02d}")},
    )


# ---------------------------------------------------------------------------- data set
async def _build(url: str, calls: int, agents: int, span_days: int, end_day: dt.date, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    conn = await asyncpg.connect(_dsn(url))
    started = time.perf_counter()
    teams = max(1, agents // TEAM_SIZE)
    try:
        await conn.execute(
            "INSERT INTO org_units (code, name, kind, path, disabled) VALUES ('C', 'centre', 'company', '/', false)"
        )
        await conn.execute("UPDATE org_units SET path = '/' || id || '/' WHERE code = 'C'")
        for team in range(1, teams + 1):
            await conn.execute(
                "INSERT INTO org_units (code, name, kind, parent_id, path, disabled) "
                "SELECT $1, $2, 'team', id, path, false FROM org_units WHERE code = 'C'",
                f"T{team:02d}",
                f"team {team}",
            )
        await conn.execute("UPDATE org_units SET path = path || id || '/' WHERE kind = 'team'")
        unit = {code: uid for code, uid in await conn.fetch("SELECT code, id FROM org_units")}
        now = dt.datetime.now(dt.UTC)
        users = [
            ("admin", "admin", "admin", None, None),
            *[(f"sup{t:02d}", f"supervisor {t}", "supervisor", unit[f"T{t:02d}"], None) for t in range(1, teams + 1)],
            *[
                (f"agent{a:03d}", f"agent {a}", "agent", unit[f"T{min(teams, a // TEAM_SIZE + 1):02d}"], f"ep{a:03d}")
                for a in range(agents)
            ],
        ]
        await conn.copy_records_to_table(
            "users",
            records=[(u, n, "x", r, o, e, True, 0, now) for u, n, r, o, e in users],
            columns=["username", "display_name", "password_hash", "role", "org_unit_id", "agent_endpoint", "active",
                     "failed_logins", "created_at"],
        )  # fmt: skip
        user_ids = dict(await conn.fetch("SELECT agent_endpoint, id FROM users WHERE agent_endpoint IS NOT NULL"))
        per_agent_day = calls / (agents * span_days) / 1.10  # answered ones; ~10% more go unanswered
        call_id = 0
        callback_no = 0
        state_rows = 0
        first_day = end_day - dt.timedelta(days=span_days)
        for day_no in range(span_days):
            day = first_day + dt.timedelta(days=day_no)
            call_rows: list[tuple[Any, ...]] = []
            agent_rows: list[tuple[Any, ...]] = []
            state_batch: list[tuple[Any, ...]] = []
            callbacks: list[tuple[Any, ...]] = []
            for a in range(agents):
                endpoint = f"ep{a:03d}"
                uid = user_ids[endpoint]
                shift = dt.datetime.combine(day, dt.time(8 + (a % 5)), tzinfo=ZONE).astimezone(dt.UTC)
                shift_end = shift + dt.timedelta(hours=SHIFT_HOURS)
                t = shift
                target = int(rng.gauss(per_agent_day, per_agent_day * 0.1))

                def log_state(name: str, begins: dt.datetime, ends: dt.datetime, reason: str | None = None) -> None:
                    state_batch.append((endpoint, uid, name, reason, begins, ends, (ends - begins).total_seconds()))  # noqa: B023

                done = 0
                while t < shift_end and done < target:
                    if rng.random() < 0.02:
                        pause = dt.timedelta(seconds=rng.randint(300, 1800))
                        log_state("paused", t, t + pause, rng.choice(PAUSE_REASONS))
                        t += pause
                    ready = dt.timedelta(seconds=rng.expovariate(1 / 40))
                    log_state("ready", t, t + ready)
                    t += ready
                    ring, wait = rng.uniform(3, 15), rng.uniform(1, 60)
                    talk, wrapup = rng.expovariate(1 / 240), rng.uniform(5, 60)
                    call_start = t - dt.timedelta(seconds=wait)
                    answered = t + dt.timedelta(seconds=ring)
                    ended = answered + dt.timedelta(seconds=talk)
                    log_state("ringing", t, answered)
                    log_state("on_call", answered, ended)
                    log_state("wrap_up", ended, ended + dt.timedelta(seconds=wrapup))
                    call_id += 1
                    outbound = rng.random() < 0.08
                    call_rows.append(
                        ("default", f"L{call_id}", "ended", "outbound" if outbound else "inbound",
                         None if outbound else rng.choice(QUEUES), endpoint, uid, call_start, answered, ended,
                         wait, ring, talk, wrapup, "answered", 0, 1, ended, call_id)
                    )  # fmt: skip
                    if not outbound:
                        agent_rows.append((call_id, 1, endpoint, uid, t, ring, True, "queue"))
                    t = ended + dt.timedelta(seconds=wrapup)
                    done += 1
                    # about one unanswered call per nine answered ones
                    if rng.random() < 0.11:
                        call_id += 1
                        lost_at = t - dt.timedelta(seconds=rng.uniform(0, 600))
                        outcome = "abandoned" if rng.random() < 0.7 else "no_answer"
                        lost_wait = rng.uniform(5, 180)
                        queue = rng.choice(QUEUES)
                        call_rows.append(
                            ("default", f"L{call_id}", "ended", "inbound", queue, None, None, lost_at, None,
                             lost_at + dt.timedelta(seconds=lost_wait), lost_wait, None, None, None, outcome, 0, 1,
                             lost_at, call_id)
                        )  # fmt: skip
                        callback_no += 1
                        due = lost_at + dt.timedelta(hours=2)
                        fate = rng.random()
                        if fate < 0.6:
                            closed, reason, attempts = lost_at + dt.timedelta(minutes=rng.uniform(5, 110)), "reached", 1
                        elif fate < 0.75:
                            closed, reason, attempts = due + dt.timedelta(minutes=rng.uniform(5, 300)), "reached", 2
                        elif fate < 0.85:
                            closed, reason, attempts = due + dt.timedelta(hours=3), "unreachable", 3
                        elif fate < 0.95:
                            closed, reason, attempts = lost_at + dt.timedelta(minutes=20), "answered_inbound", 0
                        else:
                            closed, reason, attempts = None, None, rng.randint(0, 2)
                        callbacks.append(
                            (f"+86139{callback_no:08d}", f"139{callback_no:08d}", "closed" if closed else "open",
                             reason, "abandoned", queue, 1, lost_wait, 0, lost_at, lost_at, due, attempts, closed,
                             lost_at, lost_at)
                        )  # fmt: skip
                log_state("logged_out", t, t + dt.timedelta(hours=24 - SHIFT_HOURS))
            await conn.copy_records_to_table(
                "calls",
                records=call_rows,
                columns=["pbx", "linkedid", "state", "direction", "queue", "agent_endpoint", "agent_user_id",
                         "started_at", "answered_at", "ended_at", "wait_s", "ring_s", "talk_s", "wrapup_s", "outcome",
                         "transfers", "revision", "updated_at", "id"],
            )  # fmt: skip
            await conn.copy_records_to_table(
                "call_agents",
                records=agent_rows,
                columns=["call_id", "seq", "agent_endpoint", "agent_user_id", "rang_at", "ring_s", "answered", "via"],
            )
            await conn.copy_records_to_table(
                "agent_state_log",
                records=state_batch,
                columns=["agent_endpoint", "agent_user_id", "state", "reason", "started_at", "ended_at", "duration_s"],
            )
            await conn.copy_records_to_table(
                "callbacks",
                records=callbacks,
                columns=["phone_e164", "phone_raw", "status", "close_reason", "source", "queue", "miss_count",
                         "longest_wait_s", "priority", "first_missed_at", "last_missed_at", "due_at", "attempts",
                         "closed_at", "created_at", "updated_at"],
            )  # fmt: skip
            state_rows += len(state_batch)
            common.log(f"day {day_no + 1}/{span_days}: {call_id:,} calls, {state_rows:,} state rows")
        await conn.execute("SELECT setval(pg_get_serial_sequence('calls', 'id'), $1)", call_id)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return {
        "calls": call_id,
        "agent_state_rows": state_rows,
        "callbacks": callback_no,
        "build_s": round(time.perf_counter() - started, 1),
    }


def _build_in_child(url: str, calls: int, agents: int, span_days: int, end_day: dt.date, seed: int) -> None:
    result = asyncio.run(_build(url, calls, agents, span_days, end_day, seed))
    common.log(f"built: {result}")


async def _database(args: argparse.Namespace, end_day: dt.date) -> tuple[str, dict[str, Any]]:
    name = f"{common.BENCH_PREFIX}reports_{args.calls}"
    url = common.pg_url(name)
    if not args.fresh and await common.pg_database_exists(name):
        count = await _count(url)
        if count is not None and count >= args.calls * 0.95:
            common.log(f"reusing {name} ({count:,} calls); --fresh rebuilds it")
            return url, {"database": name, "reused": True, "calls": count}
    url = await common.create_pg_database(name)
    common.log(f"building {name}: ~{args.calls:,} calls over {args.span_days} days, {args.agents} agents")
    started = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(
        target=_build_in_child, args=(url, args.calls, args.agents, args.span_days, end_day, args.seed)
    )
    child.start()
    await asyncio.to_thread(child.join)
    if child.exitcode != 0:
        raise SystemExit(f"building the data set failed (exit {child.exitcode})")
    return url, {
        "database": name,
        "reused": False,
        "calls": await _count(url),
        "build_s": round(time.perf_counter() - started, 1),
    }


# ---------------------------------------------------------------------------- measuring
def _backend_peak_mib(pid: int) -> float | None:
    """VmHWM (peak RSS) of a PostgreSQL backend on this machine; None if it is not readable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


async def _measure(args: argparse.Namespace, url: str, end_day: dt.date) -> dict[str, Any]:
    teams = max(1, args.agents // TEAM_SIZE)
    settings = _settings(url, teams)
    engine = make_engine(url, pool_size=1)
    sessions = make_sessionmaker(engine)
    period = make_period(end_day - dt.timedelta(days=args.period_days), end_day, settings.timezone)
    results: dict[str, Any] = {}
    try:
        async with sessions() as session:
            readers = {
                "admin": await principal_by_username(session, "admin"),
                "supervisor": await principal_by_username(session, "sup01"),
            }
            backend = int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            in_period = (
                await session.execute(
                    text("SELECT count(*) FROM calls WHERE started_at >= :a AND started_at < :b"),
                    {"a": period.utc_start, "b": period.utc_end},
                )
            ).scalar_one()
        for name in REPORT_NAMES:
            for who, principal in readers.items():
                times = []
                rows = 0
                for run in range(args.runs + 1):
                    started = time.perf_counter()
                    async with read_session(sessions) as session:
                        table = await run_report(session, principal, settings, name, period)
                    elapsed = time.perf_counter() - started
                    rows = len(table.rows)
                    if run:  # the first run warms caches and is not counted
                        times.append(elapsed)
                results[f"{name}/{who}"] = {
                    "median_s": round(statistics.median(times), 3),
                    "max_s": round(max(times), 3),
                    "rows": rows,
                    "peak_rss_mib": common.peak_rss_mib(),
                    "pg_backend_peak_rss_mib": _backend_peak_mib(backend),
                }
                common.log(f"{name} as {who}: median {results[f'{name}/{who}']['median_s']} s")
    finally:
        await engine.dispose()
    return {
        "period": {"from": period.start.isoformat(), "to": period.end.isoformat(), "calls_in_period": in_period},
        "reports": results,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--agents", type=int, default=150)
    parser.add_argument("--span-days", type=int, default=90, help="days of history the calls spread over")
    parser.add_argument("--period-days", type=int, default=30, help="the reported period: the last N days")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    end_day = dt.date(2026, 11, 1)  # fixed, so a kept database stays valid
    url, database = await _database(args, end_day)
    figures = await _measure(args, url, end_day)
    common.emit(
        {
            "bench": "reports",
            "machine": common.machine(),
            "load_average": list(os.getloadavg()),
            "database": database,
            "runs": args.runs,
            **figures,
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
