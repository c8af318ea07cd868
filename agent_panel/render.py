"""Rendering a page or fragment in the user's language, with what every template needs."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from agent_panel.auth import SESSION_KEY
from agent_panel.i18n import LANG_COOKIE
from agent_panel.keys import I18N, SETTINGS


def language_of(request: web.Request) -> str:
    language: str = request.app[I18N].pick(request.query.get("lang") or request.cookies.get(LANG_COOKIE), None)
    return language


def render_string(request: web.Request, template: str, context: dict[str, Any]) -> str:
    language = language_of(request)
    info = request.get(SESSION_KEY)
    settings = request.app[SETTINGS]
    base = {
        "request": request,
        "me": info,
        "csrf_token": info.csrf_token if info else None,
        "role": info.principal.role.value if info else None,
        "settings": settings,
    }
    html: str = request.app[I18N].env(language).get_template(template).render(base | context)
    return html


def render(request: web.Request, template: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    response = web.Response(text=render_string(request, template, context), status=status, content_type="text/html")
    lang = request.query.get("lang")
    if lang and lang in request.app[I18N].envs:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="Lax", httponly=True)
    response.headers["Cache-Control"] = "no-store"
    return response
