"""Suspicious-activity rules on both engines, each with a case just over and one just under its threshold;
`run_rules` flags once (a rerun adds nothing, a staff flag is kept) and a flagged member's next
redemption waits for a second person."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import sys

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.loyalty import fraud, redemption
from crm_core.loyalty.fraud import Thresholds
from crm_core.loyalty.models import MemberFlag, RedemptionState
from crm_core.members.models import Address, MemberContact
from crm_core.security.policy import Principal, Role
from crm_core.settings import Settings
from tests.db import factories
from tests.db.loyalty_factory import NOW, catalogue, member_with_points, user

pytestmark = pytest.mark.db

T = Thresholds(velocity_per_day=3, large_grant_points=5_000, earn_redeem_minutes=10, shared_members=3)
_mobiles = itertools.count(13600000000)


async def redeem(sessions: async_sessionmaker[AsyncSession], member: int, at: dt.datetime, who: Principal) -> str:
    async with transaction(sessions) as session:
        result = await redemption.request_redemption(session, member, "V100", 1, who=who, now=at)
    return result.state.value


async def flags(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[int, str]]:
    async with transaction(sessions) as session:
        return [(f.member_id, f.rule) for f in await fraud.evaluate(session, T)]


async def test_velocity_counts_redemptions_per_local_day(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions, stock=50)
    agent = await user(sessions, Role.AGENT)
    busy, three, midnight = [await member_with_points(sessions, settings, (2_000, None)) for _ in range(3)]
    day = dt.datetime(2026, 6, 2, 4, tzinfo=dt.UTC)  # 12:00 in Shanghai
    for hour in range(4):  # four on one local day: more than three
        await redeem(sessions, busy, day + dt.timedelta(hours=hour), agent)
    for hour in range(3):  # three: not more than three
        await redeem(sessions, three, day + dt.timedelta(hours=hour), agent)
    # 15:00 and 15:30 UTC are 23:00/23:30 on 2 June in Shanghai, 17:00/17:30 UTC already 3 June:
    # four on one UTC day, two on each local day.
    for at in ("15:00", "15:30", "17:00", "17:30"):
        hour, minute = map(int, at.split(":"))
        await redeem(sessions, midnight, dt.datetime(2026, 6, 2, hour, minute, tzinfo=dt.UTC), agent)

    async with transaction(sessions) as session:
        found = await fraud.velocity(session, T)
    assert [(f.member_id, f.evidence) for f in found] == [(busy, "4 redemptions on 2026-06-02")]
    assert found[0].first_seen == day + dt.timedelta(hours=3)


async def test_large_manual_grants_above_the_threshold(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    big = await member_with_points(sessions, settings, (6_000, None), (5_001, None), (100, None))
    at_threshold = await member_with_points(sessions, settings, (5_000, None), (5_000, None))
    async with transaction(sessions) as session:
        found = await fraud.large_grants(session, T)
    assert [(f.member_id, f.evidence) for f in found] == [(big, "2 manual grant(s) above 5000 points, largest 6000")]
    assert at_threshold not in {f.member_id for f in found}
    assert found[0].first_seen is not None


async def test_redemption_right_after_earning(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    await catalogue(sessions, stock=50)
    agent = await user(sessions, Role.AGENT)
    quick = await member_with_points(sessions, settings, (1_000, None))  # granted at NOW
    slow = await member_with_points(sessions, settings, (1_000, None))
    await redeem(sessions, quick, NOW + dt.timedelta(minutes=9), agent)
    await redeem(sessions, quick, NOW + dt.timedelta(minutes=10), agent)
    await redeem(sessions, quick, NOW + dt.timedelta(minutes=30), agent)
    await redeem(sessions, slow, NOW + dt.timedelta(minutes=11), agent)
    async with transaction(sessions) as session:
        found = await fraud.earn_then_redeem(session, T)
    assert [(f.member_id, f.evidence) for f in found] == [(quick, "2 redemption(s) within 10 min of earning")]
    assert found[0].first_seen == NOW + dt.timedelta(minutes=9)


async def _plain_member(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    return (await factories.member(sessions, settings, mobile=str(next(_mobiles)))).member_id


async def test_many_members_sharing_one_phone_or_address(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    members = [await _plain_member(sessions, settings) for _ in range(6)]
    a, b, c, d, e, f = members
    async with transaction(sessions) as session:
        for m in (a, b, c):  # three members' own home line: flagged
            session.add(MemberContact(member_id=m, kind="home", phone_e164="+862188886666"))
        for m in (d, e):  # two: not enough
            session.add(MemberContact(member_id=m, kind="home", phone_e164="+862177775555"))
        for m in (d, e, f):  # one contact person for three members: not the members' own number
            session.add(MemberContact(member_id=m, kind="contact_person", phone_e164="+8613911112222"))
        # the same address written three ways (spacing, case) on three members
        for m, detail in ((b, "Nanjing Rd 1"), (d, "  nanjing rd 1 "), (f, "NANJING RD 1")):
            session.add(Address(member_id=m, province="上海", city="上海", district="黄浦", detail=detail))
        session.add(Address(member_id=a, province="上海", city="上海", district="静安", detail="Nanjing Rd 1"))
    async with transaction(sessions) as session:
        phones = await fraud.shared_phones(session, T)
        addresses = await fraud.shared_addresses(session, T)
    shared = f"3 members: #{a}, #{b}, #{c}"
    assert [(x.member_id, x.evidence) for x in phones] == [(m, f"phone shared by {shared}") for m in (a, b, c)]
    assert [x.member_id for x in addresses] == [b, d, f]
    assert addresses[0].evidence == f"address shared by 3 members: #{b}, #{d}, #{f}"
    assert "8888" not in repr(phones) and "Nanjing" not in repr(addresses)  # no member data in evidence


async def test_run_rules_flags_once_and_sends_redemptions_to_approval(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await catalogue(sessions, stock=50)
    agent = await user(sessions, Role.AGENT)
    granted = await member_with_points(sessions, settings, (6_000, None))
    staff_flagged = await member_with_points(sessions, settings, (7_000, None))
    clean = await member_with_points(sessions, settings, (1_000, None))
    async with transaction(sessions) as session:
        await redemption.flag_member(session, staff_flagged, "called in twice as two people")
    at = NOW + dt.timedelta(days=1)
    async with transaction(sessions) as session:
        first = await fraud.run_rules(session, T, at)
    assert (first.members, first.newly_flagged) == (2, 1)
    async with transaction(sessions) as session:
        second = await fraud.run_rules(session, T, at + dt.timedelta(hours=1))
    assert (second.members, second.newly_flagged) == (2, 0)
    async with transaction(sessions) as session:
        rows = {r.member_id: (r.reason, r.flagged_at) for r in (await session.execute(select(MemberFlag))).scalars()}
        report = await fraud.report(session, T)
    assert rows == {
        granted: ("suspicious: large_grant", at),
        staff_flagged: ("called in twice as two people", rows[staff_flagged][1]),
    }
    assert [(r.member_id, r.rule, r.flagged_at) for r in report] == [
        (granted, "large_grant", at),
        (staff_flagged, "large_grant", rows[staff_flagged][1]),
    ]
    # A 100-point voucher is far below the approval threshold, yet the flagged member waits.
    assert await redeem(sessions, granted, at + dt.timedelta(hours=2), agent) == RedemptionState.AWAITING_APPROVAL
    assert await redeem(sessions, clean, at + dt.timedelta(hours=2), agent) == RedemptionState.COMPLETED
    async with transaction(sessions) as session:
        queue = await redemption.awaiting_approval(session)
    assert [(r.member_id, r.approval_reason) for r in queue] == [(granted, "flagged member")]
    assert await flags(sessions) == [(granted, "large_grant"), (staff_flagged, "large_grant")]


async def test_cti_loyalty_flags_command(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    granted = await member_with_points(sessions, settings, (9_000, None))
    env = {**os.environ, "CTI_DATABASE_URL": settings.database_url}
    outputs = []
    for _ in range(2):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from cti.cli import main; main()",
            "loyalty-flags",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        outputs.append(out.decode().splitlines())
    assert outputs[0][0] == "1 flags on 1 members; 1 newly flagged"
    assert outputs[1][0] == "1 flags on 1 members; 0 newly flagged"
    assert outputs[1][1] == f"  member {granted} large_grant: 1 manual grant(s) above 5000 points, largest 9000"
    async with transaction(sessions) as session:
        reason = (await session.execute(select(MemberFlag.reason).where(MemberFlag.member_id == granted))).scalar_one()
    assert reason == "suspicious: large_grant"
