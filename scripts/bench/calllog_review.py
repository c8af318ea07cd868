"""Call-log review over 1,000,000 calls on PostgreSQL: filtered first pages and deep keyset pages.

What it measures: `crm_core.calllog.review.review_page` end to end as the API calls it (the
visibility clause, the filters, the joins for the member's and the agent's names, the field policy
on every row), for a supervisor of one team (10 of the 50 agents) and for one agent, on typical
filters and at keyset depths of 1,000 / 10,000 / 100,000 rows. Each run times every case
`--reps` times, interleaved (so no case runs only on a warm cache), and reports p50/p99 per case and
over all queries; the figures are the median of `--runs` runs. Goal: p99 < 50 ms.

The data (built once, kept as cti_bench_calllog_<n>; --fresh rebuilds) is generated inside
PostgreSQL with generate_series: 90 days, business hours heavy (95 % between 08:00 and 20:00 local),
5 teams x 10 agents, 2 queues (70 % member-service), 85 % inbound, outcomes 80 % answered /
9 % abandoned / 5 % missed / 2 % busy / 2 % failed / 2 % lost, 60 % of callers known members
(100,000 members), 20 % of answered calls rang another agent first, 90 % of answered calls recorded.

    .venv/bin/python scripts/bench/calllog_review.py [--calls 1000000] [--runs 3] [--reps 20] [--explain]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg  # type: ignore[import-untyped]
from _common import (  # type: ignore[import-not-found]
    BENCH_PREFIX,
    create_pg_database,
    emit,
    latency_summary,
    log,
    machine,
    median_of,
    peak_rss_mib,
    pg_database_exists,
    pg_url,
)
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from crm_core import migrate
from crm_core.calllog.models import Call, CallAgent
from crm_core.calllog.review import CallFilter, encode_cursor, review_page, review_statement
from crm_core.db import make_engine, make_sessionmaker, read_session, transaction
from crm_core.security import service as security
from crm_core.security.models import User
from crm_core.security.passwords import hash_password_sync
from crm_core.security.policy import Principal, Role

TZ = "Asia/Shanghai"
TEAMS = 5
AGENTS_PER_TEAM = 10
MEMBERS = 100_000
DAYS = 90
# The last day of the data, local time; fixed so a cached database gives the same figures.
END_DAY = dt.date(2026, 11, 24)


def _dsn(url: str) -> str:
    return make_url(url).render_as_string(hide_password=False).replace("+asyncpg", "")


async def _usable(url: str, calls: int) -> bool:
    conn = await asyncpg.connect(_dsn(url))
    try:
        head = ScriptDirectory.from_config(migrate.alembic_config(url)).get_current_head()
        if await conn.fetchval("SELECT version_num FROM alembic_version") != head:
            return False
        if await conn.fetchval("SELECT count(*) FROM calls") != calls:
            return False
        # An index added to 0007 since the build does not change the head: compare the indexes too.
        wanted = {ix.name for table in (Call.__table__, CallAgent.__table__) for ix in table.indexes}
        present = {r[0] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
        return wanted <= present
    except asyncpg.PostgresError:
        return False
    finally:
        await conn.close()


async def _people(url: str) -> list[int]:
    """Org tree, 50 agents, 5 supervisors, an admin; returns the agents' user ids in order."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    hashed = hash_password_sync("bench-password")
    try:
        async with transaction(sessions) as session:
            await security.add_org_unit(session, "CC", "呼叫中心")
            agent_ids = []
            for team in range(1, TEAMS + 1):
                await security.add_org_unit(session, f"T{team}", f"{team}组", parent_code="CC", kind="team")
                unit = await security.org_unit_by_code(session, f"T{team}")
                session.add(
                    User(
                        username=f"sup{team}",
                        display_name=f"主管{team}",
                        password_hash=hashed,
                        role=Role.SUPERVISOR.value,
                        org_unit_id=unit.id,
                    )
                )
                for n in range(AGENTS_PER_TEAM):
                    index = (team - 1) * AGENTS_PER_TEAM + n
                    user = User(
                        username=f"agent{index:02d}",
                        display_name=f"坐席{index:02d}",
                        password_hash=hashed,
                        role=Role.AGENT.value,
                        org_unit_id=unit.id,
                        agent_endpoint=f"agent{2000 + index}",
                    )
                    session.add(user)
                    await session.flush()
                    agent_ids.append(user.id)
            session.add(User(username="admin", display_name="管理员", password_hash=hashed, role=Role.ADMIN.value))
        return agent_ids
    finally:
        await engine.dispose()


_MEMBERS_SQL = """
INSERT INTO members (member_no, customer_type, member_type, status, name, mobile_e164, created_at, updated_at, version)
SELECT 'M' || lpad(g::text, 9, '0'), 'personal', 'standard', 'active', '会员' || g,
       '+86139' || lpad(g::text, 8, '0'), now(), now(), 1
FROM generate_series(1, $1::int) g
"""

# One row per call; every random draw is a column of `s`, the rest follows from it.
_CALLS_SQL = """
INSERT INTO calls (pbx, linkedid, state, direction, caller_raw, caller_e164, caller_name, callee_raw, callee_e164,
                   dnis, queue, member_id, agent_endpoint, agent_user_id, started_at, answered_at, ended_at,
                   wait_s, ring_s, talk_s, wrapup_s, outcome, hangup_cause, disposition, recording_file,
                   transfers, revision, updated_at)
SELECT 'default', 'bench-' || g, 'ended', direction,
       caller, caller, NULL, '4008001000', '+864008001000', '4008001000', queue,
       member_id, CASE WHEN answered THEN 'agent' || (2000 + agent_index) END,
       CASE WHEN answered THEN ($2::int[])[agent_index + 1] END,
       started_at,
       CASE WHEN answered THEN started_at + make_interval(secs => wait_s) END,
       started_at + make_interval(secs => wait_s + coalesce(talk_s, 0)),
       wait_s, CASE WHEN answered THEN 3 + r_ring * 10 END, talk_s,
       CASE WHEN answered THEN 5 + r_talk * 60 END,
       outcome, CASE WHEN answered THEN 'NORMAL_CLEARING' ELSE 'NO_ANSWER' END,
       CASE WHEN answered THEN (ARRAY['resolved','follow_up','transferred','wrong_number','complaint','sale'])
            [1 + floor(r_disp * 6)::int] END,
       CASE WHEN answered AND r_rec < 0.9 THEN 'bench/' || g || '.wav' END,
       CASE WHEN answered AND r_rec > 0.97 THEN 1 ELSE 0 END, 1, now()
FROM (
    SELECT g, r_ring, r_talk, r_disp, r_rec, agent_index, outcome, outcome = 'answered' AS answered,
           CASE WHEN r_dir < 0.85 THEN 'inbound' WHEN r_dir < 0.98 THEN 'outbound' ELSE 'internal' END AS direction,
           CASE WHEN r_queue < 0.7 THEN 'member-service' ELSE 'vip' END AS queue,
           CASE WHEN r_member < 0.6 THEN 1 + floor(r_member / 0.6 * $3)::int END AS member_id,
           CASE WHEN r_member < 0.6 THEN '+86139' || lpad((1 + floor(r_member / 0.6 * $3)::int)::text, 8, '0')
                ELSE '+86138' || lpad(floor(r_member * 1e8)::bigint::text, 8, '0') END AS caller,
           timestamptz '{start}' + make_interval(days => floor(r_day * {days})::int,
               secs => CASE WHEN r_hour < 0.95 THEN 8 * 3600 + r_hour / 0.95 * 12 * 3600
                            ELSE (r_hour - 0.95) / 0.05 * 24 * 3600 END) AS started_at,
           CASE WHEN outcome = 'answered' THEN 2 + r_wait * 40 ELSE 10 + r_wait * 120 END AS wait_s,
           CASE WHEN outcome = 'answered' THEN 20 + (r_talk ^ 2) * 1200 END AS talk_s
    FROM (
        SELECT *, CASE WHEN r_out < 0.80 THEN 'answered' WHEN r_out < 0.89 THEN 'abandoned'
                       WHEN r_out < 0.94 THEN 'no_answer' WHEN r_out < 0.96 THEN 'busy'
                       WHEN r_out < 0.98 THEN 'failed' ELSE 'lost' END AS outcome
        FROM (
            SELECT g, random() AS r_day, random() AS r_hour, random() AS r_dir, random() AS r_queue,
                   random() AS r_member, random() AS r_wait, random() AS r_ring, random() AS r_talk,
                   random() AS r_disp, random() AS r_rec, random() AS r_out,
                   floor(random() * $4)::int AS agent_index
            FROM generate_series(1, $1::int) g
        ) raw
    ) drawn
) s
"""

# Answered calls: 20 % rang another agent first; missed calls rang one agent.
_OFFERS_SQL = """
INSERT INTO call_agents (call_id, seq, agent_endpoint, agent_user_id, rang_at, ring_s, answered, via)
SELECT id, 0, 'agent' || (2000 + other), ($1::int[])[other + 1], started_at + interval '2 seconds', 15, false, 'queue'
FROM (SELECT id, started_at, (id::bigint * 7919 % $2)::int AS other FROM calls
      WHERE outcome = 'no_answer' OR (outcome = 'answered' AND id % 5 = 0)) c;
"""
_TAKERS_SQL = """
INSERT INTO call_agents (call_id, seq, agent_endpoint, agent_user_id, rang_at, ring_s, answered, via)
SELECT id, CASE WHEN id % 5 = 0 THEN 1 ELSE 0 END, agent_endpoint, agent_user_id,
       answered_at - make_interval(secs => ring_s), ring_s, true, 'queue'
FROM calls WHERE outcome = 'answered'
"""


async def build(calls: int, fresh: bool) -> tuple[str, dict[str, Any]]:
    label = f"{calls // 1_000_000}m" if calls % 1_000_000 == 0 else str(calls)
    name = f"{BENCH_PREFIX}calllog_{label}"
    url = pg_url(name)
    if not fresh and await pg_database_exists(name) and await _usable(url, calls):
        log(f"reusing {name}; --fresh rebuilds it")
        return url, {"database": name, "reused": True}
    log(f"building {name}")
    url = await create_pg_database(name)
    started = time.perf_counter()
    agent_ids = await _people(url)
    start = dt.datetime.combine(
        END_DAY - dt.timedelta(days=DAYS - 1), dt.time(), tzinfo=dt.timezone(dt.timedelta(hours=8))
    )
    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute(_MEMBERS_SQL, MEMBERS)
        log(f"{MEMBERS:,} members in {time.perf_counter() - started:.1f} s")
        await conn.execute(
            _CALLS_SQL.format(start=start.isoformat(), days=DAYS), calls, agent_ids, MEMBERS, len(agent_ids)
        )
        log(f"{calls:,} calls in {time.perf_counter() - started:.1f} s")
        await conn.execute(_OFFERS_SQL, agent_ids, len(agent_ids))
        await conn.execute(_TAKERS_SQL)
        offers = await conn.fetchval("SELECT count(*) FROM call_agents")
        log(f"{offers:,} call_agents rows in {time.perf_counter() - started:.1f} s")
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    elapsed = time.perf_counter() - started
    return url, {"database": name, "reused": False, "build_s": round(elapsed, 1), "call_agents": offers}


def _cases(agent_id: int, number: str, member_id: int) -> dict[str, dict[str, str]]:
    """Typical filters: (name -> query parameters), dates relative to the data's last day."""
    last = END_DAY
    week = {"date_from": str(last - dt.timedelta(days=6)), "date_to": str(last)}
    month = {"date_from": str(last - dt.timedelta(days=29)), "date_to": str(last)}
    return {
        "no filter": {},
        "today": {"date_from": str(last), "date_to": str(last)},
        "last 7 days": week,
        "agent, 30 days": month | {"agent": str(agent_id)},
        "vip answered, 7 days": week | {"queue": "vip", "outcome": "answered"},
        "talk >= 10 min, 30 days": month | {"min_talk": "600"},
        "complaints, 30 days": month | {"disposition": "complaint"},
        "recorded inbound, 7 days": week | {"has_recording": "true", "direction": "inbound"},
        "number": {"number": number},
        "member": {"member": str(member_id)},
    }


async def _principal(sessions: Any, username: str) -> Principal:
    async with read_session(sessions) as session:
        return await security.principal_by_username(session, username)


async def _deep_cursors(sessions: Any, who: Principal, depths: list[int]) -> dict[int, str]:
    """The cursor after `depth` rows of the unfiltered review (found once with OFFSET, untimed)."""
    cursors = {}
    async with read_session(sessions) as session:
        for depth in depths:
            statement = review_statement(who, CallFilter(), TZ).offset(depth - 1).limit(1)
            row = (await session.execute(statement)).first()
            if row is not None:  # a small --calls has fewer rows than the deepest page
                cursors[depth] = encode_cursor(row.started_at, row.id)
    return cursors


async def one_run(url: str, reps: int, explain: bool) -> dict[str, Any]:
    engine = make_engine(url, pool_size=4)
    sessions = make_sessionmaker(engine)
    try:
        # As the panel resolves a supervisor's session: team T1 serves member-service, so sup1 also sees
        # that queue's unanswered calls (crm_core/calllog/access.py).
        supervisor = dataclasses.replace(
            await _principal(sessions, "sup1"), supervised_queues=frozenset({"member-service"})
        )
        agent = await _principal(sessions, "agent03")
        conn = await asyncpg.connect(_dsn(url))
        try:
            member_id, number = await conn.fetchrow(
                "SELECT member_id, caller_e164 FROM calls c JOIN users u ON u.id = c.agent_user_id "
                "JOIN org_units o ON o.id = u.org_unit_id WHERE o.code = 'T1' AND member_id IS NOT NULL "
                "ORDER BY c.id LIMIT 1"
            )
        finally:
            await conn.close()
        cases: list[tuple[str, Principal, CallFilter, str | None]] = []
        for name, params in _cases(agent.user_id, number, member_id).items():
            cases.append((f"supervisor: {name}", supervisor, CallFilter.model_validate(params), None))
        for depth, cursor in (await _deep_cursors(sessions, supervisor, [1_000, 10_000, 100_000])).items():
            cases.append((f"supervisor: keyset page at row {depth:,}", supervisor, CallFilter(), cursor))
        for depth, cursor in (await _deep_cursors(sessions, agent, [1_000, 10_000])).items():
            cases.append((f"agent: keyset page at row {depth:,}", agent, CallFilter(), cursor))
        cases.append(("agent: first page", agent, CallFilter(), None))
        cases.append(("agent: last 7 days", agent, CallFilter.model_validate(_cases(0, "", 0)["last 7 days"]), None))
        plans = {}
        if explain:
            plans = await _explain(sessions, cases)
        timings: dict[str, list[float]] = {name: [] for name, *_ in cases}
        rows: dict[str, int] = {}
        for _ in range(2):  # warm-up: the pool's connections and the buffer cache
            for _name, who, spec, cursor in cases:
                async with read_session(sessions) as session:
                    await review_page(session, who, spec, timezone=TZ, cursor=cursor, limit=50)
        for _ in range(reps):
            for name, who, spec, cursor in cases:
                started = time.perf_counter()
                async with read_session(sessions) as session:
                    page = await review_page(session, who, spec, timezone=TZ, cursor=cursor, limit=50)
                timings[name].append(time.perf_counter() - started)
                rows[name] = len(page.rows)
        every = [t for values in timings.values() for t in values]
        hard = await _hard_cases(sessions, supervisor, agent)
        return {
            "overall": latency_summary(every),
            "cases": {name: latency_summary(values) | {"rows": rows[name]} for name, values in timings.items()},
            "hard_cases": hard,
            "plans": plans,
        }
    finally:
        await engine.dispose()


def _hard_filters() -> dict[str, dict[str, str]]:
    last = END_DAY
    week = {"date_from": str(last - dt.timedelta(days=6)), "date_to": str(last)}
    month = {"date_from": str(last - dt.timedelta(days=29)), "date_to": str(last)}
    return {
        # Unanswered calls have no agent, so a supervisor sees none: the whole range is read for nothing.
        "supervisor: missed, 7 days (none visible)": week | {"outcome": "missed"},
        "supervisor: abandoned, 30 days (none visible)": month | {"outcome": "abandoned"},
        "supervisor: talk >= 19.5 min, all days (rare)": {"min_talk": "1170"},
        "agent: missed, 30 days": month | {"outcome": "missed"},
        "admin: abandoned, 7 days": week | {"outcome": "abandoned"},
    }


async def _hard_cases(sessions: Any, supervisor: Principal, agent: Principal) -> dict[str, Any]:
    """Filters that match few or no visible rows: not the goal's typical pages, reported apart so the
    cost of an empty answer is on record (median of 3 after one warm-up)."""
    admin = await _principal(sessions, "admin")
    out = {}
    for name, params in _hard_filters().items():
        who = agent if name.startswith("agent") else admin if name.startswith("admin") else supervisor
        spec = CallFilter.model_validate(params)
        took = []
        for _ in range(4):
            started = time.perf_counter()
            async with read_session(sessions) as session:
                page = await review_page(session, who, spec, timezone=TZ, limit=50)
            took.append(time.perf_counter() - started)
        out[name] = {"median_ms": round(sorted(took[1:])[1] * 1000, 1), "rows": len(page.rows)}
    return out


async def _explain(sessions: Any, cases: list[tuple[str, Principal, CallFilter, str | None]]) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of each case's statement, for the README and for index decisions."""
    from crm_core.calllog.review import _after, decode_cursor

    plans = {}
    async with read_session(sessions) as session:
        for name, who, spec, cursor in cases:
            statement = review_statement(who, spec, TZ)
            if cursor:
                statement = statement.where(_after(decode_cursor(cursor)))
            sql = statement.limit(51).compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
            result = await session.connection()
            text = "\n".join(r[0] for r in (await result.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")).all())
            plans[name] = text
    return plans


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions of each case per run")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each case to stderr")
    args = parser.parse_args()
    url, data = await build(args.calls, args.fresh)
    runs = []
    for n in range(args.runs):
        run = await one_run(url, args.reps, args.explain and n == 0)
        for name, plan in run.pop("plans").items():
            log(f"--- {name}\n{plan}")
        log(f"run {n + 1}: p50 {run['overall']['p50_ms']} ms, p99 {run['overall']['p99_ms']} ms")
        runs.append(run)
    overall = [r["overall"] for r in runs]
    names = list(runs[0]["cases"])
    emit(
        {
            "bench": "calllog_review",
            "calls": args.calls,
            "data": data,
            "runs": args.runs,
            "queries_per_run": overall[0]["samples"],
            "page_rows": 50,
            "p50_ms": median_of(overall, "p50_ms"),
            "p99_ms": median_of(overall, "p99_ms"),
            "max_ms": median_of(overall, "max_ms"),
            "goal_p99_ms": 50,
            "cases": {
                name: {
                    "p50_ms": median_of([r["cases"][name] for r in runs], "p50_ms"),
                    "p99_ms": median_of([r["cases"][name] for r in runs], "p99_ms"),
                    "rows": runs[0]["cases"][name]["rows"],
                }
                for name in names
            },
            "hard_cases": {
                name: {
                    "median_ms": round(statistics.median(r["hard_cases"][name]["median_ms"] for r in runs), 1),
                    "rows": runs[0]["hard_cases"][name]["rows"],
                }
                for name in runs[0]["hard_cases"]
            },
            "peak_rss_mib": peak_rss_mib(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
