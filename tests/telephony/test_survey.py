"""The post-call survey with a real call: a customer phone calls the 400 line, an agent phone answers
and hangs up first, the caller hears the survey prompt and presses 4 (RFC 4733 from baresip); the
score reaches the engine as the dialplan's CtiSurvey UserEvent and is stored against the call, the
agent and the member. A caller who hangs up first is not surveyed. Runs on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from asterisk_sandbox import AmiClient as SandboxAmi
from asterisk_sandbox import BaresipPhone, Sandbox
from sqlalchemy import select

from crm_core.survey.models import SurveyResponse
from cti.engine import CtiEngine
from cti.screenpop import ScreenPop
from cti.survey import SurveyAnswered
from tests.telephony.support import (
    MEMBER_SERVICE,
    Recorder,
    Sessions,
    call_row,
    engine_settings,
    ready,
    ring,
    running_engine,
)

pytestmark = pytest.mark.telephony


@pytest.fixture(scope="module")
async def engine(sandbox: Sandbox, pg_sessions: Sessions) -> AsyncIterator[CtiEngine]:
    async with running_engine(engine_settings(sandbox), pg_sessions) as cti:
        yield cti


@pytest.fixture
async def survey_on(ami: SandboxAmi) -> AsyncIterator[None]:
    await ami.action("Setvar", {"Variable": "CTI_SURVEY", "Value": "1"})
    try:
        yield
    finally:
        await ami.action("Setvar", {"Variable": "CTI_SURVEY", "Value": "0"})


async def test_the_caller_scores_the_call_after_the_agent_hangs_up(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
    survey_on: None,
) -> None:
    await ready(engine, "agent1001", "agent1002")
    since = recorder.mark()
    await ring(phones["cust1"], MEMBER_SERVICE, phones["agent1001"])
    pop = await recorder.wait(ScreenPop, since=since, where=lambda p: not p.partial and p.agent == "agent1001")
    await phones["agent1001"].accept()
    await asyncio.sleep(1.5)
    await phones["agent1001"].hangup()  # the agent first: the caller goes on to the survey
    await asyncio.sleep(1.5)  # the prompt (a beep) plays; Read() then waits for a digit
    await phones["cust1"].send_dtmf("4")
    answer = await recorder.wait(SurveyAnswered, since=since, timeout=15)
    assert (answer.linkedid, answer.score, answer.question, answer.queue) == (pop.linkedid, 4, 1, "member-service")
    call = await call_row(pg_sessions, pop.linkedid, timeout=20)
    for _ in range(50):
        async with pg_sessions() as session:
            stored = (await session.execute(select(SurveyResponse))).scalars().all()
        if stored:
            break
        await asyncio.sleep(0.1)
    assert [(s.linkedid, s.score, s.question) for s in stored] == [(pop.linkedid, 4, 1)]
    assert stored[0].agent_endpoint == "agent1001" and stored[0].agent_user_id == call.agent_user_id
    assert stored[0].member_id == call.member_id and call.member_id is not None
    assert stored[0].dnis == MEMBER_SERVICE and call.outcome == "answered"


async def test_a_caller_who_hangs_up_first_is_not_surveyed(
    engine: CtiEngine,
    recorder: Recorder,
    phones: dict[str, BaresipPhone],
    pg_sessions: Sessions,
    survey_on: None,
) -> None:
    await ready(engine, "agent1001", "agent1002")
    since = recorder.mark()
    await ring(phones["cust1"], MEMBER_SERVICE, phones["agent1001"])
    pop = await recorder.wait(ScreenPop, since=since, where=lambda p: not p.partial and p.agent == "agent1001")
    await phones["agent1001"].accept()
    await asyncio.sleep(1.0)
    await phones["cust1"].hangup()
    call = await call_row(pg_sessions, pop.linkedid)
    assert call.outcome == "answered"
    await asyncio.sleep(1.0)
    assert not [e for e in recorder.events[since:] if isinstance(e, SurveyAnswered)]
