"""Which agents and queues a report reader may see.

Agents: the reader's data scope over users (`scope_filter` on the user's org unit: a supervisor
sees the agents of their org unit and below, an administrator everyone). Queues: a queue served by a
team (`QueuePolicy.team`) is visible to readers whose scope covers that team; a queue without a team
is site-wide and visible to every reader of reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.security.models import OrgUnit, User
from crm_core.security.policy import DataScope, Principal, in_scope
from crm_core.security.service import scope_filter
from crm_core.settings import Settings


@dataclass(frozen=True, slots=True)
class Agent:
    user_id: int
    username: str
    display_name: str
    endpoint: str | None
    team: str | None


async def visible_agents(session: AsyncSession, principal: Principal) -> list[Agent]:
    """Agents (users with role agent or a phone seat) inside the principal's scope, by name."""
    rows = await session.execute(
        select(User.id, User.username, User.display_name, User.agent_endpoint, OrgUnit.name)
        .outerjoin(OrgUnit, OrgUnit.id == User.org_unit_id)
        .where(
            or_(User.role == "agent", User.agent_endpoint.is_not(None)),
            scope_filter(principal, User.id, User.org_unit_id),
        )
        .order_by(User.display_name, User.id)
    )
    return [Agent(uid, username, name, endpoint, team) for uid, username, name, endpoint, team in rows]


async def visible_queues(session: AsyncSession, principal: Principal, settings: Settings) -> list[str] | None:
    """The queues the principal may report on, or None for all (including queues not configured)."""
    if principal.scope == DataScope.ALL:
        return None
    teams = {p.team for p in settings.queues.values() if p.team}
    units = {}
    if teams:
        rows = await session.execute(select(OrgUnit.code, OrgUnit.id, OrgUnit.path).where(OrgUnit.code.in_(teams)))
        units = {code: (uid, path) for code, uid, path in rows}
    visible = []
    for queue, policy in settings.queues.items():
        if policy.team is None:
            visible.append(queue)
            continue
        unit = units.get(policy.team)
        if unit is not None and in_scope(principal, None, unit[0], unit[1]):
            visible.append(queue)
    return visible
