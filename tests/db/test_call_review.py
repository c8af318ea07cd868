"""Call-log review on both engines: every filter against a hand-built set of calls, keyset pages that
cover the log exactly once with ties on started_at, bad input refused, numbers masked per role."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.models import CallAgent, CallLeg
from crm_core.calllog.recording_models import Recording
from crm_core.calllog.review import (
    CallFilter,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
    iter_review_rows,
    review_page,
)
from crm_core.calllog.timeline import call_detail
from crm_core.comms.models import CommunicationRecord
from crm_core.db import read_session, transaction
from crm_core.security.policy import Principal
from crm_core.settings import Settings
from tests.db import call_factory, factories
from tests.db.call_factory import BASE, call

TZ = "Asia/Shanghai"


async def _ids(sessions: async_sessionmaker[AsyncSession], who: Principal, **filters: Any) -> list[int]:
    spec = CallFilter.model_validate(filters)
    found: list[int] = []
    cursor = None
    async with read_session(sessions) as session:
        while True:
            page = await review_page(session, who, spec, timezone=TZ, cursor=cursor, limit=3)
            found += [r["id"] for r in page.rows]
            cursor = page.next_cursor
            if cursor is None:
                return found


async def test_each_filter_selects_exactly_the_matching_calls(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    team = await call_factory.team(sessions)
    member = await factories.member(sessions, settings, name="李娜", mobile="13912345678")
    local = dt.timezone(dt.timedelta(hours=8))
    day2 = dt.datetime(2026, 3, 12, 10, 0, tzinfo=local)

    def later(**fields: Any) -> call_factory.NewCall:
        return call(started_at=day2, **fields)

    ids = await call_factory.add_calls(
        sessions,
        # 0-3: the edges of the local day 2026-03-10 (stored in UTC, 8 hours behind)
        call(started_at=dt.datetime(2026, 3, 9, 23, 59, 59, tzinfo=local), agent=team.agent_a),
        call(started_at=dt.datetime(2026, 3, 10, 0, 0, tzinfo=local), agent=team.agent_a),
        call(started_at=dt.datetime(2026, 3, 10, 23, 59, 59, tzinfo=local), agent=team.agent_b),
        call(started_at=dt.datetime(2026, 3, 11, 0, 0, tzinfo=local), agent=team.agent_b),
        # 4-9: one of each non-answered outcome, in the vip queue
        later(outcome="abandoned", queue="vip"),
        later(outcome="no_answer", queue="vip", rang=(team.agent_a,)),
        later(outcome="busy", queue="vip"),
        later(outcome="failed", queue="vip"),
        later(outcome="lost", queue="vip"),
        later(outcome="abandoned", queue="vip", recording_file="x.wav"),
        # 10: outbound to the member, recorded, short, with a disposition
        later(
            direction="outbound",
            agent=team.agent_b,
            caller_e164=None,
            caller_raw="agent1002",
            callee_e164="+8613912345678",
            callee_raw="13912345678",
            member_id=member.member_id,
            talk_s=30.0,
            disposition="resolved",
            recording_file="y.wav",
        ),
        # 11: inbound from the member, long
        later(agent=team.agent_a, caller_e164="+8613912345678", member_id=member.member_id, talk_s=900.0),
    )
    everything = await _ids(sessions, team.admin)
    assert sorted(everything) == sorted(ids)
    expect = {
        "date": ({"date_from": "2026-03-10", "date_to": "2026-03-10"}, {ids[1], ids[2]}),
        "from only": ({"date_from": "2026-03-11"}, {ids[3]} | set(ids[4:])),
        "to only": ({"date_to": "2026-03-09"}, {ids[0]}),
        "agent": ({"agent": str(team.agent_b.user_id)}, {ids[2], ids[3], ids[10]}),
        "queue": ({"queue": "vip"}, set(ids[4:10])),
        "direction": ({"direction": "outbound"}, {ids[10]}),
        "answered": ({"outcome": "answered"}, set(ids[0:4]) | {ids[10], ids[11]}),
        "abandoned": ({"outcome": "abandoned"}, {ids[4], ids[9]}),
        "missed": ({"outcome": "missed"}, {ids[5]}),
        "busy": ({"outcome": "busy"}, {ids[6]}),
        "failed": ({"outcome": "failed"}, {ids[7]}),
        "lost": ({"outcome": "lost"}, {ids[8]}),
        "member": ({"member": str(member.member_id)}, {ids[10], ids[11]}),
        "number caller or callee": ({"number": "139-1234-5678"}, {ids[10], ids[11]}),
        "number as +86": ({"number": "+86 139 1234 5678"}, {ids[10], ids[11]}),
        "number as 0086": ({"number": "008613912345678"}, {ids[10], ids[11]}),
        "min talk": ({"min_talk": "600"}, {ids[11]}),
        "max talk": ({"max_talk": "60"}, {ids[10]}),
        "talk range": ({"min_talk": "100", "max_talk": "200"}, set(ids[0:4])),
        "disposition": ({"disposition": "resolved"}, {ids[10]}),
        "recorded": ({"has_recording": "true"}, {ids[9], ids[10]}),
        "not recorded": ({"has_recording": "false"}, set(ids) - {ids[9], ids[10]}),
        "combined": ({"queue": "vip", "outcome": "abandoned", "has_recording": "1"}, {ids[9]}),
        "blank fields ignored": ({"queue": "", "number": "", "agent": ""}, set(ids)),
    }
    for name, (filters, wanted) in expect.items():
        assert set(await _ids(sessions, team.admin, **filters)) == wanted, name


async def test_keyset_pages_cover_every_call_once_with_ties_on_started_at(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    team = await call_factory.team(sessions)
    # 5 instants x 5 calls each: ties that an ORDER BY started_at alone would page wrongly.
    calls = [call(started_at=BASE + dt.timedelta(minutes=m), agent=team.agent_a) for m in range(5) for _ in range(5)]
    ids = await call_factory.add_calls(sessions, *calls)
    spec = CallFilter()
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    async with read_session(sessions) as session:
        while True:
            page = await review_page(session, team.sup_a, spec, timezone=TZ, cursor=cursor, limit=7)
            seen += page.rows
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
    assert pages == 4  # 7 + 7 + 7 + 4
    assert sorted(r["id"] for r in seen) == sorted(ids)
    keys = [(r["started_at"], r["id"]) for r in seen]
    assert keys == sorted(keys, reverse=True)
    assert len(set(keys)) == len(keys)


async def test_a_full_last_page_says_there_is_no_more(sessions: async_sessionmaker[AsyncSession]) -> None:
    team = await call_factory.team(sessions)
    await call_factory.add_calls(sessions, *(call(agent=team.agent_a) for _ in range(4)))
    async with read_session(sessions) as session:
        first = await review_page(session, team.admin, CallFilter(), timezone=TZ, limit=2)
        second = await review_page(session, team.admin, CallFilter(), timezone=TZ, cursor=first.next_cursor, limit=2)
    assert first.next_cursor is not None and len(second.rows) == 2 and second.next_cursor is None


@pytest.mark.parametrize(
    "filters",
    [
        {"number": "not a number"},
        {"date_from": "2026-03-11", "date_to": "2026-03-10"},
        {"date_from": "10/03/2026"},
        {"outcome": "no_answer"},  # the review says "missed"
        {"direction": "sideways"},
        {"min_talk": "-1"},
        {"min_talk": "90", "max_talk": "30"},
        {"agent": "abc"},
        {"colour": "red"},
    ],
)
def test_invalid_filters_are_refused(filters: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        CallFilter.model_validate(filters)


def test_cursor_round_trips_and_forged_ones_are_refused() -> None:
    stamp = dt.datetime(2026, 3, 10, 1, 2, 3, 456789, tzinfo=dt.UTC)
    assert decode_cursor(encode_cursor(stamp, 42)) == (stamp, 42)
    for bad in ("", "!!!", "bm90IGpzb24", encode_cursor(stamp, 42)[:-3], "WyJ4IiwxXQ", "WyIyMDI2LTAzLTEwIiwxXQ"):
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


async def test_rows_show_numbers_masked_for_agents_and_the_member_name(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    team = await call_factory.team(sessions)
    member = await factories.member(sessions, settings, name="王芳", mobile="13800138000")
    await call_factory.add_calls(sessions, call(agent=team.agent_a, member_id=member.member_id))
    async with read_session(sessions) as session:
        as_agent = (await review_page(session, team.agent_a, CallFilter(), timezone=TZ)).rows[0]
        as_admin = (await review_page(session, team.admin, CallFilter(), timezone=TZ)).rows[0]
    assert as_agent["caller"] == "138****8000"
    assert as_admin["caller"] == "13800138000"
    assert as_agent["member_name"] == as_admin["member_name"] == "王芳"
    assert as_admin["agent_name"] == "agent_a"
    assert as_admin["callee"] == "4008001000"


async def test_call_detail_timeline_shows_each_step_in_order(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    team = await call_factory.team(sessions)
    member = await factories.member(sessions, settings, name="赵敏", mobile="13700137000")
    new = call(
        agent=team.agent_a,
        rang=(team.agent_a2,),
        transfers=1,
        wrapup_s=30.0,
        disposition="transferred",
        member_id=member.member_id,
    )
    (call_id,) = await call_factory.add_calls(sessions, new)
    async with transaction(sessions) as session:
        session.add(
            CallAgent(
                call_id=call_id,
                seq=5,
                agent_endpoint="agent1002",
                agent_user_id=team.agent_b.user_id,
                rang_at=BASE + dt.timedelta(seconds=60),
                ring_s=3.0,
                answered=False,
                via="transfer",
            )
        )
        session.add(
            CallLeg(
                call_id=call_id,
                uniqueid="1.1",
                channel="PJSIP/trunk-00000001",
                role="customer",
                started_at=BASE,
                ended_at=BASE + dt.timedelta(seconds=140),
                hangup_cause="16",
            )
        )
        session.add(
            CommunicationRecord(
                member_id=member.member_id,
                direction="in",
                category="complaint",
                summary="转给二组处理",
                call_id=new.row.linkedid,
                agent_user_id=team.agent_a.user_id,
            )
        )
        session.add(
            Recording(
                call_id=call_id,
                linkedid=new.row.linkedid,
                source_path="/var/spool/asterisk/monitor/x.wav",
                state="ready",
                duration_s=128.0,
            )
        )
    async with read_session(sessions) as session:
        detail = await call_detail(session, team.sup_a, call_id)
        hidden = await call_detail(session, team.sup_b, call_id)
    assert hidden is None
    assert detail is not None
    kinds = [(e.kind, e.who) for e in detail.events]
    assert kinds == [
        ("started", None),
        ("queued", None),
        ("rang", "agent_a2"),
        ("rang", "agent_a"),
        ("answered", "agent_a"),
        ("transfer", "agent_b"),
        ("leg_ended", "PJSIP/trunk-00000001"),
        ("ended", None),
        ("wrapup_done", None),
    ]
    by_kind = {e.kind: e for e in detail.events}
    assert by_kind["queued"].seconds == 12.0 and by_kind["answered"].seconds == 128.0
    assert by_kind["wrapup_done"].detail == "transferred" and by_kind["wrapup_done"].seconds == 30.0
    assert detail.recording is not None and detail.recording["state"] == "ready"
    assert detail.call["wrapup_s"] == 30.0 and detail.call["transfers"] == 1
    assert [(c["category"], c["summary"]) for c in detail.communications] == [("complaint", "转给二组处理")]


async def test_export_rows_come_in_pages_and_stop_at_the_cap(sessions: async_sessionmaker[AsyncSession]) -> None:
    team = await call_factory.team(sessions)
    ids = await call_factory.add_calls(sessions, *(call(agent=team.agent_a) for _ in range(5)))
    pages = [
        [r["id"] for r in page]
        async for page in iter_review_rows(sessions, team.admin, CallFilter(), timezone=TZ, page_rows=2)
    ]
    assert pages == [sorted(ids, reverse=True)[i : i + 2] for i in (0, 2, 4)]
    capped = [
        len(page)
        async for page in iter_review_rows(sessions, team.admin, CallFilter(), timezone=TZ, page_rows=2, max_rows=3)
    ]
    assert capped == [2, 1]
