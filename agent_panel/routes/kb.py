"""Knowledge base in the panel: browse and search pages, the workspace's in-call search (htmx
partials), and the JSON API for authors and reviewers (crm_core.kb.service decides who may do what)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from pydantic import Field
from sqlalchemy import select

from agent_panel.auth import ALL_ROLES, allow, session_of
from agent_panel.keys import SESSIONS
from agent_panel.payloads import Strict, parse_body
from agent_panel.problems import refused
from agent_panel.render import render
from crm_core.db import read_session, transaction
from crm_core.kb import segment
from crm_core.kb import service as kb
from crm_core.security.models import User

ARTICLE = "/api/v1/kb/articles/{article_id:\\d+}"


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/kb/search", search_api)
    r.add_get("/api/v1/kb/categories", categories_api)
    r.add_post("/api/v1/kb/categories", category_create_api)
    r.add_post("/api/v1/kb/articles", article_create_api)
    r.add_get(ARTICLE, article_api)
    r.add_put(ARTICLE, article_edit_api)
    r.add_post(ARTICLE + "/{action:submit|approve|reject|archive}", article_action_api)
    r.add_get("/api/v1/kb/review", review_api)
    r.add_get("/kb", kb_page)
    r.add_get("/kb/{article_id:\\d+}", article_page)
    r.add_get("/partials/kb-search", search_partial)
    r.add_get("/partials/kb/{article_id:\\d+}", article_partial)
    app.cleanup_ctx.append(_load_dictionary)


async def _load_dictionary(app: web.Application) -> AsyncIterator[None]:
    await segment.ready()  # jieba's dictionary, once, in a thread: the first search must not wait for it
    yield


class CategoryIn(Strict):
    name: str = Field(min_length=1, max_length=50)
    parent_id: int | None = None


class ArticleIn(Strict):
    category_id: int
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=100_000)
    team_id: int | None = None


class EditIn(Strict):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=100_000)


class NoteIn(Strict):
    note: str | None = Field(default=None, max_length=500)


def _refusal(exc: kb.KbError) -> web.Response:
    return refused(exc.status, str(exc))


def _category(request: web.Request) -> int | None:
    value = request.query.get("category", "")
    return int(value) if value.isdigit() else None


@allow(*ALL_ROLES)
async def search_api(request: web.Request) -> web.Response:
    try:
        async with read_session(request.app[SESSIONS]) as session:
            hits = await kb.search_articles(
                session, session_of(request).principal, request.query.get("q", ""), category_id=_category(request)
            )
    except kb.KbError as exc:
        return _refusal(exc)
    return web.json_response({"results": hits})


@allow(*ALL_ROLES)
async def categories_api(request: web.Request) -> web.Response:
    async with read_session(request.app[SESSIONS]) as session:
        return web.json_response({"categories": await kb.categories(session)})


@allow(*ALL_ROLES)
async def category_create_api(request: web.Request) -> web.Response:
    data = await parse_body(request, CategoryIn)
    if isinstance(data, web.Response):
        return data
    try:
        async with transaction(request.app[SESSIONS]) as session:
            category = await kb.add_category(session, session_of(request).principal, data.name, data.parent_id)
            body = {"id": category.id, "name": category.name, "parent_id": category.parent_id}
    except kb.KbError as exc:
        return _refusal(exc)
    return web.json_response(body, status=201)


@allow(*ALL_ROLES)
async def article_create_api(request: web.Request) -> web.Response:
    data = await parse_body(request, ArticleIn)
    if isinstance(data, web.Response):
        return data
    try:
        async with transaction(request.app[SESSIONS]) as session:
            article = await kb.create_article(
                session,
                session_of(request).principal,
                category_id=data.category_id,
                title=data.title,
                body=data.body,
                team_id=data.team_id,
            )
            body = await kb.read(session, session_of(request).principal, article.id, count_view=False)
    except kb.KbError as exc:
        return _refusal(exc)
    return web.json_response(body, status=201)


@allow(*ALL_ROLES)
async def article_api(request: web.Request) -> web.Response:
    try:
        async with transaction(request.app[SESSIONS]) as session:
            body = await kb.read(session, session_of(request).principal, int(request.match_info["article_id"]))
    except kb.KbError as exc:
        return _refusal(exc)
    return web.json_response(body)


@allow(*ALL_ROLES)
async def article_edit_api(request: web.Request) -> web.Response:
    data = await parse_body(request, EditIn)
    if isinstance(data, web.Response):
        return data
    article_id = int(request.match_info["article_id"])
    try:
        async with transaction(request.app[SESSIONS]) as session:
            version = await kb.edit(
                session, session_of(request).principal, article_id, title=data.title, body=data.body
            )
            body = {"article_id": article_id, "version": version.number, "state": version.state}
    except kb.KbError as exc:
        return _refusal(exc)
    return web.json_response(body)


@allow(*ALL_ROLES)
async def article_action_api(request: web.Request) -> web.Response:
    data = await parse_body(request, NoteIn)
    if isinstance(data, web.Response):
        return data
    principal = session_of(request).principal
    article_id = int(request.match_info["article_id"])
    action = request.match_info["action"]
    try:
        async with transaction(request.app[SESSIONS]) as session:
            if action == "submit":
                await kb.submit(session, principal, article_id)
            elif action == "archive":
                await kb.archive(session, principal, article_id)
            else:
                await kb.review(session, principal, article_id, approve=action == "approve", note=data.note)
            body = await kb.read(session, principal, article_id, count_view=False)
    except kb.KbError as exc:
        return _refusal(exc)
    return web.json_response(body)


@allow(*ALL_ROLES)
async def review_api(request: web.Request) -> web.Response:
    try:
        async with read_session(request.app[SESSIONS]) as session:
            rows = await kb.review_queue(session, session_of(request).principal)
    except kb.KbError as exc:
        return _refusal(exc)
    return web.json_response({"versions": rows})


# ------------------------------------------------------------------------------------------------ pages
@allow(*ALL_ROLES)
async def kb_page(request: web.Request) -> web.Response:
    principal = session_of(request).principal
    query = request.query.get("q", "")
    error = None
    async with read_session(request.app[SESSIONS]) as session:
        tree = await kb.categories(session)
        try:
            results = (
                await kb.search_articles(session, principal, query, category_id=_category(request)) if query else []
            )
        except kb.KbError as exc:
            results, error = [], str(exc)
        queue = await kb.review_queue(session, principal) if principal.role in kb.REVIEWERS else []
    return render(
        request,
        "kb.html",
        {
            "tree": tree,
            "q": query,
            "results": results,
            "error": error,
            "queue": queue,
            "author": principal.role in kb.AUTHORS,
        },
    )


async def _article_context(request: web.Request) -> dict[str, object]:
    principal = session_of(request).principal
    try:
        async with transaction(request.app[SESSIONS]) as session:
            article = await kb.read(session, principal, int(request.match_info["article_id"]))
            names = dict((await session.execute(select(User.id, User.display_name))).all())
    except kb.KbError:
        raise web.HTTPNotFound() from None
    return {
        "a": article,
        "names": names,
        "author": principal.role in kb.AUTHORS,
        "reviewer": principal.role in kb.REVIEWERS,
    }


@allow(*ALL_ROLES)
async def article_page(request: web.Request) -> web.Response:
    return render(request, "kb_article.html", await _article_context(request))


@allow(*ALL_ROLES)
async def article_partial(request: web.Request) -> web.Response:
    return render(request, "partials/kb_article.html", await _article_context(request))


@allow(*ALL_ROLES)
async def search_partial(request: web.Request) -> web.Response:
    """The workspace's search box while on a call: titles and highlighted snippets, newest first."""
    try:
        async with read_session(request.app[SESSIONS]) as session:
            results = await kb.search_articles(
                session, session_of(request).principal, request.query.get("q", ""), limit=8
            )
    except kb.KbError as exc:
        return render(request, "partials/kb_results.html", {"results": [], "error": str(exc)})
    return render(request, "partials/kb_results.html", {"results": results, "error": None})
