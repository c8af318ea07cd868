"""The telephony side's narrow window onto the CRM: who an endpoint is, who a caller is.

Everything cti needs from crm_core goes through here, so the boundary stays one file wide.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_core.db import dialect_of, read_session
from crm_core.member360 import Member360Record, read_member_360, read_member_360_in_lanes, view_member_360
from crm_core.members.lookup import Candidate, MatchKind, lookup_by_phone
from crm_core.phones import normalise
from crm_core.security.models import User
from crm_core.security.policy import Principal, apply_field_policy
from crm_core.security.service import principal_for
from cti.retry import with_db_retry

__all__ = ["CallerRecord", "Candidate", "CrmGateway", "MatchKind", "best_member", "caller_view"]

log = logging.getLogger(__name__)


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


class _LookupCancelled(Exception):
    """The task running a shared lookup was cancelled: the others waiting for it run their own."""


@dataclass
class _CachedPrincipal:
    principal: Principal | None
    loaded_at: float


@dataclass(frozen=True, slots=True)
class CallerRecord:
    """A caller as the CRM knows them, read before anyone is shown it: the ranked candidates and, when
    one member stands out, that member's unmasked 360. Shown to an agent only through `caller_view`,
    which applies that agent's data scope and field policy."""

    candidates: tuple[Candidate, ...]
    member: Member360Record | None
    read_at: float  # time.monotonic() when it was read


class CrmGateway:
    """Caller lookup, member 360 and endpoint → user resolution, with a short principal cache.

    Principals are cached for `ttl` seconds: a screen pop must not pay for loading roles and field
    overrides on every ring, and a permission change reaches pops within that time. A principal is
    reloaded in the background once it is half that old (`refresh_principals`, called on the
    engine's tick, and on use), so the ringing path only waits for a load the first time it sees an
    endpoint (`warm_principals` loads every agent at start) or when the database was unreachable for
    longer than `ttl` (then it waits, as a permission older than `ttl` must not be used). Caller lookups are
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
        self._refreshing: asyncio.Task[None] | None = None
        self._lookups: OrderedDict[str, tuple[float, list[Candidate]]] = OrderedDict()
        self._pending_lookups: dict[str, asyncio.Future[list[Candidate]]] = {}
        self._postgres = dialect_of(sessions) == "postgresql"

    def cached_principal(self, endpoint: str) -> tuple[bool, Principal | None]:
        """(True, the principal or None for an endpoint with no user) when the cache holds a fresh
        one, (False, None) when it must be loaded: the ringing path's way to pop without waiting."""
        cached = self._principals.get(endpoint)
        now = time.monotonic()
        if cached is None or now - cached.loaded_at >= self.ttl:
            return False, None
        if now - cached.loaded_at >= self.ttl / 2:
            self.refresh_principals()
        return True, cached.principal

    async def principal_for_endpoint(self, endpoint: str) -> Principal | None:
        known, principal = self.cached_principal(endpoint)
        if known:
            return principal
        now = time.monotonic()
        principal = await with_db_retry(lambda: self._load_principal(endpoint), what="agent lookup", attempts=2)
        self._principals[endpoint] = _CachedPrincipal(principal, now)
        return principal

    async def warm_principals(self) -> int:
        """Load the principal of every active user with a phone endpoint, so no first ring waits for
        one; returns how many were loaded."""

        async def endpoints() -> list[str]:
            async with read_session(self.sessions) as session:
                rows = await session.execute(
                    select(User.agent_endpoint).where(User.agent_endpoint.is_not(None), User.active.is_(True))
                )
                return [endpoint for (endpoint,) in rows if endpoint is not None]

        found = await with_db_retry(endpoints, what="loading agents", attempts=2)
        await self._reload_principals(found)
        return len(found)

    def refresh_principals(self) -> None:
        """Reload, in a background task, every cached principal at least `ttl / 2` old (at most one
        such task at a time). Cheap to call often: without due principals it does nothing."""
        if self._refreshing is not None and not self._refreshing.done():
            return
        now = time.monotonic()
        due = [e for e, cached in self._principals.items() if now - cached.loaded_at >= self.ttl / 2]
        if due:
            self._refreshing = asyncio.get_running_loop().create_task(
                self._reload_principals(due, background=True), name="principal-refresh"
            )

    async def _reload_principals(self, endpoints: list[str], *, background: bool = False) -> None:
        for endpoint in endpoints:
            loaded_at = time.monotonic()
            try:
                principal = await with_db_retry(
                    functools.partial(self._load_principal, endpoint), what="agent refresh", attempts=2
                )
            except Exception:
                if not background:
                    raise
                # Keep the cached one; past `ttl` the ringing path loads it itself (and fails loudly).
                log.warning("refreshing the principal of %s failed; keeping the cached one", endpoint, exc_info=True)
                return
            self._principals[endpoint] = _CachedPrincipal(principal, loaded_at)

    async def close(self) -> None:
        """Stop a background refresh in progress (on engine stop)."""
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)

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
        # The screen pop, the call log and the callbacks ask for a new caller at the same moment:
        # they share one query instead of each missing the cache (cti_pipeline: 1.25 lookups a call).
        pending = self._pending_lookups.get(e164)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except _LookupCancelled:
                return await self.lookup(number)  # the task that asked first was cancelled: ask anew
        pending = self._pending_lookups[e164] = asyncio.get_running_loop().create_future()
        try:
            candidates = await with_db_retry(
                functools.partial(self._read_lookup, e164), what="caller lookup", attempts=2
            )
        except BaseException as exc:
            pending.set_exception(exc if isinstance(exc, Exception) else _LookupCancelled())
            pending.exception()  # retrieved: a failure nobody else waited for is not logged twice
            raise
        finally:
            del self._pending_lookups[e164]
        pending.set_result(candidates)
        self._lookups[e164] = (now, candidates)
        self._lookups.move_to_end(e164)
        while len(self._lookups) > self.lookup_cache_size:
            self._lookups.popitem(last=False)
        return candidates

    async def _read_lookup(self, e164: str) -> list[Candidate]:
        async with read_session(self.sessions) as session:
            return await lookup_by_phone(session, e164)

    def forget_number(self, number: str | None) -> None:
        """After a number was linked to a member: its next lookup must see the link."""
        e164 = normalise(number)
        if e164 is not None:
            self._lookups.pop(e164, None)

    async def read_caller(self, number: str | None) -> CallerRecord:
        """Everything a screen pop can show about the caller, for whoever will be shown it: the ranked
        candidates and the unmasked 360 of the member who stands out. Read once per call while it
        queues (ScreenPopper), then shown to each ringing agent with `caller_view`."""
        return await with_db_retry(lambda: self._read_caller(number), what="caller read", attempts=2)

    async def _read_caller(self, number: str | None) -> CallerRecord:
        candidates = await self.lookup(number)
        member_id = best_member(candidates) if len(candidates) != 1 else candidates[0].member_id
        record = None
        if member_id is not None and self._postgres:
            record = await read_member_360_in_lanes(self.sessions, member_id)
        elif member_id is not None:  # SQLite: side by side gains nothing on one file
            async with read_session(self.sessions) as session:
                record = await read_member_360(session, member_id)
        return CallerRecord(tuple(candidates), record, time.monotonic())

    async def pop_view(
        self, principal: Principal, number: str | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Ranked candidates for the number (as `principal` may see them) and, when one member stands
        out, that member's 360. One retry covers a connection that died with a database restart."""
        return caller_view(principal, await self.read_caller(number))


def caller_view(principal: Principal, caller: CallerRecord) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The pop of `caller` as `principal` may see it: candidates through the field policy, the 360
    only if the member is inside the principal's data scope (the pick-list still shows it otherwise),
    exactly as `member_360` would show it. Pure: no I/O, so every ringing agent costs no query."""
    views = [candidate_view(principal, c) for c in caller.candidates]
    member = None if caller.member is None else view_member_360(principal, caller.member)
    return views, member


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
