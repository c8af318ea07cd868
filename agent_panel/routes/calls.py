"""Call-log review in the panel: the filtered list (page + htmx "more"), the call detail with its
timeline and QA form, exports, and the JSON API behind them.

Every read goes through `crm_core.calllog.access.call_visibility`, so an agent sees the calls they
took part in, a supervisor their teams', an admin all; a call outside that answers 404, like one
that does not exist. Bad filter input answers 400 application/problem+json with the field errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import json
import logging
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ValidationError

from agent_panel.auth import STAFF, SUPERVISORS, allow, session_of
from agent_panel.keys import SESSIONS, SETTINGS
from agent_panel.problems import problem
from agent_panel.render import render
from crm_core.calllog import qa
from crm_core.calllog.access import can_access_call
from crm_core.calllog.export import XLSX_MAX_ROWS, csv_chunks, write_xlsx
from crm_core.calllog.review import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    OUTCOMES,
    CallFilter,
    InvalidCursor,
    agent_choices,
    review_page,
)
from crm_core.calllog.timeline import CallDetail, call_detail
from crm_core.db import read_session, transaction
from crm_core.security.policy import PermissionDenied, Role
from crm_core.survey import service as surveys

log = logging.getLogger(__name__)
# Query parameters that are not filters.
_NOT_FILTERS = frozenset({"cursor", "limit", "format", "lang"})
M = TypeVar("M", bound=BaseModel)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/calls", calls_page)
    r.add_get("/partials/calls", calls_fragment)
    r.add_get("/calls/{call_id:\\d+}", call_page)
    r.add_post("/calls/{call_id:\\d+}/qa", qa_form)
    r.add_get("/api/v1/calls", api_calls)
    r.add_get("/api/v1/calls/export", api_export)
    r.add_get("/api/v1/calls/{call_id:\\d+}", api_call)
    r.add_get("/api/v1/calls/{call_id:\\d+}/qa", api_qa_get)
    r.add_put("/api/v1/calls/{call_id:\\d+}/qa", api_qa_put)
    r.add_get("/api/v1/qa/criteria", api_criteria_list)
    r.add_post("/api/v1/qa/criteria", api_criteria_create)
    r.add_patch("/api/v1/qa/criteria/{criterion_id:\\d+}", api_criteria_update)


# ---------------------------------------------------------------------------- problems and input
class Problem(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or None, "message": e["msg"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def _filter_values(request: web.Request) -> dict[str, Any]:
    return {k: request.query.get(k) for k in request.query if k not in _NOT_FILTERS}


def page_filter_values(request: web.Request) -> dict[str, Any]:
    """The page's filters; a first visit (no filter at all) shows the last 7 local days, so the
    default view never reads the whole log. Emptying both dates searches everything."""
    values = _filter_values(request)
    if values:
        return values
    today = dt.datetime.now(ZoneInfo(request.app[SETTINGS].timezone)).date()
    return {"date_from": str(today - dt.timedelta(days=6)), "date_to": str(today)}


def parse_filter(request: web.Request, values: dict[str, Any] | None = None) -> CallFilter:
    values = _filter_values(request) if values is None else values
    try:
        return CallFilter.model_validate(values)
    except ValidationError as exc:
        raise Problem(problem(400, "invalid filter", errors=_validation_errors(exc))) from exc


def parse_limit(request: web.Request) -> int:
    raw = request.query.get("limit", "")
    if not raw:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise Problem(problem(400, "invalid limit", f"limit must be 1..{MAX_LIMIT}"))
    return int(raw)


async def parse_body(request: web.Request, model: type[M]) -> M:
    try:
        payload = await request.json()
    except ValueError as exc:
        raise Problem(problem(400, "invalid request", "the body must be JSON")) from exc
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise Problem(problem(400, "invalid request", errors=_validation_errors(exc))) from exc


def problems(handler: Any) -> Any:
    """Turn a raised Problem into its response (keeps handlers linear). Goes above `@allow`: the
    auth middleware reads the roles through `__wrapped__`."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except Problem as exc:
            return exc.response
        return response

    return run


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=functools.partial(json.dumps, default=_json_default))


# ---------------------------------------------------------------------------- the list
async def _page(request: web.Request, spec: CallFilter) -> tuple[list[dict[str, Any]], str | None]:
    info = session_of(request)
    async with read_session(request.app[SESSIONS]) as session:
        try:
            page = await review_page(
                session,
                info.principal,
                spec,
                timezone=request.app[SETTINGS].timezone,
                cursor=request.query.get("cursor") or None,
                limit=parse_limit(request),
            )
        except InvalidCursor as exc:
            raise Problem(problem(400, "invalid cursor", str(exc))) from exc
    return page.rows, page.next_cursor


def _links(spec: CallFilter, next_cursor: str | None) -> dict[str, str | None]:
    query = spec.query_items()
    return {
        "more": f"/partials/calls?{urlencode(query | {'cursor': next_cursor})}" if next_cursor else None,
        "csv": f"/api/v1/calls/export?{urlencode(query | {'format': 'csv'})}",
        "xlsx": f"/api/v1/calls/export?{urlencode(query | {'format': 'xlsx'})}",
    }


@problems
@allow(*STAFF)
async def api_calls(request: web.Request) -> web.Response:
    rows, next_cursor = await _page(request, parse_filter(request))
    return json_response({"calls": rows, "next_cursor": next_cursor})


@allow(*STAFF)
async def calls_page(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    info = session_of(request)
    errors: list[dict[str, Any]] = []
    values = page_filter_values(request)
    try:
        spec = parse_filter(request, values)
        rows, next_cursor = await _page(request, spec)
    except Problem as exc:
        errors = json.loads(exc.response.text or "{}").get("errors") or [{"field": None, "message": "invalid"}]
        spec, rows, next_cursor = CallFilter(), [], None
    async with read_session(request.app[SESSIONS]) as session:
        agents = await agent_choices(session, info.principal)
    return render(
        request,
        "calls.html",
        {
            "spec": spec,
            "form": {k: values.get(k) or "" for k in CallFilter.model_fields},
            "errors": errors,
            "rows": rows,
            "links": _links(spec, next_cursor),
            "agents": agents,
            "queues": list(settings.queues),
            "dispositions": settings.dispositions,
            "outcomes": list(OUTCOMES),
            "xlsx_cap": XLSX_MAX_ROWS,
        },
        status=400 if errors else 200,
    )


@problems
@allow(*STAFF)
async def calls_fragment(request: web.Request) -> web.Response:
    """The next rows and a new "more" row, swapped in for the old "more" row by htmx."""
    spec = parse_filter(request)
    rows, next_cursor = await _page(request, spec)
    return render(request, "partials/call_rows.html", {"rows": rows, "links": _links(spec, next_cursor)})


# ---------------------------------------------------------------------------- export
@problems
@allow(*STAFF)
async def api_export(request: web.Request) -> web.StreamResponse:
    fmt = request.query.get("format", "csv")
    if fmt not in ("csv", "xlsx"):
        return problem(400, "invalid format", "format must be csv or xlsx")
    spec = parse_filter(request)
    settings = request.app[SETTINGS]
    principal = session_of(request).principal
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    log.info("call export %s by %s: %s", fmt, principal.username, spec.query_items())
    response = web.StreamResponse(
        headers={"Cache-Control": "no-store", "Content-Disposition": f'attachment; filename="calls-{stamp}.{fmt}"'}
    )
    if fmt == "csv":
        response.content_type = "text/csv"
        response.charset = "utf-8"
        await response.prepare(request)
        async for chunk in csv_chunks(request.app[SESSIONS], principal, spec, timezone=settings.timezone):
            await response.write(chunk)
        await response.write_eof()
        return response
    path, count, capped = await write_xlsx(request.app[SESSIONS], principal, spec, timezone=settings.timezone)
    try:
        response.content_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        response.headers["X-Export-Rows"] = str(count)
        response.headers["X-Export-Capped"] = "true" if capped else "false"
        response.content_length = (await asyncio.to_thread(path.stat)).st_size
        await response.prepare(request)
        await _send_file(response, path)
        await response.write_eof()
    finally:
        await asyncio.to_thread(path.unlink, True)
    return response


async def _send_file(response: web.StreamResponse, path: Path) -> None:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, 256 * 1024):
            await response.write(chunk)
    finally:
        await asyncio.to_thread(handle.close)


# ---------------------------------------------------------------------------- the detail
async def _detail(request: web.Request) -> tuple[CallDetail, list[dict[str, Any]], list[dict[str, Any]]]:
    """The call (with its survey scores), its reviews and the active criteria; 404 when not visible."""
    call_id = int(request.match_info["call_id"])
    async with transaction(request.app[SESSIONS]) as session:  # may seed the default criteria
        detail = await call_detail(session, session_of(request).principal, call_id)
        if detail is None:
            raise Problem(problem(404, "call not found"))
        reviews = await qa.reviews_for_call(session, call_id)
        criteria = await qa.list_criteria(session)
        detail.call["survey"] = await surveys.scores_of_call(
            session, request.app[SETTINGS].pbx_name, str(detail.call["linkedid"])
        )
    return detail, reviews, criteria


@problems
@allow(*STAFF)
async def api_call(request: web.Request) -> web.Response:
    detail, reviews, _ = await _detail(request)
    body = dataclasses.asdict(detail) | {"reviews": reviews}
    body["timeline"] = body.pop("events")
    return json_response(body)


@allow(*STAFF)
async def call_page(request: web.Request) -> web.Response:
    try:
        detail, reviews, criteria = await _detail(request)
    except Problem as exc:
        raise web.HTTPNotFound(text="call not found") from exc
    return render(request, "calls_detail.html", _detail_context(request, detail, reviews, criteria))


def _detail_context(
    request: web.Request,
    detail: CallDetail,
    reviews: list[dict[str, Any]],
    criteria: list[dict[str, Any]],
    *,
    error: str | None = None,
    saved: bool = False,
) -> dict[str, Any]:
    principal = session_of(request).principal
    mine = next((r for r in reviews if r["reviewer_user_id"] == principal.user_id), None)
    return {
        "call": detail.call,
        "events": detail.events,
        "legs": detail.legs,
        "recording": detail.recording,
        "communications": detail.communications,
        "reviews": reviews,
        "criteria": criteria,
        "can_review": principal.role in qa.REVIEWERS,
        "my_review": mine,
        "qa_error": error,
        "qa_saved": saved,
    }


@allow(*SUPERVISORS)
async def qa_form(request: web.Request) -> web.Response:
    """The scoring form on the detail page (htmx): saves, then answers the refreshed QA section."""
    call_id = int(request.match_info["call_id"])
    form = await request.post()
    scores: dict[str, Any] = {}
    error = None
    for name, value in form.items():
        if name.startswith("score_"):
            text = str(value).strip()
            if not text.lstrip("-").isdigit():
                error = "Each score must be a whole number."
            else:
                scores[name.removeprefix("score_")] = int(text)
    comment = str(form.get("comment", "")).strip()[:2000] or None
    saved = False
    if error is None:
        try:
            async with transaction(request.app[SESSIONS]) as session:
                await qa.save_review(
                    session, session_of(request).principal, call_id, qa.ReviewIn(scores=scores, comment=comment)
                )
            saved = True
        except qa.CallNotFound as exc:
            raise web.HTTPNotFound(text="call not found") from exc
        except qa.InvalidScores as exc:
            error = str(exc)
    try:
        detail, reviews, criteria = await _detail(request)
    except Problem as exc:
        raise web.HTTPNotFound(text="call not found") from exc
    context = _detail_context(request, detail, reviews, criteria, error=error, saved=saved)
    return render(request, "partials/call_qa.html", context)


# ---------------------------------------------------------------------------- QA API
@problems
@allow(*STAFF)
async def api_qa_get(request: web.Request) -> web.Response:
    call_id = int(request.match_info["call_id"])
    async with transaction(request.app[SESSIONS]) as session:
        if not await can_access_call(session, session_of(request).principal, call_id):
            return problem(404, "call not found")
        criteria = await qa.list_criteria(session)
        reviews = await qa.reviews_for_call(session, call_id)
    return json_response({"criteria": criteria, "reviews": reviews})


@problems
@allow(*SUPERVISORS)
async def api_qa_put(request: web.Request) -> web.Response:
    call_id = int(request.match_info["call_id"])
    data = await parse_body(request, qa.ReviewIn)
    try:
        async with transaction(request.app[SESSIONS]) as session:
            review = await qa.save_review(session, session_of(request).principal, call_id, data)
    except qa.CallNotFound:
        return problem(404, "call not found")
    except qa.InvalidScores as exc:
        return problem(400, "invalid scores", str(exc))
    except PermissionDenied as exc:
        return problem(403, "forbidden", str(exc))
    return json_response(review)


@allow(*SUPERVISORS)
async def api_criteria_list(request: web.Request) -> web.Response:
    every = request.query.get("all") == "1" and session_of(request).principal.role == Role.ADMIN
    async with transaction(request.app[SESSIONS]) as session:
        criteria = await qa.list_criteria(session, include_inactive=every)
    return json_response({"criteria": criteria})


@problems
@allow(Role.ADMIN)
async def api_criteria_create(request: web.Request) -> web.Response:
    data = await parse_body(request, qa.CriterionIn)
    try:
        async with transaction(request.app[SESSIONS]) as session:
            created = await qa.create_criterion(session, data)
    except ValueError as exc:
        return problem(409, "criterion exists", str(exc))
    return json_response(created, status=201)


@problems
@allow(Role.ADMIN)
async def api_criteria_update(request: web.Request) -> web.Response:
    data = await parse_body(request, qa.CriterionPatch)
    try:
        async with transaction(request.app[SESSIONS]) as session:
            updated = await qa.update_criterion(session, int(request.match_info["criterion_id"]), data)
    except qa.CriterionNotFound:
        return problem(404, "criterion not found")
    return json_response(updated)
