"""`cti import transactions FILE`: POS sales and returns (CSV/XLSX) into the points ledger.

Contract (what an operator can rely on):

* Nothing is imported when the file cannot be used at all (empty, unreadable, no transaction id / time /
  amount / member column): `PosImportReport.fatal` says why.
* Otherwise every data row ends up in exactly one count: imported, skipped (already imported) or error.
  Bad rows never stop good ones: each gets a line in the error report (row as numbered in Excel, header =
  row 1; the column's header text; the value; the reason) — unknown member, bad amount, bad time,
  duplicate with different content, return of an unknown sale, sale already returned…
* Idempotent by transaction id (`loyalty_pos_transactions`): a row whose id was imported before with the
  same content is skipped, so importing a file twice changes nothing; a row reusing an imported id (or an
  id earlier in the same file) with different content is an error and is not applied. Two imports of one
  file at once cannot book a sale twice: the transaction row is inserted with ON CONFLICT DO NOTHING first
  and only the inserts that won book points.
* A sale earns points with the earning rules in force at the sale's time (rule_book.py: the database's
  rules with their validity windows; Sifan's 100 元 → 2 points when none is set) for the member's tier at
  the start of its batch, as one valid lot expiring at the Sifan clearing; the member is
  upgraded at once when the period's qualifying points reach a tier (as `earning.earn_purchase` does).
  Sales earning 0 points are recorded but book no lot.
* A return (type return + original transaction id) claws back the returned share of the sale's points
  through `ledger.refund` (its shortfall policy applies). A sale may be returned in parts: after returns
  totalling R of a sale of amount A that earned P points, ⌊P × R / A⌋ points have been reversed in all,
  so the whole sale returned reverses exactly P however it was split, and a part returned reverses its
  share of any band offset or multiplier too (a reading: the seeds only say "deduct the points earned").
  The return's member is the sale's member. A return of a sale that is neither stored nor earlier in the
  file, of a sale already wholly returned, or of more than is left of it, is an error.
* `dry_run`: every check runs and the report counts what would be imported and the points it would grant,
  but nothing is written (returns of sales in the same file are checked against the file).

Speed: rows are read and parsed in a worker thread one batch ahead; each batch is one transaction with a
fixed number of statements (member look-ups, known ids, the transaction rows, the lots, the entries, one
executemany for the balances, one sum per tier period), plus `tiers.apply_upgrade` only for the members
whose period points reach a tier, and the returns through `bulk_refund.refund_many` (a fixed number of
statements when the points are still in the sale's lots, `ledger.refund` for the members where not).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import among, insert_for, is_sqlite, make_engine, transaction, utcnow
from crm_core.importers.member_rows import RowError
from crm_core.importers.members import (
    MAX_ERRORS_KEPT,
    WRITERS_IN_FLIGHT,
    _default_errors_path,
    _ErrorReport,
    _fewer_collections,
    _import_sessions,
    _progress_bar,
)
from crm_core.importers.pipeline import run_pipelined
from crm_core.importers.tabular import TableReader, UnreadableFile, open_table
from crm_core.loyalty import bulk_refund, pos_copy, rule_book, tiers
from crm_core.loyalty.models import (
    EntryKind,
    LotSource,
    LotState,
    PointsAccount,
    PointsEntry,
    PointsLot,
    PosTransaction,
    TierPeriod,
)
from crm_core.loyalty.pos_rows import Columns, HeaderProblem, PosRow, parse_batch, resolve_columns
from crm_core.loyalty.rules import SHANGHAI, EarningRules, Purchase, points_for, sifan_expiry
from crm_core.members.models import Card, Member
from crm_core.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 2_000
_IN_CHUNK = 900  # ids per IN (...) list on SQLite; PostgreSQL gets one array parameter
T = TypeVar("T")
_Batch = tuple[int, list[PosRow], list[RowError]]  # rows read, good rows, bad rows
_KEY_COLUMNS = {"member_no": Member.member_no, "mobile": Member.mobile_e164, "card_no": Card.card_no}


@dataclass(slots=True)
class PosImportReport:
    """What an import did; `rows` = imported + skipped + errors."""

    path: Path
    source: str = ""
    dry_run: bool = False
    rows: int = 0
    imported: int = 0
    sales: int = 0
    returns: int = 0
    skipped: int = 0  # already imported (same transaction id, same content)
    errors: int = 0
    points_granted: int = 0
    points_clawed_back: int = 0
    upgrades: int = 0
    error_rows: list[RowError] = field(default_factory=list)
    errors_path: Path | None = None
    fatal: str | None = None
    elapsed_s: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        if self.fatal:
            return f"{self.path.name}: nothing imported: {self.fatal}"
        verb = "would import" if self.dry_run else "imported"
        lines = [
            f"{self.path.name} ({self.source}): {self.rows:,} rows read in {self.elapsed_s:.1f} s "
            f"({self.rows_per_s:,.0f} rows/s): {verb} {self.imported:,} ({self.sales:,} sales, "
            f"{self.returns:,} returns), {self.skipped:,} skipped as already imported, {self.errors:,} errors; "
            f"points granted {self.points_granted:,}, clawed back {self.points_clawed_back:,}, "
            f"tier upgrades {self.upgrades:,}" + (" (dry run: nothing written)" if self.dry_run else "")
        ]
        if self.errors_path is not None:
            lines.append(f"error report: {self.errors_path}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Member:
    id: int
    tier: str
    joined_on: dt.date


@dataclass(slots=True)
class _BatchOutcome:
    imported: int = 0
    sales: int = 0
    returns: int = 0
    skipped: int = 0
    points_granted: int = 0
    points_clawed_back: int = 0
    upgrades: int = 0
    errors: list[RowError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Sale:
    member_id: int
    amount_fen: int
    points: int


@dataclass(frozen=True, slots=True)
class _Stored:
    content_hash: str
    kind: str
    sale: _Sale


def clawback_points(sale_points: int, sale_fen: int, returned_before_fen: int, returning_fen: int) -> int:
    """Points a return reverses: the step in ⌊P × returned / amount⌋ (see the module docstring)."""
    if sale_fen == 0:
        return sale_points if returning_fen == 0 and returned_before_fen == 0 else 0
    before = sale_points * returned_before_fen // sale_fen
    return sale_points * (returned_before_fen + returning_fen) // sale_fen - before


@dataclass(slots=True)
class _FileState:
    """What earlier rows of this file established, for rows later in it."""

    seen: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (content hash, row)
    sales: dict[str, _Sale] = field(default_factory=dict)  # sales accepted in (or confirmed by) this file
    returned: dict[str, int] = field(default_factory=dict)  # sale id -> fen returned by this file's rows


def _chunks(values: Iterable[T], size: int) -> Iterable[list[T]]:
    items = list(values)
    for start in range(0, len(items), size):
        yield items[start : start + size]


class PosWriter:
    """Checks a parsed batch against the database and books it in one transaction."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        columns: Columns,
        rules_at: Callable[[dt.datetime], EarningRules],
        *,
        dry_run: bool = False,
        postgres: bool = False,
    ) -> None:
        self.sessions = sessions
        self.columns = columns
        self.rules_at = rules_at
        self.dry_run = dry_run
        self.file = _FileState()
        self._tiers: list[tiers.Tier] | None = None
        self._last: tuple[asyncio.Event, asyncio.Event] | None = None  # the previous batch's checked, locked
        self.postgres = postgres
        self.chunk = 1_000_000 if postgres else _IN_CHUNK

    def _error(self, row: PosRow, column: str, value: str, reason: str) -> RowError:
        return RowError(row.row, self.columns.header_text[column], value, reason)

    async def _members(self, session: AsyncSession, rows: list[PosRow]) -> dict[tuple[str, str], _Member]:
        wanted: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            if row.member_key[0]:
                wanted[row.member_key[0]].add(row.member_key[1])
        found: dict[tuple[str, str], _Member] = {}
        for kind, values in wanted.items():
            for chunk in _chunks(values, self.chunk):
                key_column = {"member_no": Member.member_no, "mobile": Member.mobile_e164, "card_no": Card.card_no}[
                    kind
                ]
                stmt = select(key_column, Member.id, Member.member_type, Member.created_at)
                if kind == "card_no":
                    stmt = stmt.select_from(Card).join(Member, Member.id == Card.member_id)
                for key, member_id, tier, created_at in await session.execute(
                    stmt.where(among(session, key_column, chunk))
                ):
                    if key is not None:
                        found[(kind, key)] = _Member(member_id, tier, created_at.astimezone(SHANGHAI).date())
        return found

    async def _stored(self, session: AsyncSession, ids: Iterable[str]) -> dict[str, _Stored]:
        """Imported transactions among `ids`."""
        stored: dict[str, _Stored] = {}
        for chunk in _chunks(ids, self.chunk):
            rows = await session.execute(
                select(
                    PosTransaction.transaction_id,
                    PosTransaction.content_hash,
                    PosTransaction.kind,
                    PosTransaction.member_id,
                    PosTransaction.amount_fen,
                    PosTransaction.points,
                ).where(among(session, PosTransaction.transaction_id, chunk))
            )
            for tx, digest, kind, member, fen, points in rows:
                stored[tx] = _Stored(digest, kind, _Sale(member, fen, points))
        return stored

    async def _returned(self, session: AsyncSession, originals: Iterable[str]) -> dict[str, int]:
        """Sale id -> fen already returned by imported returns."""
        returned: dict[str, int] = {}
        for chunk in _chunks(originals, self.chunk):
            rows = await session.execute(
                select(PosTransaction.original_id, func.sum(PosTransaction.amount_fen))
                .where(among(session, PosTransaction.original_id, chunk), PosTransaction.kind == "return")
                .group_by(PosTransaction.original_id)
            )
            returned.update({original: int(fen) for original, fen in rows if original})
        return returned

    async def write(self, rows: list[PosRow]) -> _BatchOutcome:
        """Check and book one batch in one transaction. Batches may overlap (PostgreSQL: two in flight):
        their database look-ups run concurrently, but each batch's row checks wait for the previous
        batch's, so the file's rows are judged in file order."""
        previous, checked, locked = self._last, asyncio.Event(), asyncio.Event()
        self._last = (checked, locked)
        try:
            async with transaction(self.sessions) as session:
                if self._tiers is None:
                    self._tiers = await tiers.load_tiers(session)
                return await self._write(session, rows, previous, checked, locked)
        finally:
            checked.set()
            locked.set()

    async def _write(
        self,
        session: AsyncSession,
        rows: list[PosRow],
        previous: tuple[asyncio.Event, asyncio.Event] | None,
        checked: asyncio.Event,
        locked: asyncio.Event,
    ) -> _BatchOutcome:
        outcome = _BatchOutcome()
        members = await self._members(session, rows)
        stored = await self._stored(session, {row.transaction_id for row in rows})
        originals = {row.original_id for row in rows if row.original_id}
        stored_originals = await self._stored(session, originals - stored.keys()) | stored
        returned = await self._returned(session, originals)
        if previous is not None:
            await previous[0].wait()
        sales: list[tuple[PosRow, _Member, int]] = []
        returns: list[tuple[PosRow, int, int]] = []  # (row, member id, points to reverse)
        for row in rows:
            earlier = self.file.seen.get(row.transaction_id)
            known = stored.get(row.transaction_id)
            if earlier is not None:
                if earlier[0] == row.content_hash:
                    outcome.skipped += 1
                else:
                    outcome.errors.append(
                        self._error(
                            row,
                            "transaction_id",
                            row.transaction_id,
                            f"duplicate with different content (first at row {earlier[1]})",
                        )
                    )
                continue
            if known is not None:
                if known.content_hash == row.content_hash:
                    self.file.seen[row.transaction_id] = (row.content_hash, row.row)
                    outcome.skipped += 1
                    if known.kind == "sale":
                        self.file.sales[row.transaction_id] = known.sale
                else:
                    outcome.errors.append(
                        self._error(
                            row,
                            "transaction_id",
                            row.transaction_id,
                            "duplicate with different content (already imported)",
                        )
                    )
                continue
            if row.kind == "sale":
                member = members.get(row.member_key)
                if member is None:
                    outcome.errors.append(self._error(row, row.member_key[0], row.member_given, "unknown member"))
                    continue
                points = points_for(
                    Purchase(lines=row.lines, occurred_at=row.occurred_at, tier=member.tier),
                    self.rules_at(row.occurred_at),
                )
                sales.append((row, member, points))
                self.file.sales[row.transaction_id] = _Sale(member.id, row.amount_fen, points)
            else:
                original = row.original_id or ""
                sale = self.file.sales.get(original)
                if sale is None:
                    stored_sale = stored_originals.get(original)
                    if stored_sale is not None and stored_sale.kind == "sale":
                        sale = stored_sale.sale
                if sale is None:
                    outcome.errors.append(self._error(row, "original_id", original, "return of an unknown sale"))
                    continue
                before = returned.get(original, 0) + self.file.returned.get(original, 0)
                if before >= sale.amount_fen and before > 0:
                    outcome.errors.append(self._error(row, "original_id", original, "sale already returned"))
                    continue
                if before + row.amount_fen > sale.amount_fen:
                    outcome.errors.append(
                        self._error(
                            row,
                            "amount",
                            f"{row.amount_fen / 100:.2f}",
                            f"returns more than is left of the sale ({(sale.amount_fen - before) / 100:.2f})",
                        )
                    )
                    continue
                if row.member_key[0]:
                    named = members.get(row.member_key)
                    if named is None or named.id != sale.member_id:
                        outcome.errors.append(
                            self._error(row, row.member_key[0], row.member_given, "not the member of the original sale")
                        )
                        continue
                self.file.returned[original] = self.file.returned.get(original, 0) + row.amount_fen
                points = clawback_points(sale.points, sale.amount_fen, before, row.amount_fen)
                returns.append((row, sale.member_id, points))
            self.file.seen[row.transaction_id] = (row.content_hash, row.row)
        checked.set()
        if self.dry_run:
            outcome.sales = len(sales)
            outcome.returns = len(returns)
            outcome.imported = outcome.sales + outcome.returns
            outcome.points_granted = sum(points for _, _, points in sales)
            return outcome
        # Every account this batch changes, locked at once in member-id order (the ledger's lock order),
        # so two batches in flight wait for each other instead of deadlocking; a return then reads the
        # lots of a sale the previous batch booked once that batch has committed.
        # The previous batch takes all its locks first: a return here of a sale booked there then waits
        # for that batch to commit before it reads the sale's lots.
        accounts = sorted({member.id for _, member, points in sales if points > 0} | {m for _, m, _ in returns})
        await self._ensure_accounts(session, accounts)
        if previous is not None:
            await previous[1].wait()
        for chunk in _chunks(accounts, self.chunk):
            await session.execute(
                select(PointsAccount.member_id)
                .where(among(session, PointsAccount.member_id, chunk))
                .order_by(PointsAccount.member_id)
                .with_for_update()
            )
        locked.set()
        await self._book_sales(session, sales, outcome)
        await self._book_returns(session, returns, outcome)
        return outcome

    async def _ensure_accounts(self, session: AsyncSession, member_ids: list[int]) -> None:
        """Create the missing points accounts. On PostgreSQL in a short transaction of its own, so the
        batch's locks are then taken in one ordered pass (an empty account is a valid account)."""
        missing = set(member_ids)
        for chunk in _chunks(member_ids, self.chunk):
            rows = await session.execute(
                select(PointsAccount.member_id).where(among(session, PointsAccount.member_id, chunk))
            )
            missing.difference_update(rows.scalars())
        if not missing:
            return
        if self.postgres:
            async with transaction(self.sessions) as own:
                await pos_copy.create_accounts(own, sorted(missing), utcnow())
            return
        values = [{"member_id": member_id} for member_id in sorted(missing)]
        stmt = insert_for(session, PointsAccount.__table__).on_conflict_do_nothing(index_elements=["member_id"])
        await session.execute(stmt, values)

    async def _insert_transactions(self, session: AsyncSession, values: list[dict[str, object]]) -> set[str]:
        """Insert transaction rows; returns the ids this import won (a concurrent one may hold the rest)."""
        if not values:
            return set()
        if self.postgres:
            return await pos_copy.insert_transactions(session, values, utcnow())
        table = PosTransaction.__table__
        stmt = insert_for(session, table).on_conflict_do_nothing(index_elements=["transaction_id"])
        # executemany with RETURNING (SQLAlchemy's insertmanyvalues): one cached statement, batched rows.
        result = await session.execute(stmt.returning(table.c.transaction_id), values)
        return set(result.scalars())

    async def _book_sales(
        self, session: AsyncSession, sales: list[tuple[PosRow, _Member, int]], outcome: _BatchOutcome
    ) -> None:
        now = utcnow()
        won = await self._insert_transactions(
            session,
            [
                {
                    "transaction_id": row.transaction_id,
                    "kind": "sale",
                    "member_id": member.id,
                    "occurred_at": row.occurred_at,
                    "store": row.store,
                    "amount_fen": row.amount_fen,
                    "original_id": None,
                    "points": points,
                    "content_hash": row.content_hash,
                    "imported_at": now,
                }
                for row, member, points in sales
            ],
        )
        outcome.skipped += len(sales) - len(won)  # another import booked them meanwhile
        booked = [(row, member, points) for row, member, points in sales if row.transaction_id in won]
        outcome.sales += len(booked)
        outcome.imported += len(booked)
        earning = [(row, member, points) for row, member, points in booked if points > 0]
        if not earning:
            return
        outcome.points_granted += sum(points for _, _, points in earning)
        if self.postgres:
            await pos_copy.book_earnings(
                session,
                [
                    (
                        member.id,
                        points,
                        row.occurred_at,
                        sifan_expiry(row.occurred_at, member.joined_on),
                        row.transaction_id,
                    )
                    for row, member, points in earning
                ],
                now,
            )
            outcome.upgrades += await self._upgrade(session, earning)
            return
        member_ids = sorted({member.id for _, member, _ in earning})
        lot_ids = (
            (
                await session.execute(
                    insert_for(session, PointsLot.__table__).returning(
                        PointsLot.__table__.c.id, sort_by_parameter_order=True
                    ),
                    [
                        {
                            "member_id": member.id,
                            "source": LotSource.PURCHASE,
                            "state": LotState.VALID,
                            "amount": points,
                            "remaining": points,
                            "qualifying": True,
                            "earned_at": row.occurred_at,
                            "expires_at": sifan_expiry(row.occurred_at, member.joined_on),
                            "transaction_ref": row.transaction_id,
                            "name": None,
                        }
                        for row, member, points in earning
                    ],
                )
            )
            .scalars()
            .all()
        )
        await session.execute(
            insert_for(session, PointsEntry.__table__),
            [
                {
                    "member_id": member.id,
                    "kind": EntryKind.EARN,
                    "valid_change": points,
                    "pending_change": 0,
                    "debt_change": 0,
                    "held_change": 0,
                    "lot_id": lot_id,
                    "ref": row.transaction_id,
                    "reason": "POS sale",
                    "created_by": None,
                    "created_at": now,
                }
                for (row, member, points), lot_id in zip(earning, lot_ids, strict=True)
            ],
        )
        per_member: dict[int, int] = defaultdict(int)
        for _, member, points in earning:
            per_member[member.id] += points
        table = cast(Table, PointsAccount.__table__)
        await session.execute(
            update(table)
            .where(table.c.member_id == bindparam("m_id"))
            .values(
                valid=table.c.valid + bindparam("points"),
                lifetime=table.c.lifetime + bindparam("points"),
                qualifying=table.c.qualifying + bindparam("points"),
                version=table.c.version + 1,
                updated_at=now,
            ),
            [{"m_id": member_id, "points": per_member[member_id]} for member_id in member_ids],
        )
        outcome.upgrades += await self._upgrade(session, earning)

    async def _upgrade(self, session: AsyncSession, earning: list[tuple[PosRow, _Member, int]]) -> int:
        """`tiers.apply_upgrade` for the members whose period points now reach a tier above the base one.

        One grouped sum per tier period window touched finds them, so members far from a threshold cost
        nothing more."""
        tier_list = self._tiers or []
        if len(tier_list) < 2:
            return 0
        periods = sorted({tier.period for tier in tier_list})
        base = min(tier_list, key=lambda tier: tier.rank)
        latest: dict[tuple[int, tuple[dt.datetime, ...]], dt.datetime] = {}
        for row, member, _ in earning:
            windows = tuple(tiers.period_bounds(period, row.occurred_at)[0] for period in periods)
            key = (member.id, windows)
            latest[key] = max(latest.get(key, row.occurred_at), row.occurred_at)
        sums: dict[tuple[int, TierPeriod, dt.datetime], int] = {}
        wanted: dict[tuple[TierPeriod, dt.datetime], set[int]] = defaultdict(set)
        for (member_id, windows), _ in latest.items():
            for period, start in zip(periods, windows, strict=True):
                wanted[(period, start)].add(member_id)
        for (period, start), member_ids in wanted.items():
            end = tiers.period_bounds(period, start)[1]
            ordered = sorted(member_ids)
            for chunk in _chunks(ordered, self.chunk):
                rows = await session.execute(
                    select(PointsLot.member_id, func.sum(PointsLot.amount - PointsLot.clawed_back))
                    .where(
                        among(session, PointsLot.member_id, chunk),
                        PointsLot.qualifying.is_(True),
                        PointsLot.source != LotSource.ESCROW_RELEASE,
                        PointsLot.state.in_([LotState.VALID, LotState.EXPIRED]),
                        PointsLot.earned_at >= start,
                        PointsLot.earned_at < end,
                    )
                    .group_by(PointsLot.member_id)
                )
                for member_id, total in rows:
                    sums[(member_id, period, start)] = int(total)
        upgrades = 0
        for (member_id, windows), at in sorted(latest.items(), key=lambda item: (item[0][0], item[1])):
            points = {
                period: sums.get((member_id, period, start), 0) for period, start in zip(periods, windows, strict=True)
            }
            if tiers.deserved_tier(tier_list, points).rank > base.rank:
                upgrades += await tiers.apply_upgrade(session, member_id, at) is not None
        return upgrades

    async def _book_returns(
        self, session: AsyncSession, returns: list[tuple[PosRow, int, int]], outcome: _BatchOutcome
    ) -> None:
        if not returns:
            return
        now = utcnow()
        won = await self._insert_transactions(
            session,
            [
                {
                    "transaction_id": row.transaction_id,
                    "kind": "return",
                    "member_id": member_id,
                    "occurred_at": row.occurred_at,
                    "store": row.store,
                    "amount_fen": row.amount_fen,
                    "original_id": row.original_id,
                    "points": 0,
                    "content_hash": row.content_hash,
                    "imported_at": now,
                }
                for row, member_id, _ in returns
            ],
        )
        outcome.skipped += len(returns) - len(won)
        booked = [(row, member_id, points) for row, member_id, points in returns if row.transaction_id in won]
        # Member-id order, as the ledger locks accounts; one member's returns stay in file order.
        booked.sort(key=lambda item: (item[1], item[0].row))
        results = await bulk_refund.refund_many(
            session,
            [
                bulk_refund.Return(member_id, row.original_id or "", points, f"POS return {row.transaction_id}")
                for row, member_id, points in booked
            ],
        )
        clawed_by_return: list[dict[str, object]] = []
        for (row, _, _), result in zip(booked, results, strict=True):
            clawed = result.clawed_back + result.recovered_from_other_lots + result.debt
            clawed_by_return.append({"tx": row.transaction_id, "clawed": clawed})
            outcome.returns += 1
            outcome.imported += 1
            outcome.points_clawed_back += clawed
        if not clawed_by_return:
            return
        table = cast(Table, PosTransaction.__table__)
        await session.execute(
            update(table).where(table.c.transaction_id == bindparam("tx")).values(points=bindparam("clawed")),
            clawed_by_return,
        )


async def import_transactions_file(
    settings: Settings,
    path: Path,
    *,
    dry_run: bool = False,
    errors_path: Path | None = None,
    rules: EarningRules | None = None,
    encoding: str | None = None,
    progress: bool = True,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> PosImportReport:
    """Import POS transactions from `path` (see the module docstring); never raises for bad data."""
    started = time.perf_counter()
    path = Path(path)
    report = PosImportReport(path=path, dry_run=dry_run)
    if batch_rows < 1:
        raise ValueError("batch_rows must be positive")
    table: TableReader | None = None
    try:
        table = await asyncio.to_thread(open_table, path, encoding)
        report.source = table.description
        columns = resolve_columns(table.header)
        reader = table

        def read_and_parse() -> _Batch:
            raw = reader.read_batch(batch_rows)
            good, bad = parse_batch(raw, columns)
            return len(raw), good, bad

        first = await asyncio.to_thread(read_and_parse)
        if first[0] == 0:
            raise UnreadableFile("no data rows below the header")
    except (HeaderProblem, UnreadableFile) as exc:
        report.fatal = str(exc)
        if table is not None:
            await asyncio.to_thread(table.close)
        report.elapsed_s = time.perf_counter() - started
        return report

    errors_file = _ErrorReport(errors_path or _default_errors_path(path))
    engine = make_engine(settings.database_url)
    resources = contextlib.AsyncExitStack()
    try:
        sessions = await _import_sessions(engine, resources)
        postgres = not is_sqlite(settings.database_url)
        if rules is not None:
            fixed = rules
            rules_at: Callable[[dt.datetime], EarningRules] = lambda _moment: fixed  # noqa: E731
        else:
            async with transaction(sessions) as session:
                rules_at = (await rule_book.load(session)).earning_rules_at
        writer = PosWriter(sessions, columns, rules_at, dry_run=dry_run, postgres=postgres)
        # PostgreSQL: two batches in flight on two connections, so the server works on one while this
        # process checks the next (PosWriter.write keeps the row checks in file order). SQLite: one.
        depth = WRITERS_IN_FLIGHT if postgres else 1

        with _progress_bar(progress, f"import {path.name}") as show, _fewer_collections():

            async def settle(batch: _Batch, outcome: _BatchOutcome) -> None:
                read, _, bad = batch
                report.rows += read
                report.imported += outcome.imported
                report.sales += outcome.sales
                report.returns += outcome.returns
                report.skipped += outcome.skipped
                report.points_granted += outcome.points_granted
                report.points_clawed_back += outcome.points_clawed_back
                report.upgrades += outcome.upgrades
                batch_errors = sorted(bad + outcome.errors, key=lambda e: e.row)
                if batch_errors:
                    report.errors += len(batch_errors)
                    room = MAX_ERRORS_KEPT - len(report.error_rows)
                    report.error_rows.extend(batch_errors[: max(room, 0)])
                    await asyncio.to_thread(errors_file.write, batch_errors)
                done, total = reader.progress()
                show(done, total, report.rows)

            await run_pipelined(
                first,
                read_next=read_and_parse,
                has_rows=lambda batch: batch[0] > 0,
                write=lambda batch: writer.write(batch[1]),
                settle=settle,
                depth=depth,
            )
    finally:
        await asyncio.to_thread(table.close)
        await asyncio.to_thread(errors_file.close)
        await resources.aclose()
        await engine.dispose()
        report.elapsed_s = time.perf_counter() - started
    if errors_file.opened:
        report.errors_path = errors_file.path
    log.info("%s", report.summary())
    return report
