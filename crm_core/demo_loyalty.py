"""Demo content for loyalty: the seed tiers, a small gift and voucher catalogue, earning rules with the
seeds' numbers (Sifan's 100 元 → 2 points, TurboCRM's 家电 band promotion, 注册赠送 1,000 to the end of
the year, a birthday gift, 推荐客户赠送 2,000 to the end of the next year, a Double 11 campaign) and a
few purchases for the first demo members, so the pop, the points page and /loyalty/rules show
something on first start. Idempotent: it adds nothing once any earning rule exists."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction, utcnow
from crm_core.loyalty import earning, redemption, rule_book, tiers
from crm_core.loyalty.models import CatalogueItem, EarningRule, ItemKind
from crm_core.loyalty.rules import SHANGHAI, Purchase, PurchaseLine, points_for, sifan_expiry
from crm_core.members.models import Member

CATALOGUE = (
    ("V100", "100元礼品现金兑换券", ItemKind.VOUCHER, 100),
    ("G500", "保温杯", ItemKind.GIFT, 500),
    ("SVC3", "积分兑换-三包服务", ItemKind.GIFT, 1_000),
)
BANDS = [
    {"from_fen": 0},
    {"from_fen": 500_000, "offset_points": "100"},
    {"from_fen": 1_000_000, "offset_points": "500"},
]


def _rules(year: int) -> list[tuple[str, str, dict[str, Any], dt.datetime | None, dt.datetime | None]]:
    def local(month: int, day: int) -> dt.datetime:
        return dt.datetime(year, month, day, tzinfo=SHANGHAI)

    return [
        ("思凡积分规则", "rate", {"points_per_unit": 2, "unit_fen": 10_000}, None, None),
        ("家用电器促销积分规则", "rate", {"points_per_unit": 2, "unit_fen": 10_000, "bands": BANDS},
         local(5, 1), local(5, 8)),
        ("家电品类加倍", "category", {"category": "家电", "multiplier": "1.5"}, None, None),
        ("双十一活动", "campaign", {"multiplier": "2"}, local(11, 1), local(11, 12)),
        ("注册赠送", "event", {"event": "join", "points": 1_000, "expiry": "year_end"}, None, None),
        ("生日礼遇", "event", {"event": "birthday", "points": 88, "expiry": "days", "days": 30}, None, None),
        ("推荐客户赠送", "event", {"event": "referral", "points": 2_000, "expiry": "year_end", "years": 1}, None, None),
    ]  # fmt: skip


async def seed_loyalty(sessions: async_sessionmaker[AsyncSession], *, members: int = 200, seed: int = 7) -> bool:
    """Add the demo loyalty content unless a rule exists; True when it was added."""
    now = utcnow()
    async with transaction(sessions) as session:
        if (await session.execute(select(func.count()).select_from(EarningRule))).scalar_one():
            return False
        await tiers.seed_tiers(session)
        for name, kind, params, starts_at, ends_at in _rules(now.astimezone(SHANGHAI).year):
            await rule_book.create_rule(
                session, name=name, kind=kind, params=params, starts_at=starts_at, ends_at=ends_at, who=None
            )
        if not (await session.execute(select(func.count()).select_from(CatalogueItem))).scalar_one():
            for code, name, kind, points in CATALOGUE:
                await redemption.add_item(session, code, name, kind=kind, points=points, stock=500)
        await _purchases(session, now, members, random.Random(seed))
    return True


async def _purchases(session: AsyncSession, now: dt.datetime, count: int, rng: random.Random) -> None:
    """A few sales in the last 60 days for the first `count` members, earned under the rules above."""
    book = await rule_book.load(session)
    first = select(Member.id, Member.member_type, Member.created_at).order_by(Member.id).limit(count)
    rows = (await session.execute(first)).all()
    for member_id, tier, created_at in rows:
        for n in range(rng.randint(1, 4)):
            at = now - dt.timedelta(days=rng.randint(1, 60), minutes=rng.randint(0, 600))
            fen = rng.randint(2_000, 300_000)
            category = rng.choice(("药品", "保健品", "家电"))
            points = points_for(Purchase((PurchaseLine(category, fen),), at, tier=tier), book.earning_rules_at(at))
            if points == 0:
                continue
            await earning.earn_purchase(
                session,
                member_id,
                points,
                earned_at=at,
                expires_at=sifan_expiry(at, created_at.astimezone(SHANGHAI).date()),
                transaction_ref=f"DEMO-{member_id}-{n}",
            )
