"""Suspicious-activity flags: four rules, each one SQL query over what the ledger already records.

* ``velocity`` — more than `velocity_per_day` redemption requests by one member on one local day;
* ``large_grant`` — a manual grant of more than `large_grant_points` points;
* ``earn_then_redeem`` — a redemption requested within `earn_redeem_minutes` after points were earned
  or granted (a lot's `earned_at`);
* ``shared_phone`` / ``shared_address`` — one phone number or one address (province, city, district,
  detail, compared trimmed and case-folded) on at least `shared_members` members.

The rules only read, so evaluating them twice gives the same flags. `run_rules` writes one
`MemberFlag` row per flagged member with ``ON CONFLICT DO NOTHING``: a second run changes nothing, the
row keeps when the member was first seen, and a flag staff set by hand is left as it is. A flagged
member's every later redemption waits for a second person (`redemption.request_redemption` reads
`MemberFlag`). Evidence names ids and counts, never the phone or address itself (that is member data
behind the field policy).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import insert_for
from crm_core.loyalty.models import EntryKind, LotSource, MemberFlag, PointsEntry, PointsLot, Redemption
from crm_core.members.models import Address, MemberContact
from crm_core.settings import Settings

RULES = ("velocity", "large_grant", "earn_then_redeem", "shared_phone", "shared_address")


@dataclass(frozen=True, slots=True)
class Thresholds:
    velocity_per_day: int = 3
    large_grant_points: int = 5_000
    earn_redeem_minutes: int = 10
    shared_members: int = 3
    timezone: str = "Asia/Shanghai"


def thresholds_from(settings: Settings) -> Thresholds:
    return Thresholds(
        velocity_per_day=settings.loyalty_flag_redemptions_per_day,
        large_grant_points=settings.loyalty_flag_grant_points,
        earn_redeem_minutes=settings.loyalty_flag_earn_redeem_minutes,
        shared_members=settings.loyalty_flag_shared_members,
        timezone=settings.timezone,
    )


@dataclass(frozen=True, slots=True)
class Flag:
    member_id: int
    rule: str
    evidence: str
    first_seen: dt.datetime | None  # from the data; None for the shared-contact rules (see `report`)


@dataclass(frozen=True, slots=True)
class RunResult:
    flags: list[Flag]
    members: int  # members with at least one flag
    newly_flagged: int  # MemberFlag rows this run added


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _offset_hours(timezone: str) -> int:
    """Asia/Shanghai has no DST, so one fixed offset turns UTC into the local calendar day."""
    offset = dt.datetime.now(ZoneInfo(timezone)).utcoffset() or dt.timedelta()
    return int(offset.total_seconds() // 3600)


def local_period(session: AsyncSession, column: Any, timezone: str, *, month: bool = False) -> ColumnElement[Any]:
    """The local calendar day (YYYY-MM-DD) or month (YYYY-MM) of a stored UTC instant, as text."""
    if _dialect(session) == "sqlite":
        hours = _offset_hours(timezone)
        return func.strftime("%Y-%m" if month else "%Y-%m-%d", column, f"{hours:+d} hours")
    return func.to_char(func.timezone(timezone, column), "YYYY-MM" if month else "YYYY-MM-DD")


def _within_minutes(session: AsyncSession, earlier: Any, later: Any, minutes: int) -> ColumnElement[bool]:
    """earlier <= later <= earlier + minutes, in each engine's date arithmetic."""
    if _dialect(session) == "sqlite":
        # julianday is a double (~20 µs resolution at today's dates): compare whole milliseconds.
        elapsed_ms = func.round((func.julianday(later) - func.julianday(earlier)) * 86_400_000)
        return and_(elapsed_ms >= 0, elapsed_ms <= minutes * 60_000)
    return and_(later >= earlier, later <= earlier + literal_column(f"interval '{int(minutes)} minutes'"))


async def velocity(session: AsyncSession, t: Thresholds) -> list[Flag]:
    day = local_period(session, Redemption.requested_at, t.timezone).label("day")
    rows = await session.execute(
        select(Redemption.member_id, day, func.count().label("n"), func.max(Redemption.requested_at).label("last"))
        .group_by(Redemption.member_id, day)
        .having(func.count() > t.velocity_per_day)
        .order_by(Redemption.member_id, day)
    )
    by_member: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        by_member[row.member_id].append(row)
    return [
        Flag(
            member_id,
            "velocity",
            "; ".join(f"{row.n} redemptions on {row.day}" for row in days),
            _utc(days[0].last),
        )
        for member_id, days in by_member.items()
    ]


async def large_grants(session: AsyncSession, t: Thresholds) -> list[Flag]:
    rows = await session.execute(
        select(
            PointsEntry.member_id,
            func.count().label("n"),
            func.max(PointsEntry.valid_change).label("largest"),
            func.min(PointsEntry.created_at).label("first"),
        )
        .where(PointsEntry.kind == EntryKind.MANUAL_GRANT, PointsEntry.valid_change > t.large_grant_points)
        .group_by(PointsEntry.member_id)
        .order_by(PointsEntry.member_id)
    )
    return [
        Flag(
            row.member_id,
            "large_grant",
            f"{row.n} manual grant(s) above {t.large_grant_points} points, largest {row.largest}",
            _utc(row.first),
        )
        for row in rows
    ]


async def earn_then_redeem(session: AsyncSession, t: Thresholds) -> list[Flag]:
    rows = await session.execute(
        select(
            Redemption.member_id,
            func.count(func.distinct(Redemption.id)).label("n"),
            func.min(Redemption.requested_at).label("first"),
        )
        .join(PointsLot, PointsLot.member_id == Redemption.member_id)
        .where(
            PointsLot.source.in_([LotSource.PURCHASE, LotSource.MANUAL_GRANT]),
            _within_minutes(session, PointsLot.earned_at, Redemption.requested_at, t.earn_redeem_minutes),
        )
        .group_by(Redemption.member_id)
        .order_by(Redemption.member_id)
    )
    return [
        Flag(
            row.member_id,
            "earn_then_redeem",
            f"{row.n} redemption(s) within {t.earn_redeem_minutes} min of earning",
            _utc(row.first),
        )
        for row in rows
    ]


async def _shared(
    session: AsyncSession,
    rule: str,
    table: type[MemberContact | Address],
    key: list[Any],
    owner: Any,
    t: Thresholds,
    *where: ColumnElement[bool],
) -> list[Flag]:
    """Members whose `key` (a phone, an address) at least `shared_members` distinct members have."""
    # Grouped by the labels: PostgreSQL sees `coalesce(district, $1)` and `coalesce(district, $2)` as
    # different expressions, so the select list would not match a GROUP BY of the expressions.
    labels = [k.label(f"k{i}") for i, k in enumerate(key)]
    groups = (
        select(*labels)
        .where(*where)
        .group_by(*labels)
        .having(func.count(func.distinct(owner)) >= t.shared_members)
        .subquery()
    )
    rows = await session.execute(
        select(owner.label("member_id"), *groups.c)
        .select_from(table)
        .where(*where)
        .distinct()
        .join(groups, and_(*[k == groups.c[f"k{i}"] for i, k in enumerate(key)]))
        .order_by(*groups.c, owner)
    )
    sharers: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for row in rows:
        sharers[tuple(row[1:])].append(row.member_id)
    evidence: dict[int, list[str]] = defaultdict(list)
    for members in sharers.values():
        for member_id in members:
            evidence[member_id].append(f"{len(members)} members: " + ", ".join(f"#{m}" for m in members))
    what = "phone" if rule == "shared_phone" else "address"
    return [
        Flag(member_id, rule, f"{what} shared by " + "; ".join(texts), None)
        for member_id, texts in sorted(evidence.items())
    ]


async def shared_phones(session: AsyncSession, t: Thresholds) -> list[Flag]:
    """The members' own numbers only: one relative or company contact person may stand for many."""
    own = MemberContact.kind != "contact_person"
    return await _shared(
        session, "shared_phone", MemberContact, [MemberContact.phone_e164], MemberContact.member_id, t, own
    )


async def shared_addresses(session: AsyncSession, t: Thresholds) -> list[Flag]:
    key = [
        Address.province,
        Address.city,
        func.coalesce(Address.district, ""),
        func.lower(func.trim(Address.detail)),
    ]
    return await _shared(session, "shared_address", Address, key, Address.member_id, t)


async def evaluate(session: AsyncSession, t: Thresholds) -> list[Flag]:
    """Every rule's flags, by member then rule; reads only."""
    flags: list[Flag] = []
    for rule in (velocity, large_grants, earn_then_redeem, shared_phones, shared_addresses):
        flags.extend(await rule(session, t))
    return sorted(flags, key=lambda f: (f.member_id, RULES.index(f.rule)))


async def run_rules(session: AsyncSession, t: Thresholds, now: dt.datetime) -> RunResult:
    """Evaluate the rules and flag each member they name once (idempotent: reruns add nothing)."""
    flags = await evaluate(session, t)
    rules: dict[int, list[str]] = defaultdict(list)
    for flag in flags:
        rules[flag.member_id].append(flag.rule)
    added = 0
    for member_id, names in rules.items():
        stmt = (
            insert_for(session, MemberFlag.__table__)
            .values(member_id=member_id, reason=("suspicious: " + ", ".join(names))[:200], flagged_at=now)
            .on_conflict_do_nothing(index_elements=["member_id"])
        )
        added += (await session.execute(stmt)).rowcount or 0  # type: ignore[attr-defined]
    return RunResult(flags, len(rules), added)


@dataclass(frozen=True, slots=True)
class ReportRow:
    member_id: int
    rule: str
    evidence: str
    first_seen: dt.datetime | None
    flagged_at: dt.datetime | None  # when the member was put on the approval list; None = not yet
    flag_reason: str | None


async def report(session: AsyncSession, t: Thresholds) -> list[ReportRow]:
    """The rules' current flags beside the members' approval-list entries; a rule without a date of its
    own (shared contacts) shows when a run first flagged the member."""
    flags = await evaluate(session, t)
    members = {f.member_id for f in flags}
    listed: dict[int, tuple[dt.datetime, str]] = {}
    if members:
        rows = await session.execute(
            select(MemberFlag.member_id, MemberFlag.flagged_at, MemberFlag.reason).where(
                MemberFlag.member_id.in_(members)
            )
        )
        listed = {row.member_id: (_utc(row.flagged_at), row.reason) for row in rows}
    out: list[ReportRow] = []
    for f in flags:
        at, reason = listed.get(f.member_id, (None, None))
        out.append(ReportRow(f.member_id, f.rule, f.evidence, f.first_seen or at, at, reason))
    return out


def _utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value
