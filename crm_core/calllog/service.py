"""Idempotent call-log writes and the reads the CTI side needs (recent calls per member, by id)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.calllog.models import AgentStateLog, Call, CallAgent, CallLeg
from crm_core.calllog.schemas import CallLogEntry
from crm_core.db import Base, insert_for, utcnow
from crm_core.phones import normalise
from crm_core.security.models import User

_CALL_COLUMNS = (
    "state",
    "direction",
    "caller_raw",
    "caller_e164",
    "caller_name",
    "callee_raw",
    "callee_e164",
    "dnis",
    "queue",
    "member_id",
    "agent_endpoint",
    "agent_user_id",
    "started_at",
    "answered_at",
    "ended_at",
    "wait_s",
    "ring_s",
    "talk_s",
    "outcome",
    "hangup_cause",
    "recording_file",
    "cti_call_id",
    "transfers",
    "revision",
    "updated_at",
)


async def _user_ids(session: AsyncSession, endpoints: set[str]) -> dict[str, int]:
    if not endpoints:
        return {}
    rows = await session.execute(select(User.agent_endpoint, User.id).where(User.agent_endpoint.in_(endpoints)))
    return {endpoint: user_id for endpoint, user_id in rows if endpoint is not None}


async def write_call(session: AsyncSession, entry: CallLogEntry, users: Mapping[str, int] | None = None) -> int | None:
    """Upsert one call and replace its agents/legs; returns the call id, or None for a stale snapshot.

    The single-call form of `write_calls` (same statements, same revision guard).
    """
    return (await write_calls(session, [entry], users))[0]


async def write_calls(
    session: AsyncSession, entries: Sequence[CallLogEntry], users: Mapping[str, int] | None = None
) -> list[int | None]:
    """Upsert a batch of calls and replace their agents/legs in a constant number of statements.

    Returns, per entry, the call id, or None for a snapshot that changed nothing (stale or superseded
    by a newer snapshot of the same call in the batch). Statements, whatever the batch size (up to
    the driver's bind-parameter limit, ~1,200 calls per statement, past which SQLAlchemy splits):

    1. INSERT … VALUES (…), (…) ON CONFLICT (pbx, linkedid) DO UPDATE … WHERE stored revision is
       older RETURNING id: one statement decides for every call, so a replayed or re-ordered batch
       never duplicates a call nor moves one backwards, and a crash between two batches loses nothing
       (the next snapshot carries the whole call);
    2. DELETE the agents and legs of the calls that changed (two statements);
    3. INSERT their new agents and legs (one multi-row statement each, when there are any).
    """
    if not entries:
        return []
    newest: dict[tuple[str, str], CallLogEntry] = {}
    for entry in entries:
        key = (entry.pbx, entry.linkedid)
        kept = newest.get(key)
        if kept is None or kept.revision < entry.revision:
            newest[key] = entry
    # PostgreSQL refuses one statement touching a row twice (hence one entry per call), and two
    # batches locking the same calls in different orders could deadlock: always lock in key order.
    batch = [newest[key] for key in sorted(newest)]
    if users is None:  # callers that cache endpoint -> user ids pass them in and save this query
        endpoints = {a.agent_endpoint for e in batch for a in e.agents}
        endpoints.update(e.agent_endpoint for e in batch if e.agent_endpoint)
        users = await _user_ids(session, endpoints)
    now = utcnow()
    result = await session.execute(_call_upsert(session), [_call_row(e, users, now) for e in batch])
    written: dict[tuple[str, str], int] = {(pbx, linkedid): int(call_id) for call_id, pbx, linkedid in result}
    if written:
        changed = [written[(e.pbx, e.linkedid)] for e in batch if (e.pbx, e.linkedid) in written]
        await session.execute(delete(_AGENTS).where(_AGENTS.c.call_id.in_(changed)))
        await session.execute(delete(_LEGS).where(_LEGS.c.call_id.in_(changed)))
        agent_rows = [
            {
                "call_id": written[(e.pbx, e.linkedid)],
                "seq": seq,
                "agent_endpoint": offer.agent_endpoint,
                "agent_user_id": users.get(offer.agent_endpoint),
                "rang_at": offer.rang_at,
                "ring_s": offer.ring_s,
                "answered": offer.answered,
                "via": offer.via,
            }
            for e in batch
            if (e.pbx, e.linkedid) in written
            for seq, offer in enumerate(e.agents)
        ]
        if agent_rows:
            await session.execute(insert(_AGENTS), agent_rows)
        leg_rows = [
            {
                "call_id": written[(e.pbx, e.linkedid)],
                "uniqueid": leg.uniqueid,
                "channel": leg.channel,
                "role": leg.role,
                "started_at": leg.started_at,
                "answered_at": leg.answered_at,
                "ended_at": leg.ended_at,
                "hangup_cause": leg.hangup_cause,
            }
            for e in batch
            if (e.pbx, e.linkedid) in written
            for leg in e.legs
        ]
        if leg_rows:
            await session.execute(insert(_LEGS), leg_rows)
    return [written.get((e.pbx, e.linkedid)) if newest[(e.pbx, e.linkedid)] is e else None for e in entries]


# Core tables: the batch skips the ORM's per-row bookkeeping (these rows are never loaded as objects here).
_CALLS = Base.metadata.tables[Call.__tablename__]
_AGENTS = Base.metadata.tables[CallAgent.__tablename__]
_LEGS = Base.metadata.tables[CallLeg.__tablename__]
_UPSERTS: dict[str, Any] = {}


def _call_upsert(session: AsyncSession) -> Any:
    """The calls upsert for the session's dialect, built once (executed with one parameter set per
    call, which SQLAlchemy sends as one multi-row INSERT … VALUES: its "insertmanyvalues")."""
    dialect = session.get_bind().dialect.name
    stmt = _UPSERTS.get(dialect)
    if stmt is None:
        base = insert_for(dialect, _CALLS)
        excluded = base.excluded
        updates: dict[str, Any] = {name: excluded[name] for name in _CALL_COLUMNS}
        # A later snapshot must not erase what an earlier one learned (the matched member, a recording).
        for keep in ("member_id", "recording_file", "cti_call_id", "caller_name"):
            updates[keep] = func.coalesce(excluded[keep], _CALLS.c[keep])
        stmt = _UPSERTS[dialect] = base.on_conflict_do_update(
            index_elements=["pbx", "linkedid"],
            set_=updates,
            where=_CALLS.c.revision < excluded.revision,
        ).returning(_CALLS.c.id, _CALLS.c.pbx, _CALLS.c.linkedid)
    return stmt


def _call_row(entry: CallLogEntry, users: Mapping[str, int], now: dt.datetime) -> dict[str, Any]:
    return {
        "pbx": entry.pbx,
        "linkedid": entry.linkedid,
        "state": entry.state,
        "direction": entry.direction,
        "caller_raw": entry.caller_raw,
        "caller_e164": normalise(entry.caller_raw),
        "caller_name": entry.caller_name,
        "callee_raw": entry.callee_raw,
        "callee_e164": normalise(entry.callee_raw),
        "dnis": entry.dnis,
        "queue": entry.queue,
        "member_id": entry.member_id,
        "agent_endpoint": entry.agent_endpoint,
        "agent_user_id": users.get(entry.agent_endpoint) if entry.agent_endpoint else None,
        "started_at": entry.started_at,
        "answered_at": entry.answered_at,
        "ended_at": entry.ended_at,
        "wait_s": entry.wait_s,
        "ring_s": entry.ring_s,
        "talk_s": entry.talk_s,
        "outcome": entry.outcome,
        "hangup_cause": entry.hangup_cause,
        "recording_file": entry.recording_file,
        "cti_call_id": entry.cti_call_id,
        "transfers": entry.transfers,
        "revision": entry.revision,
        "updated_at": now,
    }


async def set_wrapup(
    session: AsyncSession, linkedid: str, *, disposition: str | None, wrapup_s: float | None, pbx: str = "default"
) -> bool:
    """Record the agent's disposition and wrap-up time after the call (does not touch the revision)."""
    result = await session.execute(
        update(Call)
        .where(Call.pbx == pbx, Call.linkedid == linkedid)
        .values(disposition=disposition, wrapup_s=wrapup_s)
        .returning(Call.id)
    )
    return result.first() is not None


async def call_by_linkedid(session: AsyncSession, linkedid: str, pbx: str = "default") -> Call | None:
    return (await session.execute(select(Call).where(Call.pbx == pbx, Call.linkedid == linkedid))).scalar_one_or_none()


async def agents_of(session: AsyncSession, call_id: int) -> list[CallAgent]:
    rows = await session.execute(select(CallAgent).where(CallAgent.call_id == call_id).order_by(CallAgent.seq))
    return list(rows.scalars())


async def log_agent_state(
    session: AsyncSession, agent_endpoint: str, state: str, reason: str | None, at: dt.datetime
) -> None:
    """Close the agent's open state row and open the new one (durations come from the pair)."""
    await log_agent_states(session, [AgentStateChange(agent_endpoint, state, reason, at)])


@dataclass(frozen=True, slots=True)
class AgentStateChange:
    agent_endpoint: str
    state: str
    reason: str | None
    at: dt.datetime


async def log_agent_states(
    session: AsyncSession, changes: list[AgentStateChange], users: Mapping[str, int] | None = None
) -> int:
    """Record a batch of state changes in order: one SELECT of the open rows, then the closing
    UPDATEs and the new rows flushed together. A change equal to the agent's current state (a
    duplicate event) records nothing. Returns the number of rows opened."""
    if not changes:
        return 0
    endpoints = {c.agent_endpoint for c in changes}
    if users is None:
        users = await _user_ids(session, endpoints)
    rows = await session.execute(
        select(AgentStateLog)
        .where(AgentStateLog.agent_endpoint.in_(endpoints), AgentStateLog.ended_at.is_(None))
        .order_by(AgentStateLog.started_at)
        .with_for_update()
    )
    current: dict[str, AgentStateLog] = {}
    for row in rows.scalars():
        previous = current.get(row.agent_endpoint)
        if previous is not None:  # two open rows (a crash between close and open): close the older
            previous.ended_at = row.started_at
            previous.duration_s = max(0.0, (row.started_at - previous.started_at).total_seconds())
        current[row.agent_endpoint] = row
    opened = 0
    for change in changes:
        open_row = current.get(change.agent_endpoint)
        if open_row is not None:
            if open_row.state == change.state and open_row.reason == change.reason:
                continue
            open_row.ended_at = change.at
            open_row.duration_s = max(0.0, (change.at - open_row.started_at).total_seconds())
        new_row = AgentStateLog(
            agent_endpoint=change.agent_endpoint,
            agent_user_id=users.get(change.agent_endpoint),
            state=change.state,
            reason=change.reason,
            started_at=change.at,
        )
        session.add(new_row)
        current[change.agent_endpoint] = new_row
        opened += 1
    await session.flush()
    return opened
