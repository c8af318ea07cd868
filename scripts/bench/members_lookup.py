"""Caller-ID lookup and member 360 latency on PostgreSQL with 1,000,000 demo members.

Why: the screen pop must show the caller's member record while the phone is still ringing, so
`lookup_by_phone` (goal p99 < 2 ms) and `member_360` (goal p99 < 10 ms) are measured in process,
through an AsyncSession opened per call exactly as a request would, on a realistic mix of numbers:
own mobiles (as PBXs present them: 138…, 86138…, +86 138…), shared home landlines, contact
persons' mobiles, company switchboards, unknown numbers and garbage caller IDs.

    .venv/bin/python scripts/bench/members_lookup.py --members 1000000 --runs 5

JSON on stdout; progress on stderr. The demo database is cached between runs (see _common).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import make_engine, make_sessionmaker, read_session
from crm_core.member360 import member_360
from crm_core.members.lookup import lookup_by_phone
from crm_core.phones import parse_phone
from crm_core.security.policy import Principal
from crm_core.security.service import principal_by_username

GOALS = {"lookup_p99_ms": 2.0, "member_360_p99_ms": 10.0}
# Share of each kind of caller number in the lookup mix.
MIX = {
    "own_mobile": 0.40,
    "shared_landline": 0.15,
    "contact_person": 0.15,
    "switchboard": 0.05,
    "unknown": 0.15,
    "garbage": 0.10,
}
GARBAGE = ("", "anonymous", "Anonymous", "unknown", "+", "12345", "0", "abc", "\x00", "1380013800", "8888888888888888")


def _as_presented(e164: str, rng: random.Random) -> str:
    """A stored number the way a PBX or a person would present it."""
    national = parse_phone(e164).national  # "138 0013 8000" or "010 1234 5678"
    digits = national.replace(" ", "").replace("-", "")
    forms = (digits, e164, e164[1:], national, "0086" + e164[3:])
    return forms[rng.randrange(len(forms))]


async def _number_pools(sessions: async_sessionmaker[AsyncSession], size: int, seed: int) -> dict[str, list[str]]:
    """Stored numbers of each kind (E.164), drawn from what the database really holds."""
    rng = random.Random(seed)
    async with sessions() as session:
        low, high = (await session.execute(text("SELECT min(id), max(id) FROM members"))).one()
        ids = [rng.randint(low, high) for _ in range(size)]
        mobiles = list(
            (
                await session.execute(text("SELECT mobile_e164 FROM members WHERE id = ANY(:ids)"), {"ids": ids})
            ).scalars()
        )
        shared = list(
            (
                await session.execute(
                    text(
                        "SELECT phone_e164 FROM member_contacts WHERE kind = 'home' "
                        "GROUP BY phone_e164 HAVING count(DISTINCT member_id) > 1"
                    )
                )
            ).scalars()
        )
        persons = list(
            (
                await session.execute(
                    text(
                        "SELECT phone_e164 FROM member_contacts WHERE kind = 'contact_person' AND member_id = ANY(:ids)"
                    ),
                    {"ids": ids},
                )
            ).scalars()
        )
        boards = list((await session.execute(text("SELECT phone_e164 FROM organisations"))).scalars())
        # Unknown callers: valid mobiles one digit away from members' numbers, checked to be absent.
        candidates = sorted({m[:-1] + str((int(m[-1]) + 1) % 10) for m in mobiles})
        present = set(
            (
                await session.execute(
                    text("SELECT phone_e164 FROM member_contacts WHERE phone_e164 = ANY(:p)"), {"p": candidates}
                )
            ).scalars()
        )
    pools = {
        "own_mobile": mobiles,
        "shared_landline": shared,
        "contact_person": persons,
        "switchboard": boards,
        "unknown": [c for c in candidates if c not in present],
    }
    for kind, pool in pools.items():
        if not pool:
            raise SystemExit(f"no {kind} numbers in the database: is it demo data?")
    return pools


def _caller_numbers(pools: dict[str, list[str]], count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, caller number) pairs in MIX proportions, shuffled."""
    numbers = []
    for kind, share in MIX.items():
        for _ in range(max(1, round(share * count))):
            if kind == "garbage":
                numbers.append((kind, GARBAGE[rng.randrange(len(GARBAGE))]))
            else:
                pool = pools[kind]
                numbers.append((kind, _as_presented(pool[rng.randrange(len(pool))], rng)))
    rng.shuffle(numbers)
    return numbers


async def _one_run(
    sessions: async_sessionmaker[AsyncSession],
    principal: Principal,
    pools: dict[str, list[str]],
    run: int,
    lookups: int,
    views: int,
    id_range: tuple[int, int],
) -> dict[str, Any]:
    rng = random.Random(run)
    numbers = _caller_numbers(pools, lookups, rng)
    member_ids = [rng.randint(*id_range) for _ in range(views)]
    clock = time.perf_counter
    gc.collect()

    by_kind: dict[str, list[float]] = defaultdict(list)
    candidates: dict[str, list[int]] = defaultdict(list)
    lookup_s = []
    for kind, number in numbers:
        start = clock()
        # One read session per incoming call, as the screen pop opens it (cti/crm.py: read_session,
        # autocommit on PostgreSQL).
        async with read_session(sessions) as session:
            found = await lookup_by_phone(session, number)
        elapsed = clock() - start
        lookup_s.append(elapsed)
        by_kind[kind].append(elapsed)
        candidates[kind].append(len(found))

    view_s = []
    for member_id in member_ids:
        start = clock()
        async with read_session(sessions) as session:
            await member_360(session, principal, member_id)
        view_s.append(clock() - start)

    return {
        "run": run,
        "lookup": common.latency_summary(lookup_s),
        "lookup_by_kind": {
            kind: common.latency_summary(values)
            | {"mean_candidates": round(sum(candidates[kind]) / len(candidates[kind]), 2)}
            for kind, values in sorted(by_kind.items())
        },
        "member_360": common.latency_summary(view_s),
        # Other work on the machine shows up in p99 (a preempted request waits a whole time slice).
        "load_1min": round(os.getloadavg()[0], 2),
    }


async def _profile(
    sessions: async_sessionmaker[AsyncSession],
    principal: Principal,
    pools: dict[str, list[str]],
    id_range: tuple[int, int],
) -> None:
    """cProfile of 2,000 lookups and 500 views, top functions to stderr (for finding where time goes)."""
    rng = random.Random(99)
    numbers = _caller_numbers(pools, 2_000, rng)
    ids = [rng.randint(*id_range) for _ in range(500)]
    profiler = cProfile.Profile()
    profiler.enable()
    for _, number in numbers:
        async with read_session(sessions) as session:
            await lookup_by_phone(session, number)
    for member_id in ids:
        async with read_session(sessions) as session:
            await member_360(session, principal, member_id)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(40)
    common.log("profile (by own time):\n" + out.getvalue())


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=5_000, help="lookups per run")
    parser.add_argument("--views", type=int, default=2_000, help="member 360 views per run")
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached demo database")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of lookups and views")
    args = parser.parse_args()

    url, database = await common.cached_demo_database(args.members, args.seed, fresh=args.fresh)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as session:
            principal = await principal_by_username(session, "agent1")
            low, high = (await session.execute(text("SELECT min(id), max(id) FROM members"))).one()
        id_range = (int(low), int(high))
        pools = await _number_pools(sessions, args.lookups, args.seed)
        # Warm-up: connection pool, SQLAlchemy's statement cache, phonenumbers metadata, OS page cache.
        common.log("warming up")
        await _one_run(sessions, principal, pools, -1, 1_000, 300, id_range)
        runs = []
        for run in range(args.runs):
            result = await _one_run(sessions, principal, pools, run, args.lookups, args.views, id_range)
            common.log(
                f"run {run}: lookup p50 {result['lookup']['p50_ms']} ms p99 {result['lookup']['p99_ms']} ms; "
                f"360 p50 {result['member_360']['p50_ms']} ms p99 {result['member_360']['p99_ms']} ms"
            )
            runs.append(result)
        if args.profile:
            await _profile(sessions, principal, pools, id_range)
    finally:
        await engine.dispose()

    lookups = [r["lookup"] for r in runs]
    views = [r["member_360"] for r in runs]
    median = {
        "lookup_p50_ms": common.median_of(lookups, "p50_ms"),
        "lookup_p99_ms": common.median_of(lookups, "p99_ms"),
        "member_360_p50_ms": common.median_of(views, "p50_ms"),
        "member_360_p99_ms": common.median_of(views, "p99_ms"),
    }
    common.emit(
        {
            "bench": "members_lookup",
            "engine": "postgresql",
            "members": args.members,
            "seed": args.seed,
            "runs": args.runs,
            "lookups_per_run": args.lookups,
            "views_per_run": args.views,
            "mix": MIX,
            "median": median,
            "goals": GOALS,
            "goals_met": {key: median[key] < goal for key, goal in GOALS.items()},
            "each_run": runs,
            "database": database,
            "peak_rss_mib": common.peak_rss_mib(),
            "load_average": os.getloadavg(),
            "machine": common.machine(),
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
