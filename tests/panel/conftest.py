"""The panel on a real database (both engines) behind aiohttp's test server; AMI is not started here
(the browser tests in tests/browser run the whole thing against the real Asterisk sandbox)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agent_panel.app import create_app
from crm_core.security.policy import Principal, Role
from crm_core.settings import Settings
from cti.engine import CtiEngine
from tests.db import factories

USERS = {
    "agent1": (Role.AGENT, "310", "webrtc2001"),
    "agent2": (Role.AGENT, "320", "webrtc2002"),
    "sup1": (Role.SUPERVISOR, "310", None),
    "staff1": (Role.CRM_STAFF, "300", None),
    "admin1": (Role.ADMIN, None, None),
}
CSRF = re.compile(r'data-csrf="([^"]+)"')
LOGIN_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Panel:
    app: web.Application
    engine: CtiEngine
    server: TestServer
    principals: dict[str, Principal]

    def client(self) -> aiohttp.ClientSession:
        """A browser of its own (cookie jar included); several may be open at once."""
        return aiohttp.ClientSession(base_url=str(self.server.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login(client: aiohttp.ClientSession, username: str, password: str = factories.PASSWORD) -> str:
    """Sign in like a browser (login form with its CSRF cookie); returns the session's CSRF token."""
    page = await client.get("/login")
    token = LOGIN_CSRF.search(await page.text())
    assert token is not None
    response = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token.group(1), "next": "/members"},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    members = await client.get("/members")
    found = CSRF.search(await members.text())
    assert found is not None
    return found.group(1)


@pytest.fixture
async def panel(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> AsyncIterator[Panel]:
    await factories.org_tree(sessions)
    principals = {}
    for username, (role, unit, endpoint) in USERS.items():
        principals[username] = await factories.principal(sessions, username, role, unit, endpoint)
    settings = settings.model_copy(update={"sip_secrets": {"webrtc2001": "s3cret-2001"}})
    engine = CtiEngine(settings, sessions)
    app = create_app(settings, sessions, engine, start_engine=False)
    server = TestServer(app)
    await server.start_server()
    try:
        yield Panel(app, engine, server, principals)
    finally:
        await server.close()
