"""Browser sessions for the agent panel: create on login, resolve per request, revoke on logout."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import utcnow
from crm_core.security.models import User, WebSession
from crm_core.security.policy import Principal
from crm_core.security.service import principal_for


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What a request needs about its user: the principal for the services, the rest for the page."""

    principal: Principal
    csrf_token: str
    display_name: str
    agent_endpoint: str | None
    expires_at: dt.datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(
    session: AsyncSession,
    user_id: int,
    *,
    lifetime: dt.timedelta,
    remote: str | None = None,
    user_agent: str | None = None,
) -> tuple[str, str]:
    """A new session for `user_id`; returns (cookie token, CSRF token). The token itself is not stored."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=token_hash(token),
            user_id=user_id,
            csrf_token=csrf,
            expires_at=utcnow() + lifetime,
            remote=remote,
            user_agent=(user_agent or "")[:255] or None,
        )
    )
    await session.flush()
    return token, csrf


async def resolve_session(session: AsyncSession, token: str) -> SessionInfo | None:
    """The live session of a cookie token, or None (unknown, expired, or the user was deactivated)."""
    row = (
        await session.execute(
            select(WebSession, User)
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.token_hash == token_hash(token))
        )
    ).first()
    if row is None:
        return None
    web, user = row
    if web.expires_at <= utcnow() or not user.active:
        return None
    return SessionInfo(
        principal=await principal_for(session, user),
        csrf_token=web.csrf_token,
        display_name=user.display_name,
        agent_endpoint=user.agent_endpoint,
        expires_at=web.expires_at,
    )


async def close_session(session: AsyncSession, token: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.token_hash == token_hash(token)))


async def close_user_sessions(session: AsyncSession, user_id: int) -> None:
    """Log a user out everywhere (password change, deactivation, an administrator's kick)."""
    await session.execute(delete(WebSession).where(WebSession.user_id == user_id))


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(delete(WebSession).where(WebSession.expires_at <= utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)
