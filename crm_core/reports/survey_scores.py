"""Post-call survey scores per agent and per queue for the calls of the period (their local start
day): answered surveys, the mean score, the 1–5 distribution, and the response rate = answered
surveys ÷ answered calls (every answered call may be offered the survey when it is on; a low rate
also shows callers who hang up before the agent). The agent of an answer is the one who answered
the call, from the call log; scoped to the reader's queues like the other call reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, and_, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.calllog.models import Call
from crm_core.reports.period import Period
from crm_core.reports.table import Column, ReportTable, ratio
from crm_core.security.models import User
from crm_core.survey.models import SurveyResponse

NAME = "survey-scores"
COLUMNS = [
    Column("by", "By", "text"),
    Column("name", "Name", "text"),
    Column("answered_calls", "Answered calls"),
    Column("surveys", "Surveys answered"),
    Column("response_pct", "Survey response rate", "percent"),
    Column("mean_score", "Mean score", "number"),
    *(Column(f"score_{n}", "Score", "count", detail=str(n)) for n in range(1, 6)),
]


async def survey_scores(
    session: AsyncSession, period: Period, *, queues: list[str] | None = None, queue: str | None = None
) -> ReportTable:
    calls = [
        Call.started_at >= period.utc_start,
        Call.started_at < period.utc_end,
        Call.outcome == "answered",
        Call.direction == "inbound",
    ]
    if queue is not None:
        calls.append(Call.queue == queue)
    if queues is not None:
        calls.append(Call.queue.in_(queues))
    joined = and_(
        SurveyResponse.pbx == Call.pbx, SurveyResponse.linkedid == Call.linkedid, SurveyResponse.question == 1
    )
    figures = [
        func.count(func.distinct(Call.id)),
        func.count(SurveyResponse.id),
        func.avg(SurveyResponse.score),
        *(func.sum(cast(case((SurveyResponse.score == n, 1), else_=0), Integer)) for n in range(1, 6)),
    ]
    rows: list[dict[str, Any]] = []
    by_agent = (
        select(func.coalesce(User.display_name, Call.agent_endpoint), *figures)
        .select_from(Call)
        .outerjoin(SurveyResponse, joined)
        .outerjoin(User, User.id == Call.agent_user_id)
        .where(*calls)
        .group_by(func.coalesce(User.display_name, Call.agent_endpoint))
        .order_by(func.coalesce(User.display_name, Call.agent_endpoint))
    )
    by_queue = (
        select(Call.queue, *figures)
        .select_from(Call)
        .outerjoin(SurveyResponse, joined)
        .where(*calls)
        .group_by(Call.queue)
        .order_by(Call.queue)
    )
    totals = None
    for label, stmt in (("agent", by_agent), ("queue", by_queue)):
        for name, answered_calls, surveys, mean, *scores in await session.execute(stmt):
            row = _row(label, name or "", int(answered_calls), int(surveys), mean, [int(s or 0) for s in scores])
            rows.append(row)
    queue_rows = [r for r in rows if r["by"] == "queue"]
    if queue_rows:
        answered = sum(r["answered_calls"] for r in queue_rows)
        surveys = sum(r["surveys"] for r in queue_rows)
        scores = [sum(r[f"score_{n}"] for r in queue_rows) for n in range(1, 6)]
        mean = sum(n * s for n, s in zip(range(1, 6), scores, strict=True)) / surveys if surveys else None
        totals = _row("", "", answered, surveys, mean, scores)
    return ReportTable(NAME, period, COLUMNS, rows, totals=totals)


def _row(by: str, name: str, answered: int, surveys: int, mean: Any, scores: list[int]) -> dict[str, Any]:
    return {
        "by": by,
        "name": name,
        "answered_calls": answered,
        "surveys": surveys,
        "response_pct": ratio(surveys, answered, scale=100),
        "mean_score": round(float(mean), 2) if mean is not None else None,
        **{f"score_{n}": s for n, s in zip(range(1, 6), scores, strict=True)},
    }
