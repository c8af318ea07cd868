"""Survey answers on both engines: stored once per call and question (a replayed UserEvent adds
nothing), the agent and member taken from the call log, bad answers refused; the survey report's
figures by agent and by queue, computed by hand."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import transaction
from crm_core.reports.period import Period
from crm_core.reports.run import run_report
from crm_core.security.policy import SYSTEM
from crm_core.settings import Settings
from crm_core.survey import service as surveys
from crm_core.survey.models import SurveyResponse
from cti.ami.protocol import AmiMessage
from cti.survey import parse
from tests.db.call_factory import BASE, add_calls, call, team

pytestmark = pytest.mark.db
Sessions = async_sessionmaker[AsyncSession]


def user_event(**headers: str) -> AmiMessage:
    return AmiMessage({"Event": "UserEvent", "UserEvent": "CtiSurvey", **headers})


def test_parse_accepts_one_to_five_only() -> None:
    ok = parse(user_event(Linkedid="1700.1", Score="4", Question="1", Queue="vip", DNIS="4008001235"), 10.0)
    assert ok is not None and (ok.linkedid, ok.score, ok.question, ok.queue, ok.dnis) == (
        "1700.1",
        4,
        1,
        "vip",
        "4008001235",
    )
    for bad in ({"Score": "6"}, {"Score": "0"}, {"Score": "#"}, {"Score": ""}, {"Linkedid": ""}, {"Question": "x"}):
        assert parse(user_event(**({"Linkedid": "1700.1", "Score": "3"} | bad)), 10.0) is None


async def test_answers_are_stored_once_with_the_calls_agent_and_member(sessions: Sessions, settings: Settings) -> None:
    people = await team(sessions)
    [call_id] = await add_calls(sessions, call(agent=people.agent_a, member_id=None, agent_endpoint="agent1001"))
    async with transaction(sessions) as session:
        linkedid = (await session.execute(select(SurveyResponse.linkedid))).scalar()  # nothing yet
        assert linkedid is None
        from crm_core.calllog.models import Call

        row = await session.get(Call, call_id)
        assert row is not None
        at = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC)
        assert await surveys.record(session, pbx="default", linkedid=row.linkedid, score=5, answered_at=at)
        assert not await surveys.record(session, pbx="default", linkedid=row.linkedid, score=1, answered_at=at)
        assert await surveys.record(session, pbx="default", linkedid="unknown.1", score=3, answered_at=at)
        with pytest.raises(surveys.InvalidAnswer):
            await surveys.record(session, pbx="default", linkedid=row.linkedid, score=9, answered_at=at)
        assert await surveys.scores_of_call(session, "default", row.linkedid) == {1: 5}
    async with sessions() as session:
        stored = (await session.execute(select(SurveyResponse).order_by(SurveyResponse.id))).scalars().all()
    assert [(s.score, s.agent_user_id, s.agent_endpoint) for s in stored] == [
        (5, people.agent_a.user_id, "agent1001"),
        (3, None, None),  # the customer's answer is kept even for a call the log does not know (yet)
    ]


async def test_survey_report_by_agent_and_queue(sessions: Sessions, settings: Settings) -> None:
    people = await team(sessions)
    made = [
        call(agent=people.agent_a, started_at=BASE),
        call(agent=people.agent_a, started_at=BASE + dt.timedelta(minutes=5)),
        call(agent=people.agent_a, started_at=BASE + dt.timedelta(minutes=9)),
        call(agent=people.agent_b, started_at=BASE + dt.timedelta(minutes=7), queue="vip"),
        call(outcome="abandoned", started_at=BASE + dt.timedelta(minutes=8)),
    ]
    await add_calls(sessions, *made)
    async with transaction(sessions) as session:
        for new, score in ((made[0], 5), (made[1], 2), (made[3], 4)):
            await surveys.record(session, pbx="default", linkedid=new.row.linkedid, score=score, answered_at=BASE)
    day = BASE.astimezone(dt.timezone(dt.timedelta(hours=8))).date()
    async with transaction(sessions) as session:
        table = await run_report(
            session, SYSTEM, settings, "survey-scores", Period(day, day + dt.timedelta(days=1), "Asia/Shanghai")
        )
    rows = {(r["by"], r["name"]): r for r in table.rows}
    a = next(r for (by, _), r in rows.items() if by == "agent" and r["answered_calls"] == 3)
    # Agent A: 3 answered calls, 2 surveys (5 and 2): 66.7 %, mean 3.5.
    assert (a["surveys"], a["response_pct"], a["mean_score"], a["score_5"], a["score_2"]) == (2, 66.7, 3.5, 1, 1)
    assert rows["queue", "vip"]["mean_score"] == 4.0 and rows["queue", "member-service"]["surveys"] == 2
    assert table.totals is not None and (table.totals["answered_calls"], table.totals["surveys"]) == (4, 3)
    assert table.totals["mean_score"] == round((5 + 2 + 4) / 3, 2)
    async with sessions() as session:
        assert (await session.execute(select(func.count()).select_from(SurveyResponse))).scalar_one() == 3
