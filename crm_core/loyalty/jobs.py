"""The nightly loyalty job: expire due lots, review tiers whose hold has ended, grant today's birthday
points, then reconcile.

Each step is idempotent, so running the job twice (or after a crash half-way) changes nothing the
second time; each step commits on its own so a long expiry does not hold the tier review's locks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import events, ledger, redemption, tiers


@dataclass(frozen=True, slots=True)
class NightlyResult:
    lots_expired: int
    points_expired: int
    tier_changes: int
    birthday_awards: int
    differences: list[ledger.Difference]


async def run_nightly(sessions: async_sessionmaker[AsyncSession], now: dt.datetime) -> NightlyResult:
    async with transaction(sessions) as session:
        expired = await ledger.expire(session, now)
    async with transaction(sessions) as session:
        await tiers.seed_tiers(session)  # a fresh site gets the seed's tier table once
        changes = await tiers.review_tiers(session, now)
    birthdays = await events.award_birthdays(sessions, now)
    async with transaction(sessions) as session:
        differences = await ledger.reconcile(session) + await redemption.reconcile_escrow(session)
    return NightlyResult(expired.lots, expired.points, changes, birthdays, differences)
