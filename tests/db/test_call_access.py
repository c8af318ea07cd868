"""Who may see which call, on both engines: the WHERE clause and the single-call check agree, for
every role against own, rung, team and other-team calls."""

from __future__ import annotations

import dataclasses

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.calllog.access import call_visibility, can_access_call, supervised_queues
from crm_core.calllog.models import Call
from crm_core.db import read_session
from crm_core.security.policy import DataScope
from tests.db import call_factory
from tests.db.call_factory import call


async def test_access_matrix_by_role_and_team(sessions: async_sessionmaker[AsyncSession]) -> None:
    team = await call_factory.team(sessions)
    names = ["a_took", "a2_took", "b_took", "rang_a_b_took", "nobody", "sup_a_took", "a_missed"]
    ids = dict(
        zip(
            names,
            await call_factory.add_calls(
                sessions,
                call(agent=team.agent_a),
                call(agent=team.agent_a2),
                call(agent=team.agent_b),
                call(agent=team.agent_b, rang=(team.agent_a,)),
                call(outcome="abandoned"),
                call(agent=team.sup_a),
                call(outcome="no_answer", rang=(team.agent_a, team.agent_b)),
            ),
            strict=True,
        )
    )
    expected = {
        "agent_a": {"a_took", "rang_a_b_took", "a_missed"},
        "agent_a2": {"a2_took"},
        "agent_b": {"b_took", "rang_a_b_took", "a_missed"},
        "sup_a": {"a_took", "a2_took", "sup_a_took"},
        "sup_b": {"b_took", "rang_a_b_took"},
        "admin": set(names),
        "staff": set(),
    }
    async with read_session(sessions) as session:
        for who, visible in expected.items():
            principal = getattr(team, who)
            listed = set((await session.execute(select(Call.id).where(call_visibility(principal)))).scalars())
            assert listed == {ids[n] for n in visible}, who
            for name, call_id in ids.items():
                assert await can_access_call(session, principal, call_id) == (name in visible), (who, name)
        assert not await can_access_call(session, team.admin, max(ids.values()) + 1)


async def test_supervisor_data_scope_widens_or_narrows_the_team_part(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A per-user data scope: "own" leaves only the calls they took part in, "department" their unit
    without sub-units, "all" every call."""
    team = await call_factory.team(sessions)
    a_took, sup_took, b_took = await call_factory.add_calls(
        sessions, call(agent=team.agent_a), call(agent=team.sup_a), call(agent=team.agent_b)
    )
    own_only = dataclasses.replace(team.sup_a, scope=DataScope.OWN)
    department = dataclasses.replace(team.sup_a, scope=DataScope.DEPARTMENT)
    everyone = dataclasses.replace(team.sup_a, scope=DataScope.ALL)
    async with read_session(sessions) as session:
        assert not await can_access_call(session, own_only, a_took)
        assert await can_access_call(session, own_only, sup_took)
        assert await can_access_call(session, department, a_took)
        assert not await can_access_call(session, department, b_took)
        assert await can_access_call(session, everyone, b_took)


async def test_supervisors_review_unanswered_calls_of_the_queues_their_teams_serve(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Abandoned and missed calls have no agent: a supervisor sees those of the queues whose team
    (settings.queues[q].team) lies in their scope, and no others; answered calls keep the team rule."""
    team = await call_factory.team(sessions)
    teams = {"member-service": "310", "vip": "320", "orphan": None}
    ms_abandoned, vip_abandoned, ms_missed, vip_answered_by_b = await call_factory.add_calls(
        sessions,
        call(outcome="abandoned", queue="member-service"),
        call(outcome="abandoned", queue="vip"),
        call(outcome="no_answer", queue="member-service"),
        call(agent=team.agent_b, queue="member-service"),
    )
    async with read_session(sessions) as session:
        sup_a = dataclasses.replace(team.sup_a, supervised_queues=await supervised_queues(session, team.sup_a, teams))
        sup_b = dataclasses.replace(team.sup_b, supervised_queues=await supervised_queues(session, team.sup_b, teams))
        assert sup_a.supervised_queues == {"member-service"} and sup_b.supervised_queues == {"vip"}
        own_only = dataclasses.replace(team.sup_a, scope=DataScope.OWN)
        assert await supervised_queues(session, own_only, teams) == frozenset()
        assert await supervised_queues(session, team.agent_a, teams) == frozenset()
        everyone = dataclasses.replace(team.sup_a, scope=DataScope.ALL)
        assert await supervised_queues(session, everyone, teams) == {"member-service", "vip", "orphan"}

        def visible(principal):  # type: ignore[no-untyped-def]
            return select(Call.id).where(call_visibility(principal))

        assert set((await session.execute(visible(sup_a))).scalars()) == {ms_abandoned, ms_missed}
        assert set((await session.execute(visible(sup_b))).scalars()) == {vip_abandoned, vip_answered_by_b}
        assert not await can_access_call(session, sup_a, vip_abandoned)
        assert not await can_access_call(session, sup_a, vip_answered_by_b)  # another team's agent took it
