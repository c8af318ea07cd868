"""Shared helpers for the benchmarks in scripts/bench: statistics, peak memory, throw-away databases.

Why a module: every bench reports the same figures (median, p50, p99, peak RSS) the same way and
needs PostgreSQL databases it may create and drop (named cti_bench_*, never anything else), plus
one expensive cached database with 1,000,000 demo members that takes minutes to build.
JSON goes to stdout, everything else (progress, log lines) to stderr.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as `python scripts/bench/x.py` from anywhere
    sys.path.insert(0, str(REPO))

from crm_core import migrate  # noqa: E402
from crm_core.demo import ensure_demo_users, generate_demo_members  # noqa: E402
from crm_core.settings import Settings  # noqa: E402

PG_ADMIN_URL = os.environ.get("CTI_BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
BENCH_PREFIX = "cti_bench_"


def log(message: str) -> None:
    """Progress for the person running the bench; stdout is reserved for the JSON result."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    json.dump(result, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 5,000 samples is the 4,950th smallest): no interpolation."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p99/max/mean in milliseconds, rounded for reading."""
    return {
        "p50_ms": round(percentile(seconds, 50) * 1000, 3),
        "p99_ms": round(percentile(seconds, 99) * 1000, 3),
        "max_ms": round(max(seconds) * 1000, 3),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 3),
        "samples": len(seconds),
    }


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float:
    return round(statistics.median(float(run[key]) for run in runs), 3)


def peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(peak / scale, 1)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def _check_name(name: str) -> None:
    if not name.startswith(BENCH_PREFIX) or not name.replace("_", "").isalnum():
        raise ValueError(f"benchmarks only touch databases named {BENCH_PREFIX}*: {name!r}")


async def _admin() -> Any:
    url = make_url(PG_ADMIN_URL)
    return await asyncpg.connect(
        host=url.host or "/var/run/postgresql",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        database=url.database or "postgres",
    )


def pg_url(name: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def pg_database_exists(name: str) -> bool:
    admin = await _admin()
    try:
        return bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await admin.close()


async def drop_pg_database(name: str) -> None:
    _check_name(name)
    admin = await _admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def create_pg_database(name: str) -> str:
    """A fresh, migrated database (dropped first if it exists); returns its SQLAlchemy URL."""
    _check_name(name)
    await drop_pg_database(name)
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = pg_url(name)
    await migrate.upgrade(url)
    return url


async def _member_count(url: str) -> int | None:
    """Members in a cached database, or None if it is not usable (missing tables, old schema)."""
    conn = await asyncpg.connect(make_url(url).render_as_string(hide_password=False).replace("+asyncpg", ""))
    try:
        expected = ScriptDirectory.from_config(migrate.alembic_config(url)).get_current_head()
        current = await conn.fetchval("SELECT version_num FROM alembic_version")
        if current != expected:
            return None
        return int(await conn.fetchval("SELECT count(*) FROM members"))
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()


async def cached_demo_database(members: int, seed: int, *, fresh: bool = False) -> tuple[str, dict[str, Any]]:
    """A PostgreSQL database with exactly `members` demo members of `seed`, kept between runs.

    Building 1,000,000 members takes minutes, so the database cti_bench_members_<n>_<seed> is
    reused when its schema is at the Alembic head and its member count is right; a smaller count
    at the current schema (an interrupted build) is completed; anything else is rebuilt, and
    `fresh` always rebuilds. Several benches share this database: a PostgreSQL advisory lock
    makes a second bench wait for a build in progress instead of dropping it. Returns the URL
    and how it was obtained (reused, or built with the generation time and rate).
    """
    label = f"{members // 1_000_000}m" if members % 1_000_000 == 0 else str(members)
    name = f"{BENCH_PREFIX}members_{label}_{seed}"
    url = pg_url(name)
    lock = await _admin()
    try:
        if not await lock.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", name):
            log(f"another bench is building {name}: waiting for it")
            await lock.execute("SELECT pg_advisory_lock(hashtext($1))", name)
        count = None if fresh or not await pg_database_exists(name) else await _member_count(url)
        if count == members:
            log(f"reusing {name} ({count:,} members); --fresh rebuilds it")
            await ensure_demo_users(Settings(database_url=url))
            return url, {"database": name, "reused": True}
        if count is not None and count < members:
            log(f"{name} has {count:,} of {members:,} members: completing it")
        else:
            log(f"building {name}" + ("" if count is None else f" (it had {count:,} members, not {members:,})"))
            url = await create_pg_database(name)
        settings = Settings(database_url=url)
        await ensure_demo_users(settings)
        log(f"generating {members:,} demo members (seed {seed}) into {name}")
        started = time.perf_counter()
        inserted = await generate_demo_members(settings, members, seed=seed, progress=sys.stderr.isatty())
        elapsed = time.perf_counter() - started
        await _analyze(url)
    finally:
        await lock.close()  # ends the session, which releases the advisory lock
    log(f"generated {inserted:,} members in {elapsed:.1f} s ({inserted / elapsed:,.0f} members/s)")
    return url, {
        "database": name,
        "reused": False,
        "completed_from": count,
        "generation_s": round(elapsed, 1),
        "generation_members_per_s": round(inserted / elapsed),
    }


async def _analyze(url: str) -> None:
    """Fresh statistics, as autovacuum would produce after a while: plans then match production."""
    conn = await asyncpg.connect(make_url(url).render_as_string(hide_password=False).replace("+asyncpg", ""))
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
