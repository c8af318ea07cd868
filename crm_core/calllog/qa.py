"""Quality review of calls: configurable criteria and one weighted score per reviewer and call.

`score_pct` is the weighted mean of each criterion's share of its maximum, 0..100, over the criteria
the review scored (criteria deactivated later keep counting in old reviews; the scores store their
codes, and the percentage is kept as computed then, for reports). Reviewing is for supervisors and
admins on calls they may see; saving again replaces the reviewer's own review of that call.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.calllog.access import can_access_call
from crm_core.calllog.models import Call
from crm_core.calllog.qa_models import QaCriterion, QaReview
from crm_core.db import insert_for, utcnow
from crm_core.security.models import User
from crm_core.security.policy import PermissionDenied, Principal, Role

REVIEWERS = frozenset({Role.SUPERVISOR, Role.ADMIN})

# (code, label, weight, max_score): seeded when the table is empty. Solving the caller's problem
# weighs most; the labels are English msgids, translated in calls.po.
DEFAULT_CRITERIA: tuple[tuple[str, str, int, int], ...] = (
    ("greeting", "Greeting", 1, 5),
    ("identification", "Caller identification", 2, 5),
    ("solution", "Solution", 4, 5),
    ("courtesy", "Courtesy", 2, 5),
    ("closing", "Closing", 1, 5),
)


class CallNotFound(LookupError):
    """No such call, or not one the principal may see (the two are not told apart)."""


class CriterionNotFound(LookupError):
    pass


class InvalidScores(ValueError):
    """Scores that do not fit the active criteria (unknown code, missing one, out of range)."""


class CriterionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    code: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")
    label: str = Field(min_length=1, max_length=100)
    weight: int = Field(default=1, ge=1, le=100)
    max_score: int = Field(default=5, ge=1, le=100)
    position: int | None = Field(default=None, ge=0)


class CriterionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    label: str | None = Field(default=None, min_length=1, max_length=100)
    weight: int | None = Field(default=None, ge=1, le=100)
    max_score: int | None = Field(default=None, ge=1, le=100)
    position: int | None = Field(default=None, ge=0)
    active: bool | None = None


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    scores: dict[str, int]
    comment: str | None = Field(default=None, max_length=2000)


def criterion_view(c: QaCriterion) -> dict[str, Any]:
    return {
        "id": c.id,
        "code": c.code,
        "label": c.label,
        "weight": c.weight,
        "max_score": c.max_score,
        "active": c.active,
        "position": c.position,
    }


async def ensure_default_criteria(session: AsyncSession) -> None:
    """Seed the default set once, when no criterion exists at all (a deactivated one counts: an admin
    who switched them all off does not get them back)."""
    if (await session.execute(select(func.count()).select_from(QaCriterion))).scalar_one():
        return
    statement = insert_for(session, QaCriterion).on_conflict_do_nothing(index_elements=["code"])
    await session.execute(
        statement,
        [
            {"code": code, "label": label, "weight": weight, "max_score": top, "active": True, "position": i}
            for i, (code, label, weight, top) in enumerate(DEFAULT_CRITERIA)
        ],
    )


async def list_criteria(session: AsyncSession, *, include_inactive: bool = False) -> list[dict[str, Any]]:
    await ensure_default_criteria(session)
    statement = select(QaCriterion).order_by(QaCriterion.position, QaCriterion.id)
    if not include_inactive:
        statement = statement.where(QaCriterion.active.is_(True))
    return [criterion_view(c) for c in (await session.execute(statement)).scalars()]


async def create_criterion(session: AsyncSession, data: CriterionIn) -> dict[str, Any]:
    """A new criterion; raises ValueError when the code is taken (codes are the keys of old scores)."""
    await ensure_default_criteria(session)
    taken = await session.execute(select(QaCriterion.id).where(QaCriterion.code == data.code))
    if taken.first() is not None:
        raise ValueError(f"criterion {data.code!r} exists")
    position = data.position
    if position is None:
        position = int((await session.execute(select(func.coalesce(func.max(QaCriterion.position), -1)))).scalar_one())
        position += 1
    row = QaCriterion(
        code=data.code, label=data.label, weight=data.weight, max_score=data.max_score, position=position, active=True
    )
    session.add(row)
    await session.flush()
    return criterion_view(row)


async def update_criterion(session: AsyncSession, criterion_id: int, patch: CriterionPatch) -> dict[str, Any]:
    """Change or (de)activate a criterion; its code stays, so old reviews still name it."""
    row = await session.get(QaCriterion, criterion_id)
    if row is None:
        raise CriterionNotFound(f"no criterion {criterion_id}")
    for name, value in patch.model_dump(exclude_none=True).items():
        setattr(row, name, value)
    await session.flush()
    return criterion_view(row)


def score_pct(criteria: Sequence[Mapping[str, Any]], scores: Mapping[str, int]) -> int:
    """Weighted 0..100: sum(weight * score / max) / sum(weight), rounded half up. Pure, so the rule is
    tested directly; `scores` must already be validated against `criteria`."""
    total_weight = sum(int(c["weight"]) for c in criteria if c["code"] in scores)
    if total_weight == 0:
        return 0
    # Exact fractions: 57.5 in floats is 57.49999…, which would round a reviewer's score down.
    earned = sum(
        (Fraction(int(c["weight"]) * scores[c["code"]], int(c["max_score"])) for c in criteria if c["code"] in scores),
        Fraction(0),
    )
    return math.floor(earned * 100 / total_weight + Fraction(1, 2))


def check_scores(criteria: Sequence[Mapping[str, Any]], scores: Mapping[str, int]) -> None:
    """Every active criterion scored once, within 0..max; nothing else."""
    codes = {c["code"]: c for c in criteria}
    unknown = sorted(set(scores) - set(codes))
    if unknown:
        raise InvalidScores(f"unknown criteria: {', '.join(unknown)}")
    missing = sorted(set(codes) - set(scores))
    if missing:
        raise InvalidScores(f"score every criterion; missing: {', '.join(missing)}")
    for code, value in scores.items():
        top = int(codes[code]["max_score"])
        if isinstance(value, bool) or not 0 <= value <= top:
            raise InvalidScores(f"{code} must be between 0 and {top}")


async def save_review(session: AsyncSession, principal: Principal, call_id: int, data: ReviewIn) -> dict[str, Any]:
    """Create or replace the principal's review of a call (one per reviewer and call)."""
    if principal.role not in REVIEWERS:
        raise PermissionDenied("only supervisors and administrators score calls")
    if not await can_access_call(session, principal, call_id):
        raise CallNotFound(f"no call {call_id}")
    criteria = await list_criteria(session)
    check_scores(criteria, data.scores)
    agent_user_id = (await session.execute(select(Call.agent_user_id).where(Call.id == call_id))).scalar_one()
    now = utcnow()
    values = {
        "call_id": call_id,
        "reviewer_user_id": principal.user_id,
        "agent_user_id": agent_user_id,
        "scores": dict(data.scores),
        "score_pct": score_pct(criteria, data.scores),
        "comment": data.comment or None,
        "created_at": now,
        "updated_at": now,
    }
    statement = insert_for(session, QaReview).values(values)
    # An upsert: two tabs saving the same review at once end as one row, the later save winning.
    statement = statement.on_conflict_do_update(
        index_elements=["call_id", "reviewer_user_id"],
        set_={k: statement.excluded[k] for k in ("agent_user_id", "scores", "score_pct", "comment", "updated_at")},
    )
    await session.execute(statement)
    reviews = await reviews_for_call(session, call_id)
    return next(r for r in reviews if r["reviewer_user_id"] == principal.user_id)


async def reviews_for_call(session: AsyncSession, call_id: int) -> list[dict[str, Any]]:
    """Every review of the call, newest first, with the reviewer's name (access checked by the caller)."""
    rows = await session.execute(
        select(QaReview, User.display_name)
        .join(User, User.id == QaReview.reviewer_user_id)
        .where(QaReview.call_id == call_id)
        .order_by(QaReview.updated_at.desc(), QaReview.id.desc())
        .execution_options(populate_existing=True)  # an upsert in this session changed the rows
    )
    return [_review_view(review, name) for review, name in rows]


def _review_view(review: QaReview, reviewer: str) -> dict[str, Any]:
    stamp: dt.datetime = review.updated_at
    return {
        "id": review.id,
        "call_id": review.call_id,
        "reviewer_user_id": review.reviewer_user_id,
        "reviewer": reviewer,
        "agent_user_id": review.agent_user_id,
        "scores": dict(review.scores),
        "score_pct": review.score_pct,
        "comment": review.comment,
        "updated_at": stamp.isoformat(),
    }
