"""Every route and the WebSocket: refused without a session, refused for the wrong role, refused
without the CSRF token; sign-in with lockout, sign-out that ends the session everywhere."""

from __future__ import annotations

import re

import aiohttp
import pytest
from aiohttp import WSServerHandshakeError

from agent_panel.auth import COOKIE
from agent_panel.keys import SETTINGS
from tests.panel.conftest import Panel, login

# Routes every signed-in role may use vs. routes for those who take calls (agents, supervisors, admins).
STAFF_ONLY = re.compile(
    r"^/($|callbacks|partials/callbacks|calls|partials/calls|recordings/|ws|"
    r"api/v1/(softphone|agent|dial|wrapup|callbacks|queues|calls|recording))"
)
SUPERVISOR_ONLY = re.compile(
    r"^/(api/v1/(broadcast|supervise|agents/|qa/|recordings/\d+/(hold|release)|reports/|wallboard)"
    r"|reports$|partials/reports$|wallboard$)"
)
# Routes whose roles differ by method: scoring a call (supervisors), editing QA criteria (admins).
SUPERVISOR_WRITES = {("PUT", "/api/v1/calls/1/qa"), ("POST", "/calls/1/qa")}
ADMIN_WRITES = {("POST", "/api/v1/qa/criteria"), ("PATCH", "/api/v1/qa/criteria/1")}
# The business calendar and the SLA policies' changes: administrators only (everyone reads the policies).
CALENDAR_ADMIN = re.compile(r"^/(api/v1/calendar|service/admin$)")
SLA_WRITES = {("POST", "/api/v1/sla/policies")}
METHOD_DENIED = {
    "agent1": SUPERVISOR_WRITES | ADMIN_WRITES | SLA_WRITES,
    "sup1": ADMIN_WRITES | SLA_WRITES,
    "staff1": SLA_WRITES,
}
ADMIN_ONLY = re.compile(r"^/(healthz|metrics)$")  # or the monitoring bearer token
# The redemption approval queue and merchant vouchers: CRM staff and admins (maker-checker), not the
# call centre.
APPROVERS_ONLY = re.compile(
    r"^/(api/v1/(redemptions$|vouchers/|loyalty/|members/\d+/points/(adjustments|referrals))|loyalty/)"
)
PUBLIC = {"/login"}


def concrete(info: dict[str, object]) -> str | None:
    """A path the route's own pattern accepts: a number for ids, the first choice of an alternation."""
    if "path" in info:
        return str(info["path"])
    pattern = info.get("pattern")
    if not isinstance(pattern, re.Pattern):
        return None

    def sample(match: re.Match[str]) -> str:
        body = match.group(2)
        return body.split("|")[0] if "|" in body else "1"

    return re.sub(r"\(\?P<(\w+)>([^)]*)\)", sample, pattern.pattern).replace("\\", "")


def routes(panel: Panel) -> list[tuple[str, str]]:
    out = []
    for route in panel.app.router.routes():
        path = concrete(route.resource.get_info()) if route.resource else None
        if not path or path.startswith("/static") or route.method == "HEAD":
            continue
        out.append((route.method, path))
    return sorted(set(out))


def test_every_route_is_declared(panel: Panel) -> None:
    found = routes(panel)
    assert ("GET", "/ws") in found and ("POST", "/api/v1/dial") in found
    assert len(found) >= 25


async def test_every_route_refused_without_a_session(panel: Panel) -> None:
    async with panel.client() as client:
        for method, path in routes(panel):
            if path in PUBLIC:
                continue
            response = await client.request(method, path, allow_redirects=False)
            if ADMIN_ONLY.match(path):
                assert response.status == 403, (method, path)
            elif method == "GET" and not path.startswith(("/api/", "/partials/", "/ws")):
                assert response.status == 303, (method, path)
                assert response.headers["Location"].startswith("/login?next=")
            else:
                assert response.status == 401, (method, path, response.status)
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect("/ws")
        assert refused.value.status == 401


async def test_roles_are_enforced_on_every_route(panel: Panel) -> None:
    admin = f"{ADMIN_ONLY.pattern}|{CALENDAR_ADMIN.pattern}"
    staff_denied = re.compile(f"{STAFF_ONLY.pattern}|{SUPERVISOR_ONLY.pattern}|{admin}")
    agent_denied = re.compile(f"{SUPERVISOR_ONLY.pattern}|{admin}|{APPROVERS_ONLY.pattern}")
    sup_denied = re.compile(f"{admin}|{APPROVERS_ONLY.pattern}")
    for username, denied in (("staff1", staff_denied), ("agent1", agent_denied), ("sup1", sup_denied)):
        async with panel.client() as client:
            csrf = await login(client, username)
            for method, path in routes(panel):
                if path in PUBLIC or path == "/logout":
                    continue
                response = await client.request(
                    method, path, headers={"X-CSRF-Token": csrf}, json={}, allow_redirects=False
                )
                if denied.match(path) or (method, path) in METHOD_DENIED.get(username, set()):
                    assert response.status == 403, (username, method, path, response.status)
                    assert "your role may not use this" in await response.text() or ADMIN_ONLY.match(path)
                else:
                    # Not refused for the role (a business refusal such as "not in your team" may still be 403).
                    body = await response.text()
                    assert response.status != 403 or "your role may not use this" not in body, (username, path, body)
    async with panel.client() as client:
        await login(client, "staff1")
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect("/ws")
        assert refused.value.status == 403


async def test_state_changes_need_the_csrf_token(panel: Panel) -> None:
    async with panel.client() as client:
        csrf = await login(client, "sup1")
        no_token = await client.post("/api/v1/broadcast", json={"text": "hello"})
        assert no_token.status == 403
        wrong = await client.post("/api/v1/broadcast", json={"text": "hello"}, headers={"X-CSRF-Token": "x" * 43})
        assert wrong.status == 403
        ok = await client.post("/api/v1/broadcast", json={"text": "hello"}, headers={"X-CSRF-Token": csrf})
        assert ok.status == 200
        assert (await ok.json())["banner"]["text"] == "hello"
        logout = await client.post("/logout", allow_redirects=False)
        assert logout.status == 403  # sign-out is a state change too


async def test_login_refuses_a_forged_form(panel: Panel) -> None:
    async with panel.client() as client:
        response = await client.post(
            "/login", data={"username": "agent1", "password": "correct horse battery", "csrf_token": "forged"}
        )
        assert response.status == 403
        assert COOKIE not in {c.key for c in client.cookie_jar}


async def _try_login(client: aiohttp.ClientSession, username: str, password: str) -> int:
    page = await client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert token is not None
    response = await client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token.group(1)}, allow_redirects=False
    )
    return response.status


async def test_lockout_after_five_failures_and_no_hint_which(panel: Panel) -> None:
    async with panel.client() as client:
        for _ in range(5):
            assert await _try_login(client, "agent1", "wrong") == 401
        # The right password, but locked: the same answer as a wrong one or an unknown user.
        assert await _try_login(client, "agent1", "correct horse battery") == 401
        assert await _try_login(client, "nobody", "x") == 401
        assert COOKIE not in {c.key for c in client.cookie_jar}
    async with panel.client() as client:
        await login(client, "agent2")  # other accounts are not affected


async def test_logout_ends_the_session_and_its_websocket(panel: Panel) -> None:
    async with panel.client() as client:
        csrf = await login(client, "agent1")
        ws = await client.ws_connect("/ws")
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "resync"
        token = next(c.value for c in client.cookie_jar if c.key == COOKIE)
        out = await client.post("/logout", headers={"X-CSRF-Token": csrf}, allow_redirects=False)
        assert out.status == 303
        closed = await ws.receive(timeout=5)
        assert ws.closed or closed.type.name in ("CLOSE", "CLOSED", "CLOSING")
        # The old cookie no longer opens anything, even replayed by hand.
        client.cookie_jar.update_cookies({COOKIE: token})
        again = await client.get("/api/v1/me")
        assert again.status == 401


async def test_open_redirect_is_refused(panel: Panel) -> None:
    async with panel.client() as client:
        page = await client.get("/login?next=//evil.example/x")
        token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
        assert token is not None
        response = await client.post(
            "/login",
            data={
                "username": "agent1",
                "password": "correct horse battery",
                "csrf_token": token.group(1),
                "next": "https://evil.example/",
            },
            allow_redirects=False,
        )
        assert response.status == 303
        assert response.headers["Location"] == "/"


async def test_softphone_credentials_only_for_the_agents_own_seat(panel: Panel) -> None:
    async with panel.client() as client:
        await login(client, "agent1")
        response = await client.get("/api/v1/softphone")
        assert response.status == 200
        creds = await response.json()
        assert creds["authorization_user"] == "webrtc2001" and creds["password"] == "s3cret-2001"
        assert response.headers["Cache-Control"] == "no-store"
    async with panel.client() as client:
        await login(client, "agent2")  # a seat without configured credentials gets none, not another's
        response = await client.get("/api/v1/softphone")
        assert response.status == 409
        assert "s3cret" not in await response.text()


async def test_health_and_metrics_for_administrators_and_the_monitoring_token(panel: Panel) -> None:
    panel.app[SETTINGS].monitor_token = "m0nitor-" + "x" * 24
    async with panel.client() as anonymous:
        assert (await anonymous.get("/healthz", headers={"Authorization": "Bearer wrong"})).status == 403
        health = await anonymous.get(
            "/healthz", headers={"Authorization": f"Bearer {panel.app[SETTINGS].monitor_token}"}
        )
        # The panel here runs without a PBX: the database is fine, AMI is not, so the check fails.
        assert health.status == 503
        assert await health.json() == {"database": True, "ami": False}
    async with panel.client() as admin:
        await login(admin, "admin1")
        metrics = await admin.get("/metrics")
        assert metrics.status == 200
        body = await metrics.text()
        assert "cti_ami_connected 0" in body and 'cti_bus_handled_total{subscriber="ws-hub"}' in body


async def test_supervisors_act_only_on_their_own_team(panel: Panel) -> None:
    async with panel.client() as sup:
        csrf = await login(sup, "sup1")  # leads 310: agent1 (webrtc2001) yes, agent2 (webrtc2002, 320) no
        headers = {"X-CSRF-Token": csrf}
        other = await sup.post("/api/v1/agents/webrtc2002/pause", json={"reason": "meeting"}, headers=headers)
        assert other.status == 403 and "not in your team" in (await other.json())["error"]
        spy_other = await sup.post("/api/v1/supervise", json={"agent": "webrtc2002", "mode": "listen"}, headers=headers)
        assert spy_other.status == 403
        # In the team, but nobody is on a call (and sup1 has no seat here): refused with a reason, not a 500.
        own = await sup.post("/api/v1/supervise", json={"agent": "webrtc2001", "mode": "barge"}, headers=headers)
        assert own.status == 409
        bad = await sup.post("/api/v1/supervise", json={"agent": "webrtc2001", "mode": "shout"}, headers=headers)
        assert bad.status == 400
    async with panel.client() as admin:
        csrf = await login(admin, "admin1")
        anyone = await admin.post("/api/v1/agents/webrtc2002/ready", json={}, headers={"X-CSRF-Token": csrf})
        assert anyone.status == 409  # allowed for an administrator; refused only because it is not logged in
