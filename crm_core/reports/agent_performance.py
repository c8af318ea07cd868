"""Agent performance over a period: calls offered, answered, outbound, handle times, pause time by
reason, logged-in time and occupancy, one row per agent the reader may see.

Definitions (docs/KPIS.md, "Reports"):
- offered: inbound calls that rang the agent at least once (call_agents), by the call's start;
- answered: inbound calls the agent answered; outbound: calls the agent placed (any outcome);
- AHT = mean(talk + wrap-up) and mean talk over the answered inbound calls; total talk and total
  wrap-up over every answered call of the agent (inbound and outbound);
- times from agent_state_log, each interval clipped to the period (an open interval runs until now):
  logged-in = every state except logged_out; pause = paused (by reason); occupancy =
  (on_call + wrap_up) ÷ (logged-in − pause) × 100.

Three aggregate queries, each on an index: calls by (started_at), call_agents by agent_endpoint,
agent_state_log by (agent_endpoint, started_at) — the interval an agent was already in when the
period began is found by one `ORDER BY started_at DESC LIMIT 1` probe per agent.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.calllog.models import AgentStateLog, Call, CallAgent
from crm_core.db import UTCDateTime, utcnow
from crm_core.reports.buckets import epoch_float, greatest, least
from crm_core.reports.period import Period
from crm_core.reports.scope import visible_agents
from crm_core.reports.table import Column, ReportTable, ratio, seconds
from crm_core.security.policy import Principal

NAME = "agent-performance"
NOT_LOGGED_IN = "logged_out"
WORKING = ("on_call", "wrap_up")
PAUSED = "paused"

BASE_COLUMNS = [
    Column("agent", "Agent", "text"),
    Column("endpoint", "Seat", "text"),
    Column("team", "Team", "text"),
    Column("offered", "Offered", "count"),
    Column("answered", "Answered", "count"),
    Column("outbound", "Outbound", "count"),
    Column("aht_s", "AHT", "seconds"),
    Column("mean_talk_s", "Mean talk", "seconds"),
    Column("talk_s", "Talk time", "seconds"),
    Column("wrapup_s", "Wrap-up time", "seconds"),
    Column("pause_s", "Pause time", "seconds"),
]
TAIL_COLUMNS = [
    Column("logged_in_s", "Logged-in time", "seconds"),
    Column("occupancy_pct", "Occupancy", "percent"),
]


async def agent_performance(
    session: AsyncSession,
    principal: Principal,
    period: Period,
    *,
    queue: str | None = None,
    now: dt.datetime | None = None,
) -> ReportTable:
    """One row per visible agent; `queue` narrows the call figures (state times are per agent)."""
    agents = await visible_agents(session, principal)
    ids = [a.user_id for a in agents]
    endpoints = [a.endpoint for a in agents if a.endpoint]
    calls = await _call_figures(session, ids, period, queue) if ids else {}
    offered = await _offered(session, endpoints, period, queue) if endpoints else {}
    states = await _state_times(session, endpoints, period, now or utcnow()) if endpoints else {}
    reasons = sorted({reason or "" for times in states.values() for (state, reason) in times if state == PAUSED})
    rows: list[dict[str, Any]] = []
    for agent in agents:
        figures = calls.get(agent.user_id, {})
        times = states.get(agent.endpoint or "", {})
        logged_in = sum(s for (state, _), s in times.items() if state != NOT_LOGGED_IN)
        paused = sum(s for (state, _), s in times.items() if state == PAUSED)
        working = sum(s for (state, _), s in times.items() if state in WORKING)
        answered = int(figures.get("answered", 0))
        row: dict[str, Any] = {
            "agent_user_id": agent.user_id,
            "agent": agent.display_name,
            "username": agent.username,
            "endpoint": agent.endpoint,
            "team": agent.team,
            "offered": offered.get(agent.endpoint or "", 0),
            "answered": answered,
            "outbound": int(figures.get("outbound", 0)),
            "aht_s": ratio(figures.get("handle"), answered),
            "mean_talk_s": ratio(figures.get("talk_in"), answered),
            "talk_s": seconds(figures.get("talk_all")),
            "wrapup_s": seconds(figures.get("wrapup_all")),
            "pause_s": seconds(paused),
        }
        for reason in reasons:
            row[f"pause:{reason}"] = seconds(times.get((PAUSED, reason), 0.0))
        row["logged_in_s"] = seconds(logged_in)
        row["occupancy_pct"] = ratio(working, logged_in - paused, scale=100)
        rows.append(row)
    columns = [
        *BASE_COLUMNS,
        *[Column(f"pause:{r}", "Pause", "seconds", detail=r or "-") for r in reasons],
        *TAIL_COLUMNS,
    ]
    return ReportTable(NAME, period, columns, rows)


async def _call_figures(
    session: AsyncSession, user_ids: list[int], period: Period, queue: str | None
) -> dict[int, dict[str, float]]:
    answered = Call.outcome == "answered"
    inbound_answered = and_(answered, Call.direction == "inbound")
    talk = func.coalesce(Call.talk_s, 0.0)
    wrapup = func.coalesce(Call.wrapup_s, 0.0)
    stmt = (
        select(
            Call.agent_user_id,
            func.sum(case((inbound_answered, 1), else_=0)),
            func.sum(case((Call.direction == "outbound", 1), else_=0)),
            func.sum(case((inbound_answered, talk + wrapup), else_=0.0)),
            func.sum(case((inbound_answered, talk), else_=0.0)),
            func.sum(case((answered, talk), else_=0.0)),
            func.sum(case((answered, wrapup), else_=0.0)),
        )
        .where(
            Call.started_at >= period.utc_start,
            Call.started_at < period.utc_end,
            Call.agent_user_id.in_(user_ids),
        )
        .group_by(Call.agent_user_id)
    )
    if queue is not None:
        stmt = stmt.where(Call.queue == queue)
    result: dict[int, dict[str, float]] = {}
    for user_id, n_answered, n_out, handle, talk_in, talk_all, wrapup_all in await session.execute(stmt):
        result[int(user_id)] = {
            "answered": float(n_answered or 0),
            "outbound": float(n_out or 0),
            "handle": float(handle or 0),
            "talk_in": float(talk_in or 0),
            "talk_all": float(talk_all or 0),
            "wrapup_all": float(wrapup_all or 0),
        }
    return result


async def _offered(session: AsyncSession, endpoints: list[str], period: Period, queue: str | None) -> dict[str, int]:
    # count(DISTINCT): an agent rung twice on one call was offered it once. (An anti-join on "no
    # earlier ring of this agent" gave the same counts and was not faster, scripts/bench/reports.py.)
    stmt = (
        select(CallAgent.agent_endpoint, func.count(func.distinct(CallAgent.call_id)))
        .join(Call, Call.id == CallAgent.call_id)
        .where(
            CallAgent.agent_endpoint.in_(endpoints),
            Call.direction == "inbound",
            Call.started_at >= period.utc_start,
            Call.started_at < period.utc_end,
        )
        .group_by(CallAgent.agent_endpoint)
    )
    if queue is not None:
        stmt = stmt.where(Call.queue == queue)
    return {endpoint: int(n) for endpoint, n in await session.execute(stmt)}


async def _state_times(
    session: AsyncSession, endpoints: list[str], period: Period, now: dt.datetime
) -> dict[str, dict[tuple[str, str | None], float]]:
    """Seconds per (state, reason) per agent inside the period, every interval clipped to it."""
    start, end = period.utc_start, period.utc_end
    clip_end = min(end, max(now, start))
    p0, p1 = start.timestamp(), clip_end.timestamp()
    # The interval each agent was in when the period began: the last one started before it.
    carried_in = [
        select(AgentStateLog.id)
        .where(AgentStateLog.agent_endpoint == endpoint, AgentStateLog.started_at < start)
        .order_by(AgentStateLog.started_at.desc(), AgentStateLog.id.desc())
        .limit(1)
        .scalar_subquery()
        for endpoint in endpoints
    ]
    begins = epoch_float(AgentStateLog.started_at)
    ends = epoch_float(func.coalesce(AgentStateLog.ended_at, literal(now, UTCDateTime())))
    span = least(ends, literal(p1)) - greatest(begins, literal(p0))
    stmt = (
        select(
            AgentStateLog.agent_endpoint,
            AgentStateLog.state,
            AgentStateLog.reason,
            func.sum(
                case(
                    # Most intervals lie inside the period: their stored duration, no arithmetic.
                    (
                        and_(
                            AgentStateLog.started_at >= start,
                            AgentStateLog.ended_at <= clip_end,
                            AgentStateLog.duration_s.is_not(None),
                        ),
                        AgentStateLog.duration_s,
                    ),
                    else_=greatest(span, literal(0.0)),
                )
            ),
        )
        .where(
            AgentStateLog.agent_endpoint.in_(endpoints),
            or_(
                and_(AgentStateLog.started_at >= start, AgentStateLog.started_at < end),
                AgentStateLog.id.in_(carried_in),
            ),
        )
        .group_by(AgentStateLog.agent_endpoint, AgentStateLog.state, AgentStateLog.reason)
    )
    times: dict[str, dict[tuple[str, str | None], float]] = defaultdict(dict)
    for endpoint, state, reason, total in await session.execute(stmt):
        key = (state, (reason or "") if state == PAUSED else None)
        times[endpoint][key] = times[endpoint].get(key, 0.0) + float(total or 0.0)
    return dict(times)
