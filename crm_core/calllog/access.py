"""Who may see which call: one WHERE clause on `calls`, shared by the review, the detail page, the
exports, QA and playback, so every exit for a call applies the same rule.

- agent: calls they took part in (they answered it, `calls.agent_user_id`, or it rang them, a
  `call_agents` row with their user id);
- supervisor: calls taken by agents of their org unit and below (the materialised path prefix, as in
  `security.service.scope_filter`), plus calls they took part in themselves; a per-user data scope
  narrows or widens the unit part (own / department / department and below / all); plus the calls
  no agent took (abandoned, missed) in the queues their teams serve (`Principal.supervised_queues`,
  from `supervised_queues` below), so abandoned and missed calls can be reviewed by their team;
- crm_staff: none. They work on members, not on the call centre's conversations, and a recording or a
  caller's number is not theirs to browse; a member's own call list (member 360) is how they see calls;
- admin: all.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.calllog.models import Call, CallAgent
from crm_core.security.models import OrgUnit, User
from crm_core.security.policy import DataScope, Principal, Role


def took_part(user_id: int) -> ColumnElement[bool]:
    """Calls the user answered or that rang them (the EXISTS uses `call_agents.call_id`'s index)."""
    return or_(
        Call.agent_user_id == user_id,
        exists(select(CallAgent.id).where(CallAgent.call_id == Call.id, CallAgent.agent_user_id == user_id)),
    )


def _team_agents(principal: Principal) -> ColumnElement[bool] | None:
    """Calls taken by the supervisor's team per their data scope; None when they have no team."""
    if principal.scope == DataScope.ALL:
        return true()
    if principal.scope == DataScope.OWN or principal.org_unit_id is None:
        return None
    if principal.scope == DataScope.DEPARTMENT:
        members = select(User.id).where(User.org_unit_id == principal.org_unit_id)
    else:
        if principal.org_unit_path is None:
            return None
        subtree = select(OrgUnit.id).where(OrgUnit.path.startswith(principal.org_unit_path))
        members = select(User.id).where(User.org_unit_id.in_(subtree))
    # A small uncorrelated IN: PostgreSQL hashes the team's user ids once and filters the keyset scan.
    return Call.agent_user_id.in_(members)


def call_visibility(principal: Principal) -> ColumnElement[bool]:
    """WHERE clause on `Call` restricting rows to the calls `principal` may see."""
    if principal.role == Role.ADMIN:
        return true()
    if principal.role == Role.AGENT:
        return took_part(principal.user_id)
    if principal.role == Role.SUPERVISOR:
        parts = [took_part(principal.user_id)]
        team = _team_agents(principal)
        if team is not None:
            parts.append(team)
        if principal.supervised_queues:
            parts.append(and_(Call.agent_user_id.is_(None), Call.queue.in_(sorted(principal.supervised_queues))))
        return or_(*parts)
    return false()


async def can_access_call(session: AsyncSession, principal: Principal, call_id: int) -> bool:
    """Whether the call exists and `principal` may see it (playback, detail, QA all ask this)."""
    found = await session.execute(select(Call.id).where(Call.id == call_id, call_visibility(principal)))
    return found.first() is not None


async def supervised_queues(
    session: AsyncSession, principal: Principal, queue_teams: Mapping[str, str | None]
) -> frozenset[str]:
    """The queues whose team (an org unit code) lies in the supervisor's data scope."""
    if principal.role != Role.SUPERVISOR or principal.scope == DataScope.OWN:
        return frozenset()
    if principal.scope == DataScope.ALL:
        return frozenset(queue_teams)
    if principal.scope == DataScope.DEPARTMENT:
        units = select(OrgUnit.code).where(OrgUnit.id == principal.org_unit_id)
    elif principal.org_unit_path is not None:
        units = select(OrgUnit.code).where(OrgUnit.path.startswith(principal.org_unit_path))
    else:
        return frozenset()
    codes = set((await session.execute(units)).scalars())
    return frozenset(queue for queue, team in queue_teams.items() if team is not None and team in codes)
