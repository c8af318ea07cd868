"""The missed-call callback queue on both engines: dedupe, priority, due time, claims, attempts, auto-close."""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.business_calendar import BusinessCalendar
from crm_core.callbacks import service as callbacks
from crm_core.callbacks.models import Callback, CallbackMiss
from crm_core.db import transaction
from crm_core.security.policy import Principal, Role
from crm_core.settings import Settings
from tests.db import factories

Sessions = async_sessionmaker[AsyncSession]
CAL = BusinessCalendar()
SH = ZoneInfo("Asia/Shanghai")
TUESDAY_10 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=SH)


def miss(linkedid: str, phone: str = "13800138000", **fields: object) -> callbacks.MissedCall:
    base: dict[str, object] = {
        "source": "abandoned",
        "missed_at": TUESDAY_10,
        "wait_s": 20.0,
        "queue": "member-service",
    }
    return callbacks.MissedCall(linkedid=linkedid, phone_raw=phone, **(base | fields))  # type: ignore[arg-type]


async def record(sessions: Sessions, settings: Settings, missed: callbacks.MissedCall) -> int | None:
    async with transaction(sessions) as session:
        return await callbacks.record_missed(session, missed, settings, CAL)


async def test_two_missed_calls_from_one_number_make_one_callback(sessions: Sessions, settings: Settings) -> None:
    first = await record(sessions, settings, miss("1.1"))
    second = await record(
        sessions,
        settings,
        miss("1.2", phone="+86 138 0013 8000", wait_s=95.0, missed_at=TUESDAY_10 + dt.timedelta(minutes=5)),
    )
    again = await record(sessions, settings, miss("1.2"))  # the same event delivered twice
    assert first == second == again
    async with sessions() as session:
        callback = (await session.execute(select(Callback))).scalar_one()
        assert callback.miss_count == 2 and callback.longest_wait_s == 95.0
        assert callback.priority == 2 * 10 + 3  # no member: 2 misses, 95 s wait
        # Due 2 business hours after the first miss, not pushed back by the second.
        assert callback.due_at == dt.datetime(2026, 11, 24, 4, 0, tzinfo=dt.UTC)
        assert (await session.execute(select(func.count(CallbackMiss.id)))).scalar_one() == 2


async def test_concurrent_duplicate_deliveries_count_once(sessions: Sessions, settings: Settings) -> None:
    await asyncio.gather(*(record(sessions, settings, miss("7.7")) for _ in range(8)))
    async with sessions() as session:
        assert (await session.execute(select(Callback.miss_count))).scalar_one() == 1


async def test_withheld_or_garbage_numbers_make_no_callback(sessions: Sessions, settings: Settings) -> None:
    assert await record(sessions, settings, miss("2.1", phone="anonymous")) is None
    assert await record(sessions, settings, miss("2.2", phone="")) is None
    async with sessions() as session:
        assert (await session.execute(select(func.count(Callback.id)))).scalar_one() == 0


async def test_member_tier_raises_priority(sessions: Sessions, settings: Settings) -> None:
    gold = await factories.member(sessions, settings, member_type="gold", mobile="13900139000")
    await record(sessions, settings, miss("3.1", phone="13900139000", member_id=gold.member_id))
    await record(sessions, settings, miss("3.2", phone="13700137000"))
    agent = await factories.principal(sessions, "agent1", Role.AGENT)
    async with sessions() as session:
        listed = await callbacks.list_callbacks(session, agent)
    assert [c["member_name"] for c in listed] == ["张伟", None]
    assert listed[0]["priority"] > listed[1]["priority"]
    assert listed[0]["phone"] == "139****9000"  # agents never see the number in clear


async def test_after_hours_miss_is_due_next_working_morning(sessions: Sessions, settings: Settings) -> None:
    friday_night = dt.datetime(2026, 11, 27, 21, 0, tzinfo=SH)
    await record(sessions, settings, miss("4.1", source="after_hours", missed_at=friday_night))
    async with sessions() as session:
        due = (await session.execute(select(Callback.due_at))).scalar_one()
    assert due.astimezone(SH) == dt.datetime(2026, 11, 30, 11, 0, tzinfo=SH)


async def test_claim_attempts_and_close_as_unreachable(sessions: Sessions, settings: Settings) -> None:
    agent = await factories.principal(sessions, "agent1", Role.AGENT)
    other = await factories.principal(sessions, "agent2", Role.AGENT)
    callback_id = await record(sessions, settings, miss("5.1"))
    assert callback_id is not None
    for attempt in range(1, settings.callback_max_attempts + 1):
        async with transaction(sessions) as session:
            await callbacks.claim(session, agent, callback_id)
            with pytest.raises(callbacks.CallbackError):
                await callbacks.record_attempt(session, other, callback_id, "busy", settings)
            status = await callbacks.record_attempt(session, agent, callback_id, "no_answer", settings)
        async with sessions() as session:
            callback = await session.get(Callback, callback_id)
            assert callback is not None and callback.attempts == attempt
        if attempt < settings.callback_max_attempts:
            assert status == "open" and callback.next_attempt_at is not None
        else:
            assert status == "closed" and callback.close_reason == "unreachable"
    with pytest.raises(callbacks.AlreadyClaimed):
        async with transaction(sessions) as session:
            await callbacks.claim(session, agent, callback_id)
    with pytest.raises(callbacks.CallbackError, match="unknown outcome"):
        async with transaction(sessions) as session:
            await callbacks.record_attempt(session, agent, callback_id, "maybe", settings)


async def test_reached_closes_and_a_new_miss_opens_a_new_callback(sessions: Sessions, settings: Settings) -> None:
    agent = await factories.principal(sessions, "agent1", Role.AGENT)
    first = await record(sessions, settings, miss("6.1"))
    assert first is not None
    async with transaction(sessions) as session:
        await callbacks.claim(session, agent, first)
        assert await callbacks.record_attempt(session, agent, first, "reached", settings, linkedid="9.9") == "closed"
    second = await record(sessions, settings, miss("6.2"))
    assert second is not None and second != first


async def test_answered_call_from_or_to_the_number_closes_its_callback(sessions: Sessions, settings: Settings) -> None:
    callback_id = await record(sessions, settings, miss("8.1"))
    async with transaction(sessions) as session:
        assert await callbacks.close_for_answered_call(session, "008613800138000", "inbound", "8.2") == callback_id
        assert await callbacks.close_for_answered_call(session, "13800138000", "outbound", "8.3") is None
    async with sessions() as session:
        callback = await session.get(Callback, callback_id)
    assert callback is not None and callback.close_reason == "answered_inbound" and callback.closed_by_linkedid == "8.2"


async def test_concurrent_claims_have_exactly_one_winner(sessions: Sessions, settings: Settings) -> None:
    agents: list[Principal] = [await factories.principal(sessions, f"agent{n}", Role.AGENT) for n in range(20)]
    callback_id = await record(sessions, settings, miss("10.1"))
    assert callback_id is not None

    async def try_claim(agent: Principal) -> bool:
        try:
            async with transaction(sessions) as session:
                await callbacks.claim(session, agent, callback_id)
            return True
        except callbacks.AlreadyClaimed:
            return False

    wins = await asyncio.gather(*(try_claim(a) for a in agents))
    assert sum(wins) == 1
    async with sessions() as session:
        callback = await session.get(Callback, callback_id)
    assert callback is not None and callback.claimed_by_user_id == agents[wins.index(True)].user_id


async def test_concurrent_claim_next_hands_out_each_callback_once(sessions: Sessions, settings: Settings) -> None:
    agents = [await factories.principal(sessions, f"agent{n}", Role.AGENT) for n in range(12)]
    for n in range(8):
        await record(sessions, settings, miss(f"11.{n}", phone=f"1390013{n:04d}"))

    async def take(agent: Principal) -> int | None:
        async with transaction(sessions) as session:
            return await callbacks.claim_next(session, agent)

    taken = await asyncio.gather(*(take(a) for a in agents))
    got = [t for t in taken if t is not None]
    assert len(got) == len(set(got)) == 8


async def test_outcome_saved_after_the_call_already_closed_it(sessions: Sessions, settings: Settings) -> None:
    agent = await factories.principal(sessions, "agent1", Role.AGENT)
    callback_id = await record(sessions, settings, miss("12.1"))
    assert callback_id is not None
    async with transaction(sessions) as session:
        await callbacks.claim(session, agent, callback_id)
        await callbacks.close_for_answered_call(session, "13800138000", "outbound", "12.2")
        assert await callbacks.record_attempt(session, agent, callback_id, "reached", settings, linkedid="12.2") == (
            "closed"
        )
        with pytest.raises(callbacks.CallbackError):
            await callbacks.record_attempt(session, agent, callback_id, "reached", settings, linkedid="other")
    async with sessions() as session:
        callback = await session.get(Callback, callback_id)
    assert callback is not None and callback.attempts == 1 and callback.close_reason == "answered_outbound"
