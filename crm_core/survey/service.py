"""Storing survey answers and reading them back (a call's score, a member's recent scores)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.calllog.models import Call
from crm_core.db import insert_for
from crm_core.survey.models import SurveyResponse

SCORES = range(1, 6)


class InvalidAnswer(ValueError):
    pass


async def record(
    session: AsyncSession,
    *,
    pbx: str,
    linkedid: str,
    score: int,
    question: int = 1,
    queue: str | None = None,
    dnis: str | None = None,
    answered_at: dt.datetime,
) -> bool:
    """Store one answer (False when this call's answer to the question was stored before). The agent
    and the member come from the call log row if it is there; an unknown call is stored anyway, as
    the answer is the customer's, and the reports pick the call up when its row appears."""
    if score not in SCORES or question < 1:
        raise InvalidAnswer(f"score {score} to question {question} is not a 1–5 answer")
    call = (
        await session.execute(
            select(Call.agent_endpoint, Call.agent_user_id, Call.member_id, Call.queue, Call.dnis).where(
                Call.pbx == pbx, Call.linkedid == linkedid
            )
        )
    ).first()
    values: dict[str, Any] = {
        "pbx": pbx,
        "linkedid": linkedid,
        "question": question,
        "score": score,
        "queue": queue or (call.queue if call else None),
        "dnis": dnis or (call.dnis if call else None),
        "agent_endpoint": call.agent_endpoint if call else None,
        "agent_user_id": call.agent_user_id if call else None,
        "member_id": call.member_id if call else None,
        "answered_at": answered_at,
    }
    inserted = await session.execute(
        insert_for(session, SurveyResponse.__table__)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["pbx", "linkedid", "question"])
        .returning(SurveyResponse.__table__.c.id)
    )
    return inserted.first() is not None


async def scores_of_call(session: AsyncSession, pbx: str, linkedid: str) -> dict[int, int]:
    rows = await session.execute(
        select(SurveyResponse.question, SurveyResponse.score).where(
            SurveyResponse.pbx == pbx, SurveyResponse.linkedid == linkedid
        )
    )
    return {int(q): int(s) for q, s in rows.all()}
