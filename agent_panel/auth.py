"""Sign-in, sessions, role checks and CSRF: one middleware guards every route by default.

A handler is reachable only if it says who may call it (`@allow(Role.AGENT, …)`) or that it is
public (`@public`, the login page only); a route that forgets is refused, not opened. State-changing
requests must carry the session's CSRF token (header `X-CSRF-Token` or form field `csrf_token`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from agent_panel.keys import AUTH, SESSIONS, SETTINGS
from crm_core.calllog.access import supervised_queues
from crm_core.db import transaction
from crm_core.security.policy import Role
from crm_core.security.service import AuthenticationFailed, authenticate
from crm_core.security.web_sessions import SessionInfo, close_session, open_session, resolve_session

log = logging.getLogger(__name__)

COOKIE = "cti_session"
LOGIN_CSRF_COOKIE = "cti_login_csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_KEY = web.RequestKey("cti_session_info", SessionInfo)
TOKEN_KEY = web.RequestKey("cti_session_token", str)
ALL_ROLES = tuple(Role)
STAFF = (Role.AGENT, Role.SUPERVISOR, Role.ADMIN)
SUPERVISORS = (Role.SUPERVISOR, Role.ADMIN)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)


def allow(*roles: Role) -> Callable[[H], H]:
    """Declare the roles that may call a handler."""

    def mark(handler: H) -> H:
        handler.__cti_roles__ = frozenset(roles)  # type: ignore[attr-defined]
        return handler

    return mark


def public(handler: H) -> H:
    handler.__cti_public__ = True  # type: ignore[attr-defined]
    return handler


class SessionCache:
    """Resolved sessions for a few seconds, so a page with many requests costs one database read.
    Logout drops the entry at once; a deactivated user is out within `ttl` seconds."""

    def __init__(self, ttl: float = 5.0, max_size: int = 10_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._cache: dict[str, tuple[float, SessionInfo | None]] = {}

    async def resolve(self, app: web.Application, token: str) -> SessionInfo | None:
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and now - hit[0] < self.ttl:
            info = hit[1]
        else:
            async with app[SESSIONS]() as session:
                info = await resolve_session(session, token)
                if info is not None and info.principal.role == Role.SUPERVISOR:
                    info = await _with_supervised_queues(session, app, info)
            if len(self._cache) >= self.max_size:
                self._cache.clear()
            self._cache[token] = (now, info)
        if info is not None and info.expires_at <= dt.datetime.now(dt.UTC):
            return None
        return info

    def forget(self, token: str) -> None:
        self._cache.pop(token, None)


async def _with_supervised_queues(session: AsyncSession, app: web.Application, info: SessionInfo) -> SessionInfo:
    teams = {name: policy.team for name, policy in app[SETTINGS].queues.items()}
    queues = await supervised_queues(session, info.principal, teams)
    return dataclasses.replace(info, principal=dataclasses.replace(info.principal, supervised_queues=queues))


def session_of(request: web.Request) -> SessionInfo:
    info: SessionInfo = request[SESSION_KEY]
    return info


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith(("/api/", "/ws", "/partials/")) or "application/json" in request.headers.get(
        "Accept", ""
    )


def _refuse(request: web.Request, status: int, message: str) -> web.StreamResponse:
    if status == 401 and not _wants_json(request) and request.method in SAFE_METHODS:
        raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs)}")
    return web.json_response({"error": message}, status=status)


def _handler_of(request: web.Request) -> Any:
    handler = request.match_info.handler
    return getattr(handler, "__wrapped__", handler)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/static/"):
        return await handler(request)
    if request.match_info.http_exception is not None:
        raise request.match_info.http_exception
    target = _handler_of(request)
    if getattr(target, "__cti_public__", False):
        return await handler(request)
    token = request.cookies.get(COOKIE)
    info = await request.app[AUTH].resolve(request.app, token) if token else None
    if info is None:
        return _refuse(request, 401, "sign in first")
    roles: frozenset[Role] | None = getattr(target, "__cti_roles__", None)
    if roles is None:
        log.error("route %s has no role declaration: refused", request.path)
        return _refuse(request, 403, "forbidden")
    if info.principal.role not in roles:
        return _refuse(request, 403, "your role may not use this")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get("X-CSRF-Token")
        if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            sent = str((await request.post()).get("csrf_token", ""))
        if not sent or not hmac.compare_digest(sent, info.csrf_token):
            return _refuse(request, 403, "missing or wrong CSRF token")
    request[SESSION_KEY] = info
    request[TOKEN_KEY] = token or ""
    return await handler(request)


def safe_next(target: str | None) -> str:
    """Only local paths: a crafted ?next= must not send a signed-in user to another site."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


async def sign_in(request: web.Request, username: str, password: str) -> tuple[str, SessionInfo] | None:
    """Check the password (with lockout) and open a session; None when refused, for any reason."""
    settings = request.app[SETTINGS]
    sessions = request.app[SESSIONS]
    async with transaction(sessions) as session:
        try:
            principal = await authenticate(session, username, password)
        except AuthenticationFailed:
            failed = True
        else:
            failed = False
            token, _ = await open_session(
                session,
                principal.user_id,
                lifetime=dt.timedelta(hours=settings.session_hours),
                remote=request.remote,
                user_agent=request.headers.get("User-Agent"),
            )
    # The failure counter (lockout) is committed above even though the sign-in failed.
    if failed:
        log.info("sign-in refused for %r from %s", username[:64], request.remote)
        return None
    info = await request.app[AUTH].resolve(request.app, token)
    assert info is not None
    return token, info


def set_session_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    settings = request.app[SETTINGS]
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=settings.cookie_secure,
        max_age=int(settings.session_hours * 3600),
        path="/",
    )


async def sign_out(request: web.Request) -> None:
    token = request.get(TOKEN_KEY)
    if token:
        async with transaction(request.app[SESSIONS]) as session:
            await close_session(session, token)
        request.app[AUTH].forget(token)


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)
