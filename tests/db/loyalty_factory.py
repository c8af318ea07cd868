"""Builders for the loyalty tests: members with points, a catalogue, staff for maker-checker."""

from __future__ import annotations

import datetime as dt
import itertools

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import ledger, redemption
from crm_core.loyalty.models import ItemKind, MerchantStatus
from crm_core.security.policy import Principal, Role
from crm_core.settings import Settings
from tests.db import factories

NOW = dt.datetime(2026, 6, 1, 4, tzinfo=dt.UTC)
_mobiles = itertools.count(13700000000)
_users = itertools.count(1)


def days(n: float) -> dt.datetime:
    return NOW + dt.timedelta(days=n)


async def member_with_points(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, *lots: tuple[int, float | None]
) -> int:
    """A new member holding one granted lot per (points, expiry in days or None)."""
    joined = await factories.member(sessions, settings, mobile=str(next(_mobiles)))
    async with transaction(sessions) as session:
        for points, expiry in lots:
            await ledger.manual_grant(
                session,
                joined.member_id,
                points,
                name="赠送",
                granted_at=NOW,
                expires_at=None if expiry is None else days(expiry),
            )
    return joined.member_id


async def user(sessions: async_sessionmaker[AsyncSession], role: Role) -> Principal:
    return await factories.principal(sessions, f"{role.value}{next(_users)}", role)


async def catalogue(sessions: async_sessionmaker[AsyncSession], stock: int = 10) -> dict[str, int]:
    """Merchants M-A and M-B (active) and M-X (终止合作), and four items: V200, a 200-point voucher good
    only at M-A for 30 days (Sifan's 200积分券); V100, a 100-point voucher good at any active alliance
    merchant without expiry; GIFT (1,000 points) and BIG (5,000 points), gifts that are shipped."""
    async with transaction(sessions) as session:
        merchant_a = await redemption.add_merchant(session, "M-A", "青叶药房", status=MerchantStatus.ACTIVE)
        merchant_b = await redemption.add_merchant(session, "M-B", "联盟书店", status=MerchantStatus.ACTIVE)
        gone = await redemption.add_merchant(session, "M-X", "终止商家", status=MerchantStatus.TERMINATED)
        ids = {
            "merchant_a": merchant_a,
            "merchant_b": merchant_b,
            "merchant_gone": gone,
            "V200": await redemption.add_item(
                session,
                "V200",
                "200积分券",
                kind=ItemKind.VOUCHER,
                points=200,
                stock=stock,
                merchant_id=merchant_a,
                voucher_valid_days=30,
                face_value_fen=20_000,
            ),
            "V100": await redemption.add_item(
                session, "V100", "联盟通用券", kind=ItemKind.VOUCHER, points=100, stock=stock, face_value_fen=10_000
            ),
            "GIFT": await redemption.add_item(
                session, "GIFT", "三包服务", kind=ItemKind.GIFT, points=1_000, stock=stock
            ),
            "BIG": await redemption.add_item(session, "BIG", "电饭煲", kind=ItemKind.GIFT, points=5_000, stock=stock),
        }
    return ids
