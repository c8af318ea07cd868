"""Call-log review: the filters a supervisor combines, keyset pages over (started_at DESC, id DESC),
and each row as the reader may see it (numbers masked per the field policy, the member's name).

Why keyset and not OFFSET: page 500 of an OFFSET query reads and throws away 25,000 rows, so deep
pages get slower as the log grows; a keyset page starts from the last row seen through
`ix_calls_started (started_at, id)` and costs the same at any depth (scripts/bench/calllog_review.py).
The cursor is opaque to clients (base64 of the last row's key); a forged one only moves the start of
the page, the visibility clause still applies.

Days are the site's days: `date_from`/`date_to` are dates in settings.timezone, turned into a UTC
half-open range [date_from 00:00 local, date_to + 1 day 00:00 local) on the stored UTC times.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import zoneinfo
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import ColumnElement, Select, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.access import call_visibility
from crm_core.calllog.models import Call
from crm_core.db import read_session
from crm_core.importers.export import display_phone
from crm_core.members.models import Member
from crm_core.phones import normalise
from crm_core.security.models import OrgUnit, User
from crm_core.security.policy import Principal, Role, apply_field_policy

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
# The review's outcome names: "missed" is the call log's no_answer (rang, nobody picked up).
OUTCOMES: dict[str, str] = {
    "answered": "answered",
    "abandoned": "abandoned",
    "missed": "no_answer",
    "busy": "busy",
    "failed": "failed",
    "lost": "lost",
}
Direction = Literal["inbound", "outbound", "internal"]
Outcome = Literal["answered", "abandoned", "missed", "busy", "failed", "lost"]


class InvalidCursor(ValueError):
    """The cursor is not one this service issued (truncated, edited, from another version)."""


class CallFilter(BaseModel):
    """The review's filters, parsed from query parameters; empty strings mean "no filter"."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    date_from: dt.date | None = None
    date_to: dt.date | None = None
    agent: int | None = Field(default=None, ge=1)  # the user id of the agent who took the call
    queue: str | None = Field(default=None, max_length=64)
    direction: Direction | None = None
    outcome: Outcome | None = None
    member: int | None = Field(default=None, ge=1)
    number: str | None = Field(default=None, max_length=32)  # any format; matched as E.164
    min_talk: float | None = Field(default=None, ge=0)  # seconds
    max_talk: float | None = Field(default=None, ge=0)
    disposition: str | None = Field(default=None, max_length=32)
    has_recording: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _blank_is_none(cls, values: Any) -> Any:
        if isinstance(values, Mapping):
            return {k: (None if v == "" else v) for k, v in values.items()}
        return values

    @field_validator("number")
    @classmethod
    def _normalise_number(cls, value: str | None) -> str | None:
        if value is None:
            return None
        e164 = normalise(value)
        if e164 is None:
            raise ValueError("not a phone number")
        return e164

    @model_validator(mode="after")
    def _ranges(self) -> CallFilter:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from is after date_to")
        if self.min_talk is not None and self.max_talk is not None and self.min_talk > self.max_talk:
            raise ValueError("min_talk is above max_talk")
        return self

    def query_items(self) -> dict[str, str]:
        """The filter as query parameters again (for "more" links and export links)."""
        items: dict[str, str] = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if isinstance(value, bool):
                items[name] = "true" if value else "false"
            else:
                items[name] = str(value)
        return items


def _local_midnight_utc(day: dt.date, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=zone).astimezone(dt.UTC)


def filter_conditions(spec: CallFilter, timezone: str) -> list[ColumnElement[bool]]:
    """The WHERE terms of a filter (without visibility): each is sargable on the call columns."""
    zone = zoneinfo.ZoneInfo(timezone)
    terms: list[ColumnElement[bool]] = []
    if spec.date_from is not None:
        terms.append(Call.started_at >= _local_midnight_utc(spec.date_from, zone))
    if spec.date_to is not None:
        terms.append(Call.started_at < _local_midnight_utc(spec.date_to + dt.timedelta(days=1), zone))
    if spec.agent is not None:
        terms.append(Call.agent_user_id == spec.agent)
    if spec.queue is not None:
        terms.append(Call.queue == spec.queue)
    if spec.direction is not None:
        terms.append(Call.direction == spec.direction)
    if spec.outcome is not None:
        terms.append(Call.outcome == OUTCOMES[spec.outcome])
    if spec.member is not None:
        terms.append(Call.member_id == spec.member)
    if spec.number is not None:
        terms.append(or_(Call.caller_e164 == spec.number, Call.callee_e164 == spec.number))
    if spec.min_talk is not None:
        terms.append(Call.talk_s >= spec.min_talk)
    if spec.max_talk is not None:
        terms.append(Call.talk_s <= spec.max_talk)
    if spec.disposition is not None:
        terms.append(Call.disposition == spec.disposition)
    if spec.has_recording is True:
        terms.append(Call.recording_file.is_not(None))
    elif spec.has_recording is False:
        terms.append(Call.recording_file.is_(None))
    return terms


# ---------------------------------------------------------------------------- cursor
def encode_cursor(started_at: dt.datetime, call_id: int) -> str:
    raw = json.dumps([started_at.astimezone(dt.UTC).isoformat(), call_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, call_id = json.loads(raw)
        started_at = dt.datetime.fromisoformat(stamp)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursor("invalid cursor") from exc
    if started_at.tzinfo is None or not isinstance(call_id, int) or isinstance(call_id, bool):
        raise InvalidCursor("invalid cursor")
    return started_at, call_id


# ---------------------------------------------------------------------------- rows
_COLUMNS = (
    Call.id,
    Call.linkedid,
    Call.started_at,
    Call.answered_at,
    Call.ended_at,
    Call.direction,
    Call.caller_e164,
    Call.caller_raw,
    Call.callee_e164,
    Call.callee_raw,
    Call.dnis,
    Call.queue,
    Call.member_id,
    Call.agent_user_id,
    Call.agent_endpoint,
    Call.wait_s,
    Call.talk_s,
    Call.wrapup_s,
    Call.outcome,
    Call.disposition,
    Call.recording_file,
    Call.transfers,
    Member.name.label("member_name"),
    User.display_name.label("agent_name"),
)


def review_statement(principal: Principal, spec: CallFilter, timezone: str) -> Select[*tuple[Any, ...]]:
    """The filtered, visible calls, newest first, with the member's and the agent's names."""
    return (
        select(*_COLUMNS)
        .outerjoin(Member, Member.id == Call.member_id)
        .outerjoin(User, User.id == Call.agent_user_id)
        .where(call_visibility(principal), *filter_conditions(spec, timezone))
        .order_by(Call.started_at.desc(), Call.id.desc())
    )


def _after(cursor: tuple[dt.datetime, int]) -> ColumnElement[bool]:
    # A row-value comparison is one index range condition on (started_at, id) in PostgreSQL; SQLite
    # (3.15+) understands it too. The right side takes the columns' types (UTC datetime binding).
    started_at, call_id = cursor
    return tuple_(Call.started_at, Call.id) < tuple_(started_at, call_id)


@functools.lru_cache(maxsize=8192)
def _national(e164: str) -> str | None:
    # A landline or 400 number goes through phonenumbers (~0.2 ms); the same service lines come back
    # on every row, and formatting them was 70 % of a page's time (scripts/bench/calllog_review.py).
    return display_phone(e164)


def shown_number(principal: Principal, e164: str | None, raw: str | None) -> str | None:
    """A call's number in national form, masked where the principal sees secondary phones masked
    (the same rule as callbacks: agents see 138****8000)."""
    number = _national(e164) if e164 else raw
    if not number:
        return None
    shown: str | None = apply_field_policy(principal, "contact", {"phone": number}).get("phone")
    return shown


def call_row(principal: Principal, row: Any) -> dict[str, Any]:
    """One call as `principal` may see it; plain JSON-ready data."""
    member_name = None
    if row.member_id is not None and row.member_name is not None:
        member_name = apply_field_policy(principal, "member", {"name": row.member_name}).get("name")
    return {
        "id": row.id,
        "linkedid": row.linkedid,
        "started_at": row.started_at.isoformat(),
        "answered_at": row.answered_at.isoformat() if row.answered_at else None,
        "ended_at": row.ended_at.isoformat() if row.ended_at else None,
        "direction": row.direction,
        "caller": shown_number(principal, row.caller_e164, row.caller_raw),
        "callee": shown_number(principal, row.callee_e164, row.callee_raw),
        "dnis": row.dnis,
        "queue": row.queue,
        "member_id": row.member_id,
        "member_name": member_name,
        "agent_user_id": row.agent_user_id,
        "agent_name": row.agent_name or row.agent_endpoint,
        "wait_s": row.wait_s,
        "talk_s": row.talk_s,
        "wrapup_s": row.wrapup_s,
        "outcome": row.outcome,
        "disposition": row.disposition,
        "has_recording": row.recording_file is not None,
        "transfers": row.transfers,
    }


@dataclass(frozen=True, slots=True)
class ReviewPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


async def review_page(
    session: AsyncSession,
    principal: Principal,
    spec: CallFilter,
    *,
    timezone: str,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> ReviewPage:
    """One page of the filtered calls `principal` may see; `next_cursor` is None on the last page.
    Raises InvalidCursor for a cursor this service did not issue."""
    limit = max(1, min(limit, MAX_LIMIT))
    statement = review_statement(principal, spec, timezone)
    if cursor:
        statement = statement.where(_after(decode_cursor(cursor)))
    rows = (await session.execute(statement.limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].started_at, rows[-1].id) if more else None
    return ReviewPage([call_row(principal, r) for r in rows], next_cursor)


async def iter_review_rows(
    sessions: async_sessionmaker[AsyncSession],
    principal: Principal,
    spec: CallFilter,
    *,
    timezone: str,
    page_rows: int = 1_000,
    max_rows: int | None = None,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every filtered call in pages, each read in its own short read session (a long read would hold
    SQLite's snapshot and PostgreSQL's xmin for the whole download); memory is one page."""
    after: tuple[dt.datetime, int] | None = None
    sent = 0
    while max_rows is None or sent < max_rows:
        size = page_rows if max_rows is None else min(page_rows, max_rows - sent)
        statement = review_statement(principal, spec, timezone)
        if after is not None:
            statement = statement.where(_after(after))
        async with read_session(sessions) as session:
            rows = (await session.execute(statement.limit(size))).all()
        if not rows:
            return
        yield [call_row(principal, r) for r in rows]
        sent += len(rows)
        if len(rows) < size:
            return
        after = (rows[-1].started_at, rows[-1].id)


async def agent_choices(session: AsyncSession, principal: Principal) -> list[tuple[int, str]]:
    """The agents the filter form offers: the principal's team (per the same rule as visibility),
    everyone for an admin, nobody for an agent (they only see calls they took part in)."""
    if principal.role == Role.ADMIN:
        condition: ColumnElement[bool] = User.role.in_((Role.AGENT.value, Role.SUPERVISOR.value))
    elif principal.role == Role.SUPERVISOR and principal.org_unit_path is not None:
        subtree = select(OrgUnit.id).where(OrgUnit.path.startswith(principal.org_unit_path))
        condition = User.org_unit_id.in_(subtree) | (User.id == principal.user_id)
    else:
        return []
    rows = await session.execute(
        select(User.id, User.display_name).where(condition, User.active.is_(True)).order_by(User.display_name)
    )
    return [(user_id, name) for user_id, name in rows]
