"""HTML pages and htmx fragments: sign-in, the agent workspace, member search and 360, callbacks."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent_panel.auth import (
    ALL_ROLES,
    COOKIE,
    LOGIN_CSRF_COOKIE,
    STAFF,
    allow,
    new_login_csrf,
    public,
    safe_next,
    session_of,
    set_session_cookie,
    sign_in,
    sign_out,
)
from agent_panel.i18n import LANG_COOKIE, Catalogues
from agent_panel.keys import HUB, I18N, SESSIONS, SETTINGS
from agent_panel.render import language_of, render
from crm_core.callbacks.service import list_callbacks
from crm_core.comms.service import records_for_member
from crm_core.db import read_session
from crm_core.member360 import member_360
from crm_core.members.errors import MemberNotFound
from crm_core.members.service import search_members
from crm_core.settings import Settings
from cti.screenpop import ScreenPop

CATEGORIES = ("enquiry", "complaint", "suggestion", "return_visit", "other")
URGENCIES = ("normal", "important", "urgent")
STATUSES = ("pending", "in_progress", "done")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/login", login_page)
    r.add_post("/login", login_submit)
    r.add_post("/logout", logout)
    r.add_get("/", workspace)
    r.add_get("/members", members_page)
    r.add_get("/members/{member_id:\\d+}", member_page)
    r.add_get("/callbacks", callbacks_page)
    r.add_get("/partials/member/{member_id:\\d+}", member_fragment)
    r.add_get("/partials/member-search", member_search_fragment)
    r.add_get("/partials/callbacks", callbacks_fragment)
    r.add_get("/partials/comms/{member_id:\\d+}", comms_fragment)
    r.add_get("/ws", websocket)


# ---------------------------------------------------------------------------- sign-in
@public
async def login_page(request: web.Request) -> web.Response:
    return _login_form(request, error=None, status=200)


def _login_form(request: web.Request, *, error: str | None, status: int) -> web.Response:
    token = new_login_csrf()
    response = render(
        request,
        "login.html",
        {"error": error, "login_csrf": token, "next": safe_next(request.query.get("next"))},
        status=status,
    )
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/login")
    return response


@public
async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    sent, expected = str(form.get("csrf_token", "")), request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not sent or sent != expected:
        return _login_form(request, error="csrf", status=403)
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))
    signed = await sign_in(request, username, password) if username and password else None
    if signed is None:
        return _login_form(request, error="invalid", status=401)
    token, _ = signed
    response = web.HTTPSeeOther(safe_next(str(form.get("next", "/"))))
    set_session_cookie(response, request, token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


@allow(*ALL_ROLES)
async def logout(request: web.Request) -> web.Response:
    token = request.cookies.get(COOKIE)
    await sign_out(request)
    if token:
        await request.app[HUB].close_token(token)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


# ---------------------------------------------------------------------------- workspace
@allow(*STAFF)
async def workspace(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    info = session_of(request)
    policies = {
        q: {"wrapup_seconds": p.wrapup_seconds, "wrapup_required": p.wrapup_required}
        for q, p in settings.queues.items()
    }
    return render(
        request,
        "workspace.html",
        {
            "endpoint": info.agent_endpoint,
            "pause_reasons": [r for r in settings.pause_reasons if r != "wrap-up"],
            "dispositions": settings.dispositions,
            "categories": CATEGORIES,
            "urgencies": URGENCIES,
            "statuses": STATUSES,
            "queues": list(settings.queues),
            "queue_names": {q: request.app[I18N].gettext(language_of(request), q) for q in settings.queues},
            "policies": policies,
        },
    )


# ---------------------------------------------------------------------------- members
async def _search(request: web.Request, limit: int) -> tuple[str, list[dict[str, Any]]]:
    """The `q` parameter and the members it finds for the signed-in user (none for an empty query)."""
    query = request.query.get("q", "").strip()[:100]
    if not query:
        return query, []
    async with read_session(request.app[SESSIONS]) as session:
        return query, await search_members(session, session_of(request).principal, query, limit=limit)


@allow(*ALL_ROLES)
async def members_page(request: web.Request) -> web.Response:
    query, results = await _search(request, limit=20)
    return render(request, "members.html", {"q": query, "results": results})


async def _member_view(request: web.Request, member_id: int) -> dict[str, Any]:
    async with read_session(request.app[SESSIONS]) as session:
        try:
            return await member_360(session, session_of(request).principal, member_id)
        except MemberNotFound as exc:
            raise web.HTTPNotFound(text="member not found") from exc


@allow(*ALL_ROLES)
async def member_page(request: web.Request) -> web.Response:
    member_id = int(request.match_info["member_id"])
    member = await _member_view(request, member_id)
    return render(
        request,
        "member.html",
        {"member": member, "categories": CATEGORIES, "urgencies": URGENCIES, "statuses": STATUSES},
    )


@allow(*ALL_ROLES)
async def member_fragment(request: web.Request) -> web.Response:
    member = await _member_view(request, int(request.match_info["member_id"]))
    return render(request, "partials/member_card.html", {"member": member, "link_number": request.query.get("link")})


@allow(*ALL_ROLES)
async def member_search_fragment(request: web.Request) -> web.Response:
    _, results = await _search(request, limit=10)
    return render(
        request, "partials/member_results.html", {"results": results, "link_number": request.query.get("link")}
    )


@allow(*ALL_ROLES)
async def comms_fragment(request: web.Request) -> web.Response:
    member_id = int(request.match_info["member_id"])
    async with read_session(request.app[SESSIONS]) as session:
        try:
            records = await records_for_member(session, session_of(request).principal, member_id)
        except MemberNotFound as exc:
            raise web.HTTPNotFound(text="member not found") from exc
    return render(request, "partials/comms_list.html", {"records": records})


# ---------------------------------------------------------------------------- callbacks
async def _callbacks(request: web.Request, mine: bool) -> list[dict[str, Any]]:
    async with read_session(request.app[SESSIONS]) as session:
        return await list_callbacks(session, session_of(request).principal, mine=mine)


@allow(*STAFF)
async def callbacks_page(request: web.Request) -> web.Response:
    return render(
        request,
        "callbacks.html",
        {"mine": await _callbacks(request, True), "team": await _callbacks(request, False)},
    )


@allow(*STAFF)
async def callbacks_fragment(request: web.Request) -> web.Response:
    mine = request.query.get("mine") == "1"
    return render(request, "partials/callbacks_list.html", {"callbacks": await _callbacks(request, mine), "mine": mine})


# ---------------------------------------------------------------------------- WebSocket
@allow(*STAFF)
async def websocket(request: web.Request) -> web.WebSocketResponse:
    token = request.cookies.get(COOKIE, "")
    ws: web.WebSocketResponse = await request.app[HUB].handle(request, session_of(request), token, language_of(request))
    return ws


# ---------------------------------------------------------------------------- screen pop
def render_pop(catalogues: Catalogues, settings: Settings, pop: ScreenPop, language: str) -> str:
    """The pop card as HTML, rendered once per language in the hub (the member view inside is already
    filtered for the agent's own permissions by the screen popper)."""
    return (
        catalogues.env(language)
        .get_template("partials/pop.html")
        .render(pop=pop, member=pop.member, candidates=pop.candidates, settings=settings, LANG_COOKIE=LANG_COOKIE)
    )
