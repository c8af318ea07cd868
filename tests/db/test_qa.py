"""QA scoring on both engines: default criteria seeded once, weighted percentage, one review per
reviewer and call (a resave updates it), bad scores and the wrong people refused."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog import qa
from crm_core.calllog.qa_models import QaReview
from crm_core.db import read_session, transaction
from crm_core.security.policy import PermissionDenied
from tests.db import call_factory
from tests.db.call_factory import call


def test_score_pct_is_the_weighted_share_of_the_maximum() -> None:
    criteria = [
        {"code": "a", "weight": 1, "max_score": 5},
        {"code": "b", "weight": 3, "max_score": 10},
    ]
    # (1 * 4/5 + 3 * 5/10) / 4 = (0.8 + 1.5) / 4 = 0.575 -> 58 (half up)
    assert qa.score_pct(criteria, {"a": 4, "b": 5}) == 58
    assert qa.score_pct(criteria, {"a": 5, "b": 10}) == 100
    assert qa.score_pct(criteria, {"a": 0, "b": 0}) == 0


async def test_defaults_are_seeded_once_and_admins_manage_criteria(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with transaction(sessions) as session:
        first = await qa.list_criteria(session)
        again = await qa.list_criteria(session)
    assert [c["code"] for c in first] == [code for code, *_ in qa.DEFAULT_CRITERIA] == [c["code"] for c in again]
    async with transaction(sessions) as session:
        added = await qa.create_criterion(session, qa.CriterionIn(code="compliance", label="Compliance", weight=3))
        with pytest.raises(ValueError, match="exists"):
            await qa.create_criterion(session, qa.CriterionIn(code="greeting", label="Again"))
    greeting = first[0]["id"]
    async with transaction(sessions) as session:
        await qa.update_criterion(session, greeting, qa.CriterionPatch(active=False))
        changed = await qa.update_criterion(session, added["id"], qa.CriterionPatch(max_score=10, label="合规"))
        with pytest.raises(qa.CriterionNotFound):
            await qa.update_criterion(session, 999_999, qa.CriterionPatch(active=False))
    assert changed["max_score"] == 10 and changed["label"] == "合规" and added["position"] == len(first)
    async with read_session(sessions) as session:
        active = await qa.list_criteria(session)
        every = await qa.list_criteria(session, include_inactive=True)
    assert "greeting" not in {c["code"] for c in active} and "compliance" in {c["code"] for c in active}
    assert len(every) == len(first) + 1


async def test_a_review_is_scored_and_a_resave_updates_it(sessions: async_sessionmaker[AsyncSession]) -> None:
    team = await call_factory.team(sessions)
    (call_id,) = await call_factory.add_calls(sessions, call(agent=team.agent_a))
    full = {code: top for code, _, _, top in qa.DEFAULT_CRITERIA}
    async with transaction(sessions) as session:
        saved = await qa.save_review(session, team.sup_a, call_id, qa.ReviewIn(scores=full, comment="好"))
    assert saved["score_pct"] == 100 and saved["agent_user_id"] == team.agent_a.user_id
    # Solution (weight 4 of 10) at 0, the rest full: 60 %.
    async with transaction(sessions) as session:
        resaved = await qa.save_review(
            session, team.sup_a, call_id, qa.ReviewIn(scores=full | {"solution": 0}, comment="未解决")
        )
        by_admin = await qa.save_review(session, team.admin, call_id, qa.ReviewIn(scores=full))
    assert resaved["id"] == saved["id"] and resaved["score_pct"] == 60 and resaved["comment"] == "未解决"
    async with read_session(sessions) as session:
        reviews = await qa.reviews_for_call(session, call_id)
        count = (await session.execute(select(func.count()).select_from(QaReview))).scalar_one()
    assert count == 2
    assert {(r["reviewer"], r["score_pct"]) for r in reviews} == {("sup_a", 60), ("admin", 100)}
    assert by_admin["reviewer_user_id"] == team.admin.user_id


async def test_bad_scores_and_the_wrong_reviewers_are_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    team = await call_factory.team(sessions)
    (call_id,) = await call_factory.add_calls(sessions, call(agent=team.agent_a))
    full = {code: top for code, _, _, top in qa.DEFAULT_CRITERIA}
    bad = [
        full | {"solution": 6},
        full | {"solution": -1},
        full | {"charm": 3},
        {k: v for k, v in full.items() if k != "closing"},
    ]
    async with transaction(sessions) as session:
        for scores in bad:
            with pytest.raises(qa.InvalidScores):
                await qa.save_review(session, team.sup_a, call_id, qa.ReviewIn(scores=scores))
        with pytest.raises(PermissionDenied):
            await qa.save_review(session, team.agent_a, call_id, qa.ReviewIn(scores=full))
        with pytest.raises(qa.CallNotFound):  # another team's call
            await qa.save_review(session, team.sup_b, call_id, qa.ReviewIn(scores=full))
    async with read_session(sessions) as session:
        assert await qa.reviews_for_call(session, call_id) == []
