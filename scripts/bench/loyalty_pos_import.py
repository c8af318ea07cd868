"""POS transaction import throughput: `import_transactions_file` earning points on PostgreSQL.

Why: a store chain sends its POS exports (one day: 100k–200k receipts) and the points must be booked with
the earning rules (Sifan 100 元 → 2), as lots with expiry, ledger entries, balances and immediate tier
upgrades (pharmacy tiers 1,200 / 5,000 per quarter) — goal >= 5,000 transactions/s.

Set-up (once per bench): a database cti_bench_pos_<pid> with `--members` demo members and the seed tiers,
and a CSV of `--rows` transactions for those members (member number 60 %, mobile 40 %; amounts ¥5–¥3,000,
a third with two category lines; 1 % returns of an earlier sale, 70 % of them whole and 30 % half of it;
0.1 % rows for unknown members).
Each run empties the loyalty tables, resets the tiers, and imports the file in a child process (so its
peak RSS is its own); then a second import of the same file measures the idempotent re-run.

    .venv/bin/python scripts/bench/loyalty_pos_import.py --rows 150000 --members 20000 --runs 3

JSON on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common
from sqlalchemy import text

from crm_core.db import make_engine
from crm_core.settings import Settings

GOAL_TX_PER_S = 5_000
HEADER = ("单据号", "交易时间", "门店", "会员号", "手机号", "金额", "明细", "类型", "原单据号")
RESET = (
    "TRUNCATE loyalty_pos_transactions, points_allocations, points_entries, points_lots, points_accounts, "
    "loyalty_tier_changes, loyalty_member_tiers CASCADE",
    "UPDATE members SET member_type = 'standard' WHERE member_type <> 'standard'",
)


async def _members(url: str) -> list[tuple[str, str]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT member_no, coalesce(mobile_e164, '') FROM members ORDER BY id"))
            return [(number, mobile) for number, mobile in rows]
    finally:
        await engine.dispose()


def write_csv(path: Path, rows: int, members: list[tuple[str, str]], seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    sales: list[tuple[str, int]] = []
    returns = unknown = 0
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(HEADER)
        for n in range(rows):
            day = 1 + n * 240 // rows  # spread over Jan–Aug 2026 in file order
            clock = f"{rng.randint(9, 21):02d}:{rng.randint(0, 59):02d}:00"
            when = f"2026-{1 + (day - 1) // 30:02d}-{1 + (day - 1) % 28:02d} {clock}"
            store = f"青叶药房{rng.randint(1, 40)}店"
            if sales and rng.random() < 0.01:
                original, sold = sales.pop(rng.randrange(len(sales)))
                back = sold if rng.random() < 0.7 else max(1, sold // 2)  # whole, or half (a partial return)
                out.writerow((f"R{n:08d}", when, store, "", "", f"-{back / 100:.2f}", "", "退货", original))
                returns += 1
                continue
            number, mobile = members[rng.randrange(len(members))]
            if rng.random() < 0.001:
                number, mobile = f"NOPE{n}", ""
                unknown += 1
            by_mobile = bool(mobile) and rng.random() < 0.4
            fen = rng.randint(500, 300_000)
            lines = ""
            if rng.random() < 0.33:
                part = rng.randint(1, fen - 1) if fen > 1 else 0
                lines = f"药品:{part / 100:.2f};保健品:{(fen - part) / 100:.2f}"
            out.writerow(
                (
                    f"S{n:08d}",
                    when,
                    store,
                    "" if by_mobile else number,
                    mobile.removeprefix("+86") if by_mobile else "",
                    f"{fen / 100:.2f}",
                    lines,
                    "销售",
                    "",
                )
            )
            sales.append((f"S{n:08d}", fen))
    return {"rows": rows, "returns": returns, "unknown_member_rows": unknown}


async def _child(url: str, csv_path: Path, run: int, workdir: Path, profile: bool) -> dict[str, Any]:
    """Reset the loyalty tables, import, then import the same file again; runs in its own process."""
    import cProfile
    import pstats

    from crm_core.loyalty.pos_import import import_transactions_file

    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in RESET:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()
    settings = Settings(database_url=url)
    profiler = cProfile.Profile() if profile else None
    started, cpu_started = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    report = await import_transactions_file(
        settings, csv_path, errors_path=workdir / f"errors_{run}.csv", progress=False
    )
    if profiler is not None:
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats(os.environ.get("BENCH_PROFILE_SORT", "tottime"))
        stats.print_stats(int(os.environ.get("BENCH_PROFILE_LINES", "30")))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if report.fatal:
        raise SystemExit(f"import failed: {report.fatal}")
    again_started = time.perf_counter()
    again = await import_transactions_file(
        settings, csv_path, errors_path=workdir / f"errors_again_{run}.csv", progress=False
    )
    again_wall = time.perf_counter() - again_started
    peak_rss = common.peak_rss_mib()  # before the reconcile below, which reads every lot into memory
    from crm_core.db import make_sessionmaker, transaction
    from crm_core.loyalty import ledger

    engine = make_engine(url)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            differences = len(await ledger.reconcile(session))
    finally:
        await engine.dispose()
    return {
        "run": run,
        "rows": report.rows,
        "sales": report.sales,
        "returns": report.returns,
        "errors": report.errors,
        "points_granted": report.points_granted,
        "points_clawed_back": report.points_clawed_back,
        "tier_upgrades": report.upgrades,
        "wall_s": round(wall, 3),
        "process_cpu_s": round(cpu, 3),
        "tx_per_s": round(report.rows / wall),
        "reimport_imported": again.imported,
        "reimport_skipped": again.skipped,
        "reimport_tx_per_s": round(again.rows / again_wall),
        "reconcile_differences": differences,
        "peak_rss_mib": peak_rss,
    }


async def _prepare(name: str, members: int, seed: int) -> str:
    from crm_core import demo
    from crm_core.db import make_sessionmaker, transaction
    from crm_core.loyalty import tiers

    url = await common.create_pg_database(name)
    settings = Settings(database_url=url)
    await demo.ensure_demo_users(settings)
    await demo.generate_demo_members(settings, members, seed=seed, progress=False)
    engine = make_engine(url)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await tiers.seed_tiers(session)
        async with engine.connect() as conn:
            await conn.execute(text("ANALYZE"))
    finally:
        await engine.dispose()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--profile", action="store_true", help="cProfile each import (stderr; slows it down)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(asyncio.run(_child(args.child, args.csv, args.run, args.workdir, args.profile))))
        return

    name = f"{common.BENCH_PREFIX}pos_{os.getpid()}"
    try:
        started = time.perf_counter()
        url = asyncio.run(_prepare(name, args.members, args.seed))
        common.log(f"{args.members:,} members ready in {time.perf_counter() - started:.1f} s")
        members = asyncio.run(_members(url))
        with tempfile.TemporaryDirectory(prefix="cti_bench_pos_") as tmp:
            workdir = Path(tmp)
            csv_path = workdir / "pos_export.csv"
            file_info: dict[str, Any] = dict(write_csv(csv_path, args.rows, members, args.seed))
            file_info["bytes"] = csv_path.stat().st_size
            runs = []
            for run in range(args.runs):
                child = subprocess.run(
                    [
                        sys.executable, __file__, "--child", url, "--csv", str(csv_path),
                        "--run", str(run), "--workdir", str(workdir),
                    ] + (["--profile"] if args.profile else []),
                    check=True, stdout=subprocess.PIPE, cwd=common.REPO,
                )  # fmt: skip
                result = json.loads(child.stdout.decode().strip().splitlines()[-1])
                common.log(f"run {run}: {result['tx_per_s']:,} tx/s, {result['peak_rss_mib']} MiB peak")
                runs.append(result)
    finally:
        asyncio.run(common.drop_pg_database(name))
    median = statistics.median(r["tx_per_s"] for r in runs)
    common.emit(
        {
            "bench": "loyalty_pos_import",
            "engine": "postgresql",
            "rows": args.rows,
            "members": args.members,
            "runs": args.runs,
            "file": file_info,
            "median_tx_per_s": round(median),
            "median_reimport_tx_per_s": round(statistics.median(r["reimport_tx_per_s"] for r in runs)),
            "goal_tx_per_s": GOAL_TX_PER_S,
            "goal_met": median >= GOAL_TX_PER_S,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "each_run": runs,
            "load_average": os.getloadavg(),
            "machine": common.machine(),
        }
    )


if __name__ == "__main__":
    main()
