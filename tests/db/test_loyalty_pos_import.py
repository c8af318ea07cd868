"""`cti import transactions` on both engines with the seed's numbers (Sifan: 100 元 → 2 points, ¥468.00 → 9;
pharmacy tiers: 1,200 qualifying points in a quarter → 金卡): idempotence, returns, per-row errors."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import ledger, tiers
from crm_core.loyalty.models import LotState, PointsLot, PosTransaction
from crm_core.loyalty.pos_import import PosImportReport, import_transactions_file
from crm_core.members.models import Card, Member
from crm_core.settings import Settings
from tests.db import factories

pytestmark = pytest.mark.db

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "pos" / "sample_zh.csv"
HEADER = ("transaction id", "time", "store", "member number", "card number", "mobile", "amount", "lines", "type",
          "original transaction id")  # fmt: skip
_mobiles = itertools.count(13900100000)


async def new_member(sessions: async_sessionmaker[AsyncSession], settings: Settings, mobile: str | None = None) -> int:
    joined = await factories.member(sessions, settings, mobile=mobile or str(next(_mobiles)))
    return joined.member_id


async def member_no(sessions: async_sessionmaker[AsyncSession], member: int) -> str:
    async with transaction(sessions) as session:
        return (await session.execute(select(Member.member_no).where(Member.id == member))).scalar_one()


async def valid_points(sessions: async_sessionmaker[AsyncSession], member: int) -> ledger.Balances:
    async with transaction(sessions) as session:
        return await ledger.balances(session, member)


async def no_differences(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with transaction(sessions) as session:
        assert await ledger.reconcile(session) == []


async def count(sessions: async_sessionmaker[AsyncSession], model: type[PointsLot] | type[PosTransaction]) -> int:
    async with transaction(sessions) as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=HEADER)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


async def run(settings: Settings, path: Path, **kwargs: object) -> PosImportReport:
    report = await import_transactions_file(settings, path, progress=False, **kwargs)  # type: ignore[arg-type]
    assert report.fatal is None, report.fatal
    assert report.rows == report.imported + report.skipped + report.errors
    return report


async def test_sample_file_earns_the_seed_points_and_claws_back_the_return(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    first = await new_member(sessions, settings, "13800138000")
    second = await new_member(sessions, settings, "13800138001")
    report = await run(settings, SAMPLE)
    assert (report.rows, report.sales, report.returns, report.skipped, report.errors) == (4, 3, 1, 0, 0)
    # ¥100.00 → 2, ¥468.00 → 9.36 → 9 (floored once), ¥250.00 → 5 then returned.
    assert (report.points_granted, report.points_clawed_back) == (16, 5)
    assert (await valid_points(sessions, first)).valid == 11
    assert (await valid_points(sessions, second)) == ledger.Balances()
    async with transaction(sessions) as session:
        states = dict((await session.execute(select(PointsLot.transaction_ref, PointsLot.state))).all())
        returned = (await session.execute(select(PosTransaction).where(PosTransaction.kind == "return"))).scalar_one()
    assert states == {"S-0001": LotState.VALID, "S-0002": LotState.VALID, "S-0003": LotState.CLAWED_BACK}
    assert (returned.original_id, returned.amount_fen, returned.points, returned.member_id) == (
        "S-0003",
        25_000,
        5,
        second,
    )
    await no_differences(sessions)


async def test_reimporting_the_same_file_changes_nothing(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    first = await new_member(sessions, settings, "13800138000")
    await new_member(sessions, settings, "13800138001")
    await run(settings, SAMPLE, errors_path=tmp_path / "e1.csv")
    lots, transactions, balances = (
        await count(sessions, PointsLot),
        await count(sessions, PosTransaction),
        await valid_points(sessions, first),
    )
    again = await run(settings, SAMPLE, errors_path=tmp_path / "e2.csv")
    assert (again.rows, again.imported, again.skipped, again.errors, again.points_granted) == (4, 0, 4, 0, 0)
    assert again.points_clawed_back == 0
    assert (await count(sessions, PointsLot), await count(sessions, PosTransaction)) == (lots, transactions)
    assert await valid_points(sessions, first) == balances
    assert not (tmp_path / "e2.csv").exists()  # a clean import leaves no error report
    await no_differences(sessions)


async def test_member_number_card_and_mobile_all_name_the_member_and_an_xlsx_reads_the_same(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    member = await new_member(sessions, settings)
    number = await member_no(sessions, member)
    async with transaction(sessions) as session:
        session.add(Card(card_no="C-777", member_id=member, status="active"))
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(HEADER))
    sheet.append(["X1", dt.datetime(2026, 5, 10, 10, 0), "一店", number, None, None, 100, None, None, None])
    sheet.append(["X2", "2026-05-10 11:00", "一店", None, "C-777", None, "50.00", None, "sale", None])
    mobile = (await factories_mobile(sessions, member))[-11:]
    sheet.append(["X3", "2026-05-10T12:00:00+08:00", "一店", None, None, mobile, "1,000.00", None, None, None])
    book.save(tmp_path / "pos.xlsx")
    report = await run(settings, tmp_path / "pos.xlsx")
    assert (report.imported, report.errors, report.points_granted) == (3, 0, 2 + 1 + 20)
    assert (await valid_points(sessions, member)).valid == 23
    async with transaction(sessions) as session:
        first_time = (
            await session.execute(select(PosTransaction.occurred_at).where(PosTransaction.transaction_id == "X1"))
        ).scalar_one()
    assert first_time == dt.datetime(2026, 5, 10, 2, 0, tzinfo=dt.UTC)  # naive POS times are Shanghai time


async def factories_mobile(sessions: async_sessionmaker[AsyncSession], member: int) -> str:
    async with transaction(sessions) as session:
        mobile = (await session.execute(select(Member.mobile_e164).where(Member.id == member))).scalar_one()
    assert mobile is not None
    return mobile


async def test_bad_rows_are_reported_and_the_good_rows_imported(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    member = await new_member(sessions, settings)
    number = await member_no(sessions, member)

    def sale(tx: str, amount: str = "100.00", when: str = "2026-05-10 10:00", who: str = number) -> dict[str, str]:
        return {"transaction id": tx, "time": when, "member number": who, "amount": amount}

    path = write_csv(
        tmp_path / "pos.csv",
        [
            sale("G1"),  # row 2
            sale("B1", who="NOPE-1"),  # row 3: unknown member
            sale("B2", amount="12.345"),  # row 4: bad amount
            sale("B3", when="yesterday"),  # row 5: bad time
            sale("G1", amount="200.00"),  # row 6: same id, different content
            sale("G1"),  # row 7: same id, same content: skipped
            {
                "transaction id": "R9",
                "time": "2026-05-11 10:00",
                "amount": "-10.00",
                "type": "return",
                "original transaction id": "NEVER",
            },  # row 8: return of an unknown sale
            sale("G2", amount="500.00"),  # row 9
            sale("B4", amount="-5.00"),  # row 10: negative sale
        ],
    )
    errors = tmp_path / "errors.csv"
    report = await run(settings, path, errors_path=errors)
    assert (report.rows, report.imported, report.skipped, report.errors) == (9, 2, 1, 6)
    assert report.points_granted == 2 + 10
    assert (await valid_points(sessions, member)).valid == 12
    reasons = {(e.row, e.column): e.reason for e in report.error_rows}
    assert reasons[(3, "member number")] == "unknown member"
    assert reasons[(4, "amount")].startswith("bad amount")
    assert reasons[(5, "time")].startswith("bad time")
    assert reasons[(6, "transaction id")] == "duplicate with different content (first at row 2)"
    assert reasons[(8, "original transaction id")] == "return of an unknown sale"
    assert reasons[(10, "amount")].startswith("bad amount")
    with errors.open(encoding="utf-8-sig") as stream:
        written = list(csv.reader(stream))
    assert written[0] == ["row", "column", "value", "reason"]
    assert [int(line[0]) for line in written[1:]] == [3, 4, 5, 6, 8, 10]
    assert written[1][2] == "NOPE-1"

    # The id reused with other content in a later file is refused too, and changes nothing.
    later = write_csv(tmp_path / "later.csv", [sale("G2", amount="900.00")])
    refused = await run(settings, later, errors_path=tmp_path / "later-errors.csv")
    assert (refused.imported, refused.errors) == (0, 1)
    assert refused.error_rows[0].reason == "duplicate with different content (already imported)"
    assert (await valid_points(sessions, member)).valid == 12
    await no_differences(sessions)


async def test_a_return_in_a_later_file_claws_back_also_spent_points_and_is_not_repeated(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    member = await new_member(sessions, settings)
    number = await member_no(sessions, member)
    sales = write_csv(
        tmp_path / "sales.csv",
        [
            {"transaction id": "S1", "time": "2026-05-10 10:00", "member number": number, "amount": "500.00"},
            {"transaction id": "S2", "time": "2026-05-10 11:00", "member number": number, "amount": "150.00"},
        ],
    )
    assert (await run(settings, sales)).points_granted == 10 + 3
    async with transaction(sessions) as session:
        await ledger.spend(session, member, 11, ref="gift")
    returns = write_csv(
        tmp_path / "returns.csv",
        [
            {
                "transaction id": "R1",
                "time": "2026-05-12 10:00",
                "amount": "-500.00",
                "type": "return",
                "original transaction id": "S1",
            },
            {
                "transaction id": "R2",
                "time": "2026-05-12 11:00",
                "amount": "-500.00",
                "type": "退货",
                "original transaction id": "S1",
            },
        ],
    )
    report = await run(settings, returns, errors_path=tmp_path / "errors.csv")
    assert (report.returns, report.errors) == (1, 1)
    assert report.error_rows[0].reason == "sale already returned"
    # The spend took S1's lot first (same expiry, older lot): all 10 used, so 2 are recovered from S2's
    # lot and 8 are owed as debt (the ledger's shortfall policy).
    assert report.points_clawed_back == 10
    balances = await valid_points(sessions, member)
    assert (balances.valid, balances.debt, balances.lifetime) == (0, 8, 3)
    again = await run(settings, returns, errors_path=tmp_path / "errors2.csv")
    assert (again.imported, again.skipped, again.errors, again.points_clawed_back) == (0, 1, 1, 0)
    assert await valid_points(sessions, member) == balances
    await no_differences(sessions)


async def test_imported_points_upgrade_the_tier_at_the_seed_threshold(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    member = await new_member(sessions, settings)
    number = await member_no(sessions, member)
    async with transaction(sessions) as session:
        await tiers.seed_tiers(session)

    def sale(tx: str, amount: str) -> dict[str, str]:
        return {"transaction id": tx, "time": "2026-05-10 10:00", "member number": number, "amount": amount}

    almost = await run(settings, write_csv(tmp_path / "a.csv", [sale("T1", "59950.00")]))
    assert (almost.points_granted, almost.upgrades) == (1_199, 0)
    report = await run(settings, write_csv(tmp_path / "b.csv", [sale("T2", "50.00")]))
    assert (report.points_granted, report.upgrades) == (1, 1)  # 1,200 in the quarter → 金卡 at once
    async with transaction(sessions) as session:
        assert (await session.execute(select(Member.member_type).where(Member.id == member))).scalar_one() == "gold"
        history = [(c.from_tier, c.to_tier) for c in await tiers.tier_history(session, member)]
    assert history == [("standard", "gold")]


async def test_dry_run_checks_everything_and_writes_nothing(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    await new_member(sessions, settings, "13800138000")
    await new_member(sessions, settings, "13800138001")
    report = await run(settings, SAMPLE, dry_run=True)
    assert (report.imported, report.errors, report.points_granted) == (4, 0, 16)
    assert (await count(sessions, PosTransaction), await count(sessions, PointsLot)) == (0, 0)


async def test_a_file_without_the_required_columns_imports_nothing(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,when\n1,2026-05-10\n", encoding="utf-8")
    report = await import_transactions_file(settings, path, progress=False)
    assert report.fatal is not None and "missing column" in report.fatal
    assert await count(sessions, PosTransaction) == 0


async def test_one_row_batches_in_flight_together_give_the_same_result(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """With one row per batch the return (row 5) is checked while its sale's batch (row 4) may still be
    uncommitted on PostgreSQL: it must still claw the sale back."""
    first = await new_member(sessions, settings, "13800138000")
    second = await new_member(sessions, settings, "13800138001")
    report = await run(settings, SAMPLE, batch_rows=1)
    assert (report.sales, report.returns, report.errors) == (3, 1, 0)
    assert (report.points_granted, report.points_clawed_back) == (16, 5)
    assert (await valid_points(sessions, first)).valid == 11
    assert (await valid_points(sessions, second)).valid == 0
    await no_differences(sessions)


async def test_unknown_members_are_reported_with_the_mobile_as_written(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    report = await run(settings, SAMPLE, errors_path=tmp_path / "errors.csv")
    assert [(e.row, e.column, e.value, e.reason) for e in report.error_rows] == [
        (2, "手机号", "13800138000", "unknown member"),
        (3, "手机号", "13800138000", "unknown member"),
        (4, "手机号", "13800138001", "unknown member"),
        (5, "原单据号", "S-0003", "return of an unknown sale"),
    ]
    assert await count(sessions, PosTransaction) == 0
