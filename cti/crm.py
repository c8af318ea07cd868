"""The telephony side's narrow window onto the CRM: who an endpoint is, who a caller is.

Everything cti needs from crm_core goes through here, so the boundary stays one file wide.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import read_session
from crm_core.member360 import member_360
from crm_core.members.errors import MemberNotFound
from crm_core.members.lookup import Candidate, MatchKind, lookup_by_phone
from crm_core.phones import normalise
from crm_core.security.models import User
from crm_core.security.policy import Principal, apply_field_policy
from crm_core.security.service import principal_for
from cti.retry import with_db_retry

__all__ = ["Candidate", "CrmGateway", "MatchKind", "best_member"]


def best_member(candidates: list[Candidate]) -> int | None:
    """The member a call is filed under: the single best own-number match, else none (ambiguous)."""
    if not candidates:
        return None
    top = candidates[0]
    if top.match > MatchKind.OWN_LANDLINE:
        return None
    if len(candidates) > 1 and candidates[1].match == top.match and candidates[1].status == top.status:
        return None  # two members share the number equally: let the agent pick
    return top.member_id


@dataclass
class _CachedPrincipal:
    principal: Principal | None
    loaded_at: float


class CrmGateway:
    """Caller lookup, member 360 and endpoint → user resolution, with a short principal cache.

    Principals are cached for `ttl` seconds: a screen pop must not pay for loading roles and field
    overrides on every ring, and a permission change reaches pops within that time. Caller lookups are
    cached for `lookup_ttl` seconds: one call asks for its number from the screen pop of each ringing
    agent, the call log and the callback queue (cti_pipeline bench: 2.15 lookups a call); linking a
    number to a member calls `forget_number` so the next call matches at once.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ttl: float = 30.0,
        *,
        lookup_ttl: float = 5.0,
        lookup_cache_size: int = 10_000,
    ) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self.lookup_ttl = lookup_ttl
        self.lookup_cache_size = lookup_cache_size
        self._principals: dict[str, _CachedPrincipal] = {}
        self._lookups: OrderedDict[str, tuple[float, list[Candidate]]] = OrderedDict()

    async def principal_for_endpoint(self, endpoint: str) -> Principal | None:
        cached = self._principals.get(endpoint)
        now = time.monotonic()
        if cached is not None and now - cached.loaded_at < self.ttl:
            return cached.principal
        principal = await with_db_retry(lambda: self._load_principal(endpoint), what="agent lookup", attempts=2)
        self._principals[endpoint] = _CachedPrincipal(principal, now)
        return principal

    async def _load_principal(self, endpoint: str) -> Principal | None:
        async with read_session(self.sessions) as session:
            user = (
                await session.execute(select(User).where(User.agent_endpoint == endpoint, User.active.is_(True)))
            ).scalar_one_or_none()
            return None if user is None else await principal_for(session, user)

    def forget(self, endpoint: str | None = None) -> None:
        if endpoint is None:
            self._principals.clear()
        else:
            self._principals.pop(endpoint, None)

    async def user_ids(self, endpoints: Iterable[str]) -> dict[str, int]:
        """Endpoint → user id for the endpoints that belong to a user, from the principal cache."""
        ids = {}
        for endpoint in set(endpoints):
            principal = await self.principal_for_endpoint(endpoint)
            if principal is not None:
                ids[endpoint] = principal.user_id
        return ids

    async def lookup(self, number: str | None) -> list[Candidate]:
        e164 = normalise(number)
        if e164 is None:
            return []
        now = time.monotonic()
        cached = self._lookups.get(e164)
        if cached is not None and now - cached[0] < self.lookup_ttl:
            return cached[1]

        async def read() -> list[Candidate]:
            async with read_session(self.sessions) as session:
                return await lookup_by_phone(session, e164)

        candidates = await with_db_retry(read, what="caller lookup", attempts=2)
        self._lookups[e164] = (now, candidates)
        self._lookups.move_to_end(e164)
        while len(self._lookups) > self.lookup_cache_size:
            self._lookups.popitem(last=False)
        return candidates

    def forget_number(self, number: str | None) -> None:
        """After a number was linked to a member: its next lookup must see the link."""
        e164 = normalise(number)
        if e164 is not None:
            self._lookups.pop(e164, None)

    async def pop_view(
        self, principal: Principal, number: str | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Ranked candidates for the number (as `principal` may see them) and, when one member stands
        out, that member's 360. One retry covers a connection that died with a database restart."""
        return await with_db_retry(lambda: self._pop_view(principal, number), what="screen pop", attempts=2)

    async def _pop_view(
        self, principal: Principal, number: str | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        candidates = await self.lookup(number)
        views = [candidate_view(principal, c) for c in candidates]
        member_id = best_member(candidates) if len(candidates) != 1 else candidates[0].member_id
        if member_id is None:
            return views, None
        async with read_session(self.sessions) as session:
            try:
                return views, await member_360(session, principal, member_id)
            except MemberNotFound:
                return views, None  # outside the agent's data scope: the pick-list still shows it


def candidate_view(principal: Principal, candidate: Candidate) -> dict[str, Any]:
    shown = apply_field_policy(principal, "member", {"name": candidate.name, "status": candidate.status})
    return {
        "member_id": candidate.member_id,
        "member_no": candidate.member_no,
        "name": shown.get("name"),
        "status": shown.get("status"),
        "match": candidate.match.name.lower(),
        "contact_name": candidate.contact_name,
    }
